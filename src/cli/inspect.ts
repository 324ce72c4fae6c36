// `sesscache inspect [FILE|-]`: decodes a saved TLS session (DER, or the PEM `openssl s_client
// -sess_out` writes) with src/session's decoder and prints it the way `openssl sess_id -noout
// -text` does, followed by what sess_id leaves out (hostname, ALPN, group, peer certificate...).
// The master secret is printed only with --show-secrets; errors never carry session bytes.
import { X509Certificate } from "node:crypto";
import { open } from "node:fs/promises";
import type { Command } from "commander";
import { opensslCipherName } from "../session/ciphers.js";
import { SessionDecodeError } from "../session/errors.js";
import { parseSession, type SslSession, sessionMasterKey } from "../session/parse.js";
import { CliError, describeError } from "./errors.js";
import { printable } from "./tls-handshake.js";

/**
 * Read at most this much: a session is at most 10 KiB of DER (about 14 KB as PEM); anything far
 * larger is not one, and a mistaken `inspect /dev/zero` must not fill memory.
 */
const MAX_INPUT = 256 * 1024;
const PEM_LABEL = "SSL SESSION PARAMETERS";

interface InspectOptions {
  json?: boolean;
  showSecrets?: boolean;
}

export function register(program: Command): void {
  program
    .command("inspect")
    .summary("decode a saved TLS session (DER or PEM) and print its fields")
    .description(
      "Decode an OpenSSL SSL_SESSION: the DER Node hands out (the tls 'session' event, " +
        "socket.getSession(), a server's newSession) or the PEM that `openssl s_client -sess_out` writes " +
        `("-----BEGIN ${PEM_LABEL}-----"), from FILE or from stdin (FILE omitted or "-"). ` +
        "Prints it like `openssl sess_id -noout -text`, then the fields sess_id leaves out. " +
        "The master secret (TLS 1.2) or resumption PSK (TLS 1.3) is shown only with --show-secrets. " +
        "Exit codes: 0 decoded, 2 unreadable input or not a session (one line on stderr).",
    )
    .argument("[file]", 'session file, DER or PEM; "-" or nothing reads stdin')
    .option(
      "--json",
      "print one JSON object: protocol, sessionId, sessionIdContext (hex), cipher, time, timeout, " +
        "ticketLifetimeHint, alpn, hostname, peerCertificate.subject, ... (absent fields are null)",
    )
    .option("--show-secrets", "also print the master secret / resumption PSK (masterKey in --json)")
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  openssl s_client -connect example.com:443 -tls1_3 -sess_out s.pem </dev/null && sesscache inspect s.pem\n" +
        "  sesscache inspect --json s.pem | jq .ticketLifetimeHint\n" +
        "  cat session.der | sesscache inspect -\n" +
        "  sesscache inspect --show-secrets s.pem   # compare: openssl sess_id -in s.pem -noout -text",
    )
    .action(async (file: string | undefined, opts: InspectOptions) => {
      const { name, bytes } = await readInput(file);
      const session = decode(name, bytes);
      const out = opts.json
        ? `${JSON.stringify(toJson(session, opts.showSecrets === true), null, 2)}\n`
        : toText(session, opts.showSecrets === true);
      process.stdout.write(out);
    });
}

// ---- input --------------------------------------------------------------------------------------

async function readInput(file: string | undefined): Promise<{ name: string; bytes: Buffer }> {
  if (file === undefined || file === "-") {
    if (file === undefined && process.stdin.isTTY) {
      throw new CliError('no session given: name a FILE, or pipe one in ("-" reads stdin)');
    }
    return { name: "stdin", bytes: await readStdin() };
  }
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(file, "r");
  } catch (err) {
    throw new CliError(`cannot read ${printable(file)}: ${printable(describeError(err))}`, { cause: err });
  }
  try {
    const buf = Buffer.alloc(MAX_INPUT + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n > MAX_INPUT) throw tooLarge(file);
    }
    return { name: file, bytes: buf.subarray(0, n) };
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`cannot read ${printable(file)}: ${printable(describeError(err))}`, { cause: err });
  } finally {
    await fh.close();
  }
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of process.stdin) {
      const b = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer);
      n += b.length;
      if (n > MAX_INPUT) throw tooLarge("stdin");
      chunks.push(b);
    }
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`cannot read stdin: ${printable(describeError(err))}`, { cause: err });
  }
  return Buffer.concat(chunks, n);
}

