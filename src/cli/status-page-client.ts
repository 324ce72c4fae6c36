// The status page's inline style and script (status-page.ts serves them under a CSP nonce).
// Plain browser JavaScript kept as text: no framework, no build step, nothing fetched but /stats.
// Everything from /stats reaches the page through textContent and setAttribute, never as HTML.

export const PAGE_STYLE = `
:root{color-scheme:light dark;--fg:#1b1f24;--muted:#59636e;--bg:#fff;--card:#f6f8fa;--line:#d0d7de;--accent:#0969da;--vol:#8c959f55;--good:#1a7f37;--bad:#cf222e}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;--card:#161b22;--line:#30363d;--accent:#4493f8;--vol:#6e768166;--good:#3fb950;--bad:#f85149}}
*{box-sizing:border-box}
[hidden]{display:none!important}
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:12px;max-width:980px;color:var(--fg);background:var(--bg);overflow-wrap:anywhere}
header{display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline}
h1{font-size:1.35em;margin:0}
h2{font-size:1.05em;margin:18px 0 6px}
p{margin:6px 0}
a{color:var(--accent)}
.muted{color:var(--muted)}
.ok{color:var(--good)}
.bad{color:var(--bad)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:8px;margin:12px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 10px;min-width:0}
.card .v{font-size:1.5em;font-variant-numeric:tabular-nums}
.card .l{color:var(--muted);font-size:.85em}
table{border-collapse:collapse;width:100%;max-width:640px}
th,td{padding:2px 8px;border-bottom:1px solid var(--line)}
th{text-align:left;font-weight:500}
td{text-align:right;font-variant-numeric:tabular-nums}
details{margin:10px 0}
summary{cursor:pointer}
svg{display:block;width:100%;height:140px;background:var(--card);border:1px solid var(--line);border-radius:6px}
svg .grid{stroke:var(--line);stroke-width:1;vector-effect:non-scaling-stroke;fill:none}
svg .volume{fill:var(--vol);stroke:none}
svg .rate{stroke:var(--accent);stroke-width:2;vector-effect:non-scaling-stroke;fill:none;stroke-linejoin:round}
.axis{display:flex;justify-content:space-between;gap:8px;font-size:.8em}
.axis span:first-child,.axis span:last-child{white-space:nowrap}
.axis span:nth-child(2){text-align:center}
`;

