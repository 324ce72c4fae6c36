// Public surface of the cache engine (spec sections 1-7).
export {
  formatMode,
  parseMode,
  SessionCacheMode,
  SessionCacheModeError,
  type SessionCacheModeInput,
} from "./mode.js";
export {
  DEFAULT_CACHE_SIZE,
  DEFAULT_TIMEOUT,
  type ExternalLookupResult,
  InvalidSessionIdError,
  MAX_SESSION_ID_CONTEXT_LENGTH,
  MAX_SESSION_ID_LENGTH,
  type RemoveReason,
  SessionCache,
  type SessionCacheCallback,
  type SessionCacheMemory,
  type SessionCacheOptions,
  type SessionCacheStats,
  type Side,
} from "./session-cache.js";
