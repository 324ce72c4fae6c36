// SKELETON: the public contract of the engine. The implementation is being written; signatures
// here are binding for adapters (src/server, src/client) and stores.
import type { Session } from "../session/types.js";

/** OpenSSL's SSL_SESS_CACHE_* bit values (spec §1). */
export const SessionCacheMode = {
  OFF: 0x000,
  CLIENT: 0x001,
  SERVER: 0x002,
  BOTH: 0x003,
  NO_AUTO_CLEAR: 0x080,
  NO_INTERNAL_LOOKUP: 0x100,
  NO_INTERNAL_STORE: 0x200,
  NO_INTERNAL: 0x300,
  UPDATE_TIME: 0x400,
} as const;

/** A mode as a number (0x302) or names: "server,no_auto_clear", "SSL_SESS_CACHE_BOTH", "0x302". */
export type SessionCacheModeInput = number | string;

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
}

export type ExternalLookupResult = Session | Uint8Array | undefined | null;

export interface SessionCacheOptions {
  mode?: SessionCacheModeInput; // default SERVER (R2)
  cacheSize?: number; // default 20480; 0 = unlimited (R12)
  timeout?: number; // seconds, default 7200; 0 = default (R5)
  sessionIdContext?: Uint8Array | string; // 0..32 bytes (R19)
  clock?: () => number; // seconds since the epoch; default Date.now()/1000 floored
  /** SSL_CTX_sess_set_new_cb: the external cache gets every new session (R14). */
  onNewSession?: (session: Session) => void;
  /** SSL_CTX_sess_set_remove_cb (R15, R16). */
  onRemoveSession?: (session: Session) => void;
  /** SSL_CTX_sess_set_get_cb (R6): may answer asynchronously. */
  getSession?: (
    id: Uint8Array,
    protocolVersion: number,
  ) => ExternalLookupResult | Promise<ExternalLookupResult>;
}

export type Side = "server" | "client";

export declare class SessionCache {
  constructor(options?: SessionCacheOptions);
  getMode(): number;
  /** R1: stores the mode unchecked (names are parsed), returns the previous one. */
  setMode(mode: SessionCacheModeInput): number;
  getCacheSize(): number;
  /** R12: returns the previous size; negative → RangeError. */
  setCacheSize(size: number): number;
  getTimeout(): number;
  /** Returns the previous timeout (SSL_CTX_set_timeout). */
  setTimeout(seconds: number): number;
  getSessionIdContext(): Uint8Array;
  /** R19: > 32 bytes → RangeError, old value kept. */
  setSessionIdContext(ctx: Uint8Array | string): void;
  /** R10/R11. */
  addSession(session: Session | Uint8Array): boolean;
  /** R15. */
  removeSession(session: Session | Uint8Array): boolean;
  /** R17: removes sessions expired at t (default now), returns how many. */
  flush(t?: number): number;
  /** R6–R9: the session to resume, or undefined. A Promise only when an async getSession was asked. */
  lookup(id: Uint8Array, protocolVersion: number): Session | undefined | Promise<Session | undefined>;
  /** R20. */
  stats(): SessionCacheStats;
  /** R16: flushes everything, calling the remove callback for each. */
  close(): void;
  /** A handshake started (accept/connect +1, R20). */
  handshakeStarted(side: Side): void;
  /** A handshake completed (acceptGood/connectGood +1, R20), then the R18 auto-flush check. */
  handshakeCompleted(side: Side): void;
  /**
   * OpenSSL's ssl_update_cache: a new session came out of a handshake (a full TLS 1.2 handshake, or
   * any TLS 1.3 ticket). When the side's mode bit is set: the cache timeout is applied (R5), it is
   * added internally unless NO_INTERNAL_STORE, and the new-session callback always gets it (R14).
   * Returns the session as stored, or undefined when the mode bit is not set.
   */
  updateCache(session: Session | Uint8Array, side: Side): Session | undefined;
}
