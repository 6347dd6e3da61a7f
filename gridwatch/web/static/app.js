// gridwatch operator console: plain JS, no external code (the machine is offline).
// Lists and the map come from /api; live changes from /api/stream (Server-Sent Events). The server
// filters everything by the operator's scope; this page only renders what it is given.
// Every word shown comes from a string table (/console/i18n/<lang>.json): zh-CN by default, English
// as each operator's choice (localStorage here, and PUT /api/me/preferences for every desk).
"use strict";

const S = {
  me: null, map: null, incidents: new Map(), selected: null, es: null, tz: "Asia/Shanghai",
  areas: new Map(), fresh: new Set(), view: null, pending: null, stats: null, renderQueued: false,
  alerts: 0, audio: null,
};
const LANGS = ["zh-CN", "en"];
const I18N = { lang: "zh-CN", table: {} };
const CLOSED = new Set(["resolved", "evaluated", "closed", "cancelled"]);
const LEVEL_RANK = { red: 2, yellow: 1, blue: 0 };
const ACTION_ORDER = ["ack", "dispatch", "accept", "start", "supervise", "resolve", "escalate", "comment", "confirm",
  "reopen", "cancel"];
const CONFIRM = { cancel: "act.confirm_cancel", resolve: "act.confirm_resolve" };
const MAX_ROWS = 300; // list rows in the DOM at once; the rest is reached by filters and search
const SVGNS = "http://www.w3.org/2000/svg";
// Which statuses each action is allowed from (mirrors agents/lifecycle.py; the backend decides and
// the API answers 409 with its reason when the page is out of date).
const OPEN = ["reported", "dispatched", "accepted", "in_progress"];
const ALLOWED_FROM = {
  ack: [...OPEN, "resolved"], dispatch: ["reported", "dispatched"], accept: ["dispatched"], start: ["accepted"],
  resolve: OPEN, escalate: OPEN, comment: [...OPEN, "resolved", "evaluated", "closed", "cancelled"],
  confirm: ["resolved"], reopen: ["resolved", "closed"], cancel: OPEN, supervise: OPEN,
};
function actionEnabled(inc, a) {
  if (ALLOWED_FROM[a] && !ALLOWED_FROM[a].includes(inc.status)) return false;
  if (a === "ack" && inc.acked) return false;
  if (a === "confirm" && !inc.pending_confirmation) return false;
  return true;
}
// the five tickets (五单) a timeline entry belongs to
const TICKET = { created: "place", merged: "place", dispatch: "dispatch", accept: "handle", start: "handle",
  resolve: "handle", supervise: "supervise", evaluate: "evaluate" };

// ------------------------------------------------------------------------------------------ i18n
function t(key, vars) {
  const s = I18N.table[key];
  if (s === undefined) return key; // a missing key shows as itself: the string-table test finds it
  return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined || vars[k] === null ? m : String(vars[k]))) : s;
}
// a code (category, type, department, ...): its label when the table has one, else the code itself
function tc(prefix, code) {
  if (code === null || code === undefined || code === "") return "";
  const k = `${prefix}.${code}`;
  return k in I18N.table ? I18N.table[k] : String(code);
}
function storedLang() {
  try { const v = localStorage.getItem("gw.lang"); return LANGS.includes(v) ? v : null; } catch (e) { return null; }
}
async function setLang(lang, { remember = true, save = false } = {}) {
  if (!LANGS.includes(lang)) lang = LANGS[0];
  const r = await fetch(`/console/i18n/${lang}.json`, { credentials: "same-origin" });
  I18N.table = await r.json();
  I18N.lang = lang;
  document.documentElement.lang = lang;
  if (remember) { try { localStorage.setItem("gw.lang", lang); } catch (e) { /* private mode */ } }
  if (save && S.me) api("/api/me/preferences", { method: "PUT", json: { lang } }).catch(() => null);
  for (const id of ["lang", "login-lang"]) $(id).value = lang;
  applyStatic();
  if (S.me) rerenderAll();
}
function applyStatic() {
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":");
      el.setAttribute(attr, t(key));
    }
  }
  document.title = t("app.title");
}
function rerenderAll() {
  if (!S.map) return; // still starting: start() renders everything once the map is in
  fillWho();
  fillFilters();
  if (S.map) $("map-title").textContent = t("map.heading", { scope: areaName(S.me.scope), grids: S.map.grids.length,
    devices: S.map.devices.length });
  setLive(S.es && S.es.readyState === EventSource.OPEN);
  scheduleRender();
  if (S.selected) openIncident(S.selected, false);
  if (S.view === "stats" && S.stats) renderStats(S.stats);
}

// ------------------------------------------------------------------------------------------ helpers
const $ = (id) => document.getElementById(id);
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v); else el.setAttribute(k, v);
  }
  for (const kid of kids.flat(Infinity)) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}
function fill(el, ...kids) {
  // replaceChildren that accepts nested arrays and skips empty parts, like h()
  el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false)
    .map((k) => (k instanceof Node ? k : document.createTextNode(String(k)))));
}
function fmtTime(ms) {
  if (!ms) return "—";
  return new Intl.DateTimeFormat(I18N.lang, { timeZone: S.tz, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }).format(new Date(ms));
}
function fmtNum(x, digits = 0) {
  return new Intl.NumberFormat(I18N.lang, { maximumFractionDigits: digits }).format(x);
}
function ago(ms) {
  const d = (Date.now() - ms) / 1000;
  const rtf = new Intl.RelativeTimeFormat(I18N.lang, { numeric: "auto" });
  if (Math.abs(d) < 10) return t("time.just_now");
  if (Math.abs(d) < 90) return rtf.format(-Math.round(d), "second");
  if (Math.abs(d) < 5400) return rtf.format(-Math.round(d / 60), "minute");
  if (Math.abs(d) < 129600) return rtf.format(-Math.round(d / 3600), "hour");
  return rtf.format(-Math.round(d / 86400), "day");
}
function areaName(code) {
  const a = S.areas.get(code);
  if (!a) return code;
  return I18N.lang === "zh-CN" ? (a.name_zh || a.name) : a.name;
}
class ApiError extends Error {
  constructor(status, body, fallback) {
    super((body && (body.error || (body[0] && body[0].description))) || fallback);
    this.status = status; this.body = body || {};
  }
}
async function api(path, opts = {}) {
  const init = { credentials: "same-origin", headers: {}, ...opts };
  if (opts.json !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.json);
  }
  let r;
  try { r = await fetch(path, init); } catch (e) { throw new ApiError(0, null, t("err.network", { detail: e.message })); }
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (r.status === 401 && !path.startsWith("/api/login")) { showLogin(); throw new ApiError(401, body, "401"); }
  if (!r.ok) throw new ApiError(r.status, body, `HTTP ${r.status}`);
  return body;
}

