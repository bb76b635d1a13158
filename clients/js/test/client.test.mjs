// The client's reconnect, backoff, resume, token and filter rules against a fake socket and a fake clock.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import { BlockedSocket, FakeClock, FakeSocket, fakeFetch, fakeJwt, settle } from "./support/fakes.mjs";
import { EventcastClient } from "./support/client.mjs";
import { record } from "./support/record.mjs";

let clock;
beforeEach(() => {
  FakeSocket.reset();
  clock = new FakeClock();
});

const ids = (seen) => seen.events.map((event) => event.id);

/** A client wired to the fakes, recording everything it reports. */
function make(options = {}) {
  const client = new EventcastClient({
    url: "http://gw.test:8000",
    channels: ["a"],
    WebSocket: FakeSocket,
    timers: clock,
    random: () => 0.5,
    pingIntervalMs: 0,
    ...options,
  });
  const seen = record(client);
  return { client, seen };
}

test("connects with channels, filter and token, reads the welcome and tracks the last id", () => {
  const { client, seen } = make({
    channels: ["a", "b"],
    filter: { types: ["node.*"], where: { repo: "x" } },
    token: "tok",
  });
  client.connect();
  const socket = FakeSocket.last();
  assert.equal(socket.url.pathname, "/ws/events/filtered");
  assert.equal(socket.url.protocol, "ws:");
  assert.deepEqual(socket.protocols, ["eventcast.v1.json"]);
  assert.equal(socket.url.searchParams.get("channels"), "a,b");
  assert.equal(socket.url.searchParams.get("types"), "node.*");
  assert.equal(socket.url.searchParams.get("where"), "repo=x");
  assert.equal(socket.url.searchParams.get("token"), "tok");
  assert.equal(socket.url.searchParams.get("since"), null);
  assert.equal(client.state, "connecting");
  socket.welcome({ position: "ep.5-0" });
  assert.equal(client.state, "open");
  assert.equal(client.lastId, "ep.5-0"); // a resume before any event starts from the welcome's position
  assert.equal(seen.resyncs.length, 0); // no_since on a first connect is not a loss
  socket.event("ep.6-0");
  socket.event("ep.7-0");
  socket.frame({ type: "eventcast.pong" });
  assert.deepEqual(ids(seen), ["ep.6-0", "ep.7-0"]);
  assert.equal(client.lastId, "ep.7-0");
  assert.deepEqual(seen.states, ["connecting", "open"]);
});

test("1012 reconnects within initialMs and resumes with since = the last id", () => {
  const { client, seen } = make();
  client.connect();
  FakeSocket.last().welcome();
  FakeSocket.last().event("ep.101-0");
  FakeSocket.last().serverClose(1012, "service restart: drain");
  assert.equal(client.state, "reconnecting");
  assert.deepEqual(seen.disconnects.at(-1), {
    code: 1012,
    reason: "service restart: drain",
    willRetry: true,
    delayMs: 250,
    transport: "websocket",
  });
  assert.equal(FakeSocket.made.length, 1);
  clock.advance(249);
  assert.equal(FakeSocket.made.length, 1);
  clock.advance(1);
  assert.equal(FakeSocket.made.length, 2);
  const again = FakeSocket.last();
  assert.equal(again.url.searchParams.get("since"), "ep.101-0");
  again.welcome({ recovered: true, reason: undefined, position: "ep.101-0" });
  again.event("ep.102-0");
  assert.deepEqual(ids(seen), ["ep.101-0", "ep.102-0"]);
  assert.equal(seen.resyncs.length, 0);
});

for (const code of [1006, 1011, 1013, 4008, 1001, 1005]) {
  test(`${code} retries with exponential backoff that resets after a welcome`, () => {
    const { client, seen } = make({ backoff: { initialMs: 100, overloadMs: 1000, maxMs: 1600, jitter: 0 } });
    client.connect();
    FakeSocket.last().welcome();
    const first = code === 1013 ? 1000 : 100;
    const expected = [first, first * 2, first * 4, first * 8, 1600, 1600].map((d) => Math.min(d, 1600));
    for (const delay of expected) {
      FakeSocket.last().serverClose(code, "x");
      assert.equal(seen.disconnects.at(-1).delayMs, delay);
      assert.equal(clock.nextDelay(), delay);
      const before = FakeSocket.made.length;
      clock.advance(delay);
      assert.equal(FakeSocket.made.length, before + 1);
    }
    FakeSocket.last().welcome({ recovered: true, reason: undefined });
    FakeSocket.last().serverClose(code, "x");
    assert.equal(seen.disconnects.at(-1).delayMs, first); // the welcome reset the attempt count
    assert.equal(seen.stops.length, 0);
    client.close();
  });
}

