// The resumption side of the server adapter: Node's newSession/resumeSession/secureConnection
// callbacks, answered from the cache under the connection's own session-id context (R24, R25), with
// the TLS 1.3 correlation of spec §9.3 (a hello's PSK identity, remembered by its legacy id until
// Node asks), single-use tickets (R22), the look-up deadline and the checks of §9.6.

import { locateId } from "../engine/der-layout.js";
import type { SessionCache } from "../engine/session-cache.js";
import { sameBytes } from "../session/bytes.js";
import { parseSession } from "../session/index.js";
import type { Session } from "../session/types.js";
import { type ClientHelloInfo, TLS1_3_VERSION } from "./client-hello.js";
import type { RateLimitedLog } from "./log.js";
import { Ticker } from "./ticker.js";
import type { VirtualHosts } from "./vhosts.js";

const TLS1_2_VERSION = 0x0303;
/** OpenSSL looks stateful TLS 1.3 tickets up by their 32-byte session id (spec §9.5). */
const STATEFUL_TICKET_ID_BYTES = 32;

type ResumeCallback = (err: Error | null, session: Uint8Array | null) => void;

/** The adapter's own counters (shared by the hand-off and the resumption side); the cache's (hits, misses, accept, ...) are in `cache.stats()`. */
export interface AttachedSessionCacheStats {
  /** Connections seen. */
  connections: number;
  /** ClientHellos read before Node's TLS layer (TLS 1.3-capable servers only). */
  hellosRead: number;
  /** Hellos that offered a 32-byte pre_shared_key identity (a possible stateful ticket). */
  pskOffered: number;
  /** resumeSession answered "no session" at once: a TLS 1.3 hello with no identity that can hit. */
  lookupsSkipped: number;
  /** Look-ups sent to the cache. */
  lookups: number;
  /** Look-ups that took longer than `lookupTimeout` (answered as misses). */
  lookupTimeouts: number;
  /** Look-ups that threw or rejected (answered as misses). */
  lookupErrors: number;
  /** Sessions the cache answered under another id or protocol version (refused, spec §9.6). */
  wrongAnswers: number;
  /** TLS 1.3 tickets removed after their one resumption (R22). */
  ticketsConsumed: number;
  /** TLS 1.3 tickets found but not resumed: claimTicket said no (used elsewhere) or timed out. */
  ticketsRefused: number;
  /** New sessions Node handed over that could not be decoded or stored. */
  storeErrors: number;
  /** Hellos spread over several TLS records (Node's parser then skips resumption, §9.5). */
  fragmentedHellos: number;
  /** First flights that were not a ClientHello this reader understands (handed to OpenSSL as is). */
  helloNotUnderstood: number;
  /** Connections closed because no complete hello arrived by `helloTimeout`. */
  helloTimeouts: number;
  /** Connections that ended or failed before their hello was complete. */
  helloAborted: number;
  /** Hellos handed to Node whose resumeSession has not come yet (a gauge). */
  pendingHellos: number;
  /** Sessions found for another SNI name than the one they stored (refused, R24). */
  hostMismatches: number;
  /** TLS 1.0/1.1 sessions not stored (they would never resume). */
  legacySessionsSkipped: number;
  /** Sessions of connections whose virtual host could not be told, not stored (R24). */
  unboundSessionsSkipped: number;
}

export function newCounters(): AttachedSessionCacheStats {
  return {
    connections: 0,
    hellosRead: 0,
    pskOffered: 0,
    lookupsSkipped: 0,
    lookups: 0,
    lookupTimeouts: 0,
    lookupErrors: 0,
    wrongAnswers: 0,
    ticketsConsumed: 0,
    ticketsRefused: 0,
    storeErrors: 0,
    fragmentedHellos: 0,
    helloNotUnderstood: 0,
    helloTimeouts: 0,
    helloAborted: 0,
    pendingHellos: 0,
    hostMismatches: 0,
    legacySessionsSkipped: 0,
    unboundSessionsSkipped: 0,
  };
}

