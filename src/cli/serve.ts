// `sesscache serve`: an HTTPS server resuming TLS 1.2 and 1.3 sessions statefully through an
// in-memory SessionCache, with a page and a JSON endpoint showing the cache's counters.
import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { Socket } from "node:net";
import { resolve } from "node:path";
import type { TLSSocket } from "node:tls";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { SessionCache } from "../engine/index.js";
import type { SessionCacheMetricsSources } from "../metrics.js";
import type { AttachedSessionCache } from "../server/index.js";
import type { ExternalCache, SealingSessionStore } from "../stores/index.js";
import { parseListen, parseNonNegativeInteger, parseOnOff, urlHost } from "./args.js";
import { CliError, describeError } from "./errors.js";
import { createLogger, type LogFields, parseLogFormat } from "./logger.js";
import type { MetricsEndpoint } from "./metrics.js";
import { defaultStateDir, ensureLocalCertificate } from "./self-signed.js";
import { describeTarget, parseStoreConfig, type StoreConfig } from "./serve-store.js";
import { LISTENING_TAG, type ListeningMessage, runPrimary, workerSettings } from "./serve-workers.js";
import { stopOnSignals } from "./signals.js";

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
  server: Server;
  /** The adapter's handle (its own counters, the session-id context in force). */
  attached: AttachedSessionCache;
  /** The shared store and its wiring, when --store is in use. */
  store: SealingSessionStore | undefined;
  external: ExternalCache | undefined;
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

  let server: Server;
  try {
    server = createServer({
      ...statefulServerOptions({ tickets, sessionIdContext }),
      cert,
      key,
      // Ticket lifetime hints and Node's own tickets follow the cache's lifetime. Node takes int32.
      sessionTimeout: Math.min(timeout, 0x7fffffff),
    });
  } catch (err) {
    cache.close();
    await closeStore();
    throw new CliError(`invalid certificate or key: ${describeError(err)}`);
  }
  // Idle connections stay open until the client closes: TLS 1.3 tickets arrive after the
  // handshake, and a client that keeps its connection must never find it cut under it.
  server.keepAliveTimeout = 0;

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
    ...(cluster.isWorker ? { worker: cluster.worker?.id } : {}),
    ...(store && storeConfig
      ? {
          store: {
            kind: storeConfig.kind,
            ...(describeTarget(storeConfig) ? { target: describeTarget(storeConfig) } : {}),
            sealed: !store.sealer.plaintext,
            ...store.stats(),
            external: ext?.stats(),
          },
        }
      : {}),
  });
  server.on("request", (req: IncomingMessage, res: ServerResponse) => handle(req, res, info));

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
      server.closeAllConnections();
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
    attached,
    store,
    external: ext,
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

/** Commander's parser for --listen: checks the value now (a usage error), startServe parses it again. */
function validListen(value: string): string {
  parseListen(value);
  return value;
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

type Info = () => Record<string, unknown>;

function handle(req: IncomingMessage, res: ServerResponse, info: Info): void {
  const path = (req.url ?? "/").split("?")[0];
  const socket = req.socket as TLSSocket;
  const connection = {
    resumed: socket.isSessionReused(),
    protocol: socket.getProtocol(),
    cipher: socket.getCipher()?.name ?? null,
  };
  if (path !== "/" && path !== "/stats") {
    send(res, 404, "text/plain; charset=utf-8", "not found\n");
  } else if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    send(res, 405, "text/plain; charset=utf-8", "method not allowed\n");
  } else if (path === "/stats") {
    send(res, 200, "application/json", `${JSON.stringify({ ...info(), connection }, null, 2)}\n`);
  } else {
    send(res, 200, "text/html; charset=utf-8", page(info(), connection));
  }
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, {
    "Content-Type": type,
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
  });
  res.end(body);
}

const COUNTERS = [
  "number",
  "accept",
  "acceptGood",
  "acceptRenegotiate",
  "hits",
  "cbHits",
  "misses",
  "timeouts",
  "cacheFull",
  "connect",
  "connectGood",
  "connectRenegotiate",
  "rejected",
] as const;

