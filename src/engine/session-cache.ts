// SessionCache: OpenSSL 3.x's SSL_CTX session cache (spec sections 1-7, rules R1-R20), with the
// internal cache packed into slab slots (index-table.ts) rather than one object per session.
// Pure and synchronous except where an asynchronous external cache answers a look-up; no TLS
// imports; time comes from an injectable clock in seconds (the default one is cached, clock.ts).
//
// Sessions given to the cache are trusted only when sesscache decoded them (SslSession, or a
// CachedSession it handed out); any other object or byte array is decoded here first. Sessions the
// cache hands out (hits, remove callbacks) are CachedSessions over a fresh copy of the stored
// bytes, decoded lazily on first access to a field beyond der/protocolVersion/expiresAt.
//
// Deliberate divergences from OpenSSL, all documented in the spec:
// - R11: a cache of size N holds exactly N sessions (OpenSSL's eviction loop leaves N - 1).
// - R17: flush() returns how many sessions it removed and defaults to now.
// - R18: the auto-flush test runs once per completed handshake for TLS 1.2 and 1.3 alike (OpenSSL 3
//   tests once per TLS 1.3 ticket, after incrementing the counter).
// - R6/R7: an external answer that is not a session, or is a session for another id or protocol
//   version, is never trusted: it counts as nothing and is not copied in (OpenSSL counts a cb hit,
//   copies it in, and rejects the version afterwards; it never checks the id). R7's version check
//   is therefore implied: internally the version is part of the key.
// - R15: OpenSSL also marks a removed SSL_SESSION not resumable; here it simply cannot be found.
// - R13: inserting a session that expires between the head and the tail walks the list from both
//   ends (OpenSSL walks from the head); the common cases (latest or earliest expiry) are O(1).

import { sameBytes } from "../session/bytes.js";
import { parseSession, SslSession, withTimes } from "../session/index.js";
import type { Session } from "../session/types.js";
import { CachedSession } from "./cached-session.js";
import { coarseClock } from "./clock.js";
import { found, layout } from "./der-layout.js";
import { type IndexMemory, MAX_ID_OFFSET, NIL, PackedIndex } from "./index-table.js";
import { parseMode, SessionCacheMode, type SessionCacheModeInput } from "./mode.js";

export { SessionCacheMode, type SessionCacheModeInput } from "./mode.js";

/** R2: SSL_SESSION_CACHE_MAX_SIZE_DEFAULT. */
export const DEFAULT_CACHE_SIZE = 20480;
/** R2/R5: OpenSSL 3.x's tls1_default_timeout, what Node 20 really applies. */
export const DEFAULT_TIMEOUT = 7200;
/** R4: SSL_MAX_SSL_SESSION_ID_LENGTH. */
export const MAX_SESSION_ID_LENGTH = 32;
/** R19: SSL_MAX_SID_CTX_LENGTH. */
export const MAX_SESSION_ID_CONTEXT_LENGTH = 32;

/** OpenSSL's SSL_CTX_sess_* counters (R20). */
export interface SessionCacheStats {
  number: number;
  connect: number;
  connectGood: number;
  connectRenegotiate: number;
  accept: number;
  acceptGood: number;
  acceptRenegotiate: number;
  hits: number;
  cbHits: number;
  misses: number;
  timeouts: number;
  cacheFull: number;
  /**
   * Not OpenSSL's: external answers refused as untrusted (undecodable, or another id or protocol
   * version than asked), plus what recordRejected() reports (values a store could not open).
   */
  rejected: number;
}

export type ExternalLookupResult = Session | Uint8Array | undefined | null;

/**
 * Why a session left the internal cache, the remove callback's second argument (R16, R26):
 * - "removed": removeSession() (R15), which the server adapter also uses for a consumed single-use
 *   TLS 1.3 ticket (R22) and a session that failed (R23). The only invalidation: shared stores
 *   drop the session too.
 * - "evicted": the cache was full and a new session (or an external hit copied in) took its place.
 * - "expired": found expired on a look-up (R7).
 * - "flushed": flush(), explicit or automatic (R17, R18).
 * - "closed": close() emptied the cache.
 * The last four are local: another node may still resume the session, and a shared store expires
 * it on its own (its TTL is the session's lifetime).
 */
