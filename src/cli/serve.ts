// `sesscache serve`: an HTTPS server resuming TLS 1.2 and 1.3 sessions statefully through an
// in-memory SessionCache, with a page and a JSON endpoint showing the cache's counters.
import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, Server } from "node:https";
import type { Socket } from "node:net";
import { resolve } from "node:path";
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from "node:tls";
import type { SessionCache } from "../engine/index.js";
import type { AttachedSessionCache } from "../server/index.js";
import type { ExternalCache, SealingSessionStore } from "../stores/index.js";
import { parseListen, urlHost } from "./args.js";
import { CliError, describeError } from "./errors.js";
import type { LogFields } from "./logger.js";
import { defaultStateDir, ensureLocalCertificate } from "./self-signed.js";
import { describeTarget, parseStoreConfig, type StoreConfig } from "./serve-store.js";
import { type HandshakeCounts, handleStatusRequest, type TreeStats } from "./status-page.js";
import { attachTerminator, type BackendAddress, parseBackend, type Terminator } from "./terminator.js";

export const DEFAULT_LISTEN = "127.0.0.1:8443";

export interface ServeOptions {
  /** "HOST:PORT", "[::1]:PORT", ":PORT" or "PORT". Default 127.0.0.1:8443; port 0 picks one. */
  listen?: string;
  /** Certificate chain and key files (PEM). Without them a self-signed localhost pair is used. */
  cert?: string;
  key?: string;
  /** Where the self-signed pair lives. Default: $SESSCACHE_STATE_DIR, $XDG_STATE_HOME/sesscache, ~/.local/state/sesscache. */
  stateDir?: string;
  sessionIdContext?: string;
  /** Node's stateless tickets (default false: stateful sessions through the cache). */
  tickets?: boolean;
  mode?: string | number;
  /** Session lifetime in seconds (0 = the default, 7200). */
  timeout?: number;
  /** Sessions held in memory (0 = unlimited). */
  cacheSize?: number;
  /**
   * Diagnostics from the server and the adapter, one line each, no newline (default: none); some
   * come with structured fields (never session bytes or secrets).
   */
  log?: (message: string, fields?: LogFields) => void;
  /**
   * The shared store: "memory", "cluster" (node:cluster workers only), "redis://…", "rediss://…" or
   * "redis-cluster://HOST:PORT,HOST:PORT" (parseStoreConfig), or a parsed config. Default: none.
   */
  store?: string | StoreConfig;
  /** Sealing keys for the store (base64 of 32 bytes); the first seals, all open. */
  storeKeys?: readonly string[];
  /** Store sessions unencrypted on purpose (a shared store refuses to start without keys otherwise). */
  storePlaintext?: boolean;
  /**
   * PEM files for a rediss:// store: the CAs to trust for the Redis server's certificate (instead of
   * Node's default roots), and a client certificate and key for Redis with mutual TLS.
   */
  storeTlsCa?: string;
  storeTlsCert?: string;
  storeTlsKey?: string;
  /** Milliseconds a store look-up may take before it is a miss (default 50). */
  lookupTimeout?: number;
  /** How long start waits for a Redis store to connect before serving anyway (default 3000 ms). */
  storeReadyTimeout?: number;
  /**
   * Terminator mode (terminator.ts): "HOST:PORT" of a plain TCP service that gets every
   * connection's decrypted bytes; a tls.Server replaces the HTTPS one and there is no status page.
   */
  backend?: string;
  /** With backend: a PROXY protocol v2 header before each connection's bytes. */
  proxyProtocol?: boolean;
  /** With backend: milliseconds to wait for the backend to accept (default 5000). */
  connectTimeout?: number;
  /** With backend: ALPN protocols offered, in order of preference ("h2,http/1.1" or a list). */
  alpn?: string | readonly string[];
  /**
   * In a --workers worker: the whole tree's totals for the status page (status-tree.ts's
   * askTreeTotals); without it the page shows this process's figures.
   */
  treeStats?: () => Promise<TreeStats | undefined>;
}

export interface ServeHandle {
  /** https://host:port with the port actually bound. */
  url: string;
  host: string;
  port: number;
  /** The state directory, when the self-signed certificate is used. */
  stateDir: string | undefined;
  certFile: string;
  /** True when this start made a new self-signed certificate. */
  certGenerated: boolean;
  cache: SessionCache;
  /** An https.Server, or in terminator mode (backend) a tls.Server. */
  server: Server | TlsServer;
  /** The forwarding, in terminator mode. */
  terminator: Terminator | undefined;
  /** The adapter's handle (its own counters, the session-id context in force). */
  attached: AttachedSessionCache;
  /** The shared store and its wiring, when --store is in use. */
  store: SealingSessionStore | undefined;
  external: ExternalCache | undefined;
  /** Handshakes completed by protocol version, full and resumed (a copy). */
  handshakes(): HandshakeCounts;
  /** Stops listening, drops open connections, closes the cache. Idempotent. */
  close(): Promise<void>;
}

