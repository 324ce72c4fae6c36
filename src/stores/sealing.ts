// Encryption at rest for shared stores. A value is
//
//   0xA1 | key id (2 bytes) | nonce (12 random bytes) | AES-256-GCM ciphertext | tag (16 bytes)
//
// with the header and the canonical storage key as associated data, so a value copied under
// another id, context, protocol version or namespace fails to open. Plaintext mode (an explicit
// opt-out) writes 0x50 | DER in the server namespace (the session itself names its id, version and
// context, checked on every read) and 0x51 | key length | canonical key | DER in the client
// namespace, whose key (an identity hash and a slot) the session does not carry: a value read under
// identity X that was written under Y is refused (R28). Plaintext binds against mistakes (a reply
// or a value filed under the wrong key), not against someone who can write to the store: that
// needs sealing, which client sessions on a network store always get (sharedClientSessions).
// The markers differ from each other and from DER's 0x30, so a value is never read in the wrong mode.
//
// R28: untrusted bytes are bounded before work. seal() takes at most MAX_SESSION_BYTES (Node
// emits no session over 10 KiB), so open() refuses any value longer than that plus its overhead
// before reading its header, let alone decrypting it.
//
// Key ids are derived, not configured: HKDF-SHA256(key, info "sesscache/store/key-id/v1"), 2 bytes.
// Every server given the same key agrees on its id without any extra setting, and a key list with
// two keys of one id is refused at start (a 1 in 65536 chance per pair: generate another key).
// The AES key is derived from the same input with its own info string, so a key reused elsewhere
// (by mistake) is never used raw.
//
// Random 96-bit nonces keep the GCM bound: about 2^32 values per key before the chance of a nonce
// collision stops being negligible. Rotate keys well before that (at 1000 new sessions/s: 50 days).
import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  hkdfSync,
  type KeyObject,
  randomBytes,
  timingSafeEqual,
} from "node:crypto";
import type { StoreKey } from "../engine/store.js";
import { sameBytes } from "../session/bytes.js";
import { StoreValueError } from "./errors.js";

export const SEALED_V1 = 0xa1;
export const PLAINTEXT_V1 = 0x50;
/** Plaintext bound to its key (client namespace): 0x51 | key length | canonical key | DER. */
export const PLAINTEXT_BOUND_V1 = 0x51;
/**
 * The largest session (DER bytes) a sealer seals and opens by default: Node's
 * SecureContext::kMaxSessionSize (10 KiB), over which Node emits no session.
 */
export const MAX_SESSION_BYTES = 10 * 1024;
/** The longest canonical store key: namespace, version, context (≤ 32) and id (≤ 32) with lengths. */
const MAX_KEY_BYTES = 1 + 2 + 1 + 32 + 1 + 32;
const KEY_ID_BYTES = 2;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES;
/** Bytes a sealed value adds to the DER it carries. */
export const SEAL_OVERHEAD = HEADER_BYTES + TAG_BYTES;
/** The most bytes any value format adds to the DER it carries (bound plaintext, longest key). */
export const MAX_VALUE_OVERHEAD = Math.max(SEAL_OVERHEAD, 2 + MAX_KEY_BYTES);
/** The longest value a store holds for a session of MAX_SESSION_BYTES; anything longer is not ours. */
export const MAX_STORED_VALUE_BYTES = MAX_SESSION_BYTES + MAX_VALUE_OVERHEAD;

/** A 32-byte key: raw bytes, or base64 / base64url text (padding optional, whitespace trimmed). */
export type SealKeyInput = Uint8Array | string;

export interface SealerOptions {
  /** Sealing keys; the first seals, every one opens (rotation: put the new key first). */
  keys?: readonly SealKeyInput[];
  /** Store DER unencrypted. Must be given explicitly; refused together with keys. */
  plaintext?: boolean;
}

interface SealKey {
  id: number;
  aes: KeyObject;
  raw: Buffer; // the derived AES key, kept only to tell a duplicate from an id collision
}

const BASE64_32 = /^[A-Za-z0-9+/_-]{43}=?$/;

function toKeyBytes(input: SealKeyInput, index: number): Buffer {
  if (typeof input === "string") {
    const text = input.trim();
    if (!BASE64_32.test(text)) {
      throw new TypeError(`sealing key #${index + 1}: not the base64 of 32 bytes`);
    }
    return Buffer.from(text, "base64");
  }
  if (input instanceof Uint8Array) {
    if (input.length !== 32) {
      throw new RangeError(`sealing key #${index + 1}: ${input.length} bytes, expected 32`);
    }
    return Buffer.from(input); // a copy: the caller may wipe or reuse its buffer
  }
  throw new TypeError(`sealing key #${index + 1}: expected a Uint8Array or a base64 string`);
}

