// The server adapter: makes any Node TLS server (tls, https, http2 secure) resume sessions through a
// SessionCache, TLS 1.2 by session id and TLS 1.3 by stateful tickets. Spec §9 explains the Node
// hooks this builds on and the traps found verifying it; the comments below say which point of it
// each piece answers.
import { createHash, constants as cryptoConstants, X509Certificate } from "node:crypto";
import type { Socket } from "node:net";
import tls from "node:tls";
import { locateId } from "../engine/der-layout.js";
import type { SessionCache } from "../engine/session-cache.js";
import { sameBytes } from "../session/bytes.js";
import { parseSession } from "../session/index.js";
import type { Session } from "../session/types.js";
import { ClientHelloReader, type ClientHelloResult, TLS1_3_VERSION } from "./client-hello.js";
import { RateLimitedLog } from "./log.js";

const TLS1_2_VERSION = 0x0303;
const SSL_OP_NO_TICKET: number = cryptoConstants.SSL_OP_NO_TICKET;
const SSL_OP_NO_TLSv1_3: number = cryptoConstants.SSL_OP_NO_TLSv1_3 ?? 0x20000000;
/** OpenSSL looks stateful TLS 1.3 tickets up by their 32-byte session id (spec §9.5). */
const STATEFUL_TICKET_ID_BYTES = 32;
const MAX_SID_CTX_BYTES = 32;

export interface AttachSessionCacheOptions {
  /**
   * Keep Node's stateless session tickets (default false: stateful sessions, `SSL_OP_NO_TICKET`, so
   * TLS 1.2 resumes by session id and TLS 1.3 by stateful tickets, both through the cache).
   */
  tickets?: boolean;
  /** Let a TLS 1.3 ticket resume more than once (default false: single-use, spec R22). */
  reuseTickets?: boolean;
  /**
   * With a shared store: asked before a single-use TLS 1.3 ticket resumes; false means a full
   * handshake. Pass `externalCache(store).claim` so a ticket resumes once across the fleet, even on
   * the server that issued it and still holds a copy. Answered within `lookupTimeout`, else false.
   * Like the look-up before it, it is asked as soon as the ClientHello is read, before the socket is
   * handed to Node, so the store's round trip overlaps Node's set-up of the connection; a ticket
   * offered on a connection that then fails is spent all the same.
   */
  claimTicket?: (session: Session) => boolean | PromiseLike<boolean>;
  /** Most milliseconds a look-up may take before it counts as a miss (default 50). */
  lookupTimeout?: number;
  /**
   * Milliseconds to wait for a client's first flight (the ClientHello) before closing the
   * connection (default 5000, never more than the server's `handshakeTimeout`). Node's own
   * handshake timer only starts once the socket is handed to it. One sweep per server enforces it,
   * so a silent client is closed between helloTimeout and helloTimeout + min(helloTimeout / 4, 1 s)
   * after connecting.
   */
  helloTimeout?: number;
  /**
   * The session-id context (1..32 bytes; bytes must be valid UTF-8, since Node takes it as a
   * string). Default: see {@link attachSessionCache}.
   */
  sessionIdContext?: string | Uint8Array;
  /** Receives rate-limited diagnostics (never session bytes or secrets). */
  log?: (msg: string) => void;
}

/** The adapter's own counters; the cache's (hits, misses, accept, ...) are in `cache.stats()`. */
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
  /** TLS 1.3 hellos handed to Node whose resumeSession has not come yet (a gauge). */
  pendingHellos: number;
}

export interface AttachedSessionCache {
  /** The session-id context in force on the server (the bytes OpenSSL stores in each session). */
  readonly sessionIdContext: Uint8Array;
  /** The adapter's counters (a snapshot). */
  stats(): AttachedSessionCacheStats;
  /**
   * Restores the server as it was: its listeners in their order, and its secure context and
   * options when attach changed them. Connections already handed to Node go on as they are.
   */
  detach(): void;
}

export interface StatefulServerOptions {
  secureOptions?: number;
  sessionIdContext?: string;
}

