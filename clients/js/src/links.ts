/**
 * The two ways to reach the gateway, behind one small interface: a WebSocket, or Server-Sent Events over fetch.
 * A link reports each decoded frame and, exactly once, how it ended (a close code and reason, as on WebSocket).
 */
import { CloseCode, SSE_CLOSE_TYPE, WELCOME_TYPE } from "./codes";
import { SSEParser, closeCodeForStatus } from "./sse";

export type TransportKind = "websocket" | "sse";
export type Frame = Record<string, unknown>;

export interface LinkHandlers {
  /** The transport is up (WebSocket open, or HTTP 200 on the stream); the welcome frame comes next. */
  opened(): void;
  frame(message: Frame): void;
  /** Called once, whoever ended the link. */
  closed(code: number, reason: string): void;
}

export interface Link {
  readonly kind: TransportKind;
  /** Send a control frame; false when this link cannot (SSE) or is not open. */
  send(text: string): boolean;
  /** End the link from our side; `closed` is called at once with this code and reason. */
  close(code: number, reason: string): void;
}

/** What the client needs of a WebSocket: the browser's, or a compatible one (npm `ws` in Node). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;
export type FetchFunction = (input: string, init?: RequestInit) => Promise<Response>;

const OPEN = 1;

function once(handlers: LinkHandlers): { closed: (code: number, reason: string) => void; done: () => boolean } {
  let finished = false;
  return {
    closed(code, reason) {
      if (finished) return;
      finished = true;
      handlers.closed(code, reason);
    },
    done: () => finished,
  };
}

function parseFrame(data: unknown, decode: ((bytes: Uint8Array) => unknown) | undefined): Frame | null {
  let decoded: unknown;
  if (typeof data === "string") decoded = JSON.parse(data);
  else if (decode !== undefined && data instanceof ArrayBuffer) decoded = decode(new Uint8Array(data));
  else if (decode !== undefined && ArrayBuffer.isView(data)) {
    decoded = decode(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  } else return null;
  return decoded !== null && typeof decoded === "object" ? (decoded as Frame) : null;
}

export function openWebSocket(
  Socket: WebSocketConstructor,
  url: string,
  protocols: string[],
  decode: ((bytes: Uint8Array) => unknown) | undefined,
  handlers: LinkHandlers,
): Link {
  const end = once(handlers);
  let socket: WebSocketLike;
  try {
    socket = new Socket(url, protocols);
  } catch (error) {
    // Blocked by the page's policy, a bad URL, or no WebSocket at all: like a connection that never opened.
    queueMicrotask(() => end.closed(CloseCode.ABNORMAL, `cannot open a WebSocket: ${String(error)}`));
    return { kind: "websocket", send: () => false, close: (code, reason) => end.closed(code, reason) };
  }
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    if (!end.done()) handlers.opened();
  };
  socket.onmessage = (event) => {
    if (end.done()) return;
    let frame: Frame | null;
    try {
      frame = parseFrame(event.data, decode);
    } catch {
      frame = null; // not valid JSON/MessagePack: no frame of the protocol, skip it
    }
    if (frame !== null) handlers.frame(frame);
  };
  socket.onclose = (event) => end.closed(event.code || CloseCode.NO_STATUS, event.reason || "");
  socket.onerror = () => undefined; // a close event always follows, with the code
  return {
    kind: "websocket",
    send(text) {
      if (end.done() || socket.readyState !== OPEN) return false;
      socket.send(text);
      return true;
    },
    close(code, reason) {
      end.closed(code, reason);
      socket.onopen = socket.onmessage = socket.onclose = null;
      try {
        socket.close(CloseCode.NORMAL, "client closed");
      } catch {
        // already closing: nothing more to do
      }
    },
  };
}

export function openEventStream(fetchImpl: FetchFunction, url: string, handlers: LinkHandlers): Link {
  const end = once(handlers);
  const abort = new AbortController();
  const finish = (code: number, reason: string): void => {
    end.closed(code, reason);
    abort.abort();
  };
  void (async () => {
    let response: Response;
    try {
      response = await fetchImpl(url, {
        headers: { accept: "text/event-stream" },
        cache: "no-store",
        signal: abort.signal,
      });
    } catch (error) {
      finish(CloseCode.ABNORMAL, `cannot reach the gateway: ${String(error)}`);
      return;
    }
    if (!response.ok || response.body === null) {
      let reason = `HTTP ${response.status}`;
      try {
        const body = (await response.json()) as { error?: { message?: string } };
        if (body.error?.message) reason = body.error.message;
      } catch {
        // not a JSON error body: keep the status
      }
      finish(closeCodeForStatus(response.status), reason);
      return;
    }
    if (end.done()) return;
    handlers.opened();
    const parser = new SSEParser((message) => {
      if (end.done()) return;
      if (message.event === SSE_CLOSE_TYPE) {
        const close = JSON.parse(message.data) as { code?: number; reason?: string };
        finish(close.code ?? CloseCode.NO_STATUS, close.reason ?? "");
      } else if (message.event === "message" || message.event === WELCOME_TYPE) {
        try {
          handlers.frame(JSON.parse(message.data) as Frame);
        } catch {
          // not JSON: not a frame of the protocol
        }
      }
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      while (!end.done()) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch {
      // aborted by us, or the network broke: both end below
    }
    finish(CloseCode.ABNORMAL, "the event stream ended");
  })();
  return { kind: "sse", send: () => false, close: finish };
}
