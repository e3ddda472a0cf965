// The simulator's web page: the cabinet from /api/events, actions through
// the JSON API (SIMULATOR-API.md and docs/simulator-api-extensions.md).
// Plain JavaScript, no build step, no external assets.
"use strict";

const KEYS = ["123A", "456B", "789C", "*0#D"];
const FAULTS = ["none", "jammed_lock", "sensor_stuck_open", "sensor_stuck_closed", "sensor_bounce"];
const FAULT_LABEL = {
  none: "no fault", jammed_lock: "jammed lock", sensor_stuck_open: "sensor stuck open",
  sensor_stuck_closed: "sensor stuck closed", sensor_bounce: "sensor bounce",
};
const FAULT_SHORT = {
  jammed_lock: "jammed", sensor_stuck_open: "stuck open", sensor_stuck_closed: "stuck closed",
  sensor_bounce: "bouncing",
};
const STATES = ["free", "reserved", "occupied", "expired", "disabled", "fault"];
const UNITS = {S: 1, M: 2, L: 3, XL: 4}; // door heights
const UNITS_PER_COLUMN = 11;
const MAX_LOG = 200;
// Trace types that need a technician's eye.
const ALERTS = new Set(["door_forced", "door_left_open", "lock_fault", "sensor_fault", "keypad_lockout",
  "grant_rejected", "envelope_rejected", "pickup_expired"]);

const $ = (id) => document.getElementById(id);
const pad2 = (n) => String(n).padStart(2, "0");

// el builds an element: el("span", {class: "x"}, "text", child…).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// Icons: small inline SVGs (no fonts or files needed).
const ICONS = {
  locked: '<rect x="3" y="7" width="10" height="8" rx="1.5"/><path d="M5 7V5a3 3 0 0 1 6 0v2" fill="none" stroke="currentColor" stroke-width="1.8"/>',
  unlocked: '<rect x="3" y="7" width="10" height="8" rx="1.5"/><path d="M5 7V4.5a3 3 0 0 1 6 0" fill="none" stroke="currentColor" stroke-width="1.8"/>',
  parcel: '<path d="M1.5 5 8 2l6.5 3v7L8 15l-6.5-3z" fill="#c8914a" stroke="#6b4519" stroke-width="1"/><path d="M1.5 5 8 8l6.5-3M8 8v7" fill="none" stroke="#6b4519" stroke-width="1"/>',
  fault: '<path d="M8 1.2 15.3 14.5H.7z" fill="#d32f2f"/><path d="M8 6v4.2M8 12.2v.3" stroke="#fff" stroke-width="1.8" stroke-linecap="round"/>',
};

function icon(name, title) {
  const s = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  s.setAttribute("viewBox", "0 0 16 16");
  s.setAttribute("class", `icon icon-${name}`);
  s.setAttribute("aria-hidden", "true");
  s.innerHTML = (title ? `<title>${title}</title>` : "") + ICONS[name];
  return s;
}

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
function toast(msg, kind) {
  const t = $("toast");
  t.textContent = msg;
  t.className = `toast ${kind || "error"}`;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4500);
}

// ---- Display: an HD44780, one cell per character ----

let lcdCols = 20;

function renderDisplay(rows) {
  rows = rows && rows.length ? rows : ["", ""];
  lcdCols = Math.max(lcdCols, ...rows.map((r) => r.length));
  const lcd = $("lcd");
  lcd.style.setProperty("--cols", lcdCols);
  lcd.setAttribute("aria-label", "Display: " + rows.map((r) => r.trim()).join(" / "));
  lcd.replaceChildren(...rows.map((r) => el("div", {class: "lcd-row"},
    ...[...r.padEnd(lcdCols, " ")].map((ch) => el("span", {}, ch)))));
  lcd.dataset.text = rows.join("\n");
}

// ---- Keypad: keys are sent in order, one request at a time ----

let keyChain = Promise.resolve();
let keysPending = 0;

function sendKeys(keys) {
  keysPending += keys.length;
  updateKeypadStatus();
  const done = keyChain
    .then(() => post("/api/keypad", {keys}))
    .catch((err) => toast(`Keypad: ${err.message}`))
    .finally(() => { keysPending -= keys.length; updateKeypadStatus(); });
  keyChain = done;
  return done;
}

