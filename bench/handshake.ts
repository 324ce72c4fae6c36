// `npm run bench -- handshake [--rounds N] [--seconds S] [--procs P] [--only TEXT] [--all]` (default 7
// rounds of 1 s, 4 processes per server): handshakes per second of server CPU of a Node TLS server
// with the sesscache server adapter against the baselines it must keep up with. Each server runs in
// its own child process pinned to CPU 0, measured alone while one `openssl s_time` pinned to CPU 1
// drives it (a C client, one connection at a time, each reading a small page so TLS 1.3 tickets
// arrive); server-child.ts says why. A comparison's ratio is the median over rounds of baseline CPU
// per handshake over ours, with the spread of the rounds; the same server on both sides (the noise
// floor row) shows how far the method strays from 1.
//   1. TLS 1.2 resumed: sesscache vs a bare Map on newSession/resumeSession       target >= 0.97x
//   2. TLS 1.3 resumed: sesscache stateful single-use tickets vs Node's stateless    target >= 0.95x
//   3. full handshakes (TLS 1.3, and TLS 1.2): sesscache vs the Map server          target >= 0.97x
//   4. full handshakes: with vs without anything attached (--all)                    reported
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { SessionCache } from "../src/engine/index.js";
import { attachSessionCache } from "../src/server/index.js";
import type { TlsVersion } from "../test/support/tls-peers.js";
import { countOption, option } from "./args.js";
import { median, pairedRounds, spread } from "./measure.js";
import type { BenchResult, BenchRow } from "./run.js";
import {
  type BenchServer,
  CHILD_ENV,
  pinClientSide,
  pinning,
  ServerChild,
  serveInChild,
} from "./server-child.js";
import { startTlsBenchServer, useMapCache } from "./tls-bench-server.js";

export const VARIANTS = [
  "sesscache",
  "sesscache-tls12-only",
  "map",
  "node-tickets",
  "bare",
  "node-callbacks",
] as const;
export type Variant = (typeof VARIANTS)[number];

/** A server answering one small page per connection, set up as the variant says. */
export function startServer(variant: Variant): Promise<BenchServer> {
  if (!VARIANTS.includes(variant)) throw new Error(`unknown handshake bench variant ${variant}`);
  return startTlsBenchServer({
    stateful: variant === "sesscache" || variant === "sesscache-tls12-only" || variant === "map",
    // A server that cannot negotiate TLS 1.3 needs no hello peek (TLS 1.2 resumes through Node's own
    // resumeSession): this variant shows what the peek costs.
    maxVersion: variant === "sesscache-tls12-only" ? "TLSv1.2" : undefined,
    setup(server) {
      if (variant === "sesscache" || variant === "sesscache-tls12-only") {
        attachSessionCache(server, new SessionCache(), { sessionIdContext: "bench" });
      } else if (variant === "node-callbacks") {
        server.on("newSession", (_id: Buffer, _der: Buffer, done: () => void) => done());
        server.on("resumeSession", (_id: Buffer, cb: (e: Error | null, s: Buffer | null) => void) =>
          cb(null, null),
        );
      } else if (variant === "map") {
        // The classic example from Node's documentation: what the adapter must not be slower than.
        useMapCache(server);
      }
    },
  });
}

interface Comparison {
  name: string;
  version: TlsVersion;
  reuse: boolean;
  ours: Variant;
  baseline: Variant;
  /** null: a reference measurement, no target. */
  target: number | null;
  /** Run only with --all (the profile's table answers it too). */
  extra?: boolean;
}

const COMPARISONS: Comparison[] = [
  { name: "TLS 1.2 resumed", version: "1.2", reuse: true, ours: "sesscache", baseline: "map", target: 0.97 },
  {
    name: "TLS 1.2 resumed, TLS 1.2-only server (no peek)",
    version: "1.2",
    reuse: true,
    ours: "sesscache-tls12-only",
    baseline: "map",
    target: null,
  },
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
    extra: true,
    version: "1.3",
    reuse: true,
    ours: "node-callbacks",
    baseline: "node-tickets",
    target: null,
  },
  // Full handshakes against the stateful server Node documents (the same newSession/resumeSession
  // machinery, no tickets): what the cache itself adds. Against a bare server: what any stateful
  // cache costs in Node (reported, explained by the profile).
  {
    name: "TLS 1.3 full vs Map",
    version: "1.3",
    reuse: false,
    ours: "sesscache",
    baseline: "map",
    target: 0.97,
  },
  {
    name: "TLS 1.2 full vs Map",
    version: "1.2",
    reuse: false,
    ours: "sesscache",
    baseline: "map",
    target: 0.97,
  },
  {
    name: "TLS 1.3 full",
    version: "1.3",
    reuse: false,
    ours: "sesscache",
    baseline: "bare",
    target: null,
    extra: true,
  },
  // The same server on both sides: how far from 1.000 the method itself strays on this machine.
  {
    name: "noise floor (bare vs bare, TLS 1.2 full)",
    version: "1.2",
    reuse: false,
    ours: "bare",
    baseline: "bare",
    target: null,
  },
  {
    name: "TLS 1.2 full",
    version: "1.2",
    reuse: false,
    ours: "sesscache",
    baseline: "bare",
    target: null,
    extra: true,
  },
];