/**
 * Options to spread into `tls.createServer`, `https.createServer` or `http2.createSecureServer` so
 * the server is created as {@link attachSessionCache} wants it, instead of attach rebuilding its
 * secure context: `secureOptions` with `SSL_OP_NO_TICKET` (unless `tickets`) OR-ed into the given
 * `secureOptions`, and `sessionIdContext`: the one given, or else, when `cert` is given, the default
 * attach derives from it ({@link defaultSessionIdContext}). Spread it after your own options, or
 * pass your `secureOptions` here:
 *
 * ```ts
 * const server = https.createServer({ key, cert, ...statefulServerOptions({ sessionIdContext: "shop" }) });
 * attachSessionCache(server, cache, { sessionIdContext: "shop" });
 * // or, with the default context derived from the certificate:
 * const server2 = https.createServer({ key, cert, ...statefulServerOptions({ cert }) });
 * attachSessionCache(server2, new SessionCache());
 * ```
 */
export function statefulServerOptions(
  opts: {
    tickets?: boolean;
    sessionIdContext?: string;
    secureOptions?: number;
    /** Derive the default context from this certificate (and requestCert/ca) when none is given. */
    cert?: SessionIdContextSource["cert"];
    requestCert?: boolean;
    ca?: SessionIdContextSource["ca"];
  } = {},
): StatefulServerOptions {
  const out: StatefulServerOptions = {};
  let secureOptions = opts.secureOptions ?? 0;
  if (!opts.tickets) secureOptions |= SSL_OP_NO_TICKET;
  if (secureOptions !== 0) out.secureOptions = secureOptions;
  if (opts.sessionIdContext !== undefined) {
    out.sessionIdContext = contextString(opts.sessionIdContext, "sessionIdContext");
  } else if (opts.cert !== undefined) {
    out.sessionIdContext = defaultSessionIdContext({
      cert: opts.cert,
      requestCert: opts.requestCert,
      ca: opts.ca,
    });
  }
  return out;
}

// Node's tls.Server keeps its options as own properties (lib/_tls_wrap.js, setSecureContext) and
// rebuilds its one shared SecureContext from them; these are the ones it passes on.
const SECURE_CONTEXT_FIELDS = [
  "pfx",
  "key",
  "passphrase",
  "cert",
  "clientCertEngine",
  "ca",
  "minVersion",
  "maxVersion",
  "secureProtocol",
  "crl",
  "sigalgs",
  "ciphers",
  "ecdhCurve",
  "dhparam",
  "honorCipherOrder",
  "secureOptions",
  "sessionIdContext",
  "sessionTimeout",
  "ticketKeys",
  "privateKeyIdentifier",
  "privateKeyEngine",
] as const;

interface NativeSecureContext {
  getCertificate(): Buffer | null | undefined;
  getMaxProto?(): number;
  getTicketKeys(): Buffer;
}

/** The parts of Node's tls.Server this adapter reads and, when it must, changes. */
interface TlsServerInternals extends tls.Server {
  _sharedCreds?: { context: NativeSecureContext };
  secureOptions?: number;
  sessionIdContext?: string;
  ticketKeys?: Buffer;
  requestCert?: boolean;
  ca?: unknown;
  pauseOnConnect?: boolean;
  setSecureContext(options: tls.SecureContextOptions): void;
}

type ResumeCallback = (err: Error | null, session: Uint8Array | null) => void;
type ConnectionListener = (this: tls.Server, socket: Socket) => void;

const attached = new WeakSet<tls.Server>();