export interface ResumptionOptions {
  tickets: boolean;
  reuseTickets: boolean;
  claimTicket: ((session: Session) => boolean | PromiseLike<boolean>) | undefined;
  lookupTimeout: number;
  /** How often stale remembered hellos are dropped (ms). */
  sweepPeriod: number;
}

/**
 * What a hello offered, kept from the peek until Node's resumeSession asks (§9.3): a TLS 1.3 hello's
 * PSK identity, and, on a server with virtual hosts, the binding of the host its SNI selected (R24).
 */
interface PendingHello {
  /** The legacy_session_id (a copy): the key's hash may collide. */
  readonly legacyId: Uint8Array;
  /** A TLS 1.3 hello: the session is the one its PSK names, never its legacy id. */
  readonly tls13: boolean;
  /** The first 32-byte PSK identity, or undefined: nothing that can hit. */
  psk: Uint8Array | undefined;
  /** Two connections sent this legacy id: neither can be told apart, both get a full handshake. */
  ambiguous: boolean;
  /** The session-id context the connection runs under (its virtual host's binding). */
  readonly ctx: Uint8Array;
  /** The SNI name, on a server with virtual hosts (checked against a session that stored one). */
  readonly serverName: string | undefined;
  /** The look-up of `psk`, started when the hello was read. */
  early: EarlyAnswer | undefined;
  /** Connections that sent this legacy id and have not been answered yet. */
  refs: number;
  /** Sweep tick when recorded (an entry not asked for within a tick is stale). */
  readonly tick: number;
}

/**
 * A TLS 1.3 look-up (and claim) started as soon as the hello is read, before the socket is handed to
 * Node: a shared store's round trip then overlaps Node's own work up to resumeSession (building the
 * TLSSocket, reading the hello again), instead of starting after it. resumeSession takes the answer,
 * at once when it is in, else when it comes (within the look-up's and the claim's deadlines).
 */
class EarlyAnswer {
  settled = false;
  der: Uint8Array | null = null;
  /** resumeSession's callback, when it asked before the answer came. */
  waiting: ResumeCallback | undefined = undefined;
  /** Given to the look-up as its callback. */
  readonly settle: ResumeCallback;
  constructor(reply: (cb: ResumeCallback, der: Uint8Array | null) => void) {
    this.settle = (_err, der) => {
      if (this.settled) return;
      this.settled = true;
      this.der = der;
      const cb = this.waiting;
      if (cb !== undefined) {
        this.waiting = undefined;
        reply(cb, der);
      }
    };
  }
}

export class ResumptionCallbacks {
  detached = false;
  private readonly tickets: boolean;
  private readonly reuseTickets: boolean;
  private readonly claimTicket: ResumptionOptions["claimTicket"];
  private readonly lookupTimeout: number;
  /** Hellos handed to Node, by a hash of their legacy id, oldest first. */
  readonly pending = new Map<number, PendingHello>();
  /** A remembered hello not asked for within two of its ticks is stale. */
  private readonly ticker: Ticker;

  constructor(
    private readonly cache: SessionCache,
    private readonly log: RateLimitedLog,
    private readonly vhosts: VirtualHosts,
    private readonly st: AttachedSessionCacheStats,
    o: ResumptionOptions,
  ) {
    this.tickets = o.tickets;
    this.reuseTickets = o.reuseTickets;
    this.claimTicket = o.claimTicket;
    this.lookupTimeout = o.lookupTimeout;
    this.ticker = new Ticker(o.sweepPeriod, this.sweep);
  }

