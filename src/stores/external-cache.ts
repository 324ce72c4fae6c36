// A store plugged into the engine's external-cache callbacks (OpenSSL's new/remove/get session
// callbacks, spec R6, R14, R16): `new SessionCache({ ...externalCache(store) })`. Everything read
// back is untrusted and checked (fetchStoredSession); every failure is a miss, never an error, so a
// store can slow a handshake by at most its deadline and never fail one.
import type { Session } from "../session/types.js";
import { fetchStoredSession, putStoredSession, serverStoreKey } from "./checked.js";
import type { StoreValueError } from "./errors.js";
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
  /** Deletions sent to the store. */
  removed: number;
  /** Look-ups asked of the store, and those that found a usable session. */
  lookups: number;
  found: number;
  /** Look-ups that outlived lookupTimeout and were answered as misses. */
  timeouts: number;
}

export interface ExternalCache {
  onNewSession(session: Session): void;
  onRemoveSession(session: Session): void;
  getSession(id: Uint8Array, protocolVersion: number, context: Uint8Array): Promise<Session | undefined>;
  /**
   * Claims a single-use TLS 1.3 ticket for this process before it resumes (the server adapter's
   * `claimTicket`): true when this process took it from the store during the look-up, or takes it
   * now. False (another server used it, or the store cannot say) means a full handshake, so a
   * ticket resumes once across the fleet even on the server that issued it and still holds a copy.
   */
  claim(session: Session): Promise<boolean>;
  stats(): ExternalCacheStats;
}

export function externalCache(store: SealingSessionStore, options: ExternalCacheOptions = {}): ExternalCache {
  const timeoutMs = options.lookupTimeout ?? 50;
  if (!(timeoutMs > 0)) throw new RangeError(`lookupTimeout must be > 0 ms, got ${timeoutMs}`);
  const takeTickets = options.takeTickets ?? true;
  const counters: ExternalCacheStats = {
    rejected: 0,
    stored: 0,
    removed: 0,
    lookups: 0,
    found: 0,
    timeouts: 0,
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
      counters.stored++;
      // Background: the handshake never waits for a write (spec §9, newSession).
      void putStoredSession(store, serverStoreKey(session), session);
    },
    onRemoveSession(session) {
      if (session.id.length === 0) return;
      if (claimed.size > 0 && claimed.delete(idKey(session))) return;
      counters.removed++;
      void store.delete(serverStoreKey(session)).catch(() => undefined);
    },
    async getSession(id, protocolVersion, context) {
      counters.lookups++;
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
  };
}