/**
 * Makes `server` resume sessions through `cache`: TLS 1.2 session ids and TLS 1.3 stateful tickets
 * (or, with `tickets: true`, TLS 1.2 session ids beside Node's own stateless tickets). One cache may
 * serve several servers, as OpenSSL's shared session context does; it then has one session-id
 * context for all of them.
 *
 * The server's options: unless `tickets`, `SSL_OP_NO_TICKET` must be set, and the session-id
 * context must be the one chosen below. When the server was not created with them (see
 * {@link statefulServerOptions}), attach rebuilds its secure context from the server's own options
 * plus these two (logging that it did), and keeps them through later `setSecureContext` calls;
 * `detach()` puts the original back.
 *
 * The session-id context, explicit and the same in every process and machine serving the service
 * (Node's default, a hash of `process.argv`, is neither):
 * 1. `options.sessionIdContext`, when given;
 * 2. else the cache's own context, when it has one (a cache shared by several servers);
 * 3. else one derived from what identifies the service, as nginx does: the first 32 hex digits of
 *    SHA-256 over the server certificate's DER (the one in force when attaching) and, when the
 *    server requests client certificates, over its `ca` option too ({@link defaultSessionIdContext};
 *    with several certificates, the one OpenSSL reports as current: give a context explicitly).
 * A cache with no context gets the one chosen; a cache whose context differs from an explicit one is
 * refused (its look-ups would never match, R7).
 *
 * Throws (TypeError, RangeError, Error) only here, for a misuse: not a tls.Server, attached twice,
 * other `newSession`/`resumeSession` listeners present, a context that cannot be used. Once
 * attached, nothing it does throws into Node: every failure of the cache becomes a full handshake.
 */
