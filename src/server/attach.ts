// The server adapter: makes any Node TLS server (tls, https, http2 secure) resume sessions through a
// SessionCache, TLS 1.2 by session id and TLS 1.3 by stateful tickets. Spec §9 explains the Node
// hooks this builds on and the traps found verifying it. This file checks the options and installs
// the two halves on the server: the hand-off (hand-off.ts: reads each ClientHello, picks the virtual
// host's context) and the resumption callbacks (resumption.ts); vhosts.ts says which host a
// connection is for, session-id-context.ts how contexts are derived.
import { constants as cryptoConstants } from "node:crypto";
import tls from "node:tls";
import type { SessionCache } from "../engine/session-cache.js";
import type { Session } from "../session/types.js";
import { TLS1_3_VERSION } from "./client-hello.js";
import { type ConnectionListener, HelloHandOff, helloSweepPeriod } from "./hand-off.js";
import { RateLimitedLog } from "./log.js";
import { type AttachedSessionCacheStats, newCounters, ResumptionCallbacks } from "./resumption.js";
import { contextString, SSL_OP_NO_TICKET } from "./session-id-context.js";
import { SECURE_CONTEXT_FIELDS, type TlsServerInternals, VirtualHosts } from "./vhosts.js";

export type { AttachedSessionCacheStats } from "./resumption.js";
export {
  defaultSessionIdContext,
  type SessionIdContextSource,
  type StatefulServerOptions,
  statefulServerOptions,
} from "./session-id-context.js";

const SSL_OP_NO_TLSv1_3: number = cryptoConstants.SSL_OP_NO_TLSv1_3 ?? 0x20000000;

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
  const st = newCounters();
  const resumption = new ResumptionCallbacks(cache, log, vhosts, st, {
    tickets,
    reuseTickets,
    claimTicket: options.claimTicket,
    lookupTimeout,
    sweepPeriod: helloSweepPeriod(helloTimeout),
  });
  const handOff = new HelloHandOff(
    srv,
    cache,
    tlsListener,
    log,
    vhosts,
    st,
    resumption,
    helloTimeout,
    canNegotiateTls13(srv),
  );
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
      handOff.peekHellos = canNegotiateTls13(srv);
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
  if (tlsListener !== undefined) replaceListener(srv, "connection", tlsListener, handOff.onConnection);
  else srv.on("connection", handOff.onConnection);
  srv.on("newSession", resumption.onNewSession);
  srv.on("resumeSession", resumption.onResumeSession);
  srv.on("secureConnection", resumption.onSecureConnection);
  attached.add(server);

  return {
    get sessionIdContext() {
      return vhosts.defaultContext.slice();
    },
    stats: () => ({ ...st, pendingHellos: resumption.pending.size }),
    detach() {
      if (resumption.detached) return;
      // Connections still being read go on to Node's TLS layer when their hello is in.
      resumption.detached = true;
      srv.removeListener("newSession", resumption.onNewSession);
      srv.removeListener("resumeSession", resumption.onResumeSession);
      srv.removeListener("secureConnection", resumption.onSecureConnection);
      if (tlsListener !== undefined) replaceListener(srv, "connection", handOff.onConnection, tlsListener);
      else srv.removeListener("connection", handOff.onConnection);
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
