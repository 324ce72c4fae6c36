// Prometheus metrics (prom-client) for a SessionCache, its server adapter and its shared store.
//
// Layering: this file sits beside the public index, above engine/, server/ and stores/, and imports
// only their types (plus prom-client). Neither the engine nor the adapter know of it, and it knows
// no concrete store: a store's health is read from a `status` it may carry (RedisStore's), else it
// counts as up. The CLI (src/cli/metrics.ts) builds its /metrics endpoint on it.
//
// Nothing is counted per handshake: every metric reads the counters the parts already keep, at
// scrape time (prom-client's collect()), from one snapshot per scrape.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { SessionCache, SessionCacheStats } from "./engine/session-cache.js";
import type { AttachedSessionCacheStats } from "./server/resumption.js";
import type { ExternalCacheStats, LookupLatency } from "./stores/external-cache.js";
import type { SealingSessionStore, StoreStats } from "./stores/types.js";

/** Everything the metrics show, read at once. Survives JSON (the CLI sends it between processes). */
export interface SessionCacheMetricsSnapshot {
  cache: SessionCacheStats;
  adapter?: AttachedSessionCacheStats;
  store?: {
    /** 1 when the store can serve (Redis connected), else 0. */
    up: number;
    stats: StoreStats;
    external?: ExternalCacheStats;
    latency?: LookupLatency;
  };
}

export interface SessionCacheMetricsSources {
  cache: Pick<SessionCache, "stats">;
  /** The adapter's handle (attachSessionCache's result). */
  adapter?: { stats(): AttachedSessionCacheStats };
  /** The shared store, when one is used. */
  store?: Pick<SealingSessionStore, "stats"> & { readonly status?: string };
  /** The externalCache() wiring the store into the cache: its counters and look-up latency. */
  external?: { stats(): ExternalCacheStats; lookupLatency?(): LookupLatency };
}

export interface SessionCacheMetricsOptions {
  /** Prepended to every name. Default "sesscache_". */
  prefix?: string;
}

/** Reads the sources once. */
export function snapshotSessionCache(sources: SessionCacheMetricsSources): SessionCacheMetricsSnapshot {
  const { cache, adapter, store, external } = sources;
  return {
    cache: cache.stats(),
    ...(adapter ? { adapter: adapter.stats() } : {}),
    ...(store
      ? {
          store: {
            up: typeof store.status === "string" && store.status !== "ready" ? 0 : 1,
            stats: store.stats(),
            ...(external ? { external: external.stats() } : {}),
            ...(external?.lookupLatency ? { latency: external.lookupLatency() } : {}),
          },
        }
      : {}),
  };
}

/**
 * Registers sesscache's metrics on a prom-client registry, read lazily at each scrape:
 * `sesscache_<counter>_total` for each of cache.stats()'s counters (`sesscache_hits_total`,
 * `sesscache_cb_hits_total`, ...), the gauge `sesscache_sessions`, the adapter's counters as
 * `sesscache_adapter_<counter>_total`, and with a store `sesscache_store_up`, its counters, the
 * externalCache's as `sesscache_external_<counter>_total` and the histogram
 * `sesscache_store_lookup_seconds`.
 */
export function registerSessionCacheMetrics(
  registry: Registry,
  sources: SessionCacheMetricsSources,
  options: SessionCacheMetricsOptions = {},
): void {
  registerSessionCacheMetricsFrom(registry, () => snapshotSessionCache(sources), {
    ...options,
    adapter: sources.adapter !== undefined,
    store: sources.store !== undefined,
    latency: sources.external?.lookupLatency !== undefined,
  });
}

export interface SnapshotMetricsOptions extends SessionCacheMetricsOptions {
  /** Which groups of metrics to register (their snapshots may still lack them: then they are left out). */
  adapter?: boolean;
  store?: boolean;
  latency?: boolean;
}

/**
 * Like registerSessionCacheMetrics, from snapshots `read` makes (or fetches, e.g. summed over
 * worker processes with sumSnapshots). `read` runs once per scrape.
 */
