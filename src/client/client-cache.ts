// The client session cache (spec §8, R21–R23): OpenSSL stores client sessions but leaves choosing
// one to the application; this is the chooser. Sessions live in the engine (mode CLIENT: size cap,
// expiry order, flush, counters, remove callback); this class layers identity → sessions on top and
// keeps that map consistent through the engine's remove callback, so eviction, flush and expiry in
// the engine drop the identity's references too.
import { createHash, X509Certificate } from "node:crypto";
import tls from "node:tls";
import { SessionCache, type SessionCacheStats } from "../engine/index.js";
import type { ClientSessionEntry, ClientSessionPersistence, SharedClientSessions } from "../engine/store.js";
import { parseSession, type Session, SessionDecodeError, withTimes } from "../session/index.js";
import { type ClientIdentity, clientIdentity, type IdentityOptions } from "./identity.js";

const TLS1_3 = 0x0304;
/** RFC 8446 §4.6.1: ticket lifetimes are capped at 7 days; sesscache applies it to every session. */
export const MAX_SESSION_LIFETIME = 604800;
const DEFAULT_TIMEOUT = 7200;

export interface ClientSessionCacheOptions {
  /** Most sessions held in all (engine cache size, R12; 0 = unlimited). Default 1024. */
  cacheSize?: number;
  /**
   * Seconds a session is kept at most (default 7200, OpenSSL's): it replaces the session's own
   * timeout as SSL_CTX_set_timeout does for sessions OpenSSL makes, then the ticket lifetime hint
   * and the 7-day cap can only shorten it.
   */
  timeout?: number;
  /** TLS 1.3 tickets kept per identity, oldest dropped first (default 4). */
  ticketsPerIdentity?: number;
  /** Seconds since the epoch (default Date.now()/1000). */
  clock?: () => number;
  /**
   * Check a resumed connection's certificate against the name asked for (default true). Node 20
   * skips its own check on resumption, so this is what stops a session offered to the wrong name.
   */
  verifyResumedIdentity?: boolean;
  /** Where `load()` and `save()` read and write the sessions. */
  persistence?: ClientSessionPersistence;
  /**
   * A shared store the cache also reads and writes (`sharedClientSessions(store)`), so other
   * processes resume the sessions this one is issued. TLS 1.2 sessions are kept here and shared.
   * A TLS 1.3 ticket is here or in the store, never both: the newest per identity stays here, the
   * others go to the store at once, and `save()` hands over the rest; a ticket taken from the store
   * is gone from it, so each is used once by the whole fleet. Only the async paths consult the
   * store: `prepareAsync`, `connectAsync`, the https.Agent and the undici connector.
   */
  shared?: SharedClientSessions;
}

/** A resumed connection whose certificate is not valid for the name asked for. */
export class ResumedIdentityError extends Error {
  override readonly name = "ResumedIdentityError";
  readonly code = "ERR_SESSCACHE_RESUMED_IDENTITY";
  readonly hostname: string;

  constructor(hostname: string, cause: Error) {
    super(`resumed TLS session's certificate is not valid for "${hostname}": ${cause.message}`, { cause });
    this.hostname = hostname;
  }
}

/** What `prepare()` decided for one connection: pass `options` to tls.connect, then `attach()`. */
export interface ClientConnectPlan<T extends IdentityOptions = IdentityOptions> {
  readonly identity: ClientIdentity;
  /** The session offered, taken from the cache; undefined for a full handshake. */
  readonly session: Session | undefined;
  /** The caller's options, with `session` set when one is offered. */
  readonly options: T;
}

/** The 32-byte identity hash behind an identity key (base64url, see identity.ts). */
function identityHash(key: string): Uint8Array {
  return Buffer.from(key, "base64url");
}

function engineKey(s: Session): string {
  return `${s.protocolVersion}:${Buffer.from(s.id.buffer, s.id.byteOffset, s.id.byteLength).toString("hex")}`;
}

// Decoding a certificate into Node's legacy object costs about a millisecond, more than the
// resumption saves; the same few certificates come back on every connection, so the objects are
// kept by the digest of their DER (frozen: they are shared between check calls).
const legacyCerts = new Map<string, tls.PeerCertificate>();
const MAX_LEGACY_CERTS = 64;

