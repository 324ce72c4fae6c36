// The status page `serve` answers on its own TLS port: GET / (HTML) and GET /stats (JSON).
// The page is live: its inline script (status-page-client.ts) polls /stats every second and redraws
// the counters and a chart of the resumption rate, with no reload, no framework and no external
// asset. A Content-Security-Policy with a per-response nonce allows only that script and style.
import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { CLIENT_SCRIPT, PAGE_STYLE } from "./status-page-client.js";

export type Info = () => Record<string, unknown>;

/** Handshakes completed, by protocol version ("TLSv1.3", "TLSv1.2", ...). */
export type HandshakeCounts = Record<string, { full: number; resumed: number }>;

/** The figures of a whole --workers process tree, summed in the primary (status-tree.ts). */
export interface TreeStats {
  /** Workers that answered, and how many there are meant to be. */
  workers: number;
  expected: number;
  handshakes: HandshakeCounts;
  [key: string]: unknown;
}

export interface StatusOptions {
  /** In a --workers worker: the tree's totals (undefined when the primary does not answer). */
  tree?: () => Promise<TreeStats | undefined>;
}

export function handleStatusRequest(
  req: IncomingMessage,
  res: ServerResponse,
  info: Info,
  options: StatusOptions = {},
): void {
  const path = (req.url ?? "/").split("?")[0];
  const socket = req.socket as TLSSocket;
  const connection = {
    resumed: socket.isSessionReused(),
    protocol: socket.getProtocol(),
    cipher: socket.getCipher()?.name ?? null,
  };
  if (path !== "/" && path !== "/stats") {
    send(res, 404, "text/plain; charset=utf-8", "not found\n");
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    send(res, 405, "text/plain; charset=utf-8", "method not allowed\n");
    return;
  }
  void collect(info, options).then(
    (data) => {
      if (path === "/stats") {
        send(res, 200, "application/json", `${JSON.stringify({ ...data, connection }, null, 2)}\n`);
      } else {
        const nonce = randomBytes(16).toString("base64");
        res.setHeader("Content-Security-Policy", csp(nonce));
        send(res, 200, "text/html; charset=utf-8", page(data, connection, nonce));
      }
    },
    () => send(res, 500, "text/plain; charset=utf-8", "status unavailable\n"),
  );
}

/**
 * This process's figures plus, in a worker, the tree's totals. `scope` says which the page shows:
 * "process" (no workers), "tree" (all workers, summed) or "worker" (the primary did not answer).
 */
async function collect(info: Info, options: StatusOptions): Promise<Record<string, unknown>> {
  const own = info();
  if (!options.tree) return { ...own, scope: "process" };
  const tree = await options.tree().catch(() => undefined);
  return tree ? { ...own, scope: "tree", tree } : { ...own, scope: "worker" };
}

/** Only the page's own nonce'd script and style, fetches to itself, no frames, forms or plugins. */
function csp(nonce: string): string {
  return [
    "default-src 'none'",
    `script-src 'nonce-${nonce}'`,
    `style-src 'nonce-${nonce}'`,
    "connect-src 'self'",
    // The empty data: favicon keeps the browser from asking for /favicon.ico (a 404 in its console).
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, {
    "Content-Type": type,
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
  });
  res.end(body);
}

const COUNTERS = [
  "number",
  "accept",
  "acceptGood",
  "acceptRenegotiate",
  "hits",
  "cbHits",
  "misses",
  "timeouts",
  "cacheFull",
  "connect",
  "connectGood",
  "connectRenegotiate",
  "rejected",
] as const;

const ADAPTER_COUNTERS = [
  "connections",
  "hellosRead",
  "pskOffered",
  "lookups",
  "lookupsSkipped",
  "lookupTimeouts",
  "lookupErrors",
  "ticketsConsumed",
  "ticketsRefused",
  "wrongAnswers",
  "hostMismatches",
  "storeErrors",
  "helloTimeouts",
  "pendingHellos",
] as const;

const STORE_COUNTERS = [
  "gets",
  "hits",
  "sets",
  "deletes",
  "takes",
  "errors",
  "timeouts",
  "dropped",
  "inFlight",
];

type Conn = { resumed: boolean; protocol: string | null; cipher: string | null };

/** Rows of `keys` read from `data` (under `prefix/`); the script keeps their data-k cells current. */
function rows(data: Record<string, unknown>, keys: readonly string[], prefix = ""): string {
  const from = (prefix ? data[prefix] : data) as Record<string, unknown> | undefined;
  return keys
    .map(
      (k) =>
        `<tr><th>${esc(k)}</th><td data-k="${esc(prefix ? `${prefix}/${k}` : k)}">${num(from?.[k])}</td></tr>`,
    )
    .join("\n");
}

