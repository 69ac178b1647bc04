// The mef3io web viewer: stacked EEG traces drawn on a canvas, read from this
// server's HTTP side (/api/...). Plain browser JavaScript, no libraries, no
// build step: everything it needs is served by the server itself.
//
// Times are uUTC (microseconds since 1970, UTC) as JavaScript numbers (exact
// below 2^53, i.e. until the year 2255). A view is [t0, t0 + dur).
"use strict";
(function () {

const $ = (id) => document.getElementById(id);
const WINDOWS_S = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400,
                   28800, 43200, 86400, 172800, 604800];
const GAINS_UV = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
const CACHE_ENTRIES = 48;       // signal answers kept (pages, overviews)...
const CACHE_BYTES = 48 * 2 ** 20;  // ...and at most this many bytes of samples
const LEFT = 96, RIGHT = 70, TOP = 22, BOTTOM = 26;   // plot margins, CSS px
const US = 1e6;

// ------------------------------------------------------------------ state
const S = {
  server: null, info: null, path: "", t0: 0, dur: 10 * US, channels: [], scaleUv: 100,
  order: [], chGain: {}, montage: "", filter: "", records: [], gaps: {}, envelopes: {},
  blockUs: 0, password: "", token: sessionStorage.getItem("mef3io-token") || "",
  clientId: sessionStorage.getItem("mef3io-client-id") || "",
};
if (!S.clientId) {
  S.clientId = "web-" + Math.random().toString(36).slice(2, 12);
  sessionStorage.setItem("mef3io-client-id", S.clientId);
}
const stats = { flips: [], zooms: [], draws: 0, fetches: 0, aborted: 0, cacheHits: 0,
                requests: [], lastDraw: null, errors: [] };
const cache = new Map();         // key -> {promise, data, controller, prefetch}
let pending = null;              // the action being measured: {kind, mark}
let drawToken = 0;

// ------------------------------------------------------------------ HTTP
class ApiError extends Error {
  constructor(status, problem, message) { super(message); this.status = status; this.problem = problem; }
}

function headers() {
  const h = { "X-Mef3io-Client-Id": S.clientId };
  if (S.token) h["Authorization"] = "Bearer " + S.token;
  return h;
}

async function api(url, options = {}, again = true) {
  const r = await fetch(url, Object.assign({ headers: headers() }, options));
  if (!r.ok) {
    let body = {};
    try { body = await r.json(); } catch (e) { body = { error: r.statusText }; }
    // The tab's session ended (SESSION_TTL_S while the tab sat idle, a restart):
    // open the recording again, with the password it was opened with, and retry once.
    const ended = body.problem === "not_open" || (body.problem === "password" && S.password);
    if (ended && again && S.info && !url.startsWith("api/open")) {
      stats.reopened = (stats.reopened || 0) + 1;
      await api("api/open", { method: "POST", body: JSON.stringify({ path: S.path, password: S.password }),
                              headers: Object.assign({ "Content-Type": "application/json" }, headers()) }, false);
      return api(url, options, false);
    }
    throw new ApiError(r.status, body.problem || "server", body.error || r.statusText);
  }
  return r;
}

async function withToken(fn) {
  for (;;) {
    try { return await fn(); } catch (e) {
      if (!(e instanceof ApiError) || e.problem !== "token") throw e;
      const tok = await askToken(S.token ? "That token was not accepted: " + e.message
                                         : "This server asks for an access token.");
      if (tok === null) throw e;
      S.token = tok;
      sessionStorage.setItem("mef3io-token", tok);
    }
  }
}

function parseFrame(buf) {
  const dv = new DataView(buf);
  const hl = dv.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, hl)));
  return { header, offset: 4 + hl };
}

function q(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => u.append(k, x)); else u.append(k, String(v));
  }
  return u.toString();
}

// ------------------------------------------------------------------ reading windows
// One request per group of channels served at one rate; the answer is split into
// one Float32Array per channel.
function rateGroups(names) {
  const groups = new Map();
  for (const n of names) {
    const i = S.info.channels.indexOf(n);
    const fs = S.info.served_rates[i];
    if (!groups.has(fs)) groups.set(fs, []);
    groups.get(fs).push(n);
  }
  return groups;
}

function signalKey(names, t0, t1, nPoints) {
  return [S.path, S.montage, S.filter, names.join(","), t0, t1, nPoints || 0].join("|");
}

