// @eventcast/client 0.1.0 -- generated from clients/js by `make js-build`; do not edit.

// src/codes.ts
var CloseCode = {
  NORMAL: 1e3,
  GOING_AWAY: 1001,
  NO_STATUS: 1005,
  ABNORMAL: 1006,
  PROTOCOL_ERROR: 1002,
  INVALID_DATA: 1007,
  POLICY: 1008,
  TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  BAD_REQUEST: 4400,
  UNAUTHENTICATED: 4401,
  FORBIDDEN: 4403,
  SLOW_CONSUMER: 4008
};
var SUBPROTOCOL_JSON = "eventcast.v1.json";
var SUBPROTOCOL_MSGPACK = "eventcast.v1.msgpack";
var WELCOME_TYPE = "eventcast.welcome";
var SSE_CLOSE_TYPE = "eventcast.close";

// src/backoff.ts
var RETRY_CODES = [
  CloseCode.GOING_AWAY,
  CloseCode.NO_STATUS,
  CloseCode.ABNORMAL,
  CloseCode.INTERNAL_ERROR,
  CloseCode.SERVICE_RESTART,
  CloseCode.TRY_AGAIN_LATER,
  CloseCode.SLOW_CONSUMER
];
function closeAction(code, reason) {
  if (code === CloseCode.UNAUTHENTICATED && /expired/i.test(reason)) return "refresh-token";
  return RETRY_CODES.includes(code) ? "retry" : "stop";
}
var DEFAULT_BACKOFF = {
  initialMs: 500,
  maxMs: 3e4,
  overloadMs: 5e3,
  jitter: 0.5
};
function retryDelay(code, attempt, options, random) {
  if (code === CloseCode.SERVICE_RESTART && attempt === 0) {
    return Math.floor(random() * options.initialMs);
  }
  const first = code === CloseCode.TRY_AGAIN_LATER ? options.overloadMs : options.initialMs;
  const ceiling = Math.min(options.maxMs, first * 2 ** Math.min(attempt, 30));
  const jitter = Math.min(1, Math.max(0, options.jitter));
  return Math.floor(ceiling * (1 - jitter * random()));
}

