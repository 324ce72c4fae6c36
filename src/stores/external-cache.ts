// A store plugged into the engine's external-cache callbacks (OpenSSL's new/remove/get session
// callbacks, spec R6, R14, R16): `new SessionCache({ ...externalCache(store) })`. Everything read
// back is untrusted and checked (fetchStoredSession); every failure is a miss, never an error, so a
// store can slow a handshake by at most its deadline and never fail one.
//
// R26: eviction is local, invalidation is shared. The engine calls the remove callback for every
// session that leaves its cache (R16) and says why; only an explicit removal ("removed":
// removeSession, which the server adapter uses for a consumed single-use ticket and a failed
// handshake) deletes the shared copy. Eviction for space, expiry found on a look-up, flush and
// close stay local: another node may still resume the session, and the store's TTL (the
// session's remaining lifetime) expires it there.
import type { RemoveReason } from "../engine/session-cache.js";
import type { Session } from "../session/types.js";
import { fetchStoredSession, putStoredSession, serverStoreKey } from "./checked.js";
import { StoreValueError } from "./errors.js";
import type { SealingSessionStore } from "./types.js";

const TLS1_3 = 0x0304;
/** Tickets taken during look-ups and not yet claimed; a bound so unclaimed ones cannot pile up. */
const MAX_JUST_TAKEN = 1024;
const idKey = (s: Session) => Buffer.from(s.id.buffer, s.id.byteOffset, s.id.byteLength).toString("latin1");

export interface ExternalCacheOptions {
  /** Milliseconds a look-up may wait for the store before it is a miss. Default 50. */
  lookupTimeout?: number;
  /**
   * Look TLS 1.3 sessions up with take() (atomic get-and-delete), so a single-use stateful ticket
   * resumes once across the fleet (R22). Default true; set false with the adapter's reuseTickets.
   */
  takeTickets?: boolean;
  /** Told of every value refused (it did not open, decode or match the key asked); safe to log. */
  onRejected?: (err: StoreValueError) => void;
}

export interface ExternalCacheStats {
  /** Values read from the store and refused (R: the `rejected` counter beside OpenSSL's twelve). */
  rejected: number;
  /** Sessions sent to the store. */
  stored: number;
  /** Deletions sent to the store (explicit removals, R26). */
  removed: number;
  /**
   * Removals that stayed local (R26): sessions evicted for space, expired, flushed or dropped by
   * close(); the store keeps them for the rest of the fleet until its own TTL.
   */
  keptShared: number;
  /** New sessions not sent because they weigh more than the store's maxSessionBytes (R28). */
  tooLarge: number;
  /** Look-ups asked of the store, and those that found a usable session. */
  lookups: number;
  found: number;
  /** Look-ups that outlived lookupTimeout and were answered as misses. */
  timeouts: number;
}

export interface ExternalCache {
  onNewSession(session: Session): void;
  /**
   * The engine's remove callback. Deletes from the store only for reason "removed" (R26); a caller
   * that passes no reason (a wrapper written before reasons existed) is taken as "removed", so an
   * invalidation is never lost.
   */
  onRemoveSession(session: Session, reason?: RemoveReason): void;
  getSession(id: Uint8Array, protocolVersion: number, context: Uint8Array): Promise<Session | undefined>;
  /**
   * Claims a single-use TLS 1.3 ticket for this process before it resumes (the server adapter's
   * `claimTicket`): true when this process took it from the store during the look-up, or takes it
   * now. False (another server used it, or the store cannot say) means a full handshake, so a
   * ticket resumes once across the fleet even on the server that issued it and still holds a copy.
   */
  claim(session: Session): Promise<boolean>;
  stats(): ExternalCacheStats;
  /** How long getSession took, bucketed (read by metrics at scrape time; recording costs a clock read). */
  lookupLatency(): LookupLatency;
}

/** Upper bounds (seconds) of the look-up latency buckets; a last, unbounded bucket follows. */
export const LOOKUP_LATENCY_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
];

/** getSession durations: counts[i] look-ups took at most buckets[i] s (not cumulative; the last is +Inf). */
export interface LookupLatency {
  buckets: readonly number[];
  counts: number[];
  /** Seconds, over all look-ups. */
  sum: number;
  count: number;
}