function fetchSignal(names, t0, t1, nPoints, prefetch) {
  const key = signalKey(names, t0, t1, nPoints);
  let entry = cache.get(key);
  if (entry) {
    cache.delete(key); cache.set(key, entry);          // most recently used last
    if (!prefetch) entry.prefetch = false;
    return entry;
  }
  const controller = new AbortController();
  entry = { key, controller, prefetch, data: null, t0, t1 };
  const params = { path: S.path, ch: names, t0, t1, n_points: nPoints,
                   montage: S.montage, filter: S.filter };
  stats.fetches++;
  stats.requests.push({ t0, t1, n_points: nPoints || null, channels: names.length, prefetch });
  if (stats.requests.length > 200) stats.requests.shift();
  entry.promise = withToken(() => api("api/signal?" + q(params), { signal: controller.signal }))
    .then((r) => r.arrayBuffer())
    .then((buf) => {
      const { header, offset } = parseFrame(buf);
      const nch = header.channels.length, n = header.n;
      const all = new Float32Array(buf, offset, n * nch);
      const rows = {};
      header.channels.forEach((name, c) => {
        const row = new Float32Array(n);
        for (let i = 0, j = c; i < n; i++, j += nch) row[i] = all[j];
        rows[name] = row;
      });
      entry.data = { fs: header.fs, n, t0: header.start_uutc, t1: header.end_uutc, rows,
                     names: header.channels };
      entry.controller = null;
      return entry.data;
    })
    .catch((e) => { cache.delete(key); throw e; });
  cache.set(key, entry);
  while (cache.size > CACHE_ENTRIES || (cacheBytes() > CACHE_BYTES && cache.size > 3)) {
    const [oldKey, old] = cache.entries().next().value;
    if (old.controller) { old.controller.abort(); stats.aborted++; }
    cache.delete(oldKey);
  }
  return entry;
}

function cacheBytes() {
  let n = 0;
  for (const e of cache.values()) if (e.data) n += e.data.n * Object.keys(e.data.rows).length * 4;
  return n;
}

// A view's plan: how each group of channels is read for [t0, t1).
function plan(t0, t1, width) {
  const durS = (t1 - t0) / US;
  // The block index holds recorded channels only: a montage or filter is always read.
  if (S.blockUs > 0 && !S.montage && !S.filter && (t1 - t0) / S.blockUs >= width / 4) {
    return { mode: "envelope", parts: [] };
  }
  const parts = [];
  for (const [fs, names] of rateGroups(S.channels)) {
    const samples = durS * fs;
    const nPoints = samples > 2 * width ? Math.round(2 * width) : null;
    parts.push({ names, nPoints });
  }
  return { mode: parts.some((p) => p.nPoints) ? "points" : "samples", parts };
}

function viewEntries(t0, t1, width, prefetch) {
  const p = plan(t0, t1, width);
  if (p.mode === "envelope") return { p, entries: [] };
  return { p, entries: p.parts.map((part) => fetchSignal(part.names, t0, t1, part.nPoints,
                                                         prefetch)) };
}

async function ensureEnvelopes(names) {
  const missing = names.filter((n) => !(n in S.envelopes));
  if (!missing.length) return;
  const r = await withToken(() => api("api/envelope?" + q({ path: S.path, ch: missing })));
  const buf = await r.arrayBuffer();
  const { header, offset } = parseFrame(buf);
  let off = offset;
  const pad = (x) => x + ((8 - (x % 8)) % 8);
  for (const ch of header.channels) {
    const n = ch.n;
    const start = new Float64Array(buf, off, n); off += n * 8;
    const end = new Float64Array(buf, off, n); off += n * 8;
    const min = new Float32Array(buf, off, n); off = pad(off + n * 4);
    const max = new Float32Array(buf, off, n); off = pad(off + n * 4);
    S.envelopes[ch.name] = { start, end, min, max };
  }
}

// ------------------------------------------------------------------ the view
function plotWidth() {
  return Math.max(50, $("plot").clientWidth - LEFT - RIGHT);
}

function clampView() {
  const span = S.info.end_uutc - S.info.start_uutc;
  S.dur = Math.max(0.05 * US, Math.min(S.dur, Math.max(span, US)));
  S.t0 = Math.round(Math.min(Math.max(S.t0, S.info.start_uutc), S.info.end_uutc - S.dur));
  if (S.t0 < S.info.start_uutc) S.t0 = S.info.start_uutc;
}

// Show the current view: drawn at once when its data is cached, else when it arrives
// (superseded requests are aborted). Then the pages around it are prefetched.
function show() {
  clampView();
  saveUrl();
  syncControls();
  const token = ++drawToken;
  const t0 = S.t0, t1 = S.t0 + S.dur, width = plotWidth();
  const { p, entries } = viewEntries(t0, t1, width, false);
  // Abort what no longer serves this view or its neighbours.
  const keep = new Set(entries.map((e) => e.key));
  for (const near of neighbours(t0, t1, width)) near.forEach((k) => keep.add(k));
  for (const [k, e] of cache) {
    if (e.controller && !keep.has(k)) { e.controller.abort(); stats.aborted++; cache.delete(k); }
  }
  const ready = entries.every((e) => e.data);
  if (p.mode === "envelope") {
    const names = S.channels;
    if (names.every((n) => n in S.envelopes)) { draw(p, null); prefetchAround(); return; }
    status("reading the block index...");
    ensureEnvelopes(names).then(() => { if (token === drawToken) { draw(p, null); prefetchAround(); } },
                               fail);
    return;
  }
  if (ready) {
    stats.cacheHits++;
    draw(p, entries.map((e) => e.data));
    prefetchAround();
    return;
  }
  status("reading...");
  Promise.all(entries.map((e) => e.promise)).then((datas) => {
    if (token !== drawToken) return;
    draw(p, datas);
    prefetchAround();
  }, (e) => { if (e.name !== "AbortError" && token === drawToken) fail(e); });
}