function legacyCertificate(der: Uint8Array): tls.PeerCertificate {
  const key = createHash("sha256").update(der).digest("base64");
  let cert = legacyCerts.get(key);
  if (cert === undefined) {
    cert = Object.freeze(new X509Certificate(der).toLegacyObject());
    if (legacyCerts.size >= MAX_LEGACY_CERTS) legacyCerts.clear();
    legacyCerts.set(key, cert);
  }
  return cert;
}

/**
 * The certificate a resumed connection stands on. On a resumed client connection Node 20's
 * getPeerCertificate() is empty (it reads the peer chain, which a session does not keep), so the
 * certificate comes from the session in use, as OpenSSL keeps it ([3] peer certificate).
 */
function resumedPeerCertificate(
  socket: tls.TLSSocket,
  current: Session | undefined,
): tls.PeerCertificate | undefined {
  const raw = current?.peerCertificate;
  if (raw) return legacyCertificate(raw);
  const live = socket.getPeerCertificate(true);
  return live && Object.keys(live).length > 0 ? live : undefined;
}

/** The socket's current session, decoded; undefined if there is none or it does not decode. */
function currentSession(socket: tls.TLSSocket, now: number): Session | undefined {
  const der = socket.getSession();
  if (!der) return undefined;
  try {
    return parseSession(der, { now });
  } catch {
    return undefined;
  }
}

/**
 * An error from OpenSSL (which then sends a fatal alert, or received one: Node decorates these with
 * `library`, e.g. "SSL routines", or "Provider routines" for a record that fails to decrypt) or
 * from Node's TLS layer (ERR_TLS_*, e.g. a failed certificate check).
 */
function isTlsError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { code?: unknown; library?: unknown };
  if (typeof e.library === "string") return true;
  return typeof e.code === "string" && /^ERR_(SSL|OSSL|TLS)_/.test(e.code);
}

/**
 * Whether tls.connect rejects an unauthorized peer with these options: Node fills a missing
 * rejectUnauthorized from NODE_TLS_REJECT_UNAUTHORIZED and treats anything but `false` as true.
 */
function rejectsUnauthorized(options: tls.ConnectionOptions): boolean {
  if (!Object.hasOwn(options, "rejectUnauthorized")) return process.env.NODE_TLS_REJECT_UNAUTHORIZED !== "0";
  return options.rejectUnauthorized !== false;
}

function checkCount(name: string, v: number | undefined, min: number): void {
  if (v !== undefined && !(Number.isSafeInteger(v) && v >= min)) {
    throw new RangeError(`ClientSessionCache: ${name} must be an integer >= ${min}`);
  }
}

export class ClientSessionCache {
  /** The engine holding the sessions (mode CLIENT). */
  readonly engine: SessionCache;
  readonly #clock: () => number;
  readonly #ticketsPerIdentity: number;
  readonly #verifyResumed: boolean;
  readonly #persistence: ClientSessionPersistence | undefined;
  readonly #shared: SharedClientSessions | undefined;
  /** identity key → its sessions, oldest first. */
  readonly #byIdentity = new Map<string, Session[]>();
  /** engine key (version:id) → identity key. */
  readonly #owner = new Map<string, string>();
  /** Identities that must not be persisted (they name a process-local secureContext). */
  readonly #local = new Set<string>();
  #hits = 0;
  #misses = 0;
  #timeouts = 0;
  #saving: Promise<void> = Promise.resolve();

  constructor(options: ClientSessionCacheOptions = {}) {
    checkCount("cacheSize", options.cacheSize, 0);
    checkCount("timeout", options.timeout, 1);
    checkCount("ticketsPerIdentity", options.ticketsPerIdentity, 1);
    if (options.clock !== undefined && typeof options.clock !== "function") {
      throw new TypeError("ClientSessionCache: clock must be a function");
    }
    this.#clock = options.clock ?? (() => Math.floor(Date.now() / 1000));
    this.#ticketsPerIdentity = options.ticketsPerIdentity ?? 4;
    this.#verifyResumed = options.verifyResumedIdentity !== false;
    this.#persistence = options.persistence;
    this.#shared = options.shared;
    this.engine = new SessionCache({
      mode: "client",
      cacheSize: options.cacheSize ?? 1024,
      timeout: options.timeout ?? DEFAULT_TIMEOUT,
      clock: this.#clock,
      onRemoveSession: (s) => this.#forget(s),
    });
  }

