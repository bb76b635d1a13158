/**
 * EventcastClient: one subscription to an eventcast gateway that survives disconnects.
 *
 * It connects with channels, a filter and a token; reads the welcome; tracks the id of the last event; on a
 * close it reconnects with backoff and jitter when the code says so (backoff.ts) and resumes with `since`; it
 * tells the application through `resync` when the welcome says history could not cover the gap; it never
 * retries 4400, 4401 or 4403, except that an expired token is replaced through `getToken`; it changes its
 * filter in-band; and it falls back to Server-Sent Events when WebSockets are blocked.
 */
import { DEFAULT_BACKOFF, closeAction, retryDelay, type BackoffOptions } from "./backoff";
import { CloseCode, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, WELCOME_TYPE } from "./codes";
import {
  openEventStream,
  openWebSocket,
  type FetchFunction,
  type Frame,
  type Link,
  type TransportKind,
  type WebSocketConstructor,
} from "./links";
import { baseUrl, endpoint, filterIsEmpty, tokenExpiry, type Filter } from "./urls";

/** One event, as the gateway sends it. `id` is opaque: keep it only to compare for equality or to resume. */
export interface EventcastEvent<T = unknown> {
  id: string;
  channel: string;
  type: string;
  data: T;
  /** Publish time, ms since the epoch. */
  ts: number;
}

/** The first frame of every connection. */
export interface Welcome {
  type: "eventcast.welcome";
  connection: string;
  replica: string;
  recovered: boolean;
  /** Why not recovered: no_since, epoch_changed, trimmed, unknown_position, too_many. */
  reason?: string;
  /** Where this connection's stream starts: resuming from it gives exactly what was not sent yet. */
  position: string;
  channels: string[];
  protocol: string;
  [field: string]: unknown;
}

export type State = "idle" | "connecting" | "open" | "reconnecting" | "stopped";

export interface DisconnectInfo {
  code: number;
  reason: string;
  /** Whether the client will reconnect by itself. */
  willRetry: boolean;
  /** When it will (ms), if it will. */
  delayMs: number | null;
  transport: TransportKind;
}

export interface StopInfo {
  code: number;
  reason: string;
}

export interface ClientEvents {
  /** Every event, in order, once. */
  event: (event: EventcastEvent) => void;
  /** Every welcome (the first connection and each reconnect). */
  welcome: (welcome: Welcome) => void;
  /** A resume could not be served from history (`recovered: false`): reload your state, events go on live. */
  resync: (welcome: Welcome) => void;
  state: (state: State) => void;
  disconnect: (info: DisconnectInfo) => void;
  /** The client gave up (4400, 4401, 4403, ...) or was closed: it will not reconnect. */
  stop: (info: StopInfo) => void;
  /** The gateway confirmed a filter change. */
  filter: (ack: Frame) => void;
  /** The transport changed (WebSocket blocked: Server-Sent Events from now on). */
  transport: (kind: TransportKind) => void;
}

export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export interface ClientOptions {
  /** The gateway's base URL (http, https, ws or wss, with any path prefix). Default: the page's origin. */
  url?: string;
  /** Channels to subscribe to (default: ["default"]). */
  channels?: string[];
  /** A server-side filter; change it later with `setFilter`. */
  filter?: Filter;
  /** Resume after this event id (for example one kept in storage). */
  since?: string;
  /** A subscriber JWT (sent as the `token` query parameter). */
  token?: string;
  /** Called for a token before the first connect (when `token` is not given) and when the token expired. */
  getToken?: () => string | Promise<string>;
  /** "auto" (default): WebSocket, falling back to SSE when WebSockets are blocked. */
  transport?: "auto" | "websocket" | "sse";
  /** A MessagePack decoder (e.g. `decode` of @msgpack/msgpack): offers the eventcast.v1.msgpack encoding. */
  msgpack?: (bytes: Uint8Array) => unknown;
  backoff?: Partial<BackoffOptions>;
  /** Send a ping this often and reconnect when the previous one got no answer (0: never). Default 20 s. */
  pingIntervalMs?: number;
  /** WebSocket attempts in a row that never opened before "auto" switches to SSE. Default 2. */
  fallbackAfter?: number;
  /** Stand-ins for tests and other runtimes (Node: npm `ws`). */
  WebSocket?: WebSocketConstructor;
  fetch?: FetchFunction;
  random?: () => number;
  timers?: Timers;
}

