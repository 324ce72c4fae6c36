// An incremental, allocation-light reader for the first flight of a TLS client: just enough of the
// ClientHello to find what a session cache needs (legacy_session_id, the pre_shared_key identities,
// whether TLS 1.3 is offered, whether the session_ticket extension is there, the SNI name). This is hostile-input
// code: every length is checked against its container, nothing is trusted, what it buffers is
// capped, and any input it does not understand ends in `unknown` (the caller then hands the bytes to
// OpenSSL untouched and lets it answer). It never throws.
//
// Layout (RFC 8446 §4.1.2, §5.1; RFC 5246 §7.4.1.2):
//   record:      type(1)=22 | legacy_record_version(2) | length(2) ≤ 2^14 | fragment
//   handshake:   msg_type(1)=1 | length(3) | body (may be split over several records)
//   ClientHello: legacy_version(2) | random(32) | legacy_session_id<0..32> | cipher_suites<2..2^16-2>
//                | legacy_compression_methods<1..2^8-1> | extensions<0..2^16-1> (absent in old hellos)

/** TLS 1.3's wire version (supported_versions), also a session's protocolVersion. */
export const TLS1_3_VERSION = 0x0304;

const RECORD_HEADER = 5;
const MAX_FRAGMENT = 16384; // 2^14: the largest plaintext record (RFC 8446 §5.1)
/** The largest ClientHello handshake message (header included) this reader accepts. */
export const MAX_HELLO_BYTES = MAX_FRAGMENT;
/**
 * The most raw bytes it buffers: a hello of MAX_HELLO_BYTES plus headers for up to 64 records. A
 * hello cut into more, smaller records than that is given up on (`unknown`, reason "too-large").
 */
export const MAX_BUFFERED_BYTES = MAX_HELLO_BYTES + 64 * RECORD_HEADER;

const CONTENT_HANDSHAKE = 22;
const HS_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_SESSION_TICKET = 35;
const EXT_PRE_SHARED_KEY = 41;
const EXT_SUPPORTED_VERSIONS = 43;

export interface ClientHelloInfo {
  /** ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3 clients). */
  legacyVersion: number;
  /** legacy_session_id, 0..32 bytes (random 32 bytes for a TLS 1.3 client in compatibility mode). */
  legacyId: Uint8Array;
  /** Identities of the pre_shared_key extension (41), in the client's order; empty when absent. */
  pskIdentities: Uint8Array[];
  /** supported_versions (43) lists 0x0304. */
  offersTls13: boolean;
  /** The session_ticket extension (35) is present (empty or not). */
  hasSessionTicket: boolean;
  /** Bytes of ticket the session_ticket extension carries (0: empty or absent). */
  sessionTicketBytes: number;
  /**
   * The first host_name of server_name (0), as OpenSSL hands it to Node (bytes as latin1, case
   * kept: Node's SNI matching is case-sensitive); undefined when the client sent none.
   */
  serverName: string | undefined;
  /** TLS records the handshake message was spread over (Node's own parser only reads one, §9.5). */
  records: number;
  /** Raw bytes the hello took (record headers included); anything after it is not read. */
  length: number;
}

export type ClientHelloResult =
  | { readonly kind: "more" }
  | { readonly kind: "done"; readonly hello: ClientHelloInfo }
  | { readonly kind: "unknown"; readonly reason: UnknownReason };

export type UnknownReason =
  | "not-handshake" // first record is not a TLS handshake record (HTTP, SSLv2 hello, garbage, ...)
  | "not-client-hello"
  | "too-large" // over the caps above
  | "malformed" // a length that does not fit its container, or a duplicated extension we read
  | "internal"; // a bug caught by the last-resort guard

const MORE: ClientHelloResult = Object.freeze({ kind: "more" });
const unknownResults = new Map<UnknownReason, ClientHelloResult>();
function unknown(reason: UnknownReason): ClientHelloResult {
  let r = unknownResults.get(reason);
  if (r === undefined) {
    r = Object.freeze({ kind: "unknown", reason });
    unknownResults.set(reason, r);
  }
  return r;
}

/**
 * Feed it the client's bytes as they arrive with `push`; it answers `more` until it can say `done`
 * or `unknown`, and keeps answering that final result afterwards. The common case, a hello that
 * arrives whole in one chunk and one record, is parsed in place without copying.
 */
export class ClientHelloReader {
  /** Raw bytes received so far: the caller's first chunk itself, or a copy once a second arrives. */
  private buf: Uint8Array = EMPTY;
  private len = 0;
  /** True once `buf` is our own growable copy rather than the caller's chunk. */
  private owned = false;
  /** Offset in `buf` of the next record header not yet consumed. */
  private pos = 0;
  /** Handshake bytes reassembled from several records (only when the hello is fragmented). */
  private hs: Uint8Array | undefined;
  private hsLen = 0;
  private records = 0;
  private result: ClientHelloResult = MORE;

  /** Bytes received so far (what the caller must hand on). */
  get received(): number {
    return this.len;
  }

