/**
 * The /console page: the served client (/client.js) driving a live view of one subscription, a publish form
 * and the gateway's counts (/console/stats). `/console?channels=a,b&types=x.*&where=k=v` opens subscribed to
 * that view; the URL follows every change, so it can be shared (the token never goes into it).
 */
import { EventcastClient, type EventcastEvent, type Filter, type Scalar, type Welcome } from "/client.js";

const MAX_ROWS = 1000;
const MAX_NOTICES = 50;
const STATS_INTERVAL_MS = 2000;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`console page: #${id} is missing`);
  return found as T;
}

const ui = {
  state: element<HTMLSpanElement>("state"),
  replica: element<HTMLElement>("replica"),
  transport: element<HTMLElement>("transport"),
  recovered: element<HTMLSpanElement>("recovered"),
  connection: element<HTMLElement>("connection"),
  lastId: element<HTMLElement>("last-id"),
  subscribeForm: element<HTMLFormElement>("subscribe-form"),
  channels: element<HTMLInputElement>("channels"),
  token: element<HTMLInputElement>("token"),
  disconnect: element<HTMLButtonElement>("disconnect"),
  filterForm: element<HTMLFormElement>("filter-form"),
  types: element<HTMLInputElement>("types"),
  where: element<HTMLInputElement>("where"),
  publishForm: element<HTMLFormElement>("publish-form"),
  apiKey: element<HTMLInputElement>("api-key"),
  pubChannel: element<HTMLInputElement>("pub-channel"),
  pubType: element<HTMLInputElement>("pub-type"),
  pubData: element<HTMLTextAreaElement>("pub-data"),
  publish: element<HTMLButtonElement>("publish"),
  publishResult: element<HTMLOutputElement>("publish-result"),
  notices: element<HTMLUListElement>("notices"),
  log: element<HTMLTableSectionElement>("log"),
  eventCount: element<HTMLElement>("event-count"),
  stats: {
    replica: element<HTMLElement>("stats-replica"),
    connections: element<HTMLElement>("stats-connections"),
    published: element<HTMLElement>("stats-published"),
    delivered: element<HTMLElement>("stats-delivered"),
    rate: element<HTMLElement>("stats-rate"),
    broker: element<HTMLElement>("stats-broker"),
  },
};

let client: EventcastClient | null = null;
let received = 0;
let publishNeedsKey = false;

// ------------------------------------------------------------------------------------------ the view in the URL
function list(text: string): string[] {
  return text
    .split(",")
    .map((part) => part.trim())
    .filter((part) => part !== "");
}

/** `repo=a, n=3` -> {repo: "a", n: 3}: numbers, booleans and null compare as such, anything else as text. */
function parseWhere(text: string): Record<string, Scalar> {
  const where: Record<string, Scalar> = {};
  for (const item of list(text)) {
    const at = item.indexOf("=");
    if (at <= 0) throw new Error(`where: "${item}" is not field=value`);
    const raw = item.slice(at + 1).trim();
    let value: Scalar = raw;
    try {
      const parsed: unknown = JSON.parse(raw);
      if (typeof parsed === "number" || typeof parsed === "boolean" || parsed === null) value = parsed;
    } catch {
      value = raw;
    }
    where[item.slice(0, at).trim()] = value;
  }
  return where;
}

function currentFilter(): Filter {
  return { types: list(ui.types.value), where: parseWhere(ui.where.value) };
}

function showViewInUrl(): void {
  const query = new URLSearchParams();
  query.set("channels", list(ui.channels.value).join(","));
  if (ui.types.value.trim()) query.set("types", list(ui.types.value).join(","));
  for (const item of list(ui.where.value)) query.append("where", item);
  history.replaceState(null, "", `${location.pathname}?${query.toString()}`);
}

// ------------------------------------------------------------------------------------------ news on the page
function notice(text: string, level: "info" | "warn" = "info"): void {
  const item = document.createElement("li");
  item.dataset.level = level;
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  ui.notices.prepend(item);
  while (ui.notices.children.length > MAX_NOTICES) ui.notices.lastElementChild?.remove();
}

