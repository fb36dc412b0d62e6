"use client";
import { useRef, useState } from "react";
import { useChat } from "@/lib/useChat";
import { Composer } from "./Composer";
import { Messages } from "./Messages";
import { Settings } from "./Settings";
import { Sidebar } from "./Sidebar";

/** The page: header (model, speed, controls), conversations at the side, the chat, the composer. */
export function ChatApp() {
  const chat = useChat();
  const [showSettings, setShowSettings] = useState(false);
  const [showChats, setShowChats] = useState(false);
  const input = useRef<HTMLTextAreaElement>(null);
  const { active, model } = chat;
  const lastSpeed = active.messages.findLast((m) => m.role === "assistant" && m.tokensPerSecond)?.tokensPerSecond;

  const newChat = () => {
    chat.newChat();
    setShowChats(false);
    input.current?.focus();
  };

  return (
    <div className="flex h-dvh flex-col">
      <header className="flex flex-wrap items-center gap-x-3 gap-y-1 border-b border-slate-200 px-3 py-2 dark:border-slate-700">
        <button
          type="button"
          onClick={() => setShowChats((v) => !v)}
          aria-expanded={showChats}
          aria-controls="chats"
          className={`${headerButton} mr-auto md:hidden`}
        >
          Chats
        </button>
        <h1 className="mr-auto text-base font-semibold max-sm:sr-only sm:mr-0">pygpt chat</h1>
        {/* On a phone the model line gets a row of its own, under the buttons. */}
        <div className="order-last flex w-full min-w-0 items-center gap-2 text-sm text-slate-600 sm:order-none sm:w-auto sm:flex-1 dark:text-slate-300">
          {chat.models && chat.models.length > 1 ? (
            <select
              aria-label="Model"
              value={model?.id}
              onChange={(event) => chat.selectModel(event.target.value)}
              className="rounded-md border border-slate-300 bg-transparent px-1 py-0.5 dark:border-slate-600"
            >
              {chat.models.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.id}
                </option>
              ))}
            </select>
          ) : (
            <span data-testid="model-name" className="max-w-[60%] shrink-0 truncate font-mono">
              {model?.id ?? "no model"}
            </span>
          )}
          {model && (
            <span className="truncate text-xs text-slate-500 dark:text-slate-400">
              {chat.mode === "chat" ? "chat" : "plain completion"} · {model.maxModelLen} tokens context
            </span>
          )}
          <span data-testid="tokens-per-second" className="ml-auto whitespace-nowrap font-mono text-xs" aria-live="off">
            {lastSpeed !== undefined ? `${lastSpeed.toFixed(1)} tok/s` : ""}
          </span>
        </div>
        <button
          type="button"
          onClick={() => setShowSettings((v) => !v)}
          aria-expanded={showSettings}
          aria-controls="settings"
          className={headerButton}
        >
          Settings
        </button>
        <button type="button" data-testid="new-chat" onClick={newChat} className={headerButton}>
          New chat
        </button>
      </header>
      {showSettings && (
        <div id="settings">
          <Settings
            sampling={chat.sampling}
            onChange={chat.setSampling}
            mode={chat.mode}
            chatAvailable={model?.chatTemplate ?? true}
            onModeChange={chat.setMode}
            maxModelLen={model?.maxModelLen ?? null}
          />
        </div>
      )}
      {chat.modelError && (
        <div role="alert" className="flex items-center gap-3 bg-red-50 px-4 py-2 text-sm text-red-800 dark:bg-red-950 dark:text-red-200">
          <span className="flex-1">{chat.modelError}</span>
          <button type="button" onClick={chat.retryModels} className={headerButton}>
            Retry
          </button>
        </div>
      )}
      <div className="relative flex min-h-0 flex-1">
        <aside
          id="chats"
          onKeyDown={(event) => event.key === "Escape" && setShowChats(false)}
          className={`${showChats ? "absolute inset-y-0 left-0 z-10 w-72 shadow-xl" : "hidden"} border-r border-slate-200 bg-white md:static md:block md:w-64 md:shadow-none dark:border-slate-700 dark:bg-slate-950`}
        >
          <Sidebar
            conversations={chat.conversations}
            activeId={active.id}
            streamingId={chat.streamingId}
            onSelect={(id) => {
              chat.selectConversation(id);
              setShowChats(false);
            }}
            onDelete={chat.deleteConversation}
          />
        </aside>
        <main className="flex min-w-0 flex-1 flex-col">
          <Messages
            messages={active.messages}
            mode={chat.mode}
            modelName={model?.id ?? "the model"}
            maxModelLen={model?.maxModelLen ?? null}
            busy={chat.streaming}
            onRegenerate={chat.regenerate}
            onEditAndResend={chat.editAndResend}
          />
          <Composer
            inputRef={input}
            placeholder={chat.mode === "chat" ? "Message the model" : "Text for the model to continue"}
            disabled={!model || (chat.streaming && !chat.streamingHere)}
            disabledReason={!model ? "No model is loaded yet" : "An answer is still streaming in another chat"}
            streaming={chat.streamingHere}
            onSend={chat.send}
            onStop={chat.stop}
          />
        </main>
      </div>
    </div>
  );
}

const headerButton =
  "rounded-md border border-slate-300 px-3 py-1 text-sm hover:bg-slate-100 focus:outline-none focus-visible:ring-2 focus-visible:ring-blue-500 dark:border-slate-600 dark:hover:bg-slate-800";
