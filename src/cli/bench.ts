// `sesscache bench HOST[:PORT]`: full handshakes per second (no session offered), then resumed
// handshakes per second (each connection offers the newest session its worker holds), with
// latency percentiles and the share of resumption attempts that resumed. The rates count
// handshakes: with TLS 1.3 a connection waits for the server's tickets after its handshake, in the
// background while its worker goes on; the few times a worker has to wait for a ticket are left out.
import { type Command, InvalidArgumentError, Option } from "commander";
import { QuietExit } from "./errors.js";
import { parsePositive, parseTimeout, readCaFile } from "./probe.js";
import {
  defaultServername,
  fatal,
  formatTarget,
  type HandshakeInfo,
  type HandshakeOptions,
  type HandshakeResult,
  handshake,
  parseTarget,
  type ReceivedSession,
  type Target,
  type TlsVersionName,
} from "./tls-handshake.js";

/** The longest a TLS 1.3 connection waits for a ticket after its handshake (the first sessions). */
const TICKET_WAIT_MS = 1000;
/**
 * In the phases the wait is shorter: a server sends its tickets right after the handshake (one
 * round trip after the client's Finished), so a ticket that has not come within a few handshake
 * times, and at least TICKET_WAIT_FLOOR_MS, is not coming (at most TICKET_WAIT_MS).
 */
const TICKET_WAIT_FACTOR = 3;
const TICKET_WAIT_FLOOR_MS = 25;
const DEFAULT_DURATION = 3;

export interface Latency {
  p50: number;
  p99: number;
  mean: number;
  max: number;
}

export interface PhaseReport {
  /** Connections made: handshakes + errors. */
  attempts: number;
  /** Handshakes completed. */
  handshakes: number;
  /** Connections that failed (not counted in handshakes). */
  errors: number;
  /** Wall-clock seconds of the phase. */
  seconds: number;
  /**
   * Seconds spent on handshakes: the wall-clock time less the time connections waited for a
   * TLS 1.3 ticket after their handshake, averaged over the workers.
   */
  handshakeSeconds: number;
  /** handshakes / handshakeSeconds. */
  handshakesPerSecond: number;
  /** Handshake latency in ms, TCP connect included. */
  latencyMs: Latency | null;
  /** Handshakes that resumed a session. */
  resumed: number;
}

export interface BenchReport {
  target: string;
  servername: string | null;
  /** The version negotiated (by the first connection). */
  protocol: string | null;
  concurrency: number;
  /** Seconds per phase, or null with --count. */
  duration: number | null;
  /** Handshakes per phase, or null with --duration. */
  count: number | null;
  full: PhaseReport;
  /** resumedRatio: resumed / attempts (a failed attempt did not resume). */
  resumed: PhaseReport & { resumedRatio: number };
  /**
   * Connections that failed while gathering the sessions the resumed phase starts from (one per
   * worker; a worker whose connection failed borrows another's session).
   */
  setupErrors: number;
}

export interface BenchOptions extends Target {
  servername?: string;
  ca?: string;
  insecure?: boolean;
  version?: TlsVersionName;
  /** Seconds per phase (default 3), unless count is given. */
  duration?: number;
  /** Handshakes per phase. */
  count?: number;
  concurrency?: number;
  timeoutMs?: number;
  /**
   * Called about ten times a second while a phase runs: handshakes done, wall-clock seconds, and
   * seconds spent on handshakes (ticket waits left out, as in handshakeSeconds).
   */
  onProgress?: (
    phase: "full" | "resumed",
    done: number,
    elapsedSeconds: number,
    handshakeSeconds: number,
  ) => void;
}