/** Starts the server. Problems the user can fix are thrown as CliError. */
export async function startServe(options: ServeOptions = {}): Promise<ServeHandle> {
  // Loaded here rather than at the top so `sesscache --help/--version` stay instant.
  const [
    { SessionCache, formatMode, parseMode },
    { attachSessionCache, defaultSessionIdContext, statefulServerOptions },
  ] = await Promise.all([import("../engine/index.js"), import("../server/index.js")]);
  const log = options.log ?? (() => {});
  let listen: { host: string; port: number };
  try {
    listen = parseListen(options.listen ?? DEFAULT_LISTEN);
  } catch (err) {
    throw new CliError(`invalid --listen '${options.listen}': ${describeError(err)}`);
  }
  const tickets = options.tickets ?? false;
  const terminatorConfig = terminatorSettings(options);

  let mode: number | undefined;
  if (options.mode !== undefined) {
    try {
      mode = parseMode(options.mode);
    } catch (err) {
      throw new CliError(`invalid --mode: ${describeError(err)}`);
    }
  }
  if (options.sessionIdContext !== undefined) {
    const n = Buffer.byteLength(options.sessionIdContext, "utf8");
    // OpenSSL's SSL_MAX_SID_CTX_LENGTH (R19); Node would otherwise fail later, less clearly.
    if (n === 0 || n > 32) throw new CliError(`--session-id-context must be 1 to 32 bytes, got ${n}`);
  }

  let cert: string;
  let key: string;
  let certFile: string;
  let stateDir: string | undefined;
  let certGenerated = false;
  if (options.cert !== undefined || options.key !== undefined) {
    if (options.cert === undefined || options.key === undefined) {
      throw new CliError("--cert and --key must be given together");
    }
    certFile = resolve(options.cert);
    cert = readPemFile(certFile, "certificate");
    key = readPemFile(resolve(options.key), "key");
  } else {
    stateDir = resolve(options.stateDir ?? defaultStateDir());
    const local = ensureLocalCertificate(stateDir);
    ({ cert, key, certFile } = local);
    certGenerated = local.generated;
  }

  const lookupTimeout = options.lookupTimeout ?? 50;
  if (!(Number.isFinite(lookupTimeout) && lookupTimeout > 0)) {
    throw new CliError(`--lookup-timeout must be a positive number of milliseconds, got ${lookupTimeout}`);
  }
  const storeConfig =
    typeof options.store === "string"
      ? parseStoreConfig({
          store: options.store,
          storeKey: options.storeKeys,
          storePlaintext: options.storePlaintext,
          storeTlsCa: options.storeTlsCa,
          storeTlsCert: options.storeTlsCert,
          storeTlsKey: options.storeTlsKey,
          clustered: cluster.isWorker,
        })
      : options.store;
  const store = storeConfig
    ? await openStore(storeConfig, log, options.storeReadyTimeout ?? 3000)
    : undefined;

  let cache: SessionCache;
  let ext: ExternalCache | undefined;
  try {
    if (store) {
      const { externalCache } = await import("../stores/index.js");
      // Single-use TLS 1.3 tickets (serve never reuses them): taken atomically across the fleet.
      ext = externalCache(store, {
        lookupTimeout,
        takeTickets: true,
        onRejected: () => cache.recordRejected(),
      });
    }
    const shared = ext;
    cache = new SessionCache({
      mode,
      timeout: options.timeout,
      cacheSize: options.cacheSize,
      // The remove callback's reason decides what reaches the store (R26): eviction, expiry,
      // flush and close() stay local, so a server leaving the fleet or filling its own cache never
      // deletes the sessions the others still resume.
      ...shared,
    });
  } catch (err) {
    await store?.close();
    throw new CliError(`invalid cache settings: ${describeError(err)}`);
  }
  const closeStore = () => store?.close().catch(() => undefined) ?? Promise.resolve();
  const timeout = cache.getTimeout();

  let sessionIdContext: string;
  try {
    sessionIdContext = options.sessionIdContext ?? defaultSessionIdContext({ cert });
  } catch (err) {
    cache.close();
    await closeStore();
    throw new CliError(`invalid certificate file ${certFile}: ${describeError(err)}`);
  }

  let server: Server | TlsServer;
  try {
    const tlsOptions = {
      ...statefulServerOptions({ tickets, sessionIdContext }),
      cert,
      key,
      // Ticket lifetime hints and Node's own tickets follow the cache's lifetime. Node takes int32.
      sessionTimeout: Math.min(timeout, 0x7fffffff),
    };
    server = terminatorConfig
      ? // Half-open sockets so either side's FIN is passed on while the other direction still flows.
        createTlsServer({ ...tlsOptions, allowHalfOpen: true, ALPNProtocols: terminatorConfig.alpn })
      : createServer(tlsOptions);
  } catch (err) {
    cache.close();
    await closeStore();
    throw new CliError(`invalid certificate or key: ${describeError(err)}`);
  }
  // Idle connections stay open until the client closes: TLS 1.3 tickets arrive after the
  // handshake, and a client that keeps its connection must never find it cut under it.
  if (server instanceof Server) server.keepAliveTimeout = 0;
  // A plain tls.Server (terminator mode) only emits tlsClientError when a handshake times out or
  // fails, and keeps the socket: a client silent after its ClientHello would hold it for good.
  // https.Server destroys it; do the same (found by npm run fuzz -- client-hello-socket).
  else server.on("tlsClientError", (_err, socket) => socket.destroy());

  let attached: AttachedSessionCache;
  try {
    // With a shared store, a TLS 1.3 ticket resumes once across the fleet, here included.
    const claimTicket = ext?.claim;
    attached = attachSessionCache(server, cache, {
      tickets,
      sessionIdContext,
      log,
      lookupTimeout,
      claimTicket,
    });
  } catch (err) {
    cache.close();
    await closeStore();
    throw new CliError(`cannot attach the session cache: ${describeError(err)}`);
  }

  // Every raw socket, including those still in the handshake, so close() is prompt.
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  // Handshakes by protocol version, full or resumed, for the status page: two reads and an
  // increment per handshake.
  const handshakes: HandshakeCounts = {
    "TLSv1.3": { full: 0, resumed: 0 },
    "TLSv1.2": { full: 0, resumed: 0 },
  };
  server.on("secureConnection", (socket: TLSSocket) => {
    const version = socket.getProtocol() ?? "unknown";
    let h = handshakes[version];
    if (!h) {
      h = { full: 0, resumed: 0 };
      handshakes[version] = h;
    }
    if (socket.isSessionReused()) h.resumed++;
    else h.full++;
  });
  const handshakesCopy = () =>
    Object.fromEntries(Object.entries(handshakes).map(([v, c]) => [v, { ...c }])) as HandshakeCounts;

  const storeStatus = () => (store as { status?: string } | undefined)?.status;
  const startedAt = performance.now();
  const info = () => ({
    ...cache.stats(),
    mode: cache.getMode(),
    modeName: formatMode(cache.getMode()),
    cacheSize: cache.getCacheSize(),
    timeout: cache.getTimeout(),
    tickets,
    sessionIdContext,
    uptime: Math.round(performance.now() - startedAt) / 1000,
    // The adapter's own counters: hellos read, PSKs offered, tickets consumed, look-up timeouts...
    adapter: attached.stats(),
    handshakes: handshakesCopy(),
    ...(cluster.isWorker ? { worker: cluster.worker?.id } : {}),
    ...(store && storeConfig
      ? {
          store: {
            kind: storeConfig.kind,
            ...(describeTarget(storeConfig) ? { target: describeTarget(storeConfig) } : {}),
            sealed: !store.sealer.plaintext,
            ...store.stats(),
            // Health as the metrics read it: a Redis store carries a status ("ready" when up).
            up: (storeStatus() ?? "ready") === "ready" ? 1 : 0,
            ...(storeStatus() ? { status: storeStatus() } : {}),
            external: ext?.stats(),
            latency: ext?.lookupLatency(),
          },
        }
      : {}),
  });
  let terminator: Terminator | undefined;
  if (terminatorConfig) {
    terminator = attachTerminator(server, { ...terminatorConfig, log });
  } else {
    server.on("request", (req: IncomingMessage, res: ServerResponse) =>
      handleStatusRequest(req, res, info, { tree: options.treeStats }),
    );
  }

  try {
    await new Promise<void>((ok, fail) => {
      const onError = (err: Error) => {
        server.off("listening", onListening);
        fail(err);
      };
      const onListening = () => {
        server.off("error", onError);
        ok();
      };
      server.once("error", onError);
      server.once("listening", onListening);
      server.listen({ host: listen.host, port: listen.port });
    });
  } catch (err) {
    terminator?.close();
    attached.detach();
    cache.close();
    await closeStore();
    const busy =
      (err as NodeJS.ErrnoException).code === "EADDRINUSE" ? " (--listen HOST:0 picks a free port)" : "";
    throw new CliError(
      `cannot listen on ${urlHost(listen.host)}:${listen.port}: ${describeError(err)}${busy}`,
      { cause: err },
    );
  }
  server.on("error", (err) => log(`sesscache: server error: ${describeError(err)}`));

  const address = server.address();
  const port = typeof address === "object" && address ? address.port : listen.port;

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= new Promise<void>((done) => {
      server.close(() => {
        attached.detach();
        cache.close();
        void closeStore().then(() => done());
      });
      if (server instanceof Server) server.closeAllConnections();
      terminator?.close();
      for (const socket of sockets) socket.destroy();
    });
    return closing;
  };

  return {
    url: `https://${urlHost(listen.host)}:${port}`,
    host: listen.host,
    port,
    stateDir,
    certFile,
    certGenerated,
    cache,
    server,
    terminator,
    attached,
    store,
    external: ext,
    handshakes: handshakesCopy,
    close,
  };
}

