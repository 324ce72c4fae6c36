// Real Redis for tests: throwaway redis-server processes on free ports (no persistence), and a
// 3-node Redis Cluster made with `redis-cli --cluster create`. Readiness is polled (PING over a
// socket, `cluster info`), never slept for.
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const HOST = "127.0.0.1";

/**
 * Why Redis tests must skip (a string for `{ skip }`), or undefined when redis-server and redis-cli
 * are here. With SESSCACHE_REQUIRE_REDIS=1 a missing Redis throws instead: CI must not skip.
 */
export function redisSkipReason(): string | undefined {
  const missing = ["redis-server", "redis-cli"].filter(
    (bin) => spawnSync(bin, ["--version"], { stdio: "ignore" }).status !== 0,
  );
  if (missing.length === 0) return undefined;
  const reason = `${missing.join(" and ")} not installed`;
  if (process.env.SESSCACHE_REQUIRE_REDIS === "1") {
    throw new Error(`SESSCACHE_REQUIRE_REDIS=1 but ${reason}`);
  }
  return reason;
}

let tlsProbe: { reason: string | undefined } | undefined;

/**
 * Why TLS Redis tests must skip, or undefined when redis-server is here and built with TLS (Debian's
 * is). Probed once: a TLS build refuses a TLS config without a CA at once ("Failed to configure
 * TLS"); a build without TLS says something else. With SESSCACHE_REQUIRE_REDIS=1 a reason throws.
 */
export function redisTlsSkipReason(): string | undefined {
  const base = redisSkipReason();
  if (base !== undefined) return base;
  if (!tlsProbe) {
    const r = spawnSync(
      "redis-server",
      ["--port", "0", "--tls-port", "1", "--tls-auth-clients", "yes", "--save", "", "--appendonly", "no"],
      { encoding: "utf8", timeout: 10_000 },
    );
    const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
    tlsProbe = {
      reason: /Failed to configure TLS/.test(out) ? undefined : "redis-server is built without TLS",
    };
  }
  const reason = tlsProbe.reason;
  if (reason !== undefined && process.env.SESSCACHE_REQUIRE_REDIS === "1") {
    throw new Error(`SESSCACHE_REQUIRE_REDIS=1 but ${reason}`);
  }
  return reason;
}

/** A port nothing listens on right now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One PING over a fresh socket: true on +PONG, false on anything else (refused, LOADING, ...). */
function pingOnce(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, HOST);
    let buf = "";
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.on("error", () => done(false));
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (d) => {
      buf += d.toString("latin1");
      if (buf.includes("\r\n")) done(buf.startsWith("+PONG"));
    });
  });
}

