// Sessions shared among node:cluster workers with no external service. The primary holds the one
// map; workers ask it over the cluster IPC channel (design (a) of issue 5, chosen by measurement:
// see bench/stores.ts and the README). Every operation is one request/reply, so `take` is atomic
// across workers (the primary runs one message at a time) and a new session is visible to every
// worker as soon as its `set` is acknowledged.
//
// Failure behaviour: each request has a deadline (default 250 ms) after which the worker answers a
// miss; a closed IPC channel (primary gone) answers every pending and later request with a miss at
// once; requests beyond the in-flight bound are dropped. Nothing waits forever.
//
// Values travel and rest as base64 text (the default IPC serialization is JSON). They are sealed
// like any store's only when keys are given: by default they stay in the application's own
// processes, which already hold the same sessions in memory, so plaintext is the default here.
//
// Replies reach exactly the request that asked (R28): every ClusterStore has a random instance id
// that its requests carry and the primary echoes, beside the instance's own sequence number, so
// two stores in one worker (say a server cache's and sharedClientSessions') never take each
// other's answers. Sessions over maxSessionBytes (default 4096, as nginx's shared cache) stay
// local: the worker does not send them and answers the set at once; the primary refuses (and
// answers at once) any value over its own cap, and its refusal carries that cap, so a worker
// configured above it keeps further such sessions local too.
import cluster, { type Worker } from "node:cluster";
import { randomBytes } from "node:crypto";
import type { StoreKey } from "../engine/store.js";
import { ExpiringMap } from "./memory-store.js";
import {
  createSealer,
  MAX_VALUE_OVERHEAD,
  type Sealer,
  type SealerOptions,
  storeKeyBytes,
} from "./sealing.js";
import {
  checkMaxSessionBytes,
  emptyStats,
  remainingMs,
  type SealingSessionStore,
  type StoreCallOptions,
  type StoreStats,
} from "./types.js";

/** Tags sesscache's IPC messages; the value is the channel name. Other messages are left alone. */
export const CLUSTER_MESSAGE_TAG = "sesscacheStore";
const DEFAULT_CHANNEL = "default";
/** Longest instance id accepted in a request. */
const MAX_INSTANCE_CHARS = 32;

type RequestOp = "get" | "set" | "del" | "take";
interface Request {
  [CLUSTER_MESSAGE_TAG]: string;
  op: RequestOp;
  /** The asking ClusterStore's random id: replies go to that instance only. */
  i: string;
  n: number;
  k: string;
  v?: string;
  e?: number;
}
interface Reply {
  [CLUSTER_MESSAGE_TAG]: string;
  i: string;
  n: number;
  v?: string | null;
  /** On a set refused as oversized: the primary's maxSessionBytes (the worker stops sending more). */
  c?: number;
}

/** base64 characters of the longest value a store writes for a session of `maxSessionBytes`. */
function maxValueChars(maxSessionBytes: number): number {
  return 4 * Math.ceil((maxSessionBytes + MAX_VALUE_OVERHEAD) / 3);
}

export interface ClusterStorePrimaryOptions {
  /** Most sessions held; the oldest written goes first when full. Default 100 000; 0 = unlimited. */
  maxEntries?: number;
  /** Lets several independent stores share the IPC channel. Default "default". */
  channel?: string;
  /**
   * The heaviest session (DER bytes) the primary keeps; a set carrying more is refused and answered
   * at once (counted in `oversized`). Default 4096 (nginx's shared-cache limit); at most 10240.
   */
  maxSessionBytes?: number;
}

export interface ClusterStorePrimaryStats {
  size: number;
  gets: number;
  hits: number;
  sets: number;
  deletes: number;
  takes: number;
  takeHits: number;
  /** Tagged messages with a bad shape, ignored. */
  malformed: number;
  /** sets refused because the value exceeds maxSessionBytes (answered at once, nothing kept). */
  oversized: number;
}

export interface ClusterStorePrimary {
  readonly size: number;
  stats(): ClusterStorePrimaryStats;
  /** Stops answering and drops the map; workers then time out into misses. */
  close(): void;
}

function isRequest(m: unknown, channel: string): m is Request {
  if (typeof m !== "object" || m === null) return false;
  const r = m as Record<string, unknown>;
  return (
    r[CLUSTER_MESSAGE_TAG] === channel &&
    (r.op === "get" || r.op === "set" || r.op === "del" || r.op === "take") &&
    typeof r.i === "string" &&
    r.i.length <= MAX_INSTANCE_CHARS &&
    typeof r.n === "number" &&
    typeof r.k === "string" &&
    r.k.length <= 128 &&
    (r.op !== "set" || (typeof r.v === "string" && typeof r.e === "number"))
  );
}

/**
 * The primary's half: call once in the primary (before or after forking). Answers the workers'
 * ClusterStore requests from one in-memory map with expiry.
 */
