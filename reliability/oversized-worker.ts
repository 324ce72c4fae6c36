// The cluster worker of the oversized suite (forked by oversized.ts, which is the primary). It sends
// bursts of oversized values three ways and then checks that a normal session still goes through:
// 1. a ClusterStore with the default cap: refused in the worker, nothing sent;
// 2. a ClusterStore with a cap above the primary's (a misconfigured worker): sent, the primary
//    refuses each and answers at once (no set waits for its deadline);
// then a normal session right after, then
// 3. raw IPC 'set' messages of 1 MiB (a worker not using ClusterStore): the primary refuses them,
//    and the time until a normal session round-trips again is measured.
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
const localBurst = await timed(local, 8000, burst);

const wide = new ClusterStore({ channel: "oversized", maxSessionBytes: 10240, maxInFlight: burst + 10 });
const wideBurst = await timed(wide, 8000, burst);

async function roundTrip(timeoutMs: number): Promise<{ ok: boolean; ms: number }> {
  const t = performance.now();
  const k = key(1 << 30);
  const der = randomBytes(200);
  await wide.set(k, wide.sealer.seal(k, der), expiresAt, { timeoutMs });
  const back = await wide.get(k, { timeoutMs });
  const ok = back !== undefined && Buffer.compare(Buffer.from(wide.sealer.open(k, back)), der) === 0;
  return { ok, ms: performance.now() - t };
}

// Right after the bursts: a normal session round-trips through the primary.
const normal = await roundTrip(250);

// Raw requests of 1 MiB (a process not using ClusterStore): the primary must parse each IPC message
// before it can refuse it, so this measures how long the channel takes to recover.
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
const afterRaw = await roundTrip(30_000);

process.send!({ result: { localBurst, wideBurst, raw, normal, afterRaw } }, () => process.exit(0));
