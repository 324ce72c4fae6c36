// `npm run bench -- handshake [--rounds N] [--seconds S]` (default 9 rounds of 1 s): handshakes/s of a Node TLS server with the
// sesscache server adapter against the baselines it must keep up with, measured by `openssl s_time`
// (a C client in its own process, one connection at a time, each reading a small page so TLS 1.3
// tickets arrive). Each round runs both variants of every comparison back to back, alternating which
// goes first; the table gives the median over rounds of their ratio.
//   1. TLS 1.2 resumed: sesscache vs a bare Map on newSession/resumeSession       target >= 0.97x
//   2. TLS 1.3 resumed: sesscache stateful single-use tickets vs Node's stateless    target >= 0.95x
//   3. full handshakes (TLS 1.3, and TLS 1.2): with vs without sesscache attached   target >= 0.97x
import { spawnSync } from "node:child_process";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { cpus, loadavg } from "node:os";
import tls from "node:tls";
import { SessionCache } from "../src/engine/index.js";
import { attachSessionCache, statefulServerOptions } from "../src/server/index.js";
import { testPki } from "../test/support/certs.js";
import { sTime, type TlsVersion } from "../test/support/tls-peers.js";
import type { BenchResult, BenchRow } from "./run.js";

const RESPONSE = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";

type Variant = "sesscache" | "map" | "node-tickets" | "bare" | "node-callbacks";

/** A server answering one small page per connection, set up as the variant says. */
async function startServer(
  variant: Variant,
): Promise<{ port: number; handshakes(): number; close(): Promise<void> }> {
  const pki = testPki();
  const stateful = variant === "sesscache" || variant === "map";
  const server = tls.createServer(
    {
      key: pki.key,
      cert: pki.cert,
      ...(stateful ? statefulServerOptions({ sessionIdContext: "bench" }) : {}),
    },
    (s) => {
      handshakes++;
      s.on("error", () => {});
      s.once("data", () => s.end(RESPONSE));
    },
  );
  let handshakes = 0;
  if (variant === "sesscache") {
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
  { name: "TLS 1.3 full", version: "1.3", reuse: false, ours: "sesscache", baseline: "bare", target: 0.97 },
  { name: "TLS 1.2 full", version: "1.2", reuse: false, ours: "sesscache", baseline: "bare", target: 0.97 },
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * One s_time run against a fresh server: handshakes per wall-clock second as s_time saw them, and
 * handshakes per second of this process's CPU (user + system) while serving them. The second is the
 * server's capacity when it is the bottleneck, and barely moves when other work shares the machine;
 * the first swings with the load.
 */
async function measure(variant: Variant, c: Comparison, seconds: number) {
  const srv = await startServer(variant);
  try {
    (globalThis as { gc?: () => void }).gc?.();
    const cpu0 = process.cpuUsage();
    const r = await sTime({ port: srv.port, version: c.version, reuse: c.reuse, seconds, www: "/" });
    const cpu = process.cpuUsage(cpu0);
    const handshakes = srv.handshakes();
    if (r.connections === 0) throw new Error(`s_time made no connection:\n${r.stdout}\n${r.stderr}`);
    // A resumption benchmark that did not resume would measure the wrong thing.
    if (c.reuse && r.fullHandshakes > 1) {
      throw new Error(`${variant} ${c.name}: ${r.fullHandshakes} full handshakes in a resumption run`);
    }
    if (!c.reuse && r.resumed > 0) throw new Error(`${variant} ${c.name}: resumed in a full-handshake run`);
    return { wall: r.perSecond, cpu: handshakes / ((cpu.user + cpu.system) / 1e6) };
  } finally {
    await srv.close();
  }
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
  const rounds = Math.round(arg(args, "--rounds", 9));
  const seconds = Math.round(arg(args, "--seconds", 1));
  interface Samples {
    ours: { wall: number[]; cpu: number[] };
    base: { wall: number[]; cpu: number[] };
    /** ours/base CPU rates of the two runs of one round, back to back: drift in machine load cancels. */
    ratios: number[];
  }
  const results = new Map<Comparison, Samples>();
  for (const c of COMPARISONS) {
    results.set(c, { ours: { wall: [], cpu: [] }, base: { wall: [], cpu: [] }, ratios: [] });
  }

  // Warm-up: JIT and the PKI, not counted.
  for (const c of COMPARISONS) for (const v of [c.ours, c.baseline]) await measure(v, c, 1);

  for (let r = 0; r < rounds; r++) {
    for (const c of COMPARISONS) {
      const oursFirst = r % 2 === 0;
      const first = await measure(oursFirst ? c.ours : c.baseline, c, seconds);
      const second = await measure(oursFirst ? c.baseline : c.ours, c, seconds);
      const [o, b] = oursFirst ? [first, second] : [second, first];
      const sm = results.get(c)!;
      sm.ours.wall.push(o.wall);
      sm.ours.cpu.push(o.cpu);
      sm.base.wall.push(b.wall);
      sm.base.cpu.push(b.cpu);
      sm.ratios.push(o.cpu / b.cpu);
      process.stderr.write(
        `round ${r + 1}/${rounds} ${c.name}: ${c.ours} ${o.cpu.toFixed(0)}/CPU-s, ` +
          `${c.baseline} ${b.cpu.toFixed(0)}/CPU-s, ratio ${(o.cpu / b.cpu).toFixed(3)}\n`,
      );
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
      baseline: c.baseline,
      "sesscache /CPU-s": Math.round(median(sm.ours.cpu)),
      "baseline /CPU-s": Math.round(median(sm.base.cpu)),
      ratio: Number(ratio.toFixed(3)),
      "ratio IQR": `${q(0.25).toFixed(2)}-${q(0.75).toFixed(2)}`,
      target: c.target,
      met,
      "sesscache /s wall": Math.round(median(sm.ours.wall)),
      "baseline /s wall": Math.round(median(sm.base.wall)),
    });
    notes.push(
      c.target === null
        ? `${c.name}: ${ratio.toFixed(3)}x (reference, no target)`
        : `${c.name}: ${ratio.toFixed(3)}x of ${c.baseline} (target >= ${c.target}): ${met ? "met" : "NOT met"}`,
    );
  }
  notes.push(
    "ratio = median over rounds of (sesscache / baseline) handshakes per second of server CPU, the two " +
      "runs of a round back to back; CPU rates are the server's capacity when it is the bottleneck and move " +
      "far less than wall rates when other work shares the machine; the wall columns are what s_time saw " +
      "(one connection at a time, so mostly latency)",
    `${rounds} rounds of ${seconds} s per variant; openssl s_time -reuse/-new -www /; ` +
      `${cpus().length} CPUs, load average ${loadavg()[0].toFixed(2)} at the end`,
    "baselines: map = Node's documented Map on newSession/resumeSession (stateful, no tickets); " +
      "node-tickets = a plain server with Node's stateless tickets; bare = a plain server, nothing attached; " +
      "node-callbacks = Node's stateless tickets plus no-op newSession/resumeSession listeners (what Node " +
      "itself costs any session cache)",
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