export type RemoveReason = "removed" | "evicted" | "expired" | "flushed" | "closed";

/** Which user callback threw (reported through onError; the cache carries on). */
export type SessionCacheCallback = "onNewSession" | "onRemoveSession" | "getSession";

export interface SessionCacheOptions {
  mode?: SessionCacheModeInput; // default SERVER (R2)
  cacheSize?: number; // default 20480; 0 = unlimited (R12)
  timeout?: number; // seconds, default 7200; 0 = default (R5)
  sessionIdContext?: Uint8Array | string; // 0..32 bytes (R19)
  clock?: () => number; // seconds since the epoch; default Date.now()/1000 floored
  /** SSL_CTX_sess_set_new_cb: the external cache gets every new session (R14). */
  onNewSession?: (session: Session) => void;
  /**
   * SSL_CTX_sess_set_remove_cb (R15, R16): called for every session leaving the cache, with why
   * (R26: only "removed" is an invalidation a shared store must hear).
   */
  onRemoveSession?: (session: Session, reason: RemoveReason) => void;
  /**
   * SSL_CTX_sess_set_get_cb (R6): may answer asynchronously. `context` is the cache's session-id
   * context (shared stores file sessions under it); read it, do not modify it.
   */
  getSession?: (
    id: Uint8Array,
    protocolVersion: number,
    context: Uint8Array,
  ) => ExternalLookupResult | Promise<ExternalLookupResult>;
  /**
   * Called when a callback above throws or getSession rejects. The cache is never left half
   * updated by it: the error is caught, reported here and the operation goes on (a failed
   * getSession is a miss). Default: process.emitWarning.
   */
  onError?: (error: unknown, callback: SessionCacheCallback) => void;
}

export type Side = "server" | "client";

/** A session id that cannot be a key (R4): over 32 bytes. */
export class InvalidSessionIdError extends RangeError {
  override readonly name = "InvalidSessionIdError";
  readonly code = "ERR_SESSCACHE_SESSION_ID";
  readonly length: number;
  constructor(length: number) {
    super(`session id must be 1..${MAX_SESSION_ID_LENGTH} bytes, got ${length}`);
    this.length = length;
  }
}

/** What memoryUsage() reports. */
export interface SessionCacheMemory extends IndexMemory {
  sessions: number;
}

const M = SessionCacheMode;
const utf8 = new TextEncoder();

export class SessionCache {
  private mode: number = M.SERVER;
  private size = DEFAULT_CACHE_SIZE;
  private timeout = DEFAULT_TIMEOUT;
  private sidCtx: Uint8Array = new Uint8Array(0);
  /** sidCtx interned in the index's context table, so R7's check is an integer compare. */
  private sidCtxIndex: number;
  private readonly clock: () => number;
  private readonly onNew: ((session: Session) => void) | undefined;
  private readonly onRemove: ((session: Session, reason: RemoveReason) => void) | undefined;
  private readonly getExternal: SessionCacheOptions["getSession"];
  private readonly onError: SessionCacheOptions["onError"];
  private readonly index = new PackedIndex();
  /** The session as put() stored it (UPDATE_TIME and re-encoding may change it). */
  private stored: Session | undefined;
  /** Offsets of the id and of the [4] context field (0: none) in the session prepare() last returned. */
  private preparedIdOffset = 0;
  private preparedContextField = 0;

  private connect = 0;
  private connectGood = 0;
  private connectRenegotiate = 0;
  private accept = 0;
  private acceptGood = 0;
  private acceptRenegotiate = 0;
  private hits = 0;
  private cbHits = 0;
  private misses = 0;
  private timeouts = 0;
  private cacheFull = 0;
  private rejected = 0;