const REAL_TIMERS: Timers = {
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
  now: () => Date.now(),
};

/** A token this close to its expiry is replaced before a reconnect instead of being refused with 4401. */
const TOKEN_MARGIN_MS = 5_000;

type Listeners = { [K in keyof ClientEvents]: Set<ClientEvents[K]> };

export class EventcastClient {
  /** The id of the last event received (or the last welcome's position): what a reconnect resumes from. */
  lastId: string | null;
  /** The last welcome frame, null before the first. */
  welcome: Welcome | null = null;
  state: State = "idle";
  transport: TransportKind;

  private readonly base: URL;
  private channels: string[];
  private filter: Filter | undefined;
  private token: string | null;
  private readonly backoff: BackoffOptions;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly listeners: Listeners = {
    event: new Set(),
    welcome: new Set(),
    resync: new Set(),
    state: new Set(),
    disconnect: new Set(),
    stop: new Set(),
    filter: new Set(),
    transport: new Set(),
  };
  private link: Link | null = null;
  private linkWelcomed = false;
  private linkOpened = false;
  private askedSince: string | null = null;
  private attempt = 0;
  private webSocketWorked = false;
  private webSocketFailures = 0;
  private tokenRefreshPending = false;
  private tokenRefreshedSinceWelcome = false;
  private stopping = false;
  private generation = 0;
  private reconnectTimer: unknown = null;
  private pingTimer: unknown = null;
  private pingUnanswered = false;
  private filterPending = false;

  constructor(private readonly options: ClientOptions = {}) {
    this.base = baseUrl(options.url);
    this.channels = options.channels?.length ? [...options.channels] : ["default"];
    this.filter = options.filter;
    this.lastId = options.since ?? null;
    this.token = options.token ?? null;
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.timers = options.timers ?? REAL_TIMERS;
    this.random = options.random ?? Math.random;
    const mode = options.transport ?? "auto";
    this.transport = mode === "sse" || (mode === "auto" && this.socketClass() === undefined) ? "sse" : "websocket";
  }

  /** Listen to one kind of news; returns the function that stops listening. */
  on<K extends keyof ClientEvents>(name: K, listener: ClientEvents[K]): () => void {
    this.listeners[name].add(listener);
    return () => {
      this.listeners[name].delete(listener);
    };
  }

  /** Start (or restart after `close`). Returns the client, so `new EventcastClient(o).on(...)` chains read well. */
  connect(): this {
    if (this.state !== "idle" && this.state !== "stopped") return this;
    this.stopping = false;
    this.attempt = 0;
    void this.open();
    return this;
  }

  /** Stop for good: no reconnect. `stop` is emitted with 1000. */
  close(): void {
    if (this.state === "stopped") return;
    this.stopping = true;
    this.clearTimers();
    this.generation++;
    const link = this.link;
    if (link !== null) link.close(CloseCode.NORMAL, "closed by the application");
    else this.finish(CloseCode.NORMAL, "closed by the application");
  }

  /**
   * Replace the server-side filter. On a WebSocket it is sent in-band (`{"op": "filter", ...}`) and confirmed by
   * a `filter` event; on SSE the stream is reopened with the new filter, resuming from the last id.
   */
  setFilter(filter: Filter): void {
    this.filter = { types: [...(filter.types ?? [])], where: { ...(filter.where ?? {}) } };
    if (this.link === null) return; // used by the next connect
    if (!this.linkWelcomed) {
      this.filterPending = true; // this connection asked for the old filter: send the new one once welcomed
      return;
    }
    this.sendFilter();
  }