export async function bench(o: BenchOptions): Promise<BenchReport> {
  const servername = defaultServername(o.host, o.servername);
  const concurrency = o.concurrency ?? 1;
  const count = o.count ?? null;
  const duration = count === null ? (o.duration ?? DEFAULT_DURATION) : null;
  const base: HandshakeOptions = {
    host: o.host,
    port: o.port,
    servername,
    ca: o.ca,
    insecure: o.insecure,
    timeoutMs: o.timeoutMs ?? 5000,
    ...(o.version ? { minVersion: o.version, maxVersion: o.version } : {}),
  };
  // One connection first: an unreachable server or an untrusted certificate is an error (exit 2)
  // before any number is printed.
  const first = await handshake(base).catch(fatal);
  const protocol = first.protocol;
  const run = { concurrency, count, duration, onProgress: o.onProgress };

  // A worker starts its next connection as soon as the previous handshake is done. With TLS 1.3
  // the previous connection meanwhile stays open for the server's tickets (at most
  // ticketWait(), then closed), so the server issues (and stores) its session as it would for a
  // real client, without that wait being timed as part of a handshake.
  const full = await phase("full", run, (_worker, track) => async () => {
    const c = start({ ...base, ticketWaitMs: ticketWait });
    track(c.done);
    return { ...(await c.handshake), stallMs: 0 };
  });

  // Each worker keeps its own sessions: a TLS 1.3 ticket may resume once only, and each
  // resumption gives the next one. A failed connection here is counted, not fatal: its worker
  // borrows another worker's session.
  const seeds = await Promise.allSettled(
    Array.from({ length: concurrency }, () => handshake({ ...base, ticketWaitMs: TICKET_WAIT_MS })),
  );
  let setupErrors = 0;
  let setupError: unknown;
  const pools = seeds.map((s) => {
    if (s.status === "fulfilled") return usable(s.value.sessions);
    setupErrors++;
    setupError = s.reason;
    return [];
  });
  if (setupErrors === concurrency) fatal(setupError);
  const spare = pools.flat();
  for (let i = 0, j = 0; i < pools.length && spare.length > 0; i++) {
    if (pools[i]!.length === 0) pools[i]!.push(spare[j++ % spare.length]!);
  }

  const resumed = await phase("resumed", run, (worker, track) => {
    // Sessions not offered yet, newest last; the last one that resumed (offered again when there
    // is no other: a server that issues no ticket on resumption takes its tickets more than once);
    // connections still waiting for their tickets; whether a resumption gives a ticket.
    const pool = pools[worker]!;
    let lastResumed: ReceivedSession | undefined;
    const pending = new Set<Promise<void>>();
    let ticketOnResumption: boolean | undefined;
    return async () => {
      // No fresh session but one on its way: wait for it, unless this server gives none on
      // resumption. That wait is not a handshake's time.
      const t = performance.now();
      while (pool.length === 0 && pending.size > 0 && ticketOnResumption !== false) {
        await Promise.race(pending);
      }
      const stallMs = performance.now() - t;
      const offer = pool.pop() ?? lastResumed;
      const c = start({ ...base, ticketWaitMs: ticketWait, session: offer?.der });
      const received: Promise<void> = c.done
        .then((r) => {
          if (!r) return;
          const fresh = usable(r.sessions);
          pool.push(...fresh);
          pool.splice(0, Math.max(0, pool.length - MAX_POOL));
          if (r.resumed && r.protocol === "TLSv1.3") ticketOnResumption = fresh.length > 0;
        })
        .finally(() => pending.delete(received));
      pending.add(received);
      track(received);
      const h = await c.handshake;
      if (h.resumed) lastResumed = offer;
      return { ...h, stallMs };
    };
  });

  const attempts = resumed.handshakes + resumed.errors;
  return {
    target: formatTarget(o),
    servername: servername ?? null,
    protocol,
    concurrency,
    duration,
    count,
    full,
    resumed: {
      ...resumed,
      resumedRatio: attempts === 0 ? 0 : round(resumed.resumed / attempts, 4),
    },
    setupErrors,
  };
}

/** Sessions a worker keeps at most (the newest). */
const MAX_POOL = 4;

/** How long a phase connection waits for a TLS 1.3 ticket once its handshake is done. */
function ticketWait(h: HandshakeInfo): number {
  return Math.min(TICKET_WAIT_MS, Math.max(TICKET_WAIT_FLOOR_MS, TICKET_WAIT_FACTOR * h.latencyMs));
}