// src/sse.ts
var SSEParser = class {
  constructor(dispatch) {
    this.dispatch = dispatch;
    this.buffer = "";
    this.event = "";
    this.data = [];
    this.id = null;
  }
  /** Feed decoded text; complete events are dispatched as they end (at a blank line). */
  push(text) {
    this.buffer += text;
    for (; ; ) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (match === null) return;
      if (match[0] === "\r" && match.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }
  line(line) {
    if (line === "") {
      if (this.data.length > 0) {
        this.dispatch({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      }
      this.event = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
  }
};
function closeCodeForStatus(status) {
  if (status === 400) return CloseCode.BAD_REQUEST;
  if (status === 401) return CloseCode.UNAUTHENTICATED;
  if (status === 403) return CloseCode.FORBIDDEN;
  if (status === 429 || status === 503) return CloseCode.TRY_AGAIN_LATER;
  if (status >= 500) return CloseCode.INTERNAL_ERROR;
  return CloseCode.BAD_REQUEST;
}

// src/links.ts
var OPEN = 1;
function once(handlers) {
  let finished = false;
  return {
    closed(code, reason) {
      if (finished) return;
      finished = true;
      handlers.closed(code, reason);
    },
    done: () => finished
  };
}
function parseFrame(data, decode) {
  let decoded;
  if (typeof data === "string") decoded = JSON.parse(data);
  else if (decode !== void 0 && data instanceof ArrayBuffer) decoded = decode(new Uint8Array(data));
  else if (decode !== void 0 && ArrayBuffer.isView(data)) {
    decoded = decode(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  } else return null;
  return decoded !== null && typeof decoded === "object" ? decoded : null;
}
function openWebSocket(Socket, url, protocols, decode, handlers) {
  const end = once(handlers);
  let socket;
  try {
    socket = new Socket(url, protocols);
  } catch (error) {
    queueMicrotask(() => end.closed(CloseCode.ABNORMAL, `cannot open a WebSocket: ${String(error)}`));
    return { kind: "websocket", send: () => false, close: (code, reason) => end.closed(code, reason) };
  }
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    if (!end.done()) handlers.opened();
  };
  socket.onmessage = (event) => {
    if (end.done()) return;
    let frame;
    try {
      frame = parseFrame(event.data, decode);
    } catch {
      frame = null;
    }
    if (frame !== null) handlers.frame(frame);
  };
  socket.onclose = (event) => end.closed(event.code || CloseCode.NO_STATUS, event.reason || "");
  socket.onerror = () => void 0;
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
      }
    }
  };
}
function openEventStream(fetchImpl, url, handlers) {
  const end = once(handlers);
  const abort = new AbortController();
  const finish = (code, reason) => {
    end.closed(code, reason);
    abort.abort();
  };
  void (async () => {
    let response;
    try {
      response = await fetchImpl(url, {
        headers: { accept: "text/event-stream" },
        cache: "no-store",
        signal: abort.signal
      });
    } catch (error) {
      finish(CloseCode.ABNORMAL, `cannot reach the gateway: ${String(error)}`);
      return;
    }
    if (!response.ok || response.body === null) {
      let reason = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        if (body.error?.message) reason = body.error.message;
      } catch {
      }
      finish(closeCodeForStatus(response.status), reason);
      return;
    }
    if (end.done()) return;
    handlers.opened();
    const parser = new SSEParser((message) => {
      if (end.done()) return;
      if (message.event === SSE_CLOSE_TYPE) {
        const close = JSON.parse(message.data);
        finish(close.code ?? CloseCode.NO_STATUS, close.reason ?? "");
      } else if (message.event === "message" || message.event === WELCOME_TYPE) {
        try {
          handlers.frame(JSON.parse(message.data));
        } catch {
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
    }
    finish(CloseCode.ABNORMAL, "the event stream ended");
  })();
  return { kind: "sse", send: () => false, close: finish };
}

// src/urls.ts
function filterIsEmpty(filter) {
  return !filter || (filter.types ?? []).length === 0 && Object.keys(filter.where ?? {}).length === 0;
}
function baseUrl(given) {
  const location = globalThis.location;
  if (given === void 0 && location?.href === void 0) {
    throw new TypeError("eventcast: pass `url` (the gateway's base URL) outside a browser page");
  }
  const url = new URL(given ?? "/", location?.href);
  if (!["http:", "https:", "ws:", "wss:"].includes(url.protocol)) {
    throw new TypeError(`eventcast: url must be http(s) or ws(s), not ${url.protocol}`);
  }
  return url;
}
function endpoint(base, kind, subscription) {
  const url = new URL(base.href);
  const secure = url.protocol === "https:" || url.protocol === "wss:";
  url.protocol = kind === "websocket" ? secure ? "wss:" : "ws:" : secure ? "https:" : "http:";
  const prefix = url.pathname.replace(/\/+$/, "");
  const filtered = !filterIsEmpty(subscription.filter);
  url.pathname = `${prefix}/${kind === "sse" ? "sse" : "ws"}/events${filtered ? "/filtered" : ""}`;
  const query = new URLSearchParams();
  query.set("channels", subscription.channels.join(","));
  const types = subscription.filter?.types ?? [];
  if (types.length > 0) query.set("types", types.join(","));
  for (const [field, value] of Object.entries(subscription.filter?.where ?? {})) {
    query.append("where", `${field}=${typeof value === "string" ? value : JSON.stringify(value)}`);
  }
  if (subscription.since) query.set("since", subscription.since);
  if (subscription.token) query.set("token", subscription.token);
  url.search = query.toString();
  url.hash = "";
  return url.href;
}
function tokenExpiry(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(json);
    return typeof claims.exp === "number" ? claims.exp * 1e3 : null;
  } catch {
    return null;
  }
}

// src/client.ts
var REAL_TIMERS = {
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle),
  now: () => Date.now()
};
var TOKEN_MARGIN_MS = 5e3;
var EventcastClient = class {
  constructor(options = {}) {
    this.options = options;
    /** The last welcome frame, null before the first. */
    this.welcome = null;
    this.state = "idle";
    this.listeners = {
      event: /* @__PURE__ */ new Set(),
      welcome: /* @__PURE__ */ new Set(),
      resync: /* @__PURE__ */ new Set(),
      state: /* @__PURE__ */ new Set(),
      disconnect: /* @__PURE__ */ new Set(),
      stop: /* @__PURE__ */ new Set(),
      filter: /* @__PURE__ */ new Set(),
      transport: /* @__PURE__ */ new Set()
    };
    this.link = null;
    this.linkWelcomed = false;
    this.linkOpened = false;
    this.askedSince = null;
    this.attempt = 0;
    this.webSocketWorked = false;
    this.webSocketFailures = 0;
    this.tokenRefreshPending = false;
    this.tokenRefreshedSinceWelcome = false;
    this.stopping = false;
    this.generation = 0;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.pingUnanswered = false;
    this.filterPending = false;
    this.base = baseUrl(options.url);
    this.channels = options.channels?.length ? [...options.channels] : ["default"];
    this.filter = options.filter;
    this.lastId = options.since ?? null;
    this.token = options.token ?? null;
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.timers = options.timers ?? REAL_TIMERS;
    this.random = options.random ?? Math.random;
    const mode = options.transport ?? "auto";
    this.transport = mode === "sse" || mode === "auto" && this.socketClass() === void 0 ? "sse" : "websocket";
  }
  /** Listen to one kind of news; returns the function that stops listening. */
  on(name, listener) {
    this.listeners[name].add(listener);
    return () => {
      this.listeners[name].delete(listener);
    };
  }
  /** Start (or restart after `close`). Returns the client, so `new EventcastClient(o).on(...)` chains read well. */
  connect() {
    if (this.state !== "idle" && this.state !== "stopped") return this;
    this.stopping = false;
    this.attempt = 0;
    void this.open();
    return this;
  }
  /** Stop for good: no reconnect. `stop` is emitted with 1000. */
  close() {
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
  setFilter(filter) {
    this.filter = { types: [...filter.types ?? []], where: { ...filter.where ?? {} } };
    if (this.link === null) return;
    if (!this.linkWelcomed) {
      this.filterPending = true;
      return;
    }
    this.sendFilter();
  }
  sendFilter() {
    this.filterPending = false;
    const link = this.link;
    if (link === null || this.filter === void 0) return;
    const message = JSON.stringify({ op: "filter", types: this.filter.types ?? [], where: this.filter.where ?? {} });
    if (!link.send(message)) this.reopen("filter changed");
  }
  /** The filter the next connection will use (undefined: none). */
  get currentFilter() {
    return filterIsEmpty(this.filter) ? void 0 : this.filter;
  }
  /** The channels of this subscription. */
  get currentChannels() {
    return [...this.channels];
  }
  // ------------------------------------------------------------------------------------------ connecting
  socketClass() {
    return this.options.WebSocket ?? globalThis.WebSocket;
  }
  tokenNeedsRefresh() {
    if (this.options.getToken === void 0) return false;
    if (this.tokenRefreshPending || this.token === null) return true;
    const expiry = tokenExpiry(this.token);
    return expiry !== null && expiry <= this.timers.now() + TOKEN_MARGIN_MS;
  }
  async open() {
    const generation = ++this.generation;
    this.setState(this.welcome === null && this.attempt === 0 ? "connecting" : "reconnecting");
    if (this.tokenNeedsRefresh()) {
      try {
        this.token = await this.options.getToken();
      } catch (error) {
        if (generation === this.generation) this.finish(CloseCode.UNAUTHENTICATED, `getToken failed: ${String(error)}`);
        return;
      }
      this.tokenRefreshPending = false;
      if (generation !== this.generation) return;
    }
    this.linkWelcomed = false;
    this.linkOpened = false;
    this.filterPending = false;
    this.askedSince = this.lastId;
    const subscription = { channels: this.channels, filter: this.filter, since: this.lastId, token: this.token };
    let link = null;
    const handlers = {
      opened: () => {
        if (link !== null && this.link === link) this.linkOpened = true;
      },
      frame: (frame) => {
        if (link !== null && this.link === link) this.onFrame(frame);
      },
      closed: (code, reason) => {
        if (link !== null && this.link === link) this.onClosed(code, reason);
      }
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
  reopen(reason) {
    const link = this.link;
    if (link === null) return;
    this.link = null;
    this.stopPinging();
    link.close(CloseCode.NORMAL, reason);
    void this.open();
  }
  // ------------------------------------------------------------------------------------------ receiving
  onFrame(frame) {
    this.pingUnanswered = false;
    if (frame.type === WELCOME_TYPE && typeof frame.position === "string") {
      this.onWelcome(frame);
    } else if (typeof frame.id === "string") {
      this.lastId = frame.id;
      this.emit("event", frame);
    } else if (frame.type === "eventcast.filter") {
      this.emit("filter", frame);
    }
  }
  onWelcome(welcome) {
    this.welcome = welcome;
    this.linkWelcomed = true;
    this.attempt = 0;
    this.tokenRefreshedSinceWelcome = false;
    if (this.link?.kind === "websocket") {
      this.webSocketWorked = true;
      this.webSocketFailures = 0;
    }
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
  onClosed(code, reason) {
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
      if (this.options.getToken === void 0 || this.tokenRefreshedSinceWelcome) action = "stop";
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
    if (kind === "websocket" && !opened && !this.webSocketWorked && (this.options.transport ?? "auto") === "auto") {
      this.webSocketFailures++;
      if (this.webSocketFailures >= (this.options.fallbackAfter ?? 2)) {
        this.transport = "sse";
        this.emit("transport", "sse");
      }
    }
    const delayMs = action === "refresh-token" ? retryDelay(CloseCode.SERVICE_RESTART, 0, this.backoff, this.random) : retryDelay(code, this.attempt, this.backoff, this.random);
    this.attempt++;
    this.setState("reconnecting");
    this.emit("disconnect", { code, reason, willRetry: true, delayMs, transport: kind });
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = null;
      void this.open();
    }, delayMs);
  }
  finish(code, reason) {
    this.clearTimers();
    this.link = null;
    this.setState("stopped");
    this.emit("stop", { code, reason });
  }
  // ------------------------------------------------------------------------------------------ keepalive
  startPinging() {
    const interval = this.options.pingIntervalMs ?? 2e4;
    if (interval <= 0 || this.link?.kind !== "websocket") return;
    this.pingUnanswered = false;
    const tick = () => {
      const link = this.link;
      if (link === null) return;
      if (this.pingUnanswered) {
        link.close(CloseCode.ABNORMAL, "no answer to ping");
        return;
      }
      this.pingUnanswered = true;
      link.send(JSON.stringify({ op: "ping" }));
      this.pingTimer = this.timers.setTimeout(tick, interval);
    };
    this.pingTimer = this.timers.setTimeout(tick, interval);
  }
  stopPinging() {
    if (this.pingTimer !== null) this.timers.clearTimeout(this.pingTimer);
    this.pingTimer = null;
  }
  clearTimers() {
    this.stopPinging();
    if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }
  // ------------------------------------------------------------------------------------------ news
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }
  emit(name, ...args) {
    for (const listener of [...this.listeners[name]]) {
      try {
        listener(...args);
      } catch (error) {
        const report = globalThis.reportError;
        if (typeof report === "function") report(error);
        else
          queueMicrotask(() => {
            throw error;
          });
      }
    }
  }
};
var missingWebSocket = class {
  constructor() {
    throw new TypeError("no WebSocket in this runtime: pass the `WebSocket` option (Node: npm ws)");
  }
};
export {
  CloseCode,
  DEFAULT_BACKOFF,
  EventcastClient,
  RETRY_CODES,
  SSEParser,
  SUBPROTOCOL_JSON,
  SUBPROTOCOL_MSGPACK,
  closeAction,
  closeCodeForStatus,
  endpoint,
  retryDelay,
  tokenExpiry
};