function neighbours(t0, t1, width) {
  const d = t1 - t0, out = [];
  for (const s of [t0 + d, t0 - d]) {
    if (s < S.info.start_uutc - d || s >= S.info.end_uutc) continue;
    const p = plan(s, s + d, width);
    out.push(p.parts.map((part) => signalKey(part.names, s, s + d, part.nPoints)));
  }
  return out;
}

function prefetchAround() {
  const d = S.dur, width = plotWidth();
  for (const s of [S.t0 + d, S.t0 - d]) {
    if (s + d <= S.info.start_uutc || s >= S.info.end_uutc) continue;
    if (s < S.info.start_uutc || s + d > S.info.end_uutc) continue;
    viewEntries(s, s + d, width, true).entries.forEach((e) =>
      e.promise.catch(() => {}));
  }
}

// ------------------------------------------------------------------ drawing
const COLORS = ["#1b1f24", "#0b4f9c"];

function niceStep(span, target) {
  const raw = span / target;
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                 43200, 86400, 172800, 604800].map((s) => s * US);
  const small = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5].map((s) => s * US);
  for (const s of small.concat(steps)) if (s >= raw) return s;
  return steps[steps.length - 1];
}

function fmtTime(us, stepUs, withDate) {
  const d = new Date(us / 1000);
  const iso = d.toISOString();          // YYYY-MM-DDTHH:MM:SS.mmmZ
  let t = iso.slice(11, 19);
  if (stepUs < US) t = iso.slice(11, 23);
  return withDate ? iso.slice(0, 10) + " " + t : t;
}

function unitLabel(u) { return u === "uV" ? "\u00b5V" : (u || ""); }

function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return { ctx, w, h };
}

