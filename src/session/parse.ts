// Decoding OpenSSL's DER SSL_SESSION (spec R3) into a Session.
import type { InspectOptionsStylized, inspect as utilInspect } from "node:util";
import { cipherName } from "./ciphers.js";
import {
  CLASS_CONTEXT_CONSTRUCTED,
  CLASS_CONTEXT_PRIMITIVE,
  DerReader,
  TAG_INTEGER,
  TAG_OCTET_STRING,
  TAG_SEQUENCE,
} from "./der.js";
import { SessionDecodeError } from "./errors.js";
import type { Session } from "./types.js";

/** Node refuses to emit or accept sessions larger than this (SSL_SESSION DER, bytes). */
export const MAX_SESSION_DER_BYTES = 10240;
const MAX_ID = 32; // SSL3_MAX_SSL_SESSION_ID_LENGTH
const MAX_SID_CTX = 32; // SSL_MAX_SID_CTX_LENGTH
// SSL_MAX_MASTER_KEY_LENGTH. OpenSSL's decoder takes up to TLS13_MAX_RESUMPTION_PSK_LENGTH (hundreds)
// for external PSK sessions, but resumption secrets are a hash output (≤ 48, SHA-384) and TLS 1.2
// master secrets are 48, so nothing a session cache sees is longer.
const MAX_MASTER_KEY = 48;
/** OpenSSL's d2i_SSL_SESSION reads a missing (or zero) timeout as 3 s. */
const MISSING_TIMEOUT = 3;
const HIGHEST_KNOWN_FIELD = 20;
const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;
const UINT32_MAX = 0xffffffff;

// A byte field is kept as one small integer, offset * SPAN + length, instead of a view object:
// construction stays allocation-free for fields nobody reads. Offsets and lengths are < 10241.
const SPAN = 0x4000;
const NONE = -1;
const view = (der: Uint8Array, sp: number) =>
  der.subarray((sp / SPAN) | 0, ((sp / SPAN) | 0) + (sp & (SPAN - 1)));

const utf8 = new TextDecoder();
const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

export interface ParseOptions {
  /** Seconds since the epoch used when the session carries no start time (OpenSSL: now). */
  now?: number;
}

/** What toJSON() and util.inspect show: enough to identify a session, nothing secret. */
export interface SessionSummary {
  id: string;
  protocol: string;
  protocolVersion: number;
  cipherId: number;
  cipherName: string | undefined;
  time: number;
  timeout: number;
  expiresAt: number;
  sessionIdContext: string;
  verifyResult: number;
  hostname: string | undefined;
  alpn: string | undefined;
  ticketLength: number | undefined;
  ticketLifetimeHint: number | undefined;
  peerCertificateLength: number | undefined;
  extendedMasterSecret: boolean;
  maxEarlyData: number;
  group: number | undefined;
  derLength: number;
}

const PROTOCOLS: Record<number, string> = {
  768: "SSLv3",
  769: "TLSv1",
  770: "TLSv1.1",
  771: "TLSv1.2",
  772: "TLSv1.3",
  65279: "DTLSv1",
  65277: "DTLSv1.2",
};

/** OpenSSL's protocol name for a version number, or "unknown (0x....)". */
export function protocolName(version: number): string {
  return PROTOCOLS[version] ?? `unknown (0x${version.toString(16).padStart(4, "0")})`;
}

function octets(r: DerReader, what: string, max = MAX_SESSION_DER_BYTES): number {
  r.expect(TAG_OCTET_STRING, what);
  if (r.len > max) throw new SessionDecodeError("bad-field", `${what} too long`, r.hdr);
  return r.start * SPAN + r.len;
}

function integerIn(r: DerReader, what: string, min: number, max: number): number {
  r.expect(TAG_INTEGER, what);
  const v = r.integer();
  if (v < min || v > max) throw new SessionDecodeError("bad-integer", `${what} out of range`, r.hdr);
  return v;
}

let readMasterKey: (s: SslSession) => Uint8Array;

/**
 * The master secret (TLS 1.2) or resumption PSK (TLS 1.3) of a decoded session: a view into its
 * DER, empty when the session has none. Deliberately not a member and not exported from the
 * package: only code that means to show a secret (`sesscache inspect --show-secrets`) calls it.
 */
export function sessionMasterKey(s: SslSession): Uint8Array {
  return readMasterKey(s);
}

/**
 * A decoded session. Byte fields (`id`, `sessionIdContext`, `peerCertificate`, `ticket`) are
 * zero-copy views of `der`, which is the caller's buffer itself: do not modify it afterwards
 * (copy first if it is reused). `peerCertificate` and `ticket` make a new view on each access;
 * `hostname` and `alpn` are decoded on each access. The master secret has no accessor at all: it
 * stays inside `der`, and `toString()`, `toJSON()` and `util.inspect` show a summary without it.
 */