  /** The identity a connection with these options has (R21). */
  identity(options: IdentityOptions): ClientIdentity {
    return clientIdentity(options);
  }

  /**
   * Chooses the session to offer for a connection. A TLS 1.3 ticket is removed as it is taken
   * (single use, R22); a TLS 1.2 session stays until it expires or fails. An explicit
   * `options.session` is respected and nothing is taken.
   */
  prepare<T extends IdentityOptions>(options: T): ClientConnectPlan<T> {
    const identity = clientIdentity(options);
    if (options.session) return { identity, session: undefined, options };
    const session = this.take(identity);
    if (!session) return { identity, session: undefined, options };
    const der = Buffer.from(session.der.buffer, session.der.byteOffset, session.der.byteLength);
    return { identity, session, options: { ...options, session: der } };
  }

  /** True when a shared store sits under this cache (the async paths then consult it). */
  get sharesSessions(): boolean {
    return this.#shared !== undefined;
  }

  /**
   * `prepare()`, then the shared store when nothing is held here: a TLS 1.3 ticket taken from it
   * (no other process gets it) or the identity's shared TLS 1.2 session, which is kept here for
   * the next connection. Waits at most the store's look-up deadline; store trouble is a miss.
   */
  async prepareAsync<T extends IdentityOptions>(options: T): Promise<ClientConnectPlan<T>> {
    const plan = this.prepare(options);
    const { identity } = plan;
    if (plan.session || options.session || !this.#shared || !identity.persistable) return plan;
    // A SharedClientSessions written by someone else might reject: that is a miss too.
    let session = await this.#shared.fetch(identity.hash).catch(() => undefined);
    if (!session) return plan;
    if (session.protocolVersion !== TLS1_3) {
      // Kept here under this cache's own lifetime policy, which may be shorter than the sharer's.
      const timeout = this.#lifetime(session);
      if (timeout !== undefined && session.timeout > timeout) session = withTimes(session, { timeout });
      if (timeout === undefined || this.#clock() > session.expiresAt) return plan;
      session = this.#file(identity.key, session);
    }
    const der = Buffer.from(session.der.buffer, session.der.byteOffset, session.der.byteLength);
    return { identity, session, options: { ...options, session: der } };
  }

  /** The newest usable session for an identity, removing it if it is a TLS 1.3 ticket. */
  take(identity: ClientIdentity | string): Session | undefined {
    const key = typeof identity === "string" ? identity : identity.key;
    const list = this.#byIdentity.get(key);
    if (!list) return undefined;
    const now = this.#clock();
    for (const s of [...list].reverse()) {
      if (now > s.expiresAt) {
        this.#timeouts++;
        this.#drop(s);
        continue;
      }
      if (s.protocolVersion === TLS1_3) this.#drop(s);
      return s;
    }
    return undefined;
  }

  /**
   * Stores a session for an identity (what `attach()` does with each `'session'` event). Expiry is
   * time + min(timeout, ticket lifetime hint), at most 7 days; a TLS 1.3 ticket with lifetime 0,
   * an expired or undecodable session, or one without an id is not stored. Returns it as stored.
   */
  add(identity: ClientIdentity | string, session: Uint8Array | Session): Session | undefined {
    let s: Session;
    try {
      s = session instanceof Uint8Array ? parseSession(session, { now: this.#clock() }) : session;
    } catch (err) {
      if (err instanceof SessionDecodeError) return undefined;
      throw err;
    }
    if (s.id.length === 0) return undefined;
    const timeout = this.#lifetime(s);
    if (timeout === undefined) return undefined;
    if (s.timeout !== timeout) s = withTimes(s, { timeout });
    if (this.#clock() > s.expiresAt) return undefined;

    const key = typeof identity === "string" ? identity : identity.key;
    if (typeof identity !== "string" && !identity.persistable) this.#local.add(key);
    const shared = this.#shared !== undefined && !this.#local.has(key);
    // A TLS 1.2 session is shared as it comes (copies may be reused). A TLS 1.3 ticket is either
    // here or in the store, never both (a copy could be used twice): the newest stays here, so a
    // process resuming one server again and again needs no store round trip, and the older ones go
    // to the store at once for other processes (save() hands over the one kept, too).
    if (shared && s.protocolVersion !== TLS1_3) this.#shared!.publish(identityHash(key), s);
    // Before filing, so ticketsPerIdentity (which drops the oldest) cannot drop one unshared.
    if (shared && s.protocolVersion === TLS1_3) this.#handOverTickets(key, 0);
    return this.#file(key, s);
  }

  /** Moves an identity's TLS 1.3 tickets beyond the newest `keep` from here to the shared store. */
  #handOverTickets(key: string, keep: number): void {
    const tickets = (this.#byIdentity.get(key) ?? []).filter((x) => x.protocolVersion === TLS1_3);
    const hash = identityHash(key);
    for (const t of tickets.slice(0, Math.max(0, tickets.length - keep))) {
      this.#drop(t);
      this.#shared!.publish(hash, t);
    }
  }

  /** Files a checked session under an identity key, applying R22 to the identity's list. */
  #file(key: string, s: Session): Session {
    const k = engineKey(s);
    // The same session filed again (e.g. a resumed TLS 1.2 session read back): keep one entry.
    if (this.#owner.has(k)) this.#detach(s);
    // addSession (SSL_CTX_add_session), not updateCache: updateCache would put the cache timeout
    // back, and a client session's lifetime also depends on the ticket hint and the 7-day cap.
    this.engine.addSession(s);
    const stored = s;
    this.#owner.set(k, key);
    let list = this.#byIdentity.get(key);
    if (!list) {
      list = [];
      this.#byIdentity.set(key, list);
    }
    list.push(stored);

    if (stored.protocolVersion === TLS1_3) {
      // Keep the newest few tickets.
      const tickets = list.filter((x) => x.protocolVersion === TLS1_3);
      for (let i = 0; i < tickets.length - this.#ticketsPerIdentity; i++) this.#drop(tickets[i]!);
    } else {
      // R22: in CLIENT mode a new TLS 1.2 session (or renewed ticket) replaces the old one.
      for (const x of list.filter((x) => x !== stored && x.protocolVersion !== TLS1_3)) this.#drop(x);
    }
    return stored;
  }

  /**
   * Removes a session (R23: it failed), here and from the shared store when the identity is given.
   * True if it was cached here.
   */
  remove(session: Session, identity?: ClientIdentity | string): boolean {
    const k = engineKey(session);
    const had = this.#owner.has(k);
    const owner =
      identity === undefined ? this.#owner.get(k) : typeof identity === "string" ? identity : identity.key;
    // Checked before the drop: dropping an identity's last session forgets that it is local.
    const local = (typeof identity === "object" && !identity.persistable) || this.#local.has(owner ?? "");
    const shared = this.#shared !== undefined && owner !== undefined && !local;
    this.#drop(session);
    if (shared) this.#shared!.remove(identityHash(owner!), session);
    return had;
  }

  /** The sessions held for an identity, oldest first (a copy; nothing is taken). */
  sessions(identity: ClientIdentity | string): Session[] {
    return [...(this.#byIdentity.get(typeof identity === "string" ? identity : identity.key) ?? [])];
  }

  /**
   * Wires a socket made from `plan.options` to the cache. Call it in the same tick as tls.connect:
   * Node only reports sessions to a `'session'` listener present before the handshake.
   */
  attach(socket: tls.TLSSocket, plan: ClientConnectPlan): void {
    const { identity, session: offered, options } = plan;
    const received: Session[] = [];
    let failed = false;
    this.engine.handshakeStarted("client");

    socket.on("session", (der: Buffer) => {
      if (failed) return;
      const s = this.add(identity, der);
      if (s) received.push(s);
    });

    // The resumed-identity check must be decided before anything of the application's sees the
    // connection. A listener (even a prepended one) cannot promise that: the application may
    // prependListener after us, and destroying the socket inside one listener does not stop
    // EventEmitter from calling the rest (the tls.connect callback among them), which then saw a
    // destroyed socket with `authorized === true`. Node emits 'secureConnect' from onConnectSecure
    // once, right after its own verification; a 'secure' listener would run before that
    // verification, and destroying the socket there makes onConnectSecure throw (it reads the
    // handle that destroy() released: an uncaught TypeError). So 'secureConnect' itself
    // is intercepted at emit: the check runs first, and on a rejected connection the event is never
    // emitted at all (the socket is destroyed with the error, as Node does for a failed check).
    const emit = socket.emit;
    const ownEmit = Object.hasOwn(socket, "emit");
    let checked = false;
    const guarded = function (this: tls.TLSSocket, event: string | symbol, ...args: unknown[]): boolean {
      if (event === "secureConnect" && !checked) {
        checked = true;
        // Restored (when still ours) so later emits pay nothing.
        if (socket.emit === guarded) {
          if (ownEmit) socket.emit = emit;
          else delete (socket as { emit?: unknown }).emit;
        }
        if (!onSecureConnect()) return false;
      }
      return Reflect.apply(emit, this, [event, ...args]) as boolean;
    } as typeof socket.emit;
    socket.emit = guarded;

    /** Runs before the application's 'secureConnect' listeners; false if the socket was destroyed. */
    const onSecureConnect = (): boolean => {
      const reused = socket.isSessionReused();
      // The session resumed: normally the one offered; for TLS 1.2 it may be a renewed ticket.
      const current = reused ? (currentSession(socket, this.#clock()) ?? offered) : undefined;
      if (reused && this.#verifyResumed && !options.pskCallback) {
        const err = this.#checkResumed(socket, plan, current);
        if (err) {
          failed = true;
          if (offered) this.remove(offered, identity);
          if (rejectsUnauthorized(options)) {
            socket.destroy(err);
            return false;
          }
          // As Node does for a full handshake with rejectUnauthorized: false (which keeps the
          // chain's error when there is one: Node checks the name only on a verified chain).
          if (socket.authorized) {
            socket.authorized = false;
            socket.authorizationError = err.code as unknown as Error;
          }
        }
      }
      this.engine.handshakeCompleted("client");
      if (reused) this.#hits++;
      else this.#misses++;
      // A TLS 1.2 server may renew the ticket inside a resumed handshake; OpenSSL emits no new
      // session for it, so Node has no 'session' event: the renewed session is the socket's now.
      if (current && !failed && current.protocolVersion !== TLS1_3) {
        if (!offered || engineKey(current) !== engineKey(offered)) {
          const s = this.add(identity, current);
          if (s) received.push(s);
        }
      }
      return true;
    };

    // R23: a connection that fails during its handshake (fatal alert sent or received, failed
    // verification, reset) loses the session it offered; one that fails later with a TLS error
    // (a fatal alert) also loses the sessions it brought. Other errors after a good handshake
    // (the application's destroy(err), a reset, undici closing a finished connection with an
    // error) say nothing against the session and keep it, as a clean close does. Node gives a
    // client no way to tell a close_notify from a bare TCP FIN (both are 'end', then a close
    // without error), so OpenSSL's truncation guard cannot be applied.
    let secured = false;
    let tlsError = false;
    socket.once("secureConnect", () => {
      secured = true;
    });
    // After the handshake Node emits OpenSSL's errors as 'error' without destroy(err), so
    // `errored` stays null; its internal '_tlsError' event is where they show (listening to it,
    // unlike to 'error', leaves the application's error handling as it was).
    socket.once("_tlsError", () => {
      tlsError = true;
    });
    socket.once("close", (hadError: boolean) => {
      const err = socket.errored;
      if (!hadError && !err && !tlsError) return;
      if (secured && !tlsError && !isTlsError(err)) return;
      failed = true;
      if (offered) this.remove(offered, identity);
      for (const s of received) this.remove(s, identity);
    });
  }

  /** R20 counters. `hits`: resumed handshakes; `misses`: completed full ones; `timeouts`: expired when chosen. */
  stats(): SessionCacheStats {
    const st = this.engine.stats();
    return { ...st, hits: this.#hits, misses: this.#misses, timeouts: st.timeouts + this.#timeouts };
  }

  /** Removes sessions expired at t (default now), returns how many (R17). */
  flush(t?: number): number {
    return this.engine.flush(t);
  }

  /** Every session held, with its identity, except expired and process-local ones. */
  entries(): ClientSessionEntry[] {
    const now = this.#clock();
    const out: ClientSessionEntry[] = [];
    for (const [identity, list] of this.#byIdentity) {
      if (this.#local.has(identity)) continue;
      for (const s of list) if (now <= s.expiresAt) out.push({ identity, session: s.der });
    }
    return out;
  }

  /** Adds what the persistence holds; returns how many sessions were taken in. */
  async load(): Promise<number> {
    if (!this.#persistence) return 0;
    let n = 0;
    for (const e of await this.#persistence.load()) {
      if (
        typeof e?.identity === "string" &&
        e.session instanceof Uint8Array &&
        this.add(e.identity, e.session)
      ) {
        n++;
      }
    }
    return n;
  }

  /**
   * Writes the current sessions to the persistence (saves are serialised, the last one wins). With a
   * shared store, hands this process's TLS 1.3 tickets over to it and waits for every write to
   * settle: await it before a short-lived process exits.
   */
  save(): Promise<void> {
    const p = this.#persistence;
    if (this.#shared) {
      for (const key of [...this.#byIdentity.keys()])
        if (!this.#local.has(key)) this.#handOverTickets(key, 0);
    }
    const shared = this.#shared?.settled() ?? Promise.resolve();
    if (!p) return shared;
    const run = () => p.save(this.entries());
    this.#saving = this.#saving.then(run, run);
    return Promise.all([this.#saving, shared]).then(() => undefined);
  }

  /** Drops every session (remove callback for each, R16). */
  close(): void {
    this.engine.close();
    this.#byIdentity.clear();
    this.#owner.clear();
    this.#local.clear();
  }

  #lifetime(s: Session): number | undefined {
    const hint = s.ticketLifetimeHint;
    // R22: a TLS 1.3 ticket with lifetime 0 must not be used; in TLS 1.2 0 means "unspecified".
    if (hint === 0 && s.protocolVersion === TLS1_3) return undefined;
    let t = this.engine.getTimeout() || DEFAULT_TIMEOUT;
    if (hint !== undefined && hint > 0) t = Math.min(t, hint);
    return Math.min(t, MAX_SESSION_LIFETIME);
  }

  #checkResumed(
    socket: tls.TLSSocket,
    plan: ClientConnectPlan,
    current: Session | undefined,
  ): ResumedIdentityError | undefined {
    const name = plan.identity.checkName;
    const check = plan.options.checkServerIdentity ?? tls.checkServerIdentity;
    let err: Error | undefined;
    try {
      const cert = resumedPeerCertificate(socket, current);
      err = cert ? check(name, cert) : new Error("the resumed session carries no peer certificate");
    } catch (e) {
      err = e instanceof Error ? e : new Error(String(e));
    }
    return err ? new ResumedIdentityError(name, err) : undefined;
  }

  /** Removes from the engine; the remove callback detaches it here (done directly too, idempotent). */
  #drop(s: Session): void {
    this.engine.removeSession(s);
    this.#detach(s);
  }

  #forget(s: Session): void {
    this.#detach(s);
  }

  #detach(s: Session): void {
    const k = engineKey(s);
    const owner = this.#owner.get(k);
    if (owner === undefined) return;
    this.#owner.delete(k);
    const list = this.#byIdentity.get(owner);
    if (!list) return;
    const i = list.findIndex((x) => engineKey(x) === k);
    if (i !== -1) list.splice(i, 1);
    if (list.length === 0) {
      this.#byIdentity.delete(owner);
      this.#local.delete(owner);
    }
  }
}
