// `npm run bench -- engine [--quick]`: the cache engine against lru-cache (with ttl) on the same
// inputs, and memory per session at 100k sessions against a Map<string, Buffer> (issue 2).
//
// Speed: 20480 pre-generated 158-byte TLS 1.2 server sessions (plus as many more for eviction and
// misses). Both sides get the same ids and bytes; each side does what a real user would: sesscache
// gets pre-parsed Sessions and answers with a Session over a copy of the bytes, lru-cache keys by
// id.toString("hex") per operation and stores the DER Buffer. Rounds alternate between the two so
// a busy machine slows both alike; the median round is reported.
//
// Memory: each measurement runs in its own child process (fresh heap, --expose-gc, gc before and
// after), filling a store with 100k distinct 158-byte sessions generated on the fly (so the inputs
// are garbage by the time memory is read). The Map baseline keeps one Buffer per session with its
// own memory, as Node hands them out in 'newSession'.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { LRUCache } from "lru-cache";
import { SessionCache } from "../src/engine/index.js";
import { parseSession, type Session } from "../src/session/index.js";
import { buildSessionDer } from "../test/support/session-der.js";
import type { Bench, BenchRow } from "./run.js";

const N = 20480;
const MEMORY_SESSIONS = 100_000;
const TARGET_RATIO = 1.5;
const TARGET_PER_MIB = 5000;
const TTL_S = 7200;
const V12 = 0x0303;
/** The session-id context the sessions were made under (a server sets one, R19). */
const CONTEXT = new Uint8Array(32).fill(0x61);

/** A 158-byte TLS 1.2 server session like Node's: 32-byte id and context, EMS flag, x25519. */
function template(time: number): Uint8Array {
  const der = buildSessionDer({
    id: new Uint8Array(32),
    time,
    timeout: TTL_S,
    sessionIdContext: CONTEXT,
    cipherId: 0xc02f,
    flags: 1,
    group: 0x1d,
  });
  if (der.length !== 158) throw new Error(`template is ${der.length} bytes, expected 158`);
  return der;
}

/** Offset of the id in the template (found once, then ids are written in place). */
function idOffset(der: Uint8Array): number {
  const s = parseSession(der);
  return s.id.byteOffset - der.byteOffset;
}

interface Input {
  id: Buffer;
  der: Buffer;
  session: Session;
}

function inputs(count: number, time: number): Input[] {
  const tpl = template(time);
  const off = idOffset(tpl);
  const out: Input[] = [];
  for (let i = 0; i < count; i++) {
    const der = Buffer.from(tpl);
    randomId(der, off);
    const id = Buffer.from(der.subarray(off, off + 32));
    out.push({ id, der, session: parseSession(der) });
  }
  return out;
}

