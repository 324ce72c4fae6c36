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
  | "key-mismatch" // plaintext filed under another key than the one asked (client identity, slot)
  | "too-large" // longer than any value a sealer writes: refused before any work (R28)
  // Checks on the decoded session (checked.ts)
  | "undecodable" // the bytes are not an SSL_SESSION
  | "id-mismatch" // the session's id is not the one asked for
  | "version-mismatch" // nor its protocol version
  | "context-mismatch" // nor its session-id context (server namespace)
  | "expired"; // only when the caller asked for an expiry check

/**
 * A shared client-session namespace on a plaintext store that other hosts can write (R28): anyone
 * who can write there could plant a session (a master secret of their choosing) that the client
 * would resume, a full man-in-the-middle. Refused when sharedClientSessions() is built.
 */
export class PlaintextClientStoreError extends TypeError {
  override readonly name = "PlaintextClientStoreError";
  readonly code = "ERR_SESSCACHE_PLAINTEXT_CLIENT_STORE";
  constructor(scope: string) {
    super(
      `sharedClientSessions: client sessions on a store other hosts can reach (scope ${scope}) must be ` +
        "sealed: give the store keys, not plaintext: true",
    );
  }
}

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