function setState(text: string, state: string): void {
  ui.state.textContent = text;
  ui.state.dataset.state = state;
}

function showWelcome(welcome: Welcome): void {
  ui.replica.textContent = welcome.replica;
  ui.connection.textContent = welcome.connection;
  ui.lastId.textContent = welcome.position;
  if (welcome.recovered) {
    ui.recovered.textContent = "recovered: true";
    ui.recovered.dataset.recovered = "true";
  } else if (welcome.reason === "no_since") {
    ui.recovered.textContent = "recovered: - (new subscription)";
    ui.recovered.dataset.recovered = "none";
  } else {
    ui.recovered.textContent = `recovered: false (${welcome.reason ?? "unknown"})`;
    ui.recovered.dataset.recovered = "false";
  }
}

function time(ts: number): string {
  const at = new Date(ts);
  return `${at.toLocaleTimeString()}.${String(at.getMilliseconds()).padStart(3, "0")}`;
}

function addRow(event: EventcastEvent): void {
  received += 1;
  ui.eventCount.textContent = String(received);
  ui.lastId.textContent = event.id;
  const row = document.createElement("tr");
  row.dataset.id = event.id;
  row.dataset.channel = event.channel;
  row.dataset.type = event.type;
  const data = JSON.stringify(event.data);
  for (const [text, css] of [
    [time(event.ts), "time"],
    [event.channel, "channel"],
    [event.type, "type"],
    [event.id, "id"],
    [data.length > 400 ? `${data.slice(0, 400)}...` : data, "data"],
  ]) {
    const cell = document.createElement("td");
    cell.className = css;
    cell.textContent = text; // never innerHTML: event data is untrusted
    row.append(cell);
  }
  ui.log.prepend(row);
  while (ui.log.children.length > MAX_ROWS) ui.log.lastElementChild?.remove();
}

// ------------------------------------------------------------------------------------------ subscribing
function subscribe(): void {
  client?.close();
  let filter: Filter;
  try {
    filter = currentFilter();
  } catch (error) {
    notice(String((error as Error).message), "warn");
    return;
  }
  const channels = list(ui.channels.value);
  if (channels.length === 0) ui.channels.value = "default";
  if (!ui.pubChannel.value) ui.pubChannel.value = list(ui.channels.value)[0];
  showViewInUrl();
  const token = ui.token.value.trim();
  const next = new EventcastClient({
    channels: list(ui.channels.value),
    filter,
    token: token || undefined,
  });
  client = next;
  next.on("state", (state) => {
    if (client !== next) return;
    if (state !== "reconnecting") setState(state, state);
    ui.transport.textContent = next.transport;
  });
  next.on("welcome", (welcome) => {
    if (client !== next) return;
    showWelcome(welcome);
    scheduleStats(0);
  });
  next.on("event", (event) => {
    if (client === next) addRow(event);
  });
  next.on("resync", (welcome) => {
    if (client !== next) return;
    notice(`recovered: false (${welcome.reason}): history did not cover the gap; events may be missing`, "warn");
  });
  next.on("disconnect", (info) => {
    if (client !== next) return;
    const why = `${info.code}${info.reason ? ` ${info.reason}` : ""}`;
    if (info.willRetry) {
      setState(`reconnecting in ${((info.delayMs ?? 0) / 1000).toFixed(1)} s`, "reconnecting");
      notice(`disconnected (${why}); reconnecting and resuming from the last id`);
    }
  });
  next.on("stop", (info) => {
    if (client !== next) return;
    setState(`stopped: ${info.code} ${info.reason}`, "stopped");
    if (info.code !== 1000) notice(`stopped: ${info.code} ${info.reason}`, "warn");
  });
  next.on("transport", (kind) => {
    if (client === next) notice(`WebSocket blocked: using ${kind === "sse" ? "Server-Sent Events" : kind}`, "warn");
  });
  next.on("filter", () => {
    if (client === next) notice("filter applied");
  });
  next.connect();
}