test("1013 waits longer than the other codes by default", () => {
  const { client, seen } = make({ random: () => 0.999 });
  client.connect();
  FakeSocket.last().serverClose(1013, "too many connections");
  const overloaded = seen.disconnects.at(-1).delayMs;
  client.close();
  const other = make({ random: () => 0 });
  other.client.connect();
  other.client.connect(); // a second connect() while running is a no-op
  FakeSocket.last().serverClose(1006, "");
  assert.ok(overloaded >= 2500, `${overloaded}`);
  assert.ok(overloaded > other.seen.disconnects.at(-1).delayMs);
});

for (const [code, reason] of [
  [4400, "bad filter"],
  [4401, "invalid token: Signature verification failed"],
  [4403, "forbidden: this token may not read 'secret'"],
  [1008, "origin not allowed"],
  [1009, "frame too big"],
]) {
  test(`${code} is never retried`, () => {
    const { client, seen } = make({ getToken: () => "fresh" , token: "t" });
    client.connect();
    FakeSocket.last().welcome();
    FakeSocket.last().serverClose(code, reason);
    assert.equal(client.state, "stopped");
    assert.deepEqual(seen.stops, [{ code, reason }]);
    assert.equal(seen.disconnects.at(-1).willRetry, false);
    clock.advance(10 * 60_000);
    assert.equal(FakeSocket.made.length, 1);
    assert.equal(clock.nextDelay(), null);
  });
}

test("a refusal before any welcome stops too (4403 at connect)", () => {
  const { client, seen } = make();
  client.connect();
  FakeSocket.last().open();
  FakeSocket.last().serverClose(4403, "forbidden");
  assert.equal(client.state, "stopped");
  assert.equal(seen.stops[0].code, 4403);
  clock.advance(60_000);
  assert.equal(FakeSocket.made.length, 1);
});

test("an expired token is replaced through getToken before reconnecting, resuming from the last id", async () => {
  const asked = [];
  const { client, seen } = make({
    token: "old",
    getToken: async () => {
      asked.push(clock.now());
      return "new";
    },
  });
  client.connect();
  FakeSocket.last().welcome();
  FakeSocket.last().event("ep.7-0");
  FakeSocket.last().serverClose(4401, "token expired");
  assert.equal(seen.disconnects.at(-1).willRetry, true);
  clock.advance(seen.disconnects.at(-1).delayMs);
  await settle();
  assert.equal(asked.length, 1);
  const socket = FakeSocket.last();
  assert.equal(FakeSocket.made.length, 2);
  assert.equal(socket.url.searchParams.get("token"), "new");
  assert.equal(socket.url.searchParams.get("since"), "ep.7-0");
  // The fresh token expires again after a welcome: asked again.
  socket.welcome({ recovered: true, reason: undefined, position: "ep.7-0" });
  socket.serverClose(4401, "token expired");
  clock.advance(1000);
  await settle();
  assert.equal(asked.length, 2);
  // But a fresh token refused as expired before any welcome is not asked for forever: stop.
  FakeSocket.last().open();
  FakeSocket.last().serverClose(4401, "token expired");
  assert.equal(client.state, "stopped");
  assert.equal(seen.stops[0].code, 4401);
});

test("an expired token without getToken stops", () => {
  const { client, seen } = make({ token: "old" });
  client.connect();
  FakeSocket.last().welcome();
  FakeSocket.last().serverClose(4401, "token expired");
  assert.equal(client.state, "stopped");
  assert.deepEqual(seen.stops, [{ code: 4401, reason: "token expired" }]);
});

test("a JWT past its exp is replaced before a reconnect, without waiting for a 4401", async () => {
  const expired = fakeJwt({ exp: Math.floor(clock.now() / 1000) + 2 }); // inside the 5 s margin
  const fresh = fakeJwt({ exp: Math.floor(clock.now() / 1000) + 3600 });
  let asked = 0;
  const { client } = make({
    token: expired,
    getToken: () => {
      asked += 1;
      return fresh;
    },
  });
  client.connect(); // the first connect already finds it about to expire
  await settle();
  assert.equal(asked, 1);
  assert.equal(FakeSocket.last().url.searchParams.get("token"), fresh);
  FakeSocket.last().welcome();
  FakeSocket.last().serverClose(1012, "drain");
  clock.advance(500);
  await settle();
  assert.equal(asked, 1); // still valid: not asked again
  assert.equal(FakeSocket.made.length, 2);
});

