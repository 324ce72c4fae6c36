// The status page `serve` answers on its own TLS port: GET / (HTML) and GET /stats (JSON).
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";

export type Info = () => Record<string, unknown>;

export function handleStatusRequest(req: IncomingMessage, res: ServerResponse, info: Info): void {
  const path = (req.url ?? "/").split("?")[0];
  const socket = req.socket as TLSSocket;
  const connection = {
    resumed: socket.isSessionReused(),
    protocol: socket.getProtocol(),
    cipher: socket.getCipher()?.name ?? null,
  };
  if (path !== "/" && path !== "/stats") {
    send(res, 404, "text/plain; charset=utf-8", "not found\n");
  } else if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    send(res, 405, "text/plain; charset=utf-8", "method not allowed\n");
  } else if (path === "/stats") {
    send(res, 200, "application/json", `${JSON.stringify({ ...info(), connection }, null, 2)}\n`);
  } else {
    send(res, 200, "text/html; charset=utf-8", page(info(), connection));
  }
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, {
    "Content-Type": type,
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
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

function page(
  data: Record<string, unknown>,
  conn: { resumed: boolean; protocol: string | null; cipher: string | null },
): string {
  const rows = COUNTERS.map((k) => `<tr><th>${k}</th><td>${esc(data[k])}</td></tr>`).join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sesscache serve</title>
<style>body{font:15px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}th,td{padding:2px 12px;text-align:left}td{font-family:monospace}</style>
</head><body>
<h1>sesscache serve</h1>
<p>This connection: <b>${conn.resumed ? "resumed" : "full handshake"}</b>, ${esc(conn.protocol)}, ${esc(conn.cipher)}.</p>
<h2>Session cache</h2>
<p>mode ${esc(data.modeName)}, size ${esc(data.cacheSize)}, timeout ${esc(data.timeout)} s, tickets ${data.tickets ? "on" : "off"}, up ${esc(data.uptime)} s. <a href="/stats">JSON</a></p>
<table>
${rows}
</table>
</body></html>
`;
}

function esc(v: unknown): string {
  return String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
