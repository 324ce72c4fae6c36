// `sesscache bench HOST[:PORT]`: full handshakes per second (no session offered), then resumed
// handshakes per second (each connection offers the newest session its worker holds), with
// latency percentiles and the share of resumption attempts that resumed.
import { type Command, InvalidArgumentError, Option } from "commander";
import { QuietExit } from "./errors.js";
import { parsePositive, readCaFile } from "./probe.js";
import {
  defaultServername,
  fatal,
  formatTarget,
  type HandshakeOptions,
  handshake,
  lastTicket,
  parseTarget,
  type ReceivedSession,
  type Target,
  type TlsVersionName,
} from "./tls-handshake.js";

/** How long a resumed TLS 1.3 connection waits for its next ticket. */
const TICKET_WAIT_MS = 1000;
const DEFAULT_DURATION = 3;

export interface Latency {
  p50: number;
  p99: number;
  mean: number;
  max: number;
}

export interface PhaseReport {
  /** Handshakes completed. */
  handshakes: number;
  /** Connections that failed (not counted in handshakes). */
  errors: number;
  /** Wall-clock seconds of the phase. */
  seconds: number;
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
  resumed: PhaseReport & { resumedRatio: number };
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
  /** Called about ten times a second while a phase runs. */
  onProgress?: (phase: "full" | "resumed", done: number, elapsedSeconds: number) => void;
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

  // TLS 1.3: every connection, full or resumed, lasts until the server's first ticket, so both
  // phases include the server's work of issuing (and storing) a session.
  const wait = protocol === "TLSv1.3" ? TICKET_WAIT_MS : 0;
  const full = await phase("full", run, async () => {
    const r = await handshake({ ...base, ticketWaitMs: wait });
    return { latencyMs: r.latencyMs, resumed: r.resumed };
  });

  // Each worker holds its own session: a TLS 1.3 ticket resumes once, and each resumption gives
  // the next one.
  const sessions: (ReceivedSession | undefined)[] = await Promise.all(
    Array.from({ length: concurrency }, async () => {
      const r = await handshake({ ...base, ticketWaitMs: wait }).catch(fatal);
      return newest(r.sessions);
    }),
  );
  const resumed = await phase("resumed", run, async (worker) => {
    const r = await handshake({ ...base, ticketWaitMs: wait, session: sessions[worker]?.der });
    sessions[worker] = newest(r.sessions) ?? sessions[worker];
    return { latencyMs: r.latencyMs, resumed: r.resumed };
  });

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
      resumedRatio: resumed.handshakes === 0 ? 0 : round(resumed.resumed / resumed.handshakes, 4),
    },
  };
}

function newest(sessions: ReceivedSession[]): ReceivedSession | undefined {
  return lastTicket(sessions) ?? sessions.at(-1);
}

interface RunSettings {
  concurrency: number;
  count: number | null;
  duration: number | null;
  onProgress: BenchOptions["onProgress"];
}

async function phase(
  name: "full" | "resumed",
  s: RunSettings,
  connect: (worker: number) => Promise<{ latencyMs: number; resumed: boolean }>,
): Promise<PhaseReport> {
  const latencies: number[] = [];
  let errors = 0;
  let resumed = 0;
  let started = 0;
  let lastError: unknown;
  const t0 = performance.now();
  const end = s.duration !== null ? t0 + s.duration * 1000 : Number.POSITIVE_INFINITY;
  const more = () => (s.count !== null ? started < s.count : performance.now() < end);
  const progress = s.onProgress
    ? setInterval(() => s.onProgress?.(name, latencies.length, (performance.now() - t0) / 1000), 100)
    : undefined;
  const worker = async (id: number) => {
    while (more()) {
      started++;
      try {
        const r = await connect(id);
        latencies.push(r.latencyMs);
        if (r.resumed) resumed++;
      } catch (err) {
        errors++;
        lastError = err;
        // A server that went away: stop rather than spin through refused connections.
        if (latencies.length === 0 && errors >= 10 * s.concurrency) break;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: s.concurrency }, (_, i) => worker(i)));
  } finally {
    if (progress) clearInterval(progress);
  }
  if (latencies.length === 0 && errors > 0) fatal(lastError);
  const seconds = (performance.now() - t0) / 1000;
  return {
    handshakes: latencies.length,
    errors,
    seconds: round(seconds, 3),
    handshakesPerSecond: seconds > 0 ? round(latencies.length / seconds, 1) : 0,
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
  return [
    `sesscache bench ${r.target}, ${r.protocol ?? "?"}, concurrency ${r.concurrency}, ${what}`,
    ...lines,
    speedup,
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
    `${p.resumed}/${p.handshakes}${extra}`,
    String(p.errors),
  ];
}

/** A progress line on stderr, rewritten in place; only on a terminal. */
function progressLine(total: { count: number | null; duration: number | null }) {
  let shown = false;
  return {
    update(phase: string, done: number, elapsed: number) {
      const rate = elapsed > 0 ? (done / elapsed).toFixed(0) : "0";
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
        "latency p50/p99 (TCP connect included) and the share of resumption attempts that resumed. " +
        "Each connection is closed after its handshake (TLS 1.3: after the server's first ticket, in both " +
        "phases). A progress " +
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
    .option("--concurrency <c>", "connections in flight at once", parseConcurrency, 1)
    .addOption(new Option("--tls1.2", "TLS 1.2 only").conflicts("tls1.3"))
    .addOption(new Option("--tls1.3", "TLS 1.3 only"))
    .option("--servername <name>", "SNI and the name the certificate must match (default: HOST unless an IP)")
    .addOption(new Option("--insecure", "do not verify the server's certificate").conflicts("ca"))
    .option("--ca <file>", "PEM file of the CAs to trust instead of the system's")
    .option("--timeout <ms>", "deadline for each connection, in milliseconds", parsePositive, 5000)
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
          onProgress: line ? (phase, done, elapsed) => line.update(phase, done, elapsed) : undefined,
        });
      } finally {
        line?.clear();
      }
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatBench(report));
      if (report.resumed.resumed === 0) throw new QuietExit(1);
    });
}
