/**
 * The server's HTTP API, the same one any OpenAI client uses: /v1/models, /v1/chat/completions,
 * /v1/completions, plus the /tokenize extension. Same origin, so paths are relative.
 */
import { readEvents } from "./sse";

export interface ModelInfo {
  id: string;
  maxModelLen: number;
  chatTemplate: boolean;
}

export interface ChatMessage {
  role: "user" | "assistant";
  content: string;
}

export interface Sampling {
  temperature: number;
  topK: number;
  topP: number;
  maxTokens: number;
}

/** What a request sends: a conversation for the chat template, or plain text to continue. */
export type Prompt = { messages: ChatMessage[] } | { prompt: string };

/** One piece of a streamed answer: new text, the end of the answer, or the token count. */
export type StreamPiece =
  | { kind: "text"; text: string }
  | { kind: "finish"; reason: string }
  | { kind: "usage"; completionTokens: number; promptTokens: number };

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

async function errorOf(response: Response): Promise<ApiError> {
  const text = await response.text();
  try {
    const { error } = JSON.parse(text);
    if (error?.message) return new ApiError(error.message, response.status, error.code ?? null);
  } catch {
    // not JSON: fall through to the status line
  }
  // Not an API error body (a proxy's or a static server's page): the status line says enough; HTML would not.
  const plain = text && !(response.headers.get("content-type") ?? "").includes("html") ? `: ${text.slice(0, 200)}` : "";
  return new ApiError(`${response.status} ${response.statusText}${plain}`, response.status);
}

async function post(path: string, body: object, signal?: AbortSignal): Promise<Response> {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function listModels(signal?: AbortSignal): Promise<ModelInfo[]> {
  const response = await fetch("/v1/models", { signal });
  if (!response.ok) throw await errorOf(response);
  const { data } = await response.json();
  return data.map((m: { id: string; max_model_len?: number; chat_template?: boolean }) => ({
    id: m.id,
    maxModelLen: m.max_model_len ?? 1024,
    chatTemplate: m.chat_template ?? true,
  }));
}

/** Token count of a prompt as the model will see it (chat template and generation prompt included). */
export async function countTokens(model: string, prompt: Prompt, signal?: AbortSignal): Promise<number> {
  const response = await post("/tokenize", { model, ...prompt }, signal);
  const { count } = await response.json();
  return count;
}

/**
 * Streams an answer. Chat prompts go to /v1/chat/completions, plain text to /v1/completions; the last
 * chunk carries usage (stream_options.include_usage). Aborting `signal` closes the connection, which
 * frees the request's slot on the server.
 */
export async function* streamAnswer(
  model: string,
  prompt: Prompt,
  sampling: Sampling,
  signal: AbortSignal,
): AsyncGenerator<StreamPiece> {
  const chat = "messages" in prompt;
  const response = await post(
    chat ? "/v1/chat/completions" : "/v1/completions",
    {
      model,
      ...prompt,
      stream: true,
      stream_options: { include_usage: true },
      temperature: sampling.temperature,
      ...(sampling.topK > 0 ? { top_k: sampling.topK } : {}), // 0 means off: send nothing
      top_p: sampling.topP,
      max_tokens: sampling.maxTokens,
    },
    signal,
  );
  if (!response.body) throw new ApiError("the server sent no stream", response.status);
  for await (const data of readEvents(response.body)) {
    if (data === "[DONE]") return;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new ApiError(chunk.error.message ?? String(chunk.error), 500, chunk.error.code ?? null);
    const choice = chunk.choices?.[0];
    const text: string | undefined = chat ? choice?.delta?.content : choice?.text;
    if (text) yield { kind: "text", text };
    if (choice?.finish_reason) yield { kind: "finish", reason: choice.finish_reason };
    if (chunk.usage) {
      yield { kind: "usage", completionTokens: chunk.usage.completion_tokens, promptTokens: chunk.usage.prompt_tokens };
    }
  }
}