  /**
   * A hello was read and is about to be handed to Node under `binding`: remembers what
   * resumeSession will need and starts a TLS 1.3 look-up at once (`tls13`: the server can
   * negotiate TLS 1.3).
   */
  noteHello(h: ClientHelloInfo, binding: string, routed: boolean, tls13: boolean): void {
    if (!this.detached && h.legacyId.length > 0) {
      // A TLS 1.2 hello to a single-host server needs nothing kept: resumeSession looks its id up
      // under the default context.
      if (!routed && !(h.offersTls13 && tls13) && nodeAsksForSession(h)) return;
      const ctx = this.vhosts.bytes(binding);
      const serverName = routed ? h.serverName : undefined;
      if (!nodeAsksForSession(h)) {
        // Node will not ask for this hello's session (§9.5). Its legacy id is remembered all the
        // same, as ambiguous: another connection sending the same id (whose hello this reader may
        // not have understood) must not be answered from a look-up made for this one.
        if (routed || this.pending.has(idHash(h.legacyId)))
          this.remember(h.legacyId, false, undefined, ctx, serverName, true);
      } else if (h.offersTls13 && tls13) {
        let psk: Uint8Array | undefined;
        for (const id of h.pskIdentities) {
          if (id.length === STATEFUL_TICKET_ID_BYTES) {
            psk = id.slice();
            this.st.pskOffered++;
            break;
          }
        }
        const e = this.remember(h.legacyId, true, psk, ctx, serverName, false);
        // Before the hand-off, so the store is already at work while Node sets the connection up.
        if (e !== undefined && psk !== undefined) {
          e.early = new EarlyAnswer(this.replyTo);
          this.lookup(psk, TLS1_3_VERSION, ctx, serverName, e.early.settle);
        }
      } else if (routed) {
        this.remember(h.legacyId, false, undefined, ctx, serverName, false);
      }
    }
  }

  /** Records a hello for resumeSession; returns the new entry, or undefined for a duplicate. */
  private remember(
    legacyId: Uint8Array,
    tls13: boolean,
    psk: Uint8Array | undefined,
    ctx: Uint8Array,
    serverName: string | undefined,
    ambiguous: boolean,
  ): PendingHello | undefined {
    const key = idHash(legacyId);
    let e = this.pending.get(key);
    if (e === undefined) {
      e = {
        legacyId: legacyId.slice(),
        tls13,
        psk,
        ambiguous,
        ctx,
        serverName,
        early: undefined,
        refs: 1,
        tick: this.ticker.tick,
      };
      this.pending.set(key, e);
      this.ticker.start();
      return e;
    }
    // Two connections with one "random" legacy id (a client bug or a forgery), or a hash
    // collision: when resumeSession asks, neither can be told from the other, so both get a full
    // handshake (a look-up already started for the first is dropped; its ticket is spent).
    e.psk = undefined;
    e.ambiguous = true;
    e.refs++;
    this.ticker.start();
    return undefined;
  }

  private readonly sweep = (t: number): boolean => {
    // resumeSession comes within a tick of the hand-off or never (the connection failed first).
    for (const [k, e] of this.pending) {
      if (e.tick + 2 > t) break;
      this.pending.delete(k);
    }
    return this.pending.size > 0;
  };

  readonly onNewSession = (_id: Buffer, der: Buffer, done: () => void): void => {
    // R14/§9: the server writes nothing until done(). The session goes to the cache first, so that
    // a shared store's write has left (stores send, they never wait: nothing here awaits) before
    // the client can hold the ticket or session id and offer it to another server of the fleet.
    // The price: the ticket (TLS 1.2: the server's Finished) waits for the synchronous part of
    // storing (decoding, sealing, handing the write to the socket), work that used to run just
    // after it in the same turn.
    try {
      this.store(der);
    } finally {
      done();
    }
  };

