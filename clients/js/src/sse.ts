/**
 * Server-Sent Events over `fetch` (not `EventSource`): the client sees the HTTP status of a refusal (401, 403,
 * 400, 503) and maps it to the close code a WebSocket would have got, and keeps reconnecting in its own hands
 * instead of EventSource's.
 */
import { CloseCode } from "./codes";

export interface SSEMessage {
  event: string;
  data: string;
  id: string | null;
}

/** An incremental `text/event-stream` parser (WHATWG HTML, "Parsing an event stream"). */
export class SSEParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];
  private id: string | null = null;

  constructor(private readonly dispatch: (message: SSEMessage) => void) {}

  /** Feed decoded text; complete events are dispatched as they end (at a blank line). */
  push(text: string): void {
    this.buffer += text;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (match === null) return;
      // A lone '\r' at the very end may be the first half of '\r\n': wait for the next chunk.
      if (match[0] === "\r" && match.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === "") {
      if (this.data.length > 0) {
        this.dispatch({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      }
      this.event = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's heartbeat
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
    // "retry" is ignored on purpose: reconnect timing is the client's backoff rules, not the stream's hint.
  }
}

/** The close code a WebSocket client would have seen for an HTTP refusal of `GET /sse/events`. */
export function closeCodeForStatus(status: number): number {
  if (status === 400) return CloseCode.BAD_REQUEST;
  if (status === 401) return CloseCode.UNAUTHENTICATED;
  if (status === 403) return CloseCode.FORBIDDEN;
  if (status === 429 || status === 503) return CloseCode.TRY_AGAIN_LATER;
  if (status >= 500) return CloseCode.INTERNAL_ERROR;
  return CloseCode.BAD_REQUEST; // 404 and the like: a wrong URL will not get better by retrying
}
