// The `sesscache serve` processes of a chaos run: spawned from source on 127.0.0.1 port 0 (the port
// read from the "listening on" line), killed when this process exits; and their GET /stats.
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { type ServeProcess, startServeProcess } from "../test/support/serve-process.js";

export { root } from "../test/support/serve-process.js";
export type { ServeProcess };

const children = new Set<ChildProcess>();
const killAll = () => {
  for (const c of children) {
    c.kill("SIGCONT");
    c.kill("SIGKILL");
  }
};
process.on("exit", killAll);

let stateDir: string | undefined;
/** One state dir per run (the self-signed certificate is made by the first serve). */
function sharedStateDir(): string {
  if (!stateDir) {
    stateDir = mkdtempSync(join(tmpdir(), "sesscache-chaos-state-"));
    const dir = stateDir;
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return stateDir;
}

/** A serve of this run, killed (even if stopped with SIGSTOP) when the run exits. */
export async function startServe(args: string[], timeoutMs = 60_000): Promise<ServeProcess> {
  const serve = await startServeProcess({ stateDir: sharedStateDir(), args, startTimeoutMs: timeoutMs });
  children.add(serve.child);
  void serve.exit.then(() => children.delete(serve.child));
  return serve;
}

/** GET /stats of a serve (JSON), or undefined when it does not answer within 5 s. */
export function fetchStats(port: number): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve) => {
    const sock = tls.connect({ host: "127.0.0.1", port, servername: "localhost", rejectUnauthorized: false });
    let body = "";
    const t = setTimeout(() => sock.destroy(), 5000);
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => {
      body += d;
    });
    sock.on("error", () => undefined);
    sock.on("close", () => {
      clearTimeout(t);
      const i = body.indexOf("\r\n\r\n");
      try {
        resolve(JSON.parse(body.slice(i + 4)) as Record<string, unknown>);
      } catch {
        resolve(undefined);
      }
    });
    sock.once("secureConnect", () =>
      sock.write(
        "GET /stats HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
      ),
    );
  });
}

/** The store side of a serve's /stats: look-ups, hits, deadline misses, look-ups over 100 ms. */
export function storeSide(stats: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  const store = stats?.store as Record<string, unknown> | undefined;
  if (!store) return undefined;
  const ext = store.external as Record<string, number> | undefined;
  const lat = store.latency as { buckets: number[]; counts: number[] } | undefined;
  const adapter = stats?.adapter as Record<string, number> | undefined;
  let over100 = 0;
  if (lat) {
    const from = lat.buckets.indexOf(0.1) + 1;
    for (let i = from; i < lat.counts.length; i++) over100 += lat.counts[i]!;
  }
  return {
    lookups: ext?.lookups,
    found: ext?.found,
    deadlineMisses: ext?.timeouts,
    rejected: ext?.rejected,
    lookupsOver100ms: lat ? over100 : undefined,
    adapterLookupTimeouts: adapter?.lookupTimeouts,
    adapterLookupErrors: adapter?.lookupErrors,
    storeErrors: store.errors,
    storeTimeouts: store.timeouts,
    dropped: store.dropped,
  };
}