export function attachSessionCache(
  server: tls.Server,
  cache: SessionCache,
  options: AttachSessionCacheOptions = {},
): AttachedSessionCache {
  const srv = server as TlsServerInternals;
  if (!(server instanceof tls.Server) || typeof srv.setSecureContext !== "function" || !srv._sharedCreds) {
    throw new TypeError(
      "attachSessionCache: server must be a tls.Server (tls, https or http2 secure server)",
    );
  }
  if (attached.has(server)) throw new Error("attachSessionCache: this server already has a session cache");
  if (server.listenerCount("newSession") > 0 || server.listenerCount("resumeSession") > 0) {
    // Node hands each event one callback: two answers destroy the connection (ERR_MULTIPLE_CALLBACK).
    throw new Error("attachSessionCache: the server already has newSession/resumeSession listeners");
  }
  const tickets = options.tickets === true;
  const reuseTickets = options.reuseTickets === true;
  const lookupTimeout = nonNegative(options.lookupTimeout, 50, "lookupTimeout");
  const handshakeTimeout = serverHandshakeTimeout(srv);
  let helloTimeout = nonNegative(options.helloTimeout, 5000, "helloTimeout") || 5000;
  if (handshakeTimeout > 0 && helloTimeout > handshakeTimeout) helloTimeout = handshakeTimeout;
  const log = new RateLimitedLog(options.log);

  // ---- session-id context and secure options -------------------------------------------------
  const cacheCtx = cache.getSessionIdContext();
  let sidCtx: string;
  if (options.sessionIdContext !== undefined) {
    sidCtx = contextString(options.sessionIdContext, "sessionIdContext");
    if (cacheCtx.length > 0 && !sameBytes(cacheCtx, Buffer.from(sidCtx, "utf8"))) {
      throw new RangeError(
        "attachSessionCache: sessionIdContext differs from the cache's own session-id context; " +
          "a cache has one context (use another cache for another service)",
      );
    }
  } else if (cacheCtx.length > 0) {
    sidCtx = contextString(cacheCtx, "the cache's session-id context");
  } else {
    sidCtx = deriveSessionIdContext(srv);
  }
  const sidCtxBytes = new Uint8Array(Buffer.from(sidCtx, "utf8"));

  const protoSetSecureContext = Object.getPrototypeOf(srv).setSecureContext as (
    this: tls.Server,
    o: tls.SecureContextOptions,
  ) => void;
  const ownSetSecureContext = Object.getOwnPropertyDescriptor(srv, "setSecureContext");
  const withOurOptions = (o: tls.SecureContextOptions): tls.SecureContextOptions => ({
    ...o,
    secureOptions: tickets ? o.secureOptions : (o.secureOptions ?? 0) | SSL_OP_NO_TICKET,
    sessionIdContext: sidCtx,
  });
  let saved: Record<string, unknown> | undefined;
  let userOptions: tls.SecureContextOptions | undefined;
  const needsNoTicket = !tickets && ((srv.secureOptions ?? 0) & SSL_OP_NO_TICKET) === 0;
  if (needsNoTicket || srv.sessionIdContext !== sidCtx) {
    log.log("fixup", () =>
      [
        "server created without",
        needsNoTicket ? "SSL_OP_NO_TICKET" : "",
        needsNoTicket && srv.sessionIdContext !== sidCtx ? "and" : "",
        srv.sessionIdContext !== sidCtx ? "the session-id context" : "",
        "- rebuilding its secure context with them (spread statefulServerOptions() into createServer to avoid it)",
      ]
        .filter(Boolean)
        .join(" "),
    );
    saved = { _sharedCreds: srv._sharedCreds };
    const current: Record<string, unknown> = {};
    for (const f of SECURE_CONTEXT_FIELDS) {
      const v = (srv as unknown as Record<string, unknown>)[f];
      saved[f] = v;
      if (v !== undefined) current[f] = v;
    }
    // Keep the ticket keys: a rebuilt context would otherwise get fresh ones, and with tickets on
    // every ticket issued so far would stop resuming.
    if (tickets && current.ticketKeys === undefined) current.ticketKeys = srv.getTicketKeys();
    protoSetSecureContext.call(srv, withOurOptions(current as tls.SecureContextOptions));
  }
  // Only now that nothing can throw: the cache checks every look-up against this (R7). It stays set
  // after detach(), as a shared SSL_CTX's would.
  if (cacheCtx.length === 0) cache.setSessionIdContext(sidCtxBytes);
  let installedCreds: TlsServerInternals["_sharedCreds"] = srv._sharedCreds;

  const tlsListener = findTlsConnectionListener(srv);
  const adapter = new ServerAdapter(srv, cache, tlsListener, log, {
    tickets,
    reuseTickets,
    claimTicket: options.claimTicket,
    lookupTimeout,
    helloTimeout,
    peekHellos: canNegotiateTls13(srv),
  });
  if (tlsListener === undefined) {
    log.log("no-listener", "the server's TLS 'connection' listener was not found: TLS 1.3 resumes in full");
  }
  // A later setSecureContext (a certificate rotation) keeps NO_TICKET and the context.
  Object.defineProperty(srv, "setSecureContext", {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function setSecureContext(this: TlsServerInternals, o: tls.SecureContextOptions) {
      userOptions = o;
      protoSetSecureContext.call(this, withOurOptions(o));
      installedCreds = srv._sharedCreds;
      adapter.peekHellos = canNegotiateTls13(srv);
    },
  });

  // ---- install --------------------------------------------------------------------------------
  if (tlsListener !== undefined) replaceListener(srv, "connection", tlsListener, adapter.onConnection);
  else srv.on("connection", adapter.onConnection);
  srv.on("newSession", adapter.onNewSession);
  srv.on("resumeSession", adapter.onResumeSession);
  srv.on("secureConnection", adapter.onSecureConnection);
  attached.add(server);

  return {
    sessionIdContext: sidCtxBytes,
    stats: () => adapter.stats(),
    detach() {
      if (adapter.detached) return;
      adapter.detach();
      srv.removeListener("newSession", adapter.onNewSession);
      srv.removeListener("resumeSession", adapter.onResumeSession);
      srv.removeListener("secureConnection", adapter.onSecureConnection);
      if (tlsListener !== undefined) replaceListener(srv, "connection", adapter.onConnection, tlsListener);
      else srv.removeListener("connection", adapter.onConnection);
      if (ownSetSecureContext) Object.defineProperty(srv, "setSecureContext", ownSetSecureContext);
      else delete (srv as { setSecureContext?: unknown }).setSecureContext;
      if (userOptions !== undefined) {
        // The user rotated the context meanwhile: rebuild it from their options as they gave them.
        protoSetSecureContext.call(srv, userOptions);
      } else if (saved !== undefined && srv._sharedCreds === installedCreds) {
        for (const [k, v] of Object.entries(saved)) (srv as unknown as Record<string, unknown>)[k] = v;
      }
      attached.delete(server);
    },
  };
}

