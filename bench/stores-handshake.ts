// `npm run bench -- stores-handshake [--rounds N] [--seconds S] [--clients C]` (default 3 rounds of
// 3 s, 1 client): resumed handshakes per second of the real `sesscache serve` command, in child
// processes, with each shared store against the in-memory cache (issue 5, Benchmark):
//   memory           serve, no --store (one process, in-memory SessionCache only)
//   redis            serve --store redis://… --store-key K (a throwaway redis-server)   target >= 0.90x memory
//   cluster-2w       serve --workers 2 (the cluster store, held by the primary)         vs memory, no target
//   redis-2w         serve --workers 2 --store redis://…                                vs redis, no target
// Each is driven by `openssl s_time -reuse` (a C client, one connection at a time): TLS 1.2 resumes
// by session id, TLS 1.3 by the server's single-use stateful tickets (`-www /` reads the page so
// the new ticket arrives). In every round each variant runs in turn, the order rotated from round to
// round, so that whatever else weighs on the machine is spread over all of them; the table gives
// medians over rounds (a short warm-up run of each is dropped). Rates are resumed connections over
// the wall time of the timed loop as seen from here (s_time's own "real seconds" is whole seconds).
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { generateSealKey } from "../src/stores/index.js";
import { type RedisServer, redisSkipReason, startRedis } from "../test/support/redis.js";
import { startServeProcess } from "../test/support/serve-process.js";
import type { BenchResult, BenchRow } from "./run.js";
import { treeCpuSeconds } from "./terminator-servers.js";

const HOST = "127.0.0.1";

type VariantName = "memory" | "redis" | "cluster-2w" | "redis-2w";
type Protocol = "TLS 1.2" | "TLS 1.3";

interface Variant {
  name: VariantName;
  description: string;
  workers: number;
  redis: boolean;
  /** The variant this one is compared with, and the target ratio (null: reported only). */
  versus?: { name: VariantName; target: number | null; label: string };
}

const VARIANTS: Variant[] = [
  { name: "memory", description: "1 process, no --store", workers: 1, redis: false },
  {
    name: "redis",
    description: "1 process, --store redis",
    workers: 1,
    redis: true,
    versus: { name: "memory", target: 0.9, label: "redis / memory" },
  },
  {
    name: "cluster-2w",
    description: "--workers 2 (cluster store)",
    workers: 2,
    redis: false,
    versus: { name: "memory", target: null, label: "2 workers (cluster) / 1 process (memory)" },
  },
  {
    name: "redis-2w",
    description: "--workers 2 --store redis",
    workers: 2,
    redis: true,
    versus: { name: "redis", target: null, label: "2 workers (redis) / 1 process (redis)" },
  },
];

const PROTOCOLS: Protocol[] = ["TLS 1.2", "TLS 1.3"];

function parseArgs(args: string[]): { rounds: number; seconds: number; clients: number } {
  const out = { rounds: 3, seconds: 3, clients: 1 };
  for (let i = 0; i < args.length; i++) {
    const flag = args[i];
    const value = Number(args[i + 1]);
    const key =
      flag === "--rounds"
        ? "rounds"
        : flag === "--seconds"
          ? "seconds"
          : flag === "--clients"
            ? "clients"
            : undefined;
    if (!key || !Number.isInteger(value) || value < 1) {
      throw new Error(
        `usage: stores-handshake [--rounds N] [--seconds S] [--clients C] (got ${flag} ${args[i + 1]})`,
      );
    }
    out[key] = value;
    i++;
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- the servers under test ----------------------------------------------------------------------

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});

interface Serve {
  variant: Variant;
  port: number;
  /** The serve process (with --workers, the primary: its tree holds the workers). */
  pid: number;
  stop(): Promise<void>;
}

/** `sesscache serve` in a child process; resolves once its startup line gives the port. */
async function startServe(
  variant: Variant,
  stateDir: string,
  redis: RedisServer | undefined,
  storeKey: string,
): Promise<Serve> {
  const args: string[] = [];
  if (variant.workers > 1) args.push("--workers", String(variant.workers));
  if (variant.redis) {
    if (!redis) throw new Error("redis variant without a redis-server");
    args.push("--store", redis.url, "--store-key", storeKey);
  }
  const serve = await startServeProcess({
    stateDir,
    args,
    startTimeoutMs: 30_000,
    killAfterMs: 10_000,
  }).catch((err: Error) => {
    throw new Error(`serve (${variant.name}): ${err.message}`);
  });
  live.add(serve.child);
  void serve.exit.then(() => live.delete(serve.child));
  return {
    variant,
    port: serve.port,
    pid: serve.pid,
    stop: async () => {
      await serve.stop();
    },
  };
}

// ---- the client ----------------------------------------------------------------------------------

interface Run {
  resumed: number;
  full: number;
  /** Wall seconds of the timed loop: from s_time's "starting" line to its exit. */
  seconds: number;
}

