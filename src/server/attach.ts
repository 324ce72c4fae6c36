// The server adapter: makes any Node TLS server (tls, https, http2 secure) resume sessions through a
// SessionCache, TLS 1.2 by session id and TLS 1.3 by stateful tickets. Spec §9 explains the Node
// hooks this builds on and the traps found verifying it; the comments below say which point of it
// each piece answers.
import { constants as cryptoConstants } from "node:crypto";
import type { Socket } from "node:net";
import tls from "node:tls";
import { locateId } from "../engine/der-layout.js";
import type { SessionCache } from "../engine/session-cache.js";
import { sameBytes } from "../session/bytes.js";
import { parseSession } from "../session/index.js";
import type { Session } from "../session/types.js";
import {
  type ClientHelloInfo,
  ClientHelloReader,
  type ClientHelloResult,
  TLS1_3_VERSION,
} from "./client-hello.js";
import { RateLimitedLog } from "./log.js";
import { contextString, SSL_OP_NO_TICKET } from "./session-id-context.js";
import { SECURE_CONTEXT_FIELDS, type TlsServerInternals, VirtualHosts } from "./vhosts.js";

export {
  defaultSessionIdContext,
  type SessionIdContextSource,
  type StatefulServerOptions,
  statefulServerOptions,
} from "./session-id-context.js";

const TLS1_2_VERSION = 0x0303;
const SSL_OP_NO_TLSv1_3: number = cryptoConstants.SSL_OP_NO_TLSv1_3 ?? 0x20000000;
/** OpenSSL looks stateful TLS 1.3 tickets up by their 32-byte session id (spec §9.5). */
const STATEFUL_TICKET_ID_BYTES = 32;

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
  /** Hellos handed to Node whose resumeSession has not come yet (a gauge). */
  pendingHellos: number;
  /** Sessions found for another SNI name than the one they stored (refused, R24). */
  hostMismatches: number;
  /** TLS 1.0/1.1 sessions not stored (they would never resume). */
  legacySessionsSkipped: number;
  /** Sessions of connections whose virtual host could not be told, not stored (R24). */
  unboundSessionsSkipped: number;
}

export interface AttachedSessionCache {
  /**
   * The session-id context of the server's default host (the bytes OpenSSL stores in its sessions);
   * virtual hosts have their own (R24). It follows `setSecureContext`.
   */
  readonly sessionIdContext: Uint8Array;
  /** The adapter's counters (a snapshot). */
  stats(): AttachedSessionCacheStats;
  /**
   * Restores the server as it was: its listeners in their order, and its secure context and
   * options when attach changed them. Connections already handed to Node go on as they are.
   */
  detach(): void;
}

type ResumeCallback = (err: Error | null, session: Uint8Array | null) => void;
type ConnectionListener = (this: tls.Server, socket: Socket) => void;

const attached = new WeakSet<tls.Server>();

