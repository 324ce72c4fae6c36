// Everything read from a shared store is untrusted (spec §9 point 6): OpenSSL never checks that the
// session it is handed has the id it asked for, and a wrong one kills a TLS 1.3 handshake or resumes
// the wrong TLS 1.2 session. So a stored value is used only when it opens under the key it was asked
// for, decodes, and names the same id, protocol version and (server side) session-id context.
import type { StoreKey } from "../engine/store.js";
import { sameBytes } from "../session/bytes.js";
import { parseSession, SessionDecodeError } from "../session/index.js";
import type { Session } from "../session/types.js";
import { StoreValueError } from "./errors.js";
import { checkStoreKey, type Sealer } from "./sealing.js";
import type { SealingSessionStore, StoreCallOptions } from "./types.js";

const TLS1_3 = 0x0304;

export interface OpenOptions {
  /**
   * Epoch seconds: also refuse a session expired at this time (R5: expired when now > expiresAt).
   * Off by default: the engine applies R7 itself (counting `timeouts`, calling the remove callback).
   */
  now?: number;
}

/**
 * The session stored under `key`, checked; a StoreValueError (callers count it as `rejected` and
 * treat the look-up as a miss) when it does not open, decode or match.
 *
 * The server namespace's context is the session-id context and is compared with the session's own.
 * The client namespace's context is an identity hash the session does not carry: there the binding
 * is the sealing's associated data, or in plaintext mode the key the value carries (sealing.ts).
 */
export function openStoredSession(
  key: StoreKey,
  value: Uint8Array,
  sealer: Sealer,
  options: OpenOptions = {},
): Session {
  const der = sealer.open(key, value);
  let session: Session;
  try {
    session = parseSession(der);
  } catch (err) {
    if (err instanceof SessionDecodeError) {
      throw new StoreValueError("undecodable", `not a session (${err.reason})`, { cause: err });
    }
    throw err;
  }
  checkSessionMatches(key, session);
  if (options.now !== undefined && session.isExpiredAt(options.now)) {
    throw new StoreValueError("expired", "session expired");
  }
  return session;
}

/**
 * Throws a StoreValueError unless `session` is the one `key` names. A client key's id is a slot
 * number (src/stores/client-sessions.ts), not the session's id: there the key says only whether it
 * holds a TLS 1.3 ticket or an older, reusable session, and the identity is bound by the sealing.
 */
export function checkSessionMatches(key: StoreKey, session: Session): void {
  if (key.namespace === "client") {
    if ((session.protocolVersion === TLS1_3) !== (key.protocolVersion === TLS1_3)) {
      throw new StoreValueError("version-mismatch", "protocol version differs from the key's");
    }
    if (session.id.length === 0) throw new StoreValueError("id-mismatch", "client session without an id");
    return;
  }
  if (!sameBytes(session.id, key.id))
    throw new StoreValueError("id-mismatch", "session id differs from the key's");
  if (session.protocolVersion !== key.protocolVersion) {
    throw new StoreValueError("version-mismatch", "protocol version differs from the key's");
  }
  if (key.namespace === "server" && !sameBytes(session.sessionIdContext, key.context)) {
    throw new StoreValueError("context-mismatch", "session-id context differs from the key's");
  }
}

/** The key a server session is filed under: its own id, protocol version and session-id context. */
export function serverStoreKey(session: Session): StoreKey {
  return {
    namespace: "server",
    protocolVersion: session.protocolVersion,
    context: session.sessionIdContext,
    id: session.id,
  };
}

/**
 * The value to store for `session` under `key`, sealed. Refuses (StoreValueError) a session that
 * does not match the key, so a wrong filing is caught when writing rather than on every read.
 */
export function sealStoredSession(key: StoreKey, session: Session, sealer: Sealer): Uint8Array {
  checkSessionMatches(key, session);
  return sealer.seal(key, session.der);
}

export interface FetchOptions extends OpenOptions, StoreCallOptions {
  /** take() instead of get(): single-use TLS 1.3 tickets. */
  take?: boolean;
  /** Called with each refused value (count it as `rejected`; its message is safe to log). */
  onRejected?: (err: StoreValueError) => void;
}

type StoreGet = (key: StoreKey, options?: StoreCallOptions) => Promise<Uint8Array | undefined>;

/**
 * The look-up path in one call: get (or take) from the store, open, check. A refused value is a
 * miss reported to onRejected; store trouble is a miss too (sesscache stores never reject for it).
 * Rejects only for an invalid key.
 */
export async function fetchStoredSession(
  store: SealingSessionStore,
  key: StoreKey,
  options: FetchOptions = {},
): Promise<Session | undefined> {
  checkStoreKey(key);
  const call = (options.take ? store.take : store.get) as StoreGet;
  const callOptions = options.timeoutMs === undefined ? undefined : { timeoutMs: options.timeoutMs };
  const value = await call.call(store, key, callOptions);
  if (value === undefined) return undefined;
  try {
    return openStoredSession(key, value, store.sealer, options);
  } catch (err) {
    if (!(err instanceof StoreValueError)) throw err;
    options.onRejected?.(err);
    return undefined;
  }
}

/**
 * The write path: seal `session` under `key` and store it until it expires, in the background.
 * Never rejects (a store that fails drops the write and counts it); a session that does not match
 * its key is refused at once with a StoreValueError.
 */
export function putStoredSession(store: SealingSessionStore, key: StoreKey, session: Session): Promise<void> {
  const value = sealStoredSession(key, session, store.sealer);
  return store.set(key, value, session.expiresAt).catch(() => undefined);
}
