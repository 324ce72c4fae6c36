// `npm run bench -- handshake [--rounds N] [--seconds S]` (default 7 rounds of 2 s): handshakes per
// second of a Node TLS server with the sesscache server adapter against the baselines it must keep
// up with. Each variant's server runs in its own child process; in a round both servers of a
// comparison are driven at the same time, each by its own `openssl s_time` (a C client, one
// connection at a time, each reading a small page so TLS 1.3 tickets arrive), so whatever else runs
// on the machine weighs on both alike. What is compared is each server's handshakes per second of
// its own CPU: its capacity when it is the bottleneck. The table gives medians over rounds (the
// first round, a warm-up, is dropped).
//   1. TLS 1.2 resumed: sesscache vs a bare Map on newSession/resumeSession       target >= 0.97x
//   2. TLS 1.3 resumed: sesscache stateful single-use tickets vs Node's stateless    target >= 0.95x
//   3. full handshakes (TLS 1.3, and TLS 1.2): sesscache vs the Map server          target >= 0.97x
//   4. full handshakes: with vs without anything attached                            reported
import { type ChildProcess, fork, spawnSync } from "node:child_process";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { cpus, loadavg } from "node:os";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { SessionCache } from "../src/engine/index.js";
import { attachSessionCache, statefulServerOptions } from "../src/server/index.js";
import { testPki } from "../test/support/certs.js";
import { sTime, type TlsVersion } from "../test/support/tls-peers.js";
import type { BenchResult, BenchRow } from "./run.js";

const RESPONSE = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";

export type Variant =
  | "sesscache"
  | "sesscache-tls12-only"
  | "map"
  | "node-tickets"
  | "bare"
  | "node-callbacks";

/** A server answering one small page per connection, set up as the variant says. */
/** A server a bench child runs. */
export interface BenchServer {
  port: number;
  handshakes(): number;
  close(): Promise<void>;
}

export async function startServer(variant: Variant): Promise<BenchServer> {
  const pki = testPki();
  const stateful = variant === "sesscache" || variant === "sesscache-tls12-only" || variant === "map";
  const server = tls.createServer(
    {
      key: pki.key,
      cert: pki.cert,
      ...(stateful ? statefulServerOptions({ sessionIdContext: "bench" }) : {}),
      // A server that cannot negotiate TLS 1.3 needs no hello peek (TLS 1.2 resumes through Node's
      // own resumeSession): this variant shows what the peek costs.
      ...(variant === "sesscache-tls12-only" ? { maxVersion: "TLSv1.2" as const } : {}),
    },
    (s) => {
      handshakes++;
      s.on("error", () => {});
      s.once("data", () => s.end(RESPONSE));
    },
  );
  let handshakes = 0;
  if (variant === "sesscache" || variant === "sesscache-tls12-only") {
    attachSessionCache(server, new SessionCache(), { sessionIdContext: "bench" });
  } else if (variant === "node-callbacks") {
    server.on("newSession", (_id: Buffer, _der: Buffer, done: () => void) => done());
    server.on("resumeSession", (_id: Buffer, cb: (e: Error | null, s: Buffer | null) => void) =>
      cb(null, null),
    );
  } else if (variant === "map") {
    // The classic example from Node's documentation: what the adapter must not be slower than.
    const map = new Map<string, Buffer>();
    server.on("newSession", (id: Buffer, der: Buffer, done: () => void) => {
      map.set(id.toString("hex"), der);
      done();
    });
    server.on("resumeSession", (id: Buffer, cb: (e: Error | null, s: Buffer | null) => void) => {
      cb(null, map.get(id.toString("hex")) ?? null);
    });
  }
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const open = new Set<import("node:net").Socket>();
  server.on("connection", (c) => {
    open.add(c);
    c.once("close", () => open.delete(c));
  });
  return {
    port: (server.address() as AddressInfo).port,
    handshakes: () => handshakes,
    close: async () => {
      const closed = once(server, "close");
      server.close();
      for (const c of open) c.destroy();
      await closed;
    },
  };
}

interface Comparison {
  name: string;
  version: TlsVersion;
  reuse: boolean;
  ours: Variant;
  baseline: Variant;
  /** null: a reference measurement, no target. */
  target: number | null;
}