  push(chunk: Uint8Array): ClientHelloResult {
    if (this.result.kind !== "more") return this.result;
    try {
      if (chunk.length === 0) return MORE;
      if (this.len + chunk.length > MAX_BUFFERED_BYTES) {
        // Whatever fits may still hold a complete hello: look at it first.
        const room = MAX_BUFFERED_BYTES - this.len;
        this.append(chunk.subarray(0, room));
        const r = this.advance();
        this.result = r.kind === "more" ? unknown("too-large") : r;
        return this.result;
      }
      this.append(chunk);
      this.result = this.advance();
      return this.result;
    } catch {
      this.result = unknown("internal");
      return this.result;
    }
  }

  private append(chunk: Uint8Array): void {
    if (this.len === 0) {
      this.buf = chunk; // zero-copy until a second chunk is needed
      this.len = chunk.length;
      return;
    }
    const need = this.len + chunk.length;
    if (!this.owned || need > this.buf.length) {
      let cap = this.owned ? this.buf.length : 256;
      while (cap < need) cap *= 2;
      if (cap > MAX_BUFFERED_BYTES) cap = MAX_BUFFERED_BYTES;
      const next = new Uint8Array(cap);
      next.set(this.buf.subarray(0, this.len));
      this.buf = next;
      this.owned = true;
    }
    this.buf.set(chunk, this.len);
    this.len = need;
  }

  /** Consumes whole records from `buf`; returns `more` until the handshake message is complete. */
  private advance(): ClientHelloResult {
    const b = this.buf;
    // The first byte tells a TLS handshake record from anything else: give up as early as possible
    // so that non-TLS bytes reach OpenSSL (which answers with an alert) without waiting.
    if (this.records === 0 && this.len > 0 && b[0] !== CONTENT_HANDSHAKE) return unknown("not-handshake");
    for (;;) {
      const p = this.pos;
      if (this.len - p < RECORD_HEADER) {
        if (this.len - p >= 2 && b[p + 1] !== 3) return unknown("not-handshake");
        return MORE;
      }
      if (b[p] !== CONTENT_HANDSHAKE || b[p + 1] !== 3) return unknown("not-handshake");
      const rlen = (b[p + 3] << 8) | b[p + 4];
      if (rlen === 0) return unknown("malformed"); // RFC 8446 §5.1: no empty handshake fragments
      if (rlen > MAX_FRAGMENT) return unknown("too-large");
      if (p + RECORD_HEADER + rlen > MAX_BUFFERED_BYTES) return unknown("too-large");
      if (this.len - p - RECORD_HEADER < rlen) return MORE;
      const fragStart = p + RECORD_HEADER;
      const fragEnd = fragStart + rlen;
      this.pos = fragEnd;
      this.records++;

      if (this.records === 1) {
        // Common case: the whole message in the first record, parsed in place.
        if (b[fragStart] !== HS_CLIENT_HELLO) return unknown("not-client-hello");
        if (rlen >= 4) {
          const mlen = (b[fragStart + 1] << 16) | (b[fragStart + 2] << 8) | b[fragStart + 3];
          if (mlen + 4 > MAX_HELLO_BYTES) return unknown("too-large");
          if (mlen + 4 <= rlen) {
            return parseBody(b, fragStart + 4, fragStart + 4 + mlen, 1, fragStart + 4 + mlen);
          }
        }
        this.hs = new Uint8Array(MAX_HELLO_BYTES);
        this.hs.set(b.subarray(fragStart, fragEnd));
        this.hsLen = rlen;
      } else {
        const hs = this.hs!;
        const take = Math.min(rlen, MAX_HELLO_BYTES - this.hsLen);
        if (take < rlen && this.hsLen < 4) return unknown("too-large");
        hs.set(b.subarray(fragStart, fragStart + take), this.hsLen);
        this.hsLen += take;
      }
      if (this.hsLen >= 4) {
        const hs = this.hs!;
        if (hs[0] !== HS_CLIENT_HELLO) return unknown("not-client-hello");
        const mlen = (hs[1] << 16) | (hs[2] << 8) | hs[3];
        if (mlen + 4 > MAX_HELLO_BYTES) return unknown("too-large");
        if (this.hsLen >= mlen + 4) {
          // Raw length: up to the record that completed the message (its tail may hold more data).
          return parseBody(hs, 4, 4 + mlen, this.records, this.pos);
        }
      }
    }
  }
}

const EMPTY = new Uint8Array(0);