function updateKeypadStatus() {
  $("keypad-status").textContent = keysPending > 0 ? `pressing ${keysPending} key${keysPending > 1 ? "s" : ""}…` : "";
  $("keypad").classList.toggle("busy", keysPending > 0);
}

function buildKeypad() {
  const pad = $("keypad");
  for (const row of KEYS) {
    for (const k of row) {
      const cls = /[0-9]/.test(k) ? "key" : "key key-fn";
      const b = el("button", {type: "button", class: cls, "data-key": k, "aria-label": `key ${k}`}, k);
      b.addEventListener("click", () => {
        b.classList.add("pressed");
        sendKeys(k).finally(() => b.classList.remove("pressed"));
      });
      pad.append(b);
    }
  }
  $("keys-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("keys-input");
    const keys = input.value.toUpperCase().replace(/\s+/g, "");
    if (!keys) return;
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
    if (ev.key === "Enter" && (tag === "BUTTON" || tag === "SUMMARY")) return; // Enter works the focused button
    const k = ev.key === "Enter" ? "#" : ev.key.toUpperCase();
    if (k.length === 1 && "0123456789*#ABCD".includes(k)) {
      ev.preventDefault();
      const b = document.querySelector(`#keypad [data-key="${CSS.escape(k)}"]`);
      if (b) b.click();
    }
  });
}

// ---- The cabinet picture ----

const ui = {
  cab: null,          // the last cabinet
  selected: null,     // the selected compartment's number
  shape: "",          // numbers and sizes the picture was built for
  doors: new Map(),   // number → door element
  central: false,     // the central forms work
};

// columns splits the compartments, in order, into k columns of about equal
// height (the linear partition problem; n and k are small).
function columns(comps, k) {
  const h = comps.map((c) => UNITS[c.size] || 1);
  const n = h.length;
  k = Math.max(1, Math.min(k, n));
  const pre = [0];
  for (const x of h) pre.push(pre[pre.length - 1] + x);
  // best[j][i]: the least tallest column splitting the first i into j columns.
  const best = Array.from({length: k + 1}, () => new Array(n + 1).fill(Infinity));
  const cut = Array.from({length: k + 1}, () => new Array(n + 1).fill(0));
  best[0][0] = 0;
  for (let j = 1; j <= k; j++) {
    for (let i = 1; i <= n; i++) {
      for (let p = j - 1; p < i; p++) {
        const v = Math.max(best[j - 1][p], pre[i] - pre[p]);
        if (v < best[j][i]) { best[j][i] = v; cut[j][i] = p; }
      }
    }
  }
  const cols = [];
  for (let j = k, i = n; j > 0; j--) {
    const p = cut[j][i];
    cols.unshift(comps.slice(p, i));
    i = p;
  }
  return cols;
}

function buildCabinet(cab) {
  const comps = cab.compartments;
  const total = comps.reduce((s, c) => s + (UNITS[c.size] || 1), 0);
  const k = Math.max(1, Math.min(8, Math.ceil(total / UNITS_PER_COLUMN)));
  const cols = columns(comps, k);
  const tallest = Math.max(1, ...cols.map((col) => col.reduce((s, c) => s + (UNITS[c.size] || 1), 0)));
  const box = $("cabinet");
  box.style.setProperty("--units", tallest);
  ui.doors.clear();
  const parts = cols.map((col) => el("div", {class: "column"}, ...col.map((c) => {
    const d = buildDoor(c);
    ui.doors.set(c.number, d);
    return d;
  })));
  parts.splice(Math.ceil(cols.length / 2), 0, el("div", {class: "column column-control"}, $("control")));
  box.replaceChildren(...parts);
}

function buildDoor(c) {
  const d = el("button", {type: "button", class: "door", "data-n": c.number,
    style: `flex-grow: ${UNITS[c.size] || 1}`, onclick: () => select(c.number)});
  d.append(
    el("span", {class: "inside"}, el("span", {class: "parcel-inside"})),
    el("span", {class: "leaf"}),
    el("span", {class: "face"},
      el("span", {class: "id"},
        el("span", {class: "num"}, pad2(c.number)),
        el("span", {class: "size"}, c.size)),
      el("span", {class: "latch"}),
      el("span", {class: "fault-label"}),
      el("span", {class: "state"}),
      el("span", {class: "icons"})));
  return d;
}

