// `npm run bench -- stores [--seconds N] [--concurrency C]`: what a shared store costs.
//  1. Added latency (p50/p99) of one get / set / take through MemoryStore, RedisStore (one local
//     redis-server) and ClusterStore (2 node:cluster workers), plus sealing and the checked open.
//  2. Scale check: a load generator driving RedisStore directly (sealing included, no TLS) against
//     a 3-node Redis Cluster at a 1:1 new:resume (set:get) mix: operations/s and p99.
//  3. Bytes one sealed 158-byte session takes in Redis (MEMORY USAGE) and sessions per GiB.
//  4. The ClusterStore design measurement: (a) primary-held map, every look-up a round trip, vs
//     (b) replication of each new session to every worker (a prototype here): primary CPU per
//     operation, replication lag, with 2 and 4 workers.
// Everything runs on this machine: Redis, the cluster and the generator share its cores.
import cluster, { type Worker } from "node:cluster";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import type { StoreKey } from "../src/engine/store.js";
import { parseSession } from "../src/session/index.js";
import {
  ClusterStore,
  MemoryStore,
  openStoredSession,
  RedisStore,
  Sealer,
  type SealingSessionStore,
  serverStoreKey,
  startClusterStorePrimary,
} from "../src/stores/index.js";
import { startRedis, startRedisCluster } from "../test/support/redis.js";
import { buildSessionDer } from "../test/support/session-der.js";
import type { BenchResult, BenchRow } from "./run.js";

const ROLE = "SESSCACHE_BENCH_STORES_ROLE";
const now = () => Math.floor(Date.now() / 1000);
const CTX = new Uint8Array(32).fill(7); // a 32-byte session-id context: the DER is 158 bytes

/** A 158-byte TLS 1.2 server session (the spec's typical size) with a fresh id and secret. */
function makeSession() {
  const der = buildSessionDer({
    id: randomBytes(32),
    masterKey: randomBytes(48),
    time: now(),
    timeout: 7200,
    sessionIdContext: CTX,
    flags: 1,
    group: 0x1d,
  });
  const session = parseSession(der);
  return { der, session, key: serverStoreKey(session) };
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
const summary = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: pct(s, 50), p99: pct(s, 99), n: s.length };
};
const us = (ms: number) => Math.round(ms * 1000 * 10) / 10;

/** Sequential get / set / take latencies (ms) through a store, sealed values, after a warm-up. */
async function latencies(store: SealingSessionStore, n: number) {
  const items = Array.from({ length: n }, makeSession);
  const values = items.map((i) => store.sealer.seal(i.key, i.der));
  const set: number[] = [];
  const get: number[] = [];
  const take: number[] = [];
  for (let i = 0; i < Math.min(200, n); i++) {
    await store.set(items[i]!.key, values[i]!, items[i]!.session.expiresAt);
    await store.get(items[i]!.key);
  }
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await store.set(items[i]!.key, values[i]!, items[i]!.session.expiresAt);
    set.push(performance.now() - t0);
  }
  let misses = 0;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    if ((await store.get(items[i]!.key)) === undefined) misses++;
    get.push(performance.now() - t0);
  }
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    if ((await store.take(items[i]!.key)) === undefined) misses++;
    take.push(performance.now() - t0);
  }
  return { set: summary(set), get: summary(get), take: summary(take), misses };
}

function latencyRows(store: string, r: Awaited<ReturnType<typeof latencies>>): BenchRow[] {
  return (["get", "set", "take"] as const).map((op) => ({
    section: "latency",
    store,
    op,
    p50_us: us(r[op].p50),
    p99_us: us(r[op].p99),
    ops_per_s: null,
    detail: `${r[op].n} sequential${op === "set" ? "" : `, ${r.misses} misses`}`,
  }));
}

/** Sealing and the checked open (decrypt + parse + match), the CPU a shared store adds per value. */
function sealingRows(n: number): BenchRow[] {
  const sealer = new Sealer({ keys: [randomBytes(32)] });
  const items = Array.from({ length: n }, makeSession);
  const seal: number[] = [];
  const open: number[] = [];
  const values: Uint8Array[] = [];
  for (const i of items) {
    const t0 = performance.now();
    values.push(sealer.seal(i.key, i.der));
    seal.push(performance.now() - t0);
  }
  items.forEach((i, j) => {
    const t0 = performance.now();
    openStoredSession(i.key, values[j]!, sealer);
    open.push(performance.now() - t0);
  });
  const s = summary(seal);
  const o = summary(open);
  return [
    {
      section: "latency",
      store: "(sealing)",
      op: "seal",
      p50_us: us(s.p50),
      p99_us: us(s.p99),
      ops_per_s: null,
      detail: `${n}, AES-256-GCM, 158-B DER`,
    },
    {
      section: "latency",
      store: "(sealing)",
      op: "open+parse+check",
      p50_us: us(o.p50),
      p99_us: us(o.p99),
      ops_per_s: null,
      detail: `${n}, openStoredSession`,
    },
  ];
}