// ------------------------------------------------------------------------------------------ labels
function levelLabel(lv) { return tc("level", lv); }
function statusLabel(st) { return tc("status", st); }
function typeLabel(type) { return `type.${type}` in I18N.table ? t(`type.${type}`) : tc("service", type); }
function incidentTitle(i) {
  const types = (i.types || [...new Set((i.sources || []).map((x) => x.type))].sort()).filter((x) => `type.${x}` in I18N.table);
  const reports = i.report_count !== undefined ? i.report_count
    : (i.sources || []).filter((x) => x.kind === "report").length;
  const parts = types.length ? [types.map(typeLabel).join(t("title.join"))] : [];
  if (reports) parts.push(t("title.reports", { n: reports }));
  return tc("cat", i.category_group) + (parts.length ? t("title.sep") + parts.join(t("title.plus")) : "");
}
const NUM = "(-?[\\d.]+(?:e[-+]?\\d+)?)";
const MESSAGES = [
  [/^(\w+) is (true|false)$/, (m) => t("msg.bool", { field: tc("field", m[1]), value: t(`bool.${m[2]}`) })],
  [new RegExp(`^(\\w+) ${NUM}(\\S*) ([<>]) ${NUM}\\S*$`),
    (m) => t(m[4] === ">" ? "msg.over" : "msg.under", { field: tc("field", m[1]), value: m[2], unit: m[3], limit: m[5] })],
  [new RegExp(`^(\\w+) ${NUM}(\\S*) back within limit$`), (m) => t("msg.back", { field: tc("field", m[1]), value: m[2], unit: m[3] })],
  [/^(\d+) of (\d+) lamps on circuit (\S+) dark$/, (m) => t("msg.circuit", { dark: m[1], size: m[2], circuit: m[3] })],
  [/^lamp dark at night$/, () => t("msg.lamp_dark")],
  [/^lamp lit in daylight$/, () => t("msg.lamp_day")],
  [/^condition cleared$/, () => t("msg.cleared")],
  [/^.* parked in (\S+) for (\d+) s/, (m) => t("msg.parked", { zone: m[1], s: m[2] })],
  [/^crowd of (\d+) in (\S+)/, (m) => t("msg.crowd", { n: m[1], zone: m[2] })],
];
// a system message (rule or vision text) in the chosen language; unknown ones fall back to the event
// type's label so no untranslated sentence reaches the page (the original stays in data-original)
function messageText(msg, type, kind) {
  if (!msg) return "";
  if (kind === "report") return msg; // a resident's own words
  for (const [re, fn] of MESSAGES) { const m = msg.match(re); if (m) return fn(m); }
  return I18N.lang === "en" ? msg : typeLabel(type);
}
const LT = "(\\w+)/(\\w+)";
const NOTES = [
  [/^routing table$/, () => t("note.routing")],
  [/^supervision deadline passed \(notice by (.+)\)$/, (m) => t("note.supervision_overdue", { by: actorLabel(m[1]) })],
  [/^a sensor event and a resident report agree$/, () => t("note.agree")],
  [/^every sensor event ended; an operator should confirm$/, () => t("note.auto_resolve")],
  [/^not evaluated within the evaluation window$/, () => t("note.auto_close")],
  [new RegExp(`^SLA passed: ${LT} -> ${LT}$`), (m) => t("note.sla", lt(m))],
  [new RegExp(`^escalated: ${LT} -> ${LT}$`), (m) => t("note.escalated", lt(m))],
  [/^(event|report) (\w+): ([\s\S]*)$/, (m) => t("note.created", { type: typeLabel(m[2]), message: messageText(m[3], m[2], m[1]) })],
  [/^(\w+): ([\s\S]*)$/, (m) => (`type.${m[1]}` in I18N.table || `service.${m[1]}` in I18N.table
    ? t("note.created", { type: typeLabel(m[1]), message: messageText(m[2], m[1], `type.${m[1]}` in I18N.table ? "event" : "report") })
    : null)],
];
function lt(m) {
  return { from: t("note.level_tier", { level: levelLabel(m[1]), tier: tc("tier", m[2]) }),
    to: t("note.level_tier", { level: levelLabel(m[3]), tier: tc("tier", m[4]) }) };
}
function noteText(entry) {
  if (!entry.note) return "";
  if (entry.actor && entry.actor !== "system" && !["created", "merged", "confirmed", "overdue", "auto_resolve", "auto_close",
    "supervision_overdue"].includes(entry.action)) {
    return entry.note; // an operator's own words
  }
  for (const [re, fn] of NOTES) { const m = entry.note.match(re); if (m) { const out = fn(m); if (out !== null) return out; } }
  return entry.note;
}
function actorLabel(a) {
  if (!a) return "";
  const [kind, id] = a.split(/:(.*)/s); // "sensor:<device id>", "resident:<request id>", or a user name
  return id !== undefined && `actor.${kind}` in I18N.table ? `${t(`actor.${kind}`)} ${id}` : tc("actor", a);
}
function deptLabel(d) { return tc("dept", d); }
function supervisionState(i) {
  const sv = i.supervision;
  if (!sv) return null;
  const deadline = sv.deadline;
  // the workflow judges lateness in event time (sv.overdue); the clock is only a fallback
  const late = sv.overdue !== undefined ? !!sv.overdue : !CLOSED.has(i.status) && deadline && Number(deadline) < Date.now();
  return { ...sv, deadline, late };
}

// ------------------------------------------------------------------------------------------ login
function showLogin() {
  if (S.es) { S.es.close(); S.es = null; }
  S.me = null;
  $("app").classList.add("hidden");
  $("login").classList.remove("hidden");
  $("login-user").focus();
}
async function onLogin(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    await api("/api/login", { json: { user: $("login-user").value.trim(), password: $("login-password").value } });
    $("login-password").value = "";
    // a language picked on the login page is this operator's choice from now on, on every desk;
    // otherwise the one they chose before (on any desk) comes back with /api/me
    if (S.langChosen) await api("/api/me/preferences", { method: "PUT", json: { lang: I18N.lang } }).catch(() => null);
    unlockAudio();
    await start();
  } catch (e) {
    $("login-error").textContent = e.status === 401 ? t("err.login") : e.status === 429 ? t("err.login_wait") : e.message;
  }
}
async function logout() {
  await api("/api/logout", { method: "POST" }).catch(() => null);
  S.incidents.clear(); S.selected = null;
  showLogin();
}