/**
 * One connection: `handshake` settles when the handshake is done (rejects when it fails), `done`
 * once the connection has waited for its tickets (undefined when the handshake failed).
 */
function start(o: HandshakeOptions): {
  handshake: Promise<HandshakeInfo>;
  done: Promise<HandshakeResult | undefined>;
} {
  let secured: (h: HandshakeInfo) => void = () => {};
  const secure = new Promise<HandshakeInfo>((resolve) => {
    secured = resolve;
  });
  const result = handshake({ ...o, onHandshake: (h) => secured(h) });
  return {
    handshake: Promise.race([secure, result]),
    done: result.catch(() => undefined),
  };
}

/** The sessions to offer from one connection: its tickets, else its one session (TLS 1.2 id). */
function usable(sessions: ReceivedSession[]): ReceivedSession[] {
  const tickets = sessions.filter((s) => s.hasTicket);
  return tickets.length > 0 ? tickets : sessions.slice(-1);
}

interface RunSettings {
  concurrency: number;
  count: number | null;
  duration: number | null;
  onProgress: BenchOptions["onProgress"];
}

interface Attempt extends HandshakeInfo {
  /** Milliseconds the worker waited for a session before starting this connection. */
  stallMs: number;
}

/**
 * Runs one phase: `concurrency` workers, each making one connection after the other with the
 * function `makeWorker` gives it, until --count connections were started or --duration is over.
 * A worker's time runs from the phase's start to its last handshake's end, less its stalls; the
 * phase's handshake time is the workers' average, and the connections still waiting for tickets
 * are waited for after it, untimed.
 */
async function phase(
  name: "full" | "resumed",
  s: RunSettings,
  makeWorker: (worker: number, track: (p: Promise<unknown>) => void) => () => Promise<Attempt>,
): Promise<PhaseReport> {
  const latencies: number[] = [];
  let errors = 0;
  let resumed = 0;
  let started = 0;
  let lastError: unknown;
  const lingering = new Set<Promise<unknown>>();
  const track = (p: Promise<unknown>) => {
    lingering.add(p);
    void p.finally(() => lingering.delete(p));
  };
  const stalled = new Array<number>(s.concurrency).fill(0);
  const last = new Array<number | undefined>(s.concurrency).fill(undefined);
  const finished = new Array<boolean>(s.concurrency).fill(false);
  const t0 = performance.now();
  const end = s.duration !== null ? t0 + s.duration * 1000 : Number.POSITIVE_INFINITY;
  const more = () => (s.count !== null ? started < s.count : performance.now() < end);
  const busySeconds = (now: number) => {
    let total = 0;
    for (let i = 0; i < s.concurrency; i++) {
      total += (finished[i] ? (last[i] ?? t0) : now) - t0 - stalled[i]!;
    }
    return Math.max(0, total / s.concurrency / 1000);
  };
  const progress = s.onProgress
    ? setInterval(() => {
        const now = performance.now();
        s.onProgress?.(name, latencies.length, (now - t0) / 1000, busySeconds(now));
      }, 100)
    : undefined;
  const worker = async (id: number) => {
    const connect = makeWorker(id, track);
    while (more()) {
      started++;
      try {
        const r = await connect();
        latencies.push(r.latencyMs);
        stalled[id]! += r.stallMs;
        if (r.resumed) resumed++;
      } catch (err) {
        errors++;
        lastError = err;
        // A server that went away: stop rather than spin through refused connections.
        if (latencies.length === 0 && errors >= 10 * s.concurrency) break;
      }
      last[id] = performance.now();
    }
    finished[id] = true;
  };
  let handshakeSeconds: number;
  try {
    await Promise.all(Array.from({ length: s.concurrency }, (_, i) => worker(i)));
    handshakeSeconds = busySeconds(performance.now());
    await Promise.all(lingering);
  } finally {
    if (progress) clearInterval(progress);
  }
  if (latencies.length === 0 && errors > 0) fatal(lastError);
  const seconds = (performance.now() - t0) / 1000;
  return {
    attempts: latencies.length + errors,
    handshakes: latencies.length,
    errors,
    seconds: round(seconds, 3),
    handshakeSeconds: round(handshakeSeconds, 3),
    handshakesPerSecond: handshakeSeconds > 0 ? round(latencies.length / handshakeSeconds, 1) : 0,
    latencyMs: summarize(latencies),
    resumed,
  };
}

