/**
 * From the messages on screen to the prompt that is sent. The server refuses a prompt that cannot fit
 * (prompt + max_tokens > max_model_len); the page instead drops the oldest turns until it fits, counting
 * tokens with the server's /tokenize so the count is exactly what the model will see.
 */
import type { Prompt } from "./api";
import type { Message, Mode } from "./conversations";

export class ContextError extends Error {
  constructor(promptTokens: number, maxTokens: number, maxModelLen: number) {
    super(
      `This message takes ${promptTokens} tokens and the answer up to ${maxTokens} more, but the model's context ` +
        `holds ${maxModelLen}. Shorten the message or lower Max tokens.`,
    );
    this.name = "ContextError";
  }
}

/** Failed exchanges (an answer that is an error, and the message it answered) are not sent again. */
export function sendable(messages: Message[]): Message[] {
  const kept: Message[] = [];
  for (const m of messages) {
    if (m.role === "assistant" && m.error) {
      if (kept.at(-1)?.role === "user") kept.pop();
      continue;
    }
    kept.push(m);
  }
  return kept;
}

/** Chat mode renders the conversation with the model's chat template; plain mode continues the joined text. */
export function promptOf(mode: Mode, messages: Message[]): Prompt {
  if (mode === "chat") return { messages: messages.map(({ role, content }) => ({ role, content })) };
  return { prompt: messages.map((m) => m.content).join("") };
}

export interface Fit {
  prompt: Prompt;
  /** How many of the oldest messages were left out. */
  dropped: number;
  promptTokens: number;
}

/** Drops whole turns (a user message and the answers after it) from the start until the prompt fits. */
export async function fitToContext(
  mode: Mode,
  history: Message[],
  maxTokens: number,
  maxModelLen: number,
  count: (prompt: Prompt) => Promise<number>,
): Promise<Fit> {
  for (let start = 0; ; ) {
    const prompt = promptOf(mode, history.slice(start));
    const promptTokens = await count(prompt);
    if (promptTokens + maxTokens <= maxModelLen) return { prompt, dropped: start, promptTokens };
    let next = start + 1;
    while (next < history.length && history[next].role !== "user") next++;
    if (next >= history.length) throw new ContextError(promptTokens, maxTokens, maxModelLen);
    start = next;
  }
}