// ------------------------------------------------------------------------------------------ start
async function start() {
  S.me = await api("/api/me");
  S.tz = S.me.timezone || S.tz;
  if (S.me.lang && S.me.lang !== I18N.lang) await setLang(S.me.lang);
  $("login").classList.add("hidden");
  $("app").classList.remove("hidden");
  S.map = await api("/api/map");
  S.areas = new Map([...(S.map.chain || []), ...S.map.areas].map((a) => [a.code, a]));
  for (const g of S.map.grids) S.areas.set(g.code, { ...g, tier: "grid" });
  fillWho();
  fillFilters();
  drawMap();
  await loadIncidents();
  connectStream();
  switchTab(S.view || "incidents");
}
function fillWho() {
  const name = I18N.lang === "zh-CN" ? (S.me.name_zh || S.me.name) : S.me.name;
  $("who-name").textContent = t("who.name", { name, user: S.me.user, role: tc("role", S.me.role) });
  $("who-scope").textContent = t("who.scope", { scope: areaName(S.me.scope), tier: tc("tier", S.me.scope_tier), code: S.me.scope });
}
function fillFilters() {
  const sel = $("f-area");
  const keep = sel.value;
  sel.replaceChildren(h("option", { value: "" }, t("filters.area_all", { scope: areaName(S.me.scope) })));
  const indent = { district: "", street: "  ", community: "    ", grid: "      " };
  for (const a of S.map.areas) {
    if (a.code === S.me.scope) continue;
    sel.append(h("option", { value: a.code }, `${indent[a.tier] || ""}${areaName(a.code)}${t("fmt.paren", { x: tc("tier", a.tier) })}`));
  }
  sel.value = keep;
  fillCategories();
}
function fillCategories() {
  const cat = $("f-category");
  const keep = cat.value;
  const cats = new Set(S.me.categories || []);
  for (const i of S.incidents.values()) if (i.category_group) cats.add(i.category_group);
  cat.replaceChildren(h("option", { value: "" }, t("filters.category_all")),
    ...[...cats].sort().map((c) => h("option", { value: c }, tc("cat", c))));
  cat.value = keep;
}
function filters() {
  const levels = [...document.querySelectorAll("[data-level]")].filter((x) => x.checked).map((x) => x.dataset.level);
  return { area: $("f-area").value, category: $("f-category").value, status: $("f-status").value,
    tier: $("f-tier").value, levels: new Set(levels), supervised: $("f-supervised").checked,
    q: $("f-search").value.trim().toLowerCase() };
}
async function loadIncidents({ alertNew = false } = {}) {
  const body = await api("/api/incidents?status=&limit=5000");
  const before = S.incidents;
  S.incidents = new Map();
  for (const i of body.incidents) {
    S.incidents.set(i.id, i);
    // a reload after the stream broke off: red incidents that arrived meanwhile still alert, once
    const old = before.get(i.id);
    if (alertNew && i.level === "red" && !CLOSED.has(i.status) && (!old || old.level !== "red")) alertRed(i);
  }
  fillCategories();
  scheduleRender();
}

// ------------------------------------------------------------------------------------------ live stream
function connectStream() {
  if (S.es) S.es.close();
  const es = new EventSource("/api/stream");
  S.es = es;
  es.addEventListener("hello", () => {
    setLive(true);
    // after a reconnect, changes made while we were away were not streamed to us: reload the list
    if (S.streamedOnce) loadIncidents({ alertNew: true }).catch(() => null);
    S.streamedOnce = true;
  });
  es.addEventListener("incident", (ev) => {
    const msg = JSON.parse(ev.data);
    const inc = msg.incident;
    const old = S.incidents.get(inc.id);
    if (old && (old.version || 0) >= (inc.version || 0)) return;
    const sum = toSummary(inc, old);
    S.incidents.set(inc.id, sum);
    if (!old) { S.fresh.add(inc.id); if (sum.category_group && !$("f-category").querySelector(`option[value="${CSS.escape(sum.category_group)}"]`)) fillCategories(); }
    if (inc.level === "red" && !CLOSED.has(inc.status) && (!old || old.level !== "red")) alertRed(sum);
    if (S.pending && S.pending.id === inc.id && (inc.version || 0) > S.pending.version) settlePending(true);
    scheduleRender();
    if (S.selected === inc.id) openIncident(inc.id, false);
  });
  es.onerror = () => { setLive(false); if (es.readyState === EventSource.CLOSED) setTimeout(connectStream, 3000); };
  es.onopen = () => setLive(true);
}
function setLive(on) {
  $("live").className = "live " + (on ? "on" : "off");
  $("live-text").textContent = on ? t("live.on") : t("live.off");
}
function toSummary(inc, old) {
  const sources = inc.sources || [];
  return { ...inc, history: undefined, sources: undefined, source_count: sources.length,
    source_kinds: [...new Set(sources.map((x) => x.kind))].sort(), types: [...new Set(sources.map((x) => x.type))].sort(),
    report_count: sources.filter((x) => x.kind === "report").length,
    texts: sources.map((x) => (x.message || "").slice(0, 200)).slice(0, 10),
    subjects: [...new Set(sources.map((x) => x.subject).filter(Boolean))],
    addresses: (old && old.addresses) || [] };
}

// ------------------------------------------------------------------------------------------ alerts
function unlockAudio() {
  // browsers only let a page make sound after a user gesture: the login click (or the sound switch)
  try { if (!S.audio) S.audio = new (window.AudioContext || window.webkitAudioContext)(); S.audio.resume(); } catch (e) { S.audio = null; }
}
function beep() {
  if (!$("opt-sound").checked || !S.audio) return false;
  try {
    const ctx = S.audio, now = ctx.currentTime;
    for (const [start, freq] of [[0, 880], [0.22, 660], [0.44, 880]]) {
      const osc = ctx.createOscillator(), gain = ctx.createGain();
      osc.type = "square"; osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, now + start);
      gain.gain.exponentialRampToValueAtTime(0.15, now + start + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + start + 0.18);
      osc.connect(gain).connect(ctx.destination);
      osc.start(now + start); osc.stop(now + start + 0.2);
    }
    return true;
  } catch (e) { return false; }
}
function alertRed(i) {
  S.alerts += 1;
  document.body.dataset.redAlerts = String(S.alerts);
  // a burst (a storm, a reconnect) makes one sound and one notification, not hundreds
  const now = Date.now();
  if (now - (S.lastAlert || 0) < 3000) return;
  S.lastAlert = now;
  if (beep()) document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
  if ("Notification" in window && Notification.permission === "granted") {
    try {
      const n = new Notification(t("notify.red_title"), { body: `${incidentTitle(i)} · ${placeOf(i)}`, tag: i.id, lang: I18N.lang });
      n.onclick = () => { window.focus(); openIncident(i.id); };
      document.body.dataset.notified = String(Number(document.body.dataset.notified || 0) + 1);
    } catch (e) { /* notifications off in this browser */ }
  }
}
async function askNotify() {
  unlockAudio();
  if (!("Notification" in window)) return;
  const p = await Notification.requestPermission();
  $("opt-notify").setAttribute("aria-pressed", String(p === "granted"));
}

