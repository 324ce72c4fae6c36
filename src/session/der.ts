// A minimal DER reader for OpenSSL's SSL_SESSION.
//
// Why hand-written: decoding runs on every new session and every external-cache hit, and the
// structure is fixed and shallow (one SEQUENCE of INTEGERs, OCTET STRINGs and [n] EXPLICIT
// wrappers). `npm run bench -- decode` (Node 20.20, real Node sessions, all fields read, a busy
// 2-CPU machine): parseSession 1.3 M ops/s on a 158-byte TLS 1.2 server session and 0.7 M ops/s
// on a 580-byte TLS 1.3 client session; asn1js 4.0.0 (fromBER, then the same fields) 7.5 k and
// 1.3 k ops/s, about 180x and 540x slower. asn1js builds objects for every element, down into
// the peer certificate; this reader keeps offsets and allocates only the result.
//
// Scope: definite lengths only (DER), tags up to 4 base-128 bytes, lengths up to 4 bytes. Every
// length is checked against its enclosing element before any byte is read, so malformed input can
// only end in a SessionDecodeError. Non-minimal lengths and INTEGERs are accepted (OpenSSL never
// writes them; rejecting them buys nothing here).
import { SessionDecodeError } from "./errors.js";

export const TAG_INTEGER = 0x02;
export const TAG_OCTET_STRING = 0x04;
export const TAG_SEQUENCE = 0x30;
/** Identifier-octet class + constructed bits of an EXPLICIT [n] (context-specific, constructed). */
export const CLASS_CONTEXT_CONSTRUCTED = 0xa0;
export const CLASS_CONTEXT_PRIMITIVE = 0x80;

/**
 * Reads one element header at a time. After next(): `tag` is the first identifier octet,
 * `cls` its class+constructed bits (tag & 0xe0), `num` the tag number (high-tag form decoded),
 * `hdr` where the element starts, `start`/`len` its content, and `pos` points past it.
 * Mutable fields rather than returned objects: the hot path allocates nothing per element.
 */
export class DerReader {
  readonly buf: Uint8Array;
  pos: number;
  /** Where the enclosing element (or the buffer) ends: nothing past it may be read. */
  end: number;
  tag = 0;
  cls = 0;
  num = 0;
  hdr = 0;
  start = 0;
  len = 0;

  constructor(buf: Uint8Array, pos = 0, end = buf.length) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  /** Running out of bytes at the end of the input is truncation; inside an element, a bad length. */
  private short(at: number): SessionDecodeError {
    return this.end === this.buf.length
      ? new SessionDecodeError("truncated", "input ends inside an element", at)
      : new SessionDecodeError("bad-length", "element overruns its enclosing element", at);
  }

  /** Reads the header of the element at pos and moves pos past the whole element. */
  next(): void {
    const buf = this.buf;
    const end = this.end;
    let p = this.pos;
    this.hdr = p;
    if (p >= end) throw this.short(p);
    const tag = buf[p++];
    this.tag = tag;
    this.cls = tag & 0xe0;
    let num = tag & 0x1f;
    if (num === 0x1f) {
      // High-tag-number form: base-128, at most 4 bytes (tag numbers below 2^28).
      num = 0;
      for (let i = 0; ; i++) {
        if (i === 4) throw new SessionDecodeError("bad-tag", "tag number too long", this.hdr);
        if (p >= end) throw this.short(p);
        const b = buf[p++];
        num = num * 128 + (b & 0x7f);
        if ((b & 0x80) === 0) break;
      }
    }
    this.num = num;
    if (p >= end) throw this.short(p);
    let len = buf[p++];
    if (len & 0x80) {
      const n = len & 0x7f;
      // 0x80 is BER's indefinite length; over 4 length bytes is beyond any sane session.
      if (n === 0 || n > 4) throw new SessionDecodeError("bad-length", "unsupported length form", this.hdr);
      if (p + n > end) throw this.short(p);
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + buf[p++];
    }
    if (len > end - p) throw this.short(this.hdr);
    this.start = p;
    this.len = len;
    this.pos = p + len;
  }

  /** next(), requiring a given single-octet tag. */
  expect(tag: number, what: string): void {
    this.next();
    if (this.tag !== tag) throw new SessionDecodeError("bad-tag", `expected ${what}`, this.hdr);
  }

  /**
   * Steps into the current element's content (for an EXPLICIT wrapper) and returns the outer end,
   * to be given back to leave().
   */
  enter(): number {
    const outer = this.end;
    this.pos = this.start;
    this.end = this.start + this.len;
    return outer;
  }

  /** Leaves an entered element, which must have been read to its end. */
  leave(outer: number): void {
    if (this.pos !== this.end) {
      throw new SessionDecodeError("trailing-bytes", "extra bytes inside a field", this.pos);
    }
    this.end = outer;
  }

  /**
   * The current element's content as a signed INTEGER, clamped to ±Number.MAX_SAFE_INTEGER
   * (times and timeouts saturate, R5). Up to 9 content bytes: a uint64 with its sign pad.
   */
  integer(): number {
    const buf = this.buf;
    const start = this.start;
    const len = this.len;
    if (len === 0 || len > 9) throw new SessionDecodeError("bad-integer", "bad INTEGER length", this.hdr);
    let v = buf[start];
    if (v & 0x80) v -= 256;
    // Exact while |v| < 2^53; beyond that only the clamp below matters.
    for (let i = 1; i < len; i++) v = v * 256 + buf[start + i];
    if (v > Number.MAX_SAFE_INTEGER) return Number.MAX_SAFE_INTEGER;
    if (v < -Number.MAX_SAFE_INTEGER) return -Number.MAX_SAFE_INTEGER;
    return v;
  }
}

/** Appends a DER length to `out` at `o`, returns the new offset. Lengths here are < 2^24. */
export function writeLength(out: Uint8Array, o: number, len: number): number {
  if (len < 0x80) out[o++] = len;
  else if (len < 0x100) {
    out[o++] = 0x81;
    out[o++] = len;
  } else if (len < 0x10000) {
    out[o++] = 0x82;
    out[o++] = len >> 8;
    out[o++] = len & 0xff;
  } else {
    out[o++] = 0x83;
    out[o++] = len >> 16;
    out[o++] = (len >> 8) & 0xff;
    out[o++] = len & 0xff;
  }
  return o;
}

export function lengthSize(len: number): number {
  return len < 0x80 ? 1 : len < 0x100 ? 2 : len < 0x10000 ? 3 : 4;
}

/** Minimal two's-complement INTEGER content for a safe integer. */
export function integerContent(v: number): Uint8Array {
  if (v >= 0) {
    const bytes: number[] = [];
    let x = v;
    do {
      bytes.push(x % 256);
      x = Math.floor(x / 256);
    } while (x > 0);
    if (bytes[bytes.length - 1] & 0x80) bytes.push(0);
    return Uint8Array.from(bytes.reverse());
  }
  // Negative (a pre-1970 time in some odd DER): rare enough for BigInt.
  let x = BigInt(v);
  const bytes: number[] = [];
  for (;;) {
    const b = Number(x & 0xffn);
    bytes.push(b);
    x >>= 8n;
    if (x === -1n && b & 0x80) break;
  }
  return Uint8Array.from(bytes.reverse());
}
