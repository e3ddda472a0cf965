// The simulator's web page: the cabinet from /api/events, actions through
// the JSON API. Plain JavaScript, no build step.
"use strict";

const KEYS = ["123A", "456B", "789C", "*0#D"];
const FAULTS = ["none", "jammed_lock", "sensor_stuck_open", "sensor_stuck_closed", "sensor_bounce"];
const MAX_LOG = 200;

const $ = (id) => document.getElementById(id);

// el builds an element: el("span", {class: "x"}, "text", child…).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

const pad2 = (n) => String(n).padStart(2, "0");

// ---- API ----

async function post(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || `${res.status} ${res.statusText}`);
  return data;
}

let toastTimer;
function toast(msg) {
  const t = $("toast");
  t.textContent = msg;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
}

// ---- Display ----

function renderDisplay(rows) {
  const lcd = $("lcd");
  const width = Math.max(20, ...rows.map((r) => r.length));
  lcd.replaceChildren(...(rows.length ? rows : ["", ""]).map((r) =>
    el("div", {class: "lcd-row"}, r.padEnd(width, " "))));
}

// ---- Keypad: keys are sent in order, one request at a time ----

let keyChain = Promise.resolve();
let keysPending = 0;

function sendKeys(keys) {
  keysPending += keys.length;
  updateKeypadStatus();
  keyChain = keyChain
    .then(() => post("/api/keypad", {keys}))
    .then((data) => renderDisplay(data.display || []))
    .catch((err) => toast(`Keypad: ${err.message}`))
    .finally(() => { keysPending -= keys.length; updateKeypadStatus(); });
}

function updateKeypadStatus() {
  $("keypad-status").textContent = keysPending > 0 ? `pressing ${keysPending} key(s)…` : "";
}

function buildKeypad() {
  const pad = $("keypad");
  for (const row of KEYS) {
    for (const k of row) {
      const cls = /[0-9]/.test(k) ? "key" : "key key-fn";
      pad.append(el("button", {type: "button", class: cls, "aria-label": `key ${k}`,
        onclick: () => sendKeys(k)}, k));
    }
  }
  $("keys-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("keys-input");
    const keys = input.value.toUpperCase().replace(/\s+/g, "");
    if (!/^[0-9*#A-D]+$/.test(keys)) {
      toast("Keys are digits, *, # and A–D");
      return;
    }
    input.value = "";
    sendKeys(keys);
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const tag = document.activeElement && document.activeElement.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    let k = ev.key === "Enter" ? "#" : ev.key.toUpperCase();
    if (k.length === 1 && "0123456789*#ABCD".includes(k)) {
      ev.preventDefault();
      sendKeys(k);
    }
  });
}

// ---- Compartments ----

const cards = new Map(); // number → {root, fields…}

function compartmentAction(n, what, body) {
  post(`/api/compartments/${n}/${what}`, body)
    .then(updateCard)
    .catch((err) => toast(`Compartment ${pad2(n)}: ${err.message}`));
}

function buildCard(c) {
  const n = c.number;
  const f = {};
  f.state = el("span", {class: "badge"});
  f.door = el("span", {class: "fact"});
  f.latch = el("span", {class: "fact"});
  f.parcel = el("span", {class: "fact"});
  f.parcelBtn = el("button", {type: "button", onclick: () =>
    compartmentAction(n, "parcel", {present: !f.data.parcel})});
  f.fault = el("select", {"aria-label": `fault of compartment ${n}`,
    onchange: () => compartmentAction(n, "fault", {fault: f.fault.value})},
    ...FAULTS.map((x) => el("option", {value: x}, x === "none" ? "no fault" : x.replaceAll("_", " "))));
  f.root = el("article", {class: "comp"},
    el("header", {},
      el("span", {class: "num"}, pad2(n)),
      el("span", {class: "size"}, c.size),
      f.state),
    el("div", {class: "facts"}, f.door, f.latch, f.parcel),
    el("div", {class: "actions"},
      el("button", {type: "button", title: "pull the door: opens only if unlatched",
        onclick: () => compartmentAction(n, "door", {action: "open"})}, "Pull"),
      el("button", {type: "button", title: "push the door shut: latches it",
        onclick: () => compartmentAction(n, "door", {action: "close"})}, "Push"),
      el("button", {type: "button", class: "danger", title: "break the door open",
        onclick: () => compartmentAction(n, "door", {action: "force"})}, "Force"),
      f.parcelBtn),
    f.fault);
  return f;
}

