// Sessions in Redis (single node, or Redis Cluster) through ioredis. Designed so a Redis that is
// down, restarting or slow costs a handshake at most the deadline:
// - no offline queue and no resend after reconnect: a command either goes out on a live connection
//   or fails at once (a miss), it never waits in a queue for a Redis that may not come back;
// - a deadline per command (default 250 ms): the caller gets a miss when it passes, the command
//   keeps counting against the in-flight bound until Redis answers or the socket is dropped;
// - a bound on commands in flight (default 1000): beyond it writes are dropped and look-ups miss,
//   counted in `dropped`;
// - reconnection backs off exponentially (100 ms doubling to 2 s, with jitter), forever;
// - a socket that answers nothing for 5 s while commands are pending is dropped and reconnected.
// Commands are not auto-pipelined: each goes out in the call that issues it, in the order issued.
// A look-up's GETDEL or GET is then on the wire while the handshake is still being set up (the server
// adapter starts it as soon as it has read the ClientHello), not a tick later behind a pipeline still
// waiting for its replies; and a new session's SET leaves before the TLS layer releases the ticket
// (the adapter stores before it lets Node send it), so a client cannot present a ticket to another
// server before Redis has it. Measured on loopback, auto-pipelining cost a sequential TLS 1.3
// resumption more (a setImmediate, the pipeline's bookkeeping) than the writes it saved.
import type { ConnectionOptions } from "node:tls";
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from "ioredis";
import type { StoreKey } from "../engine/store.js";
import { checkStoreKey, createSealer, type Sealer, type SealerOptions } from "./sealing.js";
import {
  checkMaxSessionBytes,
  emptyStats,
  remainingMs,
  type SealingSessionStore,
  type StoreCallOptions,
  type StoreStats,
} from "./types.js";

export interface RedisStoreOptions extends SealerOptions {
  /** `redis://[user:pass@]host[:port][/db]` or `rediss://…` (TLS) for a single node. */
  url?: string;
  /** Redis Cluster seeds: "host:port" or redis:// / rediss:// URLs (any reachable node will do). */
  cluster?: readonly string[];
  /** A client of your own (Redis or Cluster). close() leaves it open; its options are yours. */
  client?: Redis | Cluster;
  /** Seals values; instead of `keys` / `plaintext`. */
  sealer?: Sealer;
  /** Put before every key, so services can share a Redis. Default "sesscache:". No `{` or `}`. */
  prefix?: string;
  /** Per-command deadline in ms (a miss after it). Default 250. */
  timeoutMs?: number;
  /**
   * The heaviest session (DER bytes) written to Redis; heavier ones stay local: set() resolves at
   * once without a command, counted in `oversized` (R28). Default 4096 (nginx refuses sessions
   * over 4 KiB in its shared cache); at most 10240 (Node emits none larger).
   */
  maxSessionBytes?: number;
  /** Commands in flight before new ones are dropped. Default 1000. */
  maxInFlight?: number;
  /** Upper bound of the reconnection backoff, ms. Default 2000. */
  maxBackoffMs?: number;
  /** A silent socket with commands pending is dropped after this many ms. Default 5000. */
  socketTimeoutMs?: number;
  /**
   * TLS options (CA, client certificate and key, servername) for a rediss:// URL, or for every node
   * of a cluster with rediss:// seeds (the seeds and the nodes found through them). Given with a
   * redis:// URL or seeds, they turn TLS on. A `ca` replaces Node's default roots for these
   * connections (NODE_EXTRA_CA_CERTS included).
   */
  tls?: ConnectionOptions;
  /** Passed to ioredis for each connection (after sesscache's own, so they win). */
  redisOptions?: RedisOptions;
  /** Passed to ioredis' Cluster (after sesscache's own). */
  clusterOptions?: ClusterOptions;
  /**
   * Connection problems and failed commands, as errors that name the operation and the cause but
   * never carry keys or values. Called at most once per second per kind of message.
   */
  onError?: (err: Error) => void;
}

/** An error the store reports through onError; its message holds no key or value bytes. */
export class RedisStoreError extends Error {
  override readonly name = "RedisStoreError";
  constructor(
    readonly operation: string,
    message: string,
  ) {
    super(`${operation}: ${message}`);
  }
}

type Op = "get" | "set" | "delete" | "take" | "connection";

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.length).toString("hex");

/** Reduces an ioredis error to its message: ioredis attaches command arguments (values) to errors. */
function describe(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.length > 200 ? `${msg.slice(0, 200)}…` : msg;
}

interface Seed {
  host: string;
  port: number;
  tls: boolean;
  username?: string;
  password?: string;
}