  private sendFilter(): void {
    this.filterPending = false;
    const link = this.link;
    if (link === null || this.filter === undefined) return;
    const message = JSON.stringify({ op: "filter", types: this.filter.types ?? [], where: this.filter.where ?? {} });
    if (!link.send(message)) this.reopen("filter changed"); // SSE has no in-band control: reconnect with it
  }

  /** The filter the next connection will use (undefined: none). */
  get currentFilter(): Filter | undefined {
    return filterIsEmpty(this.filter) ? undefined : this.filter;
  }

  /** The channels of this subscription. */
  get currentChannels(): string[] {
    return [...this.channels];
  }

  // ------------------------------------------------------------------------------------------ connecting
  private socketClass(): WebSocketConstructor | undefined {
    return this.options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  }

  private tokenNeedsRefresh(): boolean {
    if (this.options.getToken === undefined) return false;
    if (this.tokenRefreshPending || this.token === null) return true;
    const expiry = tokenExpiry(this.token);
    return expiry !== null && expiry <= this.timers.now() + TOKEN_MARGIN_MS;
  }

  private async open(): Promise<void> {
    const generation = ++this.generation;
    this.setState(this.welcome === null && this.attempt === 0 ? "connecting" : "reconnecting");
    if (this.tokenNeedsRefresh()) {
      try {
        this.token = await this.options.getToken!();
      } catch (error) {
        if (generation === this.generation) this.finish(CloseCode.UNAUTHENTICATED, `getToken failed: ${String(error)}`);
        return;
      }
      this.tokenRefreshPending = false;
      if (generation !== this.generation) return; // closed (or reopened) while the application was asked
    }
    this.linkWelcomed = false;
    this.linkOpened = false;
    this.filterPending = false;
    this.askedSince = this.lastId;
    const subscription = { channels: this.channels, filter: this.filter, since: this.lastId, token: this.token };
    // Handlers are never called before open* returns (both report asynchronously), so `link` is set by then.
    let link: Link | null = null;
    const handlers = {
      opened: () => {
        if (link !== null && this.link === link) this.linkOpened = true;
      },
      frame: (frame: Frame) => {
        if (link !== null && this.link === link) this.onFrame(frame);
      },
      closed: (code: number, reason: string) => {
        if (link !== null && this.link === link) this.onClosed(code, reason);
      },
    };
    if (this.transport === "websocket") {
      const protocols = this.options.msgpack ? [SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON] : [SUBPROTOCOL_JSON];
      const url = endpoint(this.base, "websocket", subscription);
      link = openWebSocket(this.socketClass() ?? missingWebSocket, url, protocols, this.options.msgpack, handlers);
    } else {
      const fetchImpl = this.options.fetch ?? ((input, init) => globalThis.fetch(input, init));
      link = openEventStream(fetchImpl, endpoint(this.base, "sse", subscription), handlers);
    }
    this.link = link;
  }

  /** End the current link and connect again at once (resuming), e.g. to apply a filter on SSE. */
  private reopen(reason: string): void {
    const link = this.link;
    if (link === null) return;
    this.link = null;
    this.stopPinging();
    link.close(CloseCode.NORMAL, reason);
    void this.open();
  }

  // ------------------------------------------------------------------------------------------ receiving
  private onFrame(frame: Frame): void {
    this.pingUnanswered = false;
    if (frame.type === WELCOME_TYPE && typeof frame.position === "string") {
      this.onWelcome(frame as unknown as Welcome);
    } else if (typeof frame.id === "string") {
      this.lastId = frame.id;
      this.emit("event", frame as unknown as EventcastEvent);
    } else if (frame.type === "eventcast.filter") {
      this.emit("filter", frame);
    }
  }

  private onWelcome(welcome: Welcome): void {
    this.welcome = welcome;
    this.linkWelcomed = true;
    this.attempt = 0;
    this.tokenRefreshedSinceWelcome = false;
    if (this.link?.kind === "websocket") {
      this.webSocketWorked = true;
      this.webSocketFailures = 0;
    }
    // From here a resume gives exactly what this connection has not been sent yet (docs/decisions.md).
    this.lastId = welcome.position;
    this.setState("open");
    this.emit("welcome", welcome);
    if (!welcome.recovered && this.askedSince !== null) {
      if (this.listeners.resync.size === 0) {
        console.warn(`eventcast: history could not cover the gap (${welcome.reason}); listen to "resync"`);
      }
      this.emit("resync", welcome);
    }
    this.startPinging();
    if (this.filterPending) this.sendFilter();
  }

