/** Conversations and settings, kept in the browser's localStorage so a reload loses nothing. */
import type { Sampling } from "./api";

export type Mode = "chat" | "completion";

export interface Message {
  id: string;
  role: "user" | "assistant";
  content: string;
  /** Set on an answer while it streams. */
  pending?: boolean;
  /** Why an answer ended: "stop", "length" (from the server) or "stopped" (the Stop button). */
  finish?: string;
  /** An answer that failed shows this instead of text. */
  error?: string;
  /** How many earlier messages were left out so that this answer's prompt fit the context. */
  dropped?: number;
  tokens?: number;
  tokensPerSecond?: number;
  /** The count is the text's own tokens (a stopped answer has no usage from the server). */
  approximate?: boolean;
}

export interface Conversation {
  id: string;
  title: string;
  mode: Mode;
  messages: Message[];
  updatedAt: number;
}

/** The sampling settings as the user left them; `maxTokens: null` means "fit the model": see resolveSampling. */
export interface SamplingSettings extends Omit<Sampling, "maxTokens"> {
  maxTokens: number | null;
}

export const DEFAULT_SAMPLING: SamplingSettings = { temperature: 0.8, topK: 50, topP: 0.95, maxTokens: null };

/**
 * What is sent. Small models have small contexts (the README's default model has 128 positions), so the
 * default answer length is half the context, at most 256; any length is at most the context less one token.
 */
export function resolveSampling(settings: SamplingSettings, maxModelLen: number): Sampling {
  const limit = Math.max(1, maxModelLen - 1);
  const wanted = settings.maxTokens ?? Math.min(256, Math.floor(maxModelLen / 2));
  return { ...settings, maxTokens: Math.max(1, Math.min(wanted, limit)) };
}

const CONVERSATIONS_KEY = "pygpt-chat.conversations";
const SAMPLING_KEY = "pygpt-chat.sampling";

export function newId(): string {
  return typeof crypto !== "undefined" && "randomUUID" in crypto
    ? crypto.randomUUID()
    : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

export function newConversation(mode: Mode): Conversation {
  return { id: newId(), title: "New chat", mode, messages: [], updatedAt: Date.now() };
}

/** The first words of the first message, as the sidebar shows it. */
export function titleOf(messages: Message[]): string {
  const first = messages.find((m) => m.role === "user")?.content.trim().replace(/\s+/g, " ");
  if (!first) return "New chat";
  return first.length > 40 ? `${first.slice(0, 40)}…` : first;
}

function read<T>(key: string, fallback: T): T {
  try {
    const text = window.localStorage.getItem(key);
    return text ? (JSON.parse(text) as T) : fallback;
  } catch {
    return fallback; // storage disabled or a value from an older page: start afresh rather than break
  }
}

function write(key: string, value: unknown): void {
  try {
    window.localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or disabled: the page still works, it just forgets on reload
  }
}

export function loadConversations(): Conversation[] {
  const stored = read<Conversation[]>(CONVERSATIONS_KEY, []);
  return Array.isArray(stored) ? stored : [];
}

export function saveConversations(conversations: Conversation[]): void {
  write(CONVERSATIONS_KEY, conversations);
}

export function loadSampling(): SamplingSettings {
  return { ...DEFAULT_SAMPLING, ...read<Partial<SamplingSettings>>(SAMPLING_KEY, {}) };
}

export function saveSampling(sampling: SamplingSettings): void {
  write(SAMPLING_KEY, sampling);
}
