// The Server-Sent Events parser (fed in arbitrary chunks) and how HTTP refusals map to close codes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { SSEParser, closeCodeForStatus, endpoint, tokenExpiry } from "./support/client.mjs";

const STREAM =
  "retry: 1000\n\n" +
  'event: eventcast.welcome\nid: ep.1-0\ndata: {"type":"eventcast.welcome","position":"ep.1-0"}\n\n' +
  ": heartbeat\n\n" +
  'id: ep.2-0\ndata: {"id":"ep.2-0","data":"a\\nb"}\n\n' +
  "data: line one\r\ndata: line two\r\n\r\n" +
  'event: eventcast.close\ndata: {"type":"eventcast.close","code":1012,"reason":"drain"}\nretry: 1000\n\n';

function parse(chunks) {
  const messages = [];
  const parser = new SSEParser((message) => messages.push(message));
  for (const chunk of chunks) parser.push(chunk);
  return messages;
}

test("events, named events, ids, comments, multi-line data and CRLF, whole or byte by byte", () => {
  const whole = parse([STREAM]);
  assert.deepEqual(
    whole.map((m) => [m.event, m.id]),
    [
      ["eventcast.welcome", "ep.1-0"],
      ["message", "ep.2-0"],
      ["message", "ep.2-0"], // the last id stays until a new one
      ["eventcast.close", "ep.2-0"],
    ],
  );
  assert.equal(whole[2].data, "line one\nline two");
  assert.equal(JSON.parse(whole[1].data).data, "a\nb");
  assert.deepEqual(parse([...STREAM]), whole); // one character at a time, '\r' and '\n' split apart
});

test("HTTP refusals of /sse/events become the WebSocket close codes", () => {
  assert.equal(closeCodeForStatus(400), 4400);
  assert.equal(closeCodeForStatus(401), 4401);
  assert.equal(closeCodeForStatus(403), 4403);
  assert.equal(closeCodeForStatus(429), 1013);
  assert.equal(closeCodeForStatus(503), 1013);
  assert.equal(closeCodeForStatus(500), 1011);
  assert.equal(closeCodeForStatus(404), 4400);
});

test("endpoints: scheme from the base URL, path prefix kept, filter and token in the query", () => {
  const base = new URL("https://gw.example.com/prefix/");
  const ws = new URL(endpoint(base, "websocket", { channels: ["a", "b"], since: "ep.1-0", token: "t" }));
  assert.equal(ws.protocol, "wss:");
  assert.equal(ws.pathname, "/prefix/ws/events");
  assert.deepEqual(Object.fromEntries(ws.searchParams), { channels: "a,b", since: "ep.1-0", token: "t" });
  const filtered = new URL(
    endpoint(new URL("ws://h:8000"), "websocket", { channels: ["a"], filter: { types: ["x.*", "y"], where: { repo: "r", n: 3, ok: true } } }),
  );
  assert.equal(filtered.pathname, "/ws/events/filtered");
  assert.equal(filtered.protocol, "ws:");
  assert.equal(filtered.searchParams.get("types"), "x.*,y");
  assert.deepEqual(filtered.searchParams.getAll("where"), ["repo=r", "n=3", "ok=true"]);
  const sse = new URL(endpoint(new URL("wss://h"), "sse", { channels: ["a"] }));
  assert.equal(sse.href, "https://h/sse/events?channels=a");
  const sseFiltered = new URL(endpoint(new URL("http://h"), "sse", { channels: ["a"], filter: { types: ["x"] } }));
  assert.equal(sseFiltered.pathname, "/sse/events/filtered");
});

test("tokenExpiry reads a JWT's exp (ms) and ignores anything else", () => {
  const claims = Buffer.from(JSON.stringify({ exp: 1700000000 })).toString("base64url");
  assert.equal(tokenExpiry(`h.${claims}.s`), 1700000000000);
  assert.equal(tokenExpiry("not-a-jwt"), null);
  assert.equal(tokenExpiry(`h.${Buffer.from("{}").toString("base64url")}.s`), null);
});
