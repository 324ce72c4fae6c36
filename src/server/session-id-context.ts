// Session-id contexts for Node servers: the default derivation (as nginx does since CVE-2014-3616),
// the per-virtual-host binding (spec R24), and the server options attach wants. The adapter and the
// virtual-host selector both use these; neither owns them.
import { createHash, constants as cryptoConstants, X509Certificate } from "node:crypto";

export const SSL_OP_NO_TICKET: number = cryptoConstants.SSL_OP_NO_TICKET;
const MAX_SID_CTX_BYTES = 32;

/** What the default session-id context is derived from (see {@link defaultSessionIdContext}). */
export interface SessionIdContextSource {
  /** The server certificate: PEM (its first certificate, the leaf, is used) or DER. */
  cert: string | Uint8Array;
  /** The server asks clients for certificates. */
  requestCert?: boolean;
  /** The server's `ca` option (only used with requestCert). */
  ca?: string | Uint8Array | (string | Uint8Array)[];
}

/**
 * The session-id context {@link attachSessionCache} uses when neither the options nor the cache give
 * one, as nginx does: the first 32 hex digits of SHA-256 over a version tag, the server certificate's
 * DER and, when client certificates are requested, the `ca` option (so services with different
 * client-auth policies never resume each other's sessions). The same certificate gives the same
 * context in every process and on every machine. Pass it to {@link statefulServerOptions} (or give
 * `cert` there) to create a server that attach need not change.
 */
export function defaultSessionIdContext(src: SessionIdContextSource): string {
  let der: Uint8Array;
  if (typeof src.cert === "string" || isPem(src.cert)) der = new X509Certificate(src.cert).raw;
  else der = src.cert;
  return deriveFrom(der, src.requestCert === true, src.ca);
}

function isPem(b: Uint8Array): boolean {
  return b.length > 10 && Buffer.from(b.buffer, b.byteOffset, Math.min(b.length, 64)).includes("-----BEGIN");
}

/** The default derivation: certificate, and the client CA set when client certificates are asked. */
export function deriveFrom(certDer: Uint8Array, requestCert: boolean, ca: unknown): string {
  const h = createHash("sha256").update("sesscache sid_ctx v1\0").update(certDer);
  if (requestCert) hashClientAuth(h, ca);
  return h.digest("hex").slice(0, 32);
}

/**
 * R24 with an explicit service context: the service's context, the virtual host (how it was
 * selected: `""` for the server's default context) and the client CA set when client certificates
 * are asked. The default host without client authentication keeps the service context as given, so
 * a single-host service's sessions carry exactly the context its operator chose.
 */
export function bindService(service: string, vhost: string, requestCert: boolean, ca: unknown): string {
  if (vhost === "" && !requestCert) return service;
  const h = createHash("sha256").update("sesscache vhost v1\0").update(service).update("\0").update(vhost);
  if (requestCert) hashClientAuth(h, ca);
  return h.digest("hex").slice(0, 32);
}

function hashClientAuth(h: ReturnType<typeof createHash>, ca: unknown): void {
  h.update("\0client-auth\0");
  const cas = ca === undefined ? [] : Array.isArray(ca) ? ca : [ca];
  for (const c of cas) {
    if (typeof c === "string" || c instanceof Uint8Array) h.update(c);
    h.update("\0");
  }
}

/** A session-id context as the string Node takes (its UTF-8 bytes are what OpenSSL gets). */
export function contextString(ctx: string | Uint8Array, what: string): string {
  let s: string;
  let n: number;
  if (typeof ctx === "string") {
    s = ctx;
    n = Buffer.byteLength(s, "utf8");
  } else if (ctx instanceof Uint8Array) {
    try {
      s = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(ctx);
    } catch {
      throw new RangeError(`${what} must be valid UTF-8: Node passes the session-id context as a string`);
    }
    n = ctx.length;
  } else {
    throw new TypeError(`${what} must be a string or a Uint8Array`);
  }
  // Node treats an empty context as "none" and falls back to a hash of process.argv.
  if (n < 1 || n > MAX_SID_CTX_BYTES) throw new RangeError(`${what} must be 1..32 bytes, got ${n}`);
  return s;
}

export interface StatefulServerOptions {
  secureOptions?: number;
  sessionIdContext?: string;
}

/**
 * Options to spread into `tls.createServer`, `https.createServer` or `http2.createSecureServer` so
 * the server is created as {@link attachSessionCache} wants it, instead of attach rebuilding its
 * secure context: `secureOptions` with `SSL_OP_NO_TICKET` (unless `tickets`) OR-ed into the given
 * `secureOptions`, and `sessionIdContext`: the one given, or else, when `cert` is given, the default
 * attach derives from it ({@link defaultSessionIdContext}). Spread it after your own options, or
 * pass your `secureOptions` here:
 *
 * ```ts
 * const server = https.createServer({ key, cert, ...statefulServerOptions({ sessionIdContext: "shop" }) });
 * attachSessionCache(server, cache, { sessionIdContext: "shop" });
 * // or, with the default context derived from the certificate:
 * const server2 = https.createServer({ key, cert, ...statefulServerOptions({ cert }) });
 * attachSessionCache(server2, new SessionCache());
 * ```
 *
 * With `requestCert`, pass it and `ca` here too: the context then covers the client CA set.
 */
export function statefulServerOptions(
  opts: {
    tickets?: boolean;
    sessionIdContext?: string;
    secureOptions?: number;
    /** Derive the default context from this certificate (and requestCert/ca) when none is given. */
    cert?: SessionIdContextSource["cert"];
    requestCert?: boolean;
    ca?: SessionIdContextSource["ca"];
  } = {},
): StatefulServerOptions {
  const out: StatefulServerOptions = {};
  let secureOptions = opts.secureOptions ?? 0;
  if (!opts.tickets) secureOptions |= SSL_OP_NO_TICKET;
  if (secureOptions !== 0) out.secureOptions = secureOptions;
  const requestCert = opts.requestCert === true;
  if (opts.sessionIdContext !== undefined) {
    const service = contextString(opts.sessionIdContext, "sessionIdContext");
    out.sessionIdContext = bindService(service, "", requestCert, opts.ca);
  } else if (opts.cert !== undefined) {
    out.sessionIdContext = defaultSessionIdContext({ cert: opts.cert, requestCert, ca: opts.ca });
  }
  return out;
}
