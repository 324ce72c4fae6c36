/**
 * A decoded OpenSSL `SSL_SESSION` (spec R3). Field names follow `openssl sess_id -text` where one
 * exists. The master secret is deliberately absent from this surface: it stays inside `der` and
 * never reaches `toString()`, `toJSON()` or `util.inspect`.
 */
export interface Session {
  /** The DER bytes exactly as given (what Node hands out and takes back). */
  readonly der: Uint8Array;
  /** Session id, 0..32 bytes (a TLS 1.3 stateful ticket's identity is its 32-byte id). */
  readonly id: Uint8Array;
  /** 0x0301..0x0304 (TLS), 0xfeff/0xfefd (DTLS). */
  readonly protocolVersion: number;
  /** "TLSv1.2", "TLSv1.3", ... or "unknown (0x....)". */
  readonly protocol: string;
  /** The two-byte cipher suite id, e.g. 0x1301. */
  readonly cipherId: number;
  /** IANA name, e.g. "TLS_AES_128_GCM_SHA256", or undefined when unknown. */
  readonly cipherName: string | undefined;
  /** Start time, seconds since the epoch. */
  readonly time: number;
  /** Lifetime in seconds. */
  readonly timeout: number;
  /** time + timeout, saturating at Number.MAX_SAFE_INTEGER (R5). */
  readonly expiresAt: number;
  /** 0..32 bytes. */
  readonly sessionIdContext: Uint8Array;
  /** Peer certificate, DER, when present (client sessions). */
  readonly peerCertificate: Uint8Array | undefined;
  /** X509_V_OK = 0. */
  readonly verifyResult: number;
  readonly hostname: string | undefined;
  /** Opaque ticket (client side), when present. */
  readonly ticket: Uint8Array | undefined;
  readonly ticketLifetimeHint: number | undefined;
  readonly ticketAgeAdd: number | undefined;
  readonly alpn: string | undefined;
  readonly extendedMasterSecret: boolean;
  readonly maxEarlyData: number;
  /** Key-exchange group id (e.g. 0x001d = x25519), when present. */
  readonly group: number | undefined;
  /** True when t > expiresAt (R5: expired only strictly after time + timeout). */
  isExpiredAt(t: number): boolean;
}