const tooLarge = (name: string) =>
  new CliError(
    `${printable(name)}: not a TLS session: over ${MAX_INPUT / 1024} KiB (a session is at most 10 KiB)`,
  );

/**
 * DER (a SEQUENCE: its first byte is 0x30) or PEM (by its BEGIN line); anything else is refused
 * before decoding. DER is recognised first: a session's own fields (a hostname, a ticket) may hold
 * a PEM BEGIN line.
 */
function decode(name: string, bytes: Buffer): SslSession {
  const fail = (why: string, cause?: unknown) =>
    new CliError(
      `${printable(name)}: not a TLS session: ${why}`,
      cause === undefined ? undefined : { cause },
    );
  if (bytes.length === 0 || /^\s*$/.test(bytes.toString("latin1"))) {
    throw fail("empty input (expected DER, or PEM from openssl s_client -sess_out)");
  }
  const text = bytes.toString("latin1");
  const hasSessionPem = text.includes(`-----BEGIN ${PEM_LABEL}-----`);
  if (bytes[0] === 0x30) {
    try {
      return parseSession(new Uint8Array(bytes));
    } catch (err) {
      // The decoder's messages name the problem and its offset, never the bytes. A text file that
      // happens to start with "0" and holds a session PEM block is still read as PEM.
      if (!(err instanceof SessionDecodeError)) throw err;
      if (!hasSessionPem) throw fail(`DER: ${err.message}`, err);
    }
  }
  const label = /-----BEGIN ([^-\r\n]{1,64})-----/.exec(text)?.[1];
  if (label === undefined) {
    throw fail("neither DER (an ASN.1 SEQUENCE) nor PEM (-----BEGIN SSL SESSION PARAMETERS-----)");
  }
  if (!hasSessionPem) throw fail(`PEM block is "${printable(label)}", expected "${PEM_LABEL}"`);
  if (!text.includes(`-----END ${PEM_LABEL}-----`)) throw fail(`PEM block has no END line (truncated?)`);
  try {
    return parseSession(text);
  } catch (err) {
    if (err instanceof SessionDecodeError) throw fail(`PEM: ${err.message}`, err);
    throw err;
  }
}

// ---- output -------------------------------------------------------------------------------------

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
const HEX = (b: Uint8Array) => hex(b).toUpperCase();
const hex4 = (n: number) => `0x${n.toString(16).toUpperCase().padStart(4, "0")}`;

/** X509_verify_cert_error_string (OpenSSL 3) for the codes a session's verify result can hold. */
const VERIFY_TEXT: Record<number, string> = {
  0: "ok",
  1: "unspecified certificate verification error",
  2: "unable to get issuer certificate",
  3: "unable to get certificate CRL",
  4: "unable to decrypt certificate's signature",
  5: "unable to decrypt CRL's signature",
  6: "unable to decode issuer public key",
  7: "certificate signature failure",
  8: "CRL signature failure",
  9: "certificate is not yet valid",
  10: "certificate has expired",
  11: "CRL is not yet valid",
  12: "CRL has expired",
  13: "format error in certificate's notBefore field",
  14: "format error in certificate's notAfter field",
  15: "format error in CRL's lastUpdate field",
  16: "format error in CRL's nextUpdate field",
  17: "out of memory",
  18: "self-signed certificate",
  19: "self-signed certificate in certificate chain",
  20: "unable to get local issuer certificate",
  21: "unable to verify the first certificate",
  22: "certificate chain too long",
  23: "certificate revoked",
  24: "invalid CA certificate",
  25: "path length constraint exceeded",
  26: "unsupported certificate purpose",
  27: "certificate not trusted",
  28: "certificate rejected",
  62: "hostname mismatch",
  63: "email address mismatch",
  64: "IP address mismatch",
};
const verifyText = (code: number) => VERIFY_TEXT[code] ?? `error number ${code}`;