/** Nearest-rank percentiles. */
export function summarize(xs: readonly number[]): Latency | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  return { p50: round(at(0.5), 3), p99: round(at(0.99), 3), mean: round(mean, 3), max: round(s.at(-1)!, 3) };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function formatBench(r: BenchReport): string {
  const what = r.count !== null ? `${r.count} handshakes each` : `${r.duration} s each`;
  const rows = [
    ["", "handshakes/s", "p50 ms", "p99 ms", "resumed", "errors"],
    row("full", r.full),
    row("resumed", r.resumed, ` (${(r.resumed.resumedRatio * 100).toFixed(1)}%)`),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((x) => x[i]!.length)));
  const lines = rows.map((x) =>
    x
      .map((c, i) => (i === 0 || i === 4 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd(),
  );
  const speedup =
    r.full.handshakesPerSecond > 0
      ? `resumed/full: ${(r.resumed.handshakesPerSecond / r.full.handshakesPerSecond).toFixed(2)}x`
      : "";
  const setup =
    r.setupErrors > 0
      ? [`${r.setupErrors} of ${r.concurrency} connections failed while gathering the first sessions`]
      : [];
  return [
    `sesscache bench ${r.target}, ${r.protocol ?? "?"}, concurrency ${r.concurrency}, ${what}`,
    ...lines,
    speedup,
    ...setup,
    "",
  ].join("\n");
}

function row(label: string, p: PhaseReport, extra = ""): string[] {
  const l = p.latencyMs;
  return [
    label,
    p.handshakesPerSecond.toFixed(1),
    l ? l.p50.toFixed(2) : "-",
    l ? l.p99.toFixed(2) : "-",
    `${p.resumed}/${p.attempts}${extra}`,
    String(p.errors),
  ];
}

/** A progress line on stderr, rewritten in place; only on a terminal. */
function progressLine(total: { count: number | null; duration: number | null }) {
  let shown = false;
  return {
    update(phase: string, done: number, elapsed: number, busy: number) {
      const rate = busy > 0 ? (done / busy).toFixed(0) : "0";
      const left =
        total.count !== null
          ? `${done}/${total.count}`
          : `${Math.max(0, (total.duration ?? 0) - elapsed).toFixed(1)} s left`;
      process.stderr.write(`\r\x1b[K${phase}: ${done} handshakes, ${rate}/s, ${left}`);
      shown = true;
    },
    clear() {
      if (shown) process.stderr.write("\r\x1b[K");
      shown = false;
    },
  };
}

function parseSeconds(value: string): number {
  const v = value.trim();
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0) || n > 86400) {
    throw new InvalidArgumentError("expected a number of seconds, more than 0");
  }
  return n;
}

function parseConcurrency(value: string): number {
  const n = parsePositive(value);
  if (n > 1000) throw new InvalidArgumentError("at most 1000");
  return n;
}

interface CommandOptions {
  servername?: string;
  ca?: string;
  insecure?: boolean;
  duration?: number;
  count?: number;
  concurrency: number;
  "tls1.2"?: boolean;
  "tls1.3"?: boolean;
  timeout: number;
  json?: boolean;
}

