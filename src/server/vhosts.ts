// Virtual hosts (spec R24). A Node server may serve several secure contexts, chosen by SNI
// (`addContext`, an `SNICallback`); Node only swaps the certificate in (UseSNIContext), after
// OpenSSL has already made the session under the server's one session-id context, and a resumption
// never asks for SNI at all. So on its own every virtual host resumes every other's sessions.
//
// Here each connection is handed to Node with a secure context whose session-id context binds the
// virtual host that will serve it: the server's own for its default host, else a copy of the server's
// context (same options, only the session-id context and, with tickets, the ticket keys differ).
// OpenSSL then stamps that binding into each session it makes, checks it on a TLS 1.2 resumption,
// and the cache checks it on every look-up. The copies are few: one per distinct virtual host.
import { createHash, hkdfSync, randomBytes } from "node:crypto";
import tls from "node:tls";
import { bindService, deriveFrom } from "./session-id-context.js";

export interface NativeSecureContext {
  getCertificate(): Buffer | null | undefined;
  getMaxProto?(): number;
  getTicketKeys(): Buffer;
}

/** The parts of Node's tls.Server the adapter reads and, when it must, changes. */
export interface TlsServerInternals extends tls.Server {
  _sharedCreds?: { context: NativeSecureContext };
  _contexts?: [RegExp, NativeSecureContext][];
  secureOptions?: number;
  sessionIdContext?: string;
  ticketKeys?: Buffer;
  requestCert?: boolean;
  rejectUnauthorized?: boolean;
  ca?: unknown;
  pauseOnConnect?: boolean;
  setSecureContext(options: tls.SecureContextOptions): void;
}

// Node's tls.Server keeps its options as own properties (lib/_tls_wrap.js, setSecureContext) and
// builds its one shared SecureContext from them; these are the ones it passes on.
export const SECURE_CONTEXT_FIELDS = [
  "pfx",
  "key",
  "passphrase",
  "cert",
  "clientCertEngine",
  "ca",
  "minVersion",
  "maxVersion",
  "secureProtocol",
  "crl",
  "sigalgs",
  "ciphers",
  "ecdhCurve",
  "dhparam",
  "honorCipherOrder",
  "secureOptions",
  "sessionIdContext",
  "sessionTimeout",
  "ticketKeys",
  "privateKeyIdentifier",
  "privateKeyEngine",
] as const;

type SniAnswer = tls.SecureContext | NativeSecureContext | null | undefined;
type SniCallback = (servername: string, cb: (err: Error | null, ctx?: SniAnswer) => void) => void;

/** Most copies of the server's context kept (one per virtual host; more is a misconfiguration). */
const MAX_COPIES = 256;

export class VirtualHosts {
  /** The binding of the server's own (default) context: its session-id context. */
  defaultBinding = "";
  /** {@link defaultBinding} as bytes, kept: every TLS 1.2 look-up of a single-host server uses it. */
  defaultContext: Uint8Array = new Uint8Array(0);
  /**
   * A binding no session is ever made or resumed under: for a connection whose virtual host could
   * not be told (an SNICallback that failed or took too long, a hello this reader does not
   * understand, `pauseOnConnect`). Random per server; sessions carrying it are never stored.
   */
  readonly unbound = randomBytes(16).toString("hex");
  private readonly sniSymbol: symbol | undefined;
  private bindings = new WeakMap<object, string>();
  private readonly copies = new Map<string, tls.SecureContext>();
  private readonly byteForms = new Map<string, Uint8Array>();
  /**
   * The `ca` option of virtual-host contexts added through `addContext` after attach. Node verifies
   * a client certificate against the selected host's own CA store, and a native context does not
   * say what that is; contexts the adapter did not see being made count the server's `ca`.
   */
  private readonly hostCa = new WeakMap<object, unknown>();

