import type { SessionStore } from "../engine/store.js";
import { MAX_SESSION_BYTES, type Sealer } from "./sealing.js";

/** Counters every sesscache store keeps. Errors and timeouts are answered as misses, never thrown. */
export interface StoreStats {
  gets: number;
  /** gets that returned a value (the caller may still reject it). */
  hits: number;
  sets: number;
  deletes: number;
  takes: number;
  /** takes that returned a value. */
  takeHits: number;
  /** backend failures (connection refused or lost, command errors), answered as misses or dropped. */
  errors: number;
  /** operations that outlived their deadline, answered as misses. */
  timeouts: number;
  /** operations not sent because the in-flight bound was reached (writes dropped, reads missed). */
  dropped: number;
  /** operations sent and not yet settled (a gauge). */
  inFlight: number;
  /**
   * values not written because the session weighs more than the store's maxSessionBytes (it stays
   * local, R28), or read back larger than any session the store writes (answered as misses).
   */
  oversized: number;
}

export function emptyStats(): StoreStats {
  return {
    gets: 0,
    hits: 0,
    sets: 0,
    deletes: 0,
    takes: 0,
    takeHits: 0,
    errors: 0,
    timeouts: 0,
    dropped: 0,
    inFlight: 0,
    oversized: 0,
  };
}

/** Per-call options the sesscache stores accept beyond the SessionStore contract. */
export interface StoreCallOptions {
  /** Milliseconds to wait for the backend before answering a miss; overrides the store's default. */
  timeoutMs?: number;
}

/**
 * A SessionStore that carries the Sealer its values are written with, so the wiring seals with
 * `store.sealer.seal(...)` and opens with `openStoredSession(key, value, store.sealer)`.
 */
export interface SealingSessionStore extends SessionStore {
  readonly sealer: Sealer;
  stats(): StoreStats;
  /**
   * The heaviest session (DER bytes) the store takes; heavier ones stay local (R28). Undefined: no
   * cap beyond the sealer's (MAX_SESSION_BYTES).
   */
  readonly maxSessionBytes?: number;
  /**
   * Who can read and write the store's values: this process, this host's processes (node:cluster),
   * or other hosts (Redis). Client sessions are never kept in plaintext where other hosts can write
   * them (R28). Undefined counts as "network".
   */
  readonly scope?: StoreScope;
}

/** See SealingSessionStore.scope. */
export type StoreScope = "process" | "host" | "network";

/** sesscache's default cap on a session in a shared store (R28): nginx's shared cache refuses over 4 KiB. */
export const DEFAULT_MAX_SESSION_BYTES = 4096;

/** Longest TTL a store applies: sessions whose lifetime saturates (R5) still leave eventually. */
export const MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000;

/**
 * Milliseconds a session expiring at `expiresAt` (epoch seconds) has left at `nowMs`. R5 says a
 * session is expired only when now > expiresAt, with the engine's clock in whole seconds, so it is
 * usable until the end of second `expiresAt`: (expiresAt + 1) * 1000 − nowMs. ≤ 0 means expired.
 */
export function remainingMs(expiresAt: number, nowMs: number): number {
  if (Number.isNaN(expiresAt)) return 0;
  return Math.min((expiresAt + 1) * 1000 - nowMs, MAX_TTL_MS);
}

/** Checks a maxSessionBytes option: an integer in 1..MAX_SESSION_BYTES; undefined → the default. */
export function checkMaxSessionBytes(v: number | undefined, who: string): number {
  const n = v ?? DEFAULT_MAX_SESSION_BYTES;
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_SESSION_BYTES) {
    throw new RangeError(`${who}: maxSessionBytes must be an integer in 1..${MAX_SESSION_BYTES}, got ${v}`);
  }
  return n;
}