// ------------------------------------------------------------------------------------------ list
function placeOf(i) {
  const grid = (i.tiers || []).find((x) => x.tier === "grid");
  return grid ? areaName(grid.code) : i.grid_code;
}
function matches(i, q) {
  if (!q) return true;
  const hay = [i.id, i.title, incidentTitle(i), i.department, deptLabel(i.department), ...(i.texts || []),
    ...(i.subjects || []), ...(i.addresses || []), ...(i.tiers || []).flatMap((x) => {
      const a = S.areas.get(x.code); return [x.code, x.name, a && a.name_zh];
    })];
  return hay.some((x) => x && String(x).toLowerCase().includes(q));
}
function visibleIncidents() {
  const f = filters();
  const out = [];
  for (const i of S.incidents.values()) {
    if (!f.levels.has(i.level)) continue;
    if (f.area && !(i.tiers || []).some((x) => x.code === f.area)) continue;
    if (f.category && i.category_group !== f.category && !(i.types || []).includes(f.category)) continue;
    if (f.tier && i.tier !== f.tier) continue;
    if (f.status === "open" && CLOSED.has(i.status)) continue;
    if (f.status === "closed" && !CLOSED.has(i.status)) continue;
    if (f.status && !["open", "closed"].includes(f.status) && i.status !== f.status) continue;
    if (f.supervised && !i.supervision) continue;
    if (!matches(i, f.q)) continue;
    out.push(i);
  }
  out.sort((a, b) => (CLOSED.has(a.status) - CLOSED.has(b.status)) || (LEVEL_RANK[b.level] - LEVEL_RANK[a.level])
    || ((b.updated_ts || 0) - (a.updated_ts || 0)));
  return out;
}
// Many changes can arrive in one burst (thousands of incidents): they only mark the page dirty, and
// the list and map are rebuilt once per animation frame.
function scheduleRender() {
  if (S.renderQueued) return;
  S.renderQueued = true;
  requestAnimationFrame(() => {
    S.renderQueued = false;
    const rows = visibleIncidents();
    renderList(rows);
    drawIncidentsOnMap(rows);
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
  });
}
function badges(i) {
  const sv = supervisionState(i);
  return [
    h("span", { class: `badge ${i.level}` }, levelLabel(i.level)),
    h("span", { class: `badge st-${i.status}` }, statusLabel(i.status)),
    sv ? h("span", { class: `badge supervised${sv.late ? " late" : ""}`, title: sv.note || null },
      sv.late ? t("badge.supervised_overdue") : t("badge.supervised")) : null,
    i.overdue ? h("span", { class: "badge overdue" }, t("badge.overdue")) : null,
  ];
}
function renderList(rows) {
  const list = $("incident-list");
  $("count").textContent = t("list.count", { shown: fmtNum(rows.length), total: fmtNum(S.incidents.size) });
  if (!rows.length) {
    list.replaceChildren(h("li", { class: "muted empty", role: "presentation" }, S.incidents.size ? t("list.none_match") : t("list.none")));
    return;
  }
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.incidentId : null;
  const items = rows.slice(0, MAX_ROWS).map((i) => h("li", {
    class: `incident level-${i.level}${S.selected === i.id ? " selected" : ""}${S.fresh.has(i.id) ? " fresh" : ""}`,
    role: "option", tabindex: "0", "aria-selected": String(S.selected === i.id),
    dataset: { incidentId: i.id, level: i.level, status: i.status, supervised: i.supervision ? "1" : "0" },
    onclick: () => openIncident(i.id), onkeydown: onRowKey,
  },
  h("div", { class: "t" }, incidentTitle(i)),
  h("div", { class: "m" }, badges(i),
    i.acked ? h("span", { class: "badge" }, t("badge.acked")) : null,
    h("span", {}, placeOf(i)),
    h("span", {}, t("list.sources", { n: i.source_count })),
    h("span", { title: fmtTime(i.updated_ts) }, ago(i.updated_ts)))));
  if (rows.length > MAX_ROWS) items.push(h("li", { class: "muted empty", role: "presentation" }, t("list.more", { more: fmtNum(rows.length - MAX_ROWS) })));
  list.replaceChildren(...items);
  if (focused) { const el = list.querySelector(`[data-incident-id="${CSS.escape(focused)}"]`); if (el) el.focus(); }
  if (S.fresh.size) setTimeout(() => S.fresh.clear(), 2600);
}
function onRowKey(ev) {
  const li = ev.currentTarget;
  if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); openIncident(li.dataset.incidentId); }
  else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
    ev.preventDefault();
    const next = ev.key === "ArrowDown" ? li.nextElementSibling : li.previousElementSibling;
    if (next && next.dataset.incidentId) next.focus();
  }
}

// ------------------------------------------------------------------------------------------ map
const P = { minx: 0, miny: 0, kx: 1, ky: 1, vb: null };
function project(lon, lat) { return [(lon - P.minx) * P.kx, (P.maxy - lat) * P.ky]; }
function drawMap() {
  const svg = $("map");
  const [minx, miny, maxx, maxy] = S.map.bbox;
  // equirectangular around the area's middle latitude: 1000 units across, true shape
  const coslat = Math.cos(((miny + maxy) / 2) * Math.PI / 180);
  const kx = 1000 / Math.max(1e-9, maxx - minx);
  Object.assign(P, { minx, miny, maxy, kx, ky: kx / coslat });
  const w = (maxx - minx) * P.kx, hgt = (maxy - miny) * P.ky;
  P.vb = [-10, -10, w + 20, hgt + 20];
  svg.setAttribute("viewBox", P.vb.join(" "));
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  const grids = s("g", { id: "layer-grids" });
  for (const g of S.map.grids) {
    const d = g.rings.map((r) => "M" + r.map(([x, y]) => project(x, y).map((v) => v.toFixed(1)).join(",")).join("L") + "Z").join("");
    grids.append(s("path", { d, class: "grid", "fill-rule": "evenodd", "data-grid": g.code,
      onclick: () => { $("f-area").value = g.code; scheduleRender(); } }, s("title", {}, `${areaName(g.code)} ${g.code}`)));
  }
  const devs = s("g", { id: "layer-devices" });
  const r = Math.max(0.8, Math.min(2.2, 1400 / Math.sqrt(Math.max(1, S.map.devices.length)) / 20));
  for (const [id, kind, lat, lon] of S.map.devices.slice(0, 30000)) {
    const [x, y] = project(lon, lat);
    devs.append(s("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r, class: "device" }, s("title", {}, `${tc("kind", S.map.device_kinds[kind])} ${id}`)));
  }
  svg.replaceChildren(grids, devs, s("g", { id: "layer-incidents" }));
  $("map-title").textContent = t("map.heading", { scope: areaName(S.me.scope), grids: S.map.grids.length, devices: S.map.devices.length });
  enablePanZoom(svg);
}
function drawIncidentsOnMap(rows) {
  const layer = $("layer-incidents");
  if (!layer) return;
  const f = filters();
  for (const el of document.querySelectorAll("#layer-grids .grid.sel")) el.classList.remove("sel");
  if (f.area) for (const el of document.querySelectorAll(`#layer-grids [data-grid^="${CSS.escape(f.area)}"]`)) el.classList.add("sel");
  // marker size follows the grid density of the scope (a town: ~24 grids, the city: hundreds)
  const base = Math.max(3.5, Math.min(9, 9 / Math.sqrt(Math.max(1, S.map.grids.length) / 24)));
  layer.replaceChildren(...rows.slice().reverse().map((i) => {
    const [x, y] = project(i.lon, i.lat);
    const cls = `inc ${i.level}${CLOSED.has(i.status) ? " closed" : ""}${S.selected === i.id ? " sel" : ""}`;
    return s("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: base + LEVEL_RANK[i.level] * base / 6, class: cls,
      "data-incident-id": i.id, onclick: () => openIncident(i.id) }, s("title", {}, `${incidentTitle(i)} · ${levelLabel(i.level)}`));
  }));
}
function enablePanZoom(svg) {
  if (svg.dataset.pz) return;
  svg.dataset.pz = "1";
  let drag = null;
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const k = ev.deltaY > 0 ? 1.2 : 1 / 1.2;
    const rect = svg.getBoundingClientRect();
    const [x, y, w, hh] = P.vb;
    const fx = (ev.clientX - rect.left) / rect.width, fy = (ev.clientY - rect.top) / rect.height;
    P.vb = [x + w * fx * (1 - k), y + hh * fy * (1 - k), w * k, hh * k];
    svg.setAttribute("viewBox", P.vb.join(" "));
  }, { passive: false });
  svg.addEventListener("mousedown", (ev) => { drag = [ev.clientX, ev.clientY, ...P.vb]; });
  window.addEventListener("mouseup", () => { drag = null; });
  svg.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const rect = svg.getBoundingClientRect();
    const [cx, cy, x, y, w, hh] = drag;
    P.vb = [x - (ev.clientX - cx) * w / rect.width, y - (ev.clientY - cy) * hh / rect.height, w, hh];
    svg.setAttribute("viewBox", P.vb.join(" "));
  });
}