function describe(c) {
  return [`Compartment ${pad2(c.number)}`, `size ${c.size}`, c.state,
    `door ${c.door}`, c.latched ? "latched" : "unlatched", c.parcel ? "parcel inside" : "empty",
    FAULT_LABEL[c.fault] || c.fault].join(", ");
}

function updateDoor(c) {
  const d = ui.doors.get(c.number);
  if (!d) return;
  const state = STATES.includes(c.state) ? c.state : "unknown";
  d.className = `door state-${state} door-${c.door}` + (c.fault !== "none" ? " has-fault" : "") +
    (c.parcel ? " has-parcel" : "") + (ui.selected === c.number ? " selected" : "");
  d.dataset.state = c.state;
  d.dataset.door = c.door;
  d.dataset.latched = c.latched;
  d.dataset.parcel = c.parcel;
  d.dataset.fault = c.fault;
  d.setAttribute("aria-label", describe(c));
  d.setAttribute("aria-pressed", ui.selected === c.number);
  d.title = describe(c);
  d.querySelector(".state").textContent = c.state;
  d.querySelector(".fault-label").textContent = FAULT_SHORT[c.fault] || "";
  d.querySelector(".latch").replaceChildren(icon(c.latched ? "locked" : "unlocked"));
  d.querySelector(".icons").replaceChildren(
    c.parcel ? icon("parcel") : "",
    c.fault !== "none" ? icon("fault") : "");
}

function renderSummary(cab) {
  const counts = {};
  for (const c of cab.compartments) counts[c.state] = (counts[c.state] || 0) + 1;
  const open = cab.compartments.filter((c) => c.door === "open").length;
  const items = STATES.filter((s) => counts[s]).map((s) =>
    el("span", {class: `chip state-${s}`}, `${counts[s]} ${s}`));
  if (open) items.push(el("span", {class: "chip chip-open"}, `${open} open`));
  $("summary").replaceChildren(...items);
}

function renderCabinet(cab) {
  ui.cab = cab;
  $("locker-id").textContent = cab.locker_id || "";
  $("nameplate-id").textContent = cab.locker_id || "—";
  document.title = `Locker simulator ${cab.locker_id || ""}`.trim();
  renderDisplay(cab.display || []);
  const shape = cab.compartments.map((c) => `${c.number}${c.size}`).join(",");
  if (shape !== ui.shape) {
    buildCabinet(cab);
    ui.shape = shape;
  }
  cab.compartments.forEach(updateDoor);
  renderSummary(cab);
  renderDetail();
}

function compartment(n) {
  return ui.cab && ui.cab.compartments.find((c) => c.number === n);
}

// ---- The selected compartment ----

function select(n) {
  const prev = ui.selected;
  ui.selected = n;
  for (const x of [prev, n]) { const c = compartment(x); if (c) updateDoor(c); }
  const form = $("command-form");
  form.elements.compartment.value = n;
  renderDetail();
  const panel = document.querySelector(".detail-panel");
  const r = panel.getBoundingClientRect();
  if (r.top > window.innerHeight - 80) panel.scrollIntoView({behavior: "smooth", block: "nearest"});
}

function act(n, what, body, verb) {
  return post(`/api/compartments/${n}/${what}`, body)
    .catch((err) => toast(`Compartment ${pad2(n)}: ${verb}: ${err.message}`));
}

function command(n, action) {
  const w = expectAnswer("command");
  return post("/api/central/commands", {action, compartment: n, reason: "technician (web page)"})
    .then((r) => { toast(`Command ${action} ${pad2(n)} sent (${r.command_id})`, "ok"); watchResult(w, r.command_id, null); })
    .catch((err) => { forget(w); toast(`Command: ${err.message}`); });
}

function fact(label, value, cls) {
  return el("div", {class: "fact"}, el("dt", {}, label), el("dd", {class: cls || ""}, value));
}

let detailKey = "";