  constructor(
    private readonly srv: TlsServerInternals,
    /** The service context the user gave (explicitly or through the cache), or undefined. */
    private readonly service: string | undefined,
    private readonly tickets: boolean,
    private readonly sniTimeout: number,
  ) {
    this.sniSymbol = Object.getOwnPropertySymbols(srv).find((s) => s.description === "snicallback");
  }

  /** The server picks a context by SNI: it has `addContext` entries or an SNICallback of its own. */
  routes(): boolean {
    return (this.srv._contexts?.length ?? 0) > 0 || this.customSni() !== undefined;
  }

  /**
   * Computes the default host's binding from the server's context as it is now (call again after
   * the context changes; `reset()` first). Throws when there is nothing to derive it from.
   */
  computeDefaultBinding(): string {
    const srv = this.srv;
    if (this.service !== undefined) {
      this.defaultBinding = bindService(this.service, "", srv.requestCert === true, srv.ca);
    } else {
      const cert = srv._sharedCreds?.context.getCertificate();
      if (!cert || cert.length === 0) {
        throw new TypeError(
          "attachSessionCache: the server has no certificate to derive a session-id context from; give sessionIdContext",
        );
      }
      this.defaultBinding = deriveFrom(cert, srv.requestCert === true, srv.ca);
    }
    this.defaultContext = this.bytes(this.defaultBinding);
    return this.defaultBinding;
  }

  /** Forgets derived bindings and copies: the server's context, CA set or ticket keys changed. */
  reset(): void {
    this.bindings = new WeakMap();
    this.copies.clear();
  }

  /**
   * The binding for a connection asking for `serverName`, through `cb`: at once, unless the server
   * has an SNICallback of its own, which is asked as Node will ask it (bounded by `sniTimeout`).
   */
  resolve(serverName: string | undefined, cb: (binding: string) => void): void {
    if (serverName === undefined || serverName === "") {
      cb(this.defaultBinding);
      return;
    }
    const custom = this.customSni();
    if (custom === undefined) {
      cb(this.fromContexts(serverName));
      return;
    }
    let done = false;
    const finish = (binding: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      cb(binding);
    };
    const timer = setTimeout(finish, this.sniTimeout, this.unbound);
    try {
      // Called as Node calls it, with a TLSSocket-like `this` that has the server.
      custom.call({ server: this.srv }, serverName, (err, ctx) => {
        if (err) finish(this.unbound);
        else if (ctx == null) finish(this.defaultBinding);
        else finish(this.bindingOfAnswer(ctx));
      });
    } catch {
      finish(this.unbound);
    }
  }

  /** A binding as the bytes OpenSSL and the cache compare (kept: the same object every time). */
  bytes(binding: string): Uint8Array {
    let b = this.byteForms.get(binding);
    if (b === undefined) {
      b = new Uint8Array(Buffer.from(binding, "utf8"));
      if (this.byteForms.size >= MAX_COPIES * 2) this.byteForms.clear();
      this.byteForms.set(binding, b);
    }
    return b;
  }

  /** A session made under the unbound context (see {@link unbound}). */
  isUnbound(ctx: Uint8Array): boolean {
    const u = this.bytes(this.unbound);
    if (ctx.length !== u.length) return false;
    for (let i = 0; i < u.length; i++) if (ctx[i] !== u[i]) return false;
    return true;
  }

  /** The secure context to hand a connection under `binding` to Node with (undefined: the server's own). */
  contextFor(binding: string): tls.SecureContext | undefined {
    if (binding === this.defaultBinding) return undefined;
    let c = this.copies.get(binding);
    if (c !== undefined) return c;
    const srv = this.srv as unknown as Record<string, unknown>;
    const o: Record<string, unknown> = {};
    for (const f of SECURE_CONTEXT_FIELDS) if (srv[f] !== undefined) o[f] = srv[f];
    o.sessionIdContext = binding;
    // Each virtual host its own ticket keys (derived from the server's): a stateless ticket one
    // host issued does not even decrypt on another (defence in depth beside OpenSSL's own check
    // of the session-id context).
    if (this.tickets) {
      o.ticketKeys = Buffer.from(
        hkdfSync("sha256", this.srv.getTicketKeys(), binding, "sesscache vhost ticket keys", 48),
      );
    }
    c = tls.createSecureContext(o as tls.SecureContextOptions);
    if (this.copies.size >= MAX_COPIES) this.copies.delete(this.copies.keys().next().value as string);
    this.copies.set(binding, c);
    return c;
  }

