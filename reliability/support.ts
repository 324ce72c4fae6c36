// Shared pieces of the reliability suites: real sessions taken from Node handshakes (once), ids
// varied in place, RSS sampling with a forced GC, a seeded PRNG and the result shape the runner prints.
import { once } from "node:events";
import tls from "node:tls";
import v8 from "node:v8";
import vm from "node:vm";
import { SessionCache } from "../src/engine/index.js";
import { attachSessionCache } from "../src/server/index.js";
import { testPki } from "../test/support/certs.js";

export interface SuiteResult {
  suite: string;
  ok: boolean;
  /** Figures for RESULTS.md (numbers, strings). */
  figures: Record<string, unknown>;
  /** Failed checks, empty when ok. */
  failures: string[];
}

/** A real session's DER and where its id sits in it (so variants differ only in the id). */
export interface RealSession {
  der: Buffer;
  protocolVersion: number;
  idOffset: number;
  idLength: number;
  sessionIdContext: Uint8Array;
}

/**
 * Server-side sessions of one TLS 1.2 and one TLS 1.3 handshake between Node peers, as the adapter
 * hands them to the engine (so: the sizes and fields a real cache holds).
 */
export async function captureRealSessions(): Promise<RealSession[]> {
  const pki = testPki();
  const cache = new SessionCache();
  const server = tls.createServer({ key: pki.key, cert: pki.cert }, (s) => s.end("x"));
  attachSessionCache(server, cache, { log: () => {} });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  try {
    for (const v of ["TLSv1.2", "TLSv1.3"] as const) {
      const c = tls.connect({
        port,
        host: "127.0.0.1",
        ca: pki.caCert,
        servername: "localhost",
        minVersion: v,
        maxVersion: v,
      });
      c.on("data", () => {});
      await once(c, "close");
    }
  } finally {
    server.close();
  }
  const out: RealSession[] = [];
  for (const s of cache.sessions()) {
    const der = Buffer.from(s.der);
    const idOffset = der.indexOf(Buffer.from(s.id));
    if (idOffset < 0 || s.id.length < 8) throw new Error("captureRealSessions: id not found in DER");
    out.push({
      der,
      protocolVersion: s.protocolVersion,
      idOffset,
      idLength: s.id.length,
      sessionIdContext: Uint8Array.from(s.sessionIdContext),
    });
  }
  if (!out.some((s) => s.protocolVersion === 0x0303) || !out.some((s) => s.protocolVersion === 0x0304)) {
    throw new Error("captureRealSessions: expected one TLS 1.2 and one TLS 1.3 session");
  }
  return out;
}

/** A copy of `base` whose id's first 8 bytes are `n` (big-endian): distinct sessions, same shape. */
export function variant(base: RealSession, n: number): Buffer {
  const der = Buffer.from(base.der);
  der.writeBigUInt64BE(BigInt(n), base.idOffset);
  return der;
}

/** The id `variant(base, n)` carries. */
export function variantId(base: RealSession, n: number): Buffer {
  const id = Buffer.from(base.der.subarray(base.idOffset, base.idOffset + base.idLength));
  id.writeBigUInt64BE(BigInt(n), 0);
  return id;
}

let gcFn: (() => void) | undefined;
/** A full GC (with or without --expose-gc), so RSS readings compare live memory. */
export function fullGc(): void {
  if (gcFn === undefined) {
    const g = (globalThis as { gc?: () => void }).gc;
    if (typeof g === "function") gcFn = g;
    else {
      v8.setFlagsFromString("--expose-gc");
      gcFn = vm.runInNewContext("gc") as () => void;
    }
  }
  gcFn();
}

export const MiB = 1024 * 1024;
export const mib = (bytes: number) => Math.round((bytes / MiB) * 10) / 10;

/** RSS after a full GC. */
export function settledRss(): number {
  fullGc();
  fullGc();
  return process.memoryUsage().rss;
}

/** mulberry32: a small seeded PRNG (the runs are reproducible from their seed). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Poisson-distributed count with mean `mean` (Knuth for small means, normal approximation above). */
export function poisson(rand: () => number, mean: number): number {
  if (mean > 50) {
    const u = Math.max(rand(), 1e-12);
    const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
    return Math.max(0, Math.round(mean + Math.sqrt(mean) * z));
  }
  const l = Math.exp(-mean);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= rand();
  } while (p > l);
  return k - 1;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function check(failures: string[], ok: boolean, what: string): void {
  if (!ok) failures.push(what);
}