/** 1:1 set:get (new:resume) against the cluster: `concurrency` loops for `seconds`. */
async function loadGenerator(seeds: string[], seconds: number, concurrency: number) {
  const store = new RedisStore({
    cluster: seeds,
    keys: [randomBytes(32)],
    maxInFlight: 10_000,
    timeoutMs: 1000,
  });
  await store.ready(20_000);
  const lat: number[] = [];
  let ops = 0;
  let misses = 0;
  const deadline = performance.now() + seconds * 1000;
  const loop = async () => {
    const mine: StoreKey[] = [];
    while (performance.now() < deadline) {
      const s = makeSession();
      let t0 = performance.now();
      await store.set(s.key, store.sealer.seal(s.key, s.der), s.session.expiresAt);
      lat.push(performance.now() - t0);
      mine.push(s.key);
      const k = mine[Math.floor(Math.random() * mine.length)]!;
      t0 = performance.now();
      const v = await store.get(k);
      if (v) openStoredSession(k, v, store.sealer);
      else misses++;
      lat.push(performance.now() - t0);
      ops += 2;
      if (mine.length > 1000) mine.splice(0, 500);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, loop));
  const elapsed = (performance.now() - t0) / 1000;
  const st = store.stats();
  await store.close();
  const s = summary(lat);
  return {
    opsPerSec: Math.round(ops / elapsed),
    p50: s.p50,
    p99: s.p99,
    misses,
    errors: st.errors + st.timeouts + st.dropped,
  };
}

// ---- node:cluster part: this same file is the worker script -----------------------------------

type WorkerTask =
  | { task: "latency"; n: number }
  | { task: "paced"; design: "a" | "b"; n: number; perSecond: number }
  | { report: true };

interface ReplMsg {
  benchRepl: true;
  k: string;
  v: string;
  ts: number;
}

const wall = () => performance.timeOrigin + performance.now();

/** Calls `send(i)` for i < n at `perSecond`, in 1 ms steps. */
async function paced(n: number, perSecond: number, send: (i: number) => void) {
  const t0 = performance.now();
  let i = 0;
  while (i < n) {
    const due = Math.min(n, Math.floor(((performance.now() - t0) * perSecond) / 1000) + 1);
    while (i < due) send(i++);
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function workerMain() {
  const store = new ClusterStore({ timeoutMs: 1000, maxInFlight: 100_000 });
  const replica = new Map<string, string>(); // design (b)'s local copy
  const lags: number[] = [];
  process.on("message", async (m: WorkerTask | ReplMsg) => {
    // The ClusterStore's own replies arrive here too: act only on the bench's messages.
    if (typeof m !== "object" || m === null) return;
    if ("benchRepl" in m) {
      replica.set(m.k, m.v);
      lags.push(wall() - m.ts);
    } else if ("report" in m) {
      process.send!({ result: { received: lags.length, ...summary(lags) } });
    } else if (m.task === "latency") {
      process.send!({ result: await latencies(store, m.n) });
    } else if (m.design === "a") {
      // (a): each new session is one set request, visible to all workers once acknowledged.
      const items = Array.from({ length: m.n }, makeSession);
      const acks: number[] = [];
      const pending: Promise<void>[] = [];
      await paced(m.n, m.perSecond, (i) => {
        const s = items[i]!;
        const t0 = performance.now();
        pending.push(
          store.set(s.key, store.sealer.seal(s.key, s.der), s.session.expiresAt).then(() => {
            acks.push(performance.now() - t0);
          }),
        );
      });
      await Promise.all(pending);
      process.send!({ result: { received: acks.length, ...summary(acks) } });
    } else if (m.design === "b") {
      // (b): each new session goes to the primary, which copies it to every other worker.
      const items = Array.from({ length: m.n }, makeSession);
      await paced(m.n, m.perSecond, (i) => {
        const s = items[i]!;
        const v = Buffer.from(store.sealer.seal(s.key, s.der)).toString("base64");
        process.send!({ benchRepl: true, k: Buffer.from(s.key.id).toString("base64"), v, ts: wall() });
      });
      process.send!({ result: { sent: m.n } });
    }
  });
  process.send!({ ready: true });
}

function ask<T>(w: Worker, msg: object): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: { result?: T }) => {
      if (m && "result" in m) {
        w.off("message", on);
        resolve(m.result as T);
      }
    };
    w.on("message", on);
    w.send(msg);
  });
}