function page(
  data: Record<string, unknown>,
  conn: { resumed: boolean; protocol: string | null; cipher: string | null },
): string {
  const rows = COUNTERS.map((k) => `<tr><th>${k}</th><td>${esc(data[k])}</td></tr>`).join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sesscache serve</title>
<style>body{font:15px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}th,td{padding:2px 12px;text-align:left}td{font-family:monospace}</style>
</head><body>
<h1>sesscache serve</h1>
<p>This connection: <b>${conn.resumed ? "resumed" : "full handshake"}</b>, ${esc(conn.protocol)}, ${esc(conn.cipher)}.</p>
<h2>Session cache</h2>
<p>mode ${esc(data.modeName)}, size ${esc(data.cacheSize)}, timeout ${esc(data.timeout)} s, tickets ${data.tickets ? "on" : "off"}, up ${esc(data.uptime)} s. <a href="/stats">JSON</a></p>
<table>
${rows}
</table>
</body></html>
`;
}

function esc(v: unknown): string {
  return String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Registers `sesscache serve` on the program. */
export function register(program: Command): void {
  program
    .command("serve")
    .summary("run an HTTPS server that resumes TLS sessions through a sesscache cache")
    .description(
      "Run an HTTPS server (HTTP/1.1) whose TLS 1.2 and 1.3 sessions resume statefully through an " +
        "in-memory sesscache SessionCache, optionally shared with other servers through --store (Redis) " +
        "and between --workers. GET / shows the cache's counters, GET /stats gives them as JSON. " +
        "Without --cert/--key it uses a self-signed certificate for localhost, made once and kept in the " +
        "state directory. Stops cleanly on SIGINT/SIGTERM.",
    )
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  sesscache serve\n" +
        "  sesscache serve --listen [::1]:0 --timeout 300 --cache-size 1000\n" +
        "  curl --cacert ~/.local/state/sesscache/tls/cert.pem https://localhost:8443/stats https://localhost:8443/stats\n" +
        "  openssl s_client -connect 127.0.0.1:8443 -tls1_2 -sess_out s.pem; " +
        "openssl s_client -connect 127.0.0.1:8443 -tls1_2 -sess_in s.pem\n" +
        "  sesscache serve --store redis://127.0.0.1:6379 --store-key $(openssl rand -base64 32)\n" +
        "  sesscache serve --store redis-cluster://10.0.0.1:6379,10.0.0.2:6379 --store-key NEW --store-key OLD\n" +
        "  sesscache serve --store rediss://redis.internal:6380 --store-key KEY --store-tls-ca redis-ca.pem " +
        "--store-tls-cert client.pem --store-tls-key client.key\n" +
        "  sesscache serve --metrics 127.0.0.1:9464; curl http://127.0.0.1:9464/metrics\n" +
        "  sesscache serve --workers 4\n" +
        "  sesscache serve --log-format json 2>>serve.log",
    )
    .option(
      "--listen <host:port>",
      "address to listen on; [::1]:port for IPv6, port 0 picks one",
      validListen,
      DEFAULT_LISTEN,
    )
    .option("--cert <file>", "certificate chain, PEM (default: the self-signed localhost certificate)")
    .option("--key <file>", "private key for --cert, PEM")
    .option(
      "--state-dir <dir>",
      "where the self-signed certificate is kept (default: $SESSCACHE_STATE_DIR, " +
        "$XDG_STATE_HOME/sesscache or ~/.local/state/sesscache)",
    )
    .option(
      "--session-id-context <str>",
      "session-id context, 1-32 bytes (default: derived from the certificate)",
    )
    .addOption(
      new Option("--tickets <on|off>", "Node's stateless session tickets instead of stateful sessions")
        .argParser(parseOnOff)
        .default(false, "off"),
    )
    .option("--mode <list>", "cache mode, e.g. server,no_auto_clear or 0x82 (default: server)")
    .option("--timeout <seconds>", "session lifetime; 0 = default (default: 7200)", parseNonNegativeInteger)
    .option(
      "--cache-size <n>",
      "sessions kept in memory; 0 = unlimited (default: 20480)",
      parseNonNegativeInteger,
    )
    .option(
      "--store <store>",
      "share sessions through a store: memory, cluster (between --workers), redis://HOST:PORT[/DB], " +
        "rediss://HOST:PORT (TLS), or a Redis Cluster as redis-cluster://HOST:PORT,HOST:PORT,... " +
        "(rediss-cluster:// for TLS, see --store-tls-ca); URLs may carry user:password@ " +
        "(default: none; cluster with --workers > 1)",
    )
    .addOption(
      new Option(
        "--store-key <base64>",
        "key sealing the store's values (AES-256-GCM), base64 of 32 bytes (openssl rand -base64 32); " +
          "repeat for rotation: the first seals, all open (default: $SESSCACHE_STORE_KEYS, comma-separated)",
      ).argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value]),
    )
    .option(
      "--store-plaintext",
      "store sessions unencrypted on purpose (a Redis store refuses to start without a key otherwise)",
    )
    .option(
      "--store-tls-ca <file>",
      "CA certificates (PEM) trusted for a rediss:// store's server certificate, instead of the " +
        "default roots (default: Node's roots plus $NODE_EXTRA_CA_CERTS)",
    )
    .option(
      "--store-tls-cert <file>",
      "client certificate chain (PEM) for a rediss:// store with tls-auth-clients (mutual TLS)",
    )
    .option("--store-tls-key <file>", "private key (PEM, unencrypted) for --store-tls-cert")
    .option(
      "--lookup-timeout <ms>",
      "most milliseconds a store look-up may delay a handshake before it counts as a miss (default: 50)",
      parsePositiveInteger,
    )
    .option(
      "--workers <n>",
      "worker processes (node:cluster) sharing the port; with n > 1 and no --store they share " +
        "sessions through the primary (--store cluster) (default: 1)",
      parsePositiveInteger,
    )
    .addOption(
      new Option(
        "--log-format <format>",
        "diagnostics on stderr as text, or json: one object per line with time, level, msg and " +
          "fields such as worker and status (never session bytes or secrets)",
      )
        .argParser(parseLogFormat)
        .default("text"),
    )
    .option(
      "--metrics <host:port>",
      "serve Prometheus metrics on http://HOST:PORT/metrics (plain HTTP; with --workers, summed over " +
        "all workers) (default: off)",
      validListen,
    )
    .action(async (opts: CommandOptions) => {
      const logger = createLogger({
        format: opts.logFormat,
        base: cluster.isWorker ? { worker: cluster.worker?.id } : undefined,
      });
      const log = (msg: string, fields?: LogFields) => logger.info(msg, fields);
      const workers = opts.workers ?? 1;
      const clustered = workers > 1;
      // Checked here, before any worker starts, so a bad flag is one line, once. Workers take the
      // primary's parsed config: the --store-tls-* files are read once, and every worker (a
      // replacement too) gets the same TLS options and keys.
      const storeConfig =
        clustered && cluster.isWorker
          ? await workerSettings<StoreConfig | undefined>()
          : parseStoreConfig({
              store: opts.store,
              storeKey: opts.storeKey,
              storePlaintext: opts.storePlaintext,
              storeTlsCa: opts.storeTlsCa,
              storeTlsCert: opts.storeTlsCert,
              storeTlsKey: opts.storeTlsKey,
              clustered,
            });
      if (clustered && cluster.isPrimary) {
        await runServePrimary(opts, workers, storeConfig, log);
        return;
      }
      // The adapter's lines already start with "sesscache: ".
      const handle = await startServe({
        ...opts,
        store: storeConfig,
        storeKeys: undefined,
        log: (msg, fields) => logger.adapter(msg, fields),
      });
      const where = handle.stateDir !== undefined ? `state: ${handle.stateDir}` : `cert: ${handle.certFile}`;
      if (cluster.isWorker) {
        if (opts.metrics !== undefined) {
          const [{ answerMetricsRequests }, { snapshotSessionCache }] = await Promise.all([
            import("./metrics.js"),
            import("../metrics.js"),
          ]);
          answerMetricsRequests(() => snapshotSessionCache(metricsSources(handle)));
        }
        stopWorkerOnSignals(handle);
        const msg: ListeningMessage = { [LISTENING_TAG]: true, url: handle.url, port: handle.port, where };
        process.send?.(msg);
        return;
      }
      if (handle.certGenerated) {
        log(`made a self-signed certificate for localhost: ${handle.certFile}`, { cert: handle.certFile });
      }
      let metrics: MetricsEndpoint | undefined;
      if (opts.metrics !== undefined) {
        const [{ Registry }, { registerSessionCacheMetrics }, { startMetricsEndpoint }] = await Promise.all([
          import("prom-client"),
          import("../metrics.js"),
          import("./metrics.js"),
        ]);
        const registry = new Registry();
        registerSessionCacheMetrics(registry, metricsSources(handle));
        try {
          metrics = await startMetricsEndpoint(opts.metrics, registry);
        } catch (err) {
          await handle.close();
          throw err;
        }
      }
      stopOnSignals(() => Promise.all([handle.close(), metrics?.close()]), log);
      // Tests and scripts read the port from this line: keep its shape.
      process.stdout.write(`sesscache serve: listening on ${handle.url} (${where})\n`);
      if (metrics) process.stdout.write(`sesscache serve: metrics on ${metrics.url}\n`);
      if (logger.format === "json") log("listening", { url: handle.url, port: handle.port });
    });
}

interface CommandOptions {
  listen: string;
  cert?: string;
  key?: string;
  stateDir?: string;
  sessionIdContext?: string;
  tickets: boolean;
  mode?: string;
  timeout?: number;
  cacheSize?: number;
  store?: string;
  storeKey?: string[];
  storePlaintext?: boolean;
  storeTlsCa?: string;
  storeTlsCert?: string;
  storeTlsKey?: string;
  lookupTimeout?: number;
  workers?: number;
  metrics?: string;
  logFormat: "text" | "json";
}

/** What the metrics read in one serve process (src/metrics.ts). */
function metricsSources(handle: ServeHandle): SessionCacheMetricsSources {
  return { cache: handle.cache, adapter: handle.attached, store: handle.store, external: handle.external };
}

function parsePositiveInteger(value: string): number {
  const n = parseNonNegativeInteger(value);
  if (n === 0) throw new InvalidArgumentError("expected a positive integer");
  return n;
}

/** The primary of --workers N: makes the certificate once, forks, prints the startup line once. */
async function runServePrimary(
  opts: CommandOptions,
  workers: number,
  storeConfig: StoreConfig | undefined,
  log: (msg: string, fields?: LogFields) => void,
): Promise<void> {
  try {
    parseListen(opts.listen);
  } catch (err) {
    throw new CliError(`invalid --listen '${opts.listen}': ${describeError(err)}`);
  }
  if (opts.cert === undefined && opts.key === undefined) {
    // Before forking: workers racing to make it would each serve another certificate.
    const local = ensureLocalCertificate(resolve(opts.stateDir ?? defaultStateDir()));
    if (local.generated) {
      log(`made a self-signed certificate for localhost: ${local.certFile}`, { cert: local.certFile });
    }
  }
  // Bound before forking: a bad or busy --metrics address stops here, with no worker started.
  let metrics: MetricsEndpoint | undefined;
  if (opts.metrics !== undefined) {
    const [
      { Registry },
      { registerSessionCacheMetricsFrom, sumSnapshots },
      { askWorkers, startMetricsEndpoint },
    ] = await Promise.all([import("prom-client"), import("../metrics.js"), import("./metrics.js")]);
    const registry = new Registry();
    const withStore = storeConfig !== undefined;
    registerSessionCacheMetricsFrom(registry, async () => sumSnapshots(await askWorkers()), {
      adapter: true,
      store: withStore,
      latency: withStore,
    });
    metrics = await startMetricsEndpoint(opts.metrics, registry);
    const endpoint = metrics;
    for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => void endpoint.close());
  }
  let first: ListeningMessage;
  try {
    first = await runPrimary({
      workers,
      clusterStore: storeConfig?.kind === "cluster",
      settings: storeConfig,
      log,
    });
  } catch (err) {
    await metrics?.close();
    throw err;
  }
  process.stdout.write(`sesscache serve: listening on ${first.url} (${first.where})\n`);
  if (metrics) process.stdout.write(`sesscache serve: metrics on ${metrics.url}\n`);
  if (opts.logFormat === "json") log("listening", { url: first.url, port: first.port, workers });
}

/** A worker stops on SIGTERM from its primary, or when the primary goes away; SIGINT is the primary's. */
function stopWorkerOnSignals(handle: ServeHandle): void {
  let stopping = false;
  const stop = (orphaned: boolean) => {
    if (stopping) return;
    stopping = true;
    void handle.close().then(() => {
      process.exitCode = 0;
      // The primary went away: nobody waits for an orderly exit.
      if (orphaned || !process.connected) process.exit(0);
      process.disconnect();
      setTimeout(() => process.exit(0), 2000).unref();
    });
  };
  process.on("SIGTERM", () => stop(false));
  process.on("SIGINT", () => {});
  process.on("disconnect", () => stop(true));
}
