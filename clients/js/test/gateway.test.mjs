// The JavaScript client against real eventcast gateways (memory broker): resume across 1012 with nothing lost
// or doubled, no retry on 4401/4403, token refresh on expiry, in-band filters, MessagePack, 1013 backoff, and
// the SSE fallback when WebSockets are blocked. Node has no WebSocket of its own: npm `ws` stands in.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { decode } from "@msgpack/msgpack";
import WebSocket from "ws";
import { BlockedSocket } from "./support/fakes.mjs";
import { Gateway, jwt, waitFor } from "./support/servers.mjs";
import { EventcastClient } from "./support/client.mjs";
import { record } from "./support/record.mjs";

const SECRET = "js-client-test-secret-0123456789abcdef";
const KEY = { "x-api-key": "js-publisher-key" };

/** A client on `gateway` that records what it sees; every one made is closed after its suite. */
const made = [];
function subscribe(gateway, options = {}) {
  const client = new EventcastClient({ url: gateway.http, WebSocket, ...options });
  const seen = record(client);
  made.push(client);
  client.connect();
  return { client, seen };
}

const until = (predicate, what, ms = 10_000) => waitFor(predicate, ms, what);
const batch = (channel, n, start = 0, type = "test.event") =>
  Array.from({ length: n }, (_, i) => ({ channel, type, data: { n: start + i } }));

describe("an open gateway", () => {
  const gateway = new Gateway({ name: "gw-js" });
  before(() => gateway.start());
  after(async () => {
    for (const client of made) client.close();
    await gateway.stop();
  });

  test("delivers events in order and resumes across a shed (1012) with nothing lost or doubled", async () => {
    const { client, seen } = subscribe(gateway, { channels: ["resume"], random: () => 0.9 });
    await until(() => seen.welcomes.length === 1, "welcome");
    assert.equal(seen.welcomes[0].replica, "gw-js");
    const ids = await gateway.publish(batch("resume", 5));
    await until(() => seen.events.length === 5, "5 events");
    assert.equal(await gateway.shed(1), 1);
    ids.push(...(await gateway.publish(batch("resume", 5, 5)))); // while it waits to reconnect (~450 ms)
    await until(() => seen.welcomes.length === 2, "the reconnect");
    ids.push(...(await gateway.publish(batch("resume", 5, 10))));
    await until(() => seen.events.length >= 15, "15 events");
    await sleep(200);
    assert.deepEqual(seen.disconnects.map((d) => [d.code, d.willRetry]), [[1012, true]]);
    assert.equal(seen.welcomes[1].recovered, true);
    assert.deepEqual(seen.events.map((e) => e.id), ids);
    assert.deepEqual(seen.events.map((e) => e.data.n), [...Array(15).keys()]);
    assert.equal(seen.resyncs.length, 0);
    assert.equal(client.lastId, ids.at(-1));
    client.close();
  });

  test("changes its filter in-band", async () => {
    const { client, seen } = subscribe(gateway, { channels: ["f"], filter: { types: ["a.*"] } });
    await until(() => seen.welcomes.length === 1, "welcome");
    await gateway.publish([...batch("f", 1, 0, "a.x"), ...batch("f", 1, 1, "b.x")]);
    client.setFilter({ types: ["b.*"], where: { n: 3 } });
    await until(() => seen.filters.length === 1, "the filter ack");
    await gateway.publish([...batch("f", 3, 2, "b.x"), ...batch("f", 1, 5, "a.x")]);
    await until(() => seen.events.length === 2, "2 events");
    await sleep(200);
    assert.deepEqual(seen.events.map((e) => [e.type, e.data.n]), [["a.x", 0], ["b.x", 3]]);
    client.close();
  });

  test("speaks MessagePack when given a decoder", async () => {
    const { client, seen } = subscribe(gateway, { channels: ["mp"], msgpack: decode });
    await until(() => seen.welcomes.length === 1, "welcome");
    assert.equal(seen.welcomes[0].protocol, "eventcast.v1.msgpack");
    const events = [{ channel: "mp", type: "t", data: { text: "é ✓", list: [1, 2.5, null, true], big: 2 ** 40 } }];
    const ids = await gateway.publish(events);
    await until(() => seen.events.length === 1, "the event");
    assert.equal(seen.events[0].id, ids[0]);
    assert.deepEqual(seen.events[0].data, events[0].data);
    client.close();
  });

  test("falls back to Server-Sent Events when WebSockets are blocked, and resumes there", async () => {
    const { client, seen } = subscribe(gateway, {
      channels: ["sse"],
      WebSocket: BlockedSocket,
      backoff: { initialMs: 50 },
      random: () => 0.9,
    });
    await until(() => seen.welcomes.length === 1, "the SSE welcome");
    assert.deepEqual(seen.transports, ["sse"]);
    assert.equal(client.transport, "sse");
    const ids = await gateway.publish(batch("sse", 3));
    await until(() => seen.events.length === 3, "3 events over SSE");
    assert.equal(await gateway.shed(1), 1);
    ids.push(...(await gateway.publish(batch("sse", 3, 3))));
    await until(() => seen.events.length === 6, "6 events after the shed");
    assert.equal(seen.disconnects.at(-1).code, 1012);
    assert.equal(seen.welcomes.at(-1).recovered, true);
    assert.deepEqual(seen.events.map((e) => e.id), ids);
    client.setFilter({ types: ["only.this"] }); // SSE has no in-band control: it reopens with the filter
    await until(() => seen.welcomes.length === 3, "the reopened stream");
    await gateway.publish([...batch("sse", 1, 6, "not.this"), ...batch("sse", 1, 7, "only.this")]);
    await until(() => seen.events.length === 7, "the filtered event");
    assert.equal(seen.events.at(-1).type, "only.this");
    client.close();
  });
});