function draw(p, datas) {
  const canvas = $("traces");
  const { ctx, w, h } = fitCanvas(canvas);
  const t0 = S.t0, t1 = S.t0 + S.dur;
  const pw = w - LEFT - RIGHT, ph = h - TOP - BOTTOM;
  const xOf = (t) => LEFT + ((t - t0) / (t1 - t0)) * pw;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
  // With a montage the server names the traces (e.g. "Fp1-F3"), in its order.
  const names = S.montage && datas ? datas.flatMap((d) => d.names) : S.channels;
  const nch = names.length;
  const spacing = nch ? ph / nch : ph;
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "middle";

  // Time grid and axis (UTC wall clock).
  const step = niceStep(t1 - t0, Math.max(2, pw / 110));
  ctx.strokeStyle = "#eaeef2"; ctx.lineWidth = 1; ctx.fillStyle = "#57606a";
  ctx.textAlign = "center";
  const labels = [];
  let first = true;
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    const x = Math.round(xOf(t)) + 0.5;
    ctx.beginPath(); ctx.moveTo(x, TOP); ctx.lineTo(x, TOP + ph); ctx.stroke();
    const label = fmtTime(t, step, first);
    labels.push(label);
    ctx.fillText(label, x, h - BOTTOM / 2);
    first = false;
  }
  ctx.textAlign = "left";
  ctx.fillText("UTC", 6, h - BOTTOM / 2);

  // Gaps: each channel's band shaded where it has no data.
  ctx.fillStyle = "#f0f0f0";
  names.forEach((name, i) => {
    for (const [a, b] of S.gaps[name] || []) {
      if (b <= t0 || a >= t1) continue;
      const xa = Math.max(LEFT, xOf(a)), xb = Math.min(LEFT + pw, xOf(b));
      ctx.fillRect(xa, TOP + i * spacing, Math.max(1, xb - xa), spacing);
    }
  });
  // Outside the recording.
  ctx.fillStyle = "#f6f8fa";
  if (t0 < S.info.start_uutc) ctx.fillRect(LEFT, TOP, xOf(S.info.start_uutc) - LEFT, ph);
  if (t1 > S.info.end_uutc) ctx.fillRect(xOf(S.info.end_uutc), TOP, LEFT + pw - xOf(S.info.end_uutc), ph);

  // Records: spans shaded, markers as lines, text on top.
  const recs = S.records.filter((r) => r.time_uutc < t1 && r.time_uutc + (r.duration_us || 0) >= t0);
  for (const r of recs) {
    const x = xOf(r.time_uutc);
    if (r.duration_us > 0) {
      ctx.fillStyle = "rgba(255, 196, 0, 0.18)";
      ctx.fillRect(Math.max(LEFT, x), TOP, Math.min(LEFT + pw, xOf(r.time_uutc + r.duration_us)) - Math.max(LEFT, x), ph);
    }
  }

  // Traces.
  let drawnPoints = 0;
  const unit = nch ? S.info.units[S.info.channels.indexOf(S.channels[0])] : "";
  ctx.lineWidth = 1;
  ctx.save();
  ctx.beginPath(); ctx.rect(LEFT, TOP, pw, ph); ctx.clip();
  names.forEach((name, i) => {
    const yc = TOP + (i + 0.5) * spacing;
    const k = (spacing / S.scaleUv) * (S.chGain[name] || 1);
    ctx.strokeStyle = COLORS[i % 2]; ctx.fillStyle = COLORS[i % 2];
    if (p.mode === "envelope") {
      drawnPoints += drawEnvelope(ctx, S.envelopes[name], t0, t1, xOf, yc, k, pw);
      return;
    }
    let row = null, data = null;
    for (const d of datas) if (d.rows[name]) { row = d.rows[name]; data = d; break; }
    if (!row) return;
    let sum = 0, cnt = 0;
    for (let j = 0; j < row.length; j++) { const v = row[j]; if (v === v) { sum += v; cnt++; } }
    const mean = cnt ? sum / cnt : 0;
    const dt = (data.t1 - data.t0) / data.n;
    ctx.beginPath();
    let pen = false;
    for (let j = 0; j < row.length; j++) {
      const v = row[j];
      if (v !== v) { pen = false; continue; }
      const x = xOf(data.t0 + j * dt), y = yc - (v - mean) * k;
      if (pen) ctx.lineTo(x, y); else { ctx.moveTo(x, y); pen = true; }
    }
    ctx.stroke();
    drawnPoints += cnt;
  });
  ctx.restore();

  // Record markers and text (over the traces).
  ctx.strokeStyle = "#bf8700"; ctx.fillStyle = "#7d4e00"; ctx.setLineDash([4, 3]);
  ctx.textAlign = "left"; ctx.textBaseline = "middle";
  for (const r of recs) {
    if (r.time_uutc < t0) continue;
    const x = Math.round(xOf(r.time_uutc)) + 0.5;
    ctx.beginPath(); ctx.moveTo(x, TOP); ctx.lineTo(x, TOP + ph); ctx.stroke();
    ctx.fillText(recordText(r), x + 3, TOP / 2);
  }
  ctx.setLineDash([]);

  // Channel labels.
  ctx.textAlign = "right"; ctx.fillStyle = "#1b1f24";
  const every = Math.max(1, Math.ceil(14 / Math.max(spacing, 1)));
  names.forEach((name, i) => {
    if (i % every) return;
    const g = S.chGain[name] && S.chGain[name] !== 1 ? ` \u00d7${S.chGain[name]}` : "";
    ctx.fillText(name + g, LEFT - 8, TOP + (i + 0.5) * spacing);
  });

  // Amplitude scale bar: one channel spacing = S.scaleUv.
  const bx = LEFT + pw + 16, by = TOP + ph - 8;
  const bh = Math.min(spacing, ph - 16);
  const barUv = S.scaleUv * (bh / spacing);
  ctx.strokeStyle = "#1b1f24"; ctx.lineWidth = 2;
  ctx.beginPath(); ctx.moveTo(bx, by); ctx.lineTo(bx, by - bh); ctx.stroke();
  ctx.lineWidth = 1; ctx.textAlign = "left";
  ctx.fillText(`${+barUv.toPrecision(3)}`, bx + 5, by - bh / 2 - 7);
  ctx.fillText(unitLabel(unit), bx + 5, by - bh / 2 + 7);

  stats.draws++;
  stats.lastDraw = { mode: p.mode, t0, t1, channels: names.length, names: names.slice(),
                     points: drawnPoints,
                     labels, scaleUv: S.scaleUv, records: recs.length, width: pw };
  drawOverview();
  status(p.mode === "envelope" ? "block envelope" : (p.mode === "points" ? "reduced" : ""));
  finishMeasure();
}

// Per-MEF-block minima and maxima binned into pixel columns, drawn as one vertical
// line per column (one path per channel). Returns the blocks drawn.
function drawEnvelope(ctx, env, t0, t1, xOf, yc, k, pw) {
  if (!env) return 0;
  const cols = Math.ceil(pw);
  const lo = new Float32Array(cols).fill(Infinity), hi = new Float32Array(cols).fill(-Infinity);
  let sum = 0, cnt = 0;
  const x0 = xOf(t0);
  const scale = pw / (t1 - t0);
  let b = 0;
  const n = env.start.length;
  while (b < n && env.end[b] <= t0) b++;
  for (; b < n && env.start[b] < t1; b++) {
    const mn = env.min[b], mx = env.max[b];
    if (mn !== mn || mx !== mx) continue;
    sum += (mn + mx) / 2; cnt++;
    const ca = Math.max(0, Math.floor((env.start[b] - t0) * scale));
    const cb = Math.min(cols - 1, Math.floor((env.end[b] - t0) * scale));
    for (let c = ca; c <= cb; c++) { if (mn < lo[c]) lo[c] = mn; if (mx > hi[c]) hi[c] = mx; }
  }
  const mean = cnt ? sum / cnt : 0;
  ctx.beginPath();
  for (let c = 0; c < cols; c++) {
    if (lo[c] === Infinity) continue;
    const ya = yc - (hi[c] - mean) * k, yb = yc - (lo[c] - mean) * k;
    ctx.moveTo(x0 + c + 0.5, ya - 0.5);
    ctx.lineTo(x0 + c + 0.5, Math.max(yb + 0.5, ya + 0.5));
  }
  ctx.stroke();
  return cnt;
}

