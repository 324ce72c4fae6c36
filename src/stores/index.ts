// Shared session stores: where sessions live outside one process, and how they are sealed there.
//
// Writing your own store: implement SessionStore (src/engine/store.ts) over opaque bytes, and carry
// a Sealer (SealingSessionStore) so the wiring seals what it writes and opens what it reads with
// openStoredSession. Treat the backend as unreliable: answer a miss (resolve undefined) rather than
// rejecting or waiting past a deadline; keep take() atomic (one reader gets the value); apply the
// remaining lifetime as TTL (remainingMs). MemoryStore is the reference implementation.
export type { SessionStore, StoreKey } from "../engine/store.js";
export {
  checkSessionMatches,
  type FetchOptions,
  fetchStoredSession,
  type OpenOptions,
  openStoredSession,
  putStoredSession,
  sealStoredSession,
  serverStoreKey,
} from "./checked.js";
export {
  type SharedClientSessionsHandle,
  type SharedClientSessionsOptions,
  type SharedClientSessionsStats,
  sharedClientSessions,
} from "./client-sessions.js";
export {
  CLUSTER_MESSAGE_TAG,
  ClusterStore,
  type ClusterStoreOptions,
  type ClusterStorePrimary,
  type ClusterStorePrimaryOptions,
  type ClusterStorePrimaryStats,
  startClusterStorePrimary,
} from "./cluster-store.js";
export { PlaintextClientStoreError, StoreValueError, type StoreValueReason } from "./errors.js";
export {
  type ExternalCache,
  type ExternalCacheOptions,
  type ExternalCacheStats,
  externalCache,
  LOOKUP_LATENCY_BUCKETS,
  type LookupLatency,
} from "./external-cache.js";
export { FileSessionStore, type FileSessionStoreOptions } from "./file-store.js";
export {
  ExpiringMap,
  type ExpiringMapOptions,
  MemoryStore,
  type MemoryStoreOptions,
} from "./memory-store.js";
export { RedisStore, RedisStoreError, type RedisStoreOptions } from "./redis-store.js";
export {
  checkStoreKey,
  createSealer,
  generateSealKey,
  MAX_SESSION_BYTES,
  MAX_STORED_VALUE_BYTES,
  MAX_VALUE_OVERHEAD,
  PLAINTEXT_BOUND_V1,
  PLAINTEXT_V1,
  SEAL_OVERHEAD,
  SEALED_V1,
  Sealer,
  type SealerOptions,
  type SealKeyInput,
  sealKeyId,
  storeKeyBytes,
} from "./sealing.js";
export {
  DEFAULT_MAX_SESSION_BYTES,
  MAX_TTL_MS,
  remainingMs,
  type SealingSessionStore,
  type StoreCallOptions,
  type StoreScope,
  type StoreStats,
} from "./types.js";