function deriveKey(material: Buffer): SealKey {
  const raw = Buffer.from(
    hkdfSync("sha256", material, Buffer.alloc(0), "sesscache/store/aes-256-gcm/v1", 32),
  );
  const idBytes = Buffer.from(hkdfSync("sha256", material, Buffer.alloc(0), "sesscache/store/key-id/v1", 2));
  return { id: idBytes.readUInt16BE(0), aes: createSecretKey(raw), raw };
}

/** The id a key gets in sealed values (4 hex digits), for logs and rotation runbooks. */
export function sealKeyId(key: SealKeyInput): string {
  return deriveKey(toKeyBytes(key, 0)).id.toString(16).padStart(4, "0");
}

/** A fresh random key as base64, for `--store-key` or an environment variable. */
export function generateSealKey(): string {
  return randomBytes(32).toString("base64");
}

/** Throws a RangeError unless the key fits the store contract (ids 1..32 bytes, context ≤ 32). */
export function checkStoreKey(key: StoreKey): void {
  if (key.namespace !== "server" && key.namespace !== "client") {
    throw new RangeError("store key: namespace must be 'server' or 'client'");
  }
  if (!Number.isInteger(key.protocolVersion) || key.protocolVersion < 0 || key.protocolVersion > 0xffff) {
    throw new RangeError("store key: protocolVersion must be an integer in 0..0xffff");
  }
  if (!(key.id instanceof Uint8Array) || key.id.length < 1 || key.id.length > 32) {
    throw new RangeError("store key: id must be 1..32 bytes");
  }
  if (!(key.context instanceof Uint8Array) || key.context.length > 32) {
    throw new RangeError("store key: context must be 0..32 bytes");
  }
}

/**
 * The canonical bytes of a storage key: namespace (0 server, 1 client) | protocol version (2 bytes)
 * | context length | context | id length | id. Lengths make the encoding unambiguous.
 */
export function storeKeyBytes(key: StoreKey): Uint8Array {
  checkStoreKey(key);
  const out = new Uint8Array(1 + 2 + 1 + key.context.length + 1 + key.id.length);
  let o = 0;
  out[o++] = key.namespace === "server" ? 0 : 1;
  out[o++] = key.protocolVersion >> 8;
  out[o++] = key.protocolVersion & 0xff;
  out[o++] = key.context.length;
  out.set(key.context, o);
  o += key.context.length;
  out[o++] = key.id.length;
  out.set(key.id, o);
  return out;
}

function aad(header: Uint8Array, key: StoreKey): Buffer {
  return Buffer.concat([header, storeKeyBytes(key)]);
}

/**
 * Seals values before they go to a store and opens what comes back. Construct with keys, or with
 * `{ plaintext: true }`; nothing else is accepted, so a shared store is never unencrypted by accident.
 */
export class Sealer {
  readonly plaintext: boolean;
  readonly #keys: SealKey[];
  readonly #byId = new Map<number, SealKey>();

  constructor(options: SealerOptions) {
    const inputs = options.keys ?? [];
    if (options.plaintext === true) {
      if (inputs.length > 0) {
        throw new TypeError("sealing: give either keys or plaintext: true, not both");
      }
      this.plaintext = true;
      this.#keys = [];
      return;
    }
    if (inputs.length === 0) {
      throw new TypeError(
        "sealing: a shared store needs at least one 32-byte key (keys: [...]); " +
          "pass plaintext: true to store sessions unencrypted on purpose",
      );
    }
    this.plaintext = false;
    this.#keys = [];
    inputs.forEach((input, i) => {
      const k = deriveKey(toKeyBytes(input, i));
      const seen = this.#byId.get(k.id);
      if (seen) {
        if (timingSafeEqual(seen.raw, k.raw)) return; // the same key listed twice
        throw new RangeError(`sealing key #${i + 1}: its id collides with an earlier key; generate another`);
      }
      this.#byId.set(k.id, k);
      this.#keys.push(k);
    });
  }

  /** Ids of the keys held, as 4 hex digits, the sealing one first. Safe to log. */
  get keyIds(): string[] {
    return this.#keys.map((k) => k.id.toString(16).padStart(4, "0"));
  }

  /** True when `value` carries a marker this sealer writes (a cheap check, no decryption). */
  ownsFormat(value: Uint8Array): boolean {
    if (value.length === 0) return false;
    return this.plaintext
      ? value[0] === PLAINTEXT_V1 || value[0] === PLAINTEXT_BOUND_V1
      : value[0] === SEALED_V1;
  }

  /** Bytes the value for `key` adds to the DER it carries (its length minus the session's). */
  overhead(key: StoreKey): number {
    if (!this.plaintext) return SEAL_OVERHEAD;
    return key.namespace === "client" ? 2 + storeKeyBytes(key).length : 1;
  }