export function externalCache(store: SealingSessionStore, options: ExternalCacheOptions = {}): ExternalCache {
  const timeoutMs = options.lookupTimeout ?? 50;
  if (!(timeoutMs > 0)) throw new RangeError(`lookupTimeout must be > 0 ms, got ${timeoutMs}`);
  const takeTickets = options.takeTickets ?? true;
  const counters: ExternalCacheStats = {
    rejected: 0,
    stored: 0,
    removed: 0,
    keptShared: 0,
    tooLarge: 0,
    lookups: 0,
    found: 0,
    timeouts: 0,
  };
  const latency = { counts: new Array<number>(LOOKUP_LATENCY_BUCKETS.length + 1).fill(0), sum: 0 };
  const timed = (startedMs: number) => {
    const seconds = (performance.now() - startedMs) / 1000;
    let i = 0;
    while (i < LOOKUP_LATENCY_BUCKETS.length && seconds > LOOKUP_LATENCY_BUCKETS[i]!) i++;
    latency.counts[i]!++;
    latency.sum += seconds;
  };
  const justTaken = new Set<string>();
  // Tickets this process claimed: already gone from the store, so their removal sends no DEL.
  const claimed = new Set<string>();
  const remember = (set: Set<string>, k: string) => {
    if (set.size >= MAX_JUST_TAKEN) set.delete(set.values().next().value as string);
    set.add(k);
  };
  const onRejected = (err: StoreValueError) => {
    counters.rejected++;
    options.onRejected?.(err);
  };
  return {
    onNewSession(session) {
      if (session.id.length === 0) return;
      // R28: a session too heavy for the shared store stays local (nothing sealed, nothing sent).
      const max = store.maxSessionBytes;
      if (max !== undefined && session.der.length > max) {
        counters.tooLarge++;
        return;
      }
      // Background: the handshake never waits for a write (spec §9, newSession). A write refused
      // at once (a session over what any sealer takes, a store that throws) is dropped, never
      // thrown into the handshake.
      try {
        void putStoredSession(store, serverStoreKey(session), session);
        counters.stored++;
      } catch (err) {
        if (err instanceof StoreValueError && err.reason === "too-large") counters.tooLarge++;
      }
    },
    onRemoveSession(session, reason) {
      if (session.id.length === 0) return;
      if (reason !== undefined && reason !== "removed") {
        counters.keptShared++;
        return;
      }
      if (claimed.size > 0 && claimed.delete(idKey(session))) return;
      counters.removed++;
      void store.delete(serverStoreKey(session)).catch(() => undefined);
    },
    async getSession(id, protocolVersion, context) {
      counters.lookups++;
      const startedMs = performance.now();
      const key = { namespace: "server", protocolVersion, context, id } as const;
      const take = takeTickets && protocolVersion === TLS1_3;
      // The deadline is enforced here too: a store written by someone else may ignore timeoutMs.
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<"timeout">((resolve) => {
        timer = setTimeout(resolve, timeoutMs, "timeout");
      });
      const fetched = fetchStoredSession(store, key, { take, timeoutMs, onRejected }).catch(() => undefined);
      const answer = await Promise.race([fetched, deadline]);
      clearTimeout(timer);
      timed(startedMs);
      if (answer === "timeout") {
        counters.timeouts++;
        return undefined;
      }
      if (answer) {
        counters.found++;
        if (take) {
          remember(justTaken, idKey(answer));
        }
      }
      const found = answer;
      return found;
    },
    async claim(session) {
      const k = idKey(session);
      const won =
        justTaken.delete(k) ||
        (await store.take(serverStoreKey(session)).catch(() => undefined)) !== undefined;
      if (won) remember(claimed, k);
      return won;
    },
    stats: () => ({ ...counters }),
    lookupLatency: () => ({
      buckets: LOOKUP_LATENCY_BUCKETS,
      counts: [...latency.counts],
      sum: latency.sum,
      count: latency.counts.reduce((a, b) => a + b, 0),
    }),
  };
}