export const CLIENT_SCRIPT = `
(() => {
  "use strict";
  const WINDOW_MS = 600000, BIN_MS = 10000, BINS = WINDOW_MS / BIN_MS, POLL_MS = 1000;
  // One sample per poll: handshake totals and the look-up latency buckets (cumulative counts).
  const samples = [];
  let failures = 0;
  const $ = (id) => document.getElementById(id);
  const text = (id, s) => { const e = $(id); if (e && e.textContent !== s) e.textContent = s; };
  const fmt = (n) => (typeof n === "number" && isFinite(n) ? n.toLocaleString("en-US") : "–");
  const pct = (a, b) => (b > 0 ? ((100 * a) / b).toFixed(1) + " %" : "–");
  const get = (o, path) => {
    for (const p of path.split("/")) {
      if (o === null || typeof o !== "object") return undefined;
      o = o[p];
    }
    return o;
  };
  const sum = (h) => {
    let full = 0, resumed = 0;
    for (const v of Object.values(h || {})) { full += v.full || 0; resumed += v.resumed || 0; }
    return { full, resumed };
  };
  // A total that went down (a worker restarted or missed a poll) starts a new baseline.
  const delta = (a, b) => (b >= a ? b - a : 0);

  function scope(d) {
    const t = d.tree;
    if (d.scope === "tree" && t) {
      const missing = t.expected > t.workers ? " (" + (t.expected - t.workers) + " did not answer)" : "";
      return "All " + t.workers + " workers" + missing + "; this answer from worker " + d.worker + ".";
    }
    if (d.scope === "worker") return "Worker " + d.worker + " only: the primary did not answer, so these figures are this worker's.";
    return "One process.";
  }

  function duration(s) {
    if (typeof s !== "number") return "–";
    if (s < 120) return Math.floor(s) + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    if (s < 172800) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function latency(now) {
    const recent = samples.filter((s) => s.lat && s.t >= now - 60000);
    if (recent.length === 0) return undefined;
    const a = recent[0].lat, b = recent[recent.length - 1].lat;
    let counts = b.counts.map((c, i) => c - (a.counts[i] || 0));
    let n = b.count - a.count, total = b.sum - a.sum, lifetime = false;
    if (recent.length === 1 || n < 0 || counts.some((c) => c < 0)) {
      counts = b.counts; n = b.count; total = b.sum; lifetime = true;
    }
    if (n <= 0) return { n: 0, all: b.count, allMean: b.count ? (1000 * b.sum) / b.count : 0 };
    let acc = 0, p99 = Infinity;
    for (let i = 0; i < counts.length; i++) {
      acc += counts[i];
      if (acc >= 0.99 * n) { p99 = i < b.buckets.length ? b.buckets[i] * 1000 : Infinity; break; }
    }
    return { n, mean: (1000 * total) / n, p99, lifetime };
  }

  function chart(now) {
    const bins = [];
    for (let i = 0; i < BINS; i++) bins.push({ full: 0, resumed: 0 });
    const start = now - WINDOW_MS;
    for (let i = 1; i < samples.length; i++) {
      const s = samples[i], p = samples[i - 1];
      const k = Math.floor((s.t - start) / BIN_MS);
      if (k < 0 || k >= BINS) continue;
      bins[k].full += delta(p.full, s.full);
      bins[k].resumed += delta(p.resumed, s.resumed);
    }
    const w = 600 / BINS;
    let max = 0;
    for (const b of bins) max = Math.max(max, b.full + b.resumed);
    let line = "", vol = "", run = 0;
    bins.forEach((b, i) => {
      const n = b.full + b.resumed;
      if (n === 0) { if (run === 1) line += "h" + (w / 2).toFixed(1); run = 0; return; }
      const x = ((i + 0.5) * w).toFixed(1), y = (5 + 110 * (1 - b.resumed / n)).toFixed(1);
      line += (run === 0 ? " M" : "L") + x + " " + y;
      run++;
      const h = Math.max(1, (40 * n) / max);
      vol += "M" + (i * w + 1).toFixed(1) + " 115v" + (-h).toFixed(1) + "h" + (w - 2).toFixed(1) + "v" + h.toFixed(1) + "Z";
    });
    if (run === 1) line += "h" + (w / 2).toFixed(1);
    $("rate-line").setAttribute("d", line.trim());
    $("volume").setAttribute("d", vol);
  }

  function handshakeRows(h) {
    const body = $("hs");
    const rows = Object.entries(h || {}).map(([v, c]) => [v, fmt(c.full), fmt(c.resumed), pct(c.resumed, c.full + c.resumed)]);
    if (body.rows.length !== rows.length) {
      body.replaceChildren(...rows.map((r) => {
        const tr = document.createElement("tr");
        r.forEach((_, i) => tr.appendChild(document.createElement(i === 0 ? "th" : "td")));
        return tr;
      }));
    }
    rows.forEach((r, i) => r.forEach((cell, j) => {
      const c = body.rows[i].cells[j];
      if (c.textContent !== cell) c.textContent = cell;
    }));
  }

  function render(d) {
    const src = d.tree || d;
    const now = Date.now();
    const hs = sum(src.handshakes);
    const lat = src.store && src.store.latency ? src.store.latency : null;
    samples.push({ t: now, full: hs.full, resumed: hs.resumed, lat });
    while (samples.length > 2 && samples[0].t < now - WINDOW_MS - BIN_MS) samples.shift();

    text("scope", scope(d));
    text("uptime", duration(d.uptime));
    const last = samples[samples.length - 1], prev = samples[samples.length - 2];
    if (prev) {
      const n = delta(prev.full, last.full) + delta(prev.resumed, last.resumed);
      text("c-rate", (n / Math.max(0.001, (last.t - prev.t) / 1000)).toFixed(1));
    }
    text("c-rate-sub", fmt(hs.full + hs.resumed) + " in all");
    let mf = 0, mr = 0;
    for (let i = 1; i < samples.length; i++) {
      if (samples[i].t < now - 60000) continue;
      mf += delta(samples[i - 1].full, samples[i].full);
      mr += delta(samples[i - 1].resumed, samples[i].resumed);
    }
    text("c-resumed", pct(mr, mf + mr));
    text("c-resumed-sub", fmt(mr) + " of " + fmt(mf + mr) + "; " + pct(hs.resumed, hs.full + hs.resumed) + " in all");
    text("c-hit", pct(src.hits, src.hits + src.misses));
    text("c-hit-sub", fmt(src.hits) + " hits, " + fmt(src.misses) + " misses, " + fmt(src.timeouts) + " expired");
    text("c-held", fmt(src.number));
    text("c-held-sub", (d.cacheSize ? "of " + fmt(d.cacheSize) + " (" + pct(src.number, d.cacheSize) + ")" : "no limit") + ", " + fmt(src.cacheFull) + " evicted when full");

    const store = src.store;
    $("card-store").hidden = !store;
    $("card-latency").hidden = !store;
    if (store) {
      const up = store.up !== 0;
      text("c-store", up ? "up" : "down");
      $("c-store").className = "v " + (up ? "ok" : "bad");
      text("c-store-sub", fmt(store.errors) + " errors, " + fmt(store.timeouts) + " timeouts, " + fmt(store.inFlight) + " in flight" + (d.store && d.store.status ? ", " + d.store.status : ""));
      const l = latency(now);
      if (!l) { text("c-lat", "–"); text("c-lat-sub", "no look-ups timed"); }
      else if (l.n === 0) {
        text("c-lat", "–");
        text("c-lat-sub", "none in the last minute" + (l.all ? "; " + fmt(l.all) + " since start, mean " + l.allMean.toFixed(2) + " ms" : ""));
      }
      else {
        text("c-lat", l.mean.toFixed(2) + " ms");
        text("c-lat-sub", "mean of " + fmt(l.n) + (l.lifetime ? " since start" : "") + "; p99 " + (isFinite(l.p99) ? "≤ " + l.p99 + " ms" : "> 1 s"));
      }
    }
    for (const el of document.querySelectorAll("[data-k]")) {
      const s = fmt(get(src, el.dataset.k));
      if (el.textContent !== s) el.textContent = s;
    }
    handshakeRows(src.handshakes);
    chart(now);
  }

  function live(ok, why) {
    const e = $("live");
    e.className = ok ? "ok" : "bad";
    e.textContent = ok ? "live · " + new Date().toLocaleTimeString() : "not reachable (" + why + "), retrying";
  }

  // Relative, so the page also works behind a proxy that serves it under a path prefix.
  async function poll() {
    try {
      const r = await fetch("stats", { cache: "no-store", headers: { accept: "application/json" } });
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
      failures = 0;
      live(true);
    } catch (err) {
      failures++;
      live(false, err && err.message ? err.message : "error");
    }
    setTimeout(poll, failures ? Math.min(10000, POLL_MS * 2 ** failures) : POLL_MS);
  }

  render(JSON.parse($("initial").textContent));
  live(true);
  setTimeout(poll, POLL_MS);
})();
`;