/** Parses a ClientHello body b[start..end). Every read is bounds-checked against `end`. */
function parseBody(b: Uint8Array, start: number, end: number, records: number, rawLength: number) {
  let p = start;
  if (end - p < 2 + 32 + 1) return unknown("malformed");
  const legacyVersion = (b[p] << 8) | b[p + 1];
  p += 2 + 32;
  const idLen = b[p++];
  if (idLen > 32 || end - p < idLen) return unknown("malformed");
  const legacyId = b.subarray(p, p + idLen);
  p += idLen;
  if (end - p < 2) return unknown("malformed");
  const csLen = (b[p] << 8) | b[p + 1];
  p += 2;
  if (csLen < 2 || csLen & 1 || end - p < csLen) return unknown("malformed");
  p += csLen;
  if (end - p < 1) return unknown("malformed");
  const cmLen = b[p++];
  if (cmLen < 1 || end - p < cmLen) return unknown("malformed");
  p += cmLen;

  const hello: ClientHelloInfo = {
    legacyVersion,
    legacyId,
    pskIdentities: NO_IDENTITIES,
    offersTls13: false,
    hasSessionTicket: false,
    sessionTicketBytes: 0,
    serverName: undefined,
    records,
    length: rawLength,
  };
  if (p === end) return done(hello); // no extensions at all (pre-TLS 1.2 style hello)
  if (end - p < 2) return unknown("malformed");
  const extLen = (b[p] << 8) | b[p + 1];
  p += 2;
  if (extLen !== end - p) return unknown("malformed");
  let seenVersions = false;
  let seenPsk = false;
  let seenName = false;
  while (p < end) {
    if (end - p < 4) return unknown("malformed");
    const type = (b[p] << 8) | b[p + 1];
    const len = (b[p + 2] << 8) | b[p + 3];
    p += 4;
    if (end - p < len) return unknown("malformed");
    const e = p + len;
    switch (type) {
      case EXT_SERVER_NAME: {
        if (seenName) return unknown("malformed");
        seenName = true;
        // A malformed list counts as no name: OpenSSL refuses that hello itself.
        hello.serverName = parseServerName(b, p, e) ?? undefined;
        break;
      }
      case EXT_SESSION_TICKET:
        if (hello.hasSessionTicket) return unknown("malformed");
        hello.hasSessionTicket = true;
        hello.sessionTicketBytes = len;
        break;
      case EXT_SUPPORTED_VERSIONS: {
        if (seenVersions) return unknown("malformed");
        seenVersions = true;
        if (len < 1) return unknown("malformed");
        const vlen = b[p];
        if (vlen & 1 || vlen + 1 !== len) return unknown("malformed");
        for (let q = p + 1; q < e; q += 2) {
          if (b[q] === 0x03 && b[q + 1] === 0x04) hello.offersTls13 = true;
        }
        break;
      }
      case EXT_PRE_SHARED_KEY: {
        if (seenPsk) return unknown("malformed");
        seenPsk = true;
        const ids = parsePsk(b, p, e);
        if (ids === undefined) return unknown("malformed");
        hello.pskIdentities = ids;
        break;
      }
    }
    p = e;
  }
  return done(hello);
}

const NO_IDENTITIES: Uint8Array[] = [];

function done(hello: ClientHelloInfo): ClientHelloResult {
  return { kind: "done", hello };
}

/**
 * ServerNameList: server_name_list<1..2^16-1> of { name_type(1), HostName<1..2^16-1> }. Returns the
 * first host_name (type 0), undefined when there is none (an empty extension, as a server sends
 * back, or other name types), null when malformed.
 */
function parseServerName(b: Uint8Array, p: number, end: number): string | undefined | null {
  if (p === end) return undefined;
  if (end - p < 2) return null;
  const listLen = (b[p] << 8) | b[p + 1];
  p += 2;
  if (listLen !== end - p || listLen < 3) return null;
  let name: string | undefined;
  while (p < end) {
    if (end - p < 3) return null;
    const type = b[p];
    const l = (b[p + 1] << 8) | b[p + 2];
    p += 3;
    if (l < 1 || end - p < l) return null;
    if (type === 0 && name === undefined) {
      // DNS names are short (≤ 255); anything longer OpenSSL refuses, and the reader keeps none.
      if (l > 255) return null;
      name = String.fromCharCode.apply(null, b.subarray(p, p + l) as unknown as number[]);
    }
    p += l;
  }
  return name;
}

/** OfferedPsks: identities<7..2^16-1> (identity<1..2^16-1>, obfuscated_ticket_age u32), binders. */
function parsePsk(b: Uint8Array, p: number, end: number): Uint8Array[] | undefined {
  if (end - p < 2) return undefined;
  const idsLen = (b[p] << 8) | b[p + 1];
  p += 2;
  if (idsLen < 7 || end - p < idsLen) return undefined;
  const idsEnd = p + idsLen;
  const out: Uint8Array[] = [];
  while (p < idsEnd) {
    if (idsEnd - p < 2) return undefined;
    const l = (b[p] << 8) | b[p + 1];
    p += 2;
    if (l < 1 || idsEnd - p < l + 4) return undefined;
    out.push(b.subarray(p, p + l));
    p += l + 4;
  }
  // binders<33..2^16-1>: only checked to fit, never read.
  if (end - idsEnd < 2) return undefined;
  const bLen = (b[idsEnd] << 8) | b[idsEnd + 1];
  if (bLen < 33 || bLen !== end - idsEnd - 2) return undefined;
  return out;
}