/** Opens the configured store; a Redis that is down is not an error (look-ups miss until it is back). */
async function openStore(
  config: StoreConfig,
  log: (message: string, fields?: LogFields) => void,
  readyTimeout: number,
): Promise<SealingSessionStore> {
  const { ClusterStore, MemoryStore, RedisStore } = await import("../stores/index.js");
  const sealing = config.plaintext ? { plaintext: true } : { keys: config.keys };
  try {
    switch (config.kind) {
      case "memory":
        return new MemoryStore({ sealing });
      case "cluster":
        return new ClusterStore(sealing);
      case "redis":
      case "redis-cluster": {
        const store = new RedisStore({
          ...(config.kind === "redis" ? { url: config.url } : { cluster: config.seeds }),
          ...(config.tls ? { tls: { ...config.tls } } : {}),
          ...sealing,
          onError: (err) => log(`sesscache serve: store: ${describeError(err)}`, { store: config.kind }),
        });
        try {
          await store.ready(readyTimeout);
        } catch {
          log(`sesscache serve: store: Redis not reachable yet (${store.status}); serving, and retrying`, {
            store: config.kind,
            status: store.status,
          });
        }
        return store;
      }
    }
  } catch (err) {
    throw new CliError(`cannot open the ${config.kind} store: ${describeError(err)}`, { cause: err });
  }
}