function renderDetail() {
  const box = $("detail");
  const c = compartment(ui.selected);
  if (!c) return;
  const key = JSON.stringify(c) + ui.central;
  if (key === detailKey && box.dataset.n === String(c.number)) return;
  detailKey = key;
  const focused = document.activeElement && box.contains(document.activeElement) ? document.activeElement.dataset.act : null;
  const n = c.number;
  const state = STATES.includes(c.state) ? c.state : "unknown";
  const latchedHint = c.latched ? "The latch holds: pulling fails until the daemon releases it (or you force it)." : "";
  box.dataset.n = n;
  const parts = [
    el("div", {class: "detail-head"},
      el("span", {class: `door-mini state-${state} door-${c.door}`}, pad2(n)),
      el("div", {},
        el("div", {class: "detail-title"}, `Compartment ${pad2(n)}`, el("span", {class: "size"}, c.size)),
        el("span", {class: `chip state-${state}`}, c.state))),
    el("dl", {class: "facts"},
      fact("Door", c.door === "open" ? "open" : "closed", c.door === "open" ? "warn" : ""),
      fact("Latch", c.latched ? "latched" : "released", c.latched ? "" : "warn"),
      fact("Parcel", c.parcel ? "inside" : "none", c.parcel ? "ok" : ""),
      fact("Fault", FAULT_LABEL[c.fault] || c.fault, c.fault !== "none" ? "bad" : "")),
    el("div", {class: "group"},
      el("h3", {}, "Door"),
      el("div", {class: "buttons"},
        el("button", {type: "button", "data-act": "pull", title: latchedHint || "pull the door open",
          onclick: () => act(n, "door", {action: "open"}, "pull")}, "Pull open"),
        el("button", {type: "button", "data-act": "push", title: "push the door shut: it latches",
          onclick: () => act(n, "door", {action: "close"}, "push")}, "Push shut"),
        el("button", {type: "button", class: "danger", "data-act": "force", title: "break the door open while latched",
          onclick: () => act(n, "door", {action: "force"}, "force")}, "Force open")),
      c.latched && c.door === "closed" ? el("p", {class: "note"}, latchedHint) : null),
    el("div", {class: "group"},
      el("h3", {}, "Parcel"),
      el("div", {class: "buttons"},
        el("button", {type: "button", "data-act": "parcel", disabled: c.door !== "open",
          title: c.door === "open" ? "" : "open the door first",
          onclick: () => act(n, "parcel", {present: !c.parcel}, c.parcel ? "take the parcel" : "put a parcel")},
        c.parcel ? "Take parcel out" : "Put parcel in")),
      c.door !== "open" ? el("p", {class: "note"}, "Open the door to put a parcel in or take it out.") : null),
    el("div", {class: "group"},
      el("h3", {}, "Fault"),
      el("div", {class: "buttons"},
        el("select", {"data-act": "fault", "aria-label": `fault of compartment ${pad2(n)}`,
          onchange: (ev) => act(n, "fault", {fault: ev.target.value}, "fault")},
        ...FAULTS.map((f) => el("option", {value: f, selected: f === c.fault}, FAULT_LABEL[f]))),
        c.fault !== "none" ? el("button", {type: "button", "data-act": "clear-fault",
          onclick: () => act(n, "fault", {fault: "none"}, "clear the fault")}, "Clear fault") : null)),
    ui.central ? el("div", {class: "group"},
      el("h3", {}, "As the central server"),
      el("div", {class: "buttons"},
        el("button", {type: "button", "data-act": "cmd-open", onclick: () => command(n, "open")}, "Open"),
        el("button", {type: "button", "data-act": "cmd-disable", onclick: () => command(n, "disable")}, "Disable"),
        el("button", {type: "button", "data-act": "cmd-enable", onclick: () => command(n, "enable")}, "Enable"))) : null,
  ];
  box.replaceChildren(...parts.filter((x) => x));
  if (focused) {
    const f = box.querySelector(`[data-act="${focused}"]`);
    if (f) f.focus();
  }
}

// ---- Central forms ----

function randomCode() {
  const a = new Uint32Array(6);
  crypto.getRandomValues(a);
  return [...a].map((x) => x % 10).join("");
}

function showTab(which) {
  for (const [tab, form] of [["tab-grant", "grant-form"], ["tab-command", "command-form"]]) {
    const on = tab === which;
    $(tab).setAttribute("aria-selected", on);
    $(form).hidden = !on;
  }
}