  constructor(options: SessionCacheOptions = {}) {
    this.clock = options.clock ?? coarseClock;
    this.onNew = options.onNewSession;
    this.onRemove = options.onRemoveSession;
    this.getExternal = options.getSession;
    this.onError = options.onError;
    this.sidCtxIndex = this.index.contexts.retain(this.sidCtx);
    if (options.mode !== undefined) this.setMode(options.mode);
    this.setCacheSize(options.cacheSize ?? DEFAULT_CACHE_SIZE);
    if (options.timeout !== undefined) this.setTimeout(options.timeout);
    if (options.sessionIdContext !== undefined) this.setSessionIdContext(options.sessionIdContext);
  }

  getMode(): number {
    return this.mode;
  }

  /** R1: stores the mode unchecked (names are parsed), returns the previous one. */
  setMode(mode: SessionCacheModeInput): number {
    const value = parseMode(mode);
    const prev = this.mode;
    this.mode = value;
    return prev;
  }

  getCacheSize(): number {
    return this.size;
  }

  /** R12: returns the previous size; negative → RangeError. Lowering it evicts nothing until the next add. */
  setCacheSize(size: number): number {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`cache size must be a non-negative integer (0 = unlimited), got ${size}`);
    }
    const prev = this.size;
    this.size = size;
    return prev;
  }

  getTimeout(): number {
    return this.timeout;
  }

  /** Returns the previous timeout (SSL_CTX_set_timeout). Applies to new sessions only; 0 = 7200 (R5). */
  setTimeout(seconds: number): number {
    if (!Number.isSafeInteger(seconds) || seconds < 0) {
      throw new RangeError(`timeout must be a non-negative integer of seconds, got ${seconds}`);
    }
    const prev = this.timeout;
    this.timeout = seconds;
    return prev;
  }

  getSessionIdContext(): Uint8Array {
    return this.sidCtx.slice();
  }

  /** R19: > 32 bytes → RangeError, old value kept. Strings are taken as UTF-8. */
  setSessionIdContext(ctx: Uint8Array | string): void {
    const bytes = typeof ctx === "string" ? utf8.encode(ctx) : ctx;
    if (!(bytes instanceof Uint8Array))
      throw new TypeError("session id context must be a Uint8Array or a string");
    if (bytes.length > MAX_SESSION_ID_CONTEXT_LENGTH) {
      throw new RangeError(
        `session id context must be at most ${MAX_SESSION_ID_CONTEXT_LENGTH} bytes, got ${bytes.length}`,
      );
    }
    const copy = bytes.slice();
    const i = this.index.contexts.retain(copy);
    if (i < 0) throw new RangeError("too many distinct session id contexts in the cache");
    this.index.contexts.release(this.sidCtxIndex);
    this.sidCtx = copy;
    this.sidCtxIndex = i;
  }

  /**
   * R10/R11 (SSL_CTX_add_session). True when the session was stored as a new one (or replaced a
   * different session under its key, silently); false when this very session was already there
   * (with UPDATE_TIME its time is still refreshed) or it has an empty id, which cannot be a key.
   * Works whatever the mode, as in OpenSSL.
   */
  addSession(session: Session | Uint8Array): boolean {
    const now = this.clock();
    return this.put(this.toSession(session, now), now);
  }

  /**
   * R15 (SSL_CTX_remove_session): removes the session under its key (true if one was cached).
   * The remove callback gets this session whenever its id is non-empty, cached or not, so that an
   * external store drops it too. (OpenSSL also marks the SSL_SESSION not resumable; here a removed
   * session simply cannot be found any more.)
   */
  removeSession(session: Session | Uint8Array): boolean {
    return this.removeParsed(this.toSession(session, this.clock()), "removed");
  }

  /**
   * R17 (SSL_CTX_flush_sessions): removes every session expired at t (t > expiry; default now;
   * 0 removes all), from the tail of the expiry list, calling the remove callback for each.
   * Returns how many it removed. Counters are unchanged.
   */
  flush(t?: number): number {
    return this.flushAt(t, "flushed");
  }

  /**
   * R6-R9: the session to resume for an id a client offered, or undefined. Returns a Promise only
   * when the external cache was asked and answered with one. Never throws for what a callback
   * does (a failing getSession is a miss); throws InvalidSessionIdError for an id over 32 bytes.
   * An empty id is a miss that counts nothing (no session can have it). `sessionIdContext` is the
   * context the asking server runs under (R25: several servers, each with its own, may share one
   * cache); without it, the cache's own context applies.
   */
  lookup(
    id: Uint8Array,
    protocolVersion: number,
    sessionIdContext?: Uint8Array,
  ): Session | undefined | Promise<Session | undefined> {
    const n = id.length;
    if (n === 0) return undefined;
    if (n > MAX_SESSION_ID_LENGTH) throw new InvalidSessionIdError(n);
    // R25: a server sharing this cache asks under its own context (SSL_set_session_id_context);
    // without one, the cache's (SSL_CTX_set_session_id_context).
    const ctx = sessionIdContext ?? this.sidCtx;
    if (ctx.length > MAX_SESSION_ID_CONTEXT_LENGTH) {
      throw new RangeError(
        `session id context must be at most ${MAX_SESSION_ID_CONTEXT_LENGTH} bytes, got ${ctx.length}`,
      );
    }
    if ((this.mode & M.NO_INTERNAL_LOOKUP) === 0) {
      const idx = this.index;
      const e = idx.find(id, protocolVersion, idx.hash(id, 0, n, protocolVersion));
      if (e !== NIL) return this.checkInternal(e, sessionIdContext);
      this.misses++;
    }
    const get = this.getExternal;
    if (get === undefined) return undefined;
    let answer: ExternalLookupResult | Promise<ExternalLookupResult>;
    try {
      answer = get(id, protocolVersion, ctx);
    } catch (err) {
      this.report(err, "getSession");
      return undefined;
    }
    if (isThenable(answer)) {
      // The id is checked against the answer later: keep our own copy meanwhile.
      const asked = new Uint8Array(id);
      const askedCtx = ctx.slice();
      return Promise.resolve(answer).then(
        (v) => this.acceptExternal(asked, protocolVersion, askedCtx, v),
        (err) => {
          this.report(err, "getSession");
          return undefined;
        },
      );
    }
    return this.acceptExternal(id, protocolVersion, ctx, answer);
  }

  /** An external cache refused a stored value before answering (e.g. it failed to decrypt). */
  recordRejected(): void {
    this.rejected++;
  }

  /** R20: a snapshot of the twelve counters. */
  stats(): SessionCacheStats {
    return {
      number: this.index.count,
      connect: this.connect,
      connectGood: this.connectGood,
      connectRenegotiate: this.connectRenegotiate,
      accept: this.accept,
      acceptGood: this.acceptGood,
      acceptRenegotiate: this.acceptRenegotiate,
      hits: this.hits,
      cbHits: this.cbHits,
      misses: this.misses,
      timeouts: this.timeouts,
      cacheFull: this.cacheFull,
      rejected: this.rejected,
    };
  }

  /**
   * R16: flushes everything, calling the remove callback for each session, and frees the storage.
   * Idempotent; the cache stays usable (it is simply empty).
   */
  close(): void {
    this.flushAt(0, "closed");
    if (this.index.count === 0) this.index.reset();
  }

  /**
   * A handshake started: accept/connect +1, or acceptRenegotiate/connectRenegotiate +1 for a
   * renegotiation (which OpenSSL counts only there) (R20).
   */
  handshakeStarted(side: Side, renegotiation = false): void {
    if (sideBit(side) === M.SERVER) {
      if (renegotiation) this.acceptRenegotiate++;
      else this.accept++;
    } else if (renegotiation) this.connectRenegotiate++;
    else this.connect++;
  }

  /**
   * A handshake completed: the R18 auto-flush check, then acceptGood/connectGood +1 (R20). As in
   * OpenSSL's ssl_update_cache the counter is tested before it is incremented, so the flush runs
   * on the 256th, 512th, ... completed handshake of that side when the side's bit is set and
   * NO_AUTO_CLEAR is not (never with mode OFF). Once per handshake for TLS 1.2 and 1.3 alike.
   */
  handshakeCompleted(side: Side): void {
    const bit = sideBit(side);
    const good = bit === M.SERVER ? this.acceptGood : this.connectGood;
    const mode = this.mode;
    if ((mode & M.NO_AUTO_CLEAR) === 0 && (mode & bit) !== 0 && (good & 0xff) === 0xff) this.flush();
    if (bit === M.SERVER) this.acceptGood++;
    else this.connectGood++;
  }

  /**
   * OpenSSL's ssl_update_cache: a new session came out of a handshake (a full TLS 1.2 handshake, or
   * any TLS 1.3 ticket). When the side's mode bit is set: the cache timeout is applied (R5), it is
   * added internally unless NO_INTERNAL_STORE, and the new-session callback always gets it (R14).
   * Returns the session as stored, or undefined when the mode bit is not set or the id is empty
   * (nothing is stored and no callback runs, as in OpenSSL). `lifetime` (seconds) caps the timeout
   * (R27): the lifetime the peer was told (the server's session timeout, the TLS 1.3 ticket
   * lifetime), when the session was made under another SSL_CTX than this cache's.
   */
  updateCache(session: Session | Uint8Array, side: Side, lifetime?: number): Session | undefined {
    if (lifetime !== undefined && !(Number.isSafeInteger(lifetime) && lifetime >= 0)) {
      throw new RangeError(`lifetime must be a non-negative integer of seconds, got ${lifetime}`);
    }
    const bit = sideBit(side);
    if ((this.mode & bit) === 0) return undefined;
    const now = this.clock();
    let s = this.toSession(session, now);
    if (s.id.length === 0) return undefined;
    let timeout = this.timeout === 0 ? DEFAULT_TIMEOUT : this.timeout;
    // R27: never longer than the lifetime the handshake advertised (the shorter wins).
    if (lifetime !== undefined && lifetime < timeout) timeout = lifetime;
    if (s.timeout !== timeout) s = withTimes(s, { timeout });
    if ((this.mode & M.NO_INTERNAL_STORE) === 0) {
      this.put(s, now);
      s = this.stored!;
    }
    const cb = this.onNew;
    if (cb !== undefined) {
      try {
        cb(s);
      } catch (err) {
        this.report(err, "onNewSession");
      }
    }
    return s;
  }

  /** The internal cache's sessions in list order: latest expiry first, the next to be evicted last. */
  sessions(): Session[] {
    const out: Session[] = [];
    for (const e of this.index.entries()) out.push(this.materialize(e));
    return out;
  }

  /** Where the internal cache's memory goes (typed arrays, slab chunks, large sessions). */
  memoryUsage(): SessionCacheMemory {
    return { sessions: this.index.count, ...this.index.memory() };
  }

  /** Checks the index's internal invariants; throws on corruption. For tests and debugging. */
  verifyIntegrity(): void {
    this.index.verify();
  }

  // ---- internals ----------------------------------------------------------------------------

  /**
   * R10/R11/R13: SSL_CTX_add_session. Sets this.stored to the session as stored. Everything that
   * can fail (re-encoding, interning) runs before the index is touched; remove callbacks of evicted
   * sessions run after it is consistent again, so a callback may safely use the cache.
   */
  private put(s: Session, now: number): boolean {
    const id = s.id;
    const n = id.length;
    if (n === 0) {
      this.stored = s;
      return false;
    }
    if (n > MAX_SESSION_ID_LENGTH) throw new InvalidSessionIdError(n);
    const ver = s.protocolVersion;
    const idx = this.index;
    const h = idx.hash(id, 0, n, ver);
    const e = idx.find(id, ver, h);
    const updateTime = (this.mode & M.UPDATE_TIME) !== 0;
    const t = this.prepare(updateTime ? stamp(s, now) : s);
    const idOffset = this.preparedIdOffset;
    const cut = this.preparedContextField;
    this.stored = t;
    if (e !== NIL && this.isSameSession(e, t, updateTime, now)) {
      // OpenSSL re-adds the very session to the list: with UPDATE_TIME at its new expiry, and in
      // any case as the newest of its expiry (SSL_SESSION_list_add).
      if (idx.bytesEqual(e, t.der)) idx.relink(e, t.expiresAt);
      else idx.replace(e, t.der, idOffset, cut, t.expiresAt, h);
      return false;
    }
    // The context as the stored bytes carry it (the index cuts that field out and restores it).
    const ctx =
      cut !== 0
        ? idx.contexts.retainAt(t.der, cut + 4, t.der[cut + 3])
        : idx.contexts.retain(t.sessionIdContext);
    // Nothing is changed yet: the cache stays as it was.
    if (ctx < 0) throw new RangeError("too many distinct session id contexts in the cache (65535)");
    // A different session under the same key is replaced silently: no remove callback (R10, R16).
    if (e !== NIL) idx.remove(e);
    let victims: Session[] | undefined;
    const size = this.size;
    if (size > 0) {
      // R10/R11: counted before inserting, so exactly `size` remain; the new session is not in the
      // index yet and so never the victim.
      while (idx.count >= size) {
        const v = idx.tail;
        if (this.onRemove !== undefined) {
          // R26: "evicted", local only (also when the new session is an external hit copied in).
          victims ??= [];
          victims.push(this.materialize(v));
        }
        idx.remove(v);
        this.cacheFull++;
      }
    }
    try {
      idx.insert(t.der, idOffset, cut, ver, ctx, t.expiresAt, h);
    } catch (err) {
      idx.contexts.release(ctx);
      throw err;
    }
    if (victims !== undefined) for (const v of victims) this.fireRemove(v, "evicted");
    return true;
  }

  /** "The same session": same key and same bytes; under UPDATE_TIME, same bytes but for the time. */
  private isSameSession(e: number, t: Session, updateTime: boolean, now: number): boolean {
    if (this.index.bytesEqual(e, t.der)) return true;
    if (!updateTime) return false;
    const old = stamp(this.materialize(e), now);
    return sameBytes(this.prepare(old).der, t.der);
  }

  /**
   * Makes sure the stored bytes decode back to the same session: the id must be where locateId
   * finds it and [1] time / [2] timeout must be present (absent, a later decode would read
   * "time = now, timeout = 3 s"). Sessions from Node always qualify; others are re-encoded once.
   */
  private prepare(s: Session): Session {
    layout(s.der);
    if (found.idOffset < 0 || !found.hasTimes) {
      s = withTimes(s, { time: s.time, timeout: s.timeout });
      layout(s.der);
      if (found.idOffset < 0)
        throw new TypeError("session DER has no session id where an SSL_SESSION has one");
    }
    if (found.idOffset > MAX_ID_OFFSET) {
      throw new RangeError("session DER layout not supported: session id too far in");
    }
    this.preparedIdOffset = found.idOffset;
    this.preparedContextField = found.contextField;
    return s;
  }

  /** R7 on an internal hit. */
  private checkInternal(e: number, ctx: Uint8Array | undefined): Session | undefined {
    const idx = this.index;
    // Protocol version is part of the key, so it matches. Another context: a plain miss (R7).
    if (ctx === undefined) {
      if (idx.contextOf(e) !== this.sidCtxIndex) return undefined;
    } else if (!sameBytes(idx.contexts.get(idx.contextOf(e)), ctx)) return undefined;
    if (this.clock() > idx.expiryOf(e)) {
      this.timeouts++;
      this.drop(e, "expired");
      return undefined;
    }
    this.hits++;
    return this.materialize(e);
  }

  /** R6/R7 on what the external cache answered. Never throws. */
  private acceptExternal(
    id: Uint8Array,
    ver: number,
    ctx: Uint8Array,
    answer: ExternalLookupResult,
  ): Session | undefined {
    try {
      if (answer == null) return undefined;
      const now = this.clock();
      let s: Session;
      try {
        // Our own copy: the store's buffer may be reused, and nothing it says is trusted unchecked.
        if (answer instanceof Uint8Array) s = parseSession(new Uint8Array(answer), { now });
        else if (answer instanceof SslSession || answer instanceof CachedSession) s = answer;
        else if (typeof answer === "object" && answer.der instanceof Uint8Array) {
          s = parseSession(new Uint8Array(answer.der), { now });
        } else {
          this.rejected++;
          return undefined;
        }
      } catch {
        this.rejected++;
        return undefined;
      }
      if (s.protocolVersion !== ver || !sameBytes(s.id, id)) {
        this.rejected++;
        return undefined;
      }
      this.cbHits++;
      if ((this.mode & M.NO_INTERNAL_STORE) === 0) {
        // Copied in before the R7 checks, as OpenSSL does: with UPDATE_TIME this refreshes the
        // session's time, an expired one goes in and comes out again just below.
        this.put(s, now);
        s = this.stored!;
      }
      if (!sameBytes(s.sessionIdContext, ctx)) return undefined;
      if (now > s.expiresAt) {
        this.timeouts++;
        this.removeParsed(s, "expired");
        return undefined;
      }
      this.hits++;
      return s;
    } catch (err) {
      this.report(err, "getSession");
      return undefined;
    }
  }

  /** flush(t) with the reason its removals carry ("flushed", or "closed" from close()). */
  private flushAt(t: number | undefined, reason: RemoveReason): number {
    const at = t === undefined ? this.clock() : t;
    if (typeof at !== "number" || Number.isNaN(at))
      throw new TypeError(`flush time must be a number, got ${at}`);
    const idx = this.index;
    let n = 0;
    while (idx.tail !== NIL && (at === 0 || at > idx.expiryOf(idx.tail))) {
      this.drop(idx.tail, reason);
      n++;
    }
    return n;
  }

  private removeParsed(s: Session, reason: RemoveReason): boolean {
    const id = s.id;
    const n = id.length;
    if (n === 0) return false;
    if (n > MAX_SESSION_ID_LENGTH) throw new InvalidSessionIdError(n);
    const idx = this.index;
    const e = idx.find(id, s.protocolVersion, idx.hash(id, 0, n, s.protocolVersion));
    if (e !== NIL) idx.remove(e);
    this.fireRemove(s, reason);
    return e !== NIL;
  }

  /** Removes entry e with the remove callback (R16). */
  private drop(e: number, reason: RemoveReason): void {
    if (this.onRemove === undefined) {
      this.index.remove(e);
      return;
    }
    const s = this.materialize(e);
    this.index.remove(e);
    this.fireRemove(s, reason);
  }

  /** A Session over a fresh copy of entry e's bytes (the slab slot will be reused), decoded lazily. */
  private materialize(e: number): Session {
    const idx = this.index;
    return new CachedSession(idx.copyBytes(e), idx.versionOf(e), idx.expiryOf(e), idx.idOffsetOf(e));
  }

  private toSession(input: Session | Uint8Array, now: number): Session {
    // Both were decoded and checked by sesscache; any other object is a stranger.
    if (input instanceof SslSession || input instanceof CachedSession) return input;
    if (input instanceof Uint8Array) return parseSession(input, { now });
    // Another Session implementation: only its bytes are taken, decoded here.
    if (input !== null && typeof input === "object" && input.der instanceof Uint8Array) {
      return parseSession(input.der, { now });
    }
    throw new TypeError("expected a Session or its DER bytes");
  }

  private fireRemove(s: Session, reason: RemoveReason): void {
    const cb = this.onRemove;
    if (cb === undefined) return;
    try {
      cb(s, reason);
    } catch (err) {
      this.report(err, "onRemoveSession");
    }
  }

  private report(err: unknown, where: SessionCacheCallback): void {
    const handler = this.onError;
    if (handler !== undefined) {
      try {
        handler(err, where);
      } catch {
        // An error handler that throws has nowhere left to report to.
      }
      return;
    }
    const message = err instanceof Error ? err.message : String(err);
    process.emitWarning(`sesscache: ${where} failed: ${message}`, "SessionCacheWarning");
  }
}

function sideBit(side: Side): number {
  if (side === "server") return M.SERVER;
  if (side === "client") return M.CLIENT;
  throw new TypeError(`side must be "server" or "client", got ${String(side)}`);
}

/** UPDATE_TIME: the session with its start time set to now (whole seconds, as OpenSSL's time). */
function stamp(s: Session, now: number): Session {
  const t = Math.floor(now);
  return s.time === t ? s : withTimes(s, { time: t });
}

function isThenable(v: unknown): v is PromiseLike<ExternalLookupResult> {
  return v !== null && typeof v === "object" && typeof (v as { then?: unknown }).then === "function";
}