function updateCard(c) {
  const f = cards.get(c.number);
  if (!f) return;
  f.data = c;
  f.root.className = `comp door-${c.door}` + (c.fault !== "none" ? " has-fault" : "");
  f.state.className = `badge state-${c.state}`;
  f.state.textContent = c.state;
  f.door.textContent = c.door === "open" ? "door open" : "door closed";
  f.door.className = `fact ${c.door === "open" ? "warn" : ""}`;
  f.latch.textContent = c.latched ? "latched" : "unlatched";
  f.parcel.textContent = c.parcel ? "parcel" : "empty";
  f.parcel.className = `fact ${c.parcel ? "on" : ""}`;
  f.parcelBtn.textContent = c.parcel ? "Take parcel" : "Put parcel";
  f.parcelBtn.disabled = c.door !== "open";
  f.parcelBtn.title = c.door === "open" ? "" : "open the door first";
  if (document.activeElement !== f.fault) f.fault.value = c.fault;
}

function renderCabinet(cab) {
  $("locker-id").textContent = cab.locker_id || "";
  document.title = `Locker simulator ${cab.locker_id || ""}`.trim();
  renderDisplay(cab.display || []);
  const grid = $("grid");
  const numbers = cab.compartments.map((c) => c.number).join(",");
  if (grid.dataset.numbers !== numbers) {
    cards.clear();
    grid.replaceChildren(...cab.compartments.map((c) => {
      const f = buildCard(c);
      cards.set(c.number, f);
      return f.root;
    }));
    grid.dataset.numbers = numbers;
  }
  cab.compartments.forEach(updateCard);
}

// ---- Feeds ----

function clock(iso) {
  const d = iso ? new Date(iso) : new Date();
  if (isNaN(d)) return String(iso);
  return d.toLocaleTimeString([], {hour12: false}) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function addLog(list, ...children) {
  const ol = $(list);
  ol.prepend(el("li", {}, ...children));
  while (ol.children.length > MAX_LOG) ol.lastChild.remove();
}

function onTrace(tr) {
  if (tr === null || typeof tr !== "object") tr = {type: String(tr)};
  const skip = new Set(["event_id", "seq", "time", "type", "compartment"]);
  const details = Object.entries(tr).filter(([k]) => !skip.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
  addLog("traces",
    el("time", {}, clock(tr.time)),
    el("span", {class: "seq"}, tr.seq !== undefined ? `#${tr.seq}` : ""),
    el("strong", {}, tr.type || "?"),
    el("span", {class: "comp-ref"}, tr.compartment ? pad2(tr.compartment) : ""),
    el("span", {class: "details", title: JSON.stringify(tr)}, details));
}

function onMQTT(m) {
  let payload = typeof m.payload === "string" ? m.payload : JSON.stringify(m.payload);
  if (payload.length > 300) payload = payload.slice(0, 300) + "…";
  addLog("mqtt",
    el("time", {}, clock(m.time)),
    el("strong", {class: "topic"}, m.topic),
    el("span", {class: "details"}, payload));
}

// ---- Events ----

function connect() {
  const conn = $("conn");
  const es = new EventSource("/api/events");
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn conn-ok"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn conn-wait"; };
  const handle = (fn) => (ev) => {
    try { fn(JSON.parse(ev.data)); } catch (err) { console.error(err, ev.data); }
  };
  es.addEventListener("cabinet", handle(renderCabinet));
  es.addEventListener("trace", handle(onTrace));
  es.addEventListener("mqtt", handle(onMQTT));
}

buildKeypad();
renderDisplay(["", ""]);
fetch("/api/cabinet").then((r) => r.json()).then(renderCabinet).catch(() => {});
connect();
