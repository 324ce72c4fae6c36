// Re-encoding a session with a new start time and/or timeout: what OpenSSL does in place with
// SSL_SESSION_set_time / SSL_SESSION_set_timeout, for the engine's UPDATE_TIME and for applying
// the cache's timeout to new sessions (R5). Only the [1]/[2] fields and the outer length change;
// every other byte is copied as is.
import {
  DerReader,
  integerContent,
  lengthSize,
  TAG_INTEGER,
  TAG_OCTET_STRING,
  TAG_SEQUENCE,
  writeLength,
} from "./der.js";
import { SessionDecodeError } from "./errors.js";
import { MAX_SESSION_DER_BYTES, SslSession } from "./parse.js";
import type { Session } from "./types.js";

export interface SessionTimes {
  /** New start time, seconds since the epoch. */
  time?: number;
  /** New lifetime, seconds. */
  timeout?: number;
}

const TAG_TIME = 0xa1;
const TAG_TIMEOUT = 0xa2;
const TAG_KEY_ARG = 0x80;

/** [n] EXPLICIT INTEGER v; empty for 0, which OpenSSL's i2d omits (ZINT64) and d2i reads as now / 3 s. */
function explicitInteger(tag: number, v: number): Uint8Array {
  if (v === 0) return new Uint8Array(0);
  const c = integerContent(v);
  // c.length ≤ 8, so both lengths fit in one byte.
  const out = new Uint8Array(4 + c.length);
  out[0] = tag;
  out[1] = 2 + c.length;
  out[2] = TAG_INTEGER;
  out[3] = c.length;
  out.set(c, 4);
  return out;
}

function checkTime(name: string, v: number | undefined): void {
  if (v !== undefined && !(Number.isSafeInteger(v) && v >= 0)) {
    throw new RangeError(`withTimes: ${name} must be a non-negative safe integer`);
  }
}

/**
 * A new Session equal to `session` but with its [1] time and/or [2] timeout replaced (or
 * inserted). A field not given keeps its original bytes; if it was absent, the session's
 * effective value (the parse-time "now", or 3 s) is written so that it no longer depends on when
 * the DER is decoded. A value of 0 leaves the field out, as i2d_SSL_SESSION does (so it reads
 * back as "now" / 3 s). Throws RangeError for a negative or non-integer value, SessionDecodeError
 * if the session's DER is malformed or the result exceeds MAX_SESSION_DER_BYTES.
 */
export function withTimes(session: Session, times: SessionTimes): SslSession {
  checkTime("time", times.time);
  checkTime("timeout", times.timeout);
  const der = session.der;
  const r = new DerReader(der);
  r.expect(TAG_SEQUENCE, "SEQUENCE");
  const seqContentStart = r.start;
  r.enter();
  r.expect(TAG_INTEGER, "version INTEGER");
  r.expect(TAG_INTEGER, "ssl_version INTEGER");
  r.expect(TAG_OCTET_STRING, "cipher OCTET STRING");
  r.expect(TAG_OCTET_STRING, "session_id OCTET STRING");
  r.expect(TAG_OCTET_STRING, "master_key OCTET STRING");
  // Find where [1] and [2] are, or would go: after key_arg [0] if present.
  let at = r.pos;
  let oldTime: Uint8Array | undefined;
  let oldTimeout: Uint8Array | undefined;
  const peek = () => (r.pos < r.end ? der[r.pos] : -1);
  if (peek() === TAG_KEY_ARG) {
    r.next();
    at = r.pos;
  }
  if (peek() === TAG_TIME) {
    r.next();
    oldTime = der.subarray(r.hdr, r.pos);
  }
  if (peek() === TAG_TIMEOUT) {
    r.next();
    oldTimeout = der.subarray(r.hdr, r.pos);
  }
  const rest = r.pos;
  const seqEnd = r.end;

  const time =
    times.time !== undefined
      ? explicitInteger(TAG_TIME, times.time)
      : (oldTime ?? explicitInteger(TAG_TIME, session.time));
  const timeout =
    times.timeout !== undefined
      ? explicitInteger(TAG_TIMEOUT, times.timeout)
      : (oldTimeout ?? explicitInteger(TAG_TIMEOUT, session.timeout));

  const contentLen = at - seqContentStart + time.length + timeout.length + (seqEnd - rest);
  const total = 1 + lengthSize(contentLen) + contentLen;
  if (total > MAX_SESSION_DER_BYTES) {
    throw new SessionDecodeError("too-large", `session DER over ${MAX_SESSION_DER_BYTES} bytes`);
  }
  const out = new Uint8Array(total);
  out[0] = TAG_SEQUENCE;
  let o = writeLength(out, 1, contentLen);
  out.set(der.subarray(seqContentStart, at), o);
  o += at - seqContentStart;
  out.set(time, o);
  o += time.length;
  out.set(timeout, o);
  o += timeout.length;
  out.set(der.subarray(rest, seqEnd), o);
  return new SslSession(out);
}