export function startClusterStorePrimary(options: ClusterStorePrimaryOptions = {}): ClusterStorePrimary {
  if (!cluster.isPrimary) throw new TypeError("startClusterStorePrimary: call it in the cluster primary");
  const channel = options.channel ?? DEFAULT_CHANNEL;
  const maxBytes = checkMaxSessionBytes(options.maxSessionBytes, "startClusterStorePrimary");
  const maxChars = maxValueChars(maxBytes);
  const map = new ExpiringMap<string>({ maxEntries: options.maxEntries ?? 100_000 });
  const stats: Omit<ClusterStorePrimaryStats, "size"> = {
    gets: 0,
    hits: 0,
    sets: 0,
    deletes: 0,
    takes: 0,
    takeHits: 0,
    malformed: 0,
    oversized: 0,
  };
  const ignoreSendError = () => {}; // a worker that died meanwhile needs no answer

  const onMessage = (worker: Worker, msg: unknown) => {
    if (typeof msg !== "object" || msg === null || !(CLUSTER_MESSAGE_TAG in msg)) return;
    if (!isRequest(msg, channel)) {
      if ((msg as Record<string, unknown>)[CLUSTER_MESSAGE_TAG] === channel) stats.malformed++;
      return;
    }
    let v: string | undefined;
    let refused = false;
    switch (msg.op) {
      case "get":
        stats.gets++;
        v = map.get(msg.k);
        if (v !== undefined) stats.hits++;
        break;
      case "set":
        stats.sets++;
        // R28: a value over the cap is not kept, and the worker hears so at once.
        if (msg.v!.length > maxChars) {
          stats.oversized++;
          refused = true;
        } else map.set(msg.k, msg.v!, msg.e!);
        break;
      case "del":
        stats.deletes++;
        map.delete(msg.k);
        break;
      case "take":
        stats.takes++;
        v = map.take(msg.k);
        if (v !== undefined) stats.takeHits++;
        break;
    }
    const reply: Reply = { [CLUSTER_MESSAGE_TAG]: channel, i: msg.i, n: msg.n, v: v ?? null };
    if (refused) reply.c = maxBytes;
    if (worker.isConnected()) worker.send(reply, undefined, ignoreSendError);
  };
  cluster.on("message", onMessage);
  // Entries with mixed lifetimes can hide behind a long-lived one from the per-write pruning.
  const sweeper = setInterval(() => map.sweep(), 60_000);
  sweeper.unref();
  return {
    get size() {
      return map.size;
    },
    stats: () => ({ size: map.size, ...stats }),
    close() {
      clearInterval(sweeper);
      cluster.off("message", onMessage);
      map.clear();
    },
  };
}

export interface ClusterStoreOptions extends SealerOptions {
  /** Seals values; instead of `keys` / `plaintext`. Default: plaintext (see the file comment). */
  sealer?: Sealer;
  /** Per-request deadline in ms (a miss after it). Default 250. */
  timeoutMs?: number;
  /** Requests in flight before new ones are dropped. Default 1000. */
  maxInFlight?: number;
  /** Must match the primary's. Default "default". */
  channel?: string;
  /**
   * The heaviest session (DER bytes) sent to the primary; heavier ones stay local and their set
   * resolves at once (counted in `oversized`). Default 4096 (nginx's shared-cache limit); at most
   * 10240. Keep it ≤ the primary's.
   */
  maxSessionBytes?: number;
}

interface Pending {
  resolve: (v: string | undefined) => void;
  timer: NodeJS.Timeout;
}

/** The worker's half: a SessionStore whose map lives in the primary. */
export class ClusterStore implements SealingSessionStore {
  readonly sealer: Sealer;
  readonly maxSessionBytes: number;
  /** This host's processes only (the IPC channel to the primary). */
  readonly scope = "host" as const;
  /** This instance's id in requests and replies (random, so instances never take others' replies). */
  readonly #instance = randomBytes(12).toString("base64url");
  readonly #channel: string;
  readonly #timeoutMs: number;
  readonly #maxInFlight: number;
  readonly #pending = new Map<number, Pending>();
  readonly #stats = emptyStats();
  /**
   * The primary's cap once a refusal told it (R28): a worker configured above it would otherwise
   * keep sending values the primary refuses, each a large IPC message that delays its other requests.
   */
  #primaryCap = Number.POSITIVE_INFINITY;
  #seq = 0;
  #closed = false;

  /** The primary's half (same as startClusterStorePrimary). */
  static primary(options?: ClusterStorePrimaryOptions): ClusterStorePrimary {
    return startClusterStorePrimary(options);
  }

