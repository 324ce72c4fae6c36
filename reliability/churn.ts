// churn: N distinct real sessions pushed through a SessionCache of cacheSize (default 10^6 through
// 20480), with a look-up of a recent session and of a long-evicted one every 4 insertions. RSS is
// read (after a full GC) once the cache is full and warmed up, sampled along the way, and at the
// end: the bound is end ≤ warm + max(16 MiB, 10 %). verifyIntegrity() must hold at the end and the
// cache must hold exactly cacheSize sessions (R11).
import { performance } from "node:perf_hooks";
import { SessionCache } from "../src/engine/index.js";
import {
  captureRealSessions,
  check,
  MiB,
  mib,
  type SuiteResult,
  settledRss,
  variant,
  variantId,
} from "./support.js";

export interface ChurnOptions {
  sessions?: number;
  cacheSize?: number;
  /** Insertions before the warm RSS reading (default max(3 × cacheSize, 10 % of sessions)). */
  warmup?: number;
  log?: (line: string) => void;
}

export async function churn(o: ChurnOptions = {}): Promise<SuiteResult> {
  const n = o.sessions ?? 1_000_000;
  const cacheSize = o.cacheSize ?? 20480;
  const warmup = Math.min(n, o.warmup ?? Math.max(3 * cacheSize, Math.floor(n / 10)));
  const log = o.log ?? (() => {});
  const bases = await captureRealSessions();
  const cache = new SessionCache({ cacheSize });
  const failures: string[] = [];
  const t0 = performance.now();
  const rssBefore = settledRss();
  let warmRss = 0;
  let peakRss = 0;
  let hits = 0;
  let lookups = 0;
  const sampleEvery = Math.max(1, Math.floor(n / 20));
  for (let i = 0; i < n; i++) {
    const base = bases[i % bases.length]!;
    cache.addSession(variant(base, i));
    if ((i & 3) === 3) {
      // A recent session (still cached) and one evicted long ago (a miss).
      const recent = Math.max(0, i - 1 - (i % Math.min(Math.floor(cacheSize / 2), 1000)));
      const rb = bases[recent % bases.length]!;
      if (cache.lookup(variantId(rb, recent), rb.protocolVersion, rb.sessionIdContext) !== undefined) hits++;
      const old = Math.max(0, i - 4 * cacheSize);
      const ob = bases[old % bases.length]!;
      cache.lookup(variantId(ob, old), ob.protocolVersion, ob.sessionIdContext);
      lookups += 2;
    }
    if (i + 1 === warmup) {
      warmRss = settledRss();
      log(`warm-up done at ${warmup}: rss ${mib(warmRss)} MiB, ${cache.memoryUsage().sessions} sessions`);
    }
    if ((i + 1) % sampleEvery === 0) {
      const rss = process.memoryUsage().rss;
      if (rss > peakRss) peakRss = rss;
      log(`${i + 1} / ${n}: rss ${mib(rss)} MiB`);
    }
  }
  const endRss = settledRss();
  const seconds = (performance.now() - t0) / 1000;
  let integrity = "ok";
  try {
    cache.verifyIntegrity();
  } catch (err) {
    integrity = (err as Error).message;
  }
  const mem = cache.memoryUsage();
  const st = cache.stats();
  const margin = Math.max(16 * MiB, warmRss * 0.1);
  const bound = warmRss + margin;
  check(failures, endRss <= bound, `end RSS ${mib(endRss)} MiB over the bound ${mib(bound)} MiB`);
  check(failures, integrity === "ok", `verifyIntegrity: ${integrity}`);
  check(failures, mem.sessions === Math.min(cacheSize, n), `sessions ${mem.sessions} != ${cacheSize}`);
  check(failures, st.cacheFull === Math.max(0, n - cacheSize), `cacheFull ${st.cacheFull}`);
  check(failures, hits === lookups / 2, `recent look-ups hit ${hits} of ${lookups / 2}`);
  cache.close();
  return {
    suite: "churn",
    ok: failures.length === 0,
    failures,
    figures: {
      sessions: n,
      cacheSize,
      sessionDerBytes: bases.map((b) => b.der.length).join("/"),
      lookups,
      recentHits: hits,
      evictions: st.cacheFull,
      warmupInsertions: warmup,
      rssBeforeMiB: mib(rssBefore),
      rssWarmMiB: mib(warmRss),
      rssPeakSampledMiB: mib(peakRss),
      rssEndMiB: mib(endRss),
      boundMiB: mib(bound),
      cacheMemory: mem,
      verifyIntegrity: integrity,
      seconds: Math.round(seconds * 10) / 10,
      insertionsPerSecond: Math.round(n / seconds),
    },
  };
}
