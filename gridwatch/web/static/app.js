// gridwatch operator console: plain JS, no external code (the machine is offline).
// Lists and the map come from /api; live changes from /api/stream (Server-Sent Events). The server
// filters everything by the operator's scope; this page only renders what it is given.
"use strict";

const S = {
  me: null, map: null, incidents: new Map(), selected: null, es: null, tz: "Asia/Shanghai",
  areaNames: new Map(), fresh: new Set(), view: null,
};
const CLOSED = new Set(["resolved", "evaluated", "closed", "cancelled"]);
const LEVEL_RANK = { red: 2, yellow: 1, blue: 0 };
const ACTION_LABELS = {
  ack: "Acknowledge", dispatch: "Dispatch", accept: "Accept", start: "Start work", resolve: "Resolve",
  escalate: "Escalate", comment: "Comment", confirm: "Confirm", reopen: "Reopen", cancel: "Cancel",
};
const SVGNS = "http://www.w3.org/2000/svg";
// Which statuses each action is allowed from (mirrors agents/lifecycle.py; the backend decides).
const OPEN = ["reported", "dispatched", "accepted", "in_progress"];
const ALLOWED_FROM = {
  ack: [...OPEN, "resolved"], dispatch: ["reported", "dispatched"], accept: ["dispatched"], start: ["accepted"],
  resolve: OPEN, escalate: OPEN, comment: [...OPEN, "resolved", "evaluated", "closed", "cancelled"],
  confirm: ["resolved"], reopen: ["resolved", "closed"], cancel: OPEN,
};
function actionEnabled(inc, a) {
  if (!(ALLOWED_FROM[a] || []).includes(inc.status)) return false;
  if (a === "ack" && inc.acked) return false;
  if (a === "confirm" && !inc.pending_confirmation) return false;
  return true;
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
  return new Intl.DateTimeFormat("zh-CN", { timeZone: S.tz, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }).format(new Date(ms));
}
function ago(ms) {
  const d = Math.max(0, Date.now() - ms) / 1000;
  if (d < 90) return `${Math.round(d)} s ago`;
  if (d < 5400) return `${Math.round(d / 60)} min ago`;
  if (d < 129600) return `${Math.round(d / 3600)} h ago`;
  return `${Math.round(d / 86400)} d ago`;
}
function areaName(code) { return S.areaNames.get(code) || code; }
async function api(path, opts = {}) {
  const init = { credentials: "same-origin", headers: {}, ...opts };
  if (opts.json !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.json);
  }
  const r = await fetch(path, init);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (r.status === 401 && !path.startsWith("/api/login")) { showLogin(); throw new Error("logged out"); }
  if (!r.ok) throw new Error((body && (body.error || (body[0] && body[0].description))) || `HTTP ${r.status}`);
  return body;
}

// ------------------------------------------------------------------------------------------ login
function showLogin() {
  if (S.es) { S.es.close(); S.es = null; }
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
    await start();
  } catch (e) { $("login-error").textContent = e.message; }
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
  $("login").classList.add("hidden");
  $("app").classList.remove("hidden");
  $("who-name").textContent = `${S.me.name} (${S.me.user}, ${S.me.role})`;
  $("who-scope").textContent = `scope: ${S.me.scope_name} · ${S.me.scope_tier} ${S.me.scope}`;
  S.map = await api("/api/map");
  S.areaNames = new Map(S.map.areas.map((a) => [a.code, a.name]));
  for (const g of S.map.grids) S.areaNames.set(g.code, g.name);
  fillFilters();
  drawMap();
  await loadIncidents();
  connectStream();
  switchTab(S.view || "incidents");
}
function fillFilters() {
  const sel = $("f-area");
  sel.replaceChildren(h("option", { value: "" }, `all of ${S.me.scope_name}`));
  const indent = { district: "", street: "  ", community: "    ", grid: "      " };
  for (const a of S.map.areas) {
    if (a.code === S.me.scope) continue;
    sel.append(h("option", { value: a.code }, `${indent[a.tier] || ""}${a.name} (${a.tier})`));
  }
  const cat = $("f-category");
  cat.replaceChildren(h("option", { value: "" }, "all categories"));
  for (const c of S.me.categories || []) cat.append(h("option", { value: c }, c.replace(/_/g, " ")));
}
function filters() {
  const levels = [...document.querySelectorAll("[data-level]")].filter((x) => x.checked).map((x) => x.dataset.level);
  return { area: $("f-area").value, category: $("f-category").value, status: $("f-status").value,
    tier: $("f-tier").value, levels: new Set(levels) };
}
async function loadIncidents() {
  const body = await api("/api/incidents?status=&limit=5000");
  S.incidents.clear();
  for (const i of body.incidents) S.incidents.set(i.id, i);
  renderList();
  drawIncidentsOnMap();
}