function updateGrantFields() {
  const form = $("grant-form");
  const action = form.elements.action.value;
  for (const label of form.querySelectorAll("label[data-for]")) {
    label.hidden = !label.dataset.for.split(" ").includes(action);
  }
}

// The answers the central forms wait for, shown in the form that sent the
// request. The locker may answer before the page has read the POST's own
// reply (it is quick, a busy browser is not): expectAnswer, called before the
// POST, keeps such answers until watchResult learns the id and the place.
const watching = {grant: null, command: null};

function expectAnswer(kind) {
  const w = {kind, id: null, out: null, known: false, early: []};
  watching[kind] = w;
  return w;
}

// watchResult: w's request was id, its answer goes into out (null: a toast).
function watchResult(w, id, out) {
  if (watching[w.kind] !== w) return; // a newer request of its kind replaced it
  Object.assign(w, {id, out, known: true});
  for (const p of w.early.splice(0)) {
    if (showAnswer(w.kind, p)) break;
  }
}

function forget(w) {
  if (watching[w.kind] === w) watching[w.kind] = null;
}

function setResult(out, ...children) {
  if (out) out.replaceChildren(...children);
}

function buildCentral() {
  $("tab-grant").addEventListener("click", () => showTab("tab-grant"));
  $("tab-command").addEventListener("click", () => showTab("tab-command"));
  const gf = $("grant-form");
  gf.elements.action.addEventListener("change", updateGrantFields);
  updateGrantFields();
  for (const b of document.querySelectorAll(".random")) {
    b.addEventListener("click", () => { gf.elements[b.dataset.target].value = randomCode(); });
  }
  gf.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = gf.elements;
    const action = f.action.value;
    const only = (field, actions) => (actions.includes(action) ? f[field].value.trim() : "");
    const body = {
      action,
      size: only("size", ["deposit"]),
      compartment: Number(f.compartment.value) || 0,
      parcel_id: only("parcel_id", ["deposit", "pickup", "reclaim"]),
      holder: f.holder.value.trim(),
      code: f.code.value.trim(),
      pickup_code: only("pickup_code", ["deposit"]),
      pickup_holder: only("pickup_holder", ["deposit"]),
      valid_hours: Number(f.valid_hours.value) || 24,
    };
    const out = $("grant-result");
    const code = body.code;
    setResult(out, el("span", {class: "pending"}, "Signing and sending…"));
    const w = expectAnswer("grant");
    post("/api/central/grants", body).then((r) => {
      f.code.value = "";
      f.pickup_code.value = "";
      setResult(out,
        el("div", {class: "ok"}, `Sent ${action} grant ${r.grant_id}` +
          (r.pickup_grant_id ? ` (pickup ${r.pickup_grant_id})` : "") + ", valid until " + clock(r.valid_until, true) + "."),
        el("div", {class: "ack"}, "Waiting for the locker's ack…"),
        el("button", {type: "button", class: "small", onclick: () => sendKeys(code + "#")},
          `Type the code on the keypad`));
      watchResult(w, r.grant_id, out);
    }).catch((err) => {
      forget(w);
      setResult(out, el("div", {class: "bad"}, err.message));
    });
  });

  const cf = $("command-form");
  cf.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = cf.elements;
    const out = $("command-result");
    setResult(out, el("span", {class: "pending"}, "Signing and sending…"));
    const w = expectAnswer("command");
    post("/api/central/commands", {action: f.action.value, compartment: Number(f.compartment.value) || 0,
      reason: f.reason.value.trim()}).then((r) => {
      setResult(out, el("div", {class: "ok"}, `Sent command ${r.command_id}.`),
        el("div", {class: "ack"}, "Waiting for the locker's result…"));
      watchResult(w, r.command_id, out);
    }).catch((err) => {
      forget(w);
      setResult(out, el("div", {class: "bad"}, err.message));
    });
  });

  fetch("/api/central").then((r) => r.json()).then((v) => {
    ui.central = !!v.available;
    $("central-off").hidden = ui.central;
    for (const b of document.querySelectorAll(".central-panel button[type=submit]")) b.disabled = !ui.central;
    detailKey = "";
    renderDetail();
  }).catch(() => {});
}

