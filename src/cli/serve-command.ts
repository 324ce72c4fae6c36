// `sesscache serve` as a command: its flags, the --workers primary, signals. startServe (serve.ts)
// does the serving.
import cluster from "node:cluster";
import { resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { SessionCacheMetricsSources } from "../metrics.js";
import { parseListen, parseNonNegativeInteger, parseOnOff } from "./args.js";
import { CliError, describeError } from "./errors.js";
import { createLogger, type LogFields, parseLogFormat } from "./logger.js";
import type { MetricsEndpoint } from "./metrics.js";
import { defaultStateDir, ensureLocalCertificate } from "./self-signed.js";
import { DEFAULT_LISTEN, type ServeHandle, startServe, terminatorSettings } from "./serve.js";
import { parseStoreConfig, type StoreConfig } from "./serve-store.js";
import { LISTENING_TAG, type ListeningMessage, runPrimary, workerSettings } from "./serve-workers.js";
import { stopOnSignals } from "./signals.js";
import type { WorkerSnapshot } from "./status-tree.js";
import { parseBackend } from "./terminator.js";

/** Commander's parser for --listen: checks the value now (a usage error), startServe parses it again. */
function validListen(value: string): string {
  parseListen(value);
  return value;
}

/** Registers `sesscache serve` on the program. */
export function register(program: Command): void {
  program
    .command("serve")
    .summary("run an HTTPS server that resumes TLS sessions through a sesscache cache")
    .description(
      "Run an HTTPS server (HTTP/1.1) whose TLS 1.2 and 1.3 sessions resume statefully through an " +
        "in-memory sesscache SessionCache, optionally shared with other servers through --store (Redis) " +
        "and between --workers. GET / is a live status page (handshakes full/resumed by TLS version, " +
        "hit ratio, sessions held, store health and look-up latency, a chart of the resumption rate over " +
        "the last 10 minutes; with --workers, totals of all workers); GET /stats gives the figures as JSON. " +
        "Without --cert/--key it uses a self-signed certificate for localhost, made once and kept in the " +
        "state directory. Stops cleanly on SIGINT/SIGTERM. " +
        "With --backend HOST:PORT it is a TLS terminator instead (like hitch or stunnel): each " +
        "connection's decrypted bytes go to that plain TCP service and back, with back-pressure and " +
        "half-close passed on both ways, optionally a PROXY protocol v2 header first (--proxy-protocol) " +
        "and ALPN (--alpn); sessions still resume through the cache, --store and --workers. In that mode " +
        "the TLS port serves no status page (every byte goes to the backend): watch it with --metrics. " +
        "Exit status: 0 after SIGINT/SIGTERM, 2 for a bad flag or an environment problem (files, " +
        "ports), 1 for anything else.",
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
        "  sesscache serve --log-format json 2>>serve.log\n" +
        "  sesscache serve --listen 0.0.0.0:443 --cert chain.pem --key key.pem --backend 127.0.0.1:8080\n" +
        "  sesscache serve --backend 127.0.0.1:8080 --proxy-protocol --alpn h2,http/1.1 --workers 2 " +
        "--metrics 127.0.0.1:9464",
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
        "(rediss-cluster:// for TLS, see --store-tls-ca); URLs may carry user:password@ (for a cluster, " +
        "once, before the first host; percent-encode / ? # in a password) " +
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
    .option(
      "--backend <host:port>",
      "TLS terminator mode: forward each connection's decrypted bytes to this plain TCP service " +
        "([::1]:port for IPv6); no status page on the TLS port then (default: off)",
      validBackend,
    )
    .option(
      "--proxy-protocol",
      "with --backend: send a PROXY protocol v2 header (client and local address, ALPN and SNI TLVs) " +
        "before each connection's bytes",
    )
    .option(
      "--connect-timeout <ms>",
      "with --backend: how long to wait for the backend to accept a connection (default: 5000)",
      parsePositiveInteger,
    )
    .option(
      "--alpn <list>",
      "with --backend: ALPN protocols offered, in order of preference, e.g. h2,http/1.1 (the backend " +
        "must speak what the client picks) (default: none)",
    )
    .action(async (opts: CommandOptions) => {
      const logger = createLogger({
        format: opts.logFormat,
        base: cluster.isWorker ? { worker: cluster.worker?.id } : undefined,
      });
      const log = (msg: string, fields?: LogFields) => logger.info(msg, fields);
      // The terminator flags belong together: checked before any worker starts, so one line, once.
      terminatorSettings(opts);
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
        // A worker's status page shows the whole tree's totals, summed by the primary.
        ...(cluster.isWorker
          ? { treeStats: () => import("./status-tree.js").then((m) => m.askTreeTotals()) }
          : {}),
      });
      const where = handle.stateDir !== undefined ? `state: ${handle.stateDir}` : `cert: ${handle.certFile}`;
      if (cluster.isWorker) {
        // For --metrics and for the status page's tree totals (status-tree.ts).
        const [{ answerMetricsRequests }, { snapshotSessionCache }] = await Promise.all([
          import("./metrics.js"),
          import("../metrics.js"),
        ]);
        answerMetricsRequests(() => {
          const snapshot: WorkerSnapshot = {
            ...snapshotSessionCache(metricsSources(handle)),
            handshakes: handle.handshakes(),
          };
          return snapshot;
        });
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
      if (opts.backend !== undefined) process.stdout.write(forwardingLine(opts));
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
  backend?: string;
  proxyProtocol?: boolean;
  connectTimeout?: number;
  alpn?: string;
}

/** Commander's parser for --backend: a usage error now; startServe parses it again. */
function validBackend(value: string): string {
  try {
    parseBackend(value);
  } catch (err) {
    throw new InvalidArgumentError(describeError(err));
  }
  return value;
}

/** The second startup line in terminator mode. */
function forwardingLine(opts: CommandOptions): string {
  const extras = [opts.proxyProtocol ? "PROXY v2" : "", opts.alpn ? `ALPN ${opts.alpn}` : ""].filter(Boolean);
  return `sesscache serve: forwarding to ${opts.backend}${extras.length ? ` (${extras.join(", ")})` : ""}\n`;
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
  // Workers' status pages ask here for the tree's totals.
  const { answerTreeRequests } = await import("./status-tree.js");
  answerTreeRequests(workers);
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
  if (opts.backend !== undefined) process.stdout.write(forwardingLine(opts));
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
