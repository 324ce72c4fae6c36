// The identity a client session belongs to (spec R21): everything that decides whether a session
// made on one connection is valid for another. A session is only ever offered to the identity it
// was verified for, so anything that changes what the peer must prove, or what we offer it, is in
// the key. The key is a SHA-256 over a canonical encoding: 32 bytes, which also fits a store key's
// `context` (src/engine/store.ts), and stable across processes so a persisted cache can be reloaded.
import { createHash, randomBytes } from "node:crypto";
import { isIP } from "node:net";
import tls from "node:tls";

/** Where a connection goes and what it trusts, reduced to a key. */
export interface ClientIdentity {
  /** base64url of `hash`: the key sessions are filed under. */
  readonly key: string;
  /** SHA-256 of the canonical identity (32 bytes). */
  readonly hash: Uint8Array;
  readonly host: string;
  readonly port: string;
  /** The SNI name sent, "" for none. */
  readonly servername: string;
  /** The name a certificate must match: servername, else host (what Node's own check uses). */
  readonly checkName: string;
  /**
   * False when the identity depends on an object only this process can name (a `secureContext`):
   * such sessions are never persisted.
   */
  readonly persistable: boolean;
}

/** The connection options the identity reads (a superset of what Node's https.Agent keys on). */
export type IdentityOptions = tls.ConnectionOptions & {
  host?: string | null;
  port?: number | string | null;
  path?: string | null;
};

const VERSION = "sesscache/client-identity/v1";

// Hashing a CA bundle (often 200 KB: ~160 µs of SHA-256) on every connection would cost more than
// a resumption saves, so digests are remembered; but a remembered digest must never outlive the
// content it was made from, or a session verified under the old trust is offered under the new.
// Strings are immutable: by value. Buffers and other views can change in place: each is remembered
// with a private copy of its bytes, and a digest is reused only while the bytes still equal the
// copy (a memcmp: ~3 µs for 200 KB), else the bytes are hashed again. Arrays can change in place
// too: each is remembered with its items and their digests, and reused only while it holds the
// same items whose own digests are unchanged (so a Buffer inside, changed in place, is seen too).
interface ViewDigest {
  readonly bytes: Buffer;
  readonly digest: string;
}
interface ListDigest {
  readonly items: readonly unknown[];
  readonly digests: readonly string[];
  readonly digest: string;
}
const viewDigests = new WeakMap<ArrayBufferView, ViewDigest>();
const listDigests = new WeakMap<readonly unknown[], ListDigest>();
const stringDigests = new Map<string, string>();
const MAX_STRING_DIGESTS = 64;
const contextIds = new WeakMap<object, string>();
// A per-process salt makes a secureContext's id meaningless outside this process.
const processSalt = randomBytes(8).toString("hex");
let nextContextId = 0;

type Material = string | Uint8Array | ArrayBufferView | { pem?: unknown; buf?: unknown } | null | undefined;

function sha(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("base64url");
}

function digestOne(v: unknown): string {
  if (v === undefined || v === null) return "";
  if (typeof v === "string") {
    const seen = stringDigests.get(v);
    if (seen !== undefined) return seen;
    const d = sha(v);
    if (stringDigests.size >= MAX_STRING_DIGESTS) stringDigests.clear();
    stringDigests.set(v, d);
    return d;
  }
  if (ArrayBuffer.isView(v)) {
    const bytes = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    const seen = viewDigests.get(v);
    if (seen?.bytes.equals(bytes)) return seen.digest;
    const d = sha(bytes);
    viewDigests.set(v, { bytes: Buffer.from(bytes), digest: d });
    return d;
  }
  if (typeof v === "object") {
    // { pem, passphrase } / { buf, passphrase } forms of key and pfx: the material, not the passphrase.
    const o = v as { pem?: unknown; buf?: unknown };
    return digestOne(o.pem ?? o.buf);
  }
  return sha(String(v));
}

