// Public surface of the server adapter.
export {
  type AttachedSessionCache,
  type AttachedSessionCacheStats,
  type AttachSessionCacheOptions,
  attachSessionCache,
  defaultSessionIdContext,
  type SessionIdContextSource,
  type StatefulServerOptions,
  statefulServerOptions,
} from "./attach.js";
export {
  type ClientHelloInfo,
  ClientHelloReader,
  type ClientHelloResult,
  MAX_BUFFERED_BYTES,
  MAX_HELLO_BYTES,
  type UnknownReason,
} from "./client-hello.js";