function parseSeed(seed: string): Seed {
  const text = /^[a-z]+:\/\//i.test(seed) ? seed : `redis://${seed}`;
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new TypeError(`RedisStore: bad cluster seed (expected host:port or a redis:// URL)`);
  }
  if (u.protocol !== "redis:" && u.protocol !== "rediss:") {
    throw new TypeError(`RedisStore: unsupported scheme ${u.protocol} (redis: or rediss:)`);
  }
  return {
    host: u.hostname.replace(/^\[|\]$/g, ""),
    port: u.port ? Number(u.port) : 6379,
    tls: u.protocol === "rediss:",
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
  };
}

export class RedisStore implements SealingSessionStore {
  readonly sealer: Sealer;
  readonly maxSessionBytes: number;
  /** Other hosts can read and write it: client sessions there are always sealed (R28). */
  readonly scope = "network" as const;
  readonly client: Redis | Cluster;
  readonly prefix: string;
  readonly #ownClient: boolean;
  readonly #timeoutMs: number;
  readonly #maxInFlight: number;
  readonly #onError: ((err: Error) => void) | undefined;
  readonly #lastReported = new Map<string, number>();
  readonly #stats = emptyStats();
  #closed = false;

  constructor(options: RedisStoreOptions) {
    // Sealing first: a store without keys must not even connect.
    this.sealer = createSealer(options.sealer ?? { keys: options.keys, plaintext: options.plaintext });
    this.maxSessionBytes = checkMaxSessionBytes(options.maxSessionBytes, "RedisStore");
    const sources = [options.url, options.cluster, options.client].filter((x) => x !== undefined);
    if (sources.length !== 1) {
      throw new TypeError("RedisStore: give exactly one of url, cluster or client");
    }
    this.prefix = options.prefix ?? "sesscache:";
    if (/[{}]/.test(this.prefix)) {
      // A hash tag in the prefix would put every session in one cluster slot.
      throw new TypeError("RedisStore: prefix must not contain '{' or '}'");
    }
    this.#timeoutMs = positive(options.timeoutMs ?? 250, "timeoutMs");
    this.#maxInFlight = positive(options.maxInFlight ?? 1000, "maxInFlight");
    this.#onError = options.onError;
    const maxBackoff = positive(options.maxBackoffMs ?? 2000, "maxBackoffMs");
    const backoff = (times: number) =>
      Math.min(100 * 2 ** Math.min(times - 1, 20), maxBackoff) + Math.floor(Math.random() * 100);

    const common: RedisOptions = {
      enableAutoPipelining: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      socketTimeout: positive(options.socketTimeoutMs ?? 5000, "socketTimeoutMs"),
      connectTimeout: 5000,
      retryStrategy: backoff,
      connectionName: "sesscache",
    };

    if (options.client) {
      this.client = options.client;
      this.#ownClient = false;
    } else if (options.url !== undefined) {
      const seed = parseSeed(options.url); // validates the scheme
      this.client = new Redis(options.url, {
        ...common,
        ...(seed.tls || options.tls ? { tls: { ...options.tls } } : {}),
        ...options.redisOptions,
      });
      this.#ownClient = true;
    } else {
      const seeds = (options.cluster ?? []).map(parseSeed);
      if (seeds.length === 0) throw new TypeError("RedisStore: cluster needs at least one seed");
      const tls = seeds.some((s) => s.tls) || options.tls !== undefined;
      const auth = seeds.find((s) => s.username !== undefined || s.password !== undefined);
      const { enableOfflineQueue: _q, retryStrategy: _r, ...nodeOptions } = common;
      this.client = new Cluster(
        seeds.map((s) => ({ host: s.host, port: s.port })),
        {
          enableAutoPipelining: false,
          enableOfflineQueue: false,
          clusterRetryStrategy: backoff,
          // Cluster nodes do not reconnect on their own by default; a restarted node should.
          clusterNodeRetryStrategy: backoff,
          retryDelayOnFailover: 50,
          retryDelayOnClusterDown: 50,
          slotsRefreshTimeout: 2000,
          redisOptions: {
            ...nodeOptions,
            ...(tls ? { tls: { ...options.tls } } : {}),
            ...(auth ? { username: auth.username, password: auth.password } : {}),
            ...options.redisOptions,
          },
          ...options.clusterOptions,
        },
      );
      this.#ownClient = true;
    }
    // Without a listener ioredis prints every connection error; route them to onError instead.
    this.client.on("error", (err: unknown) => this.#report("connection", err));
  }

  /**
   * The Redis key a session is filed under. Server sessions: the hash tag is the id, so sessions
   * spread over slots. Client sessions: the ids are a handful of slot numbers per identity, so the
   * hash tag is the identity (every identity's slots on one shard, identities spread over shards).
   */
  redisKey(key: StoreKey): string {
    checkStoreKey(key);
    const pv = key.protocolVersion.toString(16).padStart(4, "0");
    if (key.namespace === "client") return `${this.prefix}client:${pv}:{${hex(key.context)}}:${hex(key.id)}`;
    return `${this.prefix}server:${pv}:${hex(key.context)}:{${hex(key.id)}}`;
  }

  /** Resolves when the client is connected (or rejects after `timeoutMs`, default 10 s). */
  ready(timeoutMs = 10_000): Promise<void> {
    const c = this.client;
    if (c.status === "ready") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onReady = () => {
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(() => {
        c.off("ready", onReady);
        reject(new RedisStoreError("connection", `not ready within ${timeoutMs} ms (${c.status})`));
      }, timeoutMs);
      c.once("ready", onReady);
    });
  }

