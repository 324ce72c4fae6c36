// virtual-day: a day of virtual seconds on the engine with an injected clock. Each second brings a
// Poisson number of new sessions (full handshakes: handshakeStarted, updateCache, handshakeCompleted,
// as the adapter does) and of resumption look-ups of sessions made up to 2 × timeout ago (so some
// are found expired). Expiry on look-up and the auto-flush every 255 handshakes (R17, R18) must
// keep the number of sessions at the steady state min(rate × timeout, cacheSize), within a band
// (the flush lag: at most 255 handshakes' worth of arrivals, plus Poisson noise); verifyIntegrity()
// runs at every virtual hour.
import { performance } from "node:perf_hooks";
import { SessionCache } from "../src/engine/index.js";
import { parseSession, withTimes } from "../src/session/index.js";
import {
  captureRealSessions,
  check,
  poisson,
  prng,
  type SuiteResult,
  variant,
  variantId,
} from "./support.js";

export interface VirtualDayOptions {
  /** Virtual seconds (default 86 400). */
  seconds?: number;
  /** New sessions per second (default 20). */
  rate?: number;
  /** Resumption look-ups per second (default 60). */
  lookupRate?: number;
  /** Session timeout, seconds (default 600: steady state 12 000 < cacheSize). */
  timeout?: number;
  cacheSize?: number;
  seed?: number;
  log?: (line: string) => void;
}

const T0 = 1_700_000_000;

export async function virtualDay(o: VirtualDayOptions = {}): Promise<SuiteResult> {
  const seconds = o.seconds ?? 86_400;
  const rate = o.rate ?? 20;
  const lookupRate = o.lookupRate ?? 60;
  const timeout = o.timeout ?? 600;
  const cacheSize = o.cacheSize ?? 20480;
  const seed = o.seed ?? 1;
  const log = o.log ?? (() => {});
  const rand = prng(seed);
  const bases = await captureRealSessions();
  let now = T0;
  const cache = new SessionCache({ cacheSize, timeout, clock: () => now });
  const failures: string[] = [];
  const steady = Math.min(rate * timeout, cacheSize);
  // Arrivals between two auto-flushes: 255 handshakes at (rate + lookupRate) per second.
  const flushLag = Math.ceil((255 / (rate + lookupRate)) * rate);
  const noise = 4 * Math.sqrt(steady);
  const lo = Math.floor(steady - noise);
  const hi = Math.min(cacheSize, Math.ceil(steady + flushLag + noise));
  // The band applies once the steady state is reached: when bounded by cacheSize, once the cache
  // has filled (with margin); else once the first sessions could have expired (2 × timeout).
  const bounded = steady < rate * timeout;
  const warm = bounded ? Math.ceil((1.5 * cacheSize) / rate) : 2 * timeout;
  /** First sequence number made at each virtual second (for picking look-up targets by age). */
  const firstAt: number[] = [];
  let seq = 0;
  let found = 0;
  /** Look-ups after the first 2 × timeout, and how many found their session. */
  let lookups = 0;
  let minN = Number.POSITIVE_INFINITY;
  let maxN = 0;
  const checkpoints: { hour: number; sessions: number; integrity: string }[] = [];
  const t0 = performance.now();
  for (let s = 0; s < seconds; s++) {
    now = T0 + s;
    firstAt.push(seq);
    const k = poisson(rand, rate);
    for (let j = 0; j < k; j++, seq++) {
      const b = seq % bases.length;
      cache.handshakeStarted("server");
      // The session as the handshake made it now: the base's bytes, this id, this start time.
      const fresh = withTimes(parseSession(variant(bases[b]!, seq)), { time: now });
      cache.updateCache(fresh, "server");
      cache.handshakeCompleted("server");
    }
    const m = poisson(rand, lookupRate);
    for (let j = 0; j < m && seq > 0; j++) {
      const age = Math.floor(rand() * Math.min(2 * timeout, s + 1));
      const from = firstAt[s - age]!;
      const to = s - age + 1 < firstAt.length ? firstAt[s - age + 1]! : seq;
      if (to <= from) continue;
      const target = from + Math.floor(rand() * (to - from));
      const b = bases[target % bases.length]!;
      cache.handshakeStarted("server");
      const hit = cache.lookup(variantId(b, target), b.protocolVersion, b.sessionIdContext) !== undefined;
      // Counted once targets span the full 2 × timeout of ages.
      if (s >= 2 * timeout) {
        lookups++;
        if (hit) found++;
      }
      cache.handshakeCompleted("server");
    }
    const n = cache.memoryUsage().sessions;
    if (s >= warm) {
      if (n < minN) minN = n;
      if (n > maxN) maxN = n;
    }
    if ((s + 1) % 3600 === 0 || s + 1 === seconds) {
      let integrity = "ok";
      try {
        cache.verifyIntegrity();
      } catch (err) {
        integrity = (err as Error).message;
      }
      checkpoints.push({ hour: Math.round((s + 1) / 360) / 10, sessions: n, integrity });
      log(`virtual ${((s + 1) / 3600).toFixed(1)} h: ${n} sessions, integrity ${integrity}`);
    }
  }
  const st = cache.stats();
  const wall = (performance.now() - t0) / 1000;
  check(failures, minN >= lo && maxN <= hi, `sessions ranged ${minN}..${maxN}, band ${lo}..${hi}`);
  check(failures, maxN <= cacheSize, `sessions ${maxN} over cacheSize ${cacheSize}`);
  for (const c of checkpoints) check(failures, c.integrity === "ok", `hour ${c.hour}: ${c.integrity}`);
  // Sessions younger than timeout are found; older ones (up to 2 × timeout) are not: about half.
  const expectedFound = bounded ? undefined : 0.5;
  if (expectedFound !== undefined) {
    const share = found / Math.max(1, lookups);
    check(failures, share > 0.4 && share < 0.6, `look-ups found ${share.toFixed(3)}, expected ≈ 0.5`);
  }
  cache.close();
  return {
    suite: "virtual-day",
    ok: failures.length === 0,
    failures,
    figures: {
      virtualSeconds: seconds,
      seed,
      newSessionsPerSecond: rate,
      lookupsPerSecond: lookupRate,
      timeout,
      cacheSize,
      sessionsMade: seq,
      lookups,
      found,
      foundShare: Math.round((found / Math.max(1, lookups)) * 1000) / 1000,
      steadyState: steady,
      band: `${lo}..${hi}`,
      sessionsRange: `${minN}..${maxN}`,
      timeouts: st.timeouts,
      cacheFull: st.cacheFull,
      checkpoints: checkpoints.length,
      checkpointSessions: checkpoints.map((c) => c.sessions).join(" "),
      wallSeconds: Math.round(wall * 10) / 10,
    },
  };
}
