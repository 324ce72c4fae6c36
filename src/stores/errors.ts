/**
 * Why a value read from a store was refused. Stable strings for code to switch on; callers count
 * every one of them as `rejected` and treat the look-up as a miss.
 */
export type StoreValueReason =
  // Sealing (sealing.ts)
  | "unknown-key" // sealed under a key id this process does not hold (rotated out, other fleet)
  | "auth-failed" // the GCM tag does not verify: tampered, truncated, or moved to another key
  | "truncated" // shorter than the fixed header and tag
  | "bad-format" // no known format marker, or an unsupported format version
  | "mode-mismatch" // a plaintext value read by a sealing store, or a sealed one in plaintext mode
  // Checks on the decoded session (checked.ts)
  | "undecodable" // the bytes are not an SSL_SESSION
  | "id-mismatch" // the session's id is not the one asked for
  | "version-mismatch" // nor its protocol version
  | "context-mismatch" // nor its session-id context (server namespace)
  | "expired"; // only when the caller asked for an expiry check

/**
 * A stored value that must not be used. The message names the reason and the key id at most,
 * never value bytes: values hold master secrets and errors end up in logs.
 */
export class StoreValueError extends Error {
  override readonly name = "StoreValueError";
  readonly reason: StoreValueReason;

  constructor(reason: StoreValueReason, message: string, options?: { cause?: unknown }) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
  }
}
