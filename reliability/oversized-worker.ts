// The cluster worker of the oversized suite (forked by oversized.ts, which is the primary):
// 1. a ClusterStore with the default cap sends a burst of oversized values: refused in the worker,
//    nothing sent; a normal session round-trips right after (250 ms deadline);
// 2. a ClusterStore whose cap (10240) is above the primary's (4096), a misconfiguration: its burst
//    crosses IPC (up to its maxInFlight, the rest dropped), the primary refuses each; measured: how
//    long until a normal session round-trips again; then a second burst, which the primary's cap
//    (carried by its refusals) keeps in the worker;
// 3. raw IPC 'set' messages of 1 MiB (a process not using ClusterStore): the same measure.
// It reports {result} over IPC; the primary checks its own counters and memory.
import { randomBytes } from "node:crypto";
import type { StoreKey } from "../src/engine/store.js";
import { CLUSTER_MESSAGE_TAG, ClusterStore } from "../src/stores/cluster-store.js";

const burst = Number(process.argv[2]);
const key = (i: number): StoreKey => {
  const id = randomBytes(32);
  id.writeUInt32BE(i, 0);
  return { namespace: "server", protocolVersion: 0x0304, context: Buffer.from("ctx"), id };
};
const expiresAt = Date.now() + 60_000;

async function timed(store: ClusterStore, size: number, n: number) {
  const der = randomBytes(size);
  const t0 = performance.now();
  let slowest = 0;
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const k = key(i);
      const t = performance.now();
      await store.set(k, store.sealer.seal(k, der), expiresAt);
      slowest = Math.max(slowest, performance.now() - t);
    }),
  );
  return { ms: performance.now() - t0, slowestMs: slowest, stats: store.stats() };
}

const local = new ClusterStore({ channel: "oversized" });
const wide = new ClusterStore({ channel: "oversized", maxSessionBytes: 10240 });

async function roundTrip(timeoutMs: number): Promise<{ ok: boolean; ms: number }> {
  const t = performance.now();
  const k = key(1 << 30);
  const der = randomBytes(200);
  await local.set(k, local.sealer.seal(k, der), expiresAt, { timeoutMs });
  const back = await local.get(k, { timeoutMs });
  const ok = back !== undefined && Buffer.compare(Buffer.from(local.sealer.open(k, back)), der) === 0;
  return { ok, ms: performance.now() - t };
}

/** Round trips (250 ms deadline each) until one succeeds: how long the channel took to recover. */
async function recovery(): Promise<{ ok: boolean; ms: number }> {
  const t = performance.now();
  while (performance.now() - t < 60_000) {
    if ((await roundTrip(250)).ok) return { ok: true, ms: performance.now() - t };
  }
  return { ok: false, ms: performance.now() - t };
}

// 1. The default caps: refused in the worker; a normal session round-trips right after.
const localBurst = await timed(local, 8000, burst);
const normal = await roundTrip(250);

// 2. A worker whose cap exceeds the primary's (default maxInFlight 1000: the rest are dropped).
const wideBurst = await timed(wide, 8000, burst);
const afterWide = await recovery();
// The primary's refusals told the worker its cap: a second burst stays in the worker.
const wideOversizedBefore = wide.stats().oversized;
const wideAgain = await timed(wide, 8000, burst);
const wideAgainLocal = wideAgain.stats.oversized - wideOversizedBefore;
const normalAfterWideAgain = await roundTrip(250);

// 3. Raw requests of 1 MiB (a process not using ClusterStore): the primary must parse each IPC
// message before it can refuse it.
const big = "A".repeat(1024 * 1024);
const raw = 100;
for (let i = 0; i < raw; i++) {
  process.send!({
    [CLUSTER_MESSAGE_TAG]: "oversized",
    op: "set",
    i: "raw",
    n: i,
    k: "a2V5",
    v: big,
    e: expiresAt,
  });
}
const afterRaw = await recovery();

process.send!(
  {
    result: {
      localBurst,
      wideBurst,
      raw,
      normal,
      afterWide,
      wideAgainLocal,
      wideAgainMs: wideAgain.ms,
      normalAfterWideAgain,
      afterRaw,
    },
  },
  () => process.exit(0),
);