async function forkWorkers(n: number): Promise<Worker[]> {
  cluster.setupPrimary({
    exec: fileURLToPath(import.meta.url),
    execArgv: ["--import", "tsx"],
  });
  const ws = Array.from({ length: n }, () => cluster.fork({ [ROLE]: "worker" }));
  await Promise.all(
    ws.map((w) => new Promise<void>((r) => w.on("message", (m: { ready?: boolean }) => m?.ready && r()))),
  );
  // Warm up every worker (JIT, first IPC) before measuring anything.
  await Promise.all(ws.map((w) => ask(w, { task: "latency", n: 300 })));
  return ws;
}

async function killWorkers(ws: Worker[]) {
  await Promise.all(
    ws.map(
      (w) =>
        new Promise<void>((r) => {
          w.once("exit", () => r());
          w.kill();
        }),
    ),
  );
}

interface Dist {
  received: number;
  p50: number;
  p99: number;
}

/**
 * Design (a) vs (b) with `n` workers, new sessions made by one worker at `perSecond`: primary CPU
 * per new session, and how long until every worker can see it ((a): the set's acknowledgement;
 * (b): the copy's arrival at the slowest other worker).
 */
async function clusterDesign(n: number, sessions: number, perSecond: number): Promise<BenchRow[]> {
  const primary = startClusterStorePrimary({ maxEntries: 0 });
  const ws = await forkWorkers(n);
  const relay = (from: Worker, m: { benchRepl?: boolean }) => {
    if (!m?.benchRepl) return;
    for (const w of ws) if (w !== from) w.send(m);
  };
  cluster.on("message", relay);
  const rows: BenchRow[] = [];

  let cpu = process.cpuUsage();
  const a = await ask<Dist>(ws[0]!, { task: "paced", design: "a", n: sessions, perSecond });
  let d = process.cpuUsage(cpu);
  rows.push({
    section: "cluster-design",
    store: `(a) primary map, ${n} workers`,
    op: `new session, ${perSecond}/s`,
    p50_us: us(a.p50),
    p99_us: us(a.p99),
    ops_per_s: perSecond,
    detail: `primary CPU ${(((d.user + d.system) / sessions) | 0) + 1} us/session; look-ups: one IPC round trip; memory x1`,
  });

  cpu = process.cpuUsage();
  await ask(ws[0]!, { task: "paced", design: "b", n: sessions, perSecond });
  const reports: Dist[] = [];
  for (const w of ws.slice(1)) {
    const until = performance.now() + 60_000;
    for (;;) {
      const r = await ask<Dist>(w, { report: true });
      if (r.received >= sessions || performance.now() > until) {
        reports.push(r);
        break;
      }
      await new Promise((res) => setTimeout(res, 5));
    }
  }
  d = process.cpuUsage(cpu);
  const received = reports.reduce((x, r) => x + r.received, 0);
  rows.push({
    section: "cluster-design",
    store: `(b) replicate, ${n} workers`,
    op: `new session, ${perSecond}/s`,
    p50_us: us(Math.max(...reports.map((r) => r.p50))),
    p99_us: us(Math.max(...reports.map((r) => r.p99))),
    ops_per_s: perSecond,
    detail:
      `primary CPU ${(((d.user + d.system) / sessions) | 0) + 1} us/session (relays ${n - 1} copies, ` +
      `${received}/${sessions * (n - 1)} arrived); look-ups local but take/delete still a round trip; memory x${n + 1}`,
  });
  cluster.off("message", relay);
  await killWorkers(ws);
  primary.close();
  return rows;
}

async function clusterLatency(n: number): Promise<BenchRow[]> {
  const primary = startClusterStorePrimary();
  const ws = await forkWorkers(2);
  const r = await ask<Awaited<ReturnType<typeof latencies>>>(ws[1]!, { task: "latency", n });
  await killWorkers(ws);
  primary.close();
  return latencyRows("ClusterStore (2 workers)", r);
}