/** Polls PING until Redis answers, the process exits, or the deadline passes. */
async function waitForPing(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`redis-server on port ${port} exited (${child.exitCode ?? child.signalCode})`);
    }
    if (await pingOnce(port)) return;
    await sleep(20);
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms`);
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once("exit", () => r()));
}

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** redis://127.0.0.1:PORT */
  readonly url: string;
  /** rediss://127.0.0.1:TLSPORT when started with `tls`. */
  readonly tlsUrl: string | undefined;
  readonly pid: number | undefined;
  /** SIGKILL (a crash), waits for the exit. */
  kill(): Promise<void>;
  /** Starts again on the same port after kill()/stop(). */
  restart(): Promise<void>;
  /** SIGTERM, then SIGKILL after 3 s; removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
  /** Runs redis-cli against this server, returns stdout. */
  cli(...args: string[]): Promise<string>;
}

export interface StartRedisOptions {
  port?: number;
  /** Extra redis-server arguments (`--name`, `value` pairs). */
  args?: string[];
  /** How long to wait for PING. Default 15 s (a loaded 2-core machine). */
  readyTimeoutMs?: number;
  /**
   * Also listen with TLS on another free port. Client certificates (signed by `caFile`) are
   * required only with `authClients`.
   */
  tls?: { certFile: string; keyFile: string; caFile: string; authClients?: boolean };
}

export function redisCli(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "redis-cli",
      ["-h", HOST, "-p", String(port), ...args],
      { timeout: 20_000 },
      (err, out, errOut) => {
        if (err) reject(new Error(`redis-cli ${args.join(" ")}: ${err.message} ${errOut}`));
        else resolve(out);
      },
    );
  });
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "sesscache-redis-"));
  const readyTimeout = options.readyTimeoutMs ?? 15_000;
  let port = options.port ?? (await freePort());
  let tlsPort = options.tls ? await freePort() : 0;
  let child: ChildProcess | undefined;

  const launch = async () => {
    const args = [
      "--port",
      String(port),
      "--bind",
      HOST,
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      "--enable-debug-command",
      "local", // DEBUG SLEEP for slow-store tests
      ...(options.tls
        ? [
            "--tls-port",
            String(tlsPort),
            "--tls-cert-file",
            options.tls.certFile,
            "--tls-key-file",
            options.tls.keyFile,
            "--tls-ca-cert-file",
            options.tls.caFile,
            "--tls-auth-clients",
            options.tls.authClients ? "yes" : "no",
          ]
        : []),
      ...(options.args ?? []),
    ];
    const c = spawn("redis-server", args, { stdio: ["ignore", "ignore", "pipe"] });
    live.add(c);
    c.once("exit", () => live.delete(c));
    await new Promise<void>((resolve, reject) => {
      c.once("spawn", () => resolve());
      c.once("error", reject);
    });
    child = c;
    await waitForPing(port, c, readyTimeout);
  };

  // A port picked by the OS can be taken before redis binds it: try a few fresh ones.
  for (let attempt = 0; ; attempt++) {
    try {
      await launch();
      break;
    } catch (err) {
      child?.kill("SIGKILL");
      if (options.port !== undefined || attempt >= 3) {
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
      port = await freePort();
      if (options.tls) tlsPort = await freePort();
    }
  }

  let stopped = false;
  return {
    host: HOST,
    get port() {
      return port;
    },
    url: `redis://${HOST}:${port}`,
    tlsUrl: options.tls ? `rediss://${HOST}:${tlsPort}` : undefined,
    get pid() {
      return child?.pid;
    },
    async kill() {
      if (!child) return;
      child.kill("SIGKILL");
      await exited(child);
    },
    async restart() {
      if (child) {
        child.kill("SIGKILL");
        await exited(child);
      }
      await launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child) {
        const c = child;
        c.kill("SIGTERM");
        const t = setTimeout(() => c.kill("SIGKILL"), 3000);
        await exited(c);
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
    cli: (...args: string[]) => redisCli(port, ...args),
  };
}

export interface RedisCluster {
  readonly nodes: RedisServer[];
  /** "127.0.0.1:PORT" for each node, to seed a cluster client. */
  readonly seeds: string[];
  /** "127.0.0.1:TLSPORT" for each node when started with `tls` (the cluster then reports TLS ports to TLS clients). */
  readonly tlsSeeds: string[] | undefined;
  stop(): Promise<void>;
}

/**
 * Three (or `size`) masters, no replicas, all 16384 slots covered, `cluster_state:ok` everywhere.
 * With `tls` every node also listens with TLS and the bus runs over TLS (`tls-cluster yes`); the
 * plain ports stay for redis-cli and readiness checks.
 */
export async function startRedisCluster(
  size = 3,
  readyTimeoutMs = 30_000,
  tls?: StartRedisOptions["tls"],
): Promise<RedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), "sesscache-redis-cluster-"));
  const nodes: RedisServer[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < size; i++) {
      const port = await freePort();
      const bus = await freePort(); // explicit bus port: PORT+10000 may be taken or out of range
      nodes.push(
        await startRedis({
          port,
          args: [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            join(dir, `nodes-${port}.conf`),
            "--cluster-port",
            String(bus),
            "--cluster-node-timeout",
            "5000",
            ...(tls ? ["--tls-cluster", "yes"] : []),
          ],
          tls,
        }),
      );
    }
    const seeds = nodes.map((n) => `${HOST}:${n.port}`);
    await new Promise<void>((resolve, reject) => {
      execFile(
        "redis-cli",
        ["--cluster", "create", ...seeds, "--cluster-replicas", "0", "--cluster-yes"],
        { timeout: readyTimeoutMs },
        (err, _out, errOut) =>
          err ? reject(new Error(`cluster create: ${err.message} ${errOut}`)) : resolve(),
      );
    });
    const deadline = Date.now() + readyTimeoutMs;
    for (const n of nodes) {
      for (;;) {
        const info = await n.cli("cluster", "info").catch(() => "");
        if (info.includes("cluster_state:ok") && info.includes(`cluster_known_nodes:${size}`)) break;
        if (Date.now() > deadline)
          throw new Error(`cluster node ${n.port} not ok within ${readyTimeoutMs} ms`);
        await sleep(50);
      }
    }
    const tlsSeeds = tls ? nodes.map((n) => new URL(n.tlsUrl!).host) : undefined;
    return { nodes, seeds, tlsSeeds, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
