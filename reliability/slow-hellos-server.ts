// The server of the slow-hellos suite, in its own process (its file descriptors and memory are its
// own): a Node TLS server with the adapter (helloTimeout, certificate and key files from argv) that answers every handshake
// with one byte. Over IPC it says {port} once listening and answers {cmd: "stats"} with its RSS and
// the adapter's counters, {cmd: "lifetimes"} with the lifetimes of the connections that sent
// less than 128 bytes (the slow ones: a normal client's first flight is ~250-400 bytes, a trickler
// sends one byte per second until helloTimeout), and the bytes read (all connections) for a cost per trickled
// byte; {cmd: "exit"} closes it.
import { readFileSync } from "node:fs";
import tls from "node:tls";
import { SessionCache } from "../src/engine/index.js";
import { attachSessionCache, statefulServerOptions } from "../src/server/index.js";
import { fullGc } from "./support.js";

const helloTimeout = Number(process.argv[2]);
// The parent's test certificates (a PKI made here would not be the one its clients trust).
const pki = { cert: readFileSync(process.argv[3]!, "utf8"), key: readFileSync(process.argv[4]!, "utf8") };
const server = tls.createServer(
  { key: pki.key, cert: pki.cert, ...statefulServerOptions({ cert: pki.cert }) },
  (s) => {
    s.on("error", () => {});
    s.end("x");
  },
);
server.on("tlsClientError", () => {});
const cache = new SessionCache();
const attached = attachSessionCache(server, cache, { helloTimeout, log: () => {} });
let open = 0;
/** Open connections, and the bytes read by the closed ones: `bytesRead` in stats counts all bytes. */
const sockets = new Set<import("node:net").Socket>();
let closedBytes = 0;
/** {cmd: "await-open", n}: answered once `n` connections are open (the runner waits on an event). */
const waiters: { n: number; q: number }[] = [];
/** Lifetimes (ms, accept to close) of connections that sent less than 128 bytes (the slow ones). */
const slowLifetimes: number[] = [];
server.on("connection", (s) => {
  open++;
  sockets.add(s);
  for (let i = waiters.length - 1; i >= 0; i--)
    if (open >= waiters[i]!.n) process.send!({ q: waiters.splice(i, 1)[0]!.q, open });
  const t = performance.now();
  s.once("close", () => {
    open--;
    sockets.delete(s);
    closedBytes += s.bytesRead;
    if (s.bytesRead < 128) slowLifetimes.push(performance.now() - t);
  });
});
server.listen({ port: 0, host: "127.0.0.1", backlog: 4096 }, () => {
  process.send!({ port: (server.address() as { port: number }).port });
});
process.on("message", (m: { cmd?: string; q?: number; gc?: boolean; n?: number }) => {
  if (m.cmd === "await-open") {
    if (open >= m.n!) process.send!({ q: m.q, open });
    else waiters.push({ n: m.n!, q: m.q! });
  } else if (m.cmd === "stats") {
    if (m.gc) fullGc(); // a settled reading (baseline, after)
    const u = process.cpuUsage();
    let bytesRead = closedBytes;
    for (const s of sockets) bytesRead += s.bytesRead;
    process.send!({
      q: m.q,
      cpu: u.user + u.system,
      rss: process.memoryUsage().rss,
      heap: process.memoryUsage().heapUsed,
      open,
      bytesRead,
      adapter: attached.stats(),
      cache: cache.stats(),
    });
  } else if (m.cmd === "lifetimes") {
    process.send!({ q: m.q, lifetimes: slowLifetimes });
  } else if (m.cmd === "exit") {
    server.close();
    process.exit(0);
  }
});
process.on("disconnect", () => process.exit(0));