/** One `openssl s_time -reuse` run; counts its progress characters ('r' resumed, '*' full). */
function sTime(port: number, protocol: Protocol, seconds: number): Promise<Run> {
  const args = [
    "s_time",
    "-connect",
    `${HOST}:${port}`,
    protocol === "TLS 1.2" ? "-tls1_2" : "-tls1_3",
    "-reuse",
    "-time",
    String(seconds),
  ];
  // Any answer lets the ticket arrive; a missing path keeps the page's rendering out of the figure.
  if (protocol === "TLS 1.3") args.push("-www", "/handshake-bench");
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let loopStart: number | undefined;
    const child = spawn("openssl", args, { stdio: ["ignore", "pipe", "pipe"] });
    live.add(child);
    let stdout = "";
    let stderr = "";
    const killer = setTimeout(() => child.kill("SIGKILL"), (seconds + 30) * 1000);
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      // Printed (and flushed) before the first, full connection: the loop starts a handshake later.
      if (loopStart === undefined && stdout.includes("starting")) loopStart = performance.now();
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr = (stderr + d).slice(-2000);
    });
    child.once("error", reject);
    child.once("close", (code) => {
      const ended = performance.now();
      clearTimeout(killer);
      live.delete(child);
      // Progress lines hold only 'r' (resumed) and '*' (full handshake); skip the text lines.
      const progress = stdout
        .split("\n")
        .filter((l) => /^[r*]+$/.test(l.trim()))
        .join("");
      const resumed = progress.split("r").length - 1;
      const full = progress.split("*").length - 1;
      const total = /(\d+) connections in \d+ real seconds/.exec(stdout);
      if (code !== 0 || !total) {
        reject(
          new Error(`openssl s_time ${args.join(" ")} failed (${code}): ${stderr}${stdout.slice(-500)}`),
        );
        return;
      }
      resolve({ resumed, full, seconds: (ended - (loopStart ?? started)) / 1000 });
    });
  });
}

/** `clients` s_time runs at once against one server; rates add up. */
async function drive(
  port: number,
  protocol: Protocol,
  seconds: number,
  clients: number,
): Promise<{ rate: number; resumed: number; full: number }> {
  const runs = await Promise.all(Array.from({ length: clients }, () => sTime(port, protocol, seconds)));
  return {
    rate: runs.reduce((sum, r) => sum + r.resumed / r.seconds, 0),
    resumed: runs.reduce((sum, r) => sum + r.resumed, 0),
    full: runs.reduce((sum, r) => sum + r.full, 0),
  };
}

async function redisCommands(redis: RedisServer): Promise<number> {
  const info = await redis.cli("info", "stats");
  const m = /total_commands_processed:(\d+)/.exec(info);
  return m ? Number(m[1]) : Number.NaN;
}

// ---- the bench -----------------------------------------------------------------------------------

interface Sample {
  rate: number;
  resumed: number;
  full: number;
  /** Redis commands per resumed connection during the run (redis variants only). */
  redisPerConn: number | null;
  /** Resumed handshakes per CPU second of the serve process tree (workers included; Redis not). */
  cpuRate: number;
}