// ---- per-connection machinery ---------------------------------------------------------------------
// Every handshake passes through here, so nothing below allocates a closure per connection (but
// EarlyAnswer, for a hello that offers a ticket) or adds a property to Node's sockets (which would
// give them a second shape and slow Node's own socket code):
// the socket listeners are created once per server and find their state in a Map, and one sweep
// timer per server (running only while something waits) enforces the hello deadline.

/** A connection whose first flight is being read. */
class Peek {
  readonly reader = new ClientHelloReader();
  first: Buffer | undefined = undefined;
  rest: Buffer[] | undefined = undefined;
  constructor(
    readonly socket: Socket,
    /** Sweep tick at which it times out. */
    readonly expires: number,
  ) {}
}

/** What a TLS 1.3 hello offered, kept from the peek until Node's resumeSession asks (§9.3). */
interface PendingHello {
  /** The legacy_session_id (a copy): the key's hash may collide. */
  readonly legacyId: Uint8Array;
  /** The first 32-byte PSK identity, or undefined: nothing that can hit. */
  psk: Uint8Array | undefined;
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

interface AdapterOptions {
  tickets: boolean;
  reuseTickets: boolean;
  claimTicket: AttachSessionCacheOptions["claimTicket"];
  lookupTimeout: number;
  helloTimeout: number;
  peekHellos: boolean;
}

class ServerAdapter {
  peekHellos: boolean;
  detached = false;
  private readonly tickets: boolean;
  private readonly reuseTickets: boolean;
  private readonly claimTicket: AttachSessionCacheOptions["claimTicket"];
  private readonly lookupTimeout: number;
  private readonly helloTimeout: number;
  private readonly st: AttachedSessionCacheStats = {
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
  };
  /** Connections being read, oldest first (all share one deadline, so also by expiry). */
  private readonly peeking = new Map<Socket, Peek>();
  // Socket listeners, shared by all connections of this server (`this` is the socket).
  private readonly onPeekData: (this: Socket, chunk: Buffer) => void;
  private readonly onPeekGone: (this: Socket) => void;
  /** TLS 1.3 hellos handed to Node, by a hash of their legacy id, oldest first. */
  private readonly pending = new Map<number, PendingHello>();
  /** Sweep ticks: the hello deadline is counted in them. */
  private tick = 0;
  private readonly period: number;
  private readonly helloTicks: number;
  private sweepTimer: NodeJS.Timeout | undefined = undefined;

  constructor(
    private readonly srv: TlsServerInternals,
    private readonly cache: SessionCache,
    private readonly tlsListener: ConnectionListener | undefined,
    private readonly log: RateLimitedLog,
    o: AdapterOptions,
  ) {
    this.tickets = o.tickets;
    this.reuseTickets = o.reuseTickets;
    this.claimTicket = o.claimTicket;
    this.lookupTimeout = o.lookupTimeout;
    this.helloTimeout = o.helloTimeout;
    this.peekHellos = o.peekHellos;
    // A silent connection is closed between helloTimeout and helloTimeout + period after it came.
    this.period = Math.min(1000, Math.max(5, o.helloTimeout / 4));
    this.helloTicks = Math.ceil(o.helloTimeout / this.period) + 1;
    const peeking = this.peeking;
    const self = this;
    this.onPeekData = function onPeekData(this: Socket, chunk: Buffer) {
      const p = peeking.get(this);
      if (p !== undefined) self.peekData(p, chunk);
    };
    this.onPeekGone = function onPeekGone(this: Socket) {
      const p = peeking.get(this);
      if (p !== undefined) self.peekGone(p);
    };
  }

  stats(): AttachedSessionCacheStats {
    return { ...this.st, pendingHellos: this.pending.size };
  }

  detach(): void {
    this.detached = true;
    // Connections still being read go on to Node's TLS layer when their hello is in.
  }

  // ---- the hand-off (spec §9.1–9.4) ------------------------------------------------------------

