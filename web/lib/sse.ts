/**
 * Server-sent events over a fetch() body. EventSource cannot POST, so the page reads the stream itself:
 * events end at a blank line, and each event's `data:` lines join with "\n" (the SSE spec, minus ids and retry).
 */
export async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder(); // stream mode holds back a UTF-8 character split across chunks
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      // A blank line (any of \n, \r\n, \r twice) closes an event.
      for (let end = buffer.search(/(\r\n|\r|\n){2}/); end >= 0; end = buffer.search(/(\r\n|\r|\n){2}/)) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^(\r\n|\r|\n){2}/, "");
        const data = dataOf(block);
        if (data !== null) yield data;
      }
    }
    const data = dataOf(buffer);
    if (data !== null) yield data;
  } finally {
    reader.releaseLock();
  }
}

function dataOf(block: string): string | null {
  const lines = block.split(/\r\n|\r|\n/).filter((line) => line.startsWith("data:"));
  if (lines.length === 0) return null;
  return lines.map((line) => line.slice(5).replace(/^ /, "")).join("\n");
}
