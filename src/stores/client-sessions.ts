// The client cache on a shared store (Redis, the node:cluster primary, memory): short-lived client
// processes resume each other's sessions. `new ClientSessionCache({ shared: sharedClientSessions(store) })`.
//
// The store contract has no "sessions of this identity" index, and needs none: each identity owns a
// few fixed slots, filed in the client namespace with the identity hash as the key's context.
// - slot (TLS 1.2 and older, id 0): the identity's reusable session. Read with get(): it stays
//   shared; a new one replaces it (R22).
// - ticket slots (TLS 1.3, ids 0..ticketSlots-1): single-use tickets. Read with take(), the store's
//   atomic get-and-delete, so a ticket is offered once by the whole fleet. A new ticket goes to the
//   next slot of this process's round robin (started at random, so processes spread their writes);
//   it may overwrite an unused ticket, which costs a full handshake at worst, never a second use.
// Values are sealed with the store's Sealer under their key, so a value moved to another identity
// or slot does not open; every value read is checked (fetchStoredSession) and the resumed identity
// check in the client cache still applies on top.
//
// R28: a client resumes whatever session it is handed, so a plaintext value planted by someone who
// can write to the store (a master secret they know, the real server's certificate) is a full
// man-in-the-middle. On a store other hosts can reach (scope "network": Redis, or a store that
// does not say) plaintext is refused when this is built (PlaintextClientStoreError). Where it is
// allowed (memory, the node:cluster primary) plaintext values still carry their key, so a value
// read under identity X that was written under Y is refused. Sessions over the store's
// maxSessionBytes stay local.
import { randomInt } from "node:crypto";
import type { SharedClientSessions, StoreKey } from "../engine/store.js";
import { sameBytes } from "../session/bytes.js";
import type { Session } from "../session/types.js";
import { fetchStoredSession, putStoredSession } from "./checked.js";
import { PlaintextClientStoreError, StoreValueError } from "./errors.js";
import type { SealingSessionStore } from "./types.js";

const TLS1_2 = 0x0303;
const TLS1_3 = 0x0304;
const REUSABLE_SLOT = new Uint8Array([0]);
/** Identities whose late tickets are held for their next fetch; tickets held per identity. */
const MAX_LATE_IDENTITIES = 256;
const MAX_LATE_TICKETS = 4;
/** Tickets this process published, remembered (id → slot) so a failed one can be withdrawn. */
const MAX_PUBLISHED = 4096;
/** Identities whose last protocol version is remembered. */
const MAX_HINTS = 4096;

export interface SharedClientSessionsOptions {
  /** Milliseconds a fetch may wait for the store before it is a miss (a full handshake). Default 50. */
  lookupTimeout?: number;
  /** TLS 1.3 ticket slots per identity: how many clients can resume one server at once. Default 4. */
  ticketSlots?: number;
  /**
   * Milliseconds the store may take to answer a ticket's take before the answer is dropped
   * (default 2000, at least lookupTimeout). A ticket that arrives after the look-up's deadline is
   * already gone from the store, so it is held for the identity's next fetch, or handed back to the
   * store by settled(), rather than lost.
   */
  lateTimeout?: number;
  /** Seconds since the epoch (default Date.now()/1000); tickets expired by it are skipped. */
  clock?: () => number;
  /** Told of every value refused (it did not open, decode or match); safe to log. */
  onRejected?: (err: StoreValueError) => void;
}

export interface SharedClientSessionsStats {
  /** fetch() calls, and those that found a ticket or a reusable session. */
  lookups: number;
  tickets: number;
  sessions: number;
  /** fetches answered as misses at the deadline. */
  timeouts: number;
  /** tickets taken after their fetch's deadline, held for the identity's next fetch. */
  late: number;
  /** values refused (did not open, decode or match). */
  rejected: number;
  /** tickets taken but already expired (dropped). */
  expired: number;
  published: number;
  removed: number;
  /** sessions not shared because they weigh more than the store's maxSessionBytes (kept local). */
  tooLarge: number;
}

export interface SharedClientSessionsHandle extends SharedClientSessions {
  stats(): SharedClientSessionsStats;
}