export function registerSessionCacheMetricsFrom(
  registry: Registry,
  read: () => SessionCacheMetricsSnapshot | Promise<SessionCacheMetricsSnapshot>,
  options: SnapshotMetricsOptions = {},
): void {
  const prefix = options.prefix ?? "sesscache_";
  // The collect() calls of one scrape all start synchronously (Registry.metrics() maps over the
  // metrics), before the read settles: they share it. The next scrape reads again.
  let current: Promise<SessionCacheMetricsSnapshot> | undefined;
  const snapshot = () => {
    if (!current) {
      const p = Promise.resolve().then(read);
      current = p;
      const done = () => {
        if (current === p) current = undefined;
      };
      p.then(done, done);
    }
    return current;
  };
  const registers = [registry];
  type Read = (s: SessionCacheMetricsSnapshot) => number | undefined;
  // Each metric reads the one snapshot of its scrape; counters are re-set to the running totals.
  const counter = (name: string, help: string, value: Read) =>
    new Counter({
      name: `${prefix}${name}`,
      help,
      registers,
      collect: collector<Counter>(value, (m, v) => m.inc(v)),
    });
  const gauge = (name: string, help: string, value: Read) =>
    new Gauge({
      name: `${prefix}${name}`,
      help,
      registers,
      collect: collector<Gauge>(value, (m, v) => m.set(v)),
    });
  function collector<M extends Counter | Gauge>(value: Read, put: (m: M, v: number) => void) {
    return async function collect(this: M) {
      const v = value(await snapshot());
      this.reset();
      if (v !== undefined) put(this, v);
    };
  }

  for (const [key, help] of Object.entries(CACHE_COUNTERS) as [keyof SessionCacheStats, string][]) {
    if (key === "number") gauge("sessions", help, (s) => s.cache.number);
    else counter(`${snake(key)}_total`, help, (s) => s.cache[key]);
  }
  if (options.adapter) {
    for (const [key, help] of Object.entries(ADAPTER_COUNTERS) as [
      keyof AttachedSessionCacheStats,
      string,
    ][]) {
      if (key === "pendingHellos") gauge("adapter_pending_hellos", help, (s) => s.adapter?.[key]);
      else counter(`adapter_${snake(key)}_total`, help, (s) => s.adapter?.[key]);
    }
  }
  if (options.store) {
    gauge("store_up", "1 when the shared store can serve (Redis connected), else 0.", (s) => s.store?.up);
    for (const [key, help] of Object.entries(STORE_COUNTERS) as [keyof StoreStats, string][]) {
      if (key === "inFlight") gauge("store_in_flight", help, (s) => s.store?.stats[key]);
      else counter(`store_${snake(key)}_total`, help, (s) => s.store?.stats[key]);
    }
    for (const [key, help] of Object.entries(EXTERNAL_COUNTERS) as [keyof ExternalCacheStats, string][]) {
      counter(`external_${snake(key)}_total`, help, (s) => s.store?.external?.[key]);
    }
  }
  if (options.store && options.latency) {
    new LatencyHistogram(
      `${prefix}store_lookup_seconds`,
      "Time a session look-up in the shared store took, timeouts included (they end at --lookup-timeout).",
      registry,
      async () => (await snapshot()).store?.latency,
    );
  }
}

/**
 * A histogram whose buckets are kept elsewhere (externalCache's lookupLatency()) and read at scrape
 * time: prom-client's Histogram only counts what it observes itself, so its output is replaced.
 */
class LatencyHistogram extends Histogram {
  readonly #name: string;
  readonly #help: string;
  readonly #read: () => Promise<LookupLatency | undefined>;

  constructor(
    name: string,
    help: string,
    registry: Registry,
    read: () => Promise<LookupLatency | undefined>,
  ) {
    super({ name, help, registers: [registry], buckets: [] });
    this.#name = name;
    this.#help = help;
    this.#read = read;
  }

