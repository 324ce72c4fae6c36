// `sesscache serve --store ...`: which shared store the server's cache sits on, and how its values
// are sealed. Parsed and checked before anything starts (and before workers are forked), so a bad
// flag is one line and exit 2, once. The --store-tls-* files are read here, once: with --workers
// the primary hands the parsed config to its workers (serve-workers.ts), nothing is read again.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { createSecureContext } from "node:tls";
import { CliError, describeError } from "./errors.js";

export type StoreKind = "memory" | "cluster" | "redis" | "redis-cluster";

export interface StoreConfig {
  kind: StoreKind;
  /** redis: the URL; redis-cluster: the seeds as redis:// or rediss:// URLs. Never logged or shown. */
  url?: string;
  seeds?: string[];
  /** Sealing keys (base64), the first seals; empty with plaintext. */
  keys: string[];
  plaintext: boolean;
  /** TLS for rediss:// and rediss-cluster:// (PEM text, read from the --store-tls-* files). */
  tls?: StoreTls;
}

/** PEM text for the store's TLS connections; JSON-safe, so it can travel to workers over IPC. */
export interface StoreTls {
  /** CAs trusted for the Redis server's certificate, instead of Node's default roots. */
  ca?: string;
  /** Client certificate chain and its key, for Redis with `tls-auth-clients yes`. */
  cert?: string;
  key?: string;
}

export interface StoreFlags {
  store?: string;
  storeKey?: readonly string[];
  storePlaintext?: boolean;
  /** Files (PEM): CA bundle, client certificate chain, client key. Need a rediss:// store. */
  storeTlsCa?: string;
  storeTlsCert?: string;
  storeTlsKey?: string;
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
  const tlsFlag = TLS_FLAGS.find(([field]) => flags[field] !== undefined)?.[1];
  if (spec === undefined) {
    if (flags.storeKey && flags.storeKey.length > 0) throw new CliError("--store-key needs --store");
    if (plaintext) throw new CliError("--store-plaintext needs --store");
    if (tlsFlag) throw new CliError(`${tlsFlag} needs ${TLS_STORES}`);
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
    // user:password@ comes first and applies to every seed. Split the hosts after the last '@', so
    // a ',' in the password cannot cut it into "seeds" (whose host and port /stats would show).
    const at = rest.lastIndexOf("@");
    const credentials = at >= 0 ? rest.slice(0, at + 1) : "";
    const seeds = rest
      .slice(at + 1)
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s.length > 0)
      .map((s) => `${tls ? "rediss" : "redis"}://${credentials}${s}`);
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
  if (tlsFlag) {
    if (!(lower.startsWith("rediss://") || lower.startsWith("rediss-cluster://"))) {
      const plain = lower.startsWith("redis://")
        ? "redis://"
        : lower.startsWith("redis-cluster://")
          ? "redis-cluster://"
          : undefined;
      throw new CliError(
        plain
          ? `${tlsFlag} needs TLS to Redis: --store ${plain.replace("redis", "rediss")}... rather than ${plain}...`
          : `${tlsFlag} needs ${TLS_STORES}`,
      );
    }
    config.tls = readStoreTls(flags);
  }
  return config;
}

const TLS_FLAGS = [
  ["storeTlsCa", "--store-tls-ca"],
  ["storeTlsCert", "--store-tls-cert"],
  ["storeTlsKey", "--store-tls-key"],
] as const;
const TLS_STORES = "a TLS Redis store: --store rediss://HOST:PORT or rediss-cluster://HOST:PORT,...";

/** Reads and checks the --store-tls-* files: PEM, parseable, and a client key that fits its certificate. */
function readStoreTls(flags: StoreFlags): StoreTls {
  if ((flags.storeTlsCert === undefined) !== (flags.storeTlsKey === undefined)) {
    throw new CliError("--store-tls-cert and --store-tls-key must be given together");
  }
  const tls: StoreTls = {};
  if (flags.storeTlsCa !== undefined) {
    const file = resolve(flags.storeTlsCa);
    tls.ca = readCertificates(file, "--store-tls-ca");
  }
  if (flags.storeTlsCert !== undefined && flags.storeTlsKey !== undefined) {
    const certFile = resolve(flags.storeTlsCert);
    const keyFile = resolve(flags.storeTlsKey);
    tls.cert = readCertificates(certFile, "--store-tls-cert");
    const key = readText(keyFile, "--store-tls-key");
    if (!/-----BEGIN (?:[A-Z0-9]+ )?PRIVATE KEY-----/.test(key)) {
      throw new CliError(`--store-tls-key file ${keyFile} is not a PEM private key`);
    }
    if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(key)) {
      // There is no passphrase to give: a serve that may restart unattended takes a plain key.
      throw new CliError(`--store-tls-key file ${keyFile} is encrypted: give an unencrypted key`);
    }
    try {
      createPrivateKey(key);
    } catch (err) {
      throw new CliError(
        `--store-tls-key file ${keyFile} is not a usable private key: ${describeError(err)}`,
      );
    }
    try {
      createSecureContext({ cert: tls.cert, key });
    } catch (err) {
      throw new CliError(
        `--store-tls-key ${keyFile} does not fit --store-tls-cert ${certFile}: ${describeError(err)}`,
      );
    }
    tls.key = key;
  }
  return tls;
}

function readText(file: string, flag: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(`cannot read ${flag} file ${file}: ${describeError(err)}`, { cause: err });
  }
}

/** A PEM file of one or more certificates, each of which must parse. */
function readCertificates(file: string, flag: string): string {
  const text = readText(file, flag);
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) {
    throw new CliError(`${flag} file ${file} is not PEM (no -----BEGIN CERTIFICATE----- block)`);
  }
  blocks.forEach((block, i) => {
    try {
      new X509Certificate(block);
    } catch (err) {
      const which = blocks.length > 1 ? ` (certificate #${i + 1})` : "";
      throw new CliError(`${flag} file ${file} holds an invalid certificate${which}: ${describeError(err)}`);
    }
  });
  return text;
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
  // An '@' not taken as the end of user:password@ means a '/', '?' or '#' in the password ended the
  // authority early: the password would be read as host, port and path, and shown as the target.
  if (url.includes("@") && !u.username && !u.password) {
    throw new CliError(
      "invalid --store: the Redis URL has an '@' after its host; percent-encode / ? # in a password",
    );
  }
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