function checkOptions(o: SharedClientSessionsOptions): void {
  for (const name of ["lookupTimeout", "lateTimeout"] as const) {
    const v = o[name];
    if (v !== undefined && !(v > 0 && Number.isFinite(v))) {
      throw new RangeError(`sharedClientSessions: ${name} must be > 0 ms, got ${v}`);
    }
  }
  const n = o.ticketSlots;
  if (n !== undefined && !(Number.isSafeInteger(n) && n >= 1 && n <= 256)) {
    throw new RangeError(`sharedClientSessions: ticketSlots must be an integer in 1..256, got ${n}`);
  }
}

const hexOf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

export function sharedClientSessions(
  store: SealingSessionStore,
  options: SharedClientSessionsOptions = {},
): SharedClientSessionsHandle {
  checkOptions(options);
  const scope = store.scope ?? "network";
  if (store.sealer.plaintext && scope === "network") throw new PlaintextClientStoreError(scope);
  const timeoutMs = options.lookupTimeout ?? 50;
  const lateTimeoutMs = Math.max(options.lateTimeout ?? 2000, timeoutMs);
  const slots = options.ticketSlots ?? 4;
  const clock = options.clock ?? (() => Math.floor(Date.now() / 1000));
  const counters: SharedClientSessionsStats = {
    lookups: 0,
    tickets: 0,
    sessions: 0,
    timeouts: 0,
    late: 0,
    rejected: 0,
    expired: 0,
    published: 0,
    removed: 0,
    tooLarge: 0,
  };
  const onRejected = (err: StoreValueError) => {
    counters.rejected++;
    options.onRejected?.(err);
  };
  let nextSlot = randomInt(slots);
  const published = new Map<string, number>();
  const late = new Map<string, Session[]>();
  const pending = new Set<Promise<unknown>>();
  /** identity → whether its newest session seen here was TLS 1.3 (a hint for fetch). */
  const spokeTls13 = new Map<string, boolean>();
  const remember = (identity: Uint8Array, s: Session) => {
    const k = hexOf(identity);
    if (!spokeTls13.has(k) && spokeTls13.size >= MAX_HINTS) {
      spokeTls13.delete(spokeTls13.keys().next().value as string);
    }
    spokeTls13.set(k, s.protocolVersion === TLS1_3);
  };

  const reusableKey = (identity: Uint8Array): StoreKey => ({
    namespace: "client",
    protocolVersion: TLS1_2,
    context: identity,
    id: REUSABLE_SLOT,
  });
  const ticketKey = (identity: Uint8Array, slot: number): StoreKey => ({
    namespace: "client",
    protocolVersion: TLS1_3,
    context: identity,
    id: new Uint8Array([slot]),
  });
  const track = (p: Promise<unknown>) => {
    const q = p.catch(() => undefined).finally(() => pending.delete(q));
    pending.add(q);
  };
  // A store written by someone else may throw instead of rejecting: publish and remove run inside
  // socket events, where a throw would be uncaught.
  const attempt = (write: () => Promise<unknown>) => {
    try {
      track(write());
    } catch {
      // dropped, as a store that fails drops a write
    }
  };
  const usable = (s: Session | undefined): Session | undefined => {
    if (s?.isExpiredAt(clock())) {
      counters.expired++;
      return undefined;
    }
    return s;
  };
  const takeTicket = (identity: Uint8Array, slot: number) =>
    fetchStoredSession(store, ticketKey(identity, slot), { take: true, timeoutMs: lateTimeoutMs, onRejected })
      .catch(() => undefined)
      .then((s) => {
        // Taken: no longer this process's to withdraw (the slot may hold a newer ticket soon).
        if (s) published.delete(hexOf(s.id));
        return usable(s);
      });

  const holdLate = (identity: Uint8Array, s: Session) => {
    const k = hexOf(identity);
    let list = late.get(k);
    if (!list) {
      if (late.size >= MAX_LATE_IDENTITIES) late.delete(late.keys().next().value as string);
      list = [];
      late.set(k, list);
    }
    list.push(s);
    if (list.length > MAX_LATE_TICKETS) list.shift();
    counters.late++;
  };
  const takeLate = (identity: Uint8Array): Session | undefined => {
    const k = hexOf(identity);
    const list = late.get(k);
    while (list && list.length > 0) {
      const s = usable(list.pop());
      if (list.length === 0) late.delete(k);
      if (s) return s;
    }
    return undefined;
  };

  /** Files a session in its slot (a ticket in the next slot of the round robin), in the background. */
  const put = (identity: Uint8Array, session: Session): Promise<unknown> => {
    remember(identity, session);
    const max = store.maxSessionBytes;
    if (max !== undefined && session.der.length > max) {
      counters.tooLarge++; // R28: stays local
      return Promise.resolve();
    }
    let key: StoreKey;
    if (session.protocolVersion === TLS1_3) {
      const slot = nextSlot;
      nextSlot = (nextSlot + 1) % slots;
      key = ticketKey(identity, slot);
      if (published.size >= MAX_PUBLISHED) published.delete(published.keys().next().value as string);
      published.set(hexOf(session.id), slot);
    } else {
      key = reusableKey(identity);
    }
    counters.published++;
    let write: Promise<unknown>;
    try {
      write = putStoredSession(store, key, session);
    } catch (err) {
      // A session over what any sealer takes stays local; a store that throws drops the write,
      // as one that fails does.
      if (err instanceof StoreValueError && err.reason === "too-large") counters.tooLarge++;
      return Promise.resolve();
    }
    track(write);
    return write.catch(() => undefined);
  };

  return {
    async fetch(identity) {
      counters.lookups++;
      const held = takeLate(identity);
      if (held) {
        counters.tickets++;
        return held;
      }
      let timedOut = false;
      // The reusable slot is read beside the first ticket slot (both in flight at once: one round trip); it
      // is used only when no ticket is found, and a reusable session found means the server spoke
      // TLS 1.2 last, so the remaining ticket slots are not probed. When this process saw the
      // identity use TLS 1.3 last, the reusable slot is not read at all (one command less).
      const first = randomInt(slots);
      const skipReusable = spokeTls13.get(hexOf(identity)) === true;
      const work = (async () => {
        const reusable = skipReusable
          ? undefined
          : fetchStoredSession(store, reusableKey(identity), { timeoutMs, onRejected })
              .catch(() => undefined)
              .then(usable);
        const ticket = await takeTicket(identity, first);
        if (ticket) return ticket;
        const session = await reusable;
        if (session) return session;
        for (let i = 1; i < slots && !timedOut; i++) {
          const t = await takeTicket(identity, (first + i) % slots);
          if (t) return t;
        }
        return undefined;
      })();
      track(work);
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<"timeout">((resolve) => {
        timer = setTimeout(resolve, timeoutMs, "timeout");
      });
      const answer = await Promise.race([work, deadline]);
      clearTimeout(timer);
      if (answer === "timeout") {
        timedOut = true;
        counters.timeouts++;
        // A ticket taken after the deadline is gone from the store: keep it for the next fetch.
        void work.then((s) => {
          if (s?.protocolVersion === TLS1_3) holdLate(identity, s);
        });
        return undefined;
      }
      if (answer?.protocolVersion === TLS1_3) counters.tickets++;
      else if (answer) counters.sessions++;
      if (answer) remember(identity, answer);
      return answer;
    },

    publish(identity, session) {
      if (session.id.length > 0) void put(identity, session);
    },

    remove(identity, session) {
      if (session.protocolVersion === TLS1_3) {
        // Only a ticket this process published, from the slot it went to (if nobody took it since,
        // it is still there; if someone replaced it, that newer ticket goes too: a full handshake).
        const k = hexOf(session.id);
        const slot = published.get(k);
        if (slot === undefined) return;
        published.delete(k);
        counters.removed++;
        attempt(() => store.delete(ticketKey(identity, slot)));
        return;
      }
      // The reusable slot is deleted only while it still holds this session, not a newer one.
      const key = reusableKey(identity);
      counters.removed++;
      attempt(() =>
        fetchStoredSession(store, key, { timeoutMs, onRejected }).then((stored) => {
          if (stored && sameBytes(stored.id, session.id)) return store.delete(key);
        }),
      );
    },

    async settled() {
      // What was issued so far (look-ups included: their late tickets are held when they end)...
      await Promise.all([...pending]);
      // ...then the tickets held from late look-ups go back to the store, for other processes.
      const back: Promise<unknown>[] = [];
      for (const [k, list] of late) {
        const identity = Buffer.from(k, "hex");
        for (const t of list) if (!t.isExpiredAt(clock())) back.push(put(identity, t));
      }
      late.clear();
      await Promise.all(back);
    },

    stats: () => ({ ...counters }),
  };
}