// onAnswer shows the locker's grants ack or command result in the form
// that sent the request, or keeps it until the form knows its request.
function onAnswer(topic, p) {
  if (!p || typeof p !== "object") return;
  const kind = topic.endsWith("/grants/ack") ? "grant" : topic.endsWith("/commands/result") ? "command" : "";
  const w = kind && watching[kind];
  if (!w) return;
  if (!w.known) {
    w.early.push(p);
    return;
  }
  showAnswer(kind, p);
}

// showAnswer shows p if it answers what watching[kind] waits for (a command
// result only for its command id) and says whether it did.
function showAnswer(kind, p) {
  const w = watching[kind];
  if (kind === "command" && p.command_id !== w.id) return false;
  watching[kind] = null;
  const ack = w.out && w.out.querySelector(".ack");
  if (kind === "grant") {
    const rejected = (p.rejected || []).map((r) => `${r.grant_id}: ${r.error}`).join("; ");
    if (ack) {
      ack.className = rejected ? "ack bad" : "ack ok";
      ack.textContent = `Locker ack: ${p.applied || 0} applied, ${p.stale || 0} stale` +
        (rejected ? `, rejected: ${rejected}` : "") + ".";
    }
    return true;
  }
  const msg = p.ok ? "Locker: done." : `Locker: failed: ${p.error}`;
  if (ack) {
    ack.className = p.ok ? "ack ok" : "ack bad";
    ack.textContent = msg;
  } else {
    toast(`Command ${p.command_id}: ${msg}`, p.ok ? "ok" : "error");
  }
  return true;
}

// ---- Feeds ----