  /**
   * The value to store for `der` under `key`. `maxBytes` (default MAX_SESSION_BYTES) bounds the
   * DER: anything longer is refused with a StoreValueError "too-large", since open() would refuse
   * it too.
   */
  seal(key: StoreKey, der: Uint8Array, maxBytes = MAX_SESSION_BYTES): Uint8Array {
    if (der.length > maxBytes) {
      throw new StoreValueError("too-large", `${der.length} bytes to seal, more than ${maxBytes}`);
    }
    if (this.plaintext) {
      if (key.namespace === "client") {
        const k = storeKeyBytes(key);
        const out = new Uint8Array(2 + k.length + der.length);
        out[0] = PLAINTEXT_BOUND_V1;
        out[1] = k.length;
        out.set(k, 2);
        out.set(der, 2 + k.length);
        return out;
      }
      checkStoreKey(key);
      const out = new Uint8Array(1 + der.length);
      out[0] = PLAINTEXT_V1;
      out.set(der, 1);
      return out;
    }
    const k = this.#keys[0]!;
    const out = Buffer.allocUnsafe(HEADER_BYTES + der.length + TAG_BYTES);
    out[0] = SEALED_V1;
    out.writeUInt16BE(k.id, 1);
    randomBytes(NONCE_BYTES).copy(out, 1 + KEY_ID_BYTES);
    const header = out.subarray(0, HEADER_BYTES);
    const cipher = createCipheriv("aes-256-gcm", k.aes, header.subarray(1 + KEY_ID_BYTES), {
      authTagLength: TAG_BYTES,
    });
    cipher.setAAD(aad(header, key));
    let o = HEADER_BYTES;
    o += cipher.update(der).copy(out, o);
    o += cipher.final().copy(out, o);
    cipher.getAuthTag().copy(out, o);
    return out;
  }

  /**
   * The DER inside `value`, or a StoreValueError saying why not. A value longer than the largest
   * one seal() writes for `key` (DER of `maxBytes`, default MAX_SESSION_BYTES) is refused
   * ("too-large") before anything else is done with it.
   */
  open(key: StoreKey, value: Uint8Array, maxBytes = MAX_SESSION_BYTES): Uint8Array {
    checkStoreKey(key);
    if (!(value instanceof Uint8Array) || value.length === 0) {
      throw new StoreValueError("truncated", "empty value");
    }
    if (value.length > maxBytes + MAX_VALUE_OVERHEAD) {
      throw new StoreValueError("too-large", `${value.length} bytes, longer than any value sealed here`);
    }
    const marker = value[0];
    if (marker === PLAINTEXT_V1 || marker === PLAINTEXT_BOUND_V1) {
      if (!this.plaintext) throw new StoreValueError("mode-mismatch", "plaintext value in a sealing store");
      if (marker === PLAINTEXT_V1) {
        // The client namespace's key is not in the session: only a bound value may be read there.
        if (key.namespace === "client") {
          throw new StoreValueError("key-mismatch", "plaintext client value not bound to its key");
        }
        return value.subarray(1);
      }
      const k = storeKeyBytes(key);
      if (
        value.length < 2 + k.length ||
        value[1] !== k.length ||
        !sameBytes(value.subarray(2, 2 + k.length), k)
      ) {
        throw new StoreValueError("key-mismatch", "plaintext value filed under another key");
      }
      return value.subarray(2 + k.length);
    }
    if (marker === SEALED_V1 && this.plaintext) {
      throw new StoreValueError("mode-mismatch", "sealed value in a plaintext store");
    }
    if (marker !== SEALED_V1) throw new StoreValueError("bad-format", "unknown format marker");
    if (value.length < HEADER_BYTES + TAG_BYTES) {
      throw new StoreValueError("truncated", `${value.length} bytes, shorter than header and tag`);
    }
    const buf = Buffer.from(value.buffer, value.byteOffset, value.length);
    const id = buf.readUInt16BE(1);
    const k = this.#byId.get(id);
    if (!k) throw new StoreValueError("unknown-key", `key id ${id.toString(16).padStart(4, "0")} not held`);
    const header = buf.subarray(0, HEADER_BYTES);
    const decipher = createDecipheriv("aes-256-gcm", k.aes, header.subarray(1 + KEY_ID_BYTES), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(aad(header, key));
    decipher.setAuthTag(buf.subarray(buf.length - TAG_BYTES));
    const body = decipher.update(buf.subarray(HEADER_BYTES, buf.length - TAG_BYTES));
    try {
      const tail = decipher.final();
      return tail.length === 0 ? body : Buffer.concat([body, tail]);
    } catch {
      body.fill(0); // unauthenticated plaintext never leaves here
      throw new StoreValueError(
        "auth-failed",
        "authentication failed (tampered, or stored under another key)",
      );
    }
  }
}

/** A Sealer from options, or the one given. */
export function createSealer(options: SealerOptions | Sealer): Sealer {
  return options instanceof Sealer ? options : new Sealer(options);
}