  readonly onConnection = (socket: Socket): void => {
    this.st.connections++;
    try {
      this.cache.handshakeStarted("server");
    } catch (err) {
      this.log.log("counter", () => `handshakeStarted failed: ${(err as Error)?.message}`);
    }
    // Reading the ClientHello is only needed when TLS 1.3 can be negotiated: TLS 1.2 resumption
    // needs nothing but Node's own resumeSession.
    if (!this.peekHellos || this.tlsListener === undefined || this.srv.pauseOnConnect || socket.destroyed) {
      this.handOff(socket);
      return;
    }
    this.peeking.set(socket, new Peek(socket, this.tick + this.helloTicks));
    socket.on("data", this.onPeekData);
    // 'close' follows 'end' unless the server allows half-open sockets; the deadline covers those.
    socket.on("close", this.onPeekGone);
    socket.on("error", this.onPeekGone);
    this.startSweep();
  };

  private handOff(socket: Socket): void {
    if (this.tlsListener === undefined) return; // Node's own listener is still in place
    try {
      this.tlsListener.call(this.srv, socket);
    } catch (err) {
      this.log.log("handoff", () => `Node's TLS layer refused a connection: ${(err as Error)?.message}`);
      socket.destroy();
    }
  }

  private endPeek(p: Peek): void {
    const s = p.socket;
    s.removeListener("data", this.onPeekData);
    s.removeListener("close", this.onPeekGone);
    s.removeListener("error", this.onPeekGone);
    this.peeking.delete(s);
  }

  peekData(p: Peek, chunk: Buffer): void {
    if (p.first === undefined) p.first = chunk;
    else if (p.rest === undefined) p.rest = [chunk];
    else p.rest.push(chunk);
    const r: ClientHelloResult = p.reader.push(chunk);
    if (r.kind === "more") return;
    this.endPeek(p);
    if (r.kind === "done") {
      this.st.hellosRead++;
      const h = r.hello;
      if (h.records > 1) this.st.fragmentedHellos++;
      // Only a one-record TLS 1.3 hello with a legacy id gets a resumeSession from Node (§9.5).
      if (!this.detached && h.offersTls13 && h.legacyId.length > 0 && h.records === 1) {
        let psk: Uint8Array | undefined;
        for (const id of h.pskIdentities) {
          if (id.length === STATEFUL_TICKET_ID_BYTES) {
            psk = id.slice();
            this.st.pskOffered++;
            break;
          }
        }
        const e = this.remember(h.legacyId, psk);
        // Before the hand-off, so the store is already at work while Node sets the connection up.
        if (e !== undefined && psk !== undefined) {
          e.early = new EarlyAnswer(this.replyTo);
          this.lookup(psk, TLS1_3_VERSION, e.early.settle);
        }
      }
    } else {
      this.st.helloNotUnderstood++;
    }
    const s = p.socket;
    // §9.2: stop the flow before putting the bytes back, or Node's TLS layer never sees them.
    s.pause();
    s.unshift(p.rest === undefined ? p.first : Buffer.concat([p.first, ...p.rest]));
    this.handOff(s);
  }

  peekGone(p: Peek): void {
    this.endPeek(p);
    this.st.helloAborted++;
    p.socket.destroy();
  }

  /** Records a hello for resumeSession; returns the new entry, or undefined for a duplicate. */
  private remember(legacyId: Uint8Array, psk: Uint8Array | undefined): PendingHello | undefined {
    const key = idHash(legacyId);
    let e = this.pending.get(key);
    if (e === undefined) {
      e = { legacyId: legacyId.slice(), psk, early: undefined, refs: 1, tick: this.tick };
      this.pending.set(key, e);
      this.startSweep();
      return e;
    }
    // Two connections with one "random" legacy id (a client bug or a forgery), or a hash
    // collision: when resumeSession asks, neither can be told from the other, so both get a full
    // handshake (a look-up already started for the first is dropped; its ticket is spent).
    e.psk = undefined;
    e.refs++;
    this.startSweep();
    return undefined;
  }

  private startSweep(): void {
    if (this.sweepTimer !== undefined) return;
    this.sweepTimer = setInterval(this.sweep, this.period);
    this.sweepTimer.unref();
  }