function shuffled(n: number): Int32Array {
  const a = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** ops/s of one timed run of `ops` calls. */
/**
 * ops per second of this process's CPU time (user + system, all threads, so GC helpers count):
 * on a shared machine wall time also counts the time other processes had the CPU.
 */
function timeRun(ops: number, f: (i: number) => number): number {
  let sink = 0;
  const c0 = process.cpuUsage();
  for (let i = 0; i < ops; i++) sink += f(i);
  const c = process.cpuUsage(c0);
  if (sink === -1) console.log("");
  return ops / ((c.user + c.system) / 1e6);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

interface Contender {
  name: string;
  setup(): void;
  run(i: number): number;
}

interface RaceResult {
  /** Median ops/s of each contender. */
  ops: number[];
  /** Median over rounds of (first / second) within the same round: robust to a machine whose load changes. */
  ratio: number;
}

/** Alternating rounds of two contenders. */
function race(contenders: [Contender, Contender], ops: number, rounds: number): RaceResult {
  const results: number[][] = [[], []];
  for (const c of contenders) {
    c.setup();
    timeRun(Math.min(ops, 200_000), (i) => c.run(i)); // warm-up: let the JIT settle
  }
  for (let r = 0; r < rounds; r++) {
    contenders.forEach((c, k) => {
      c.setup();
      globalThis.gc?.();
      results[k].push(timeRun(ops, (i) => c.run(i)));
    });
  }
  return {
    ops: results.map(median),
    ratio: median(results[0].map((a, i) => a / results[1][i])),
  };
}

function speed(quick: boolean): { rows: BenchRow[]; ratios: Record<string, number> } {
  const now = Math.floor(Date.now() / 1000);
  const all = inputs(2 * N, now);
  const held = all.slice(0, N);
  const absent = all.slice(N);
  const order = shuffled(N);
  const ops = quick ? 200_000 : 500_000;
  const rounds = quick ? 3 : 9;
  const ttlMs = TTL_S * 1000;

  let sc = new SessionCache({ cacheSize: N, sessionIdContext: CONTEXT });
  let lru = new LRUCache<string, Buffer>({ max: N, ttl: ttlMs });
  const fillBoth = () => {
    sc = new SessionCache({ cacheSize: N, sessionIdContext: CONTEXT });
    lru = new LRUCache<string, Buffer>({ max: N, ttl: ttlMs });
    for (const x of held) {
      sc.addSession(x.session);
      lru.set(x.id.toString("hex"), x.der);
    }
  };
  fillBoth();

  const rows: BenchRow[] = [];
  const ratios: Record<string, number> = {};
  const row = (workload: string, { ops: [a, b], ratio }: RaceResult, target = true) => {
    if (target) ratios[workload] = ratio;
    rows.push({
      workload,
      "sesscache ops/s": Math.round(a),
      "lru-cache ops/s": Math.round(b),
      ratio: Number(ratio.toFixed(2)),
      target: target ? `≥ ${TARGET_RATIO}x` : "(info)",
      met: target ? (ratio >= TARGET_RATIO ? "yes" : "no") : "",
    });
  };

  // add-with-eviction: the cache is full; every add is a new key and evicts one session (cycling
  // through 2N sessions from the N not held, each comes back after it was evicted).
  const cycle = all.length;
  let k = N;
  const fresh = () => {
    fillBoth();
    k = N;
  };
  row(
    "add with eviction (20480 full)",
    race(
      [
        {
          name: "sesscache",
          setup: fresh,
          run: () => (sc.addSession(all[k++ % cycle].session) ? 1 : 0),
        },
        {
          name: "lru-cache",
          setup: fresh,
          run: () => {
            const x = all[k++ % cycle];
            lru.set(x.id.toString("hex"), x.der);
            return 1;
          },
        },
      ],
      ops,
      rounds,
    ),
  );

  row(
    "lookup hit",
    race(
      [
        {
          name: "sesscache",
          setup: () => fillBoth(),
          run: (i) => (sc.lookup(held[order[i % N]].id, V12) as Session).der.length,
        },
        {
          name: "lru-cache",
          setup: () => fillBoth(),
          run: (i) => lru.get(held[order[i % N]].id.toString("hex"))!.length,
        },
      ],
      ops,
      rounds,
    ),
  );

  row(
    "lookup miss",
    race(
      [
        {
          name: "sesscache",
          setup: () => fillBoth(),
          run: (i) => (sc.lookup(absent[order[i % N]].id, V12) === undefined ? 1 : 0),
        },
        {
          name: "lru-cache",
          setup: () => fillBoth(),
          run: (i) => (lru.get(absent[order[i % N]].id.toString("hex")) === undefined ? 1 : 0),
        },
      ],
      ops,
      rounds,
    ),
  );

  // The same add-with-eviction, sesscache decoding the DER itself (what addSession(bytes) costs).
  row(
    "add with eviction, from DER (decode included)",
    race(
      [
        {
          name: "sesscache",
          setup: fresh,
          run: () => (sc.addSession(all[k++ % cycle].der) ? 1 : 0),
        },
        {
          name: "lru-cache",
          setup: fresh,
          run: () => {
            const x = all[k++ % cycle];
            lru.set(x.id.toString("hex"), x.der);
            return 1;
          },
        },
      ],
      ops,
      rounds,
    ),
    false,
  );
  return { rows, ratios };
}

// ---- memory ------------------------------------------------------------------------------------

type Store = "sesscache" | "sesscache-unbounded" | "map" | "lru-cache";

interface MemoryResult {
  store: Store;
  sessions: number;
  rssBytes: number;
  heapBytes: number;
  externalBytes: number;
}

/** Fills a store with n sessions made by overwriting the id of `scratch` in place. */
function fill(store: Store, n: number, capacity: number, scratch: Uint8Array, off: number): unknown {
  if (store === "sesscache" || store === "sesscache-unbounded") {
    const cache = new SessionCache({
      cacheSize: store === "sesscache" ? capacity : 0,
      sessionIdContext: CONTEXT,
    });
    for (let i = 0; i < n; i++) {
      randomId(scratch, off);
      cache.addSession(scratch);
      if (store === "sesscache-unbounded" && cache.stats().number > capacity) cache.flush(0);
    }
    return cache;
  }
  // As Node hands them out in 'newSession': one Buffer with its own memory per session.
  const own = () => {
    const b = Buffer.alloc(scratch.length);
    b.set(scratch);
    return b;
  };
  if (store === "map") {
    const map = new Map<string, Buffer>();
    for (let i = 0; i < n; i++) {
      randomId(scratch, off);
      const b = own();
      map.set(b.toString("hex", off, off + 32), b);
      if (map.size > capacity) map.delete(map.keys().next().value!);
    }
    return map;
  }
  const lru = new LRUCache<string, Buffer>({ max: capacity, ttl: TTL_S * 1000 });
  for (let i = 0; i < n; i++) {
    randomId(scratch, off);
    const b = own();
    lru.set(b.toString("hex", off, off + 32), b);
  }
  return lru;
}

// A cheap PRNG for the ids: crypto.randomFillSync leaves ~200 bytes of malloc'd memory per call
// in the process (measured), which would be charged to whichever store is being filled.
let rng = 0x2545f491;
function randomId(b: Uint8Array, off: number): void {
  for (let i = 0; i < 32; i += 4) {
    rng ^= rng << 13;
    rng ^= rng >>> 17;
    rng ^= rng << 5;
    b[off + i] = rng;
    b[off + i + 1] = rng >>> 8;
    b[off + i + 2] = rng >>> 16;
    b[off + i + 3] = rng >>> 24;
  }
}

/**
 * In a child process: the memory that n sessions add to one store. A warm-up first runs the same
 * code on a throwaway store of 1000 sessions (so JIT code and the young generation are in the
 * baseline: they are the cost of handling sessions, not of keeping them; the few hundred KB the
 * throwaway store frees may be reused, under 3 bytes per session).
 */
function memoryChild(store: Store, n: number): MemoryResult {
  const gc = globalThis.gc;
  if (!gc) throw new Error("run with --expose-gc");
  const tpl = template(Math.floor(Date.now() / 1000));
  const off = idOffset(tpl);
  const scratch = new Uint8Array(tpl);
  const settle = () => {
    for (let i = 0; i < 4; i++) gc();
  };
  let warm: unknown = fill(store, n, 1000, scratch, off);
  warm = undefined;
  settle();
  const before = process.memoryUsage();
  const keep = fill(store, n, n, scratch, off);
  settle();
  const after = process.memoryUsage();
  if (!keep || warm) throw new Error("unreachable");
  const size = keep instanceof SessionCache ? keep.stats().number : (keep as Map<string, Buffer>).size;
  if (size !== n) throw new Error(`${store} holds ${size} sessions, expected ${n}`);
  return {
    store,
    sessions: n,
    rssBytes: after.rss - before.rss,
    heapBytes: after.heapUsed - before.heapUsed,
    externalBytes: after.external - before.external,
  };
}

function memory(store: Store, n: number): MemoryResult {
  const here = fileURLToPath(import.meta.url);
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", "--expose-gc", here, "--memory-child", store, String(n)],
    { encoding: "utf8", maxBuffer: 1 << 20 },
  );
  if (r.status !== 0) throw new Error(`memory child (${store}) failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as MemoryResult;
}

const bench: Bench = async (args) => {
  const quick = args.includes("--quick");
  const { rows, ratios } = speed(quick);
  const notes: string[] = [];
  const misses = Object.entries(ratios).filter(([, r]) => r < TARGET_RATIO);
  notes.push(
    misses.length === 0
      ? `speed: target ≥ ${TARGET_RATIO}x lru-cache met on all three workloads.`
      : `speed: target ≥ ${TARGET_RATIO}x lru-cache NOT met on: ${misses.map(([w, r]) => `${w} (${r.toFixed(2)}x)`).join(", ")}.`,
  );

  const memRows: BenchRow[] = [];
  const mem: MemoryResult[] = [];
  const stores: Store[] = args.includes("--no-memory")
    ? []
    : ["sesscache", "sesscache-unbounded", "map", "lru-cache"];
  for (const store of stores) {
    const m = memory(store, MEMORY_SESSIONS);
    mem.push(m);
    const perMiB = m.sessions / (m.rssBytes / 2 ** 20);
    memRows.push({
      workload: `memory: ${
        {
          sesscache: "sesscache (cacheSize 100000)",
          "sesscache-unbounded": "sesscache (cacheSize 0)",
          map: "Map<string, Buffer> (hex key)",
          "lru-cache": "lru-cache (hex key, ttl)",
        }[store]
      }, 100k x 158 B`,
      "RSS B/session": Math.round(m.rssBytes / m.sessions),
      "heap B/session": Math.round(m.heapBytes / m.sessions),
      "external B/session": Math.round(m.externalBytes / m.sessions),
      "sessions/MiB RSS": Math.round(perMiB),
      target: store.startsWith("sesscache") ? `≥ ${TARGET_PER_MIB}` : "(baseline)",
      met: store.startsWith("sesscache") ? (perMiB >= TARGET_PER_MIB ? "yes" : "no") : "",
    });
  }
  const sc = mem[0];
  const scPerMiB = sc ? sc.sessions / (sc.rssBytes / 2 ** 20) : 0;
  if (sc)
    notes.push(
      `memory: ${Math.round(scPerMiB)} sessions per MiB of RSS at 100k sessions (cacheSize 100000); target ≥ ${TARGET_PER_MIB}: ${scPerMiB >= TARGET_PER_MIB ? "met" : "NOT met"}. ` +
        `Map<string, Buffer> baseline: ${Math.round(mem[2].sessions / (mem[2].rssBytes / 2 ** 20))} per MiB.`,
    );
  notes.push(
    "RSS is the growth of the whole process after gc, measured in a fresh child process per store; " +
      "speed: ops per second of process CPU time; rounds alternate between the two; ops/s are medians and the ratio is the median of " +
      "the per-round ratios (robust to a machine whose load changes). lru-cache keys by id.toString('hex').",
  );
  return {
    title: `Session cache engine: ${N} sessions (speed), ${MEMORY_SESSIONS} sessions (memory), 158-byte DER`,
    rows: [...rows, ...memRows],
    notes,
    extra: { memory: mem, ratios, node: process.version },
  };
};

export default bench;

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === "--memory-child") {
  const result = memoryChild(process.argv[3] as Store, Number(process.argv[4]));
  console.log(JSON.stringify(result));
}
