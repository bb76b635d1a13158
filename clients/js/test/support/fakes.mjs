// Stand-ins for the two things a client test must control: time, and the socket (and fetch, for SSE).
export class FakeClock {
  constructor(start = 1_000_000) {
    this.time = start;
    this.timers = new Map();
    this.nextHandle = 1;
  }

  setTimeout(callback, ms) {
    const handle = this.nextHandle++;
    this.timers.set(handle, { at: this.time + Math.max(0, ms), callback });
    return handle;
  }

  clearTimeout(handle) {
    this.timers.delete(handle);
  }

  now() {
    return this.time;
  }

  /** The delay of the one pending timer that fires first (null when none). */
  nextDelay() {
    let first = null;
    for (const { at } of this.timers.values()) if (first === null || at < first) first = at;
    return first === null ? null : first - this.time;
  }

  /** Move time forward, running every timer that falls due, in order. */
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let due = null;
      for (const [handle, timer] of this.timers) {
        if (timer.at <= end && (due === null || timer.at < due[1].at)) due = [handle, timer];
      }
      if (due === null) break;
      this.timers.delete(due[0]);
      this.time = due[1].at;
      due[1].callback();
    }
    this.time = end;
  }
}

/** A WebSocket the test plays the server of. Every instance is kept in `FakeSocket.made`, in order. */
export class FakeSocket {
  static made = [];

  constructor(url, protocols) {
    this.url = new URL(url);
    this.protocols = protocols;
    this.readyState = 0;
    this.binaryType = "blob";
    this.sent = [];
    this.closedByClient = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.made.push(this);
  }

  static reset() {
    FakeSocket.made = [];
  }

  static last() {
    return FakeSocket.made.at(-1);
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  // ---- the server's side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  frame(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  binary(bytes) {
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }

  welcome(fields = {}) {
    this.open();
    this.frame({
      type: "eventcast.welcome",
      connection: `c${FakeSocket.made.indexOf(this)}`,
      replica: "gw-fake",
      recovered: false,
      reason: "no_since",
      position: "ep.100-0",
      channels: ["a"],
      protocol: "eventcast.v1.json",
      ...fields,
    });
  }

  event(id, fields = {}) {
    this.frame({ id, channel: "a", type: "t", data: { id }, ts: 1, ...fields });
  }

  /** The server (or the network) ends the connection; a connection that never opened fails with 1006. */
  serverClose(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

/** A socket class whose connections never open, as behind a proxy that blocks WebSocket upgrades. */
export class BlockedSocket extends FakeSocket {
  constructor(url, protocols) {
    super(url, protocols);
    queueMicrotask(() => this.serverClose(1006, ""));
  }
}

/** fetch for an SSE endpoint: each call answers with the next scripted stream; requests are recorded. */
export function fakeFetch(answers) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url: new URL(url), init });
    const answer = answers.shift();
    if (answer === undefined) throw new TypeError("fetch failed: connection refused");
    if (typeof answer === "number") {
      return new Response(JSON.stringify({ error: { code: "x", message: `refused with ${answer}` } }), {
        status: answer,
      });
    }
    const encoder = new TextEncoder();
    let controller;
    const body = new ReadableStream({
      start(c) {
        controller = c;
        c.enqueue(encoder.encode(answer.text));
        if (answer.end) c.close();
      },
    });
    init?.signal?.addEventListener("abort", () => {
      try {
        controller.error(new DOMException("aborted", "AbortError"));
      } catch {
        // already closed
      }
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  };
  return { fetch, calls };
}

/** Let promises and queued microtasks run (getToken, fetch, stream reads). */
export async function settle(rounds = 5) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A JWT-shaped token with the given claims (unsigned: the fakes never check it). */
export function fakeJwt(claims) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}.c2ln`;
}