test("getToken supplies the first token when none is given; its failure stops the client", async () => {
  const { client } = make({ getToken: () => "first" });
  client.connect();
  await settle();
  assert.equal(FakeSocket.last().url.searchParams.get("token"), "first");
  client.close();
  const failing = make({
    getToken: async () => {
      throw new Error("login needed");
    },
  });
  failing.client.connect();
  await settle();
  assert.equal(failing.client.state, "stopped");
  assert.equal(failing.seen.stops[0].code, 4401);
  assert.match(failing.seen.stops[0].reason, /login needed/);
});

test("recovered: false after a resume calls resync; events then go on", () => {
  const { client, seen } = make();
  client.connect();
  FakeSocket.last().welcome();
  FakeSocket.last().event("ep.1-0");
  FakeSocket.last().serverClose(1012, "drain");
  clock.advance(500);
  FakeSocket.last().welcome({ recovered: false, reason: "epoch_changed", position: "new.5-0" });
  assert.equal(seen.resyncs.length, 1);
  assert.equal(seen.resyncs[0].reason, "epoch_changed");
  assert.equal(client.lastId, "new.5-0");
  FakeSocket.last().event("new.6-0");
  assert.deepEqual(ids(seen), ["ep.1-0", "new.6-0"]);
});

test("an initial since that history cannot cover calls resync too", () => {
  const { client, seen } = make({ since: "gone.1-0" });
  client.connect();
  assert.equal(FakeSocket.last().url.searchParams.get("since"), "gone.1-0");
  FakeSocket.last().welcome({ recovered: false, reason: "trimmed" });
  assert.equal(seen.resyncs.length, 1);
});

test("setFilter is sent in-band and used by later connections", () => {
  const { client, seen } = make();
  client.connect();
  const socket = FakeSocket.last();
  assert.equal(socket.url.pathname, "/ws/events");
  client.setFilter({ types: ["edge.*"] }); // before the welcome: sent once welcomed
  assert.deepEqual(socket.sent, []);
  socket.welcome();
  assert.deepEqual(socket.sent, [{ op: "filter", types: ["edge.*"], where: {} }]);
  client.setFilter({ types: ["node.*"], where: { n: 3 } });
  assert.deepEqual(socket.sent[1], { op: "filter", types: ["node.*"], where: { n: 3 } });
  socket.frame({ type: "eventcast.filter", ok: true });
  assert.equal(seen.filters.length, 1);
  socket.serverClose(1012, "drain");
  clock.advance(500);
  const again = FakeSocket.last();
  assert.equal(again.url.pathname, "/ws/events/filtered");
  assert.equal(again.url.searchParams.get("types"), "node.*");
  assert.equal(again.url.searchParams.get("where"), "n=3");
});

test("pings when idle and reconnects when a ping goes unanswered", () => {
  const { client, seen } = make({ pingIntervalMs: 1000 });
  client.connect();
  const socket = FakeSocket.last();
  socket.welcome();
  clock.advance(1000);
  assert.deepEqual(socket.sent, [{ op: "ping" }]);
  socket.frame({ type: "eventcast.pong" });
  clock.advance(1000);
  assert.equal(socket.sent.length, 2);
  clock.advance(1000); // nothing came back for a whole interval
  assert.equal(seen.disconnects.at(-1).code, 1006);
  assert.equal(seen.disconnects.at(-1).reason, "no answer to ping");
  assert.deepEqual(socket.closedByClient, { code: 1000, reason: "client closed" });
  clock.advance(1000);
  assert.equal(FakeSocket.made.length, 2);
});

test("close() stops for good, also while waiting to reconnect", () => {
  const { client, seen } = make();
  client.connect();
  FakeSocket.last().welcome();
  client.close();
  assert.equal(client.state, "stopped");
  assert.deepEqual(seen.stops, [{ code: 1000, reason: "closed by the application" }]);
  assert.equal(FakeSocket.last().closedByClient.code, 1000);
  client.connect();
  FakeSocket.last().serverClose(1006, "");
  client.close();
  clock.advance(60_000);
  assert.equal(FakeSocket.made.length, 2);
  assert.equal(seen.stops.length, 2);
});

test("a listener that throws does not stop delivery to the others", () => {
  const { client, seen } = make();
  const thrown = [];
  const previous = globalThis.reportError;
  globalThis.reportError = (error) => thrown.push(error.message); // what browsers provide
  client.on("event", () => {
    throw new Error("app bug");
  });
  client.connect();
  FakeSocket.last().welcome();
  FakeSocket.last().event("ep.1-0");
  FakeSocket.last().event("ep.2-0");
  globalThis.reportError = previous;
  assert.deepEqual(ids(seen), ["ep.1-0", "ep.2-0"]);
  assert.deepEqual(thrown, ["app bug", "app bug"]);
});

