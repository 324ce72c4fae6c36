// One TLS connection to a server, as `probe` and `bench` need it: offer a session or not, with or
// without ticket support, within version bounds and a deadline; report whether it resumed, what
// the server gave back (sessions, TLS 1.3 tickets, their lifetime hints) and how long the
// handshake took.

import { constants } from "node:crypto";
import { isIP } from "node:net";
import tls from "node:tls";
import { parseSession } from "../session/index.js";
import { CliError, describeError } from "./errors.js";

export type TlsVersionName = "TLSv1.2" | "TLSv1.3";

export interface Target {
  host: string;
  port: number;
}

export interface HandshakeOptions extends Target {
  /** SNI; undefined sends none (the default for an IP address). */
  servername?: string;
  /** PEM CAs to verify against instead of Node's roots. */
  ca?: string | Buffer;
  /** Do not verify the server's certificate. */
  insecure?: boolean;
  minVersion?: TlsVersionName;
  maxVersion?: TlsVersionName;
  /** A session from an earlier connection to offer. */
  session?: Buffer;
  /** Offer ticket support (default true). False sets SSL_OP_NO_TICKET: TLS 1.2 session ids only. */
  tickets?: boolean;
  /** Whole connection deadline, TCP connect included (ms, default 5000). */
  timeoutMs?: number;
  /**
   * After a TLS 1.3 handshake, wait this long at most for the first new session (tickets come
   * after the handshake; default 0: do not wait). Ends as soon as one arrives. A function decides
   * once the handshake is done, from how long it took and whether it resumed.
   */
  ticketWaitMs?: number | ((handshake: HandshakeInfo) => number);
  /**
   * Called as soon as the handshake completes, before any wait for a ticket: a caller that does
   * not need the tickets (bench) goes on while the connection waits for them.
   */
  onHandshake?: (handshake: HandshakeInfo) => void;
}

export interface HandshakeInfo {
  /** Milliseconds from the start of the TCP connect to the end of the handshake. */
  latencyMs: number;
  resumed: boolean;
  protocol: string | null;
}

export interface ReceivedSession {
  der: Buffer;
  /** Seconds, when the session carries a ticket with a hint. */
  ticketLifetimeHint: number | undefined;
  /** The session's own timeout field (seconds). */
  timeout: number | undefined;
  /** The session holds a ticket (TLS 1.2 ticket or TLS 1.3 PSK identity). */
  hasTicket: boolean;
  /** Length of the session id the server gave (0: none, nothing to resume by id). */
  idLength: number;
}

export interface HandshakeResult {
  resumed: boolean;
  protocol: string | null;
  cipher: string | null;
  /** Milliseconds from the start of the TCP connect to the end of the handshake. */
  latencyMs: number;
  /**
   * Milliseconds between the end of the handshake and the end of the connection's wait for a
   * TLS 1.3 ticket (0 when it did not wait): not part of the handshake.
   */
  ticketWaitMs: number;
  /** Every session the server gave this connection, oldest first (decoded where possible). */
  sessions: ReceivedSession[];
}

/** An error reaching or talking to the server; `kind` tells probe what it means. */
export class HandshakeError extends Error {
  override readonly name = "HandshakeError";
  readonly kind: "unreachable" | "timeout" | "version" | "tls";
  readonly code: string | undefined;

  constructor(kind: HandshakeError["kind"], message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.code = options?.code;
  }
}

// A client and server that share no protocol version: the method is unsupported, not broken.
const VERSION_CODES = new Set([
  "ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION",
  "ERR_SSL_UNSUPPORTED_PROTOCOL",
  "ERR_SSL_NO_PROTOCOLS_AVAILABLE",
  "ERR_SSL_WRONG_SSL_VERSION",
  "ERR_SSL_TLSV1_ALERT_INAPPROPRIATE_FALLBACK",
]);

const NET_TEXT: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset by the server",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "connection timed out",
  EPIPE: "connection closed by the server",
};

/** Classifies an error from tls.connect; the message is printable (see `printable`). */
export function classify(err: unknown, target: Target): HandshakeError {
  if (err instanceof HandshakeError) return err;
  const e = classifyRaw(err, target);
  return new HandshakeError(e.kind, printable(e.message), { cause: e.cause, code: e.code });
}

