"use client";
import { useState, type KeyboardEvent, type RefObject } from "react";

interface Props {
  placeholder: string;
  disabled: boolean;
  disabledReason?: string;
  streaming: boolean;
  onSend: (text: string) => void;
  onStop: () => void;
  inputRef: RefObject<HTMLTextAreaElement | null>;
}

/** Enter sends, Shift+Enter adds a line; while an answer streams the button becomes Stop. */
export function Composer({ placeholder, disabled, disabledReason, streaming, onSend, onStop, inputRef }: Props) {
  const [text, setText] = useState("");
  const canSend = !disabled && !streaming && text.trim().length > 0;

  const send = () => {
    if (!canSend) return;
    onSend(text);
    setText("");
    inputRef.current?.focus(); // Send turns into Stop (another button): typing goes on in the box
  };

  const stop = () => {
    onStop();
    inputRef.current?.focus();
  };

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    // isComposing: Enter that confirms an IME composition is not a send.
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      send();
    }
  };

  return (
    <form
      className="flex items-end gap-2 border-t border-slate-200 bg-white p-3 dark:border-slate-700 dark:bg-slate-900"
      onSubmit={(event) => {
        event.preventDefault();
        send();
      }}
    >
      <label htmlFor="message-input" className="sr-only">
        Message
      </label>
      <textarea
        id="message-input"
        ref={inputRef}
        data-testid="message-input"
        value={text}
        onChange={(event) => setText(event.target.value)}
        onKeyDown={onKeyDown}
        placeholder={placeholder}
        rows={Math.min(8, Math.max(1, text.split("\n").length))}
        className="max-h-60 min-h-11 flex-1 resize-none rounded-lg border border-slate-300 bg-white px-3 py-2 text-base text-slate-900 focus:border-blue-500 focus:outline-none focus:ring-2 focus:ring-blue-500/40 dark:border-slate-600 dark:bg-slate-800 dark:text-slate-100"
        aria-describedby="composer-hint"
      />
      <span id="composer-hint" className="sr-only">
        Enter sends, Shift+Enter adds a new line.
      </span>
      {streaming ? (
        <button
          key="stop"
          type="button"
          data-testid="stop"
          onClick={stop}
          className="h-11 rounded-lg bg-red-600 px-4 font-medium text-white hover:bg-red-700 focus:outline-none focus-visible:ring-2 focus-visible:ring-red-500 focus-visible:ring-offset-2"
        >
          Stop
        </button>
      ) : (
        <button
          key="send"
          type="submit"
          data-testid="send"
          disabled={!canSend}
          title={disabled ? disabledReason : undefined}
          className="h-11 rounded-lg bg-blue-600 px-4 font-medium text-white hover:bg-blue-700 focus:outline-none focus-visible:ring-2 focus-visible:ring-blue-500 focus-visible:ring-offset-2 disabled:cursor-not-allowed disabled:bg-slate-400"
        >
          Send
        </button>
      )}
    </form>
  );
}
