"use client";
import dynamic from "next/dynamic";

// The chat lives in the browser (conversations come from localStorage), so it is not prerendered:
// the static HTML is only this shell, and the app mounts on the client.
const ChatApp = dynamic(() => import("@/components/ChatApp").then((m) => m.ChatApp), {
  ssr: false,
  loading: () => <p className="p-6 text-slate-500">Loading the chat…</p>,
});

export default function Page() {
  return <ChatApp />;
}