  private onClosed(code: number, reason: string): void {
    const kind = this.link?.kind ?? this.transport;
    const opened = this.linkOpened;
    this.link = null;
    this.linkWelcomed = false;
    this.stopPinging();
    if (this.stopping) {
      this.finish(CloseCode.NORMAL, "closed by the application");
      return;
    }
    let action = closeAction(code, reason);
    if (action === "refresh-token") {
      if (this.options.getToken === undefined || this.tokenRefreshedSinceWelcome) action = "stop";
      else {
        this.tokenRefreshPending = true;
        this.tokenRefreshedSinceWelcome = true;
      }
    }
    if (action === "stop") {
      this.emit("disconnect", { code, reason, willRetry: false, delayMs: null, transport: kind });
      this.finish(code, reason);
      return;
    }
    // Blocked means the upgrade itself never succeeded; a refusal after it (1013, 1012) proves WebSocket works.
    if (kind === "websocket" && !opened && !this.webSocketWorked && (this.options.transport ?? "auto") === "auto") {
      this.webSocketFailures++;
      if (this.webSocketFailures >= (this.options.fallbackAfter ?? 2)) {
        this.transport = "sse";
        this.emit("transport", "sse");
      }
    }
    const delayMs =
      action === "refresh-token"
        ? retryDelay(CloseCode.SERVICE_RESTART, 0, this.backoff, this.random)
        : retryDelay(code, this.attempt, this.backoff, this.random);
    this.attempt++;
    this.setState("reconnecting");
    this.emit("disconnect", { code, reason, willRetry: true, delayMs, transport: kind });
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = null;
      void this.open();
    }, delayMs);
  }

  private finish(code: number, reason: string): void {
    this.clearTimers();
    this.link = null;
    this.setState("stopped");
    this.emit("stop", { code, reason });
  }

  // ------------------------------------------------------------------------------------------ keepalive
  private startPinging(): void {
    const interval = this.options.pingIntervalMs ?? 20_000;
    if (interval <= 0 || this.link?.kind !== "websocket") return;
    this.pingUnanswered = false;
    const tick = (): void => {
      const link = this.link;
      if (link === null) return;
      if (this.pingUnanswered) {
        // Nothing at all came back for a whole interval: the connection is dead (a sleeping laptop, a NAT).
        link.close(CloseCode.ABNORMAL, "no answer to ping");
        return;
      }
      this.pingUnanswered = true;
      link.send(JSON.stringify({ op: "ping" }));
      this.pingTimer = this.timers.setTimeout(tick, interval);
    };
    this.pingTimer = this.timers.setTimeout(tick, interval);
  }

  private stopPinging(): void {
    if (this.pingTimer !== null) this.timers.clearTimeout(this.pingTimer);
    this.pingTimer = null;
  }

  private clearTimers(): void {
    this.stopPinging();
    if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  // ------------------------------------------------------------------------------------------ news
  private setState(state: State): void {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  private emit<K extends keyof ClientEvents>(name: K, ...args: Parameters<ClientEvents[K]>): void {
    for (const listener of [...this.listeners[name]]) {
      try {
        (listener as (...a: Parameters<ClientEvents[K]>) => void)(...args);
      } catch (error) {
        // An application bug must not break delivery: report it where the page reports errors.
        const report = (globalThis as { reportError?: (error: unknown) => void }).reportError;
        if (typeof report === "function") report(error);
        else
          queueMicrotask(() => {
            throw error;
          });
      }
    }
  }
}

const missingWebSocket = class {
  constructor() {
    throw new TypeError("no WebSocket in this runtime: pass the `WebSocket` option (Node: npm ws)");
  }
} as unknown as WebSocketConstructor;