const COMPARISONS: Comparison[] = [
  { name: "TLS 1.2 resumed", version: "1.2", reuse: true, ours: "sesscache", baseline: "map", target: 0.97 },
  {
    name: "TLS 1.2 resumed, TLS 1.2-only server (no peek)",
    version: "1.2",
    reuse: true,
    ours: "sesscache-tls12-only",
    baseline: "map",
    target: null,
  },
  {
    name: "TLS 1.3 resumed",
    version: "1.3",
    reuse: true,
    ours: "sesscache",
    baseline: "node-tickets",
    target: 0.95,
  },
  {
    name: "TLS 1.3 resumed, Node's own share",
    version: "1.3",
    reuse: true,
    ours: "node-callbacks",
    baseline: "node-tickets",
    target: null,
  },
  // Full handshakes against the stateful server Node documents (the same newSession/resumeSession
  // machinery, no tickets): what the cache itself adds. Against a bare server: what any stateful
  // cache costs in Node (reported, explained by the profile).
  {
    name: "TLS 1.3 full vs Map",
    version: "1.3",
    reuse: false,
    ours: "sesscache",
    baseline: "map",
    target: 0.97,
  },
  {
    name: "TLS 1.2 full vs Map",
    version: "1.2",
    reuse: false,
    ours: "sesscache",
    baseline: "map",
    target: 0.97,
  },
  { name: "TLS 1.3 full", version: "1.3", reuse: false, ours: "sesscache", baseline: "bare", target: null },
  // The same server on both sides: how far from 1.000 the method itself strays on this machine.
  {
    name: "noise floor (bare vs bare, TLS 1.2 full)",
    version: "1.2",
    reuse: false,
    ours: "bare",
    baseline: "bare",
    target: null,
  },
  { name: "TLS 1.2 full", version: "1.2", reuse: false, ours: "sesscache", baseline: "bare", target: null },
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// ---- the server child ----------------------------------------------------------------------------

/** The variant a bench child serves (handshake.ts and profile.ts children alike). */
export const CHILD_ENV = "SESSCACHE_BENCH_SERVER";

type ToChild = { cmd: "start" } | { cmd: "stop" };
type FromChild = { port: number } | { cpuMicros: number; handshakes: number };

/**
 * Child mode: serve what `start` gives, report the CPU used and handshakes done between the parent's
 * start and stop messages. bench/profile.ts runs its servers the same way.
 */
export async function serveInChild(start: () => Promise<BenchServer>): Promise<void> {
  // tsx turns source maps on; a deployed server (dist/) runs without them, and with them every
  // Error whose stack Node reads (one ECONNRESET per s_time connection) costs a source-map walk.
  process.setSourceMapsEnabled(false);
  const srv = await start();
  let cpu0 = process.cpuUsage();
  let hs0 = 0;
  process.on("message", (m: ToChild) => {
    if (m.cmd === "start") {
      (globalThis as { gc?: () => void }).gc?.();
      cpu0 = process.cpuUsage();
      hs0 = srv.handshakes();
      process.send!({ started: true });
    } else if (m.cmd === "stop") {
      const cpu = process.cpuUsage(cpu0);
      process.send!({ cpuMicros: cpu.user + cpu.system, handshakes: srv.handshakes() - hs0 });
    }
  });
  process.on("disconnect", () => {
    srv.close().finally(() => process.exit(0));
  });
  process.send!({ port: srv.port });
}

// Only as the forked child itself: profile.ts's children import this file with the same variable set.
if (process.argv[1] === fileURLToPath(import.meta.url) && process.env[CHILD_ENV]) {
  await serveInChild(() => startServer(process.env[CHILD_ENV] as Variant));
}

/** A bench server in its own process: `module` run with `env` must call serveInChild. */
export class ServerChild {
  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
  ) {}

  static async start(
    variant: string,
    child: { module?: string; env?: NodeJS.ProcessEnv; execArgv?: string[] } = {},
  ): Promise<ServerChild> {
    const proc = fork(child.module ?? fileURLToPath(import.meta.url), [], {
      execArgv: ["--import", "tsx", "--expose-gc", ...(child.execArgv ?? [])],
      env: { ...process.env, [CHILD_ENV]: variant, ...child.env },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const [msg] = (await once(proc, "message")) as [FromChild];
    if (!("port" in msg)) throw new Error("bench server child did not report its port");
    return new ServerChild(proc, msg.port);
  }

  async ask<T>(m: ToChild): Promise<T> {
    const reply = once(this.child, "message");
    this.child.send(m);
    return (await reply)[0] as T;
  }

  async stop(): Promise<void> {
    const exited = once(this.child, "exit");
    this.child.disconnect();
    await exited;
  }
}

interface Sample {
  /** Handshakes per second of the server's own CPU. */
  cpu: number;
  /** What s_time reported (both servers were busy at once, so each got about half the machine). */
  wall: number;
}

/** One round: both servers driven at once by their own s_time for `seconds`. */
async function round(c: Comparison, ours: ServerChild, base: ServerChild, seconds: number) {
  await Promise.all([ours.ask({ cmd: "start" }), base.ask({ cmd: "start" })]);
  const run = (srv: ServerChild) =>
    sTime({ port: srv.port, version: c.version, reuse: c.reuse, seconds, www: "/" });
  const [ro, rb] = await Promise.all([run(ours), run(base)]);
  const [so, sb] = await Promise.all([
    ours.ask<{ cpuMicros: number; handshakes: number }>({ cmd: "stop" }),
    base.ask<{ cpuMicros: number; handshakes: number }>({ cmd: "stop" }),
  ]);
  for (const [r, v] of [
    [ro, c.ours],
    [rb, c.baseline],
  ] as const) {
    if (r.connections === 0) throw new Error(`s_time made no connection:\n${r.stdout}\n${r.stderr}`);
    // A resumption benchmark that did not resume would measure the wrong thing.
    if (c.reuse && r.fullHandshakes > 1) {
      throw new Error(`${v} ${c.name}: ${r.fullHandshakes} full handshakes in a resumption run`);
    }
    if (!c.reuse && r.resumed > 0) throw new Error(`${v} ${c.name}: resumed in a full-handshake run`);
  }
  const sample = (s: { cpuMicros: number; handshakes: number }, wall: number): Sample => ({
    cpu: s.handshakes / (s.cpuMicros / 1e6),
    wall,
  });
  return { ours: sample(so, ro.perSecond), base: sample(sb, rb.perSecond) };
}

function arg(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  const v = i >= 0 ? Number(args[i + 1]) : dflt;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a positive number`);
  return v;
}

export default async function handshake(args: string[]): Promise<BenchResult> {
  if (spawnSync("openssl", ["version"], { stdio: "ignore" }).status !== 0) {
    throw new Error("the handshake benchmark needs the openssl command (s_time)");
  }
  const rounds = Math.round(arg(args, "--rounds", 7));
  const seconds = Math.round(arg(args, "--seconds", 2));
  interface Samples {
    ours: Sample[];
    base: Sample[];
    /** ours/base CPU rates of one round, measured at the same time. */
    ratios: number[];
  }
  const results = new Map<Comparison, Samples>();
  for (const c of COMPARISONS) {
    const sm: Samples = { ours: [], base: [], ratios: [] };
    results.set(c, sm);
    const [ours, base] = await Promise.all([ServerChild.start(c.ours), ServerChild.start(c.baseline)]);
    try {
      for (let r = 0; r <= rounds; r++) {
        const m = await round(c, ours, base, r === 0 ? 1 : seconds);
        if (r === 0) continue; // warm-up: JIT, first allocations
        sm.ours.push(m.ours);
        sm.base.push(m.base);
        sm.ratios.push(m.ours.cpu / m.base.cpu);
        process.stderr.write(
          `round ${r}/${rounds} ${c.name}: ${c.ours} ${m.ours.cpu.toFixed(0)}/CPU-s, ` +
            `${c.baseline} ${m.base.cpu.toFixed(0)}/CPU-s, ratio ${(m.ours.cpu / m.base.cpu).toFixed(3)}\n`,
        );
      }
    } finally {
      await Promise.all([ours.stop(), base.stop()]);
    }
  }

  const rows: BenchRow[] = [];
  const notes: string[] = [];
  for (const c of COMPARISONS) {
    const sm = results.get(c)!;
    const ratio = median(sm.ratios);
    const sorted = [...sm.ratios].sort((x, y) => x - y);
    const q = (f: number) => sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))];
    const met = c.target === null ? null : ratio >= c.target;
    rows.push({
      comparison: c.name,
      variant: c.ours,
      baseline: c.baseline,
      "variant /CPU-s": Math.round(median(sm.ours.map((x) => x.cpu))),
      "baseline /CPU-s": Math.round(median(sm.base.map((x) => x.cpu))),
      ratio: Number(ratio.toFixed(3)),
      "ratio IQR": `${q(0.25).toFixed(2)}-${q(0.75).toFixed(2)}`,
      target: c.target,
      met,
      "variant /s wall": Math.round(median(sm.ours.map((x) => x.wall))),
      "baseline /s wall": Math.round(median(sm.base.map((x) => x.wall))),
    });
    notes.push(
      c.target === null
        ? `${c.name}: ${ratio.toFixed(3)}x (reference, no target)`
        : `${c.name}: ${ratio.toFixed(3)}x of ${c.baseline} (target >= ${c.target}): ${met ? "met" : "NOT met"}`,
    );
  }
  notes.push(
    "ratio = median over rounds of (variant / baseline) handshakes per second of server CPU, both " +
      "servers (each its own process) driven at the same time; CPU rates are a server's capacity when it is " +
      "the bottleneck; the wall columns are what each s_time saw while sharing the machine with the other",
    `${rounds} rounds of ${seconds} s (after a 1 s warm-up round); openssl s_time -reuse/-new -www /; ` +
      `${cpus().length} CPUs, load average ${loadavg()[0].toFixed(2)} at the end`,
    "baselines: map = Node's documented Map on newSession/resumeSession (stateful, no tickets); " +
      "node-tickets = a plain server with Node's stateless tickets; bare = a plain server, nothing attached; " +
      "node-callbacks = Node's stateless tickets plus no-op newSession/resumeSession listeners (what Node " +
      "itself costs any session cache)",
    "the hello peek (spec 9.1-2: the first flight read in JavaScript, then put back for Node's TLS layer) " +
      "is paid by every connection to a TLS 1.3-capable server; compare the two TLS 1.2 resumed rows",
    "why TLS 1.3 resumed trails stateless tickets: on resuming a valid stateless ticket OpenSSL 3 issues no new " +
      "ticket, while a stateful single-use resumption must issue one (a NewSessionTicket, a newSession callback, " +
      "a store, one more write) and remove the used one",
  );
  return {
    title: "Handshakes per second: Node TLS server with sesscache vs baselines (openssl s_time)",
    rows,
    notes,
    extra: {
      rounds,
      seconds,
      samples: Object.fromEntries([...results].map(([c, sm]) => [c.name, sm])),
    },
  };
}