/** A digest of one value or a list of them (order-insensitive: a CA set is a set). */
function digest(v: Material | readonly Material[]): string {
  if (v === undefined || v === null) return "";
  if (!Array.isArray(v)) return digestOne(v);
  const list = v as readonly Material[];
  const seen = listDigests.get(list);
  if (seen !== undefined && seen.items.length === list.length) {
    let same = true;
    for (let i = 0; i < list.length && same; i++) {
      const x = list[i];
      // A string is its value; an object's content may have changed under the same reference.
      same = x === seen.items[i] && (typeof x !== "object" || x === null || digestOne(x) === seen.digests[i]);
    }
    if (same) return seen.digest;
  }
  const items = [...list];
  const digests = items.map(digestOne);
  const d = sha([...digests].sort().join(","));
  listDigests.set(list, { items, digests, digest: d });
  return d;
}

/** ALPN offer as a list of names, whatever form it was given in (names, buffers or wire format). */
function alpnList(v: tls.ConnectionOptions["ALPNProtocols"]): string[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) {
    return v.map((p) =>
      typeof p === "string" ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString("latin1"),
    );
  }
  if (ArrayBuffer.isView(v)) {
    const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    const out: string[] = [];
    for (let i = 0; i < b.length; ) {
      const n = b[i]!;
      out.push(b.subarray(i + 1, i + 1 + n).toString("latin1"));
      i += 1 + n;
    }
    return out;
  }
  return [String(v)];
}

function str(v: unknown): string {
  return v === undefined || v === null ? "" : String(v);
}

/**
 * The identity of a connection made with these options (as tls.connect would use them).
 * Host and servername are compared case-insensitively, as DNS names are.
 */
export function clientIdentity(options: IdentityOptions): ClientIdentity {
  const host = str(options.host ?? "localhost").toLowerCase();
  const port = str(options.port);
  const servername = str(options.servername).toLowerCase();
  // As tls.connect decides it: a missing option falls back to NODE_TLS_REJECT_UNAUTHORIZED, any
  // value but false (an explicit undefined too) verifies.
  const rejectUnauthorized = Object.hasOwn(options, "rejectUnauthorized")
    ? options.rejectUnauthorized !== false
    : process.env.NODE_TLS_REJECT_UNAUTHORIZED !== "0";
  let context = "";
  if (options.secureContext) {
    let id = contextIds.get(options.secureContext);
    if (id === undefined) {
      id = `${processSalt}:${nextContextId++}`;
      contextIds.set(options.secureContext, id);
    }
    context = id;
  }
  const o = options as IdentityOptions & Record<string, unknown>;
  const fields = [
    VERSION,
    host,
    port,
    str(options.path),
    servername,
    alpnList(options.ALPNProtocols).join("\0"),
    // Effective protocol bounds: a changed process default must not share sessions.
    str(options.minVersion ?? tls.DEFAULT_MIN_VERSION),
    str(options.maxVersion ?? tls.DEFAULT_MAX_VERSION),
    str(options.secureProtocol),
    str(options.secureOptions),
    // Trust: what the peer had to chain to, and whether that was enforced.
    options.ca === undefined ? "default-roots" : digest(options.ca as Material[]),
    digest(options.crl as Material[]),
    rejectUnauthorized ? "verify" : "no-verify",
    // Our own identity: a session made with one client certificate must not be used with another.
    digest(options.cert as Material[]),
    digest(options.pfx as Material[]),
    str(o.privateKeyEngine),
    str(o.privateKeyIdentifier),
    str(o.clientCertEngine),
    // What we offer.
    str(options.ciphers ?? tls.DEFAULT_CIPHERS),
    str(options.sigalgs),
    str(options.ecdhCurve),
    str(options.minDHSize),
    options.pskCallback ? "psk" : "",
    context,
  ];
  const hash = createHash("sha256").update(JSON.stringify(fields)).digest();
  return {
    key: hash.toString("base64url"),
    hash: new Uint8Array(hash.buffer, hash.byteOffset, hash.length),
    host,
    port,
    servername,
    checkName: str(options.servername) || str(options.host) || "localhost",
    persistable: context === "",
  };
}

/** The SNI name for a Host header value (undici's convention): none for IP literals. */
export function servernameFromHost(host: string | undefined): string | undefined {
  if (!host) return undefined;
  let name = host;
  if (name.startsWith("[")) {
    const end = name.indexOf("]");
    name = end === -1 ? name : name.slice(1, end);
  } else {
    const colon = name.indexOf(":");
    if (colon !== -1 && name.indexOf(":", colon + 1) === -1) name = name.slice(0, colon);
  }
  return isIP(name) ? undefined : name;
}