  private store(der: Buffer): void {
    let session: Session;
    try {
      session = parseSession(der);
    } catch (err) {
      this.st.storeErrors++;
      this.log.log("decode", () => `a new session could not be decoded: ${(err as Error)?.message}`);
      return;
    }
    // With Node's stateless tickets a TLS 1.3 session is never looked up (OpenSSL decrypts the
    // ticket itself), so storing it would only fill the cache.
    if (this.tickets && session.protocolVersion === TLS1_3_VERSION) return;
    // TLS 1.0/1.1 sessions are not stored: look-ups are made for TLS 1.2 (ids) and 1.3 (tickets)
    // only, so they would never resume, and both versions are deprecated (RFC 8996).
    if (session.protocolVersion < TLS1_2_VERSION) {
      this.st.legacySessionsSkipped++;
      return;
    }
    // Made on a connection whose virtual host could not be told: it must never resume.
    if (this.vhosts.isUnbound(session.sessionIdContext)) {
      this.st.unboundSessionsSkipped++;
      return;
    }
    try {
      // R27: never longer than the lifetime the server advertised (Node's sessionTimeout, which
      // OpenSSL stamps as the session's timeout and sends as the TLS 1.3 ticket lifetime).
      this.cache.updateCache(session, "server", session.timeout > 0 ? session.timeout : undefined);
    } catch (err) {
      this.st.storeErrors++;
      this.log.log("store", () => `storing a new session failed: ${(err as Error)?.message}`);
    }
  }

  readonly onResumeSession = (id: Buffer, cb: ResumeCallback): void => {
    if (this.pending.size > 0) {
      const key = idHash(id);
      const e = this.pending.get(key);
      if (e !== undefined) {
        const same = sameBytes(e.legacyId, id);
        if (same && --e.refs === 0) this.pending.delete(key);
        if (!same || e.ambiguous || (e.tls13 && e.psk === undefined)) {
          this.st.lookupsSkipped++;
          miss(cb);
          return;
        }
        if (!e.tls13) {
          this.lookup(id, TLS1_2_VERSION, e.ctx, e.serverName, cb);
          return;
        }
        // A TLS 1.3 hello: its legacy id is random; the session is the one its PSK names (§9.3).
        const early = e.early;
        if (early === undefined) this.lookup(e.psk!, TLS1_3_VERSION, e.ctx, e.serverName, cb);
        else if (early.settled) this.reply(cb, early.der);
        else early.waiting = cb;
        return;
      }
    }
    if (this.vhosts.routes()) {
      // Virtual hosts, and this connection's host is not known (its hello was not read): no
      // session can be shown to belong to it (R24).
      this.st.lookupsSkipped++;
      miss(cb);
      return;
    }
    this.lookup(id, TLS1_2_VERSION, this.vhosts.defaultContext, undefined, cb);
  };

  readonly onSecureConnection = (): void => {
    try {
      this.cache.handshakeCompleted("server");
    } catch (err) {
      this.log.log("counter", () => `handshakeCompleted failed: ${(err as Error)?.message}`);
    }
  };