  private readonly sweep = (): void => {
    const t = ++this.tick;
    for (const p of this.peeking.values()) {
      if (p.expires > t) break;
      this.endPeek(p);
      this.st.helloTimeouts++;
      this.log.log("hello-timeout", `no ClientHello within ${this.helloTimeout} ms: connection closed`);
      p.socket.destroy();
    }
    // resumeSession comes within a tick of the hand-off or never (the connection failed first).
    for (const [k, e] of this.pending) {
      if (e.tick + 2 > t) break;
      this.pending.delete(k);
    }
    if (this.peeking.size === 0 && this.pending.size === 0) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
    }
  };

  // ---- newSession / resumeSession / secureConnection -------------------------------------------

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
    try {
      this.cache.updateCache(session, "server");
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
        // A TLS 1.3 hello: its legacy id is random; the session is the one its PSK names (§9.3).
        const same = sameBytes(e.legacyId, id);
        if (same && --e.refs === 0) this.pending.delete(key);
        if (!same || e.psk === undefined) {
          this.st.lookupsSkipped++;
          miss(cb);
          return;
        }
        const early = e.early;
        if (early === undefined) this.lookup(e.psk, TLS1_3_VERSION, cb);
        else if (early.settled) this.reply(cb, early.der);
        else early.waiting = cb;
        return;
      }
    }
    this.lookup(id, TLS1_2_VERSION, cb);
  };

  readonly onSecureConnection = (): void => {
    try {
      this.cache.handshakeCompleted("server");
    } catch (err) {
      this.log.log("counter", () => `handshakeCompleted failed: ${(err as Error)?.message}`);
    }
  };

  private lookup(id: Uint8Array, version: number, cb: ResumeCallback): void {
    this.st.lookups++;
    let r: Session | undefined | PromiseLike<Session | undefined>;
    try {
      r = this.cache.lookup(id, version);
    } catch (err) {
      this.st.lookupErrors++;
      this.log.log("lookup-error", () => `session look-up failed: ${(err as Error)?.message}`);
      miss(cb);
      return;
    }
    if (!isThenable(r)) {
      this.answer(cb, r, id, version);
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
        this.answer(cb, session, id, version);
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

  private answer(cb: ResumeCallback, session: Session | undefined, id: Uint8Array, version: number): void {
    let der: Uint8Array | null = null;
    if (session != null) {
      // §9.6: OpenSSL never checks what it is given. Anything but the exact session asked for kills
      // a TLS 1.3 handshake or resumes the wrong TLS 1.2 session.
      if (session.protocolVersion !== version || !hasId(session, id)) {
        this.st.wrongAnswers++;
        this.log.log("wrong", "the cache answered a session with another id or protocol version: refused");
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

/** A 30-bit FNV-1a hash of a legacy id (a small-integer Map key: no string per connection). */
function idHash(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return h & 0x3fffffff;
}

/** Node's own TLS 'connection' listener (the one tls.Server's constructor adds). */
function findTlsConnectionListener(srv: tls.Server): ConnectionListener | undefined {
  const ls = srv.listeners("connection") as ConnectionListener[];
  return ls.find((l) => l.name === "tlsConnectionListener");
}

/** Puts `to` where `from` is among the listeners of `event`, keeping their order. */
// biome-ignore lint/suspicious/noExplicitAny: EventEmitter's own listener type
type AnyListener = (...args: any[]) => void;
function replaceListener(srv: tls.Server, event: string, from: AnyListener, to: AnyListener): void {
  const raw = srv.rawListeners(event) as AnyListener[];
  const i = raw.findIndex((l) => l === from || (l as { listener?: unknown }).listener === from);
  if (i < 0) return;
  if (i === 0) {
    srv.removeListener(event, from);
    srv.prependListener(event, to);
    return;
  }
  srv.removeAllListeners(event);
  for (let j = 0; j < raw.length; j++) srv.on(event, j === i ? to : raw[j]);
}

/** Can this server's context negotiate TLS 1.3 (else only TLS 1.2 resumption applies)? */
function canNegotiateTls13(srv: TlsServerInternals): boolean {
  if (((srv.secureOptions ?? 0) & SSL_OP_NO_TLSv1_3) !== 0) return false;
  const ctx = srv._sharedCreds?.context;
  const max = typeof ctx?.getMaxProto === "function" ? ctx.getMaxProto() : 0;
  return max === 0 || max >= TLS1_3_VERSION;
}

/** The server's handshakeTimeout (ms); Node keeps it under a private symbol. 0 when unknown. */
function serverHandshakeTimeout(srv: tls.Server): number {
  for (const s of Object.getOwnPropertySymbols(srv)) {
    if (s.description === "handshake-timeout") {
      const v = (srv as unknown as Record<symbol, unknown>)[s];
      return typeof v === "number" && v > 0 ? v : 0;
    }
  }
  return 0;
}

/** What the default session-id context is derived from (see {@link defaultSessionIdContext}). */
export interface SessionIdContextSource {
  /** The server certificate: PEM (its first certificate, the leaf, is used) or DER. */
  cert: string | Uint8Array;
  /** The server asks clients for certificates. */
  requestCert?: boolean;
  /** The server's `ca` option (only used with requestCert). */
  ca?: string | Uint8Array | (string | Uint8Array)[];
}

/**
 * The session-id context {@link attachSessionCache} uses when neither the options nor the cache give
 * one, as nginx does: the first 32 hex digits of SHA-256 over a version tag, the server certificate's
 * DER and, when client certificates are requested, the `ca` option (so services with different
 * client-auth policies never resume each other's sessions). The same certificate gives the same
 * context in every process and on every machine. Pass it to {@link statefulServerOptions} (or give
 * `cert` there) to create a server that attach need not change.
 */
export function defaultSessionIdContext(src: SessionIdContextSource): string {
  let der: Uint8Array;
  if (typeof src.cert === "string" || isPem(src.cert)) der = new X509Certificate(src.cert).raw;
  else der = src.cert;
  return deriveFrom(der, src.requestCert === true, src.ca);
}

function isPem(b: Uint8Array): boolean {
  return b.length > 10 && Buffer.from(b.buffer, b.byteOffset, Math.min(b.length, 64)).includes("-----BEGIN");
}

function deriveFrom(certDer: Uint8Array, requestCert: boolean, ca: unknown): string {
  const h = createHash("sha256").update("sesscache sid_ctx v1\0").update(certDer);
  if (requestCert) {
    h.update("\0client-auth\0");
    const cas = ca === undefined ? [] : Array.isArray(ca) ? ca : [ca];
    for (const c of cas) {
      if (typeof c === "string" || c instanceof Uint8Array) h.update(c);
      h.update("\0");
    }
  }
  return h.digest("hex").slice(0, 32);
}

/** The default context for a running server, from the certificate its secure context holds. */
function deriveSessionIdContext(srv: TlsServerInternals): string {
  const cert = srv._sharedCreds?.context.getCertificate();
  if (!cert || cert.length === 0) {
    throw new TypeError(
      "attachSessionCache: the server has no certificate to derive a session-id context from; give sessionIdContext",
    );
  }
  return deriveFrom(cert, srv.requestCert === true, srv.ca);
}

/** A session-id context as the string Node takes (its UTF-8 bytes are what OpenSSL gets). */
function contextString(ctx: string | Uint8Array, what: string): string {
  let s: string;
  let n: number;
  if (typeof ctx === "string") {
    s = ctx;
    n = Buffer.byteLength(s, "utf8");
  } else if (ctx instanceof Uint8Array) {
    try {
      s = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(ctx);
    } catch {
      throw new RangeError(`${what} must be valid UTF-8: Node passes the session-id context as a string`);
    }
    n = ctx.length;
  } else {
    throw new TypeError(`${what} must be a string or a Uint8Array`);
  }
  // Node treats an empty context as "none" and falls back to a hash of process.argv.
  if (n < 1 || n > MAX_SID_CTX_BYTES) throw new RangeError(`${what} must be 1..32 bytes, got ${n}`);
  return s;
}

function nonNegative(v: number | undefined, dflt: number, what: string): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new RangeError(`attachSessionCache: ${what} must be a non-negative number of milliseconds`);
  }
  return v;
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
