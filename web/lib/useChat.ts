"use client";
/**
 * The chat's state and its one loop: fit the prompt, stream the answer into the last message, stop on demand.
 * Components only render what this returns and call its actions.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import { countTokens, listModels, streamAnswer, type ModelInfo } from "./api";
import { fitToContext, sendable } from "./context";
import {
  loadConversations,
  loadSampling,
  newConversation,
  newId,
  resolveSampling,
  saveConversations,
  saveSampling,
  titleOf,
  type Conversation,
  type Message,
  type Mode,
  type SamplingSettings,
} from "./conversations";

interface Store {
  conversations: Conversation[];
  activeId: string;
}

function initialStore(): Store {
  const conversations = loadConversations();
  if (conversations.length === 0) conversations.push(newConversation("chat"));
  return { conversations, activeId: conversations[0].id };
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export function useChat() {
  const [store, setStore] = useState<Store>(initialStore);
  const [sampling, setSamplingState] = useState<SamplingSettings>(loadSampling);
  const [models, setModels] = useState<ModelInfo[] | null>(null);
  const [modelId, setModelId] = useState<string | null>(null);
  const [modelError, setModelError] = useState<string | null>(null);
  const [reloadModels, setReloadModels] = useState(0);
  const [streamingId, setStreamingId] = useState<string | null>(null);
  const abortRef = useRef<AbortController | null>(null);

  useEffect(() => {
    const controller = new AbortController();
    listModels(controller.signal).then(
      (list) => {
        setModels(list);
        setModelError(list.length ? null : "The server lists no model.");
      },
      (error) => {
        if (!controller.signal.aborted) setModelError(`Cannot reach the server's API: ${errorText(error)}`);
      },
    );
    return () => controller.abort();
  }, [reloadModels]);

  // Saved when no answer is streaming (once per answer, not once per token).
  useEffect(() => {
    if (streamingId === null) saveConversations(store.conversations);
  }, [store.conversations, streamingId]);
  useEffect(() => saveSampling(sampling), [sampling]);

  const model = models?.find((m) => m.id === modelId) ?? models?.[0] ?? null;
  const active = store.conversations.find((c) => c.id === store.activeId) ?? store.conversations[0];
  // A model without a chat template can only continue text.
  const modeOf = useCallback((c: Conversation): Mode => (model && !model.chatTemplate ? "completion" : c.mode), [model]);

  const updateConversation = useCallback((id: string, change: (c: Conversation) => Partial<Conversation>) => {
    setStore((s) => ({
      ...s,
      conversations: s.conversations.map((c) => {
        if (c.id !== id) return c;
        const next = { ...c, ...change(c), updatedAt: Date.now() };
        return { ...next, title: titleOf(next.messages) };
      }),
    }));
  }, []);

  const patchMessage = useCallback(
    (conversationId: string, messageId: string, patch: Partial<Message>) =>
      updateConversation(conversationId, (c) => ({
        messages: c.messages.map((m) => (m.id === messageId ? { ...m, ...patch } : m)),
      })),
    [updateConversation],
  );

  /** Answers the last user message of `history`, which replaces the conversation's messages. */
  const generate = useCallback(
    async (conversation: Conversation, history: Message[]) => {
      if (!model || abortRef.current) return;
      const answer: Message = { id: newId(), role: "assistant", content: "", pending: true };
      updateConversation(conversation.id, () => ({ messages: [...history, answer] }));
      const patch = (p: Partial<Message>) => patchMessage(conversation.id, answer.id, p);
      const controller = new AbortController();
      abortRef.current = controller;
      setStreamingId(conversation.id);

      let text = "";
      let finish: string | undefined;
      let firstAt = 0;
      let lastAt = 0;
      // Decode speed: tokens after the first over the time since the first arrived. Chunks are no token count
      // (the server sends tokens that came together as one chunk), so the count is the final usage chunk's.
      const stats = (tokens: number, approximate = false) => {
        const seconds = (lastAt - firstAt) / 1000;
        return { tokens, approximate, tokensPerSecond: tokens > 1 && seconds > 0 ? (tokens - 1) / seconds : undefined };
      };
      // Without usage (a stopped answer), the text's own token count, which a generated answer nearly always has.
      const countAfterwards = () => {
        if (!text) return;
        Promise.all([countTokens(model.id, { prompt: text }), countTokens(model.id, { prompt: "" })]).then(
          ([withText, alone]) => patch(stats(withText - alone, true)),
          () => undefined, // no figure is better than a wrong one
        );
      };
      const resolved = resolveSampling(sampling, model.maxModelLen);
      try {
        const fit = await fitToContext(modeOf(conversation), sendable(history), resolved.maxTokens, model.maxModelLen, (p) =>
          countTokens(model.id, p, controller.signal),
        );
        if (fit.dropped) patch({ dropped: fit.dropped });
        let tokens: number | undefined;
        for await (const piece of streamAnswer(model.id, fit.prompt, resolved, controller.signal)) {
          if (piece.kind === "text") {
            lastAt = performance.now();
            if (!firstAt) firstAt = lastAt;
            text += piece.text;
            patch({ content: text });
          } else if (piece.kind === "finish") {
            finish = piece.reason;
          } else {
            tokens = piece.completionTokens;
          }
        }
        patch({ content: text, pending: false, finish, ...(tokens !== undefined ? stats(tokens) : {}) });
        if (tokens === undefined) countAfterwards();
      } catch (error) {
        if (controller.signal.aborted) {
          patch({ content: text, pending: false, finish: "stopped" });
          countAfterwards();
        } else {
          patch({ content: text, pending: false, error: errorText(error) });
        }
      } finally {
        abortRef.current = null;
        setStreamingId(null);
      }
    },
    [model, modeOf, patchMessage, sampling, updateConversation],
  );

  const send = (text: string) => {
    if (!text.trim()) return;
    void generate(active, [...active.messages, { id: newId(), role: "user", content: text }]);
  };

  const regenerate = () => {
    const last = active.messages.at(-1);
    if (last?.role === "assistant") void generate(active, active.messages.slice(0, -1));
  };

  const editAndResend = (messageId: string, text: string) => {
    const index = active.messages.findIndex((m) => m.id === messageId);
    if (index < 0 || !text.trim()) return;
    void generate(active, [...active.messages.slice(0, index), { ...active.messages[index], content: text }]);
  };

  const stop = () => abortRef.current?.abort();

  const newChat = () => {
    if (active.messages.length === 0) return;
    const fresh = newConversation(model && !model.chatTemplate ? "completion" : active.mode);
    setStore((s) => ({ conversations: [fresh, ...s.conversations], activeId: fresh.id }));
  };

  const selectConversation = (id: string) => setStore((s) => ({ ...s, activeId: id }));

  const deleteConversation = (id: string) => {
    if (id === streamingId) stop();
    setStore((s) => {
      const rest = s.conversations.filter((c) => c.id !== id);
      if (rest.length === 0) rest.push(newConversation(active.mode));
      return { conversations: rest, activeId: s.activeId === id ? rest[0].id : s.activeId };
    });
  };

  const setMode = (mode: Mode) => updateConversation(active.id, () => ({ mode }));

  const setSampling = (next: SamplingSettings) => setSamplingState(next);

  return {
    conversations: store.conversations,
    active,
    mode: modeOf(active),
    model,
    models,
    modelError,
    selectModel: setModelId,
    retryModels: () => setReloadModels((n) => n + 1),
    sampling,
    setSampling,
    setMode,
    streamingId,
    streaming: streamingId !== null,
    streamingHere: streamingId === active.id,
    send,
    stop,
    regenerate,
    editAndResend,
    newChat,
    selectConversation,
    deleteConversation,
  };
}

export type Chat = ReturnType<typeof useChat>;
