// A small DER writer for synthetic SSL_SESSION blobs in tests (spec R3). It writes the same
// layout OpenSSL's i2d_SSL_SESSION does, so tests need no live handshake to make a session.

export interface SessionFields {
  version?: number; // ASN.1 structure version, 1
  protocolVersion?: number; // 0x0303
  cipherId?: number; // 0xc02f
  id?: Uint8Array;
  masterKey?: Uint8Array;
  keyArg?: Uint8Array; // [0] IMPLICIT, an SSLv2 leftover
  time?: number; // omitted when undefined
  timeout?: number | null; // omitted when null
  peerCertificate?: Uint8Array; // raw DER of a certificate (a SEQUENCE)
  sessionIdContext?: Uint8Array;
  verifyResult?: number;
  hostname?: string;
  pskIdentityHint?: string;
  pskIdentity?: string;
  ticketLifetimeHint?: number;
  ticket?: Uint8Array;
  compId?: Uint8Array; // 1 byte in a valid session
  srpUsername?: string;
  flags?: number; // 1 = extended master secret
  ticketAgeAdd?: number;
  maxEarlyData?: number;
  alpn?: string;
  maxFragmentLengthMode?: number;
  ticketAppData?: Uint8Array;
  group?: number;
  peerRpk?: Uint8Array;
  /** Extra [n] EXPLICIT fields appended after the known ones (n > 20 is "unknown"; n ≥ 31 uses the high-tag form). */
  extra?: { tag: number; content: Uint8Array }[];
}

export function tlv(tag: number, content: Uint8Array): Uint8Array {
  const n = content.length;
  let len: number[];
  if (n < 0x80) len = [n];
  else if (n < 0x100) len = [0x81, n];
  else if (n < 0x10000) len = [0x82, n >> 8, n & 0xff];
  else len = [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  const out = new Uint8Array(1 + len.length + n);
  out[0] = tag;
  out.set(len, 1);
  out.set(content, 1 + len.length);
  return out;
}

/** DER INTEGER content for a non-negative safe integer (minimal, with a 0x00 pad for the sign). */
export function intBytes(v: number): Uint8Array {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`intBytes: ${v}`);
  const bytes: number[] = [];
  let x = v;
  do {
    bytes.unshift(x % 256);
    x = Math.floor(x / 256);
  } while (x > 0);
  if (bytes[0] & 0x80) bytes.unshift(0);
  return Uint8Array.from(bytes);
}

export const integer = (v: number) => tlv(0x02, intBytes(v));
export const octets = (b: Uint8Array) => tlv(0x04, b);
export const explicit = (n: number, inner: Uint8Array) => tlv(0xa0 | n, inner);
/** [n] EXPLICIT for any tag number, in the high-tag-number form from 31 on. */
export function explicitAny(n: number, inner: Uint8Array): Uint8Array {
  if (n < 31) return explicit(n, inner);
  const num: number[] = [n & 0x7f];
  for (let x = Math.floor(n / 128); x > 0; x = Math.floor(x / 128)) num.unshift(0x80 | (x & 0x7f));
  const t = tlv(0, inner);
  return concat([Uint8Array.of(0xbf, ...num), t.subarray(1)]);
}
export const sequence = (...parts: Uint8Array[]) => tlv(0x30, concat(parts));

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

let counter = 0;
/** A fresh 32-byte id; deterministic per process so failures reproduce. */
export function newId(len = 32): Uint8Array {
  counter++;
  const id = new Uint8Array(len);
  for (let i = 0; i < len; i++) id[i] = (counter * 31 + i * 7 + (counter >> 8)) & 0xff;
  id[0] = counter & 0xff;
  if (len > 1) id[1] = (counter >> 8) & 0xff;
  if (len > 2) id[2] = (counter >> 16) & 0xff;
  return id;
}

const enc = new TextEncoder();

/** Build an SSL_SESSION DER. Defaults give a 158-byte-class TLS 1.2 server session. */
export function buildSessionDer(f: SessionFields = {}): Uint8Array {
  const parts: Uint8Array[] = [
    integer(f.version ?? 1),
    integer(f.protocolVersion ?? 0x0303),
    octets(Uint8Array.of(((f.cipherId ?? 0xc02f) >> 8) & 0xff, (f.cipherId ?? 0xc02f) & 0xff)),
    octets(f.id ?? newId()),
    octets(f.masterKey ?? new Uint8Array(48).fill(0x5a)),
  ];
  if (f.keyArg) parts.push(tlv(0x80, f.keyArg));
  if (f.time !== undefined) parts.push(explicit(1, integer(f.time)));
  if (f.timeout !== null) parts.push(explicit(2, integer(f.timeout ?? 7200)));
  if (f.peerCertificate) parts.push(explicit(3, f.peerCertificate));
  parts.push(explicit(4, octets(f.sessionIdContext ?? new Uint8Array(0))));
  if (f.verifyResult !== undefined) parts.push(explicit(5, integer(f.verifyResult)));
  if (f.hostname !== undefined) parts.push(explicit(6, octets(enc.encode(f.hostname))));
  if (f.pskIdentityHint !== undefined) parts.push(explicit(7, octets(enc.encode(f.pskIdentityHint))));
  if (f.pskIdentity !== undefined) parts.push(explicit(8, octets(enc.encode(f.pskIdentity))));
  if (f.ticketLifetimeHint !== undefined) parts.push(explicit(9, integer(f.ticketLifetimeHint)));
  if (f.ticket) parts.push(explicit(10, octets(f.ticket)));
  if (f.compId) parts.push(explicit(11, octets(f.compId)));
  if (f.srpUsername !== undefined) parts.push(explicit(12, octets(enc.encode(f.srpUsername))));
  if (f.flags !== undefined) parts.push(explicit(13, integer(f.flags)));
  if (f.ticketAgeAdd !== undefined) parts.push(explicit(14, integer(f.ticketAgeAdd)));
  if (f.maxEarlyData !== undefined) parts.push(explicit(15, integer(f.maxEarlyData)));
  if (f.alpn !== undefined) parts.push(explicit(16, octets(enc.encode(f.alpn))));
  if (f.maxFragmentLengthMode !== undefined) parts.push(explicit(17, integer(f.maxFragmentLengthMode)));
  if (f.ticketAppData) parts.push(explicit(18, octets(f.ticketAppData)));
  if (f.group !== undefined) parts.push(explicit(19, integer(f.group)));
  if (f.peerRpk) parts.push(explicit(20, octets(f.peerRpk)));
  for (const e of f.extra ?? []) parts.push(explicitAny(e.tag, e.content));
  return sequence(...parts);
}
