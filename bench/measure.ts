// How a bench server's cost is measured: server CPU per handshake, one server at a time.
//
// On a 2-core VM two servers driven at once by two clients differed by up to 1.5x when they were the
// same server (the old method's noise floor). So here one server runs at a time, pinned to CPU 0
// (server-child.ts), driven by one `openssl s_time` pinned to CPU 1: the benchmark's own processes
// do not compete for either core. Anything else running on the machine still does, so run it idle.
import { sTime, type TlsVersion } from "../test/support/tls-peers.js";
import type { ChildReport, ServerChild } from "./server-child.js";

export interface Load {
  version: TlsVersion;
  /** Resumed (s_time -reuse) or full (-new) handshakes. */
  reuse: boolean;
  seconds: number;
}

/** Drives one server alone for `load.seconds`; answers its CPU microseconds per handshake. */
export async function measure(srv: ServerChild, load: Load): Promise<number> {
  await srv.ask({ cmd: "start" });
  const r = await sTime({
    port: srv.port,
    version: load.version,
    reuse: load.reuse,
    seconds: load.seconds,
    www: "/",
  });
  const s = await srv.ask<ChildReport>({ cmd: "stop" });
  const what = `${srv.variant}, TLS ${load.version} ${load.reuse ? "resumed" : "full"}`;
  if (r.connections === 0 || s.handshakes === 0) {
    throw new Error(`${what}: s_time made no connection:\n${r.stdout}\n${r.stderr}`);
  }
  // Counted by the server itself: a resumption benchmark that did not resume (or the reverse) would
  // measure the wrong thing. s_time -reuse makes one full handshake first.
  if (load.reuse ? s.resumed < s.handshakes - 1 : s.resumed > 0) {
    throw new Error(`${what}: ${s.resumed} of ${s.handshakes} handshakes resumed`);
  }
  // The two counts differ by the connection in flight when the window closed (and -reuse's first, full
  // one, which s_time leaves out of its timed count); more means connections lost on the way.
  if (Math.abs(s.handshakes - r.connections) > 2 + r.connections / 100) {
    throw new Error(`${what}: the server counted ${s.handshakes} handshakes, s_time ${r.connections}`);
  }
  return s.cpuMicros / s.handshakes;
}

export interface PairedResult {
  /** Per round: baseline µs over ours (> 1: ours is cheaper), each side's processes averaged. */
  ratios: number[];
  /** Per round: each side's µs per handshake, its processes averaged. */
  ours: number[];
  base: number[];
  /**
   * Per process of ours: the base side's mean over all rounds over this process's mean. Their
   * spread is the difference between processes, which the rounds' spread does not show.
   */
  perProcess: number[];
}

/**
 * Rounds of one server at a time: `procs` processes of each side, started and measured in a balanced
 * order (a, b, b, a, ...; reversed every other round), because a Node process can be a few percent
 * faster or slower than another running the same code (layout, hash seeds) for its whole life.
 */
export async function pairedRounds(
  start: (side: "ours" | "base") => Promise<ServerChild>,
  load: Load,
  o: { rounds: number; procs: number; log?: (line: string) => void },
): Promise<PairedResult> {
  const sides: ("ours" | "base")[] = [];
  for (let i = 0; i < o.procs; i++)
    sides.push(...(i % 2 ? (["base", "ours"] as const) : (["ours", "base"] as const)));
  const children: ServerChild[] = [];
  try {
    for (const side of sides) children.push(await start(side));
    for (const c of children) await measure(c, { ...load, seconds: 1 }); // warm-up: JIT, first allocations
    const costs: number[][] = children.map(() => []);
    const out: PairedResult = { ratios: [], ours: [], base: [], perProcess: [] };
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    for (let r = 0; r < o.rounds; r++) {
      const idx = children.map((_, i) => i);
      if (r % 2) idx.reverse();
      for (const i of idx) costs[i].push(await measure(children[i], load));
      const side = (s: "ours" | "base") => mean(costs.filter((_, i) => sides[i] === s).map((c) => c[r]));
      const [ours, base] = [side("ours"), side("base")];
      out.ours.push(ours);
      out.base.push(base);
      out.ratios.push(base / ours);
      o.log?.(
        `round ${r + 1}/${o.rounds}: ${ours.toFixed(0)} vs ${base.toFixed(0)} µs, ratio ${(base / ours).toFixed(3)}`,
      );
    }
    const baseMean = mean(costs.filter((_, i) => sides[i] === "base").map(mean));
    out.perProcess = costs.filter((_, i) => sides[i] === "ours").map((c) => baseMean / mean(c));
    return out;
  } finally {
    await Promise.all(children.map((c) => c.stop()));
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** "min-max" of a list, to 2 decimals. */
export function spread(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  return `${s[0].toFixed(2)}-${s[s.length - 1].toFixed(2)}`;
}