/**
 * Makes `server` resume sessions through `cache`: TLS 1.2 session ids and TLS 1.3 stateful tickets
 * (or, with `tickets: true`, TLS 1.2 session ids beside Node's own stateless tickets). One cache may
 * serve several servers, as OpenSSL's shared session context does; each server keeps its own
 * session-id context on it (R25), so servers with different certificates or client CAs never resume
 * each other's sessions.
 *
 * The server's options: unless `tickets`, `SSL_OP_NO_TICKET` must be set, and the session-id
 * context must be the one chosen below. When the server was not created with them (see
 * {@link statefulServerOptions}), attach rebuilds its secure context from the server's own options
 * plus these two (logging that it did), and keeps them through later `setSecureContext` calls;
 * `detach()` puts the original back.
 *
 * The session-id context, the same in every process and machine serving the service (Node's
 * default, a hash of `process.argv`, is neither), binds each session to the secure context that
 * made it (R24): the certificate and, when the server requests client certificates, its `ca`.
 * - With `options.sessionIdContext` (else the cache's own context, when the application set one):
 *   that service context, used as is for the default host without client authentication, else
 *   hashed with the virtual host and the client CA set.
 * - Without: derived as nginx does, the first 32 hex digits of SHA-256 over the served
 *   certificate's DER and, with client certificates, the `ca` option ({@link defaultSessionIdContext}).
 * A server with virtual hosts (`addContext`, an `SNICallback`) hands each connection to Node under
 * the binding of the host its SNI selects, so a session made for one host never resumes on another;
 * a later `setSecureContext` re-derives the bindings (sessions of the old certificate or client CA
 * set no longer resume).
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
  // The cache's own context counts only when the application set it: attach never sets it, so a
  // second server on the cache never inherits the first one's (R25).
  const cacheCtx = cache.getSessionIdContext();
  let service: string | undefined;
  if (options.sessionIdContext !== undefined) {
    service = contextString(options.sessionIdContext, "sessionIdContext");
  } else if (cacheCtx.length > 0) {
    service = contextString(cacheCtx, "the cache's session-id context");
  }
  const vhosts = new VirtualHosts(srv, service, tickets, helloTimeout);
  let sidCtx = vhosts.computeDefaultBinding();

  const protoSetSecureContext = Object.getPrototypeOf(srv).setSecureContext as (
    this: tls.Server,
    o: tls.SecureContextOptions,
  ) => void;
  const ownSetSecureContext = Object.getOwnPropertyDescriptor(srv, "setSecureContext");
  const ownSetTicketKeys = Object.getOwnPropertyDescriptor(srv, "setTicketKeys");
  const withOurOptions = (o: tls.SecureContextOptions, ctx: string): tls.SecureContextOptions => ({
    ...o,
    secureOptions: tickets ? o.secureOptions : (o.secureOptions ?? 0) | SSL_OP_NO_TICKET,
    sessionIdContext: ctx,
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
    protoSetSecureContext.call(srv, withOurOptions(current as tls.SecureContextOptions, sidCtx));
  }
  let installedCreds: TlsServerInternals["_sharedCreds"] = srv._sharedCreds;

  const tlsListener = findTlsConnectionListener(srv);
  const adapter = new ServerAdapter(srv, cache, tlsListener, log, vhosts, {
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
  // A later setSecureContext (a certificate or CA rotation) keeps NO_TICKET and re-derives the
  // bindings from the new context: sessions made under the old one no longer resume (R24).
  Object.defineProperty(srv, "setSecureContext", {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function setSecureContext(this: TlsServerInternals, o: tls.SecureContextOptions) {
      userOptions = o;
      protoSetSecureContext.call(this, withOurOptions(o, sidCtx));
      vhosts.reset();
      const next = vhosts.computeDefaultBinding();
      // The binding depends on the new certificate: build once more when it changed.
      if (next !== sidCtx) {
        sidCtx = next;
        protoSetSecureContext.call(this, withOurOptions(o, sidCtx));
      }
      installedCreds = srv._sharedCreds;
      adapter.peekHellos = canNegotiateTls13(srv);
    },
  });
  // A host added later: its context's options say which CA set verifies its clients.
  const ownAddContext = Object.getOwnPropertyDescriptor(srv, "addContext");
  Object.defineProperty(srv, "addContext", {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function addContext(this: TlsServerInternals, servername: string, context: unknown) {
      Object.getPrototypeOf(srv).addContext.call(this, servername, context);
      const last = this._contexts?.at(-1);
      if (last !== undefined) vhosts.noteHostOptions(last[1], context);
    },
  });
  // New ticket keys: the virtual hosts' keys, derived from them, are made again.
  Object.defineProperty(srv, "setTicketKeys", {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function setTicketKeys(this: TlsServerInternals, keys: Buffer) {
      Object.getPrototypeOf(srv).setTicketKeys.call(this, keys);
      vhosts.reset();
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
    get sessionIdContext() {
      return new Uint8Array(Buffer.from(vhosts.defaultBinding, "utf8"));
    },
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
      if (ownSetTicketKeys) Object.defineProperty(srv, "setTicketKeys", ownSetTicketKeys);
      else delete (srv as { setTicketKeys?: unknown }).setTicketKeys;
      if (ownAddContext) Object.defineProperty(srv, "addContext", ownAddContext);
      else delete (srv as { addContext?: unknown }).addContext;
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
    hostMismatches: 0,
    legacySessionsSkipped: 0,
    unboundSessionsSkipped: 0,
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
    private readonly vhosts: VirtualHosts,
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
    // Reading the ClientHello is only needed when TLS 1.3 can be negotiated or the server has
    // virtual hosts (the SNI picks the session-id context): else TLS 1.2 resumption needs nothing
    // but Node's own resumeSession.
    const routes = this.vhosts.routes();
    if (
      (!this.peekHellos && !routes) ||
      this.tlsListener === undefined ||
      this.srv.pauseOnConnect ||
      socket.destroyed
    ) {
      // A host that cannot be told gets a context no session is made or resumed under.
      this.handOff(socket, routes ? this.vhosts.unbound : undefined);
      return;
    }
    this.peeking.set(socket, new Peek(socket, this.tick + this.helloTicks));
    socket.on("data", this.onPeekData);
    // 'close' follows 'end' unless the server allows half-open sockets; the deadline covers those.
    socket.on("close", this.onPeekGone);
    socket.on("error", this.onPeekGone);
    this.startSweep();
  };

  /**
   * Gives the socket to Node's TLS layer under `binding` (undefined: the server's own context). Node
   * reads `server._sharedCreds` synchronously while it builds the TLSSocket, so the virtual host's
   * context is put there just for that call.
   */
  private handOff(socket: Socket, binding: string | undefined): void {
    if (this.tlsListener === undefined) return; // Node's own listener is still in place
    const srv = this.srv;
    const own = srv._sharedCreds;
    try {
      const ctx = binding === undefined ? undefined : this.vhosts.contextFor(binding);
      if (ctx !== undefined) srv._sharedCreds = ctx as unknown as TlsServerInternals["_sharedCreds"];
      this.tlsListener.call(srv, socket);
    } catch (err) {
      this.log.log("handoff", () => `Node's TLS layer refused a connection: ${(err as Error)?.message}`);
      socket.destroy();
    } finally {
      srv._sharedCreds = own;
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
    const s = p.socket;
    // §9.2: stop the flow before putting the bytes back, or Node's TLS layer never sees them.
    s.pause();
    const bytes = p.rest === undefined ? p.first : Buffer.concat([p.first, ...p.rest]);
    const routes = this.vhosts.routes();
    if (r.kind !== "done") {
      this.st.helloNotUnderstood++;
      this.release(s, bytes, routes ? this.vhosts.unbound : undefined);
      return;
    }
    this.st.hellosRead++;
    const h = r.hello;
    if (h.records > 1) this.st.fragmentedHellos++;
    if (!routes) {
      this.accept(s, bytes, h, this.vhosts.defaultBinding, false);
      return;
    }
    // The SNI picks the virtual host, maybe through the application's SNICallback (asynchronous):
    // meanwhile an error on the paused socket must not go unhandled.
    s.on("error", ignoreError);
    this.vhosts.resolve(h.serverName, (binding) => {
      s.removeListener("error", ignoreError);
      if (s.destroyed) {
        this.st.helloAborted++;
        return;
      }
      this.accept(s, bytes, h, binding, true);
    });
  }

  /** A hello read: remembers what resumeSession will need, starts a TLS 1.3 look-up, hands over. */
  private accept(s: Socket, bytes: Buffer, h: ClientHelloInfo, binding: string, routed: boolean): void {
    if (!this.detached && h.legacyId.length > 0) {
      const ctx = this.vhosts.bytes(binding);
      const serverName = routed ? h.serverName : undefined;
      if (!nodeAsksForSession(h)) {
        // Node will not ask for this hello's session (§9.5). Its legacy id is remembered all the
        // same, as ambiguous: another connection sending the same id (whose hello this reader may
        // not have understood) must not be answered from a look-up made for this one.
        if (routed || this.pending.has(idHash(h.legacyId)))
          this.remember(h.legacyId, false, undefined, ctx, serverName, true);
      } else if (h.offersTls13 && this.peekHellos) {
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
    this.release(s, bytes, binding === this.vhosts.defaultBinding ? undefined : binding);
  }

  private release(s: Socket, bytes: Buffer, binding: string | undefined): void {
    s.unshift(bytes);
    this.handOff(s, binding);
  }

  peekGone(p: Peek): void {
    this.endPeek(p);
    this.st.helloAborted++;
    p.socket.destroy();
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
        tick: this.tick,
      };
      this.pending.set(key, e);
      this.startSweep();
      return e;
    }
    // Two connections with one "random" legacy id (a client bug or a forgery), or a hash
    // collision: when resumeSession asks, neither can be told from the other, so both get a full
    // handshake (a look-up already started for the first is dropped; its ticket is spent).
    e.psk = undefined;
    e.ambiguous = true;
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
      // What Node emits when its own handshake timer fires, so operators' handlers see these too.
      if (this.srv.listenerCount("tlsClientError") > 0) {
        const err = Object.assign(
          new Error(`TLS handshake timeout: no ClientHello within ${this.helloTimeout} ms`),
          {
            code: "ERR_TLS_HANDSHAKE_TIMEOUT",
          },
        );
        try {
          this.srv.emit("tlsClientError", err, p.socket);
        } catch (e) {
          this.log.log("listener", () => `a tlsClientError listener threw: ${(e as Error)?.message}`);
        }
      }
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
    this.lookup(id, TLS1_2_VERSION, this.vhosts.bytes(this.vhosts.defaultBinding), undefined, cb);
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

function ignoreError(): void {}

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