// Only as the forked child itself: profile.ts's children import this file with the same variable set.
if (process.argv[1] === fileURLToPath(import.meta.url) && process.env[CHILD_ENV]) {
  await serveInChild(() => startServer(process.env[CHILD_ENV] as Variant));
}

export default async function handshake(args: string[]): Promise<BenchResult> {
  const rounds = countOption(args, "--rounds", 7);
  const seconds = countOption(args, "--seconds", 1);
  const procs = countOption(args, "--procs", 4);
  const only = option(args, "--only");
  const all = args.includes("--all");
  const chosen = COMPARISONS.filter((c) => (only === undefined ? all || !c.extra : c.name.includes(only)));
  if (chosen.length === 0) throw new Error(`no comparison's name contains ${JSON.stringify(only)}`);
  pinClientSide();
  const module = fileURLToPath(import.meta.url);
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  const samples: Record<string, unknown> = {};
  for (const c of chosen) {
    const r = await pairedRounds(
      (side) => ServerChild.start(side === "ours" ? c.ours : c.baseline, { module }),
      { version: c.version, reuse: c.reuse, seconds },
      { rounds, procs, log: (l) => process.stderr.write(`${c.name}: ${l}\n`) },
    );
    samples[c.name] = r;
    const ratio = median(r.ratios);
    const met = c.target === null ? null : ratio >= c.target;
    rows.push({
      comparison: c.name,
      variant: c.ours,
      baseline: c.baseline,
      "variant µs": Math.round(median(r.ours)),
      "baseline µs": Math.round(median(r.base)),
      ratio: Number(ratio.toFixed(3)),
      spread: spread(r.ratios),
      "process spread": spread(r.perProcess),
      target: c.target,
      met,
    });
    notes.push(
      c.target === null
        ? `${c.name}: ${ratio.toFixed(3)}x (reference, no target)`
        : `${c.name}: ${ratio.toFixed(3)}x of ${c.baseline} (target >= ${c.target}): ${met ? "met" : "NOT met"}`,
    );
  }
  notes.push(
    "µs = server CPU per handshake, each side's median over rounds taken alone (so the µs columns do not divide " +
      "into the ratio); ratio = median over rounds of baseline µs / variant µs (handshakes per CPU-second, variant " +
      "over baseline); spread = min-max of the rounds; process spread = min-max over the variant's processes of " +
      "the baseline's mean over that process's mean",
    `${rounds} rounds of ${seconds} s after a 1 s warm-up, ${procs} processes per server, one server at a time; ` +
      (pinning
        ? `servers pinned to CPU ${pinning.server}, s_time to CPU ${pinning.client}; `
        : "not pinned (needs 2 CPUs and taskset); ") +
      `openssl s_time -reuse/-new -www /; ${cpus().length} CPUs, load average ${loadavg()[0].toFixed(2)} at the end`,
    "baselines: map = Node's documented Map on newSession/resumeSession (stateful, no tickets); " +
      "node-tickets = a plain server with Node's stateless tickets; bare = a plain server, nothing attached; " +
      "node-callbacks = Node's stateless tickets plus no-op newSession/resumeSession listeners (what Node " +
      "itself costs any session cache)",
    "the hello peek (spec 9.1-2: the first flight read in JavaScript, then put back for Node's TLS layer) " +
      "is paid by every connection to a TLS 1.3-capable server; compare the two TLS 1.2 resumed rows",
    "why TLS 1.3 resumed trails stateless tickets: on resuming a valid stateless ticket OpenSSL 3 issues no new " +
      "ticket, while a stateful single-use resumption must issue one (a NewSessionTicket, a newSession callback, " +
      "a store, one more write) and remove the used one",
  );
  return {
    title:
      "Handshakes per second of server CPU: Node TLS server with sesscache vs baselines (openssl s_time)",
    rows,
    notes,
    extra: { rounds, seconds, procs, pinning, samples },
  };
}