// ------------------------------------------------------------------------------------------ detail
async function openIncident(id, focus = true) {
  S.selected = id;
  if (focus) scheduleRender();
  let inc;
  try { inc = await api(`/api/incidents/${encodeURIComponent(id)}`); } catch (e) {
    $("detail").replaceChildren(h("p", { class: "error", role: "alert" }, errorText(e))); return;
  }
  if (S.selected !== id) return;
  const row = S.incidents.get(id);
  if (row) row.addresses = Object.values(inc.reports || {}).map((r) => r && r.address).filter(Boolean); // for search
  const same = $("detail-title") && $("detail-title").dataset.incidentId === id; // a refresh of the open incident
  const keep = same ? { note: $("action-note") && $("action-note").value, msg: $("action-msg") } : {};
  renderDetail(inc, keep);
  if (!focus) scheduleRender();
}
function kvList(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}
function renderSource(inc, src) {
  const ev = (src.evidence || []).filter((e) => e && typeof e === "object");
  const cols = [...new Set(ev.flatMap((e) => Object.keys(e)))].filter((k) => !/snapshot|image|url|ref/i.test(k));
  const rep = (inc.reports || {})[src.id];
  const cell = (c, v) => (c === "ts" ? fmtTime(v) : typeof v === "boolean" ? t(`bool.${v}`)
    : typeof v === "number" ? fmtNum(v, 2) : typeof v === "string" ? v : JSON.stringify(v ?? ""));
  return h("div", { class: "source", dataset: { sourceId: src.id, kind: src.kind } },
    h("div", {}, h("b", {}, src.kind === "event" ? t("detail.sensor_event", { type: typeLabel(src.type) })
      : t("detail.resident_report", { type: typeLabel(src.type) })),
    src.level ? [" ", h("span", { class: `badge ${src.level}` }, levelLabel(src.level))] : null,
    src.kind === "event" ? [" ", h("span", { class: "badge" }, src.active ? t("detail.active") : t("detail.cleared"))] : null),
    h("div", { class: "muted small" }, [src.origin === "hotline" && src.external_id
      ? t("origin.hotline_order", { id: src.external_id }) : tc("origin", src.origin), src.subject, fmtTime(src.ts)]
      .filter(Boolean).join(" · ")),
    src.message ? h("div", { dataset: { original: src.message } }, messageText(src.message, src.type, src.kind)) : null,
    rep && rep.address ? h("div", { class: "small" }, t("detail.address", { address: rep.address })) : null,
    ev.length && cols.length ? h("table", { class: "evidence" },
      h("tr", {}, cols.map((c) => h("th", { scope: "col" }, tc("field", c)))),
      ev.map((e) => h("tr", {}, cols.map((c) => h("td", {}, cell(c, e[c])))))) : null);
}
function renderTimeline(inc) {
  return (inc.history || []).slice().reverse().map((x) => {
    const ticket = x.action === "created" && !(inc.sources || []).some((y) => y.kind === "report") ? null : TICKET[x.action];
    return h("li", { dataset: { action: x.action } },
      h("div", {}, ticket ? [h("span", { class: "badge ticket" }, t(`ticket.${ticket}`)), " "] : null,
        h("b", {}, tc("history", x.action)), " ", x.actor ? t("detail.by", { actor: actorLabel(x.actor) }) : "",
        x.to_status && x.to_status !== x.from_status ? ` → ${statusLabel(x.to_status)}` : ""),
      x.note ? h("div", { class: "note", dataset: { original: x.note } }, noteText(x)) : null,
      h("div", { class: "when" }, [fmtTime(x.ts), x.level && levelLabel(x.level), x.tier && tc("tier", x.tier),
        x.department && deptLabel(x.department),
        (x.assist || []).length && t("timeline.assist", { depts: x.assist.map(deptLabel).join(t("title.join")) }),
        x.deadline && t("timeline.deadline", { deadline: fmtTime(x.deadline) })].filter(Boolean).join(" · ")));
  });
}
function renderDetail(inc, keep = {}) {
  const grid = (inc.tiers || []).find((x) => x.tier === "grid");
  const chain = (inc.tiers || []).map((x) => areaName(x.code)).join(" › ");
  const sv = supervisionState(inc);
  const msg = keep.msg ? keep.msg : h("div", { class: "msg", id: "action-msg", role: "status", "aria-live": "polite" });
  const note = h("textarea", { id: "action-note", placeholder: t("detail.note_ph"), "aria-label": t("detail.note_ph") });
  if (keep.note) note.value = keep.note;
  const dept = h("input", { id: "action-dept", placeholder: t("detail.dept_ph"), "aria-label": t("detail.dept_ph"), list: "dept-list" });
  const assist = h("input", { id: "action-assist", placeholder: t("detail.assist_ph"), "aria-label": t("detail.assist_ph") });
  const deadline = h("input", { id: "action-deadline", type: "datetime-local", "aria-label": t("detail.deadline"), title: t("detail.deadline"),
    value: localInput(Date.now() + 24 * 3600 * 1000) }); // a day by default; the operator sets it
  const allowed = S.me.actions || [];
  const order = [...ACTION_ORDER.filter((a) => allowed.includes(a)), ...allowed.filter((a) => !ACTION_ORDER.includes(a))];
  const fields = { note, dept, assist, deadline, msg };
  const buttons = order.map((a) => h("button", { id: `act-${a}`, dataset: { action: a },
    disabled: !actionEnabled(inc, a), title: actionEnabled(inc, a) ? null : t("detail.not_possible", { status: statusLabel(inc.status) }),
    onclick: () => act(inc, a, fields) }, tc("action", a)));
  const assisting = inc.assist || [];
  fill($("detail"),
    h("h2", { id: "detail-title", dataset: { incidentId: inc.id }, tabindex: "-1" }, incidentTitle(inc)),
    h("div", { class: "m" }, badges(inc), " ",
      inc.acked ? h("span", { class: "badge", id: "detail-acked" }, t("detail.acked")) : null, " ",
      inc.pending_confirmation ? h("span", { class: "badge" }, t("detail.pending")) : null),
    sv ? h("div", { class: `supervision${sv.late ? " late" : ""}`, id: "detail-supervision", role: "note" },
      h("b", {}, t("supervision.title")), " ",
      sv.by ? t("supervision.by", { by: actorLabel(sv.by) }) : "", " · ",
      sv.deadline ? t("supervision.deadline", { deadline: fmtTime(Number(sv.deadline)) }) : "",
      sv.note ? h("div", {}, sv.note) : null) : null,
    kvList([[t("detail.incident"), inc.id], [t("detail.category"), tc("cat", inc.category_group)], [t("detail.priority"), inc.priority],
      [t("detail.grid"), grid ? areaName(grid.code) + t("fmt.paren", { x: grid.code }) : inc.grid_code],
      [t("detail.where"), chain], [t("detail.tier"), `${tc("tier", inc.tier)} ${areaName(inc.tier_code)}`],
      [t("detail.department"), inc.department ? deptLabel(inc.department) : "—"],
      [t("detail.assisting"), assisting.length ? assisting.map(deptLabel).join(t("title.join")) : null],
      [t("detail.created"), fmtTime(inc.created_ts)], [t("detail.updated"), fmtTime(inc.updated_ts)],
      [t("detail.sla"), inc.sla_deadline_ts ? fmtTime(inc.sla_deadline_ts) : "—"], [t("detail.escalations"), inc.escalations],
      [t("detail.rating"), inc.rating ? "★".repeat(inc.rating) : null], [t("detail.version"), inc.version]]),
    buttons.length ? [h("h3", {}, t("detail.actions")), note,
      h("div", { class: "row2" }, dept, assist), allowed.includes("supervise") ? deadline : null,
      h("datalist", { id: "dept-list" }, Object.keys(I18N.table).filter((k) => k.startsWith("dept."))
        .map((k) => h("option", { value: k.slice(5) }, t(k)))),
      h("div", { class: "actions", role: "group", "aria-label": t("detail.actions") }, buttons), msg] : null,
    h("h3", {}, t("detail.sources", { n: (inc.sources || []).length })), (inc.sources || []).map((x) => renderSource(inc, x)),
    (inc.images || []).length ? [h("h3", {}, t("detail.snapshots")), inc.images.map((im) => h("a", { href: im.url, target: "_blank", rel: "noopener" },
      h("img", { class: "snap", src: im.url, alt: t("detail.snapshot_alt", { ref: im.ref }) })))] : null,
    h("h3", {}, t("detail.timeline")), h("ol", { class: "timeline", id: "timeline" }, renderTimeline(inc)));
}
function localInput(ms) {
  // "YYYY-MM-DDTHH:MM" in the browser's zone, what <input type=datetime-local> takes
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}
function confirmDialog(text) {
  const dlg = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "yes"), { once: true });
    dlg.returnValue = "";
    dlg.showModal();
    $("confirm-no").focus();
  });
}
function errorText(e) {
  const b = (e && e.body) || {};
  if (e.status === 409 && b.reason) {
    if (b.reason === "out_of_scope") return t("refuse.out_of_scope");
    if (b.reason === "invalid_transition" && /already acknowledged/.test(b.error || "")) return t("refuse.already_acked");
    if (b.reason === "invalid_transition" && /no auto-resolve/.test(b.error || "")) return t("refuse.nothing_to_confirm");
    if (b.reason === "invalid_transition") return t("refuse.invalid_transition", { action: tc("action", b.action),
      status: statusLabel(b.status), allowed: (b.allowed_from || []).map(statusLabel).join(t("title.join")) });
    if (b.reason === "bad_action") return t("refuse.bad_action", { detail: b.error });
  }
  if (e.status === 403) return I18N.lang === "en" ? e.message : t("refuse.forbidden");
  if (e.status === 400 && /comment needs a note/.test(e.message)) return t("refuse.comment_note");
  if (e.status === 400 && /supervise needs a note/.test(e.message)) return t("refuse.supervise_note");
  if (e.status === 400 && /deadline/.test(e.message)) return t("refuse.deadline");
  if (e.status && e.status >= 400) return I18N.lang === "en" ? e.message : t("err.http", { status: e.status, detail: e.message });
  return e.message;
}
async function act(inc, action, { note, dept, assist, deadline, msg }) {
  if (CONFIRM[action] && !(await confirmDialog(t(CONFIRM[action], { id: inc.id })))) {
    msg.className = "msg"; msg.textContent = t("act.cancelled_by_user"); return;
  }
  msg.className = "msg";
  msg.textContent = t("act.sending");
  const body = { action, note: note.value.trim() };
  if (action === "dispatch" && dept.value.trim()) body.department = dept.value.trim();
  const helpers = assist.value.split(/[,，、\s]+/).map((x) => x.trim()).filter(Boolean);
  if (action === "dispatch" && helpers.length) body.assist = helpers; // 吹哨报到: assisting departments
  if (action === "supervise" && deadline.value) body.deadline = new Date(deadline.value).getTime();
  try {
    const r = await api(`/api/incidents/${encodeURIComponent(inc.id)}/actions`, { json: body });
    msg.textContent = t("act.sent", { action: tc("action", action) });
    note.value = "";
    settlePending(false);
    const now = S.incidents.get(inc.id);
    if (r && now && r.version !== null && r.version !== undefined && (now.version || 0) > r.version) {
      msg.textContent = t("act.applied", { action: tc("action", action) }); // the change beat the answer here
      return;
    }
    S.pending = { id: inc.id, version: r && r.version !== undefined && r.version !== null ? r.version : inc.version, action, msg,
      timer: setTimeout(() => {
        if (S.pending && S.pending.msg === msg && msg.isConnected) msg.textContent = t("act.slow", { action: tc("action", action), s: 15 });
      }, 15000) };
  } catch (e) {
    msg.className = "msg error";
    msg.setAttribute("role", "alert");
    msg.textContent = t("act.refused", { reason: errorText(e) });
    msg.dataset.detail = e.message; // the server's own words, for support
  }
}
function settlePending(applied) {
  const p = S.pending;
  if (!p) return;
  clearTimeout(p.timer);
  S.pending = null;
  if (applied && p.msg) { p.msg.className = "msg"; p.msg.textContent = t("act.applied", { action: tc("action", p.action) }); }
}