/** TLS supported-group names (IANA registry), as OpenSSL prints them. */
const GROUPS: Record<number, string> = {
  23: "secp256r1",
  24: "secp384r1",
  25: "secp521r1",
  29: "x25519",
  30: "x448",
  256: "ffdhe2048",
  257: "ffdhe3072",
  258: "ffdhe4096",
  259: "ffdhe6144",
  260: "ffdhe8192",
};

/** RFC 6066 max_fragment_length codes. */
const MAX_FRAGMENT: Record<number, number> = { 1: 512, 2: 1024, 3: 2048, 4: 4096 };

interface PeerCertificateJson {
  subject: string;
  issuer: string;
  subjectAltName: string | null;
  serialNumber: string;
  validFrom: string;
  validTo: string;
  fingerprint256: string;
  length: number;
}

/** Node gives RDNs one per line ("C=US\nCN=x"); one line reads better: "C=US, CN=x". */
const rdns = (s: string) => s.split("\n").filter(Boolean).join(", ");

function peerCertificate(der: Uint8Array | undefined): PeerCertificateJson | string | null {
  if (der === undefined) return null;
  try {
    const c = new X509Certificate(der);
    return {
      subject: rdns(c.subject),
      issuer: rdns(c.issuer),
      subjectAltName: c.subjectAltName ?? null,
      serialNumber: c.serialNumber,
      validFrom: c.validFrom,
      validTo: c.validTo,
      fingerprint256: c.fingerprint256,
      length: der.length,
    };
  } catch {
    // Kept as bytes by the decoder; a certificate Node cannot parse is still worth saying.
    return `undecodable certificate, ${der.length} bytes`;
  }
}

const isTls13 = (s: SslSession) => s.protocolVersion === 0x0304;

export function toJson(s: SslSession, showSecrets: boolean): Record<string, unknown> {
  const ticket = s.ticket;
  const peer = peerCertificate(s.peerCertificate);
  const now = Math.floor(Date.now() / 1000);
  return {
    protocol: s.protocol,
    protocolVersion: s.protocolVersion,
    cipher: s.cipherName ?? hex4(s.cipherId),
    cipherOpenSSL: opensslCipherName(s.cipherId) ?? null,
    cipherId: s.cipherId,
    sessionId: hex(s.id),
    sessionIdContext: hex(s.sessionIdContext),
    time: s.time,
    timeout: s.timeout,
    expiresAt: s.expiresAt,
    expired: s.isExpiredAt(now),
    ticketLifetimeHint: s.ticketLifetimeHint ?? null,
    ticketLength: ticket?.length ?? null,
    ticket: ticket === undefined ? null : hex(ticket),
    ticketAgeAdd: s.ticketAgeAdd ?? null,
    maxEarlyData: s.maxEarlyData,
    alpn: s.alpn ?? null,
    hostname: s.hostname ?? null,
    verifyResult: s.verifyResult,
    verifyResultText: verifyText(s.verifyResult),
    extendedMasterSecret: s.extendedMasterSecret,
    group: s.group ?? null,
    groupName: s.group === undefined ? null : (GROUPS[s.group] ?? null),
    maxFragmentLength: MAX_FRAGMENT[s.maxFragmentLengthMode] ?? null,
    pskIdentity: s.pskIdentity ?? null,
    pskIdentityHint: s.pskIdentityHint ?? null,
    srpUsername: s.srpUsername ?? null,
    peerCertificate: typeof peer === "string" ? { error: peer } : peer,
    derLength: s.der.length,
    ...(showSecrets ? { masterKey: hex(sessionMasterKey(s)) } : {}),
  };
}

/** BIO_dump_indent(bp, b, len, 4): what sess_id prints for the ticket. */
function dump(b: Uint8Array): string {
  let out = "";
  for (let i = 0; i < b.length; i += 16) {
    let line = `    ${i.toString(16).padStart(4, "0")} - `;
    let ascii = "";
    for (let j = 0; j < 16; j++) {
      if (i + j < b.length) {
        const c = b[i + j];
        line += `${c.toString(16).padStart(2, "0")}${j === 7 ? "-" : " "}`;
        ascii += c >= 0x20 && c <= 0x7e ? String.fromCharCode(c) : ".";
      } else {
        line += "   ";
      }
    }
    out += `${line}  ${ascii}\n`;
  }
  return out;
}