function classifyRaw(err: unknown, target: Target): HandshakeError {
  const code = (err as NodeJS.ErrnoException).code;
  const where = `${formatTarget(target)}`;
  if (code && VERSION_CODES.has(code)) {
    return new HandshakeError("version", `${where}: no common TLS version (${describeError(err)})`, {
      cause: err,
      code,
    });
  }
  if (code && NET_TEXT[code] && code !== "ECONNRESET" && code !== "EPIPE") {
    return new HandshakeError("unreachable", `cannot connect to ${where}: ${NET_TEXT[code]}`, {
      cause: err,
      code,
    });
  }
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") {
    return new HandshakeError("unreachable", `cannot connect to ${where}: ${describeError(err)}`, {
      cause: err,
      code,
    });
  }
  const text = code && NET_TEXT[code] ? NET_TEXT[code] : describeError(err);
  const verify =
    code !== undefined && (code.startsWith("ERR_TLS_CERT") || CERT_CODES.has(code))
      ? " (--ca FILE to trust its CA, or --insecure)"
      : "";
  return new HandshakeError("tls", `TLS handshake with ${where} failed: ${text}${verify}`, {
    cause: err,
    code,
  });
}

const CERT_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

export function formatTarget(t: Target): string {
  return printable(`${isIP(t.host) === 6 ? `[${t.host}]` : t.host}:${t.port}`);
}

// C0 and C1 controls, DEL, and the Unicode format characters that reorder or break lines (bidi
// overrides and isolates, line/paragraph separators, BOM).
const UNPRINTABLE = /[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]/g;

/**
 * Text from outside (a server, a session file, the command line) made safe for a terminal:
 * control characters become \xNN (\u{NNNN} above U+00FF), so they can neither move the cursor,
 * retitle the window nor start a line that looks like ours.
 */