function recordText(r) {
  if (r.locked) return `${r.type} (locked)`;
  return r.text ? `${r.text}` : r.type;
}

// The overview strip: the whole recording (envelopes of the first four channels shown,
// gaps, records), drawn once into an offscreen canvas, then the current window on top.
let overviewCache = { key: "", canvas: null };

function drawOverview() {
  const canvas = $("overview");
  const { ctx, w, h } = fitCanvas(canvas);
  const a = S.info.start_uutc, b = S.info.end_uutc;
  const pw = w - LEFT - RIGHT;
  const xOf = (t) => LEFT + ((t - a) / (b - a)) * pw;
  const shown = S.channels.slice(0, 4).filter((n) => S.envelopes[n]);
  const key = [S.path, w, h, shown.join(","), S.records.length, canvas.width].join("|");
  if (overviewCache.key !== key) {
    const off = document.createElement("canvas");
    off.width = canvas.width; off.height = canvas.height;
    const o = off.getContext("2d");
    o.setTransform(canvas.width / w, 0, 0, canvas.height / h, 0, 0);
    o.fillStyle = "#fafbfc"; o.fillRect(0, 0, w, h);
    o.strokeStyle = "#8c959f"; o.lineWidth = 1;
    shown.forEach((name, i) => {
      const band = (h - 12) / Math.max(1, shown.length);
      const env = S.envelopes[name];
      let lo = Infinity, hi = -Infinity;
      for (let j = 0; j < env.min.length; j++) {
        if (env.min[j] < lo) lo = env.min[j];
        if (env.max[j] > hi) hi = env.max[j];
      }
      const k = hi > lo ? (band * 0.9) / (hi - lo) : 0;
      drawEnvelope(o, env, a, b, xOf, 6 + (i + 0.5) * band, k, pw);
    });
    o.fillStyle = "rgba(200, 200, 200, 0.6)";
    for (const [ga, gb] of S.gaps[S.channels[0]] || []) o.fillRect(xOf(ga), 0, Math.max(1, xOf(gb) - xOf(ga)), h);
    o.fillStyle = "#bf8700";
    for (const r of S.records) o.fillRect(Math.round(xOf(r.time_uutc)), 0, 1, 6);
    o.fillStyle = "#57606a"; o.font = "11px system-ui, sans-serif"; o.textBaseline = "middle";
    o.textAlign = "right"; o.fillText("whole", LEFT - 8, h / 2 - 7);
    o.fillText("recording", LEFT - 8, h / 2 + 7);
    overviewCache = { key, canvas: off };
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.drawImage(overviewCache.canvas, 0, 0);
  ctx.setTransform(canvas.width / w, 0, 0, canvas.height / h, 0, 0);
  ctx.strokeStyle = "#0969da"; ctx.lineWidth = 2; ctx.fillStyle = "rgba(9, 105, 218, 0.15)";
  const xa = xOf(S.t0), xb = Math.max(xa + 2, xOf(S.t0 + S.dur));
  ctx.fillRect(xa, 1, xb - xa, h - 2); ctx.strokeRect(xa, 1, xb - xa, h - 2);
}

// ------------------------------------------------------------------ measuring
function startMeasure(kind) {
  const mark = `${kind}-${performance.now()}`;
  performance.mark(mark);
  pending = { kind, mark };
}

function finishMeasure() {
  if (!pending) return;
  const { kind, mark } = pending;
  pending = null;
  const m = performance.measure(kind, mark);
  (kind === "flip" ? stats.flips : stats.zooms).push(m.duration);
  if (stats.flips.length > 2000) stats.flips.shift();
  performance.clearMarks(mark);
  performance.clearMeasures(kind);
}

// ------------------------------------------------------------------ actions
function page(dir) { startMeasure("flip"); S.t0 += dir * S.dur; show(); }
function scroll(frac) { startMeasure("flip"); S.t0 += Math.round(frac * S.dur); show(); }
function setDuration(us) {
  startMeasure("zoom");
  const center = S.t0 + S.dur / 2;
  S.dur = us; S.t0 = Math.round(center - us / 2); show();
}
function zoom(dir) {
  const span = S.info.end_uutc - S.info.start_uutc;
  const list = WINDOWS_S.map((s) => s * US).filter((d) => d < span).concat([span]);
  let i = list.findIndex((d) => d >= S.dur - 1);
  if (i < 0) i = list.length - 1;
  if (list[i] > S.dur + 1 && dir > 0) i--;
  i = Math.max(0, Math.min(list.length - 1, i + (dir > 0 ? 1 : -1)));
  setDuration(list[i]);
}
function gain(dir) {
  let i = GAINS_UV.findIndex((g) => g >= S.scaleUv);
  if (i < 0) i = GAINS_UV.length - 1;
  i = Math.max(0, Math.min(GAINS_UV.length - 1, i - dir));   // more gain: fewer uV per spacing
  S.scaleUv = GAINS_UV[i];
  startMeasure("gain"); show();
}
function channelGain(name, factor) {
  const g = (S.chGain[name] || 1) * factor;
  S.chGain[name] = Math.max(1 / 64, Math.min(64, g));
  if (Math.abs(S.chGain[name] - 1) < 1e-9) delete S.chGain[name];
  renderChannelList(); show();
}
function goTo(t) { S.t0 = Math.round(t - S.dur / 2); startMeasure("jump"); show(); }

function status(text) { $("status").textContent = text; }
function banner(text) {
  const b = $("banner");
  b.textContent = text || ""; b.hidden = !text;
}
function fail(e) {
  stats.errors.push(String(e.message || e));
  banner(e.message || String(e));
  status("");
}

// ------------------------------------------------------------------ controls
function syncControls() {
  const sel = $("sel-window");
  const span = S.info.end_uutc - S.info.start_uutc;
  const opts = WINDOWS_S.filter((s) => s * US < span).map((s) => [s * US, label(s)]);
  opts.push([span, "whole"]);
  const want = opts.map((o) => o[0]).join(",");
  if (sel.dataset.opts !== want) {
    sel.innerHTML = "";
    for (const [v, t] of opts) { const o = document.createElement("option"); o.value = v; o.textContent = t; sel.appendChild(o); }
    sel.dataset.opts = want;
  }
  const match = opts.find((o) => Math.abs(o[0] - S.dur) < 1);
  if (!match) {
    const o = document.createElement("option"); o.value = S.dur; o.textContent = label(S.dur / US);
    sel.appendChild(o); sel.dataset.opts = "";
  }
  sel.value = String(match ? match[0] : S.dur);
  const unit = S.channels.length ? S.info.units[S.info.channels.indexOf(S.channels[0])] : "";
  $("scale-text").textContent = `${S.scaleUv} ${unitLabel(unit)}`;
}
function label(s) {
  if (s < 60) return `${+s.toPrecision(3)} s`;
  if (s < 3600) return `${+(s / 60).toPrecision(3)} min`;
  if (s < 86400) return `${+(s / 3600).toPrecision(3)} h`;
  return `${+(s / 86400).toPrecision(3)} d`;
}

function renderChannelList() {
  const ul = $("channel-list");
  ul.innerHTML = "";
  S.order.forEach((name) => {
    const li = document.createElement("li");
    const cb = document.createElement("input");
    cb.type = "checkbox"; cb.checked = S.channels.includes(name); cb.dataset.channel = name;
    cb.addEventListener("change", () => {
      const set = new Set(Array.from(ul.querySelectorAll("input:checked")).map((x) => x.dataset.channel));
      S.channels = S.order.filter((n) => set.has(n));
      refreshChannelData().then(show, fail);
    });
    const span = document.createElement("span"); span.textContent = name;
    const g = document.createElement("span"); g.className = "cg";
    g.textContent = "\u00d7" + +(S.chGain[name] || 1).toPrecision(3);
    const down = document.createElement("button"); down.textContent = "\u2212"; down.title = "less gain for " + name;
    down.addEventListener("click", () => channelGain(name, 0.5));
    const up = document.createElement("button"); up.textContent = "+"; up.title = "more gain for " + name;
    up.addEventListener("click", () => channelGain(name, 2));
    li.append(cb, span, g, down, up);
    ul.appendChild(li);
  });
}

function renderRecordList() {
  const ul = $("record-list");
  ul.innerHTML = "";
  for (const r of S.records.slice(0, 2000)) {
    const li = document.createElement("li");
    const when = document.createElement("span"); when.className = "when";
    when.textContent = fmtTime(r.time_uutc, US, false);
    li.append(when, document.createTextNode(recordText(r) + (r.channel ? ` (${r.channel})` : "")));
    li.addEventListener("click", () => goTo(r.time_uutc + (r.duration_us || 0) / 2));
    ul.appendChild(li);
  }
}

function renderOffers() {
  for (const [kind, grp, sel] of [["montages", "grp-montage", "sel-montage"],
                                  ["filters", "grp-filter", "sel-filter"]]) {
    const offers = (S.server && S.server[kind]) || [];
    $(grp).hidden = offers.length === 0;
    const s = $(sel); s.innerHTML = "";
    const none = document.createElement("option"); none.value = "";
    none.textContent = kind === "montages" ? "referential" : "none";
    s.appendChild(none);
    for (const o of offers) {
      const opt = document.createElement("option");
      opt.value = typeof o === "string" ? o : o.name;
      opt.textContent = typeof o === "string" ? o : (o.label || o.name);
      s.appendChild(opt);
    }
  }
  $("sel-montage").value = S.montage; $("sel-filter").value = S.filter;
}

// ------------------------------------------------------------------ URL state
function saveUrl() {
  const h = new URLSearchParams();
  h.set("path", S.path);
  h.set("t", String(S.t0));
  h.set("d", String(S.dur / US));
  if (S.channels.length !== S.info.channels.length) h.set("ch", S.channels.join(","));
  h.set("g", String(S.scaleUv));
  const cg = Object.entries(S.chGain).map(([n, g]) => `${n}:${g}`).join(",");
  if (cg) h.set("cg", cg);
  if (S.montage) h.set("montage", S.montage);
  if (S.filter) h.set("filter", S.filter);
  const next = "#" + h.toString();
  if (location.hash !== next) history.replaceState(null, "", next);
}

function readUrl() {
  const h = new URLSearchParams(location.hash.slice(1));
  return { path: h.get("path") || "", t: h.has("t") ? Number(h.get("t")) : null,
           d: h.has("d") ? Number(h.get("d")) : null, ch: h.get("ch"), g: h.get("g"),
           cg: h.get("cg"), montage: h.get("montage") || "", filter: h.get("filter") || "" };
}

// ------------------------------------------------------------------ opening
async function openRecording(path, view) {
  banner("");
  status("opening...");
  let info;
  for (;;) {
    try {
      info = await withToken(async () => (await api("api/open", {
        method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, headers()),
        body: JSON.stringify({ path, password: S.password }) })).json());
      break;
    } catch (e) {
      if (e instanceof ApiError && e.problem === "password") {
        const pw = await askPassword(S.password ? "Wrong password: " + e.message : e.message);
        if (pw === null) { S.password = ""; throw e; }
        S.password = pw;
        continue;
      }
      throw e;
    }
  }
  cache.forEach((e) => e.controller && e.controller.abort());
  cache.clear();
  S.info = info; S.path = path; S.envelopes = {}; S.gaps = {}; S.records = []; S.blockUs = 0;
  view = view || {};
  // Shown in natural order (Ch2 before Ch10); the URL's order when it gives one.
  S.order = info.channels.slice().sort(new Intl.Collator(undefined, { numeric: true }).compare);
  const known = new Set(info.channels);
  S.channels = view.ch ? view.ch.split(",").filter((n) => known.has(n)) : S.order.slice(0, 64);
  if (!S.channels.length) S.channels = S.order.slice(0, 64);
  S.scaleUv = view.g ? Number(view.g) || 100 : 100;
  S.chGain = {};
  if (view.cg) for (const part of view.cg.split(",")) {
    const i = part.lastIndexOf(":"); if (i > 0) S.chGain[part.slice(0, i)] = Number(part.slice(i + 1)) || 1;
  }
  S.montage = view.montage || ""; S.filter = view.filter || "";
  S.dur = (view.d || 10) * US;
  S.t0 = view.t !== null && view.t !== undefined && !Number.isNaN(view.t) ? view.t : info.start_uutc;
  $("rec-name").textContent = path.split("/").filter(Boolean).pop() || path;
  $("rec-name").title = path;
  renderChannelList(); renderOffers();
  const [recs, segs] = await Promise.all([
    withToken(async () => (await api("api/records?" + q({ path }))).json()),
    withToken(async () => (await api("api/segments?" + q({ path }))).json()),
    refreshChannelData(),
  ]);
  S.records = recs.records;
  for (const [name, c] of Object.entries(segs.channels)) {
    const gaps = [];
    const runs = c.runs;
    if (runs.length && runs[0][0] > info.start_uutc) gaps.push([info.start_uutc, runs[0][0]]);
    for (let i = 1; i < runs.length; i++) if (runs[i][0] > runs[i - 1][1]) gaps.push([runs[i - 1][1], runs[i][0]]);
    S.gaps[name] = gaps;
  }
  renderRecordList();
  show();
}

