// Helpers for the engine tests: a fake clock, synthetic sessions and callback recorders.
import { SessionCache, type SessionCacheOptions } from "../../src/engine/index.js";
import { parseSession, type Session } from "../../src/session/index.js";
import { buildSessionDer, newId, type SessionFields } from "./session-der.js";

/** Start of the fake clock: well away from 0, which OpenSSL's encoding treats as "no time". */
export const T0 = 1_700_000_000;

export interface FakeClock {
  (): number;
  now: number;
  advance(seconds: number): number;
  set(t: number): void;
}

export function fakeClock(start = T0): FakeClock {
  const clock = (() => clock.now) as FakeClock;
  clock.now = start;
  clock.advance = (s) => {
    clock.now += s;
    return clock.now;
  };
  clock.set = (t) => {
    clock.now = t;
  };
  return clock;
}

export interface SessionSpec extends SessionFields {
  /** Shorthand for sessionIdContext, as bytes or UTF-8. */
  ctx?: Uint8Array | string;
  /** Pad the DER to about this many bytes with an unknown trailing field (R3 skips it). */
  padTo?: number;
}

const enc = new TextEncoder();

/** A decoded synthetic session; time defaults to T0, timeout to 7200, a fresh 32-byte id. */
export function session(spec: SessionSpec = {}): Session {
  const { ctx, padTo, ...fields } = spec;
  const f: SessionFields = {
    time: T0,
    timeout: 7200,
    ...fields,
    id: fields.id ?? newId(),
    sessionIdContext:
      fields.sessionIdContext ?? (typeof ctx === "string" ? enc.encode(ctx) : (ctx ?? new Uint8Array(0))),
  };
  let der = buildSessionDer(f);
  if (padTo !== undefined && padTo > der.length) {
    // An unknown [25] field (OCTET STRING inside EXPLICIT) of the right size; header bytes vary
    // with the length, so adjust until the total is exact.
    let pad = padTo - der.length - 4;
    for (let tries = 0; tries < 8 && pad >= 0; tries++) {
      der = buildSessionDer({ ...f, extra: [{ tag: 25, content: octet(pad) }] });
      if (der.length === padTo) break;
      pad += padTo - der.length;
    }
  }
  return parseSession(der);
}

function octet(n: number): Uint8Array {
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  const out = new Uint8Array(1 + len.length + n).fill(0xab);
  out[0] = 0x04;
  out.set(len, 1);
  return out;
}

export const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

/** What the callbacks saw, as hex ids (and the sessions themselves). */
export interface Recorder {
  added: Session[];
  removed: Session[];
  errors: unknown[];
  removedIds(): string[];
  addedIds(): string[];
}

/** A cache on a fake clock whose new/remove callbacks are recorded. */
export function recordingCache(options: SessionCacheOptions & { clock?: FakeClock } = {}): {
  cache: SessionCache;
  clock: FakeClock;
  rec: Recorder;
} {
  const clock = options.clock ?? fakeClock();
  const rec: Recorder = {
    added: [],
    removed: [],
    errors: [],
    removedIds: () => rec.removed.map((s) => hex(s.id)),
    addedIds: () => rec.added.map((s) => hex(s.id)),
  };
  const cache = new SessionCache({
    onNewSession: (s) => rec.added.push(s),
    onRemoveSession: (s) => rec.removed.push(s),
    onError: (e) => rec.errors.push(e),
    ...options,
    clock,
  });
  return { cache, clock, rec };
}

/** Ids of the internal cache, head (latest expiry) to tail (next evicted). */
export function order(cache: SessionCache): string[] {
  return cache.sessions().map((s) => hex(s.id));
}
