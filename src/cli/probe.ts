// `sesscache probe HOST[:PORT]`: which resumption methods a TLS server supports, each tried
// several times: TLS 1.2 by session id (the client offers no ticket support), TLS 1.2 by ticket,
// TLS 1.3 (PSK). Exit 0 when any resumes, 1 when none does, 2 when the server cannot be reached.
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { parseNonNegativeInteger } from "./args.js";
import { CliError, describeError, QuietExit } from "./errors.js";
import {
  defaultServername,
  fatal,
  formatTarget,
  HandshakeError,
  type HandshakeOptions,
  type HandshakeResult,
  handshake,
  lastTicket,
  MAX_TIMER_MS,
  parseTarget,
  printable,
  type ReceivedSession,
  type Target,
  type TlsVersionName,
} from "./tls-handshake.js";

/** How long a TLS 1.3 connection waits for its first ticket after the handshake. */
const TICKET_WAIT_MS = 1000;

export type MethodName = "tls12SessionId" | "tls12Ticket" | "tls13";

export interface MethodReport {
  /** The server speaks the protocol version this method needs. */
  supported: boolean;
  /** At least one attempt resumed by this method. */
  resumed: boolean;
  /** Connections that offered a session. */
  attempts: number;
  /** How many of them resumed by this method. */
  resumedCount: number;
  protocol: string | null;
  cipher: string | null;
  /** The server gave a ticket (TLS 1.2 ticket or TLS 1.3 NewSessionTicket). */
  ticketIssued: boolean;
  /** Seconds, from the ticket; null without a ticket. */
  ticketLifetimeHint: number | null;
  /**
   * The session lifetime the server announced, in seconds: the ticket lifetime hint (for TLS 1.3
   * an upper bound the server commits to, RFC 8446 §4.6.1); null where it cannot be read without
   * waiting it out (session ids).
   */
  timeout: number | null;
  /** TLS 1.3 only: the same ticket resumed two connections (null when it did not resume once). */
  ticketAcceptedTwice?: boolean | null;
  /** Median handshake latency (ms, TCP connect included) of full and of resumed handshakes. */
  fullHandshakeMs: number | null;
  resumedHandshakeMs: number | null;
  /** Attempts that failed with an error (counted as not resumed). */
  errors: number;
  /** Why it did not resume, or why it is unsupported, in a few words. */
  note?: string;
}

export type ProbeReport = {
  target: string;
  servername: string | null;
} & Record<MethodName, MethodReport>;

export interface ProbeOptions extends Target {
  servername?: string;
  ca?: string;
  insecure?: boolean;
  /** Resumption attempts per method (default 3). */
  count?: number;
  /** Per-connection deadline in ms (default 5000). */
  timeoutMs?: number;
}

const METHODS: ReadonlyArray<{ name: MethodName; label: string; version: TlsVersionName; tickets: boolean }> =
  [
    { name: "tls12SessionId", label: "TLS 1.2 session id", version: "TLSv1.2", tickets: false },
    { name: "tls12Ticket", label: "TLS 1.2 ticket", version: "TLSv1.2", tickets: true },
    { name: "tls13", label: "TLS 1.3 PSK", version: "TLSv1.3", tickets: true },
  ];

/**
 * Runs the probe. A server that cannot be reached, or a handshake that fails for another reason
 * than the protocol version, is a CliError (exit 2).
 */
export async function probe(o: ProbeOptions): Promise<ProbeReport> {
  const count = o.count ?? 3;
  const servername = defaultServername(o.host, o.servername);
  const base: HandshakeOptions = {
    host: o.host,
    port: o.port,
    servername,
    ca: o.ca,
    insecure: o.insecure,
    timeoutMs: o.timeoutMs ?? 5000,
    ticketWaitMs: TICKET_WAIT_MS,
  };
  const report = {
    target: formatTarget(o),
    servername: servername ?? null,
  } as ProbeReport;
  for (const m of METHODS) {
    report[m.name] = await probeMethod(
      { ...base, minVersion: m.version, maxVersion: m.version, tickets: m.tickets },
      m.name,
      count,
    );
  }
  if (METHODS.every((m) => !report[m.name].supported)) {
    throw new CliError(`${report.target}: the server speaks neither TLS 1.2 nor TLS 1.3`, { exitCode: 2 });
  }
  return report;
}