/** Registers `sesscache bench` on the program. */
export function register(program: Command): void {
  program
    .command("bench")
    .summary("measure full and resumed TLS handshakes per second against a server")
    .description(
      "Measure a TLS server's handshake rate twice: full handshakes (no session offered), then " +
        "resumed handshakes (each connection offers the newest session its worker holds; with TLS 1.3 " +
        "each resumption's new ticket is used for the next). Reports handshakes per second, handshake " +
        "latency p50/p99 (from the TCP connect to the end of the handshake) and the share of " +
        "resumption attempts that resumed (resumed / attempts: a failed attempt did not resume; " +
        "errors are shown apart). Each worker starts its next connection as soon as a handshake is " +
        "done. With TLS 1.3 the server's tickets come after the handshake: each connection, in both " +
        "phases, stays open for them in the background (at most 3 handshake times, 25 ms to 1 s); " +
        "a worker waits only when it has no unused ticket while one is on its way, and never once " +
        "the server has shown it sends none on resumption (then the last ticket that resumed is " +
        "offered again). handshakes/s = handshakes / handshakeSeconds: per worker, the phase's time " +
        "up to its last handshake less those waits, averaged over the workers. A connection that " +
        "fails while the first sessions are gathered is counted (setupErrors), not fatal. A progress " +
        "line is shown on a terminal, never when the output is piped or with --json.\n\n" +
        "Exit status: 0 when the run completed, 1 when no resumption attempt resumed, 2 when the server " +
        "cannot be reached, the handshake fails or the usage is wrong.",
    )
    .argument("<host[:port]>", "the server; port 443 by default, [::1]:8443 for IPv6")
    .addOption(
      new Option("--duration <seconds>", `length of each phase (default: ${DEFAULT_DURATION})`)
        .argParser(parseSeconds)
        .conflicts("count"),
    )
    .option("--count <n>", "handshakes per phase, instead of --duration", parsePositive)
    .option("--concurrency <c>", "workers: handshakes in flight at once", parseConcurrency, 1)
    .addOption(new Option("--tls1.2", "TLS 1.2 only").conflicts("tls1.3"))
    .addOption(new Option("--tls1.3", "TLS 1.3 only"))
    .option("--servername <name>", "SNI and the name the certificate must match (default: HOST unless an IP)")
    .addOption(new Option("--insecure", "do not verify the server's certificate").conflicts("ca"))
    .option("--ca <file>", "PEM file of the CAs to trust instead of the system's")
    .option("--timeout <ms>", "deadline for each connection, in milliseconds", parseTimeout, 5000)
    .option("--json", "print the report as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  sesscache bench example.com --duration 5\n" +
        "  sesscache bench 127.0.0.1:8443 --insecure --tls1.3 --concurrency 4\n" +
        "  sesscache bench 10.0.0.5:443 --servername shop.example --ca internal-ca.pem --tls1.2 --count 2000\n" +
        "  sesscache bench localhost:8443 --insecure --count 500 --json | jq .resumed.resumedRatio",
    )
    .action(async (hostPort: string, opts: CommandOptions) => {
      const target = parseTarget(hostPort);
      const ca = opts.ca !== undefined ? readCaFile(opts.ca) : undefined;
      const version: TlsVersionName | undefined = opts["tls1.2"]
        ? "TLSv1.2"
        : opts["tls1.3"]
          ? "TLSv1.3"
          : undefined;
      const showProgress = !opts.json && process.stdout.isTTY === true && process.stderr.isTTY === true;
      const line = showProgress
        ? progressLine({
            count: opts.count ?? null,
            duration: opts.count === undefined ? (opts.duration ?? DEFAULT_DURATION) : null,
          })
        : undefined;
      let report: BenchReport;
      try {
        report = await bench({
          ...target,
          servername: opts.servername,
          ca,
          insecure: opts.insecure,
          version,
          duration: opts.duration,
          count: opts.count,
          concurrency: opts.concurrency,
          timeoutMs: opts.timeout,
          onProgress: line
            ? (phase, done, elapsed, busy) => line.update(phase, done, elapsed, busy)
            : undefined,
        });
      } finally {
        line?.clear();
      }
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatBench(report));
      if (report.resumed.resumed === 0) throw new QuietExit(1);
    });
}
