// Public surface of the session decoder (spec R3).
export { cipherName, knownCiphers, opensslCipherName } from "./ciphers.js";
export { SessionDecodeError, type SessionDecodeReason } from "./errors.js";
export {
  MAX_SESSION_DER_BYTES,
  type ParseOptions,
  parseSession,
  protocolName,
  type SessionSummary,
  SslSession,
} from "./parse.js";
export type { Session } from "./types.js";
export { type SessionTimes, withTimes } from "./with-times.js";