// ------------------------------------------------------------------------------------------ live stream
function connectStream() {
  if (S.es) S.es.close();
  const es = new EventSource("/api/stream");
  S.es = es;
  es.addEventListener("hello", () => {
    setLive(true);
    // after a reconnect, changes made while we were away were not streamed to us: reload the list
    if (S.streamedOnce) loadIncidents().catch(() => null);
    S.streamedOnce = true;
  });
  es.addEventListener("incident", (ev) => {
    const msg = JSON.parse(ev.data);
    const inc = msg.incident;
    const old = S.incidents.get(inc.id);
    if (old && (old.version || 0) >= (inc.version || 0)) return;
    S.incidents.set(inc.id, toSummary(inc));
    if (!old) S.fresh.add(inc.id);
    renderList();
    drawIncidentsOnMap();
    if (S.selected === inc.id) openIncident(inc.id, false);
  });
  es.onerror = () => { setLive(false); if (es.readyState === EventSource.CLOSED) setTimeout(connectStream, 3000); };
  es.onopen = () => setLive(true);
}
function setLive(on) {
  $("live").className = "live " + (on ? "on" : "off");
  $("live-text").textContent = on ? "live" : "reconnecting";
}
function toSummary(inc) {
  const sources = inc.sources || [];
  return { ...inc, history: undefined, sources: undefined, source_count: sources.length,
    source_kinds: [...new Set(sources.map((x) => x.kind))].sort(), types: [...new Set(sources.map((x) => x.type))].sort() };
}

