// The self-signed localhost certificate `sesscache serve` uses when given no --cert/--key. Node 20
// can parse X.509 but not make it, so this builds the certificate itself (a few dozen lines of
// DER) rather than depend on the openssl CLI being installed.
import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  X509Certificate,
} from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { CliError, describeError } from "./errors.js";

/** $SESSCACHE_STATE_DIR, else $XDG_STATE_HOME/sesscache, else ~/.local/state/sesscache. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SESSCACHE_STATE_DIR) return resolve(env.SESSCACHE_STATE_DIR);
  // The XDG spec says relative values are invalid and must be ignored.
  const xdg = env.XDG_STATE_HOME;
  if (xdg && isAbsolute(xdg)) return join(xdg, "sesscache");
  return join(homedir(), ".local", "state", "sesscache");
}

export interface LocalCertificate {
  certFile: string;
  keyFile: string;
  cert: string; // PEM
  key: string; // PEM
  fingerprint256: string;
  /** True when this call made a new certificate. */
  generated: boolean;
}

// Renew a little before expiry so a long-running server started today still has a valid one.
const RENEW_BEFORE_MS = 24 * 3600 * 1000;
const VALIDITY_DAYS = 365;

/**
 * The certificate in `<stateDir>/tls/`, made on first use. Creation is race-free between processes:
 * each writes a complete pair into its own temporary directory and renames it into place; rename
 * of a directory onto a non-empty one fails, so the first wins and the others read its pair.
 */
export function ensureLocalCertificate(stateDir: string, now = Date.now()): LocalCertificate {
  const dir = join(stateDir, "tls");
  const existing = readPair(dir, now);
  if (existing === "missing" || existing === "stale") {
    try {
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new CliError(`cannot create state directory ${stateDir}: ${describeError(err)}`, { cause: err });
    }
    if (existing === "stale") {
      // Keep the old pair for reference rather than delete what someone may have trusted.
      try {
        renameSync(dir, `${dir}.old-${now}`);
      } catch {
        // another process got there first
      }
    }
    const tmp = join(stateDir, `.tls-${process.pid}-${randomBytes(4).toString("hex")}`);
    try {
      mkdirSync(tmp, { mode: 0o700 });
      const pair = makeSelfSignedCertificate({ now });
      writeFileSync(join(tmp, "key.pem"), pair.key, { mode: 0o600 });
      writeFileSync(join(tmp, "cert.pem"), pair.cert, { mode: 0o644 });
      try {
        renameSync(tmp, dir);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
      }
    } catch (err) {
      throw new CliError(`cannot write certificate to ${stateDir}: ${describeError(err)}`, { cause: err });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    const made = readPair(dir, now);
    if (typeof made === "string") throw new CliError(`cannot read back the certificate in ${dir}`);
    return { ...made, generated: true };
  }
  return { ...existing, generated: false };
}

function readPair(dir: string, now: number): Omit<LocalCertificate, "generated"> | "missing" | "stale" {
  const certFile = join(dir, "cert.pem");
  const keyFile = join(dir, "key.pem");
  let cert: string;
  let key: string;
  try {
    cert = readFileSync(certFile, "utf8");
    key = readFileSync(keyFile, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return "missing";
    throw new CliError(`cannot use state directory ${dirname(dir)}: ${describeError(err)}`, { cause: err });
  }
  try {
    const x509 = new X509Certificate(cert);
    if (Date.parse(x509.validTo) - RENEW_BEFORE_MS < now) return "stale";
    if (!x509.checkPrivateKey(createPrivateKey(key))) return "stale";
    return { certFile, keyFile, cert, key, fingerprint256: x509.fingerprint256 };
  } catch {
    // Damaged files: replace them (the old ones are kept aside).
    return "stale";
  }
}

export interface SelfSignedOptions {
  commonName?: string;
  dnsNames?: string[];
  ipAddresses?: string[];
  days?: number;
  now?: number;
}

/** A P-256 key and a self-signed ECDSA-SHA256 certificate for it, both PEM. */
export function makeSelfSignedCertificate(opts: SelfSignedOptions = {}): { cert: string; key: string } {
  const now = opts.now ?? Date.now();
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = publicKey.export({ type: "spki", format: "der" });
  const name = seq(
    set(seq(oid("2.5.4.10"), utf8("sesscache serve (self-signed)"))),
    set(seq(oid("2.5.4.3"), utf8(opts.commonName ?? "localhost"))),
  );
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive and minimal (RFC 5280 §4.1.2.2)
  const general = [
    ...(opts.dnsNames ?? ["localhost"]).map((d) => tlv(0x82, Buffer.from(d, "ascii"))),
    ...(opts.ipAddresses ?? ["127.0.0.1", "::1"]).map((ip) => tlv(0x87, ipBytes(ip))),
  ];
  const ecdsaSha256 = seq(oid("1.2.840.10045.4.3.2"));
  const extensions = seq(
    ext("2.5.29.19", true, seq()), // basicConstraints: not a CA (browsers refuse a CA as end entity)
    ext("2.5.29.15", true, tlv(0x03, Buffer.from([0x07, 0x80]))), // keyUsage: digitalSignature
    ext("2.5.29.37", false, seq(oid("1.3.6.1.5.5.7.3.1"))), // extKeyUsage: serverAuth
    ext("2.5.29.17", false, seq(...general)), // subjectAltName
    ext("2.5.29.14", false, tlv(0x04, createHash("sha1").update(spki).digest())), // subjectKeyIdentifier
  );
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))), // v3
    tlv(0x02, serial),
    ecdsaSha256,
    name,
    seq(time(now - 3600_000), time(now + (opts.days ?? VALIDITY_DAYS) * 86400_000)), // 1 h for clock skew
    name,
    spki,
    tlv(0xa3, extensions),
  );
  const signature = sign("sha256", tbs, privateKey); // DER ECDSA-Sig-Value, as X.509 wants
  const cert = seq(tbs, ecdsaSha256, tlv(0x03, Buffer.concat([Buffer.from([0]), signature])));
  return {
    cert: pem("CERTIFICATE", cert),
    key: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
  };
}

