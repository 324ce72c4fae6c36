// The Redis fault toolkit for the chaos runs: redis-server on a free loopback port that can be
// killed, restarted (empty or with its AOF), paused; a TCP proxy that adds latency or turns into a
// fake Redis answering garbage; a 3 primaries + 3 replicas Redis Cluster that loses a primary.
// Readiness is polled (PING, `cluster info`), never slept for. Every process started here is
// SIGKILLed when this process exits.
import { type ChildProcess, execFile, fork, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, redisCli } from "../test/support/redis.js";

// The same free-port and redis-cli helpers as the tests'.
export { freePort, redisCli };

export const HOST = "127.0.0.1";
const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once("exit", () => r()));
}

export interface ChaosRedis {
  readonly port: number;
  readonly url: string;
  readonly pid: number | undefined;
  /** SIGKILL, waits for the exit. */
  kill(): Promise<void>;
  /** Starts again on the same port; `empty` wipes the data dir first (AOF/RDB gone). */
  restart(empty: boolean): Promise<void>;
  signal(sig: NodeJS.Signals): void;
  cli(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export interface RedisStartOptions {
  /** Keep the data across a kill: appendonly yes, appendfsync always. */
  persist?: boolean;
  args?: string[];
  port?: number;
}

export async function startChaosRedis(options: RedisStartOptions = {}): Promise<ChaosRedis> {
  let dir = mkdtempSync(join(tmpdir(), "sesscache-chaos-redis-"));
  const port = options.port ?? (await freePort());
  let child: ChildProcess | undefined;
  const launch = async () => {
    const args = [
      "--port",
      String(port),
      "--bind",
      HOST,
      "--save",
      "",
      "--dir",
      dir,
      "--enable-debug-command",
      "local",
      ...(options.persist ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"]),
      ...(options.args ?? []),
    ];
    const c = spawn("redis-server", args, { stdio: ["ignore", "ignore", "ignore"] });
    live.add(c);
    c.once("exit", () => live.delete(c));
    await new Promise<void>((resolve, reject) => {
      c.once("spawn", resolve);
      c.once("error", reject);
    });
    child = c;
    const deadline = Date.now() + 20_000;
    while (!(await pingOnce(port))) {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`redis-server :${port} exited`);
      if (Date.now() > deadline) throw new Error(`redis-server :${port} not ready in 20 s`);
      await sleep(10);
    }
  };
  await launch();
  return {
    port,
    url: `redis://${HOST}:${port}`,
    get pid() {
      return child?.pid;
    },
    async kill() {
      if (!child) return;
      child.kill("SIGKILL");
      await exited(child);
    },
    async restart(empty) {
      if (child) {
        child.kill("SIGKILL");
        await exited(child);
      }
      if (empty) {
        rmSync(dir, { recursive: true, force: true });
        dir = mkdtempSync(join(tmpdir(), "sesscache-chaos-redis-"));
      }
      await launch();
    },
    signal(sig) {
      child?.kill(sig);
    },
    cli: (...args) => redisCli(port, ...args),
    async stop() {
      if (child) {
        child.kill("SIGCONT");
        child.kill("SIGKILL");
        await exited(child);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export type ProxyMode = "forward" | "garbage";

export interface ProxyProcess {
  readonly port: number;
  setLatency(ms: number): Promise<void>;
  setMode(mode: ProxyMode): Promise<void>;
  garbageReplies(): Promise<number>;
  close(): Promise<void>;
}

/** startRedisProxy in a child process (chaos/proxy-child.ts), driven over IPC. */
export async function startRedisProxyProcess(upstreamPort: number): Promise<ProxyProcess> {
  const child = fork(new URL("./proxy-child.ts", import.meta.url), [String(upstreamPort)], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  live.add(child);
  child.once("exit", () => live.delete(child));
  const port = await new Promise<number>((resolve, reject) => {
    child.once("message", (m: { port: number }) => resolve(m.port));
    child.once("exit", (code) => reject(new Error(`proxy exited (${code})`)));
  });
  const ask = (m: Record<string, unknown>) =>
    new Promise<number>((resolve) => {
      child.once("message", (r: { garbageReplies: number }) => resolve(r.garbageReplies));
      child.send(m);
    });
  return {
    port,
    setLatency: async (ms) => void (await ask({ latency: ms })),
    setMode: async (mode) => void (await ask({ mode })),
    garbageReplies: () => ask({ count: true }),
    async close() {
      if (child.exitCode !== null) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await gone;
    },
  };
}

export interface RedisProxy {
  readonly port: number;
  /** Delay added to every chunk in each direction, in ms (order kept). */
  setLatency(ms: number): void;
  /** Switching drops every client connection (the client reconnects to the new behaviour). */
  setMode(mode: ProxyMode): void;
  /** Commands answered with garbage so far. */
  readonly garbageReplies: number;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of a Redis. "forward" passes bytes (after the latency); "garbage" is a fake
 * Redis: it answers the connection set-up (CLIENT, INFO, PING, SELECT...) properly, so the client
 * gets ready and sends look-ups, and answers GET/GETDEL/SET/DEL with well-framed garbage: random
 * bytes as values, wrong types (integers, arrays, status, errors, nil).
 */
export async function startRedisProxy(upstreamPort: number): Promise<RedisProxy> {
  let latency = 0;
  let mode: ProxyMode = "forward";
  let garbageReplies = 0;
  const clients = new Set<net.Socket>();
  const server = net.createServer((client) => {
    clients.add(client);
    client.on("close", () => clients.delete(client));
    client.on("error", () => client.destroy());
    if (mode === "garbage") return fakeRedis(client);
    const up = net.connect(upstreamPort, HOST);
    up.on("error", () => client.destroy());
    client.on("close", () => up.destroy());
    up.on("close", () => client.destroy());
    pipeDelayed(client, up);
    pipeDelayed(up, client);
  });
  const pipeDelayed = (from: net.Socket, to: net.Socket) => {
    let last = 0;
    from.on("data", (d: Buffer) => {
      if (latency <= 0 && last <= Date.now()) {
        to.write(d);
        return;
      }
      const at = Math.max(last, Date.now() + latency);
      last = at;
      setTimeout(() => to.destroyed || to.write(d), at - Date.now());
    });
  };
  const fakeRedis = (client: net.Socket) => {
    let buf = Buffer.alloc(0);
    client.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const parsed = parseCommand(buf);
        if (!parsed) return;
        buf = buf.subarray(parsed.used);
        const cmd = (parsed.args[0] ?? "").toUpperCase();
        client.write(replyFor(cmd));
      }
    });
  };
  const replyFor = (cmd: string): Buffer => {
    switch (cmd) {
      case "PING":
        return Buffer.from("+PONG\r\n");
      case "INFO":
        return bulk(Buffer.from("# Server\r\nredis_version:7.0.0\r\nloading:0\r\n"));
      case "CLIENT":
      case "SELECT":
      case "AUTH":
      case "QUIT":
        return Buffer.from("+OK\r\n");
      default:
        garbageReplies++;
        return garbage();
    }
  };
  await new Promise<void>((r) => server.listen(0, HOST, r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    setLatency(ms) {
      latency = ms;
    },
    setMode(m) {
      mode = m;
      for (const c of clients) c.destroy();
    },
    get garbageReplies() {
      return garbageReplies;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const c of clients) c.destroy();
        server.close(() => r());
      }),
  };
}

function bulk(b: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`$${b.length}\r\n`), b, Buffer.from("\r\n")]);
}

/** One well-framed reply of the wrong kind: random bytes of random length, or another type. */
function garbage(): Buffer {
  const r = Math.random();
  if (r < 0.4) return bulk(randomBytes(Math.floor(Math.random() * 300)));
  if (r < 0.5) return bulk(Buffer.alloc(0));
  if (r < 0.6) return Buffer.from(`:${Math.floor(Math.random() * 1e9)}\r\n`);
  if (r < 0.7) return Buffer.concat([Buffer.from("*2\r\n"), bulk(randomBytes(8)), Buffer.from(":7\r\n")]);
  if (r < 0.8) return Buffer.from("+OK\r\n");
  if (r < 0.9) return Buffer.from("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
  return Buffer.from("$-1\r\n");
}

/** A RESP array of bulk strings (what clients send); undefined until complete. */
function parseCommand(buf: Buffer): { args: string[]; used: number } | undefined {
  if (buf.length === 0) return undefined;
  if (buf[0] !== 0x2a) {
    // Inline command (PING\r\n).
    const end = buf.indexOf("\r\n");
    if (end < 0) return undefined;
    return { args: buf.subarray(0, end).toString("latin1").split(" "), used: end + 2 };
  }
  let pos = buf.indexOf("\r\n");
  if (pos < 0) return undefined;
  const n = Number(buf.subarray(1, pos).toString("latin1"));
  pos += 2;
  const args: string[] = [];
  for (let i = 0; i < n; i++) {
    const end = buf.indexOf("\r\n", pos);
    if (end < 0) return undefined;
    const len = Number(buf.subarray(pos + 1, end).toString("latin1"));
    const start = end + 2;
    if (buf.length < start + len + 2) return undefined;
    args.push(buf.subarray(start, start + len).toString("latin1"));
    pos = start + len + 2;
  }
  return { args, used: pos };
}

export interface ChaosRedisCluster {
  readonly nodes: ChaosRedis[];
  readonly seeds: string[];
  /** The node listed as primary of slot 0's range, and its port. */
  primaryPorts(): Promise<number[]>;
  stop(): Promise<void>;
}

/** 3 primaries + 3 replicas, cluster-node-timeout 1000 ms (a failover in a few seconds). */
export async function startChaosCluster(nodeTimeoutMs = 1000): Promise<ChaosRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), "sesscache-chaos-cluster-"));
  const nodes: ChaosRedis[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < 6; i++) {
      const port = await freePort();
      const bus = await freePort();
      nodes.push(
        await startChaosRedis({
          port,
          args: [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            join(dir, `nodes-${port}.conf`),
            "--cluster-port",
            String(bus),
            "--cluster-node-timeout",
            String(nodeTimeoutMs),
          ],
        }),
      );
    }
    const seeds = nodes.map((n) => `${HOST}:${n.port}`);
    await new Promise<void>((resolve, reject) => {
      execFile(
        "redis-cli",
        ["--cluster", "create", ...seeds, "--cluster-replicas", "1", "--cluster-yes"],
        { timeout: 60_000 },
        (err, _o, e) => (err ? reject(new Error(`cluster create: ${err.message} ${e}`)) : resolve()),
      );
    });
    await waitClusterOk(nodes, 6, 60_000);
    // Replicas attached and synced: every primary has a connected replica.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const text = await nodes[0]!.cli("cluster", "nodes");
      const slaves = text.split("\n").filter((l) => / (slave|replica) /.test(l) || /,slave /.test(l));
      if (slaves.length >= 3 && !/fail|handshake|noaddr/.test(text)) break;
      if (Date.now() > deadline) throw new Error("replicas not attached in 60 s");
      await sleep(100);
    }
    // And synced: a replica whose first sync has not finished will not take over its primary.
    for (const n of nodes) {
      for (;;) {
        const info = await n.cli("info", "replication");
        if (!info.includes("role:slave")) break;
        if (info.includes("master_link_status:up") && info.includes("master_sync_in_progress:0")) break;
        if (Date.now() > deadline) throw new Error(`replica :${n.port} not synced in 60 s`);
        await sleep(50);
      }
    }
    return {
      nodes,
      seeds,
      async primaryPorts() {
        const text = await nodes[0]!
          .cli("cluster", "nodes")
          .catch(async () => nodes[1]!.cli("cluster", "nodes"));
        return text
          .split("\n")
          .filter((l) => /master/.test(l) && !/fail/.test(l))
          .map((l) => Number(/:(\d+)@/.exec(l)?.[1]));
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Polls `cluster info` on each node until cluster_state:ok (and `known` nodes). */
export async function waitClusterOk(nodes: ChaosRedis[], known: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const n of nodes) {
    for (;;) {
      const info = await n.cli("cluster", "info").catch(() => "");
      if (info.includes("cluster_state:ok") && info.includes(`cluster_known_nodes:${known}`)) break;
      if (Date.now() > deadline) throw new Error(`cluster node ${n.port} not ok in ${timeoutMs} ms`);
      await sleep(50);
    }
  }
}