  get status(): string {
    return this.client.status;
  }

  async get(key: StoreKey, options?: StoreCallOptions): Promise<Uint8Array | undefined> {
    const k = this.redisKey(key);
    this.#stats.gets++;
    const v = await this.#run("get", () => this.client.getBuffer(k), options);
    if (v == null) return undefined;
    this.#stats.hits++;
    return v;
  }

  async set(key: StoreKey, value: Uint8Array, expiresAt: number, options?: StoreCallOptions): Promise<void> {
    const k = this.redisKey(key);
    if (!this.sealer.ownsFormat(value)) {
      // The guard behind "refuses to run without keys": raw DER cannot reach Redis by mistake.
      throw new TypeError("RedisStore.set: value is not sealed by this store's sealer");
    }
    this.#stats.sets++;
    if (value.length - this.sealer.overhead(key) > this.maxSessionBytes) {
      this.#stats.oversized++; // R28: stays local
      return;
    }
    const ttl = Math.ceil(remainingMs(expiresAt, Date.now()));
    if (ttl <= 0) return;
    const buf = Buffer.from(value.buffer, value.byteOffset, value.length);
    await this.#run("set", () => this.client.set(k, buf, "PX", ttl), options);
  }

  async delete(key: StoreKey, options?: StoreCallOptions): Promise<void> {
    const k = this.redisKey(key);
    this.#stats.deletes++;
    await this.#run("delete", () => this.client.del(k), options);
  }

  /** GETDEL (Redis ≥ 6.2): atomic, so a ticket is handed out once across the fleet. */
  async take(key: StoreKey, options?: StoreCallOptions): Promise<Uint8Array | undefined> {
    const k = this.redisKey(key);
    this.#stats.takes++;
    const v = await this.#run("take", () => this.client.getdelBuffer(k), options);
    if (v == null) return undefined;
    this.#stats.takeHits++;
    return v;
  }

  stats(): StoreStats {
    return { ...this.#stats };
  }

  /** Closes the connection(s) it opened (QUIT, then a hard disconnect after 1 s). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#ownClient) return;
    const c = this.client;
    const quit = c.quit().then(
      () => undefined,
      () => undefined,
    );
    const t = setTimeout(() => c.disconnect(), 1000);
    await quit;
    clearTimeout(t);
    c.disconnect();
  }

  /**
   * Runs one command under the in-flight bound and the deadline. Never rejects: failures and
   * timeouts resolve undefined and are counted.
   */
  #run<T>(op: Op, send: () => Promise<T>, options?: StoreCallOptions): Promise<T | undefined> {
    const s = this.#stats;
    if (this.#closed) return Promise.resolve(undefined);
    if (s.inFlight >= this.#maxInFlight) {
      s.dropped++;
      return Promise.resolve(undefined);
    }
    const timeoutMs = options?.timeoutMs ?? this.#timeoutMs;
    s.inFlight++;
    return new Promise<T | undefined>((resolve) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        s.timeouts++;
        resolve(undefined);
      }, timeoutMs);
      const finish = () => {
        s.inFlight--;
        clearTimeout(timer);
      };
      let p: Promise<T>;
      try {
        p = send();
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(
        (v) => {
          finish();
          if (settled) return;
          settled = true;
          resolve(v);
        },
        (err: unknown) => {
          finish();
          if (settled) return;
          settled = true;
          s.errors++;
          this.#report(op, err);
          resolve(undefined);
        },
      );
    });
  }

  #report(op: Op, err: unknown): void {
    if (!this.#onError) return;
    const message = describe(err);
    const tag = `${op}:${message}`;
    const now = Date.now();
    if ((this.#lastReported.get(tag) ?? 0) > now - 1000) return;
    if (this.#lastReported.size > 100) this.#lastReported.clear();
    this.#lastReported.set(tag, now);
    this.#onError(new RedisStoreError(op, message));
  }
}

function positive(v: number, name: string): number {
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`RedisStore: ${name} must be a positive number`);
  return v;
}
