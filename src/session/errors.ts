/** Why a session could not be decoded; stable strings for code to switch on. */
export type SessionDecodeReason =
  | "bad-input" // neither a Uint8Array nor a string
  | "bad-pem" // a string that is not one well-formed SSL SESSION PARAMETERS block
  | "too-large" // over MAX_SESSION_DER_BYTES
  | "truncated" // the input ends inside an element
  | "bad-length" // indefinite, over-long or inconsistent length
  | "bad-tag" // an element of the wrong type, or [n] fields out of order
  | "bad-integer" // empty, over-long or out-of-range INTEGER
  | "bad-version" // structure version other than 1
  | "bad-protocol" // ssl_version outside 0..0xffff
  | "bad-cipher" // cipher id not 2 bytes
  | "id-too-long" // session id over 32 bytes
  | "sid-ctx-too-long" // session id context over 32 bytes
  | "master-key-too-long" // over 48 bytes
  | "bad-field" // a known field with the wrong shape (e.g. comp_id not 1 byte)
  | "trailing-bytes"; // bytes after the SEQUENCE, or inside a field after its value

/**
 * The only error parseSession throws. Messages name the problem and its offset, never the bytes:
 * a session holds its master secret, and errors end up in logs.
 */
export class SessionDecodeError extends Error {
  override readonly name = "SessionDecodeError";
  readonly reason: SessionDecodeReason;
  /** Byte offset in the DER where decoding stopped, when known. */
  readonly offset: number | undefined;

  constructor(reason: SessionDecodeReason, message: string, offset?: number) {
    super(offset === undefined ? message : `${message} (at byte ${offset})`);
    this.reason = reason;
    this.offset = offset;
  }
}
