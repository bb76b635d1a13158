// eventcast console 0.1.0 -- generated from clients/js by `make js-build`; do not edit.

// console/console.ts
import { EventcastClient } from "/client.js";
var MAX_ROWS = 1e3;
var MAX_NOTICES = 50;
var STATS_INTERVAL_MS = 2e3;
function element(id) {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`console page: #${id} is missing`);
  return found;
}
var ui = {
  state: element("state"),
  replica: element("replica"),
  transport: element("transport"),
  recovered: element("recovered"),
  connection: element("connection"),
  lastId: element("last-id"),
  subscribeForm: element("subscribe-form"),
  channels: element("channels"),
  token: element("token"),
  disconnect: element("disconnect"),
  filterForm: element("filter-form"),
  types: element("types"),
  where: element("where"),
  publishForm: element("publish-form"),
  apiKey: element("api-key"),
  pubChannel: element("pub-channel"),
  pubType: element("pub-type"),
  pubData: element("pub-data"),
  publish: element("publish"),
  publishResult: element("publish-result"),
  notices: element("notices"),
  log: element("log"),
  eventCount: element("event-count"),
  stats: {
    replica: element("stats-replica"),
    connections: element("stats-connections"),
    published: element("stats-published"),
    delivered: element("stats-delivered"),
    rate: element("stats-rate"),
    broker: element("stats-broker")
  }
};
var client = null;
var received = 0;
var publishNeedsKey = false;
function list(text) {
  return text.split(",").map((part) => part.trim()).filter((part) => part !== "");
}
function parseWhere(text) {
  const where = {};
  for (const item of list(text)) {
    const at = item.indexOf("=");
    if (at <= 0) throw new Error(`where: "${item}" is not field=value`);
    const raw = item.slice(at + 1).trim();
    let value = raw;
    try {
      const parsed = JSON.parse(raw);
      if (typeof parsed === "number" || typeof parsed === "boolean" || parsed === null) value = parsed;
    } catch {
      value = raw;
    }
    where[item.slice(0, at).trim()] = value;
  }
  return where;
}
function currentFilter() {
  return { types: list(ui.types.value), where: parseWhere(ui.where.value) };
}
function showViewInUrl() {
  const query2 = new URLSearchParams();
  query2.set("channels", list(ui.channels.value).join(","));
  if (ui.types.value.trim()) query2.set("types", list(ui.types.value).join(","));
  for (const item of list(ui.where.value)) query2.append("where", item);
  history.replaceState(null, "", `${location.pathname}?${query2.toString()}`);
}
function notice(text, level = "info") {
  const item = document.createElement("li");
  item.dataset.level = level;
  item.textContent = `${(/* @__PURE__ */ new Date()).toLocaleTimeString()} ${text}`;
  ui.notices.prepend(item);
  while (ui.notices.children.length > MAX_NOTICES) ui.notices.lastElementChild?.remove();
}
function setState(text, state) {
  ui.state.textContent = text;
  ui.state.dataset.state = state;
}
function showWelcome(welcome) {
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
function time(ts) {
  const at = new Date(ts);
  return `${at.toLocaleTimeString()}.${String(at.getMilliseconds()).padStart(3, "0")}`;
}
function addRow(event) {
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
    [data.length > 400 ? `${data.slice(0, 400)}...` : data, "data"]
  ]) {
    const cell = document.createElement("td");
    cell.className = css;
    cell.textContent = text;
    row.append(cell);
  }
  ui.log.prepend(row);
  while (ui.log.children.length > MAX_ROWS) ui.log.lastElementChild?.remove();
}
function subscribe() {
  client?.close();
  let filter;
  try {
    filter = currentFilter();
  } catch (error) {
    notice(String(error.message), "warn");
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
    token: token || void 0
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
      setState(`reconnecting in ${((info.delayMs ?? 0) / 1e3).toFixed(1)} s`, "reconnecting");
      notice(`disconnected (${why}); reconnecting and resuming from the last id`);
    }
  });
  next.on("stop", (info) => {
    if (client !== next) return;
    setState(`stopped: ${info.code} ${info.reason}`, "stopped");
    if (info.code !== 1e3) notice(`stopped: ${info.code} ${info.reason}`, "warn");
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
    notice(String(error.message), "warn");
  }
});
ui.publishForm.addEventListener("submit", (event) => {
  event.preventDefault();
  void publish();
});
ui.apiKey.addEventListener("input", () => updatePublishButton());
function updatePublishButton() {
  const blocked = publishNeedsKey && ui.apiKey.value.trim() === "";
  ui.publish.disabled = blocked;
  ui.publish.title = blocked ? "this gateway needs an API key to publish" : "";
}
async function publish() {
  let data;
  try {
    data = JSON.parse(ui.pubData.value);
  } catch {
    report(false, "data is not valid JSON");
    return;
  }
  const headers = { "content-type": "application/json" };
  const key = ui.apiKey.value.trim();
  if (key) headers["x-api-key"] = key;
  try {
    const response = await fetch("/events", {
      method: "POST",
      headers,
      body: JSON.stringify({ channel: ui.pubChannel.value.trim(), type: ui.pubType.value.trim(), data })
    });
    const body = await response.json();
    if (response.status === 202) report(true, `202 accepted: ${(body.ids ?? []).join(", ")}`);
    else report(false, `${response.status}: ${body.error?.message ?? response.statusText}`);
  } catch (error) {
    report(false, `cannot reach the gateway: ${String(error)}`);
  }
}
function report(ok, text) {
  ui.publishResult.textContent = text;
  ui.publishResult.dataset.ok = String(ok);
}
var previous = null;
async function refreshStats() {
  try {
    const response = await fetch("/console/stats", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const stats = await response.json();
    const now = performance.now();
    ui.stats.replica.textContent = stats.replica + (stats.draining ? " (draining)" : "");
    ui.stats.connections.textContent = String(stats.connections);
    ui.stats.published.textContent = String(stats.published);
    ui.stats.delivered.textContent = String(stats.delivered);
    ui.stats.broker.textContent = stats.broker;
    if (previous !== null && stats.published >= previous.published && now > previous.at) {
      const rate = (stats.published - previous.published) * 1e3 / (now - previous.at);
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
var statsTimer = null;
function scheduleStats(delayMs) {
  if (statsTimer !== null) clearTimeout(statsTimer);
  statsTimer = setTimeout(() => {
    statsTimer = null;
    void refreshStats();
  }, delayMs);
}
var query = new URLSearchParams(location.search);
ui.channels.value = query.get("channels") ?? "default";
ui.types.value = query.get("types") ?? "";
ui.where.value = query.getAll("where").join(", ");
subscribe();
scheduleStats(0);
