// The /console page end to end, in real headless Chromium, against real gateways on a real Redis: it loads
// without console errors, shows an event published over HTTP within a second, survives a drained restart of
// its gateway and shows the event published during the gap exactly once, shows `recovered: false` when
// history was lost, and stops on a forbidden channel. Each test saves a screenshot (path in the output).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { launch, openPage, screenshot } from "./support/browser.mjs";
import { Gateway, RedisServer, jwt, waitFor } from "./support/servers.mjs";

const SECRET = "console-e2e-secret-0123456789abcdef";
/** What Chromium itself logs while a gateway is down: failed connection attempts, not page bugs. */
const GATEWAY_DOWN = /^(WebSocket connection to '.*' failed|Failed to load resource: net::ERR_CONNECTION_REFUSED)/;

const redis = new RedisServer();
const consoleGateway = new Gateway({ name: "gw-console" }); // serves the page; restarted by the tests
const publisher = new Gateway({ name: "gw-publisher" }); // publishes while the other is down
let browser;

before(async () => {
  await redis.start();
  consoleGateway.broker = publisher.broker = redis.url;
  await Promise.all([consoleGateway.start(), publisher.start(), launch().then((b) => (browser = b))]);
});

after(async () => {
  await browser?.close();
  await Promise.all([consoleGateway.stop(), publisher.stop()]);
  await redis.stop();
});

const event = (channel, n) => ({ channel, type: "e2e.event", data: { n } });
const rows = (page) => page.$$eval("#log tr[data-id]", (trs) => trs.map((tr) => tr.dataset.id).reverse());
const row = (id) => `#log tr[data-id="${id}"]`;

async function openConsole(gateway, query) {
  const { page, problems } = await openPage(browser);
  await page.goto(`${gateway.http}/console?${query}`);
  return { page, problems };
}

