"use client";
import type { Conversation } from "@/lib/conversations";

interface Props {
  conversations: Conversation[];
  activeId: string;
  streamingId: string | null;
  onSelect: (id: string) => void;
  onDelete: (id: string) => void;
}

/** The saved conversations, newest first. */
export function Sidebar({ conversations, activeId, streamingId, onSelect, onDelete }: Props) {
  const sorted = [...conversations].sort((a, b) => b.updatedAt - a.updatedAt);
  return (
    <nav aria-label="Conversations" className="flex h-full flex-col overflow-y-auto p-2">
      <ul className="flex flex-col gap-1">
        {sorted.map((c) => (
          <li key={c.id} className="group flex items-center gap-1">
            <button
              type="button"
              data-testid="conversation"
              aria-current={c.id === activeId ? "page" : undefined}
              onClick={() => onSelect(c.id)}
              className={`flex-1 truncate rounded-md px-3 py-2 text-left text-sm focus:outline-none focus-visible:ring-2 focus-visible:ring-blue-500 ${
                c.id === activeId
                  ? "bg-slate-200 font-medium text-slate-900 dark:bg-slate-700 dark:text-slate-100"
                  : "text-slate-700 hover:bg-slate-100 dark:text-slate-300 dark:hover:bg-slate-800"
              }`}
            >
              {c.id === streamingId && <span aria-label="answering">● </span>}
              {c.title}
            </button>
            <button
              type="button"
              onClick={() => onDelete(c.id)}
              aria-label={`Delete the chat “${c.title}”`}
              className="rounded-md px-2 py-2 text-sm text-slate-400 hover:bg-slate-100 hover:text-red-600 focus:outline-none focus-visible:ring-2 focus-visible:ring-blue-500 dark:hover:bg-slate-800"
            >
              ✕
            </button>
          </li>
        ))}
      </ul>
    </nav>
  );
}