// The whole-recording envelopes of the overview's channels (and the block length).
async function refreshChannelData() {
  await ensureEnvelopes(S.channels.slice(0, 4));
  const env = S.envelopes[S.channels[0]];
  if (env && env.start.length) {
    const lens = [];
    for (let i = 0; i < env.start.length; i += Math.max(1, Math.floor(env.start.length / 64)))
      lens.push(env.end[i] - env.start[i]);
    lens.sort((a, b) => a - b);
    S.blockUs = lens[Math.floor(lens.length / 2)];
  }
}

// ------------------------------------------------------------------ dialogs
function ask(dlgId, inputId, textId, text) {
  return new Promise((resolve) => {
    const dlg = $(dlgId), inp = $(inputId);
    if (textId) $(textId).textContent = text;
    inp.value = "";
    dlg.onclose = () => resolve(dlg.returnValue === "cancel" || dlg.returnValue === "" ? null : inp.value);
    dlg.returnValue = "";
    dlg.showModal();
    inp.focus();
  });
}
function askPassword(text) { return ask("dlg-password", "inp-password", "password-text", text); }
function askToken(text) { return ask("dlg-token", "inp-token", "token-text", text); }

async function showPicker() {
  const dlg = $("dlg-open"), ul = $("recording-list");
  ul.innerHTML = "";
  $("inp-path").value = S.path || "";
  dlg.returnValue = "";
  dlg.showModal();
  if (S.server && S.server.listing) {
    try {
      const r = await withToken(async () => (await api("api/recordings")).json());
      for (const rec of r.recordings) {
        const li = document.createElement("li");
        li.dataset.path = rec.path;
        const meta = document.createElement("span"); meta.className = "meta";
        meta.textContent = rec.error ? rec.error :
          `${rec.channels} ch, ${label((rec.end_uutc - rec.start_uutc) / US)}${rec.encrypted ? ", encrypted" : ""}`;
        li.append(document.createTextNode(rec.path), meta);
        li.addEventListener("click", () => { $("inp-path").value = rec.path; dlg.close("open"); });
        ul.appendChild(li);
      }
    } catch (e) { fail(e); }
  }
}

