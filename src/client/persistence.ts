// Persistence of a client cache across processes (CLI tools, jobs, serverless functions): a small
// async interface so a file (src/stores/file-store.ts) or, later, a shared store can sit under it.

/** One cached client session: the identity key it was verified for and its DER. */
export interface ClientSessionEntry {
  /** `ClientIdentity.key` (base64url of a 32-byte hash). */
  readonly identity: string;
  /** OpenSSL DER SSL_SESSION. Holds a master secret: keep it encrypted at rest. */
  readonly session: Uint8Array;
}

export interface ClientSessionPersistence {
  /** Every entry saved last; an absent or unreadable store loads as none. */
  load(): Promise<ClientSessionEntry[]>;
  /** Replaces what is stored with `entries`. */
  save(entries: readonly ClientSessionEntry[]): Promise<void>;
}
