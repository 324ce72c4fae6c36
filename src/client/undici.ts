// A connector for undici 7's `new Agent({ connect })` (also Client and Pool) with sessions from a
// ClientSessionCache. undici's own connector keys sessions by server name only, keeps them behind
// WeakRefs and offers one TLS 1.3 ticket to every connection. This one is written against undici's
// documented connector contract and needs nothing from undici at runtime (an optional peer): the
// types below mirror `buildConnector.Options` / `Callback` structurally.
import net from "node:net";
import tls from "node:tls";
import { type ClientConnectPlan, ClientSessionCache } from "./client-cache.js";
import { type IdentityOptions, servernameFromHost } from "./identity.js";

/** What undici passes to a connector (buildConnector.Options). */
export interface UndiciConnectOptions {
  hostname: string;
  host?: string;
  protocol: string;
  port: string;
  servername?: string;
  localAddress?: string | null;
  socketPath?: string | null;
  httpSocket?: net.Socket;
}

export type UndiciConnectCallback = (...args: [null, net.Socket | tls.TLSSocket] | [Error, null]) => void;

export type UndiciConnector = (options: UndiciConnectOptions, callback: UndiciConnectCallback) => void;

export type UndiciConnectorOptions = tls.ConnectionOptions & {
  /** Where sessions come from; default: a new ClientSessionCache for this connector. */
  cache?: ClientSessionCache;
  /** Offer h2 in ALPN (undici's `allowH2`). Default false. */
  allowH2?: boolean;
  /** Connect timeout in ms (undici's `connect.timeout`), default 10000; 0 = none. */
  timeout?: number | null;
  socketPath?: string | null;
  keepAlive?: boolean | null;
  keepAliveInitialDelay?: number | null;
};

function connectTimeoutError(hostname: string, port: string | number, ms: number): Error {
  // undici's ConnectTimeoutError carries this code; retry logic keys on it.
  return Object.assign(
    new Error(`Connect Timeout Error (attempted address: ${hostname}:${port}, timeout: ${ms}ms)`),
    { name: "ConnectTimeoutError", code: "UND_ERR_CONNECT_TIMEOUT" },
  );
}

/**
 * `new undici.Agent({ connect: undiciConnector({ cache, ca, ... }) })`: every https connection
 * offers a session verified for its exact identity, and learns the ones issued (R21–R23).
 */
export function undiciConnector(options: UndiciConnectorOptions = {}): UndiciConnector {
  const {
    cache: given,
    allowH2,
    timeout,
    socketPath,
    keepAlive,
    keepAliveInitialDelay,
    ...tlsOptions
  } = options;
  const cache = given ?? new ClientSessionCache();
  const connectTimeout = timeout ?? 10_000;
  const alpn = allowH2 ? ["http/1.1", "h2"] : ["http/1.1"];

  return (opts, callback) => {
    const https = opts.protocol === "https:";
    let socket: net.Socket | tls.TLSSocket | undefined;
    let cb: UndiciConnectCallback | undefined = callback;
    let timer: NodeJS.Timeout | undefined;
    const done = (err: Error | null) => {
      if (timer) clearTimeout(timer);
      const f = cb;
      cb = undefined;
      if (!f) return;
      if (err || !socket) f(err ?? new Error("no socket"), null);
      else f(null, socket);
    };
    // The connect timeout covers the shared store's look-up too.
    if (connectTimeout > 0) {
      timer = setTimeout(() => {
        const err = connectTimeoutError(opts.hostname, opts.port, connectTimeout);
        if (socket) socket.destroy(err);
        else done(err);
      }, connectTimeout);
      timer.unref();
    }
    const wire = (s: net.Socket | tls.TLSSocket) => {
      socket = s;
      if (!cb) {
        s.destroy(); // timed out while the store was asked
        return;
      }
      if (keepAlive !== false) s.setKeepAlive(true, keepAliveInitialDelay ?? 60_000);
      s.setNoDelay(true);
      s.once(https ? "secureConnect" : "connect", () => {
        // The cache's own secureConnect check runs first and may have destroyed the socket.
        if (!s.destroyed) done(null);
      });
      s.on("error", (err) => done(err));
      s.once("close", () => done(new Error("socket closed before the connection was established")));
    };
    if (!https) {
      try {
        wire(
          net.connect({
            ...(tlsOptions as net.TcpNetConnectOpts),
            ...(socketPath ? { path: socketPath } : {}),
            localAddress: opts.localAddress ?? undefined,
            port: Number(opts.port || 80),
            host: opts.hostname,
          }),
        );
      } catch (err) {
        done(err as Error);
      }
      return;
    }
    let connectOptions: IdentityOptions & { localAddress?: string };
    try {
      const port = opts.port || 443;
      const servername = opts.servername || tlsOptions.servername || servernameFromHost(opts.host);
      connectOptions = {
        ...tlsOptions,
        servername,
        localAddress: opts.localAddress ?? undefined,
        ALPNProtocols: alpn,
        socket: opts.httpSocket,
        path: socketPath ?? undefined,
        port: Number(port),
        host: opts.hostname,
      };
    } catch (err) {
      done(err as Error);
      return;
    }
    const open = (plan: ClientConnectPlan) => {
      if (!cb) {
        // Timed out while the store was asked: a ticket taken for this connection goes back.
        if (plan.session?.protocolVersion === 0x0304) cache.add(plan.identity, plan.session);
        return;
      }
      let tlsSocket: tls.TLSSocket;
      try {
        tlsSocket = tls.connect(plan.options);
        cache.attach(tlsSocket, plan);
      } catch (err) {
        done(err as Error);
        return;
      }
      wire(tlsSocket);
    };
    const fail = (err: unknown) => done(err instanceof Error ? err : new Error(String(err)));
    if (cache.sharesSessions) cache.prepareAsync(connectOptions).then(open, fail);
    else {
      try {
        open(cache.prepare(connectOptions));
      } catch (err) {
        fail(err);
      }
    }
  };
}
