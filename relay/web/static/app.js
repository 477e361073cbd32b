// relay dashboard: plain JavaScript, no build step, nothing from elsewhere.
// Every text that comes from agents is put in the page with textContent,
// never as HTML: a body holding <script> is shown, not run.
"use strict";

const MAX_MESSAGES = 500;
const RATE_SECONDS = 300;
const STATUS_ORDER = {pending: 0, delivered: 1, acked: 2, expired: 2};
// The fields of the events other than "accepted", as relay/events.py's FIELDS.
const EVENT_FIELDS = {
  online: ["agent", "session_id", "at"],
  offline: ["agent", "session_id", "at"],
  delivered: ["id", "seq", "to", "attempts", "at"],
  acked: ["id", "to", "sent_at", "at"],
  expired: ["id", "seq", "to", "at"],
};

const state = {
  messages: new Map(),   // id -> {id, from, to, thread, topic, kind, body, ts, deliveries}
  rate: new Map(),       // unix second -> messages accepted
  status: null,
  renderQueued: false,
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function text(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

async function getJSON(path) {
  const response = await fetch(path, {credentials: "same-origin"});
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function countRate(ms) {
  const second = Math.floor(ms / 1000);
  state.rate.set(second, (state.rate.get(second) || 0) + 1);
}

function addMessage(m) {
  const known = state.messages.get(m.id);
  if (known) {
    for (const [who, status] of Object.entries(m.deliveries || {})) setStatus(known, who, status);
    return;
  }
  state.messages.set(m.id, m);
  countRate(m.ts);
  while (state.messages.size > MAX_MESSAGES) {
    state.messages.delete(state.messages.keys().next().value);
  }
}

function setStatus(m, who, status) {
  const old = m.deliveries[who];
  if (old === undefined || STATUS_ORDER[status] >= STATUS_ORDER[old]) m.deliveries[who] = status;
}

function fromStored(item) {
  return {id: item.id, from: item.sender, to: item.recipient, thread: item.thread,
          topic: item.topic, kind: item.kind, body: item.body, ts: item.ts,
          deliveries: item.deliveries || {}};
}

async function loadMessages() {
  const items = await getJSON("/api/messages?limit=200");
  for (const item of items) addMessage(fromStored(item));
  queueRender();
}

async function loadTrouble() {
  const [dead, quarantine] = await Promise.all([
    getJSON("/api/dead-letters?limit=50"), getJSON("/api/quarantine?limit=50")]);
  const deadItems = dead.map(d => el("li", {},
    el("b", {}, "dead letter "), text(d.sender) + " \u2192 " + text(d.recipient) + ": ",
    el("span", {class: "body"}, text(d.body)), " (" + text(d.reason) + ")"));
  document.getElementById("dead").replaceChildren(
    ...(deadItems.length ? deadItems : [el("li", {}, "no dead letters")]));
  const quarantineItems = quarantine.map(q => el("li", {},
    el("b", {}, "quarantined " + text(q.statement) + " row: "), text(q.error)));
  document.getElementById("quarantine").replaceChildren(
    ...(quarantineItems.length ? quarantineItems : [el("li", {}, "nothing quarantined")]));
}

let statusTimer = null;
function scheduleStatus(delay) {
  if (statusTimer !== null) return;
  statusTimer = setTimeout(() => { statusTimer = null; loadStatus(); }, delay);
}

async function loadStatus() {
  try {
    state.status = await getJSON("/api/status");
    renderStatus();
  } catch (e) {
    document.getElementById("uptime").textContent = String(e);
  }
  try {
    const response = await fetch("/healthz", {credentials: "same-origin"});
    const health = await response.json();
    const badge = document.getElementById("health");
    badge.textContent = health.ok ? "healthy" : "unhealthy: " + health.reasons.join("; ");
    badge.className = "badge" + (health.ok ? "" : " bad");
  } catch (e) { /* shown by the status line */ }
}

function agentState(a) {
  const out = [];
  if (a.paused && a.paused.length) out.push(el("span", {class: "state paused"}, "paused: " + a.paused.join(", ")));
  if (a.backpressured) out.push(el("span", {class: "state backpressured"}, "backpressured"));
  if (!out.length) out.push(el("span", {class: "state"}, a.live ? "online" : "catching up"));
  return out;
}

function renderStatus() {
  const s = state.status;
  const rows = s.agents.map(a => {
    const info = Object.entries(a.info || {}).map(([k, v]) => k + ": " + text(v)).join(", ");
    return el("tr", {"data-agent": a.name},
      el("td", {class: "name"}, a.name), el("td", {}, info),
      el("td", {}, ...agentState(a)), el("td", {}, String(a.queue_depth)),
      el("td", {}, String(a.inflight)), el("td", {}, String(a.sent)),
      el("td", {}, String(a.delivered)));
  });
  document.querySelector("#agents tbody").replaceChildren(...rows);
  document.getElementById("agent-count").textContent = "(" + s.agents.length + " online)";
  document.getElementById("uptime").textContent = "up " + Math.round(s.uptime_s) + " s";
  const m = s.messages;
  document.getElementById("totals").textContent =
    "accepted " + m.accepted + " \u00b7 delivered " + m.delivered + " \u00b7 acked " + m.acked +
    " \u00b7 redelivered " + m.redelivered + " \u00b7 expired " + m.expired + " \u00b7 nacked " + m.nacked;
  const sync = document.getElementById("sync");
  if (!s.sync) {
    sync.replaceChildren(el("dt", {}, "state"), el("dd", {}, "off (no --sync-url)"));
  } else {
    const keys = ["state", "url", "backlog", "synced", "queued", "in_flight", "spilled_files",
                  "dead_letters", "last_error"];
    sync.replaceChildren(...keys.flatMap(k => [el("dt", {}, k), el("dd", {"data-key": k}, text(s.sync[k]))]));
  }
}

function matches(m, needle) {
  if (!needle) return true;
  return [m.from, m.to, m.thread, m.topic, text(m.body)].some(v => v && String(v).toLowerCase().includes(needle));
}

function renderMessages() {
  const needle = document.getElementById("search").value.trim().toLowerCase();
  const threads = new Map();
  for (const m of state.messages.values()) {
    if (!matches(m, needle)) continue;
    const key = m.thread || "(no thread)";
    if (!threads.has(key)) threads.set(key, []);
    threads.get(key).push(m);
  }
  // Most recently active thread first, messages oldest first within one.
  const ordered = [...threads.entries()].sort((a, b) => b[1][b[1].length - 1].ts - a[1][a[1].length - 1].ts);
  const blocks = ordered.slice(0, 50).map(([name, list]) => el("div", {class: "thread", "data-thread": name},
    el("h3", {}, name),
    ...list.slice(-30).map(m => el("div", {class: "msg", "data-id": m.id},
      el("div", {class: "meta"},
        new Date(m.ts).toISOString().slice(11, 23) + " " + text(m.from) + " \u2192 " + text(m.to) +
        (m.topic ? " #" + m.topic : "") + (m.kind && m.kind !== "message" ? " (" + m.kind + ")" : "") + " "),
      el("div", {class: "body"}, text(m.body)),
      el("div", {class: "rcpts"}, ...Object.entries(m.deliveries).sort().map(([who, status]) =>
        el("span", {class: "rcpt " + status, "data-recipient": who}, who + ": " + status)))))));
  document.getElementById("threads").replaceChildren(...blocks);
}

function drawRate() {
  const canvas = document.getElementById("rate");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  const now = Math.floor(Date.now() / 1000);
  const values = [];
  for (let t = now - RATE_SECONDS + 1; t <= now; t++) values.push(state.rate.get(t) || 0);
  for (const t of state.rate.keys()) if (t <= now - RATE_SECONDS) state.rate.delete(t);
  const max = Math.max(1, ...values);
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#dde";
  ctx.beginPath();
  for (let i = 1; i < 4; i++) { ctx.moveTo(0, h * i / 4); ctx.lineTo(w, h * i / 4); }
  ctx.stroke();
  ctx.fillStyle = "#3b7dd8";
  const bar = w / RATE_SECONDS;
  values.forEach((v, i) => {
    const bh = (v / max) * (h - 14);
    ctx.fillRect(i * bar, h - bh, Math.max(1, bar - 0.5), bh);
  });
  ctx.fillStyle = "#445";
  ctx.font = "11px sans-serif";
  ctx.fillText("max " + max + "/s, last " + RATE_SECONDS / 60 + " min", 4, 11);
  document.getElementById("rate-now").textContent = "(" + (values[values.length - 2] || 0) + "/s)";
}

function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  setTimeout(() => { state.renderQueued = false; renderMessages(); drawRate(); }, 100);
}

function onEvent(kind, data) {
  if (kind === "accepted") {
    const deliveries = {};
    for (const who of data.recipients) deliveries[who] = "pending";
    addMessage({id: data.id, from: data.from, to: data.to, thread: data.thread, topic: data.topic,
                kind: data.kind, body: data.body, ts: data.ts, deliveries: deliveries});
  } else if (kind === "delivered" || kind === "acked" || kind === "expired") {
    const m = data.id && state.messages.get(data.id);
    if (m) setStatus(m, data.to, kind);
    scheduleStatus(1000);
  } else if (kind === "online" || kind === "offline") {
    scheduleStatus(50);
  }
  queueRender();
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.addEventListener("hello", () => { live.textContent = "live"; live.className = "badge"; });
  // Events come gathered: one "batch" record holds [event, ...], each
  // ["accepted", id, seq, from, to, topic, thread, kind, body, recipients, ts]
  // or [kind, [values in EVENT_FIELDS[kind] order]].
  source.addEventListener("batch", e => {
    for (const item of JSON.parse(e.data)) {
      if (item[0] === "accepted") {
        const [, id, seq, from, to, topic, thread, kind, body, recipients, ts] = item;
        onEvent("accepted", {id, seq, from, to, topic, thread, kind, body, recipients, ts});
      } else {
        const names = EVENT_FIELDS[item[0]] || [];
        const data = {};
        names.forEach((name, i) => { data[name] = item[1][i]; });
        onEvent(item[0], data);
      }
    }
  });
  // The daemon dropped our backlog (we were not reading fast enough): start afresh.
  source.addEventListener("resync", () => { resync(); });
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "badge off"; };
}

async function resync() {
  await Promise.all([loadStatus(), loadMessages(), loadTrouble()]).catch(e => {
    document.getElementById("uptime").textContent = String(e);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("search").addEventListener("input", queueRender);
  connect();
  resync();
  setInterval(drawRate, 1000);
  setInterval(() => scheduleStatus(0), 5000);
  setInterval(() => loadTrouble().catch(() => {}), 15000);
  drawRate();
});