/** Bytes one sealed 158-byte session takes in Redis (MEMORY USAGE), and sessions per GiB. */
async function memoryRow(store: RedisStore, url: string, extra: Record<string, unknown>): Promise<BenchRow> {
  const s = makeSession();
  const value = store.sealer.seal(s.key, s.der);
  await store.set(s.key, value, s.session.expiresAt);
  const raw = new Redis(url);
  const usage = Number(await raw.call("MEMORY", "USAGE", store.redisKey(s.key), "SAMPLES", "0"));
  // What a shorter key would save: the same value under a key 48 chars shorter (the 32-byte
  // context as 8 hashed bytes instead of 64 hex digits), to weigh readability against density.
  const shortKey = store.redisKey(s.key).replace(/:[0-9a-f]{64}:\{/, `:${"0".repeat(16)}:{`);
  await raw.set(shortKey, Buffer.from(value), "EX", 60);
  const shortUsage = Number(await raw.call("MEMORY", "USAGE", shortKey, "SAMPLES", "0"));
  raw.disconnect();
  const key = store.redisKey(s.key).length;
  const perGiB = Math.floor(2 ** 30 / usage);
  extra.memory = {
    der: s.der.length,
    value: value.length,
    key,
    usage,
    perGiB,
    shortKey: shortKey.length,
    shortUsage,
  };
  return {
    section: "memory",
    store: "RedisStore",
    op: `one sealed ${s.der.length}-B session`,
    p50_us: null,
    p99_us: null,
    ops_per_s: null,
    detail:
      `MEMORY USAGE ${usage} B (value ${value.length} B, key ${key} B): ` +
      `${(perGiB / 1e6).toFixed(2)} M sessions per GiB (per shard); ` +
      `with a ${shortKey.length}-B key (context hashed) ${shortUsage} B`,
  };
}

function arg(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : dflt;
}

export default async function bench(args: string[]): Promise<BenchResult> {
  const seconds = arg(args, "seconds", 5);
  const concurrency = args.includes("--concurrency") ? [arg(args, "concurrency", 64)] : [8, 32, 128];
  const n = arg(args, "n", 3000);
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  const extra: Record<string, unknown> = {};
  // --only latency,memory,cluster-latency,load,cluster-design runs some sections.
  const onlyArg = args.indexOf("--only");
  const only = onlyArg >= 0 ? new Set((args[onlyArg + 1] ?? "").split(",")) : undefined;
  const want = (section: string) => {
    const yes = !only || only.has(section);
    if (yes) console.error(`stores: ${section}...`);
    return yes;
  };

  const doLatency = want("latency");
  const doMemory = want("memory");
  if (doLatency) {
    rows.push(...latencyRows("MemoryStore", await latencies(new MemoryStore(), n)));
    rows.push(...sealingRows(n));
  }
  if (doLatency || doMemory) {
    const redis = await startRedis();
    const store = new RedisStore({ url: redis.url, keys: [randomBytes(32)] });
    try {
      await store.ready();
      if (doLatency) rows.push(...latencyRows("RedisStore (1 node)", await latencies(store, n)));
      if (doMemory) rows.push(await memoryRow(store, redis.url, extra));
    } finally {
      await store.close();
      await redis.stop();
    }
    if (doMemory) {
      notes.push(
        "memory: MEMORY USAGE counts key, value and Redis' per-entry overhead (allocator size classes); " +
          "leave ~20% headroom for the hash table's growth and the expires dictionary when sizing.",
      );
    }
  }

  if (want("cluster-latency")) rows.push(...(await clusterLatency(n)));

  if (want("load")) {
    const rc = await startRedisCluster(3);
    try {
      await loadGenerator(rc.seeds, 1, 8); // warm-up: connections, slot map, JIT
      for (const c of concurrency) {
        const g = await loadGenerator(rc.seeds, seconds, c);
        rows.push({
          section: "load",
          store: "RedisStore (3-node cluster)",
          op: `1:1 set:get, ${c} in flight`,
          p50_us: us(g.p50),
          p99_us: us(g.p99),
          ops_per_s: g.opsPerSec,
          detail: `${seconds} s, sealing included; get misses ${g.misses}, errors+timeouts+dropped ${g.errors}`,
        });
      }
    } finally {
      await rc.stop();
    }
    notes.push("load: the generator, the 3 redis-servers and the cluster bus share this machine's cores.");
  }

  if (want("cluster-design")) {
    for (const workers of [2, 4]) rows.push(...(await clusterDesign(workers, 10_000, 2000)));
    notes.push(
      "cluster-design p50/p99: time until every worker can see a new session " +
        "((a) its set acknowledged, (b) its copy arrived at the slowest worker).",
    );
  }
  return {
    title: "Shared session stores: added latency, scale check, memory, cluster design",
    rows,
    notes,
    extra,
  };
}

if (cluster.isWorker && process.env[ROLE] === "worker") await workerMain();
