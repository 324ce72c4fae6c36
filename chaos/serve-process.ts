// The `sesscache serve` processes of a chaos run: spawned from source on 127.0.0.1 port 0 (the port
// read from the "listening on" line), killed when this process exits; and their GET /stats.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";

export const root = fileURLToPath(new URL("..", import.meta.url));
const children = new Set<ChildProcess>();
const killAll = () => {
  for (const c of children) {
    c.kill("SIGCONT");
    c.kill("SIGKILL");
  }
};
process.on("exit", killAll);

export interface ServeProcess {
  port: number;
  pid: number;
  child: ChildProcess;
  stderr(): string;
  /** Resolves with performance.now() when a stderr line matches `re`. */
  waitForLog(re: RegExp): Promise<number>;
  /** Resolves with exit code / signal. */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>;
  stop(): Promise<void>;
}

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

/** `sesscache serve --listen 127.0.0.1:0 ARGS`, resolved once it prints its listening line. */
export async function startServe(args: string[], timeoutMs = 60_000): Promise<ServeProcess> {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(root, "src/cli/main.ts"),
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--state-dir",
      sharedStateDir(),
      ...args,
    ],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  );
  children.add(child);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>((r) =>
    child.once("exit", (code, signal) => {
      children.delete(child);
      r({ code, signal, atMs: performance.now() });
    }),
  );
  let out = "";
  let err = "";
  const logWaiters: { re: RegExp; resolve: (ms: number) => void }[] = [];
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    // Keep the tail only: a long fault may log a lot (rate-limited, but still).
    err = (err + d).slice(-20_000);
    for (let i = logWaiters.length - 1; i >= 0; i--) {
      if (logWaiters[i]!.re.test(d)) logWaiters.splice(i, 1)[0]!.resolve(performance.now());
    }
  });
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`serve did not start in ${timeoutMs} ms: ${err}`)),
      timeoutMs,
    );
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const m = /listening on https:\/\/[^\s]+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    void exit.then(({ code, signal }) => {
      clearTimeout(t);
      reject(new Error(`serve exited (${code ?? signal}) before listening: ${err}`));
    });
  });
  return {
    port,
    pid: child.pid!,
    child,
    stderr: () => err,
    waitForLog: (re) => new Promise<number>((resolve) => logWaiters.push({ re, resolve })),
    exit,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exit;
      clearTimeout(t);
    },
  };
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
