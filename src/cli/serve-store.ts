// `sesscache serve --store ...`: which shared store the server's cache sits on, and how its values
// are sealed. Parsed and checked before anything starts (and before workers are forked), so a bad
// flag is one line and exit 2, once.
import { CliError } from "./errors.js";

export type StoreKind = "memory" | "cluster" | "redis" | "redis-cluster";

export interface StoreConfig {
  kind: StoreKind;
  /** redis: the URL; redis-cluster: the seeds as redis:// or rediss:// URLs. Never logged or shown. */
  url?: string;
  seeds?: string[];
  /** Sealing keys (base64), the first seals; empty with plaintext. */
  keys: string[];
  plaintext: boolean;
}

export interface StoreFlags {
  store?: string;
  storeKey?: readonly string[];
  storePlaintext?: boolean;
  /** Set by --workers N with N > 1: no --store then means the cluster store. */
  clustered?: boolean;
}

/** Keys from --store-key, else from SESSCACHE_STORE_KEYS (comma-separated). */
export function storeKeysFrom(flags: readonly string[] | undefined, env: NodeJS.ProcessEnv): string[] {
  if (flags && flags.length > 0) return [...flags];
  return (env.SESSCACHE_STORE_KEYS ?? "")
    .split(",")
    .map((k) => k.trim())
    .filter((k) => k.length > 0);
}

const BASE64_32 = /^[A-Za-z0-9+/_-]{43}=?$/;

/** Undefined when serve runs without a store (one process, sessions in its own memory). */
export function parseStoreConfig(
  flags: StoreFlags,
  env: NodeJS.ProcessEnv = process.env,
): StoreConfig | undefined {
  const keys = storeKeysFrom(flags.storeKey, env);
  const plaintext = flags.storePlaintext === true;
  const spec = flags.store?.trim() ?? (flags.clustered ? "cluster" : undefined);
  if (spec === undefined) {
    if (flags.storeKey && flags.storeKey.length > 0) throw new CliError("--store-key needs --store");
    if (plaintext) throw new CliError("--store-plaintext needs --store");
    return undefined;
  }
  if (plaintext && keys.length > 0) {
    const from = flags.storeKey && flags.storeKey.length > 0 ? "--store-key" : "SESSCACHE_STORE_KEYS";
    throw new CliError(`give ${from} or --store-plaintext, not both`);
  }
  keys.forEach((k, i) => {
    if (!BASE64_32.test(k)) {
      throw new CliError(
        `store key #${i + 1} is not the base64 of 32 bytes (make one: openssl rand -base64 32)`,
      );
    }
  });

  let config: StoreConfig;
  const lower = spec.toLowerCase();
  if (lower === "memory") {
    config = { kind: "memory", keys, plaintext: keys.length === 0 };
  } else if (lower === "cluster") {
    if (!flags.clustered) {
      throw new CliError("--store cluster shares sessions between workers: give --workers 2 or more");
    }
    // Values never leave the application's processes: plaintext unless keys are given.
    config = { kind: "cluster", keys, plaintext: keys.length === 0 };
  } else if (lower.startsWith("redis://") || lower.startsWith("rediss://")) {
    checkUrl(spec, spec);
    config = { kind: "redis", url: spec, keys, plaintext };
  } else if (lower.startsWith("redis-cluster://") || lower.startsWith("rediss-cluster://")) {
    const tls = lower.startsWith("rediss-");
    const rest = spec.slice(spec.indexOf("://") + 3);
    const seeds = rest
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s.length > 0)
      .map((s) => `${tls ? "rediss" : "redis"}://${s}`);
    if (seeds.length === 0) throw new CliError("--store redis-cluster:// needs at least one host:port seed");
    for (const s of seeds) checkUrl(s, "a redis-cluster:// seed");
    config = { kind: "redis-cluster", seeds, keys, plaintext };
  } else {
    throw new CliError(
      "invalid --store: expected memory, cluster, redis://HOST:PORT, rediss://HOST:PORT " +
        "or redis-cluster://HOST:PORT,HOST:PORT",
    );
  }
  if ((config.kind === "redis" || config.kind === "redis-cluster") && !plaintext && keys.length === 0) {
    throw new CliError(
      "a shared store needs a sealing key: give --store-key (or SESSCACHE_STORE_KEYS), " +
        "or --store-plaintext to store sessions unencrypted on purpose",
    );
  }
  return config;
}

function checkUrl(url: string, what: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // Never echo the text: it may hold a password.
    throw new CliError(`invalid --store: ${what === url ? "the Redis URL" : what} is not a valid URL`);
  }
  if (!u.hostname) throw new CliError("invalid --store: the Redis URL has no host");
  if (u.port && !(Number(u.port) > 0 && Number(u.port) <= 65535)) {
    throw new CliError("invalid --store: the Redis port is out of range");
  }
}

/** What /stats shows about the store's target: no password, no keys. */
export function describeTarget(config: StoreConfig): string | undefined {
  const strip = (url: string) => {
    try {
      const u = new URL(url);
      return `${u.protocol}//${u.host}${u.pathname && u.pathname !== "/" ? u.pathname : ""}`;
    } catch {
      return undefined;
    }
  };
  if (config.kind === "redis" && config.url) return strip(config.url);
  if (config.kind === "redis-cluster" && config.seeds) return config.seeds.map(strip).join(",");
  return undefined;
}