export default async function storesHandshake(argv: string[]): Promise<BenchResult> {
  const { rounds, seconds, clients } = parseArgs(argv);
  const skip = redisSkipReason();
  if (skip) throw new Error(`stores-handshake needs Redis: ${skip}`);
  const loadBefore = loadavg();
  const stateDir = mkdtempSync(join(tmpdir(), "sesscache-bench-stores-"));
  const storeKey = generateSealKey();
  let redis: RedisServer | undefined;
  const servers: Serve[] = [];
  const samples = new Map<string, Sample[]>();
  const key = (p: Protocol, v: VariantName) => `${p}|${v}`;
  try {
    redis = await startRedis();
    // One after another: the first start makes the self-signed certificate the others reuse.
    for (const v of VARIANTS) servers.push(await startServe(v, stateDir, redis, storeKey));

    const measure = async (s: Serve, protocol: Protocol, secs: number): Promise<Sample> => {
      const before = s.variant.redis && redis ? await redisCommands(redis) : 0;
      const cpu0 = treeCpuSeconds(s.pid);
      const r = await drive(s.port, protocol, secs, clients);
      const cpu = treeCpuSeconds(s.pid) - cpu0;
      const after = s.variant.redis && redis ? await redisCommands(redis) : 0;
      return {
        ...r,
        cpuRate: cpu > 0 ? r.resumed / cpu : 0,
        // Minus the INFO command itself.
        redisPerConn:
          s.variant.redis && r.resumed + r.full > 0 ? (after - before - 1) / (r.resumed + r.full) : null,
      };
    };

    // Warm-up, dropped: JIT, the workers' first sessions, Redis connections.
    for (const protocol of PROTOCOLS) for (const s of servers) await measure(s, protocol, 1);

    for (let round = 0; round < rounds; round++) {
      for (const protocol of PROTOCOLS) {
        for (let i = 0; i < servers.length; i++) {
          const s = servers[(i + round) % servers.length];
          const sample = await measure(s, protocol, seconds);
          const k = key(protocol, s.variant.name);
          samples.set(k, [...(samples.get(k) ?? []), sample]);
          process.stderr.write(
            `round ${round + 1}/${rounds} ${protocol} ${s.variant.name}: ${sample.rate.toFixed(0)} resumed/s, ` +
              `${sample.resumed} resumed, ${sample.full} full\n`,
          );
          await sleep(200);
        }
      }
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop().catch(() => undefined)));
    await redis?.stop().catch(() => undefined);
    rmSync(stateDir, { recursive: true, force: true });
  }
  const loadAfter = loadavg();

  const rows: BenchRow[] = [];
  const notes: string[] = [];
  const medianRate = (p: Protocol, v: VariantName) =>
    median((samples.get(key(p, v)) ?? []).map((s) => s.rate));
  const medianCpuRate = (p: Protocol, v: VariantName) =>
    median((samples.get(key(p, v)) ?? []).map((s) => s.cpuRate));
  for (const protocol of PROTOCOLS) {
    for (const v of VARIANTS) {
      const ss = samples.get(key(protocol, v.name)) ?? [];
      const rates = ss.map((s) => s.rate);
      const resumed = ss.reduce((a, s) => a + s.resumed, 0);
      const full = ss.reduce((a, s) => a + s.full, 0);
      const rate = median(rates);
      const cpuRate = median(ss.map((s) => s.cpuRate));
      let ratio: number | null = null;
      let cpuRatio: number | null = null;
      let perRound = "";
      let cpuPerRound = "";
      if (v.versus) {
        const base = samples.get(key(protocol, v.versus.name)) ?? [];
        ratio = rate / medianRate(protocol, v.versus.name);
        cpuRatio = cpuRate / medianCpuRate(protocol, v.versus.name);
        const cs = ss.map((s, i) => s.cpuRate / (base[i]?.cpuRate ?? Number.NaN));
        cpuPerRound = `${Math.min(...cs).toFixed(2)}-${Math.max(...cs).toFixed(2)}`;
        const rs = ss.map((s, i) => s.rate / (base[i]?.rate ?? Number.NaN));
        perRound = `${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)}`;
      }
      const redisPer = ss.map((s) => s.redisPerConn).filter((x): x is number => x !== null);
      rows.push({
        protocol,
        variant: v.name,
        server: v.description,
        "resumed/s": Math.round(rate),
        "min-max": `${Math.round(Math.min(...rates))}-${Math.round(Math.max(...rates))}`,
        "resumed/CPU-s": Math.round(cpuRate),
        "resumed %": resumed + full > 0 ? Number(((100 * resumed) / (resumed + full)).toFixed(2)) : null,
        vs: v.versus?.name ?? "",
        "ratio /CPU-s": cpuRatio === null ? "" : cpuRatio.toFixed(3),
        "per round /CPU-s": cpuPerRound,
        "ratio wall": ratio === null ? "" : ratio.toFixed(3),
        "per round wall": perRound,
        target: v.versus?.target == null ? "" : `>= ${v.versus.target.toFixed(2)}`,
        "redis cmds/conn": redisPer.length ? median(redisPer).toFixed(2) : "",
      });
      if (v.versus) {
        const t = v.versus.target;
        notes.push(
          `${protocol}: ${v.versus.label} = ${cpuRatio?.toFixed(3)} per serve CPU second, ${ratio?.toFixed(3)} wall` +
            (t === null
              ? " (reported, no target)"
              : ` (target >= ${t.toFixed(2)} per CPU second: ${cpuRatio !== null && cpuRatio >= t ? "MET" : "NOT MET"})`),
        );
      }
    }
  }
  notes.push(
    `${rounds} rounds x ${seconds} s per variant and protocol, ${clients} concurrent s_time client(s) each, order rotated per round; medians over rounds.`,
    `Resumed/CPU-s = resumed connections / CPU seconds (utime + stime, /proc) of the serve process and its workers over the run: the server's cost, which Redis, the client and the machine's other load do not enter (Redis's own CPU is not counted).`,
    `Resumed/s = resumed connections / wall time of s_time's timed loop (one connection at a time per client: latency-bound, so 2 workers cannot show more capacity than the clients ask for).`,
    `"redis cmds/conn" = Redis commands processed per connection during the run (INFO stats delta).`,
    `Machine: ${cpus().length} x ${cpus()[0]?.model ?? "?"}; load average (1/5/15 min) ${loadBefore.map((l) => l.toFixed(2)).join("/")} before, ${loadAfter.map((l) => l.toFixed(2)).join("/")} after.`,
  );
  return {
    title: "Resumed handshakes/s of `sesscache serve`: shared stores vs memory",
    rows,
    notes,
    extra: { rounds, seconds, clients, samples: Object.fromEntries(samples) },
  };
}