async function probeMethod(opts: HandshakeOptions, name: MethodName, count: number): Promise<MethodReport> {
  let first: HandshakeResult;
  try {
    first = await handshake(opts);
  } catch (err) {
    if (err instanceof HandshakeError && err.kind === "version") {
      return {
        ...empty(),
        note: `the server does not speak ${opts.maxVersion} (${printable(describeError(err.cause ?? err))})`,
      };
    }
    return fatal(err);
  }
  const byTicket = name !== "tls12SessionId";
  const report: MethodReport = {
    ...empty(),
    supported: true,
    protocol: first.protocol,
    cipher: first.cipher,
  };
  const full: number[] = [first.latencyMs];
  const resumedMs: number[] = [];
  const noteSessions = (sessions: ReceivedSession[]) => {
    const ticket = lastTicket(sessions);
    if (!ticket) return;
    report.ticketIssued = true;
    if (ticket.ticketLifetimeHint !== undefined) report.ticketLifetimeHint = ticket.ticketLifetimeHint;
  };
  noteSessions(first.sessions);
  let offer = pick(first.sessions, byTicket);
  for (let i = 0; i < count && offer; i++) {
    report.attempts++;
    const offered = offer;
    let r: HandshakeResult;
    try {
      r = await handshake({ ...opts, session: offered.der });
    } catch {
      report.errors++;
      continue;
    }
    noteSessions(r.sessions);
    // A TLS 1.2 client that offers ticket support resumes by id when no ticket was issued: that
    // is not a resumption by ticket.
    const resumed = r.resumed && (!byTicket || offered.hasTicket);
    if (resumed) {
      report.resumedCount++;
      resumedMs.push(r.latencyMs);
    } else {
      full.push(r.latencyMs);
    }
    // The newest session: a renewed TLS 1.2 ticket, the next single-use TLS 1.3 ticket.
    offer = pick(r.sessions, byTicket) ?? offer;
  }
  report.resumed = report.resumedCount > 0;
  report.timeout = report.ticketLifetimeHint;
  report.fullHandshakeMs = median(full);
  report.resumedHandshakeMs = median(resumedMs);

  if (name === "tls13" && report.ticketIssued) report.ticketAcceptedTwice = await replay(opts);
  else if (name === "tls13") report.ticketAcceptedTwice = null;

  if (!report.resumed) report.note = whyNot(name, report, first);
  return report;
}

/** Offers one fresh TLS 1.3 ticket to two connections: true when both resume. */
async function replay(opts: HandshakeOptions): Promise<boolean | null> {
  try {
    const first = await handshake(opts);
    const ticket = lastTicket(first.sessions);
    if (!ticket) return null;
    const once = await handshake({ ...opts, session: ticket.der });
    if (!once.resumed) return null;
    const twice = await handshake({ ...opts, session: ticket.der });
    return twice.resumed;
  } catch {
    return null;
  }
}

function pick(sessions: ReceivedSession[], byTicket: boolean): ReceivedSession | undefined {
  return (byTicket ? lastTicket(sessions) : undefined) ?? sessions.at(-1);
}

function whyNot(name: MethodName, r: MethodReport, first: HandshakeResult): string {
  if (r.attempts === 0) {
    // TLS 1.3 resumes by ticket only: a connection without one has nothing to offer.
    return name === "tls13" ? "no ticket issued" : "no session to offer";
  }
  if (r.errors === r.attempts) return "every resumption attempt failed with an error";
  if (name === "tls12Ticket" && !r.ticketIssued) return "no ticket issued";
  if (name === "tls12SessionId") {
    return first.sessions.some((s) => s.idLength > 0) ? "session id not accepted" : "no session id issued";
  }
  return "ticket not accepted";
}

function empty(): MethodReport {
  return {
    supported: false,
    resumed: false,
    attempts: 0,
    resumedCount: 0,
    protocol: null,
    cipher: null,
    ticketIssued: false,
    ticketLifetimeHint: null,
    timeout: null,
    fullHandshakeMs: null,
    resumedHandshakeMs: null,
    errors: 0,
  };
}

export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const m = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return Math.round(m * 100) / 100;
}