$("dlg-open").addEventListener("close", () => {
  const path = $("inp-path").value.trim();
  if ($("dlg-open").returnValue === "open" && path) {
    S.password = "";
    openRecording(path, {}).catch(fail);
  }
});

// ------------------------------------------------------------------ wiring
function wire() {
  $("btn-open").addEventListener("click", showPicker);
  $("btn-prev").addEventListener("click", () => page(-1));
  $("btn-next").addEventListener("click", () => page(1));
  $("btn-start").addEventListener("click", () => { startMeasure("flip"); S.t0 = S.info.start_uutc; show(); });
  $("btn-end").addEventListener("click", () => { startMeasure("flip"); S.t0 = S.info.end_uutc - S.dur; show(); });
  $("btn-zoom-in").addEventListener("click", () => zoom(-1));
  $("btn-zoom-out").addEventListener("click", () => zoom(1));
  $("btn-gain-up").addEventListener("click", () => gain(1));
  $("btn-gain-down").addEventListener("click", () => gain(-1));
  $("sel-window").addEventListener("change", (e) => setDuration(Number(e.target.value)));
  $("sel-montage").addEventListener("change", (e) => { S.montage = e.target.value; show(); });
  $("sel-filter").addEventListener("change", (e) => { S.filter = e.target.value; show(); });
  $("btn-channels").addEventListener("click", () => { $("side").hidden = !$("side").hidden; show(); });
  $("btn-all").addEventListener("click", () => { S.channels = S.order.slice(0, 256); renderChannelList(); refreshChannelData().then(show, fail); });
  $("btn-none").addEventListener("click", () => { S.channels = S.order.slice(0, 1); renderChannelList(); refreshChannelData().then(show, fail); });
  $("overview").addEventListener("click", (e) => {
    if (!S.info) return;
    const r = $("overview").getBoundingClientRect();
    const frac = (e.clientX - r.left - LEFT) / (r.width - LEFT - RIGHT);
    goTo(S.info.start_uutc + Math.max(0, Math.min(1, frac)) * (S.info.end_uutc - S.info.start_uutc));
  });
  document.addEventListener("keydown", (e) => {
    if (!S.info || e.target.tagName === "INPUT" || document.querySelector("dialog[open]")) return;
    const keys = {
      ArrowRight: () => (e.shiftKey ? scroll(0.1) : page(1)), PageDown: () => page(1),
      ArrowLeft: () => (e.shiftKey ? scroll(-0.1) : page(-1)), PageUp: () => page(-1),
      "+": () => zoom(-1), "=": () => zoom(-1), "-": () => zoom(1),
      ArrowUp: () => gain(1), ArrowDown: () => gain(-1),
      Home: () => $("btn-start").click(), End: () => $("btn-end").click(),
      o: showPicker, c: () => $("btn-channels").click(),
    };
    const f = keys[e.key];
    if (f) { e.preventDefault(); f(); }
  });
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => S.info && show(), 100);
  });
}

async function start() {
  wire();
  try {
    S.server = await (await fetch("api/server")).json();
    const view = readUrl();
    if (view.path) await openRecording(view.path, view);
    else await showPicker();
  } catch (e) { fail(e); }
}

// For tests and benchmarks: the page's state and its own measurements.
window.mefViewer = {
  state: S, stats, cache,
  idle: () => Promise.all(Array.from(cache.values()).map((e) => e.promise.catch(() => null))),
  page, zoom, gain, setDuration, goTo, channelGain,
};

start();
})();