function tlv(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const len =
    n < 0x80
      ? [n]
      : n < 0x100
        ? [0x81, n]
        : n < 0x10000
          ? [0x82, n >> 8, n & 0xff]
          : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), content]);
}

const seq = (...parts: Buffer[]) => tlv(0x30, Buffer.concat(parts));
const set = (...parts: Buffer[]) => tlv(0x31, Buffer.concat(parts));
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, "utf8"));

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split(".").map(Number);
  const out = [a! * 40 + b!];
  for (const v of rest) {
    const groups = [v & 0x7f];
    for (let x = v >>> 7; x > 0; x >>>= 7) groups.unshift((x & 0x7f) | 0x80);
    out.push(...groups);
  }
  return tlv(0x06, Buffer.from(out));
}

function ext(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [Buffer.from([0x01, 0x01, 0xff])] : []), tlv(0x04, value));
}

/** UTCTime until 2049, GeneralizedTime after (RFC 5280 §4.1.2.5). */
function time(ms: number): Buffer {
  const iso = new Date(ms).toISOString(); // 2025-01-02T03:04:05.678Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, ""); // 20250102030405
  const year = new Date(ms).getUTCFullYear();
  return year < 2050 ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${digits}Z`));
}

function ipBytes(ip: string): Buffer {
  if (ip.includes(":")) {
    const [head, tail] = ip.split("::") as [string, string | undefined];
    const h = head ? head.split(":") : [];
    const t = tail ? tail.split(":") : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
    const out = Buffer.alloc(16);
    for (const [i, g] of groups.entries()) out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
    return out;
  }
  return Buffer.from(ip.split(".").map(Number));
}

function pem(label: string, der: Buffer): string {
  const b64 = der.toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith("\n") ? "" : "\n"}-----END ${label}-----\n`;
}