ui.subscribeForm.addEventListener("submit", (event) => {
  event.preventDefault();
  subscribe();
});

ui.disconnect.addEventListener("click", () => {
  client?.close();
});

ui.filterForm.addEventListener("submit", (event) => {
  event.preventDefault();
  try {
    const filter = currentFilter();
    showViewInUrl();
    if (client !== null && client.state !== "stopped") client.setFilter(filter);
    else subscribe();
  } catch (error) {
    notice(String((error as Error).message), "warn");
  }
});

// ------------------------------------------------------------------------------------------ publishing
ui.publishForm.addEventListener("submit", (event) => {
  event.preventDefault();
  void publish();
});

ui.apiKey.addEventListener("input", () => updatePublishButton());

function updatePublishButton(): void {
  const blocked = publishNeedsKey && ui.apiKey.value.trim() === "";
  ui.publish.disabled = blocked;
  ui.publish.title = blocked ? "this gateway needs an API key to publish" : "";
}

async function publish(): Promise<void> {
  let data: unknown;
  try {
    data = JSON.parse(ui.pubData.value);
  } catch {
    report(false, "data is not valid JSON");
    return;
  }
  const headers: Record<string, string> = { "content-type": "application/json" };
  const key = ui.apiKey.value.trim();
  if (key) headers["x-api-key"] = key;
  try {
    const response = await fetch("/events", {
      method: "POST",
      headers,
      body: JSON.stringify({ channel: ui.pubChannel.value.trim(), type: ui.pubType.value.trim(), data }),
    });
    const body = (await response.json()) as { ids?: string[]; error?: { message?: string } };
    if (response.status === 202) report(true, `202 accepted: ${(body.ids ?? []).join(", ")}`);
    else report(false, `${response.status}: ${body.error?.message ?? response.statusText}`);
  } catch (error) {
    report(false, `cannot reach the gateway: ${String(error)}`);
  }
}

function report(ok: boolean, text: string): void {
  ui.publishResult.textContent = text;
  ui.publishResult.dataset.ok = String(ok);
}

// ------------------------------------------------------------------------------------------ counts
interface Stats {
  replica: string;
  connections: number;
  published: number;
  delivered: number;
  broker: string;
  draining: boolean;
  publish_auth: boolean;
}

let previous: { published: number; at: number } | null = null;

async function refreshStats(): Promise<void> {
  try {
    const response = await fetch("/console/stats", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const stats = (await response.json()) as Stats;
    const now = performance.now();
    ui.stats.replica.textContent = stats.replica + (stats.draining ? " (draining)" : "");
    ui.stats.connections.textContent = String(stats.connections);
    ui.stats.published.textContent = String(stats.published);
    ui.stats.delivered.textContent = String(stats.delivered);
    ui.stats.broker.textContent = stats.broker;
    if (previous !== null && stats.published >= previous.published && now > previous.at) {
      const rate = ((stats.published - previous.published) * 1000) / (now - previous.at);
      ui.stats.rate.textContent = `${rate.toFixed(1)} events/s`;
    }
    previous = { published: stats.published, at: now };
    publishNeedsKey = stats.publish_auth;
    updatePublishButton();
  } catch {
    for (const cell of Object.values(ui.stats)) cell.textContent = "-";
    ui.stats.replica.textContent = "unreachable";
    previous = null;
  } finally {
    scheduleStats(STATS_INTERVAL_MS);
  }
}

let statsTimer: ReturnType<typeof setTimeout> | null = null;

/** (Re)plan the next poll; a welcome asks for one at once, so the counts follow a reconnect. */
function scheduleStats(delayMs: number): void {
  if (statsTimer !== null) clearTimeout(statsTimer);
  statsTimer = setTimeout(() => {
    statsTimer = null;
    void refreshStats();
  }, delayMs);
}

// ------------------------------------------------------------------------------------------ start
const query = new URLSearchParams(location.search);
ui.channels.value = query.get("channels") ?? "default";
ui.types.value = query.get("types") ?? "";
ui.where.value = query.getAll("where").join(", ");
subscribe();
scheduleStats(0);
