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
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { cpus, loadavg } from "node:os";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { SessionCache } from "../src/engine/index.js";
import { attachSessionCache, statefulServerOptions } from "../src/server/index.js";
import { testPki } from "../test/support/certs.js";
import type { TlsVersion } from "../test/support/tls-peers.js";
import type { BenchResult, BenchRow } from "./run.js";
import {
  type BenchServer,
  CHILD_ENV,
  median,
  pairedRounds,
  pinClientSide,
  pinning,
  ServerChild,
  serveInChild,
  spread,
} from "./server-child.js";

const RESPONSE = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";

export type Variant =
  | "sesscache"
  | "sesscache-tls12-only"
  | "map"
  | "node-tickets"
  | "bare"
  | "node-callbacks";

/** A server answering one small page per connection, set up as the variant says. */
export async function startServer(variant: Variant): Promise<BenchServer> {
  const pki = testPki();
  const stateful = variant === "sesscache" || variant === "sesscache-tls12-only" || variant === "map";
  const server = tls.createServer(
    {
      key: pki.key,
      cert: pki.cert,
      ...(stateful ? statefulServerOptions({ sessionIdContext: "bench" }) : {}),
      // A server that cannot negotiate TLS 1.3 needs no hello peek (TLS 1.2 resumes through Node's
      // own resumeSession): this variant shows what the peek costs.
      ...(variant === "sesscache-tls12-only" ? { maxVersion: "TLSv1.2" as const } : {}),
    },
    (s) => {
      handshakes++;
      s.on("error", () => {});
      s.once("data", () => s.end(RESPONSE));
    },
  );
  let handshakes = 0;
  if (variant === "sesscache" || variant === "sesscache-tls12-only") {
    attachSessionCache(server, new SessionCache(), { sessionIdContext: "bench" });
  } else if (variant === "node-callbacks") {
    server.on("newSession", (_id: Buffer, _der: Buffer, done: () => void) => done());
    server.on("resumeSession", (_id: Buffer, cb: (e: Error | null, s: Buffer | null) => void) =>
      cb(null, null),
    );
  } else if (variant === "map") {
    // The classic example from Node's documentation: what the adapter must not be slower than.
    const map = new Map<string, Buffer>();
    server.on("newSession", (id: Buffer, der: Buffer, done: () => void) => {
      map.set(id.toString("hex"), der);
      done();
    });
    server.on("resumeSession", (id: Buffer, cb: (e: Error | null, s: Buffer | null) => void) => {
      cb(null, map.get(id.toString("hex")) ?? null);
    });
  }
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const open = new Set<import("node:net").Socket>();
  server.on("connection", (c) => {
    open.add(c);
    c.once("close", () => open.delete(c));
  });
  return {
    port: (server.address() as AddressInfo).port,
    handshakes: () => handshakes,
    close: async () => {
      const closed = once(server, "close");
      server.close();
      for (const c of open) c.destroy();
      await closed;
    },
  };
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

function arg(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  const v = i >= 0 ? Number(args[i + 1]) : dflt;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a positive number`);
  return v;
}

export default async function handshake(args: string[]): Promise<BenchResult> {
  const rounds = Math.round(arg(args, "--rounds", 7));
  const seconds = Math.round(arg(args, "--seconds", 1));
  const procs = Math.round(arg(args, "--procs", 4));
  const oi = args.indexOf("--only");
  const only = oi >= 0 ? args[oi + 1] : undefined;
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
    "µs = server CPU per handshake (median over rounds); ratio = median over rounds of baseline µs / variant µs " +
      "(handshakes per CPU-second, variant over baseline); spread = min-max of the rounds",
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
