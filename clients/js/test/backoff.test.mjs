// The reconnect rules as pure functions: which close codes retry, and the delays (with an injected random).
import assert from "node:assert/strict";
import { test } from "node:test";
import { CloseCode, DEFAULT_BACKOFF, RETRY_CODES, closeAction, retryDelay } from "./support/client.mjs";

const options = { initialMs: 500, maxMs: 30_000, overloadMs: 5_000, jitter: 0.5 };
const low = () => 0; // no jitter taken off: the ceiling
const high = () => 0.999999; // the most jitter taken off

test("retry on 1006, 1011, 1012, 1013, 4008 (and 1001, 1005 from proxies); never on 4400, 4401, 4403", () => {
  for (const code of [1001, 1005, 1006, 1011, 1012, 1013, 4008]) assert.equal(closeAction(code, ""), "retry", code);
  for (const code of [1000, 1008, 1009, 4400, 4401, 4403, 4999, 3000]) assert.equal(closeAction(code, "x"), "stop", code);
  assert.deepEqual([...RETRY_CODES].sort(), [1001, 1005, 1006, 1011, 1012, 1013, 4008]);
});

test("a 4401 whose reason says the token expired asks for a fresh token; other 4401s stop", () => {
  assert.equal(closeAction(CloseCode.UNAUTHENTICATED, "token expired"), "refresh-token");
  assert.equal(closeAction(CloseCode.UNAUTHENTICATED, "invalid token: Signature verification failed"), "stop");
  assert.equal(closeAction(CloseCode.UNAUTHENTICATED, "missing token: send ..."), "stop");
  assert.equal(closeAction(CloseCode.FORBIDDEN, "token expired"), "stop"); // only 4401 means the token
});

test("exponential from initialMs, doubling per failed attempt, capped at maxMs", () => {
  const ceilings = [0, 1, 2, 3, 4, 5, 6, 7, 10, 60].map((attempt) => retryDelay(1006, attempt, options, low));
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
});

test("equal jitter: every delay lies in [ceiling * (1 - jitter), ceiling]", () => {
  for (const attempt of [0, 1, 2, 3, 8]) {
    const ceiling = retryDelay(1011, attempt, options, low);
    const floor = retryDelay(1011, attempt, options, high);
    assert.ok(floor >= Math.floor(ceiling * 0.5) && floor < ceiling, `${attempt}: ${floor} vs ${ceiling}`);
    const middle = retryDelay(1011, attempt, options, () => 0.5);
    assert.equal(middle, Math.floor(ceiling * 0.75));
  }
  // jitter 0 makes it deterministic; jitter is clamped to [0, 1]
  assert.equal(retryDelay(4008, 2, { ...options, jitter: 0 }, high), 2000);
  assert.equal(retryDelay(4008, 2, { ...options, jitter: 7 }, () => 0.5), 1000);
});

test("1013 (overloaded) waits longer: exponential from overloadMs", () => {
  assert.equal(retryDelay(1013, 0, options, low), 5000);
  assert.equal(retryDelay(1013, 1, options, low), 10000);
  assert.equal(retryDelay(1013, 9, options, low), 30000);
  assert.ok(retryDelay(1013, 0, options, high) >= 2500);
  assert.ok(retryDelay(1013, 0, options, high) > retryDelay(1006, 0, options, low));
});

test("1012 (drain, shed): the first reconnect is spread over [0, initialMs); later ones back off as usual", () => {
  assert.equal(retryDelay(1012, 0, options, low), 0);
  assert.equal(retryDelay(1012, 0, options, () => 0.5), 250);
  assert.ok(retryDelay(1012, 0, options, high) < 500);
  assert.equal(retryDelay(1012, 1, options, low), 1000);
});

test("the defaults are the documented ones", () => {
  assert.deepEqual(DEFAULT_BACKOFF, { initialMs: 500, maxMs: 30000, overloadMs: 5000, jitter: 0.5 });
});