describe("a gateway with subscriber auth (JWT)", () => {
  const gateway = new Gateway({ env: { EVENTCAST_JWT_SECRET: SECRET, EVENTCAST_API_KEYS: KEY["x-api-key"] } });
  before(() => gateway.start());
  after(async () => {
    for (const client of made) client.close();
    await gateway.stop();
  });

  /** A WebSocket class that counts the connections it opens. */
  function counting() {
    const counter = { opened: 0 };
    counter.Socket = class extends WebSocket {
      constructor(...args) {
        super(...args);
        counter.opened += 1;
      }
    };
    return counter;
  }

  for (const [name, token, code] of [
    ["a channel the token may not read (4403)", () => jwt(SECRET, { channels: ["public.*"], exp: now() + 300 }), 4403],
    ["no token (4401)", () => undefined, 4401],
    ["a token with a bad signature (4401)", () => jwt("wrong-secret-0123456789abcdef01", { channels: true, exp: now() + 300 }), 4401],
  ]) {
    test(`stops and never retries on ${name}`, async () => {
      const counter = counting();
      const { client, seen } = subscribe(gateway, { channels: ["secret"], token: token(), WebSocket: counter.Socket });
      await until(() => seen.stops.length === 1, "the stop");
      assert.equal(seen.stops[0].code, code);
      assert.equal(client.state, "stopped");
      await sleep(1500); // longer than any first retry would wait
      assert.equal(counter.opened, 1);
      assert.equal(seen.welcomes.length, 0);
    });
  }

  test("asks for a fresh token when the gateway closes with 'token expired', and resumes", async () => {
    let asked = 0;
    const getToken = () => {
      asked += 1;
      return jwt(SECRET, { channels: ["exp"], exp: now() + 300 });
    };
    // The token expires in 2 s; the client's clock runs 10 s behind, so it does not replace it early itself.
    const timers = { setTimeout, clearTimeout, now: () => Date.now() - 10_000 };
    const { seen } = subscribe(gateway, { channels: ["exp"], token: jwt(SECRET, { channels: ["exp"], exp: now() + 2 }), getToken, timers });
    await until(() => seen.welcomes.length === 1, "welcome");
    const ids = await gateway.publish(batch("exp", 2), KEY);
    await until(() => seen.disconnects.length === 1, "the 4401 at expiry", 6000);
    assert.deepEqual([seen.disconnects[0].code, seen.disconnects[0].reason], [4401, "token expired"]);
    ids.push(...(await gateway.publish(batch("exp", 2, 2), KEY)));
    await until(() => seen.welcomes.length === 2, "the reconnect with the fresh token");
    await until(() => seen.events.length === 4, "4 events");
    assert.equal(asked, 1);
    assert.equal(seen.welcomes[1].recovered, true);
    assert.deepEqual(seen.events.map((e) => e.id), ids);
    assert.equal(seen.stops.length, 0);
  });
});

describe("an overloaded gateway (1013)", () => {
  const gateway = new Gateway({ env: { EVENTCAST_MAX_CONNECTIONS: "1" } });
  before(() => gateway.start());
  after(async () => {
    for (const client of made) client.close();
    await gateway.stop();
  });

  test("backs off longer, then gets in once there is room", async () => {
    const first = subscribe(gateway, { channels: ["o"] });
    await until(() => first.seen.welcomes.length === 1, "the first client");
    const second = subscribe(gateway, { channels: ["o"], backoff: { overloadMs: 400, initialMs: 10 }, random: () => 0 });
    await until(() => second.seen.disconnects.length >= 2, "two 1013 refusals");
    assert.deepEqual(second.seen.disconnects.slice(0, 2).map((d) => [d.code, d.willRetry, d.delayMs]), [
      [1013, true, 400],
      [1013, true, 800],
    ]);
    first.client.close();
    await until(() => second.seen.welcomes.length === 1, "the second client gets in", 8000);
    assert.equal(second.client.state, "open");
    assert.equal(second.client.transport, "websocket"); // refused after the upgrade: WebSocket is not blocked
  });
});

function now() {
  return Math.floor(Date.now() / 1000);
}
