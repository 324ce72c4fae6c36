// An in-process store: a Map with expiry. The reference implementation of the SessionStore
// contract (tests, single-process use), and the map behind the node:cluster primary.
import type { StoreKey } from "../engine/store.js";
import { checkStoreKey, createSealer, type Sealer, type SealerOptions, storeKeyBytes } from "./sealing.js";
import {
  checkMaxSessionBytes,
  emptyStats,
  remainingMs,
  type SealingSessionStore,
  type StoreStats,
} from "./types.js";

interface Entry<V> {
  value: V;
  /** Epoch ms from which the entry is gone. */
  deadline: number;
}

/** The string a key is filed under in a Map: its canonical bytes, one char per byte. */
export function mapKey(key: StoreKey): string {
  return Buffer.from(storeKeyBytes(key)).toString("latin1");
}

export interface ExpiringMapOptions {
  /** Most entries held; the oldest written goes first when full. 0 = unlimited (default). */
  maxEntries?: number;
  /** Epoch milliseconds; default Date.now. */
  now?: () => number;
}

/**
 * string → value with a deadline. Expired entries go when touched, and each write prunes up to 32
 * expired entries from the oldest end (Map order is write order, which is expiry order when
 * sessions share one timeout), so the live set bounds memory at O(1) cost per write. sweep() does
 * a full pass for callers with mixed lifetimes.
 */
export class ExpiringMap<V = Uint8Array> {
  readonly #map = new Map<string, Entry<V>>();
  readonly #max: number;
  readonly #now: () => number;

  constructor(options: ExpiringMapOptions = {}) {
    const max = options.maxEntries ?? 0;
    if (!Number.isInteger(max) || max < 0) throw new RangeError("maxEntries must be an integer ≥ 0");
    this.#max = max;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#map.size;
  }

  get(k: string): V | undefined {
    const e = this.#map.get(k);
    if (!e) return undefined;
    if (e.deadline <= this.#now()) {
      this.#map.delete(k);
      return undefined;
    }
    return e.value;
  }

  /** Stores until `expiresAt` (epoch seconds, R5); false when already expired (nothing stored). */
  set(k: string, value: V, expiresAt: number): boolean {
    const now = this.#now();
    const ttl = remainingMs(expiresAt, now);
    if (ttl <= 0) return false;
    this.#prune(now);
    // Re-inserting moves the key to the end of the Map's order, which is what eviction follows.
    this.#map.delete(k);
    if (this.#max > 0) {
      while (this.#map.size >= this.#max) {
        const oldest = this.#map.keys().next().value as string;
        this.#map.delete(oldest);
      }
    }
    this.#map.set(k, { value, deadline: now + ttl });
    return true;
  }

  delete(k: string): boolean {
    return this.#map.delete(k);
  }

  take(k: string): V | undefined {
    const v = this.get(k);
    if (v !== undefined) this.#map.delete(k);
    return v;
  }

  #prune(now: number): void {
    let n = 0;
    for (const [k, e] of this.#map) {
      if (e.deadline > now || ++n > 32) return;
      this.#map.delete(k);
    }
  }

  /** Drops every entry expired at `now`; returns how many. */
  sweep(now = this.#now()): number {
    let n = 0;
    for (const [k, e] of this.#map) {
      if (e.deadline <= now) {
        this.#map.delete(k);
        n++;
      }
    }
    return n;
  }

  clear(): void {
    this.#map.clear();
  }
}

export interface MemoryStoreOptions extends ExpiringMapOptions {
  /** Defaults to plaintext: the values never leave this process. */
  sealing?: SealerOptions | Sealer;
  /**
   * The heaviest session (DER bytes) kept; heavier ones are not stored (counted in `oversized`).
   * Default: no cap but the sealer's (the values never leave this process).
   */
  maxSessionBytes?: number;
}

export class MemoryStore implements SealingSessionStore {
  readonly sealer: Sealer;
  /** This process only. */
  readonly scope = "process" as const;
  readonly maxSessionBytes: number | undefined;
  readonly #map: ExpiringMap;
  readonly #stats = emptyStats();

  constructor(options: MemoryStoreOptions = {}) {
    this.sealer = createSealer(options.sealing ?? { plaintext: true });
    this.maxSessionBytes =
      options.maxSessionBytes === undefined
        ? undefined
        : checkMaxSessionBytes(options.maxSessionBytes, "MemoryStore");
    this.#map = new ExpiringMap(options);
  }

  get size(): number {
    return this.#map.size;
  }

  async get(key: StoreKey): Promise<Uint8Array | undefined> {
    this.#stats.gets++;
    const v = this.#map.get(mapKey(key));
    if (v === undefined) return undefined;
    this.#stats.hits++;
    return v.slice(); // a copy: callers must not be able to change what others read
  }

  async set(key: StoreKey, value: Uint8Array, expiresAt: number): Promise<void> {
    checkStoreKey(key);
    this.#stats.sets++;
    const max = this.maxSessionBytes;
    if (max !== undefined && value.length - this.sealer.overhead(key) > max) {
      this.#stats.oversized++;
      return;
    }
    this.#map.set(mapKey(key), value.slice(), expiresAt);
  }

  async delete(key: StoreKey): Promise<void> {
    this.#stats.deletes++;
    this.#map.delete(mapKey(key));
  }

  async take(key: StoreKey): Promise<Uint8Array | undefined> {
    this.#stats.takes++;
    const v = this.#map.take(mapKey(key));
    if (v !== undefined) this.#stats.takeHits++;
    return v;
  }

  stats(): StoreStats {
    return { ...this.#stats };
  }

  async close(): Promise<void> {
    this.#map.clear();
  }
}