describe("the console", () => {
  test("loads with no console errors and shows an event published over HTTP within a second", async (t) => {
    const { page, problems } = await openConsole(consoleGateway, "channels=live,other");
    await page.waitForSelector('#state[data-state="open"]', { timeout: 10_000 });
    assert.equal(await page.textContent("#replica"), "gw-console");
    assert.equal(await page.inputValue("#channels"), "live,other");
    const [id] = await publisher.publish([event("live", 1)]);
    const published = Date.now();
    await page.waitForSelector(row(id), { timeout: 1000 });
    const shownAfter = Date.now() - published;
    t.diagnostic(`event shown ${shownAfter} ms after the publish was accepted`);
    assert.ok(shownAfter <= 1000, `${shownAfter} ms`);
    assert.deepEqual(await page.$eval(row(id), (tr) => [tr.dataset.channel, tr.dataset.type]), ["live", "e2e.event"]);
    // live counts from the gateway
    await page.waitForFunction(() => Number(document.querySelector("#stats-connections")?.textContent) >= 1, null, { timeout: 5000 });
    assert.equal(await page.textContent("#stats-broker"), "up");
    // the publish form, through POST /events on the page's own gateway
    await page.fill("#pub-channel", "other");
    await page.fill("#pub-data", '{"from": "the form"}');
    await page.click("#publish");
    await page.waitForSelector('#publish-result[data-ok="true"]', { timeout: 5000 });
    const formId = (await page.textContent("#publish-result")).split(": ")[1];
    await page.waitForSelector(row(formId), { timeout: 2000 });
    await screenshot(page, t, "console-live");
    assert.deepEqual(problems, { consoleErrors: [], pageErrors: [] });
    await page.close();
  });

  test("survives a drained restart of its gateway and shows the event published in the gap exactly once", async (t) => {
    const { page, problems } = await openConsole(consoleGateway, "channels=restart");
    await page.waitForSelector('#state[data-state="open"]', { timeout: 10_000 });
    const [before] = await publisher.publish([event("restart", 1)]);
    await page.waitForSelector(row(before), { timeout: 2000 });
    await consoleGateway.terminate(); // SIGTERM: drain (1012 to the page), then exit
    await page.waitForSelector('#state[data-state="reconnecting"]', { timeout: 5000 });
    const [gap] = await publisher.publish([event("restart", 2)]);
    await consoleGateway.start();
    await page.waitForSelector(row(gap), { timeout: 20_000 });
    const [afterwards] = await publisher.publish([event("restart", 3)]);
    await page.waitForSelector(row(afterwards), { timeout: 2000 });
    await sleep(300);
    assert.deepEqual(await rows(page), [before, gap, afterwards]); // each exactly once, in order
    assert.equal(await page.getAttribute("#state", "data-state"), "open");
    assert.equal(await page.textContent("#recovered"), "recovered: true");
    const notices = await page.$$eval("#notices li", (items) => items.map((li) => li.textContent));
    assert.ok(notices.some((text) => text.includes("disconnected (1012")), notices.join("\n"));
    await screenshot(page, t, "console-after-restart");
    assert.deepEqual(problems.pageErrors, []);
    const unexpected = problems.consoleErrors.filter((text) => !GATEWAY_DOWN.test(text));
    assert.deepEqual(unexpected, []);
    t.diagnostic(`browser messages while the gateway was down: ${problems.consoleErrors.length}`);
    await page.close();
  });

  test("shows recovered: false when history was lost (Redis restarted empty)", async (t) => {
    const { page, problems } = await openConsole(consoleGateway, "channels=lost");
    await page.waitForSelector('#state[data-state="open"]', { timeout: 10_000 });
    const [old] = await publisher.publish([event("lost", 1)]);
    await page.waitForSelector(row(old), { timeout: 2000 });
    await redis.restartEmpty();
    for (const gateway of [consoleGateway, publisher]) {
      await waitFor(async () => (await fetch(`${gateway.http}/readyz`)).status === 200, 20_000, "ready again");
    }
    await consoleGateway.shed(1); // the page reconnects with since = an id of the lost history
    await page.waitForFunction(() => document.querySelector("#recovered")?.dataset.recovered === "false", null, { timeout: 10_000 });
    assert.equal(await page.textContent("#recovered"), "recovered: false (epoch_changed)");
    const warning = await page.textContent('#notices li[data-level="warn"]');
    assert.match(warning, /recovered: false \(epoch_changed\)/);
    const [fresh] = await publisher.publish([event("lost", 2)]);
    await page.waitForSelector(row(fresh), { timeout: 2000 }); // live events go on after the gap
    await screenshot(page, t, "console-recovered-false");
    assert.deepEqual(problems, { consoleErrors: [], pageErrors: [] });
    await page.close();
  });
});

describe("the console with subscriber auth", () => {
  const guarded = new Gateway({ name: "gw-auth", env: { EVENTCAST_JWT_SECRET: SECRET } });
  before(async () => {
    guarded.broker = redis.url;
    await guarded.start();
  });
  after(() => guarded.stop());

  test("stops on a forbidden channel (4403) and does not retry; a token that may read it works", async (t) => {
    const { page, problems } = await openConsole(guarded, "channels=secret");
    await page.waitForSelector('#state[data-state="stopped"]', { timeout: 10_000 });
    assert.match(await page.textContent("#state"), /^stopped: 4401 missing token/);
    const now = Math.floor(Date.now() / 1000);
    await page.fill("#token", jwt(SECRET, { channels: ["public.*"], exp: now + 300 }));
    await page.click("#connect");
    await page.waitForFunction(() => document.querySelector("#state")?.textContent?.startsWith("stopped: 4403"), null, { timeout: 10_000 });
    assert.equal(await page.textContent("#state"), "stopped: 4403 forbidden: this token may not read 'secret'");
    await sleep(1500); // longer than any first retry would wait
    assert.equal(await page.getAttribute("#state", "data-state"), "stopped");
    assert.equal(await guarded.connections(), 0);
    await screenshot(page, t, "console-forbidden");
    await page.fill("#token", jwt(SECRET, { channels: ["secret"], exp: now + 300 }));
    await page.click("#connect");
    await page.waitForSelector('#state[data-state="open"]', { timeout: 10_000 });
    assert.equal(await page.textContent("#replica"), "gw-auth");
    assert.deepEqual(problems, { consoleErrors: [], pageErrors: [] });
    await page.close();
  });
});