/** The human report: a short table, then one line saying what resumes. */
export function formatProbe(r: ProbeReport): string {
  const rows: string[][] = [
    ["method", "resumed", "attempts", "ticket", "lifetime", "replay", "full/resumed ms"],
  ];
  for (const m of METHODS) {
    const x = r[m.name];
    if (!x.supported) {
      rows.push([m.label, "unsupported", "-", "-", "-", "-", "-"]);
      continue;
    }
    rows.push([
      m.label,
      x.resumed ? "yes" : "no",
      `${x.resumedCount}/${x.attempts}`,
      m.name === "tls12SessionId" ? "-" : x.ticketIssued ? "yes" : "no",
      x.ticketLifetimeHint === null ? "-" : `${x.ticketLifetimeHint} s`,
      x.ticketAcceptedTwice === undefined || x.ticketAcceptedTwice === null
        ? "-"
        : x.ticketAcceptedTwice
          ? "accepted twice"
          : "refused",
      `${ms(x.fullHandshakeMs)}/${ms(x.resumedHandshakeMs)}`,
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const lines = rows.map((row) =>
    row
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join("  ")
      .trimEnd(),
  );
  const sni = r.servername === null ? "no SNI" : `SNI ${printable(r.servername)}`;
  const notes = METHODS.filter((m) => r[m.name].note).map((m) => `  ${m.label}: ${r[m.name].note}`);
  const resumes = METHODS.filter((m) => r[m.name].resumed).map((m) => m.label);
  return [
    `sesscache probe ${r.target} (${sni})`,
    ...lines,
    ...(notes.length ? ["notes:", ...notes] : []),
    resumes.length ? `resumes: ${resumes.join(", ")}` : "resumes: nothing",
    "",
  ].join("\n");
}

function ms(v: number | null): string {
  return v === null ? "-" : v.toFixed(1);
}

export function anyResumed(r: ProbeReport): boolean {
  return METHODS.some((m) => r[m.name].resumed);
}

/**
 * Reads --ca FILE: PEM certificates, each of which must parse (a garbled one would otherwise be
 * dropped silently, and the server's certificate reported as untrusted). A CliError when not.
 */
export function readCaFile(file: string): string {
  const path = resolve(file);
  const shown = printable(path);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new CliError(`cannot read --ca file ${shown}: ${describeError(err)}`, { cause: err });
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) {
    const truncated = text.includes("-----BEGIN CERTIFICATE-----") ? " (no END CERTIFICATE line)" : "";
    throw new CliError(`--ca file ${shown} holds no PEM certificate${truncated}`);
  }
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (err) {
      const which = blocks.length > 1 ? `certificate ${i + 1} of ${blocks.length}` : "its certificate";
      throw new CliError(`--ca file ${shown}: ${which} does not decode (${printable(describeError(err))})`, {
        cause: err,
      });
    }
  }
  return text;
}

export function parsePositive(value: string): number {
  const n = parseNonNegativeInteger(value);
  if (n === 0) throw new InvalidArgumentError("expected a positive integer");
  return n;
}

/** --timeout MS: a positive integer a timer can hold (at most 2^31 - 1 ms, about 24.8 days). */
export function parseTimeout(value: string): number {
  const n = parsePositive(value);
  if (n > MAX_TIMER_MS) throw new InvalidArgumentError(`at most ${MAX_TIMER_MS} (about 24.8 days)`);
  return n;
}

interface CommandOptions {
  servername?: string;
  ca?: string;
  insecure?: boolean;
  count: number;
  timeout: number;
  json?: boolean;
}

/** Registers `sesscache probe` on the program. */
export function register(program: Command): void {
  program
    .command("probe")
    .summary("check which TLS session resumption methods a server supports")
    .description(
      "Check which session resumption methods a TLS server supports, each tried --count times in a " +
        "row (each attempt offers the newest session the server gave): TLS 1.2 by session id (the " +
        "client offers no ticket support), TLS 1.2 by session ticket, and TLS 1.3 by PSK ticket. Per " +
        "method: resumed or not, how many attempts resumed, the ticket lifetime hint, whether one " +
        "TLS 1.3 ticket is accepted twice (a replayed single-use ticket), median handshake times. A " +
        "method whose protocol version the server refuses is reported as unsupported.\n\n" +
        "Exit status: 0 when any method resumes, 1 when none does, 2 when the server cannot be " +
        "reached, the handshake fails (certificate not trusted, no common version) or the usage is wrong.",
    )
    .argument("<host[:port]>", "the server; port 443 by default, [::1]:8443 for IPv6")
    .option("--servername <name>", "SNI and the name the certificate must match (default: HOST unless an IP)")
    .addOption(new Option("--insecure", "do not verify the server's certificate").conflicts("ca"))
    .option("--ca <file>", "PEM file of the CAs to trust instead of the system's")
    .option("--count <n>", "resumption attempts per method", parsePositive, 3)
    .option("--timeout <ms>", "deadline for each connection, in milliseconds", parseTimeout, 5000)
    .option("--json", "print the report as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  sesscache probe example.com\n" +
        "  sesscache probe 127.0.0.1:8443 --insecure\n" +
        "  sesscache probe 10.0.0.5:443 --servername shop.example --ca internal-ca.pem --count 5\n" +
        "  sesscache probe localhost:8443 --insecure --json | jq .tls13",
    )
    .action(async (hostPort: string, opts: CommandOptions) => {
      const target = parseTarget(hostPort);
      const ca = opts.ca !== undefined ? readCaFile(opts.ca) : undefined;
      const report = await probe({
        ...target,
        servername: opts.servername,
        ca,
        insecure: opts.insecure,
        count: opts.count,
        timeoutMs: opts.timeout,
      });
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatProbe(report));
      if (!anyResumed(report)) throw new QuietExit(1);
    });
}