  /** Records the options a virtual host's context was made from (see `hostCa`). */
  noteHostOptions(native: NativeSecureContext, options: unknown): void {
    // A SecureContext (what tls.createSecureContext returns) keeps its options to itself.
    const isSecureContext = (options as { context?: unknown } | null)?.context != null;
    if (options !== null && typeof options === "object" && !isSecureContext) {
      this.hostCa.set(native, (options as { ca?: unknown }).ca ?? null);
      this.bindings.delete(native);
    }
  }

  private customSni(): SniCallback | undefined {
    if (this.sniSymbol === undefined) return undefined;
    const f = (this.srv as unknown as Record<symbol, unknown>)[this.sniSymbol];
    return typeof f === "function" ? (f as SniCallback) : undefined;
  }

  /** Node's own SNICallback: the last addContext entry whose pattern matches, else the default. */
  private fromContexts(serverName: string): string {
    const contexts = this.srv._contexts ?? [];
    for (let i = contexts.length - 1; i >= 0; i--) {
      const [re, native] = contexts[i];
      if (re.exec(serverName) !== null) return this.bindingOf(native, `sni:${re.source}`);
    }
    return this.defaultBinding;
  }

  private bindingOfAnswer(ctx: NonNullable<SniAnswer>): string {
    const native = (ctx as { context?: NativeSecureContext }).context ?? (ctx as NativeSecureContext);
    if (native === this.srv._sharedCreds?.context) return this.defaultBinding;
    if (typeof native?.getCertificate !== "function") return this.unbound;
    const cert = native.getCertificate();
    if (!cert || cert.length === 0) return this.unbound;
    return this.bindingOf(native, `cert:${createHash("sha256").update(cert).digest("hex")}`);
  }

  /**
   * A virtual host's binding. Without a service context: the default derivation over the host's
   * certificate (a host is its certificate, as for nginx). With one: the service, how the host was
   * selected (its addContext pattern, or its certificate for an SNICallback's answer) and the client
   * CA set, so hosts of one service stay apart while every machine serving them agrees.
   */
  private bindingOf(native: NativeSecureContext, vhost: string): string {
    let b = this.bindings.get(native);
    if (b !== undefined) return b;
    const srv = this.srv;
    const cert = native.getCertificate();
    if (!cert || cert.length === 0) return this.unbound;
    let ca: unknown;
    if (this.hostCa.has(native)) ca = this.hostCa.get(native) ?? undefined;
    else if (srv.requestCert === true) {
      // Client certificates are verified against this host's own CA set, which nothing here can
      // read (a ready-made SecureContext, one added before attach, an SNICallback's answer). Two
      // such hosts may share a certificate and differ only there: a random value per context
      // keeps each apart, at the price of its sessions resuming in this process only.
      b = bindService(randomBytes(16).toString("hex"), vhost, true, undefined);
      this.bindings.set(native, b);
      return b;
    } else ca = srv.ca;
    if (this.service !== undefined) {
      // The certificate too: hosts sharing a pattern over time (addContext again) stay apart.
      const fp = createHash("sha256").update(cert).digest("hex");
      b = bindService(this.service, `${vhost}\0${fp}`, srv.requestCert === true, ca);
    } else {
      b = deriveFrom(cert, srv.requestCert === true, ca);
    }
    this.bindings.set(native, b);
    return b;
  }
}