function clock(iso, withDate) {
  const d = iso ? new Date(iso) : new Date();
  if (isNaN(d)) return String(iso);
  const t = d.toLocaleTimeString([], {hour12: false});
  if (withDate) return d.toLocaleDateString() + " " + t;
  return t + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function addLog(list, li) {
  const ol = $(list);
  ol.prepend(li);
  while (ol.children.length > MAX_LOG) ol.lastChild.remove();
}

function pretty(v) {
  return typeof v === "string" ? v : JSON.stringify(v, null, 2);
}

function onTrace(tr) {
  if (tr === null || typeof tr !== "object") tr = {type: String(tr)};
  const skip = new Set(["event_id", "seq", "time", "type", "compartment", "content"]);
  const extra = Object.entries(tr).filter(([k]) => !skip.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
  const text = tr.content || extra;
  addLog("traces", el("li", {class: ALERTS.has(tr.type) ? "alert" : "", "data-type": tr.type || ""},
    el("details", {},
      el("summary", {},
        el("time", {}, clock(tr.time)),
        el("span", {class: "seq"}, tr.seq !== undefined ? `#${tr.seq}` : ""),
        el("strong", {class: "type"}, tr.type || "?"),
        el("span", {class: "comp-ref"}, tr.compartment ? pad2(tr.compartment) : ""),
        el("span", {class: "text"}, text)),
      el("pre", {}, pretty(tr)))));
}

function onMQTT(m) {
  const topic = String(m.topic || "");
  const short = topic.replace(/^lockers\/v1\/[^/]+\//, "");
  const down = /^(grants|commands)$/.test(short);
  let payload = typeof m.payload === "string" ? m.payload : JSON.stringify(m.payload);
  if (payload.length > 400) payload = payload.slice(0, 400) + "…";
  addLog("mqtt", el("li", {class: down ? "down" : "up", "data-topic": topic},
    el("details", {},
      el("summary", {},
        el("time", {}, clock(m.time)),
        el("span", {class: "dir", title: down ? "central → locker" : "locker → central"}, down ? "↓" : "↑"),
        el("strong", {class: "topic", title: topic}, short),
        el("span", {class: "text"}, payload)),
      el("pre", {}, topic + "\n" + pretty(m.payload)))));
  onAnswer(topic, m.payload);
}

// ---- RS485 bus ----

const BUS_FAULTS = ["none", "no_answer", "lost_reply", "bad_checksum", "wrong_address", "noise", "power_cut_on_unlock"];

// onFrame shows one frame of a bus (simulated, or real as the daemon saw
// it): time, direction, hex, decoded, and what was wrong with it.
function onFrame(f) {
  const cmd = f.dir === "cmd";
  addLog("bus", el("li", {class: (cmd ? "down" : "up") + (f.err ? " alert" : ""), "data-dir": f.dir},
    el("details", {},
      el("summary", {},
        el("time", {}, clock(f.time)),
        el("span", {class: "dir", title: cmd ? "daemon → board" : "board → daemon"}, cmd ? "→" : "←"),
        el("strong", {class: "type hex"}, f.hex),
        el("span", {class: "text"}, (f.text || "") + (f.err ? " — " + f.err : ""))),
      el("pre", {}, `${f.bus} #${f.seq}\n${pretty(f)}`))));
}

// renderBus shows the buses' boards with their fault controls, or for a
// real device what is driven.
function renderBus(v) {
  const buses = v.buses || [], real = v.real || [];
  $("bus-panel").hidden = buses.length === 0 && real.length === 0;
  const chips = [];
  for (const r of real) {
    chips.push(el("p", {class: "note"}, `${r.name}: real device ${r.device} — the compartments show what its boards report, the frames what the daemon wrote and read`));
  }
  for (const b of buses) {
    chips.push(el("p", {class: "note"}, `${b.name}: simulated ${b.protocol} boards, ${b.baud} baud, on ${b.pty} (wiring: ${b.device})`));
    for (const bd of b.boards || []) {
      const sel = el("select", {"aria-label": `Fault of board ${bd.address}`,
        onchange: (ev) => post(`/api/rs485/${b.name}/boards/${bd.address}/fault`, {fault: ev.target.value})
          .then(loadBus).catch((err) => toast(err.message, "error"))},
        ...BUS_FAULTS.map((f) => el("option", f === bd.fault ? {value: f, selected: ""} : {value: f}, f)));
      chips.push(el("div", {class: "bus-board" + (bd.off ? " off" : "")},
        el("strong", {}, `board ${bd.address}`), ` ${bd.channels} ch `, sel,
        el("button", {type: "button", class: "small",
          onclick: () => post(`/api/rs485/${b.name}/boards/${bd.address}/power-cycle`, {})
            .then(loadBus).catch((err) => toast(err.message, "error"))}, bd.off ? "off…" : "power-cycle")));
    }
  }
  $("bus-boards").replaceChildren(...chips);
}

function loadBus(first) {
  return fetch("/api/rs485").then((r) => r.json()).then((v) => {
    renderBus(v);
    if (first === true) for (const b of [...(v.buses || []), ...(v.real || [])]) for (const f of (b.frames || []).slice(-50)) onFrame(f);
  }).catch(() => {});
}

// ---- Events ----

// The page draws the cabinet (display, doors, states) from the event stream
// only. A POST's reply holds the state as that request left it, and the page
// may read it after a newer state came on the stream; since the stream sends
// a cabinet only when it changed, an older state drawn over a newer one would
// stay until the next change. The stream follows every change within 25 ms.
// The GET at load draws only until the stream's first cabinet (streamed).
let streamed = false;

function connect() {
  const conn = $("conn");
  const es = new EventSource("/api/events");
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn conn-ok"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn conn-wait"; };
  const handle = (fn) => (ev) => {
    let v;
    try { v = JSON.parse(ev.data); } catch (err) { console.warn("bad event", ev.data); return; }
    fn(v);
  };
  es.addEventListener("cabinet", handle((cab) => { streamed = true; renderCabinet(cab); }));
  es.addEventListener("trace", handle(onTrace));
  es.addEventListener("mqtt", handle(onMQTT));
  es.addEventListener("rs485", handle(onFrame));
}

function buildLegend() {
  $("legend-icons").replaceChildren(
    icon("locked"), " latched ", icon("unlocked"), " released ", icon("parcel"), " parcel ", icon("fault"), " fault");
}

for (const b of document.querySelectorAll("[data-clear]")) {
  b.addEventListener("click", () => $(b.dataset.clear).replaceChildren());
}
buildLegend();
buildKeypad();
buildCentral();
renderDisplay(["", ""]);
fetch("/api/cabinet").then((r) => r.json()).then((cab) => { if (!streamed) renderCabinet(cab); }).catch(() => {});
loadBus(true);
setInterval(loadBus, 2000);
connect();
