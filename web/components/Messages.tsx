"use client";
import { useEffect, useRef, useState, type KeyboardEvent } from "react";
import type { Message, Mode } from "@/lib/conversations";

interface Props {
  messages: Message[];
  mode: Mode;
  modelName: string;
  maxModelLen: number | null;
  busy: boolean;
  onRegenerate: () => void;
  onEditAndResend: (id: string, text: string) => void;
}

/** The conversation, oldest first; it follows a streaming answer unless the reader has scrolled up. */
export function Messages({ messages, mode, modelName, maxModelLen, busy, onRegenerate, onEditAndResend }: Props) {
  const scroller = useRef<HTMLDivElement>(null);
  const following = useRef(true);
  const last = messages.at(-1);

  // A new answer (send, Regenerate, edit) is followed again, wherever the reader had scrolled.
  const lastId = last?.id;
  useEffect(() => {
    following.current = true;
  }, [lastId]);

  // Where this code last put the view: only a move up from there is the reader's, which stops the following.
  // (Comparing with the bottom instead would mistake text that arrived before the scroll event for a scroll.)
  const placedAt = useRef(0);
  useEffect(() => {
    const el = scroller.current;
    if (el && following.current) {
      el.scrollTop = el.scrollHeight;
      placedAt.current = el.scrollTop;
    }
  }, [messages]);

  return (
    <div
      ref={scroller}
      onScroll={(event) => {
        const el = event.currentTarget;
        if (el.scrollTop < placedAt.current - 2) following.current = false;
        else if (el.scrollHeight - el.scrollTop - el.clientHeight < 40) following.current = true;
        placedAt.current = el.scrollTop;
      }}
      className="flex-1 overflow-y-auto px-3 py-4 sm:px-6"
    >
      {messages.length === 0 ? (
        <div className="mx-auto mt-16 max-w-md text-center text-slate-500 dark:text-slate-400">
          <p className="text-lg font-medium text-slate-700 dark:text-slate-200">
            {mode === "chat" ? `Talk to ${modelName}` : `${modelName} continues your text`}
          </p>
          <p className="mt-2 text-sm">
            {mode === "chat"
              ? "Enter sends, Shift+Enter adds a new line."
              : "Plain completion: the model continues what you write. Enter sends, Shift+Enter adds a new line."}
          </p>
        </div>
      ) : (
        <ol role="log" aria-label="Conversation" className="mx-auto flex max-w-3xl flex-col gap-4">
          {messages.map((m) => (
            <li key={m.id} className={m.role === "user" ? "flex justify-end" : "flex justify-start"}>
              {m.role === "user" ? (
                <UserMessage message={m} busy={busy} onEditAndResend={onEditAndResend} />
              ) : (
                <AssistantMessage
                  message={m}
                  maxModelLen={maxModelLen}
                  canRegenerate={m === last && !busy}
                  onRegenerate={onRegenerate}
                />
              )}
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}

function UserMessage({
  message,
  busy,
  onEditAndResend,
}: {
  message: Message;
  busy: boolean;
  onEditAndResend: (id: string, text: string) => void;
}) {
  const [draft, setDraft] = useState<string | null>(null);

  if (draft !== null) {
    const resend = () => {
      if (!draft.trim() || busy) return;
      onEditAndResend(message.id, draft);
      setDraft(null);
    };
    const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
      if (event.key === "Escape") setDraft(null);
      if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
        event.preventDefault();
        resend();
      }
    };
    return (
      <div className="w-full max-w-[85%] rounded-2xl bg-blue-50 p-2 dark:bg-slate-800">
        <label className="sr-only" htmlFor={`edit-${message.id}`}>
          Edit message
        </label>
        <textarea
          id={`edit-${message.id}`}
          data-testid="edit-input"
          autoFocus
          value={draft}
          onChange={(event) => setDraft(event.target.value)}
          onKeyDown={onKeyDown}
          rows={Math.min(10, Math.max(2, draft.split("\n").length))}
          className="w-full resize-y rounded-lg border border-slate-300 bg-white p-2 text-base text-slate-900 focus:outline-none focus:ring-2 focus:ring-blue-500/40 dark:border-slate-600 dark:bg-slate-900 dark:text-slate-100"
        />
        <div className="mt-2 flex justify-end gap-2 text-sm">
          <button type="button" onClick={() => setDraft(null)} className={quietButton}>
            Cancel
          </button>
          <button
            type="button"
            data-testid="edit-send"
            onClick={resend}
            disabled={busy || !draft.trim()}
            className="rounded-md bg-blue-600 px-3 py-1 font-medium text-white hover:bg-blue-700 focus:outline-none focus-visible:ring-2 focus-visible:ring-blue-500 disabled:bg-slate-400"
          >
            Send
          </button>
        </div>
      </div>
    );
  }

  return (
    <div className="group flex max-w-[85%] flex-col items-end">
      <div
        data-testid="user-message"
        className="whitespace-pre-wrap break-words rounded-2xl bg-blue-600 px-4 py-2 text-white"
      >
        {message.content}
      </div>
      <button
        type="button"
        data-testid="edit-message"
        onClick={() => setDraft(message.content)}
        disabled={busy}
        aria-label="Edit this message and send it again"
        className={`${quietButton} mt-1 text-xs`}
      >
        Edit
      </button>
    </div>
  );
}

function AssistantMessage({
  message,
  maxModelLen,
  canRegenerate,
  onRegenerate,
}: {
  message: Message;
  maxModelLen: number | null;
  canRegenerate: boolean;
  onRegenerate: () => void;
}) {
  const dropped = message.dropped ?? 0;
  return (
    <div className="flex max-w-[85%] flex-col items-start">
      {dropped > 0 && (
        <p data-testid="context-note" className="mb-1 text-xs text-amber-700 dark:text-amber-400">
          {dropped} earlier message{dropped === 1 ? " was" : "s were"} left out to fit the model&apos;s
          {maxModelLen ? ` ${maxModelLen}-token` : ""} context.
        </p>
      )}
      {/* The streaming cursor is drawn by CSS (::after), so the message's text is only the model's. */}
      <div
        data-testid="assistant-message"
        aria-busy={message.pending}
        className={`min-h-10 whitespace-pre-wrap break-words rounded-2xl bg-slate-100 px-4 py-2 text-slate-900 dark:bg-slate-800 dark:text-slate-100 ${
          message.pending ? "after:ml-0.5 after:inline-block after:animate-pulse after:content-['▍']" : ""
        }`}
      >
        {message.content}
        {message.error && (
          <span role="alert" data-testid="answer-error" className="block text-red-700 dark:text-red-400">
            {message.error}
          </span>
        )}
      </div>
      <div className="mt-1 flex flex-wrap items-center gap-x-3 text-xs text-slate-500 dark:text-slate-400">
        {message.tokens !== undefined && message.tokens > 0 && (
          <span data-testid="answer-stats" title={message.approximate ? "counted from the text" : undefined}>
            {message.approximate ? "≈" : ""}
            {message.tokens} token{message.tokens === 1 ? "" : "s"}
            {message.tokensPerSecond !== undefined && ` · ${message.tokensPerSecond.toFixed(1)} tok/s`}
          </span>
        )}
        {message.finish === "stopped" && <span>stopped</span>}
        {message.finish === "length" && <span>reached Max tokens</span>}
        {canRegenerate && (
          <button type="button" data-testid="regenerate" onClick={onRegenerate} className={quietButton}>
            Regenerate
          </button>
        )}
      </div>
    </div>
  );
}

const quietButton =
  "rounded px-1.5 py-0.5 text-slate-500 hover:bg-slate-200 hover:text-slate-800 focus:outline-none focus-visible:ring-2 focus-visible:ring-blue-500 disabled:opacity-40 dark:text-slate-400 dark:hover:bg-slate-700 dark:hover:text-slate-100";