  // Registry.metrics() prefers this to get() when it exists (prom-client 15).
  async getForPromString() {
    const latency = await this.#read();
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    if (latency) {
      let acc = 0;
      latency.buckets.forEach((le, i) => {
        acc += latency.counts[i] ?? 0;
        values.push({ labels: { le }, value: acc, metricName: `${this.#name}_bucket` });
      });
      values.push({ labels: { le: "+Inf" }, value: latency.count, metricName: `${this.#name}_bucket` });
      values.push({ labels: {}, value: latency.sum, metricName: `${this.#name}_sum` });
      values.push({ labels: {}, value: latency.count, metricName: `${this.#name}_count` });
    }
    // biome-ignore lint/suspicious/noExplicitAny: prom-client's MetricObjectWithValues, shaped as its own
    return { name: this.#name, help: this.#help, type: "histogram", values, aggregator: "sum" } as any;
  }

  override get() {
    return this.getForPromString();
  }
}

/** Sums snapshots (one per worker): counters and gauges add up, the store is up only if it is up everywhere. */
export function sumSnapshots(snapshots: readonly SessionCacheMetricsSnapshot[]): SessionCacheMetricsSnapshot {
  const add = <T extends object>(parts: (T | undefined)[]): T | undefined => {
    const present = parts.filter((p): p is T => p !== undefined);
    if (present.length === 0) return undefined;
    const out = {} as Record<string, number>;
    for (const p of present) {
      for (const [k, v] of Object.entries(p)) if (typeof v === "number") out[k] = (out[k] ?? 0) + v;
    }
    return out as T;
  };
  const cache =
    add(snapshots.map((s) => s.cache)) ??
    (Object.fromEntries(Object.keys(CACHE_COUNTERS).map((k) => [k, 0])) as unknown as SessionCacheStats);
  const adapter = add(snapshots.map((s) => s.adapter));
  const stores = snapshots.flatMap((s) => (s.store ? [s.store] : []));
  let store: SessionCacheMetricsSnapshot["store"];
  if (stores.length > 0) {
    const latencies = stores.flatMap((s) => (s.latency ? [s.latency] : []));
    const external = add(stores.map((s) => s.external));
    store = {
      up: Math.min(...stores.map((s) => s.up)),
      stats: add(stores.map((s) => s.stats))!,
      ...(external ? { external } : {}),
      ...(latencies.length > 0
        ? {
            latency: {
              buckets: latencies[0]!.buckets,
              counts: latencies[0]!.counts.map((_, i) =>
                latencies.reduce((a, l) => a + (l.counts[i] ?? 0), 0),
              ),
              sum: latencies.reduce((a, l) => a + l.sum, 0),
              count: latencies.reduce((a, l) => a + l.count, 0),
            },
          }
        : {}),
    };
  }
  return { cache, ...(adapter ? { adapter } : {}), ...(store ? { store } : {}) };
}

function snake(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

// The help texts; a counter added to one of the interfaces without one here fails to compile.
const CACHE_COUNTERS: { [K in keyof SessionCacheStats]: string } = {
  number: "Sessions in the cache (SSL_CTX_sess_number).",
  connect: "Client handshakes started (SSL_CTX_sess_connect).",
  connectGood: "Client handshakes completed (SSL_CTX_sess_connect_good).",
  connectRenegotiate: "Client renegotiations started (SSL_CTX_sess_connect_renegotiate).",
  accept: "Server handshakes started (SSL_CTX_sess_accept).",
  acceptGood: "Server handshakes completed (SSL_CTX_sess_accept_good).",
  acceptRenegotiate: "Server renegotiations started (SSL_CTX_sess_accept_renegotiate).",
  hits: "Sessions resumed (SSL_CTX_sess_hits).",
  cbHits: "Sessions found through the external cache (SSL_CTX_sess_cb_hits).",
  misses: "Sessions asked for and not found (SSL_CTX_sess_misses).",
  timeouts: "Sessions found but expired (SSL_CTX_sess_timeouts).",
  cacheFull: "Sessions evicted because the cache was full (SSL_CTX_sess_cache_full).",
  rejected: "External answers refused as untrusted (not OpenSSL's).",
};

const ADAPTER_COUNTERS: { [K in keyof AttachedSessionCacheStats]: string } = {
  connections: "Connections the adapter saw.",
  hellosRead: "ClientHellos read before Node's TLS layer.",
  pskOffered: "Hellos offering a 32-byte pre_shared_key identity.",
  lookupsSkipped: "Look-ups answered 'no session' at once.",
  lookups: "Look-ups sent to the cache.",
  lookupTimeouts: "Look-ups that outlived lookupTimeout (answered as misses).",
  lookupErrors: "Look-ups that failed (answered as misses).",
  wrongAnswers: "Sessions answered under another id or protocol version (refused).",
  ticketsConsumed: "TLS 1.3 tickets removed after their one resumption.",
  ticketsRefused: "TLS 1.3 tickets found but not resumed (claimed elsewhere or timed out).",
  storeErrors: "New sessions that could not be decoded or stored.",
  fragmentedHellos: "Hellos spread over several TLS records.",
  helloNotUnderstood: "First flights that were not a ClientHello the reader understands.",
  helloTimeouts: "Connections closed for want of a complete hello.",
  helloAborted: "Connections that ended before their hello was complete.",
  pendingHellos: "Hellos handed to Node whose look-up has not come yet.",
  hostMismatches: "Sessions found for another SNI name (refused).",
  legacySessionsSkipped: "TLS 1.0/1.1 sessions not stored.",
  unboundSessionsSkipped: "Sessions of connections without a known virtual host, not stored.",
};

const STORE_COUNTERS: { [K in keyof StoreStats]: string } = {
  gets: "Store reads.",
  hits: "Store reads that returned a value.",
  sets: "Store writes.",
  deletes: "Store deletions.",
  takes: "Store get-and-delete operations (single-use TLS 1.3 tickets).",
  takeHits: "Takes that returned a value.",
  errors: "Store backend failures (answered as misses or dropped).",
  timeouts: "Store operations past their deadline (answered as misses).",
  dropped: "Store operations not sent because too many were in flight.",
  inFlight: "Store operations sent and not yet settled.",
  oversized: "Values not written or read back because they were too large.",
};

const EXTERNAL_COUNTERS: { [K in keyof ExternalCacheStats]: string } = {
  rejected: "Values read from the store and refused.",
  stored: "Sessions sent to the store.",
  removed: "Deletions sent to the store (explicit removals).",
  keptShared: "Removals that stayed local (eviction, expiry, flush, close).",
  tooLarge: "New sessions too large for the store (kept local).",
  lookups: "Look-ups asked of the store.",
  found: "Look-ups that found a usable session.",
  timeouts: "Look-ups past lookupTimeout (answered as misses).",
};
