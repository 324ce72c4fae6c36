// The Session the internal cache hands out (look-up hits, remove callbacks, sessions()). Its bytes
// are a fresh copy of the stored DER, which was decoded and checked when it went in; what the hot
// path needs (der, protocolVersion, expiresAt) is known from the index, and everything else is
// decoded from the copy on first access. A hit handed straight to Node's resumeSession therefore
// costs one copy, not a decode. The copy comes from Buffer's shared pool (an own ArrayBuffer per
// hit costs ~6x more): a session kept for long keeps that 8 KiB pool block alive, as any small
// Buffer does.
import type { InspectOptionsStylized, inspect as utilInspect } from "node:util";
import { SslSession } from "../session/index.js";
import type { Session } from "../session/types.js";

export class CachedSession implements Session {
  readonly der: Uint8Array;
  readonly protocolVersion: number;
  readonly expiresAt: number;
  #idOffset: number;
  #id: Uint8Array | undefined;
  #decoded: SslSession | undefined;

  /** idOffset: where the session id starts in der (its length is the byte before). */
  constructor(der: Uint8Array, protocolVersion: number, expiresAt: number, idOffset: number) {
    this.der = der;
    this.protocolVersion = protocolVersion;
    this.expiresAt = expiresAt;
    this.#idOffset = idOffset;
  }

  /** The full decode, done once on first use. */
  get decoded(): SslSession {
    let d = this.#decoded;
    if (d === undefined) {
      d = new SslSession(this.der);
      this.#decoded = d;
    }
    return d;
  }

  /** Known without decoding: adapters check it on every hit. */
  get id(): Uint8Array {
    let id = this.#id;
    if (id === undefined) {
      const d = this.der;
      const o = this.#idOffset;
      // A view made directly: subarray() on a Buffer goes through Node's species constructor.
      id = new Uint8Array(d.buffer, d.byteOffset + o, d[o - 1]);
      this.#id = id;
    }
    return id;
  }
  get protocol(): string {
    return this.decoded.protocol;
  }
  get cipherId(): number {
    return this.decoded.cipherId;
  }
  get cipherName(): string | undefined {
    return this.decoded.cipherName;
  }
  get time(): number {
    return this.decoded.time;
  }
  get timeout(): number {
    return this.decoded.timeout;
  }
  get sessionIdContext(): Uint8Array {
    return this.decoded.sessionIdContext;
  }
  get peerCertificate(): Uint8Array | undefined {
    return this.decoded.peerCertificate;
  }
  get verifyResult(): number {
    return this.decoded.verifyResult;
  }
  get hostname(): string | undefined {
    return this.decoded.hostname;
  }
  get ticket(): Uint8Array | undefined {
    return this.decoded.ticket;
  }
  get ticketLifetimeHint(): number | undefined {
    return this.decoded.ticketLifetimeHint;
  }
  get ticketAgeAdd(): number | undefined {
    return this.decoded.ticketAgeAdd;
  }
  get alpn(): string | undefined {
    return this.decoded.alpn;
  }
  get extendedMasterSecret(): boolean {
    return this.decoded.extendedMasterSecret;
  }
  get maxEarlyData(): number {
    return this.decoded.maxEarlyData;
  }
  get group(): number | undefined {
    return this.decoded.group;
  }

  /** R5: expired only strictly after time + timeout. */
  isExpiredAt(t: number): boolean {
    return t > this.expiresAt;
  }

  // The summary without the master secret, exactly as SslSession shows it.
  toJSON(): ReturnType<SslSession["toJSON"]> {
    return this.decoded.toJSON();
  }

  toString(): string {
    return this.decoded.toString();
  }

  [Symbol.for("nodejs.util.inspect.custom")](
    _depth: number,
    options: InspectOptionsStylized,
    inspect: typeof utilInspect,
  ): string {
    return inspect(this.decoded, options);
  }
}