/** The terminator flags checked together: only meaningful with a backend. */
export function terminatorSettings(
  options: ServeOptions,
): { backend: BackendAddress; proxyProtocol: boolean; connectTimeout: number; alpn?: string[] } | undefined {
  if (options.backend === undefined) {
    const stray = [
      options.proxyProtocol ? "--proxy-protocol" : "",
      options.connectTimeout !== undefined ? "--connect-timeout" : "",
      options.alpn !== undefined ? "--alpn" : "",
    ].filter(Boolean);
    if (stray.length > 0) throw new CliError(`${stray.join(", ")} only make sense with --backend`);
    return undefined;
  }
  let backend: BackendAddress;
  try {
    backend = parseBackend(options.backend);
  } catch (err) {
    throw new CliError(`invalid --backend '${options.backend}': ${describeError(err)}`);
  }
  const connectTimeout = options.connectTimeout ?? 5000;
  if (!(Number.isInteger(connectTimeout) && connectTimeout > 0)) {
    throw new CliError(`--connect-timeout must be a positive number of milliseconds, got ${connectTimeout}`);
  }
  let alpn: string[] | undefined;
  if (options.alpn !== undefined) {
    alpn = (typeof options.alpn === "string" ? options.alpn.split(",") : [...options.alpn]).map((p) =>
      p.trim(),
    );
    // A protocol name is 1 to 255 bytes on the wire (RFC 7301).
    const bad = alpn.find((p) => p.length === 0 || Buffer.byteLength(p) > 255);
    if (alpn.length === 0 || bad !== undefined) {
      throw new CliError(`invalid --alpn '${String(options.alpn)}': expected names like h2,http/1.1`);
    }
  }
  return { backend, proxyProtocol: options.proxyProtocol ?? false, connectTimeout, alpn };
}

function readPemFile(file: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(`cannot read ${what} file ${file}: ${describeError(err)}`, { cause: err });
  }
  if (!text.includes("-----BEGIN ")) throw new CliError(`${what} file ${file} is not PEM`);
  return text;
}