const iso = (t: number) => {
  const d = new Date(t * 1000);
  return Number.isNaN(d.getTime()) ? "never" : d.toISOString().replace(".000Z", "Z");
};

/** The `openssl sess_id -noout -text` layout (OpenSSL 3's SSL_SESSION_print), then sesscache's extras. */
export function toText(s: SslSession, showSecrets: boolean): string {
  const tls13 = isTls13(s);
  const keyLabel = tls13 ? "Resumption PSK" : "Master-Key";
  // Strings from the session (the server's or whoever wrote the file) are escaped for the terminal.
  const none = (v: string | undefined) => (v === undefined ? "None" : printable(v));
  const lines = [
    "SSL-Session:",
    `    Protocol  : ${s.protocol}`,
    `    Cipher    : ${opensslCipherName(s.cipherId) ?? s.cipherId.toString(16).toUpperCase().padStart(4, "0")}`,
    `    Session-ID: ${HEX(s.id)}`,
    `    Session-ID-ctx: ${HEX(s.sessionIdContext)}`,
    `    ${keyLabel}: ${showSecrets ? HEX(sessionMasterKey(s)) : "(hidden; --show-secrets prints it)"}`,
    `    PSK identity: ${none(s.pskIdentity)}`,
    `    PSK identity hint: ${none(s.pskIdentityHint)}`,
    `    SRP username: ${none(s.srpUsername)}`,
  ];
  let text = `${lines.join("\n")}\n`;
  if (s.ticketLifetimeHint)
    text += `    TLS session ticket lifetime hint: ${s.ticketLifetimeHint} (seconds)\n`;
  const ticket = s.ticket;
  if (ticket !== undefined) text += `    TLS session ticket:\n${dump(ticket)}\n`;
  text += `    Start Time: ${s.time}\n`;
  text += `    Timeout   : ${s.timeout} (sec)\n`;
  text += `    Verify return code: ${s.verifyResult} (${verifyText(s.verifyResult)})\n`;
  text += `    Extended master secret: ${s.extendedMasterSecret ? "yes" : "no"}\n`;
  if (tls13) text += `    Max Early Data: ${s.maxEarlyData}\n`;

  // What sess_id does not print.
  const now = Math.floor(Date.now() / 1000);
  const peer = peerCertificate(s.peerCertificate);
  const group = s.group === undefined ? "None" : `${GROUPS[s.group] ?? "unknown"} (${hex4(s.group)})`;
  const extra = [
    `    Cipher suite: ${s.cipherName ?? "unknown"} (${hex4(s.cipherId)})`,
    `    Started   : ${iso(s.time)}`,
    `    Expires   : ${iso(s.expiresAt)} (${s.isExpiredAt(now) ? "expired" : "not expired"})`,
    `    Hostname (SNI): ${none(s.hostname)}`,
    `    ALPN protocol: ${none(s.alpn)}`,
    `    Key exchange group: ${group}`,
    `    Ticket age add: ${s.ticketAgeAdd ?? "None"}`,
    `    Ticket length: ${ticket === undefined ? "None" : `${ticket.length} bytes`}`,
  ];
  const mfl = MAX_FRAGMENT[s.maxFragmentLengthMode];
  if (mfl !== undefined) extra.push(`    Max fragment length: ${mfl}`);
  if (peer === null) extra.push("    Peer certificate: None");
  else if (typeof peer === "string") extra.push(`    Peer certificate: ${peer}`);
  else {
    extra.push(
      `    Peer certificate: ${printable(peer.subject)}`,
      `        Issuer    : ${printable(peer.issuer)}`,
      ...(peer.subjectAltName ? [`        Alt names : ${printable(peer.subjectAltName)}`] : []),
      `        Not after : ${printable(peer.validTo)}`,
      `        SHA-256   : ${peer.fingerprint256}`,
    );
  }
  extra.push(`    Session size: ${s.der.length} bytes (DER)`);
  return `${text}${extra.join("\n")}\n`;
}