  constructor(options: ClusterStoreOptions = {}) {
    const sealing =
      options.sealer ??
      (options.keys !== undefined || options.plaintext !== undefined
        ? { keys: options.keys, plaintext: options.plaintext }
        : { plaintext: true });
    this.sealer = createSealer(sealing);
    this.maxSessionBytes = checkMaxSessionBytes(options.maxSessionBytes, "ClusterStore");
    if (typeof process.send !== "function") {
      throw new TypeError(
        "ClusterStore: needs an IPC channel to the primary (run it in a node:cluster worker)",
      );
    }
    this.#channel = options.channel ?? DEFAULT_CHANNEL;
    this.#timeoutMs = options.timeoutMs ?? 250;
    this.#maxInFlight = options.maxInFlight ?? 1000;
    if (!(this.#timeoutMs > 0) || !(this.#maxInFlight > 0)) {
      throw new RangeError("ClusterStore: timeoutMs and maxInFlight must be positive");
    }
    process.on("message", this.#onMessage);
    process.on("disconnect", this.#onDisconnect);
  }

  readonly #onMessage = (msg: unknown) => {
    if (typeof msg !== "object" || msg === null) return;
    const r = msg as Partial<Reply>;
    if (r[CLUSTER_MESSAGE_TAG] !== this.#channel || r.i !== this.#instance || typeof r.n !== "number") return;
    const p = this.#pending.get(r.n);
    if (typeof r.c === "number" && r.c >= 0 && r.c < this.#primaryCap) this.#primaryCap = r.c;
    if (!p) return; // answered after its deadline
    this.#pending.delete(r.n);
    clearTimeout(p.timer);
    this.#stats.inFlight--;
    p.resolve(typeof r.v === "string" ? r.v : undefined);
  };

  readonly #onDisconnect = () => {
    for (const [n, p] of this.#pending) {
      this.#pending.delete(n);
      clearTimeout(p.timer);
      this.#stats.inFlight--;
      this.#stats.errors++;
      p.resolve(undefined);
    }
  };

  #request(op: RequestOp, key: StoreKey, extra: { v?: string; e?: number } = {}, options?: StoreCallOptions) {
    const k = Buffer.from(storeKeyBytes(key)).toString("base64");
    const s = this.#stats;
    return new Promise<string | undefined>((resolve) => {
      if (this.#closed || !process.connected) {
        if (!this.#closed) s.errors++;
        resolve(undefined);
        return;
      }
      if (s.inFlight >= this.#maxInFlight) {
        s.dropped++;
        resolve(undefined);
        return;
      }
      const n = ++this.#seq;
      const timer = setTimeout(() => {
        if (this.#pending.delete(n)) {
          s.inFlight--;
          s.timeouts++;
          resolve(undefined);
        }
      }, options?.timeoutMs ?? this.#timeoutMs);
      this.#pending.set(n, { resolve, timer });
      s.inFlight++;
      const msg: Request = { [CLUSTER_MESSAGE_TAG]: this.#channel, op, i: this.#instance, n, k, ...extra };
      process.send!(msg, undefined, {}, (err: Error | null) => {
        if (!err) return;
        const p = this.#pending.get(n);
        if (!p) return;
        this.#pending.delete(n);
        clearTimeout(p.timer);
        s.inFlight--;
        s.errors++;
        p.resolve(undefined);
      });
    });
  }

  async get(key: StoreKey, options?: StoreCallOptions): Promise<Uint8Array | undefined> {
    this.#stats.gets++;
    const v = await this.#request("get", key, {}, options);
    if (v === undefined) return undefined;
    this.#stats.hits++;
    return Buffer.from(v, "base64");
  }

  async set(key: StoreKey, value: Uint8Array, expiresAt: number, options?: StoreCallOptions): Promise<void> {
    if (!this.sealer.ownsFormat(value))
      throw new TypeError("ClusterStore.set: value is not from this store's sealer");
    this.#stats.sets++;
    // R28: too heavy for the shared map: stays local, answered now (no in-flight slot, no deadline).
    if (value.length - this.sealer.overhead(key) > Math.min(this.maxSessionBytes, this.#primaryCap)) {
      this.#stats.oversized++;
      return;
    }
    if (!(remainingMs(expiresAt, Date.now()) > 0)) return; // already expired: not stored
    const v = Buffer.from(value.buffer, value.byteOffset, value.length).toString("base64");
    await this.#request("set", key, { v, e: expiresAt }, options);
  }

  async delete(key: StoreKey, options?: StoreCallOptions): Promise<void> {
    this.#stats.deletes++;
    await this.#request("del", key, {}, options);
  }

  async take(key: StoreKey, options?: StoreCallOptions): Promise<Uint8Array | undefined> {
    this.#stats.takes++;
    const v = await this.#request("take", key, {}, options);
    if (v === undefined) return undefined;
    this.#stats.takeHits++;
    return Buffer.from(v, "base64");
  }

  stats(): StoreStats {
    return { ...this.#stats };
  }

  /** Answers pending requests with misses and stops listening. The IPC channel stays open. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    process.off("message", this.#onMessage);
    process.off("disconnect", this.#onDisconnect);
    for (const [n, p] of this.#pending) {
      this.#pending.delete(n);
      clearTimeout(p.timer);
      this.#stats.inFlight--;
      p.resolve(undefined);
    }
  }
}