export function printable(s: string): string {
  return s.replace(UNPRINTABLE, (c) => {
    const n = c.charCodeAt(0);
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, "0")}` : `\\u{${n.toString(16)}}`;
  });
}

function decode(der: Buffer): ReceivedSession {
  try {
    const s = parseSession(der);
    return {
      der,
      ticketLifetimeHint: s.ticketLifetimeHint,
      timeout: s.timeout,
      hasTicket: s.ticket !== undefined && s.ticket.length > 0,
      idLength: s.id.length,
    };
  } catch {
    // A session the decoder does not understand can still be offered back as it is.
    return { der, ticketLifetimeHint: undefined, timeout: undefined, hasTicket: false, idLength: 0 };
  }
}

// Making a SecureContext (and parsing its CAs) costs about as much as a resumed handshake: one per
// configuration, reused by every connection made with it.
const contexts = new Map<string, { ca: string | Buffer | undefined; context: tls.SecureContext }>();

function clientContext(o: HandshakeOptions): tls.SecureContext {
  const minVersion = o.minVersion ?? "TLSv1.2";
  const maxVersion = o.maxVersion ?? "TLSv1.3";
  const key = `${minVersion} ${maxVersion} ${o.tickets !== false}`;
  const known = contexts.get(key);
  if (known && known.ca === o.ca) return known.context;
  const context = tls.createSecureContext({
    ...(o.ca !== undefined ? { ca: o.ca } : {}),
    minVersion,
    maxVersion,
    ...(o.tickets === false ? { secureOptions: constants.SSL_OP_NO_TICKET } : {}),
  });
  contexts.set(key, { ca: o.ca, context });
  return context;
}

/**
 * One TLS connection; rejects with a HandshakeError when the handshake does not complete. Once it
 * has completed, nothing the server does afterwards (a reset, a close, an alert) makes it a
 * failure. Closes the connection with close_notify.
 */
export function handshake(o: HandshakeOptions): Promise<HandshakeResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const raw: Buffer[] = [];
    let settled = false;
    let handshakeDone = false;
    let handshakeEnd = 0;
    let waited = false;
    let latencyMs = 0;
    let resumed = false;
    let protocol: string | null = null;
    let cipher: string | null = null;
    let waitTimer: NodeJS.Timeout | undefined;
    const timeoutMs = o.timeoutMs ?? 5000;

    const socket = tls.connect({
      host: o.host,
      port: o.port,
      ...(o.servername !== undefined ? { servername: o.servername } : {}),
      secureContext: clientContext(o),
      rejectUnauthorized: !o.insecure,
      ...(o.session ? { session: o.session } : {}),
    });

    const deadline = setTimeout(
      () => {
        fail(new HandshakeError("timeout", `${formatTarget(o)}: no TLS handshake within ${timeoutMs} ms`));
      },
      Math.min(timeoutMs, MAX_TIMER_MS),
    );

    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      if (waitTimer) clearTimeout(waitTimer);
      const ticketWaitMs = waited ? performance.now() - handshakeEnd : 0;
      // TLS 1.2 sessions by id come with the handshake and may not be emitted as 'session'. Not
      // TLS 1.3: without a ticket its session cannot resume anything.
      if (raw.length === 0 && protocol !== "TLSv1.3") {
        const s = socket.getSession();
        if (s) raw.push(s);
      }
      close();
      resolve({ resumed, protocol, cipher, latencyMs, ticketWaitMs, sessions: raw.map(decode) });
    };

    const fail = (err: unknown) => {
      if (settled) return;
      // The handshake completed: what happens afterwards (a reset while waiting for a ticket, a
      // close, an alert) does not undo it.
      if (handshakeDone) return done();
      settled = true;
      clearTimeout(deadline);
      if (waitTimer) clearTimeout(waitTimer);
      socket.destroy();
      reject(classify(err, o));
    };

    // close_notify, so a server never counts the session as broken; the socket goes when the
    // server answers or shortly after.
    const close = () => {
      socket.removeAllListeners("data");
      socket.on("error", () => {});
      socket.resume();
      socket.end();
      const t = setTimeout(() => socket.destroy(), 1000);
      t.unref();
      socket.once("close", () => clearTimeout(t));
    };

    socket.on("session", (s: Buffer) => {
      raw.push(s);
      // Several tickets often come in one read: take them all before closing.
      if (waitTimer !== undefined) setImmediate(done);
    });
    socket.on("error", fail);
    socket.once("close", () => {
      if (settled) return;
      if (handshakeDone) done();
      else fail(new HandshakeError("tls", `${formatTarget(o)}: connection closed during the TLS handshake`));
    });
    socket.once("secureConnect", () => {
      handshakeDone = true;
      handshakeEnd = performance.now();
      latencyMs = handshakeEnd - started;
      resumed = socket.isSessionReused();
      protocol = socket.getProtocol();
      cipher = socket.getCipher()?.name ?? null;
      const info = { latencyMs, resumed, protocol };
      o.onHandshake?.(info);
      const w = o.ticketWaitMs ?? 0;
      const wait = typeof w === "function" ? w(info) : w;
      // TLS 1.2 sessions come with the handshake; TLS 1.3 tickets after it.
      if (wait <= 0 || protocol !== "TLSv1.3" || raw.length > 0) {
        if (raw.length > 0 && protocol === "TLSv1.3") setImmediate(done);
        else done();
        return;
      }
      waited = true;
      waitTimer = setTimeout(done, Math.min(wait, MAX_TIMER_MS));
    });
    socket.on("data", () => {
      // Whatever the server says first (a banner) is not ours to read.
    });
  });
}

/** The longest delay setTimeout takes (2^31 - 1 ms); longer ones fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Throws a CliError for an error that makes the whole run pointless (exit 2). */
export function fatal(err: unknown): never {
  if (err instanceof CliError) throw err;
  const e =
    err instanceof HandshakeError ? err : new HandshakeError("tls", describeError(err), { cause: err });
  throw new CliError(e.message, { cause: e.cause ?? e, exitCode: 2 });
}

/** Parses HOST[:PORT], [IPv6][:PORT] or a bare IPv6 address (port default 443). */
export function parseTarget(value: string, defaultPort = 443): Target {
  const v = value.trim();
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d*))?$/.exec(v);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2];
    if (isIP(host) !== 6) throw new CliError(`'${host}' in brackets is not an IPv6 address`);
  } else if (isIP(v) === 6) {
    host = v;
  } else {
    const colon = v.lastIndexOf(":");
    if (colon >= 0) {
      host = v.slice(0, colon);
      portText = v.slice(colon + 1);
    } else {
      host = v;
    }
    if (host.includes(":")) throw new CliError(`put an IPv6 address in brackets, e.g. [::1]:443`);
  }
  if (!host) throw new CliError(`'${value}': expected HOST[:PORT], e.g. example.com or 127.0.0.1:8443`);
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d+$/.test(portText)) throw new CliError(`'${value}': port '${portText}' is not a number`);
    port = Number(portText);
    if (port < 1 || port > 65535) throw new CliError(`'${value}': port ${port} is out of range (1-65535)`);
  }
  return { host, port };
}

/** The SNI to send: --servername, else the host unless it is an IP address. */
export function defaultServername(host: string, servername: string | undefined): string | undefined {
  return servername ?? (isIP(host) ? undefined : host);
}

/** The newest session that carries a ticket. */
export function lastTicket(sessions: readonly ReceivedSession[]): ReceivedSession | undefined {
  for (let i = sessions.length - 1; i >= 0; i--) if (sessions[i]!.hasTicket) return sessions[i];
  return undefined;
}