test("with a MessagePack decoder it offers eventcast.v1.msgpack and decodes binary frames", () => {
  const { client, seen } = make({ msgpack: decode });
  client.connect();
  const socket = FakeSocket.last();
  assert.deepEqual(socket.protocols, ["eventcast.v1.msgpack", "eventcast.v1.json"]);
  socket.open();
  socket.binary(encode({ type: "eventcast.welcome", connection: "c", replica: "r", recovered: false, reason: "no_since", position: "ep.1-0", channels: ["a"], protocol: "eventcast.v1.msgpack" }));
  socket.binary(encode({ id: "ep.2-0", channel: "a", type: "t", data: { big: [1, 2] }, ts: 5 }));
  assert.equal(seen.welcomes[0].protocol, "eventcast.v1.msgpack");
  assert.deepEqual(ids(seen), ["ep.2-0"]);
});

test("WebSocket blocked: after two attempts that never open, it falls back to SSE and resumes there", async () => {
  const { fetch, calls } = fakeFetch([
    {
      text:
        'event: eventcast.welcome\nid: ep.3-0\ndata: {"type":"eventcast.welcome","connection":"s","replica":"gw-sse","recovered":false,"reason":"no_since","position":"ep.3-0","channels":["a"],"protocol":"eventcast.v1.json"}\n\n' +
        'id: ep.4-0\ndata: {"id":"ep.4-0","channel":"a","type":"t","data":1,"ts":1}\n\n' +
        'event: eventcast.close\ndata: {"type":"eventcast.close","code":1012,"reason":"drain"}\n\n',
    },
    { text: 'event: eventcast.welcome\ndata: {"type":"eventcast.welcome","connection":"s2","replica":"gw-2","recovered":true,"position":"ep.4-0","channels":["a"],"protocol":"eventcast.v1.json"}\n\n' },
  ]);
  const { client, seen } = make({ WebSocket: BlockedSocket, fetch, token: "tok" });
  client.connect();
  await settle();
  assert.equal(client.transport, "websocket");
  clock.advance(clock.nextDelay());
  await settle();
  assert.deepEqual(seen.transports, ["sse"]);
  clock.advance(clock.nextDelay());
  await settle();
  assert.equal(calls.length >= 1, true);
  assert.equal(calls[0].url.pathname, "/sse/events");
  assert.equal(calls[0].url.searchParams.get("token"), "tok");
  assert.equal(seen.welcomes[0].replica, "gw-sse");
  assert.deepEqual(ids(seen), ["ep.4-0"]);
  assert.equal(seen.disconnects.at(-1).code, 1012); // the stream's eventcast.close
  clock.advance(clock.nextDelay());
  await settle();
  assert.equal(calls[1].url.searchParams.get("since"), "ep.4-0");
  assert.equal(seen.welcomes[1].replica, "gw-2");
  assert.equal(client.transport, "sse");
  client.close();
});

test("SSE refusals stop like their close codes; 503 retries", async () => {
  const { fetch } = fakeFetch([503, 403]);
  const { client, seen } = make({ transport: "sse", fetch });
  client.connect();
  await settle();
  assert.equal(seen.disconnects[0].code, 1013);
  assert.equal(seen.disconnects[0].willRetry, true);
  clock.advance(clock.nextDelay());
  await settle();
  assert.equal(client.state, "stopped");
  assert.deepEqual(seen.stops, [{ code: 4403, reason: "refused with 403" }]);
});

test("a WebSocket that worked once never falls back (its failures are outages, not a block)", async () => {
  const { client, seen } = make();
  client.connect();
  FakeSocket.last().welcome();
  for (let i = 0; i < 4; i++) {
    FakeSocket.last().serverClose(1006, "");
    clock.advance(clock.nextDelay());
  }
  assert.deepEqual(seen.transports, []);
  assert.equal(client.transport, "websocket");
  client.close();
});

test("refusals after the upgrade (1013, 1012) prove WebSocket works: no fallback", () => {
  const { client, seen } = make();
  client.connect();
  for (let i = 0; i < 3; i++) {
    FakeSocket.last().open();
    FakeSocket.last().serverClose(i === 1 ? 1012 : 1013, "refused");
    clock.advance(clock.nextDelay());
  }
  assert.deepEqual(seen.transports, []);
  assert.equal(client.transport, "websocket");
  assert.equal(FakeSocket.made.length, 4);
  client.close();
});