  private lookup(
    id: Uint8Array,
    version: number,
    ctx: Uint8Array,
    serverName: string | undefined,
    cb: ResumeCallback,
  ): void {
    this.st.lookups++;
    let r: Session | undefined | PromiseLike<Session | undefined>;
    try {
      // R24/R25: asked under this connection's own context, whatever other servers use the cache.
      r = this.cache.lookup(id, version, ctx);
    } catch (err) {
      this.st.lookupErrors++;
      this.log.log("lookup-error", () => `session look-up failed: ${(err as Error)?.message}`);
      miss(cb);
      return;
    }
    if (!isThenable(r)) {
      this.answer(cb, r, id, version, serverName);
      return;
    }
    // An asynchronous cache: the answer races lookupTimeout; a late one is dropped.
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      this.st.lookupTimeouts++;
      this.log.log("lookup-timeout", `session look-up took over ${this.lookupTimeout} ms: full handshake`);
      miss(cb);
    }, this.lookupTimeout);
    r.then(
      (session) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.answer(cb, session, id, version, serverName);
      },
      (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.st.lookupErrors++;
        this.log.log("lookup-error", () => `session look-up failed: ${(err as Error)?.message}`);
        miss(cb);
      },
    );
  }

  /** R22 across a fleet: the shared store must hand the ticket over before it resumes here. */
  private claim(cb: ResumeCallback, session: Session): void {
    let settled = false;
    const finish = (won: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!won) this.st.ticketsRefused++;
      else this.consumeTicket(session);
      this.reply(cb, won ? session.der : null);
    };
    const timer = setTimeout(finish, this.lookupTimeout, false);
    try {
      const r = this.claimTicket!(session);
      if (isThenable(r))
        r.then(
          (won) => finish(won === true),
          () => finish(false),
        );
      else finish(r === true);
    } catch {
      finish(false);
    }
  }

  /** R22: a ticket resumes once; removed before the handshake goes on, so a racing replay misses. */
  private consumeTicket(session: Session): void {
    this.st.ticketsConsumed++;
    try {
      this.cache.removeSession(session);
    } catch (err) {
      this.log.log("remove", () => `removing a used ticket failed: ${(err as Error)?.message}`);
    }
  }

  private readonly replyTo = (cb: ResumeCallback, der: Uint8Array | null): void => this.reply(cb, der);

  private reply(cb: ResumeCallback, der: Uint8Array | null): void {
    try {
      cb(null, der);
    } catch (err) {
      this.log.log("callback", () => `Node refused the resumeSession answer: ${(err as Error)?.message}`);
    }
  }

  private answer(
    cb: ResumeCallback,
    session: Session | undefined,
    id: Uint8Array,
    version: number,
    serverName: string | undefined,
  ): void {
    let der: Uint8Array | null = null;
    if (session != null) {
      // §9.6: OpenSSL never checks what it is given. Anything but the exact session asked for kills
      // a TLS 1.3 handshake or resumes the wrong TLS 1.2 session.
      if (session.protocolVersion !== version || !hasId(session, id)) {
        this.st.wrongAnswers++;
        this.log.log("wrong", "the cache answered a session with another id or protocol version: refused");
      } else if (serverName !== undefined && !sameHost(session.hostname, serverName)) {
        // OpenSSL stores the SNI name in a session only when the server acknowledged it (Node
        // never does; other producers may): such a session resumes only for that name.
        this.st.hostMismatches++;
      } else {
        if (version === TLS1_3_VERSION && !this.reuseTickets) {
          if (this.claimTicket !== undefined) {
            this.claim(cb, session);
            return;
          }
          this.consumeTicket(session);
        }
        der = session.der;
      }
    }
    this.reply(cb, der);
  }
}

function miss(cb: ResumeCallback): void {
  try {
    cb(null, null);
  } catch {
    // The connection is gone; nothing to do.
  }
}

/**
 * Whether Node's own ClientHello parser will emit resumeSession for this hello: one record, a
 * legacy_version it reads (TLS 1.0 to 1.2 framing) and no ticket in session_ticket (a client
 * offering a TLS 1.2 ticket resumes through OpenSSL alone).
 */
function nodeAsksForSession(h: ClientHelloInfo): boolean {
  return (
    h.records === 1 && h.sessionTicketBytes === 0 && h.legacyVersion >= 0x0301 && h.legacyVersion <= 0x0303
  );
}

/** A session's stored SNI name (if any) against the name a hello asked for, case-insensitively. */
function sameHost(stored: string | undefined, asked: string): boolean {
  return stored === undefined || stored.toLowerCase() === asked.toLowerCase();
}

/** A 30-bit FNV-1a hash of a legacy id (a small-integer Map key: no string per connection). */
function idHash(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return h & 0x3fffffff;
}

function isThenable<T>(v: T | PromiseLike<T>): v is PromiseLike<T> {
  return v !== null && typeof v === "object" && typeof (v as { then?: unknown }).then === "function";
}

/**
 * session.id === id, read in place from the DER when it has the usual layout: a session the cache
 * hands out decodes its other fields lazily, and a hit passed straight to Node needs none of them.
 */
function hasId(session: Session, id: Uint8Array): boolean {
  const der = session.der;
  const at = locateId(der);
  if (at < 0) return sameBytes(session.id, id);
  const n = der[at - 1];
  if (n !== id.length) return false;
  for (let i = 0; i < n; i++) if (der[at + i] !== id[i]) return false;
  return true;
}