// ------------------------------------------------------------------------------------------ list
function visibleIncidents() {
  const f = filters();
  const out = [];
  for (const i of S.incidents.values()) {
    if (!f.levels.has(i.level)) continue;
    if (f.area && !(i.tiers || []).some((t) => t.code === f.area)) continue;
    if (f.category && i.category_group !== f.category && !(i.types || []).includes(f.category)) continue;
    if (f.tier && i.tier !== f.tier) continue;
    if (f.status === "open" && CLOSED.has(i.status)) continue;
    if (f.status === "closed" && !CLOSED.has(i.status)) continue;
    if (f.status && !["open", "closed"].includes(f.status) && i.status !== f.status) continue;
    out.push(i);
  }
  out.sort((a, b) => (CLOSED.has(a.status) - CLOSED.has(b.status)) || (LEVEL_RANK[b.level] - LEVEL_RANK[a.level])
    || ((b.updated_ts || 0) - (a.updated_ts || 0)));
  return out;
}
function renderList() {
  const list = $("incident-list");
  const rows = visibleIncidents();
  $("count").textContent = `${rows.length} incident${rows.length === 1 ? "" : "s"} shown · ${S.incidents.size} in scope`;
  const cats = new Set(S.me.categories || []);
  for (const i of S.incidents.values()) cats.add(i.category_group);
  const catSel = $("f-category");
  const have = new Set([...catSel.options].map((o) => o.value));
  for (const c of [...cats].sort()) if (c && !have.has(c)) catSel.append(h("option", { value: c }, c.replace(/_/g, " ")));
  if (!rows.length) {
    list.replaceChildren(h("li", { class: "muted empty" }, S.incidents.size
      ? "No incident matches the filters." : "No incidents in your scope. New ones appear here live."));
    return;
  }
  list.replaceChildren(...rows.map((i) => {
    const grid = (i.tiers || []).find((t) => t.tier === "grid");
    const li = h("li", {
      class: `incident level-${i.level}${S.selected === i.id ? " selected" : ""}${S.fresh.has(i.id) ? " fresh" : ""}`,
      dataset: { incidentId: i.id, level: i.level, status: i.status }, onclick: () => openIncident(i.id),
    },
    h("div", { class: "t" }, i.title || i.category_group),
    h("div", { class: "m" },
      h("span", { class: `badge ${i.level}` }, i.level),
      h("span", { class: `badge st-${i.status}` }, i.status.replace("_", " ")),
      i.overdue ? h("span", { class: "badge overdue" }, "overdue") : null,
      i.acked ? h("span", { class: "badge" }, "acked") : null,
      h("span", {}, grid ? grid.name : i.grid_code),
      h("span", {}, `${i.source_count} source${i.source_count === 1 ? "" : "s"}`),
      h("span", { title: fmtTime(i.updated_ts) }, ago(i.updated_ts))));
    return li;
  }));
  setTimeout(() => S.fresh.clear(), 2600);
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
      onclick: () => { $("f-area").value = g.code; renderList(); drawIncidentsOnMap(); } }, s("title", {}, `${g.name} ${g.code}`)));
  }
  const devs = s("g", { id: "layer-devices" });
  const r = Math.max(0.8, Math.min(2.2, 1400 / Math.sqrt(Math.max(1, S.map.devices.length)) / 20));
  for (const [id, kind, lat, lon] of S.map.devices.slice(0, 30000)) {
    const [x, y] = project(lon, lat);
    devs.append(s("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r, class: "device" }, s("title", {}, `${S.map.device_kinds[kind]} ${id}`)));
  }
  svg.replaceChildren(grids, devs, s("g", { id: "layer-incidents" }));
  $("map-title").textContent = `${S.me.scope_name}: ${S.map.grids.length} grids, ${S.map.devices.length} devices`;
  enablePanZoom(svg);
}
function drawIncidentsOnMap() {
  const layer = $("layer-incidents");
  if (!layer) return;
  const f = filters();
  for (const el of document.querySelectorAll("#layer-grids .grid.sel")) el.classList.remove("sel");
  if (f.area) for (const el of document.querySelectorAll(`#layer-grids [data-grid^="${CSS.escape(f.area)}"]`)) el.classList.add("sel");
  const rows = visibleIncidents().slice().reverse();
  // marker size follows the grid density of the scope (a town: ~24 grids, the city: hundreds)
  const base = Math.max(3.5, Math.min(9, 9 / Math.sqrt(Math.max(1, S.map.grids.length) / 24)));
  const scale = 1;
  layer.replaceChildren(...rows.map((i) => {
    const [x, y] = project(i.lon, i.lat);
    const cls = `inc ${i.level}${CLOSED.has(i.status) ? " closed" : ""}${S.selected === i.id ? " sel" : ""}`;
    return s("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: (base + LEVEL_RANK[i.level] * base / 6) * scale, class: cls,
      "data-incident-id": i.id, onclick: () => openIncident(i.id) }, s("title", {}, i.title));
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
  if (focus) { renderList(); drawIncidentsOnMap(); }
  let inc;
  try { inc = await api(`/api/incidents/${encodeURIComponent(id)}`); } catch (e) {
    $("detail").replaceChildren(h("p", { class: "error" }, e.message)); return;
  }
  if (S.selected !== id) return;
  renderDetail(inc);
  if (!focus) { renderList(); drawIncidentsOnMap(); }
}
function renderDetail(inc) {
  const grid = (inc.tiers || []).find((t) => t.tier === "grid");
  const chain = (inc.tiers || []).map((t) => t.name).join(" › ");
  const kv = (pairs) => h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const sources = (inc.sources || []).map((src) => {
    const ev = (src.evidence || []).filter((e) => e && typeof e === "object");
    const cols = [...new Set(ev.flatMap((e) => Object.keys(e)))].filter((k) => !/snapshot|image|url|ref/i.test(k));
    const rep = (inc.reports || {})[src.id];
    return h("div", { class: "source", dataset: { sourceId: src.id } },
      h("div", {}, h("b", {}, src.kind === "event" ? `sensor event · ${src.type}` : `resident report · ${src.type}`),
        src.level ? [" ", h("span", { class: `badge ${src.level}` }, src.level)] : null,
        src.kind === "event" ? [" ", h("span", { class: "badge" }, src.active ? "active" : "cleared")] : null),
      h("div", { class: "muted small" }, `${src.origin || ""} ${src.subject ? "· " + src.subject : ""} · ${fmtTime(src.ts)}`),
      src.message ? h("div", {}, src.message) : null,
      rep && rep.address ? h("div", { class: "small" }, `address: ${rep.address}`) : null,
      ev.length && cols.length ? h("table", { class: "evidence" },
        h("tr", {}, cols.map((c) => h("th", {}, c === "ts" ? "time" : c))),
        ev.map((e) => h("tr", {}, cols.map((c) => h("td", {}, c === "ts" ? fmtTime(e[c]) : typeof e[c] === "string" ? e[c] : JSON.stringify(e[c] ?? ""))))))
        : null);
  });
  const images = (inc.images || []).map((im) => h("a", { href: im.url, target: "_blank", rel: "noopener" },
    h("img", { class: "snap", src: im.url, alt: `evidence ${im.ref}` })));
  const history = (inc.history || []).slice().reverse().map((t) => h("li", {},
    h("div", {}, h("b", {}, t.action), " ", t.actor ? `by ${t.actor}` : "",
      t.to_status && t.to_status !== t.from_status ? ` → ${t.to_status.replace("_", " ")}` : ""),
    t.note ? h("div", {}, t.note) : null,
    h("div", { class: "when" }, `${fmtTime(t.ts)}${t.level ? " · " + t.level : ""}${t.tier ? " · " + t.tier : ""}${t.department ? " · " + t.department : ""}`)));
  const msg = h("div", { class: "msg", id: "action-msg" });
  const note = h("textarea", { id: "action-note", placeholder: "note (required for a comment)" });
  const dept = h("input", { id: "action-dept", placeholder: "department (dispatch; default from routing)" });
  const allowed = new Set(S.me.actions || []);
  const buttons = ["ack", "dispatch", "accept", "start", "resolve", "escalate", "comment", "confirm", "reopen", "cancel"]
    .filter((a) => allowed.has(a)).map((a) => h("button", { id: `act-${a}`, dataset: { action: a },
      disabled: !actionEnabled(inc, a), title: actionEnabled(inc, a) ? null : `not possible while ${inc.status}`,
      onclick: () => act(inc, a, note, dept, msg) }, ACTION_LABELS[a] || a));
  fill($("detail"),
    h("h2", { id: "detail-title", dataset: { incidentId: inc.id } }, inc.title),
    h("div", { class: "m" }, h("span", { class: `badge ${inc.level}` }, inc.level), " ",
      h("span", { id: "detail-status", class: `badge st-${inc.status}` }, inc.status.replace("_", " ")), " ",
      inc.acked ? h("span", { class: "badge", id: "detail-acked" }, "acknowledged") : null, " ",
      inc.overdue ? h("span", { class: "badge overdue" }, "overdue") : null,
      inc.pending_confirmation ? h("span", { class: "badge" }, "auto-resolved: confirm?") : null),
    kv([["incident", inc.id], ["category", inc.category_group], ["priority", inc.priority], ["grid", grid ? `${grid.name} (${grid.code})` : inc.grid_code],
      ["where", chain], ["work tier", `${inc.tier} ${areaName(inc.tier_code)}`], ["department", inc.department || "—"],
      ["created", fmtTime(inc.created_ts)], ["updated", fmtTime(inc.updated_ts)],
      ["SLA deadline", inc.sla_deadline_ts ? fmtTime(inc.sla_deadline_ts) : "—"], ["escalations", inc.escalations],
      ["rating", inc.rating ? "★".repeat(inc.rating) : null], ["version", inc.version]]),
    buttons.length ? [h("h3", {}, "Actions"), note, dept, h("div", { class: "actions" }, buttons), msg] : null,
    h("h3", {}, `Sources (${(inc.sources || []).length})`), sources,
    images.length ? [h("h3", {}, "Evidence snapshots"), images] : null,
    h("h3", {}, "Timeline"), h("ol", { class: "timeline", id: "timeline" }, history));
}
async function act(inc, action, note, dept, msg) {
  msg.className = "msg";
  msg.textContent = "sending…";
  try {
    const body = { action, note: note.value.trim() };
    if (action === "dispatch" && dept.value.trim()) body.department = dept.value.trim();
    await api(`/api/incidents/${encodeURIComponent(inc.id)}/actions`, { json: body });
    msg.textContent = `${action} sent; waiting for the workflow to apply it…`;
    note.value = "";
    const before = inc.version;
    setTimeout(() => {
      const now = S.incidents.get(inc.id);
      if (msg.isConnected && now && now.version === before) {
        msg.className = "msg error";
        msg.textContent = `${action} not applied yet: the workflow may have refused it (wrong status?)`;
      }
    }, 10000);
  } catch (e) { msg.className = "msg error"; msg.textContent = e.message; }
}

// ------------------------------------------------------------------------------------------ statistics
async function loadStats() {
  const month = $("s-month").value;
  const st = await api("/api/stats" + (month ? `?month=${encodeURIComponent(month)}` : ""));
  const sel = $("s-month");
  sel.replaceChildren(...st.months.map((m) => h("option", { value: m, selected: m === st.month }, m)));
  $("s-scope").textContent = `${S.me.scope_name} · ${st.overall.incidents} incidents in ${st.month}`;
  const o = st.overall;
  const pct = (x) => (x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)} %`);
  const kpi = (id, v, l) => h("div", { class: "kpi card", id }, h("div", { class: "v" }, v), h("div", { class: "l" }, l));
  $("kpis").replaceChildren(
    kpi("k-closure", pct(o.closure_rate), `closure rate (${o.closed} of ${o.incidents})`),
    kpi("k-handling", o.avg_handling_h === null ? "—" : o.avg_handling_h < 1 ? `${Math.round(o.avg_handling_h * 60)} min`
      : `${o.avg_handling_h} h`, "average handling time"),
    kpi("k-overdue", `${o.overdue}`, `overdue (${o.open_overdue} still open)`),
    kpi("k-satisfaction", o.satisfaction === null ? "—" : pct(o.satisfaction), `satisfaction (${o.ratings} ratings)`),
    kpi("k-index", `${o.index}`, "grid-governance index"));
  const days = Object.entries(st.daily);
  if (days.length < 8) barChart($("c-daily"), days.map(([d, n]) => [d.slice(5), n, ""]));
  else lineChart($("c-daily"), days);
  barChart($("c-cat"), [...Object.entries(st.by_level).map(([k, v]) => [k, v, k]),
    ...Object.entries(st.by_category).map(([k, v]) => [k.replace(/_/g, " "), v, ""])]);
  barChart($("c-towns"), st.ranking.towns.slice(0, 12).map((r) => [r.name, r.index, ""]), 100, true);
  rankTable($("t-towns"), st.ranking.towns, "town");
  rankTable($("t-grids"), st.ranking.grids.slice(0, 30), "grid");
}
function rankTable(tbl, rows, what) {
  tbl.replaceChildren(h("tr", {}, ["#", what, "index", "incidents", "closure", "overdue", "satisfaction"].map((c) => h("th", {}, c))),
    ...rows.map((r) => h("tr", {}, h("td", { class: "n" }, r.rank), h("td", {}, `${r.name}`), h("td", { class: "n" }, r.index),
      h("td", { class: "n" }, r.incidents), h("td", { class: "n" }, `${Math.round(r.closure_rate * 100)} %`),
      h("td", { class: "n" }, r.overdue), h("td", { class: "n" }, r.satisfaction === null ? "—" : `${Math.round(r.satisfaction * 100)} %`))));
  if (!rows.length) tbl.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "no incidents this month")));
}
function barChart(svg, rows, max, horizontal) {
  const W = 600, H = horizontal ? 260 : 220;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const top = Math.max(max || 0, ...rows.map((r) => r[1]), 1);
  const kids = [];
  if (horizontal) {
    const bh = Math.min(22, (H - 10) / Math.max(rows.length, 1));
    rows.forEach(([label, v, cls], n) => {
      const y = 5 + n * bh, w = (W - 200) * v / top;
      kids.push(s("text", { x: 150, y: y + bh * 0.7, "text-anchor": "end" }, label),
        s("rect", { x: 158, y: y + 2, width: Math.max(1, w), height: bh - 5, class: `bar ${cls}` }),
        s("text", { x: 162 + w, y: y + bh * 0.7 }, v));
    });
  } else {
    const bw = (W - 40) / Math.max(rows.length, 1);
    rows.forEach(([label, v, cls], n) => {
      const x = 30 + n * bw, hh = (H - 50) * v / top;
      kids.push(s("rect", { x: x + 4, y: H - 30 - hh, width: Math.max(2, bw - 8), height: hh, class: `bar ${cls}` }),
        s("text", { x: x + bw / 2, y: H - 34 - hh, "text-anchor": "middle" }, v),
        s("text", { x: x + bw / 2, y: H - 14, "text-anchor": "middle" }, label.length > 12 ? label.slice(0, 11) + "…" : label));
    });
    kids.push(s("line", { x1: 26, x2: W - 6, y1: H - 30, y2: H - 30, class: "axis" }));
  }
  if (!rows.length) kids.push(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data"));
  svg.replaceChildren(...kids);
}
function lineChart(svg, points) {
  const W = 600, H = 220;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const top = Math.max(1, ...points.map((p) => p[1]));
  const n = points.length;
  const xy = points.map(([, v], i) => [40 + (n > 1 ? i * (W - 60) / (n - 1) : (W - 60) / 2), H - 30 - (H - 60) * v / top]);
  const kids = [s("line", { x1: 36, x2: W - 10, y1: H - 30, y2: H - 30, class: "axis" }),
    s("line", { x1: 36, x2: 36, y1: 20, y2: H - 30, class: "axis" }),
    s("text", { x: 30, y: 26, "text-anchor": "end" }, top), s("text", { x: 30, y: H - 30, "text-anchor": "end" }, 0)];
  if (n) {
    kids.push(s("polyline", { points: xy.map((p) => p.join(",")).join(" "), class: "line" }));
    xy.forEach(([x, y], i) => kids.push(s("circle", { cx: x, cy: y, r: 3, class: "bar" }, s("title", {}, `${points[i][0]}: ${points[i][1]}`))));
    kids.push(s("text", { x: 40, y: H - 12 }, points[0][0].slice(5)), s("text", { x: W - 20, y: H - 12, "text-anchor": "end" }, points[n - 1][0].slice(5)));
  } else kids.push(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data"));
  svg.replaceChildren(...kids);
}

// ------------------------------------------------------------------------------------------ wiring
function switchTab(name) {
  S.view = name;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  $("view-incidents").classList.toggle("hidden", name !== "incidents");
  $("view-stats").classList.toggle("hidden", name !== "stats");
  if (name === "stats") loadStats().catch((e) => { $("kpis").replaceChildren(h("p", { class: "error" }, e.message)); });
}
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", logout);
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => switchTab(b.dataset.tab));
  for (const id of ["f-area", "f-category", "f-status", "f-tier"]) $(id).addEventListener("change", () => { renderList(); drawIncidentsOnMap(); });
  for (const c of document.querySelectorAll("[data-level]")) c.addEventListener("change", () => { renderList(); drawIncidentsOnMap(); });
  $("s-month").addEventListener("change", () => loadStats());
  setInterval(() => { if (S.me && S.view === "incidents") renderList(); }, 30000);
  start().catch(() => showLogin());
});
