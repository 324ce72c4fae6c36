// The store contract: a shared place for sessions outside this process (node:cluster primary,
// Redis, a file). Stores enter the engine only through its external-cache callbacks (R6, R14, R16);
// the engine never awaits a store except in lookup's external step.
import type { Session } from "../session/types.js";

/** What a stored session is filed under. Stores turn it into their own key format. */
export interface StoreKey {
  /** "server" sessions are looked up by id; "client" sessions belong to the client cache. */
  readonly namespace: "server" | "client";
  readonly protocolVersion: number;
  /** The session-id context (server) or a client identity hash (client), 0..32 bytes. */
  readonly context: Uint8Array;
  /** The session id (1..32 bytes). */
  readonly id: Uint8Array;
}

/**
 * A handful of async methods. Values are opaque bytes (sealed DER); stores must treat what they
 * read back as untrusted: the caller decrypts, parses and checks it against the key it asked for.
 */
export interface SessionStore {
  get(key: StoreKey): Promise<Uint8Array | undefined>;
  /** Store until `expiresAt` (epoch seconds); an entry already expired is not stored. */
  set(key: StoreKey, value: Uint8Array, expiresAt: number): Promise<void>;
  delete(key: StoreKey): Promise<void>;
  /** Atomic get-and-delete: a single-use TLS 1.3 ticket can be taken once across the fleet. */
  take(key: StoreKey): Promise<Uint8Array | undefined>;
  close(): Promise<void>;
}

/** One cached client session: the identity key it was verified for and its DER. */
export interface ClientSessionEntry {
  /** `ClientIdentity.key` (base64url of a 32-byte hash). */
  readonly identity: string;
  /** OpenSSL DER SSL_SESSION. Holds a master secret: keep it encrypted at rest. */
  readonly session: Uint8Array;
}

/**
 * Persistence of a client cache across processes (CLI tools, jobs, serverless functions): a file
 * (src/stores/file-store.ts) or another store sits under it.
 */
export interface ClientSessionPersistence {
  /** Every entry saved last; an absent or unreadable store loads as none. */
  load(): Promise<ClientSessionEntry[]>;
  /** Replaces what is stored with `entries`. */
  save(entries: readonly ClientSessionEntry[]): Promise<void>;
}

/**
 * The client cache's view of a shared store (`sharedClientSessions(store)` in src/stores builds one
 * on any SealingSessionStore), so short-lived client processes resume each other's sessions. The
 * identity is `ClientIdentity.hash` (32 bytes). Nothing here rejects or throws for store trouble:
 * a store that is down, slow or returns garbage is a miss.
 */
export interface SharedClientSessions {
  /**
   * A session to offer the identity, bounded by the look-up deadline: a TLS 1.3 ticket is taken
   * (atomically: no other process gets it), an older session is read and stays shared.
   */
  fetch(identity: Uint8Array): Promise<Session | undefined>;
  /** Shares a session the identity was issued (in the background). */
  publish(identity: Uint8Array, session: Session): void;
  /** Withdraws a session that failed (R23), in the background. */
  remove(identity: Uint8Array, session: Session): void;
  /** Resolves when every write issued so far has settled (await it before a process exits). */
  settled(): Promise<void>;
}