function page(data: Record<string, unknown>, conn: Conn, nonce: string): string {
  // Counters come from the tree's totals when there are workers, else from this process.
  const src = (data.tree as Record<string, unknown> | undefined) ?? data;
  const handshakes = (src.handshakes ?? {}) as HandshakeCounts;
  const hsRows = Object.entries(handshakes)
    .map(
      ([v, c]) =>
        `<tr><th>${esc(v)}</th><td>${num(c.full)}</td><td>${num(c.resumed)}</td><td>${share(c.resumed, c.full + c.resumed)}</td></tr>`,
    )
    .join("\n");
  const store = data.store as Record<string, unknown> | undefined;
  // The first figures, for the script to start from without waiting a second. "<" is escaped so
  // nothing in them can end the element.
  const initial = JSON.stringify({ ...data, connection: conn }).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sesscache serve</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">${PAGE_STYLE}</style>
</head><body>
<header><h1>sesscache serve</h1><span id="live" class="muted">static view</span></header>
<p id="scope" class="muted">${esc(scopeText(data))}</p>
<p>This connection: <b>${conn.resumed ? "resumed" : "full handshake"}</b>, ${esc(conn.protocol)}, ${esc(conn.cipher)}.</p>
<section class="cards">
<div class="card"><div class="l">Handshakes/s</div><div class="v" id="c-rate">–</div><div class="l" id="c-rate-sub"></div></div>
<div class="card"><div class="l">Resumed, last minute</div><div class="v" id="c-resumed">–</div><div class="l" id="c-resumed-sub"></div></div>
<div class="card"><div class="l">Cache hit ratio</div><div class="v" id="c-hit">–</div><div class="l" id="c-hit-sub"></div></div>
<div class="card"><div class="l">Sessions held</div><div class="v" id="c-held">${num(src.number)}</div><div class="l" id="c-held-sub"></div></div>
<div class="card" id="card-store"${store ? "" : " hidden"}><div class="l">Store ${esc(store?.kind ?? "")}</div><div class="v" id="c-store">–</div><div class="l" id="c-store-sub"></div></div>
<div class="card" id="card-latency"${store ? "" : " hidden"}><div class="l">Store look-up, last minute</div><div class="v" id="c-lat">–</div><div class="l" id="c-lat-sub"></div></div>
</section>
<h2>Resumption rate, last 10 minutes</h2>
<svg id="chart" viewBox="0 0 600 120" preserveAspectRatio="none" role="img" aria-label="resumption rate over the last 10 minutes">
<path class="grid" d="M0 5H600M0 60H600M0 115H600"/>
<path id="volume" class="volume" d=""/>
<path id="rate-line" class="rate" d=""/>
</svg>
<div class="axis muted"><span>10 min ago</span><span>line: % resumed (0–100) · bars: handshakes</span><span>now</span></div>
<h2>Handshakes by TLS version</h2>
<table class="hs"><thead><tr><th>version</th><td>full</td><td>resumed</td><td>resumed %</td></tr></thead>
<tbody id="hs">
${hsRows}
</tbody></table>
<h2>Session cache</h2>
<p>mode ${esc(data.modeName)}, size ${esc(data.cacheSize)}, timeout ${esc(data.timeout)} s, tickets ${data.tickets ? "on" : "off"}, up <span id="uptime">${esc(data.uptime)} s</span>. <a href="stats">JSON</a></p>
<table>
${rows(src, COUNTERS)}
</table>
<details><summary>Adapter counters</summary><table>
${rows(src, ADAPTER_COUNTERS, "adapter")}
</table></details>
${store ? `<details><summary>Store counters (${esc(store.kind)}${store.target ? `, ${esc(store.target)}` : ""})</summary><table>\n${rows(src, STORE_COUNTERS, "store")}\n</table></details>` : ""}
<script id="initial" type="application/json">${initial}</script>
<script nonce="${nonce}">${CLIENT_SCRIPT}</script>
</body></html>
`;
}

/** Which process's figures the page shows; the script keeps it current. */
export function scopeText(data: Record<string, unknown>): string {
  const tree = data.tree as TreeStats | undefined;
  if (data.scope === "tree" && tree) {
    const missing = tree.expected > tree.workers ? ` (${tree.expected - tree.workers} did not answer)` : "";
    return `All ${tree.workers} workers${missing}; this answer from worker ${String(data.worker)}.`;
  }
  if (data.scope === "worker") {
    return `Worker ${String(data.worker)} only: the primary did not answer, so these figures are this worker's.`;
  }
  return "One process.";
}

function num(v: unknown): string {
  return typeof v === "number" ? esc(v.toLocaleString("en-US")) : "–";
}

function share(part: number, whole: number): string {
  return whole > 0 ? `${((100 * part) / whole).toFixed(1)} %` : "–";
}

export function esc(v: unknown): string {
  return String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