export class SslSession implements Session {
  readonly #der: Uint8Array;
  readonly #id: Uint8Array;
  readonly #sidCtx: Uint8Array;
  readonly #protocolVersion: number;
  readonly #cipherId: number;
  readonly #time: number;
  readonly #timeout: number;
  #peer = NONE;
  #verifyResult = 0;
  #hostname = NONE;
  #ticket = NONE;
  #ticketLifetimeHint = NONE;
  #ticketAgeAdd = NONE;
  #extendedMasterSecret = false;
  #maxEarlyData = 0;
  #alpn = NONE;
  #group = NONE;
  #masterKey = NONE;
  #pskIdentityHint = NONE;
  #pskIdentity = NONE;
  #srpUsername = NONE;
  #maxFragmentLengthMode = 0;

  static {
    // The one way to the master secret, for `sesscache inspect --show-secrets`: a module-level
    // function rather than a member, so nothing that walks a session (JSON, inspect) can reach it.
    readMasterKey = (s) => (s.#masterKey === NONE ? new Uint8Array(0) : view(s.#der, s.#masterKey));
  }

  /** Decodes `der`; throws SessionDecodeError. Use parseSession() rather than this. */
  constructor(der: Uint8Array, now?: number) {
    const n = der.length;
    if (n > MAX_SESSION_DER_BYTES) {
      throw new SessionDecodeError("too-large", `session DER over ${MAX_SESSION_DER_BYTES} bytes`);
    }
    const r = new DerReader(der, 0, n);
    r.expect(TAG_SEQUENCE, "SEQUENCE");
    if (r.pos !== n) throw new SessionDecodeError("trailing-bytes", "bytes after the SEQUENCE", r.pos);
    r.enter();

    r.expect(TAG_INTEGER, "version INTEGER");
    if (r.integer() !== 1) throw new SessionDecodeError("bad-version", "structure version is not 1", r.hdr);
    r.expect(TAG_INTEGER, "ssl_version INTEGER");
    const pv = r.integer();
    if (pv < 0 || pv > 0xffff)
      throw new SessionDecodeError("bad-protocol", "ssl_version out of range", r.hdr);
    this.#protocolVersion = pv;
    r.expect(TAG_OCTET_STRING, "cipher OCTET STRING");
    // Through a local: TS would otherwise keep r.len narrowed to 2 for the rest of the function.
    const cipherLen = r.len;
    if (cipherLen !== 2) throw new SessionDecodeError("bad-cipher", "cipher is not 2 bytes", r.hdr);
    this.#cipherId = (der[r.start] << 8) | der[r.start + 1];
    r.expect(TAG_OCTET_STRING, "session_id OCTET STRING");
    if (r.len > MAX_ID) throw new SessionDecodeError("id-too-long", "session id over 32 bytes", r.hdr);
    this.#id = der.subarray(r.start, r.pos);
    r.expect(TAG_OCTET_STRING, "master_key OCTET STRING");
    if (r.len > MAX_MASTER_KEY) {
      throw new SessionDecodeError("master-key-too-long", "master key over 48 bytes", r.hdr);
    }
    this.#masterKey = r.start * SPAN + r.len;

    let time = 0;
    let timeout = 0;
    let sidCtx = NONE;
    let last = -1;
    while (r.pos < n) {
      r.next();
      const num = r.num;
      // Only context-specific [n] from here on, each at most once, in ascending order.
      if ((r.cls & 0xc0) !== CLASS_CONTEXT_PRIMITIVE || num <= last) {
        throw new SessionDecodeError("bad-tag", "optional fields must be [n] in ascending order", r.hdr);
      }
      last = num;
      if (num === 0) {
        // key_arg, [0] IMPLICIT OCTET STRING: SSLv2 leftover, ignored as OpenSSL does.
        if (r.cls !== CLASS_CONTEXT_PRIMITIVE) throw new SessionDecodeError("bad-tag", "bad key_arg", r.hdr);
        continue;
      }
      // A field from a newer OpenSSL: skipped, so sessions stay readable (R3).
      if (num > HIGHEST_KNOWN_FIELD) continue;
      if (r.cls !== CLASS_CONTEXT_CONSTRUCTED) {
        throw new SessionDecodeError("bad-tag", `[${num}] must be EXPLICIT`, r.hdr);
      }
      const outer = r.enter();
      switch (num) {
        case 1:
          r.expect(TAG_INTEGER, "time INTEGER");
          time = r.integer();
          break;
        case 2:
          r.expect(TAG_INTEGER, "timeout INTEGER");
          timeout = r.integer();
          break;
        case 3:
          // The certificate is kept as raw DER; parsing X.509 is the caller's business.
          r.expect(TAG_SEQUENCE, "peer certificate SEQUENCE");
          this.#peer = r.hdr * SPAN + (r.pos - r.hdr);
          break;
        case 4:
          r.expect(TAG_OCTET_STRING, "session_id_context OCTET STRING");
          if (r.len > MAX_SID_CTX) {
            throw new SessionDecodeError("sid-ctx-too-long", "session id context over 32 bytes", r.hdr);
          }
          sidCtx = r.start * SPAN + r.len;
          break;
        case 5:
          this.#verifyResult = integerIn(r, "verify_result", INT32_MIN, INT32_MAX);
          break;
        case 6:
          this.#hostname = octets(r, "hostname");
          break;
        case 7:
          this.#pskIdentityHint = octets(r, "psk identity hint");
          break;
        case 8:
          this.#pskIdentity = octets(r, "psk identity");
          break;
        case 12:
          this.#srpUsername = octets(r, "srp username");
          break;
        case 18: // ticket appdata
        case 20: // peer raw public key
          octets(r, `[${num}]`);
          break;
        case 9:
          this.#ticketLifetimeHint = integerIn(r, "ticket lifetime hint", 0, Number.MAX_SAFE_INTEGER);
          break;
        case 10:
          this.#ticket = octets(r, "ticket");
          break;
        case 11:
          octets(r, "comp_id");
          if (r.len !== 1) throw new SessionDecodeError("bad-field", "comp_id is not 1 byte", r.hdr);
          break;
        case 13:
          // uint64 flags; only bit 0 (SSL_SESS_FLAG_EXTMS) means anything to a cache.
          integerIn(r, "flags", 0, Number.MAX_SAFE_INTEGER);
          this.#extendedMasterSecret = (der[r.pos - 1] & 1) === 1;
          break;
        case 14:
          this.#ticketAgeAdd = integerIn(r, "ticket age add", 0, UINT32_MAX);
          break;
        case 15:
          this.#maxEarlyData = integerIn(r, "max early data", 0, UINT32_MAX);
          break;
        case 16:
          this.#alpn = octets(r, "alpn");
          break;
        case 17:
          this.#maxFragmentLengthMode = integerIn(r, "max fragment length mode", 0, UINT32_MAX);
          break;
        case 19:
          this.#group = integerIn(r, "key-exchange group", 0, UINT32_MAX);
          break;
      }
      r.leave(outer);
    }

    // As OpenSSL's d2i_SSL_SESSION: zero is how i2d writes "absent" (ZINT64), a negative timeout
    // counts as 0 (ssl_session_calculate_timeout).
    this.#time = time !== 0 ? time : (now ?? Math.floor(Date.now() / 1000));
    this.#timeout = timeout === 0 ? MISSING_TIMEOUT : Math.max(timeout, 0);
    this.#sidCtx = sidCtx === NONE ? der.subarray(0, 0) : view(der, sidCtx);
    this.#der = der;
  }

  get der(): Uint8Array {
    return this.#der;
  }
  get id(): Uint8Array {
    return this.#id;
  }
  get protocolVersion(): number {
    return this.#protocolVersion;
  }
  get protocol(): string {
    return protocolName(this.#protocolVersion);
  }
  get cipherId(): number {
    return this.#cipherId;
  }
  get cipherName(): string | undefined {
    return cipherName(this.#cipherId);
  }
  get time(): number {
    return this.#time;
  }
  get timeout(): number {
    return this.#timeout;
  }
  get expiresAt(): number {
    const e = this.#time + this.#timeout;
    return Math.min(e, Number.MAX_SAFE_INTEGER);
  }
  get sessionIdContext(): Uint8Array {
    return this.#sidCtx;
  }
  get peerCertificate(): Uint8Array | undefined {
    return this.#peer === NONE ? undefined : view(this.#der, this.#peer);
  }
  get verifyResult(): number {
    return this.#verifyResult;
  }
  get hostname(): string | undefined {
    return this.#hostname === NONE ? undefined : utf8.decode(view(this.#der, this.#hostname));
  }
  get ticket(): Uint8Array | undefined {
    return this.#ticket === NONE ? undefined : view(this.#der, this.#ticket);
  }
  get ticketLifetimeHint(): number | undefined {
    return this.#ticketLifetimeHint === NONE ? undefined : this.#ticketLifetimeHint;
  }
  get ticketAgeAdd(): number | undefined {
    return this.#ticketAgeAdd === NONE ? undefined : this.#ticketAgeAdd;
  }
  get alpn(): string | undefined {
    return this.#alpn === NONE ? undefined : utf8.decode(view(this.#der, this.#alpn));
  }
  get extendedMasterSecret(): boolean {
    return this.#extendedMasterSecret;
  }
  get maxEarlyData(): number {
    return this.#maxEarlyData;
  }
  get group(): number | undefined {
    return this.#group === NONE ? undefined : this.#group;
  }
  /** PSK identity hint ([7]), when present (sessions made with a pre-shared key). */
  get pskIdentityHint(): string | undefined {
    return this.#pskIdentityHint === NONE ? undefined : utf8.decode(view(this.#der, this.#pskIdentityHint));
  }
  /** PSK identity ([8]), when present. */
  get pskIdentity(): string | undefined {
    return this.#pskIdentity === NONE ? undefined : utf8.decode(view(this.#der, this.#pskIdentity));
  }
  /** SRP user name ([12]), when present. */
  get srpUsername(): string | undefined {
    return this.#srpUsername === NONE ? undefined : utf8.decode(view(this.#der, this.#srpUsername));
  }
  /** RFC 6066 max_fragment_length code ([17]): 0 none, 1..4 = 512, 1024, 2048, 4096 bytes. */
  get maxFragmentLengthMode(): number {
    return this.#maxFragmentLengthMode;
  }

  /** R5: expired only strictly after time + timeout. */
  isExpiredAt(t: number): boolean {
    return t > this.expiresAt;
  }

  toJSON(): SessionSummary {
    return {
      id: hex(this.#id),
      protocol: this.protocol,
      protocolVersion: this.#protocolVersion,
      cipherId: this.#cipherId,
      cipherName: this.cipherName,
      time: this.#time,
      timeout: this.#timeout,
      expiresAt: this.expiresAt,
      sessionIdContext: hex(this.#sidCtx),
      verifyResult: this.#verifyResult,
      hostname: this.hostname,
      alpn: this.alpn,
      ticketLength: this.#ticket === NONE ? undefined : this.#ticket & (SPAN - 1),
      ticketLifetimeHint: this.ticketLifetimeHint,
      peerCertificateLength: this.#peer === NONE ? undefined : this.#peer & (SPAN - 1),
      extendedMasterSecret: this.#extendedMasterSecret,
      maxEarlyData: this.#maxEarlyData,
      group: this.group,
      derLength: this.#der.length,
    };
  }

  toString(): string {
    const cipher = this.cipherName ?? `0x${this.#cipherId.toString(16).padStart(4, "0")}`;
    return `SslSession(${this.protocol} ${cipher} id=${hex(this.#id)} time=${this.#time} timeout=${this.#timeout})`;
  }

  [Symbol.for("nodejs.util.inspect.custom")](
    depth: number,
    options: InspectOptionsStylized,
    inspect: typeof utilInspect,
  ): string {
    if (depth < 0) return options.stylize("[SslSession]", "special");
    return `SslSession ${inspect(this.toJSON(), { ...options, depth: options.depth == null ? null : options.depth - 1 })}`;
  }
}

const PEM_BEGIN = "-----BEGIN SSL SESSION PARAMETERS-----";
const PEM_END = "-----END SSL SESSION PARAMETERS-----";
// Base64 of MAX_SESSION_DER_BYTES in 64-column lines is ~14 KB; anything far longer is not a session.
const MAX_PEM_BODY = 32768;

/** The DER inside the first SSL SESSION PARAMETERS block (text around it is ignored, as OpenSSL does). */
export function pemToDer(text: string): Uint8Array {
  const b = text.indexOf(PEM_BEGIN);
  const e = b < 0 ? -1 : text.indexOf(PEM_END, b + PEM_BEGIN.length);
  if (e < 0) throw new SessionDecodeError("bad-pem", "no SSL SESSION PARAMETERS block");
  if (e - b > MAX_PEM_BODY) throw new SessionDecodeError("too-large", "PEM body too long");
  const body = text.slice(b + PEM_BEGIN.length, e).replace(/[ \t\r\n]+/g, "");
  if (body.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(body)) {
    throw new SessionDecodeError("bad-pem", "PEM body is not base64");
  }
  // Copied out of Buffer's shared pool so that a kept session does not pin an 8 KiB slab.
  return new Uint8Array(Buffer.from(body, "base64"));
}

/**
 * Decodes an OpenSSL SSL_SESSION: DER bytes (what Node's newSession, 'session' and getSession()
 * give) or the PEM text `openssl s_client -sess_out` writes. Throws only SessionDecodeError.
 */
export function parseSession(input: Uint8Array | string, options?: ParseOptions): SslSession {
  if (input instanceof Uint8Array) return new SslSession(input, options?.now);
  if (typeof input === "string") return new SslSession(pemToDer(input), options?.now);
  throw new SessionDecodeError("bad-input", "expected DER bytes (a Uint8Array) or PEM text");
}