// ------------------------------------------------------------------------------------------ statistics
async function loadStats() {
  const month = $("s-month").value;
  S.stats = await api("/api/stats" + (month ? `?month=${encodeURIComponent(month)}` : ""));
  renderStats(S.stats);
}
function pct(x) { return x === null || x === undefined ? "—" : `${fmtNum(x * 100, 1)} %`; }
function renderStats(st) {
  const sel = $("s-month");
  sel.replaceChildren(...st.months.map((m) => h("option", { value: m, selected: m === st.month }, monthLabel(m))));
  const o = st.overall;
  $("s-scope").textContent = t("stats.scope", { scope: areaName(S.me.scope), n: o.incidents, month: monthLabel(st.month) });
  const kpi = (id, v, l) => h("div", { class: "kpi card", id, role: "group", "aria-label": l }, h("div", { class: "v" }, v), h("div", { class: "l" }, l));
  const handling = o.avg_handling_h === null ? "—" : o.avg_handling_h < 1 ? t("stats.minutes", { n: Math.round(o.avg_handling_h * 60) })
    : t("stats.hours", { n: fmtNum(o.avg_handling_h, 1) });
  const supervised = o.supervised !== undefined;
  fill($("kpis"),
    kpi("k-closure", pct(o.closure_rate), t("stats.closure", { closed: o.closed, n: o.incidents })),
    kpi("k-handling", handling, t("stats.handling")),
    kpi("k-overdue", `${o.overdue}`, t("stats.overdue", { open: o.open_overdue })),
    kpi("k-satisfaction", o.satisfaction === null || o.satisfaction === undefined ? t("stats.no_ratings") : pct(o.satisfaction),
      t("stats.satisfaction", { n: o.ratings || 0 })),
    supervised ? kpi("k-supervised", `${o.supervised}`, t("stats.supervised", { overdue: o.supervised_overdue || 0 })) : null,
    kpi("k-index", fmtNum(o.index, 1), t("stats.index")));
  const days = Object.entries(st.daily).map(([d, n]) => [d, n]);
  columnChart($("c-daily"), days.map(([d, n]) => ({ label: dayLabel(d), key: d, value: n, cls: "" })),
    { xTitle: t("stats.axis_day"), yTitle: t("stats.axis_count"), line: days.length >= 8 });
  columnChart($("c-cat"), [...Object.entries(st.by_level).map(([k, v]) => ({ label: levelLabel(k), key: k, value: v, cls: k })),
    ...Object.entries(st.by_category).map(([k, v]) => ({ label: tc("cat", k), key: k, value: v, cls: "" }))],
  { xTitle: t("stats.col_what"), yTitle: t("stats.axis_count") });
  barChart($("c-towns"), st.ranking.towns.slice(0, 12).map((r) => ({ label: areaName(r.code), key: r.code, value: r.index })), 100);
  rankTable($("t-towns"), st.ranking.towns, t("stats.col_town"));
  rankTable($("t-grids"), st.ranking.grids.slice(0, 30), t("stats.col_grid"));
  csvButton("card-daily", `daily-${st.month}`, [t("stats.col_day"), t("stats.col_count")], days);
  csvButton("card-cat", `levels-categories-${st.month}`, [t("stats.col_what"), t("stats.col_count")],
    [...Object.entries(st.by_level).map(([k, v]) => [levelLabel(k), v]), ...Object.entries(st.by_category).map(([k, v]) => [tc("cat", k), v])]);
  const rankRows = (rows) => rows.map((r) => [r.rank, areaName(r.code), r.code, r.index, r.incidents, r.closure_rate, r.overdue,
    r.satisfaction === null ? "" : r.satisfaction]);
  const rankHead = (what) => [t("stats.col_rank"), what, "code", t("stats.col_index"), t("stats.col_incidents"), t("stats.col_closure"),
    t("stats.col_overdue"), t("stats.col_satisfaction")];
  csvButton("card-towns", `towns-${st.month}`, rankHead(t("stats.col_town")), rankRows(st.ranking.towns));
  csvButton("card-grids", `grids-${st.month}`, rankHead(t("stats.col_grid")), rankRows(st.ranking.grids));
  if (st.ranking.districts) {
    rankTable($("t-districts"), st.ranking.districts, t("stats.col_district"));
    csvButton("card-districts", `districts-${st.month}`, rankHead(t("stats.col_district")), rankRows(st.ranking.districts));
  }
  $("card-districts").classList.toggle("hidden", !st.ranking.districts);
  // the definitions travel with the figures when the API sends them (one text for the figures and the
  // page); the string table's own ones describe the figures of an API that does not
  const fromApi = Object.values(st.definitions || {}).filter((d) => d && typeof d === "object" && d[I18N.lang]);
  const threshold = st.satisfaction_threshold ? st.satisfaction_threshold.min_rating : undefined;
  $("defs").replaceChildren(...(fromApi.length ? fromApi.map((d) => h("li", {}, d[I18N.lang]))
    : ["def.scope", "def.closure", "def.handling", "def.overdue",
      threshold !== undefined ? "def.satisfaction" : "def.satisfaction_mean", supervised ? "def.supervised" : null, "def.index"]
      .filter(Boolean).map((k) => h("li", {}, t(k, { threshold })))));
}
function monthLabel(m) {
  const [y, mo] = m.split("-").map(Number);
  return new Intl.DateTimeFormat(I18N.lang, { year: "numeric", month: "long", timeZone: "UTC" }).format(Date.UTC(y, mo - 1, 15));
}
function dayLabel(d) {
  const [y, mo, da] = d.split("-").map(Number);
  return new Intl.DateTimeFormat(I18N.lang, { month: "numeric", day: "numeric", timeZone: "UTC" }).format(Date.UTC(y, mo - 1, da));
}
function rankTable(tbl, rows, what) {
  tbl.replaceChildren(h("tr", {}, [t("stats.col_rank"), what, t("stats.col_index"), t("stats.col_incidents"), t("stats.col_closure"),
    t("stats.col_overdue"), t("stats.col_satisfaction")].map((c) => h("th", { scope: "col" }, c))),
  ...rows.map((r) => h("tr", {}, h("td", { class: "n" }, r.rank), h("td", {}, areaName(r.code)), h("td", { class: "n" }, fmtNum(r.index, 1)),
    h("td", { class: "n" }, r.incidents), h("td", { class: "n" }, pct(r.closure_rate)),
    h("td", { class: "n" }, r.overdue), h("td", { class: "n" }, r.satisfaction === null ? t("stats.no_ratings") : pct(r.satisfaction)))));
  if (!rows.length) tbl.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, t("stats.no_month"))));
}
// --- charts: hand-written SVG with axes, gridlines, keyboard-focusable marks and a shared tooltip
function niceTicks(max) {
  // counts: whole-number steps of 1, 2 or 5 × 10^k, about four of them
  const raw = Math.max(1, max) / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max(1, [1, 2, 5, 10].map((k) => k * mag).find((x) => x >= raw) || raw);
  const top = Math.ceil(Math.max(1, max) / step) * step;
  const ticks = [];
  for (let v = 0; v <= top + 1e-9; v += step) ticks.push(+v.toFixed(6));
  return { top, ticks };
}
function tipOn(el, text) {
  el.setAttribute("tabindex", "0");
  el.setAttribute("role", "img");
  el.setAttribute("aria-label", text);
  const show = (ev) => {
    const tip = $("tooltip");
    tip.textContent = text;
    tip.classList.remove("hidden");
    const r = el.getBoundingClientRect();
    const x = ev && ev.clientX ? ev.clientX : r.left + r.width / 2, y = ev && ev.clientY ? ev.clientY : r.top;
    tip.style.left = `${Math.min(window.innerWidth - tip.offsetWidth - 8, x + 12)}px`;
    tip.style.top = `${Math.max(4, y - tip.offsetHeight - 10)}px`;
  };
  const hide = () => $("tooltip").classList.add("hidden");
  el.addEventListener("mousemove", show); el.addEventListener("focus", () => show(null));
  el.addEventListener("mouseleave", hide); el.addEventListener("blur", hide);
  return el;
}
// a label cut to about ``width`` SVG units at the charts' 11 px font (CJK characters count double)
function fitText(text, width) {
  let w = 0, out = "";
  for (const ch of text) {
    w += ch.codePointAt(0) > 0x2e80 ? 11 : 6.2;
    if (w > width) return out + "…";
    out += ch;
  }
  return out;
}
function columnChart(svg, rows, { xTitle, yTitle, line = false }) {
  const W = 600, H = 240, L = 46, R = 10, T = 14, B = 44;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const { top, ticks } = niceTicks(Math.max(0, ...rows.map((r) => r.value)));
  const y = (v) => H - B - (H - B - T) * v / top;
  const kids = ticks.map((v) => [s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: v ? "gridline" : "axis" }),
    s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmtNum(v))]);
  kids.push(s("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }),
    s("text", { x: 12, y: (T + H - B) / 2, transform: `rotate(-90 12 ${(T + H - B) / 2})`, "text-anchor": "middle", class: "axis-title" }, yTitle),
    s("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "axis-title" }, xTitle));
  const n = rows.length, bw = (W - L - R) / Math.max(n, 1);
  const every = Math.max(1, Math.ceil(n / 10));
  rows.forEach((r, k) => {
    const x = L + k * bw;
    if (line) {
      kids.push(tipOn(s("circle", { cx: x + bw / 2, cy: y(r.value), r: 4, class: "bar mark" }), t("stats.tip", { label: r.label, value: fmtNum(r.value) })));
    } else {
      kids.push(tipOn(s("rect", { x: x + bw * 0.15, y: y(r.value), width: Math.max(2, bw * 0.7), height: H - B - y(r.value), class: `bar mark ${r.cls}` }),
        t("stats.tip", { label: r.label, value: fmtNum(r.value) })));
    }
    if (k % every === 0) kids.push(s("text", { x: x + bw / 2, y: H - B + 14, "text-anchor": "middle" }, fitText(r.label, bw * every - 4)));
  });
  if (line && n) kids.unshift(s("polyline", { points: rows.map((r, k) => `${L + k * bw + bw / 2},${y(r.value)}`).join(" "), class: "line" }));
  if (!n) kids.push(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, t("stats.no_data")));
  svg.replaceChildren(...kids.flat());
}
function barChart(svg, rows, max) {
  const W = 600, H = 280, L = 150, R = 40, T = 6, B = 30;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const top = max || Math.max(1, ...rows.map((r) => r.value));
  const x = (v) => L + (W - L - R) * v / top;
  const kids = [0, 25, 50, 75, 100].map((v) => [s("line", { x1: x(v), x2: x(v), y1: T, y2: H - B, class: v ? "gridline" : "axis" }),
    s("text", { x: x(v), y: H - B + 14, "text-anchor": "middle" }, v)]);
  kids.push(s("text", { x: (L + W - R) / 2, y: H - 2, "text-anchor": "middle", class: "axis-title" }, t("stats.axis_index")));
  const bh = Math.min(22, (H - T - B) / Math.max(rows.length, 1));
  rows.forEach((r, n) => {
    const yy = T + n * bh;
    kids.push(s("text", { x: L - 8, y: yy + bh * 0.7, "text-anchor": "end" }, r.label),
      tipOn(s("rect", { x: L, y: yy + 2, width: Math.max(1, x(r.value) - L), height: bh - 5, class: "bar mark" }), t("stats.tip", { label: r.label, value: fmtNum(r.value, 1) })),
      s("text", { x: x(r.value) + 4, y: yy + bh * 0.7 }, fmtNum(r.value, 1)));
  });
  if (!rows.length) kids.push(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, t("stats.no_data")));
  svg.replaceChildren(...kids.flat());
}
function csvButton(cardId, name, head, rows) {
  const card = $(cardId);
  let btn = card.querySelector(".csv");
  if (!btn) {
    btn = h("button", { class: "csv ghost small", type: "button" });
    card.querySelector("figcaption").append(btn);
  }
  btn.textContent = t("stats.csv");
  btn.title = t("stats.csv_title");
  btn.onclick = () => {
    const q = (v) => { const x = v === null || v === undefined ? "" : String(v); return /[",\n]/.test(x) ? `"${x.replace(/"/g, '""')}"` : x; };
    const text = "\ufeff" + [head, ...rows].map((r) => r.map(q).join(",")).join("\r\n") + "\r\n"; // BOM: Excel reads UTF-8
    const a = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" })), download: `${name}.csv` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  };
}

// ------------------------------------------------------------------------------------------ wiring
function switchTab(name) {
  S.view = name;
  for (const b of document.querySelectorAll(".tab")) {
    b.classList.toggle("active", b.dataset.tab === name);
    b.setAttribute("aria-selected", String(b.dataset.tab === name));
  }
  $("view-incidents").classList.toggle("hidden", name !== "incidents");
  $("view-stats").classList.toggle("hidden", name !== "stats");
  if (name === "stats") loadStats().catch((e) => { $("kpis").replaceChildren(h("p", { class: "error", role: "alert" }, errorText(e))); });
}
document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", logout);
  $("lang").addEventListener("change", (ev) => setLang(ev.target.value, { save: true }));
  $("login-lang").addEventListener("change", (ev) => { S.langChosen = true; setLang(ev.target.value); });
  $("opt-notify").addEventListener("click", askNotify);
  $("opt-sound").addEventListener("change", unlockAudio);
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => switchTab(b.dataset.tab));
  for (const id of ["f-area", "f-category", "f-status", "f-tier", "f-supervised"]) $(id).addEventListener("change", scheduleRender);
  $("f-search").addEventListener("input", scheduleRender);
  for (const c of document.querySelectorAll("[data-level]")) c.addEventListener("change", scheduleRender);
  $("s-month").addEventListener("change", () => loadStats());
  setInterval(() => { if (S.me && S.view === "incidents") scheduleRender(); }, 30000);
  await setLang(storedLang() || LANGS[0], { remember: false }).catch(() => null);
  start().catch(() => showLogin());
});
