// The internal cache's storage: a hash index keyed by (protocol version, session id) plus the
// expiry-ordered doubly linked list of R13, both over entry numbers into parallel typed arrays.
// No JS object per session: an entry costs a 32-byte record, ~4 bytes of hash buckets and its DER
// rounded up to 16 bytes in the slab. Ids are not stored apart: the index compares them in place
// inside the stored DER.

import { Buffer } from "node:buffer";
import { ContextTable } from "./contexts.js";
import { NO_SLOT, SLAB_MAX_BYTES, Slab } from "./slab.js";

/** "No entry" in every link array. */
export const NIL = -1;
/** The handle of a session kept in its own buffer (records hold handles as int32). */
const LARGE = NO_SLOT | 0;
const CHUNK_SHIFT = 18;
const OFFSET_MASK = (1 << CHUNK_SHIFT) - 1;

export interface IndexMemory {
  /** Entries the metadata arrays have room for. */
  capacity: number;
  buckets: number;
  /** Bytes of typed arrays for metadata and buckets. */
  metadataBytes: number;
  slabChunks: number;
  /** Bytes of slab chunks allocated (in use or free). */
  slabBytes: number;
  /** Bytes of slab slots holding sessions. */
  slabBytesInUse: number;
  /** Sessions too large for the slab, each in its own buffer. */
  largeSessions: number;
  largeBytes: number;
  contexts: number;
}

// Entry record, 32 bytes (array of structs, so that a probe, a hit or a list step touches one
// cache line rather than one per field): f64 expiry, i32 prev, next, chain, handle, then u16
// len, idOff | tag << 8, ver, ctx.
const REC_F64 = 4;
const REC_I32 = 8;
const REC_U16 = 16;
const PREV = 2;
const NEXT = 3;
const CHAIN = 4;
const HANDLE = 5;
const LEN = 12;
const IDOFF_TAG = 13;
const VER = 14;
const CTX = 15;
/** Bytes per entry record. */
const RECORD_BYTES = 32;
/** locateId offsets must fit the record's byte (OpenSSL's DER puts the id within the first ~20). */
export const MAX_ID_OFFSET = 0xff;

export class PackedIndex {
  /** Latest expiry (R13: head) and earliest (tail: evicted and flushed first). */
  head = NIL;
  tail = NIL;
  count = 0;
  /** Entries the next growth aims at (the cache size), so a bounded cache never over-allocates. */
  capacityHint = 0;

  private cap = 0;
  /** Entries ever handed out; entries >= used are untouched. */
  private used = 0;
  /** Free entries, linked through NEXT. */
  private freeEntry = NIL;
  /** Three views of the same records. */
  private f64 = new Float64Array(0);
  private i32 = new Int32Array(0);
  private u16 = new Uint16Array(0);

  private buckets = new Int32Array(1).fill(NIL);
  private mask = 0;
  private readonly slab = new Slab();
  private readonly large = new Map<number, Uint8Array>();
  readonly contexts = new ContextTable();
  /** Per-cache secret words for the hash: clients choose the ids they offer, not their bucket. */
  private readonly key = new Int32Array(10);
  /** Offset of the bytes returned by the last bytesOf(). */
  private at = 0;

  constructor() {
    globalThis.crypto.getRandomValues(this.key);
  }

  /** expiresAt of entry e (R5). */
  expiryOf(e: number): number {
    return this.f64[e * REC_F64];
  }
  /** Protocol version of entry e (half of the key, R4). */
  versionOf(e: number): number {
    return this.u16[e * REC_U16 + VER];
  }
  /** Interned session-id context of entry e. */
  contextOf(e: number): number {
    return this.u16[e * REC_U16 + CTX];
  }
  /** The entry after e towards the tail. */
  nextOf(e: number): number {
    return this.i32[e * REC_I32 + NEXT];
  }

  /**
   * Seeded, keyed 32-bit hash of (version, id) in the style of MurmurHash3: each 4-byte word is
   * mixed with its own secret word before the multiply, so colliding ids cannot be worked out
   * offline. Not a cryptographic MAC; stored ids come from OpenSSL's CSPRNG anyway, an attacker
   * only chooses the ids it offers, and those never enter the index unless a store vouches for them.
   */
  hash(b: Uint8Array, off: number, n: number, ver: number): number {
    const k = this.key;
    let h = k[0] ^ Math.imul(ver | (n << 16), 0x85ebca6b);
    let i = 0;
    let w = 1;
    for (; i + 4 <= n; i += 4, w++) {
      let x = (b[off + i] | (b[off + i + 1] << 8) | (b[off + i + 2] << 16) | (b[off + i + 3] << 24)) ^ k[w];
      x = Math.imul(x, 0xcc9e2d51);
      x = (x << 15) | (x >>> 17);
      h ^= Math.imul(x, 0x1b873593);
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    }
    if (i < n) {
      let x = k[w];
      for (let s = 0; i < n; i++, s += 8) x ^= b[off + i] << s;
      x = Math.imul(x, 0xcc9e2d51);
      x = (x << 15) | (x >>> 17);
      h ^= Math.imul(x, 0x1b873593);
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return h ^ (h >>> 16);
  }

  /** The entry for (id, ver), h being hash(id, 0, id.length, ver); NIL if absent. */
  find(id: Uint8Array, ver: number, h: number): number {
    const n = id.length;
    const i32 = this.i32;
    const u16 = this.u16;
    // The record holds 8 bits of the hash next to the id offset: chain entries for other keys are
    // skipped without reading their DER (another cache line).
    const tagged = h >>> 24;
    let e = this.buckets[h & this.mask];
    while (e !== NIL) {
      const r = e * REC_U16;
      const m = u16[r + IDOFF_TAG];
      if (m >>> 8 === tagged && u16[r + VER] === ver) {
        const b = this.bytesOf(e);
        const o = this.at + (m & 0xff);
        if (b[o - 1] === n) {
          let i = 0;
          while (i < n && b[o + i] === id[i]) i++;
          if (i === n) return e;
        }
      }
      e = i32[e * REC_I32 + CHAIN];
    }
    return NIL;
  }

  /**
   * Stores a session not already present. idOffset comes from locateId(der) (at most
   * MAX_ID_OFFSET); ctx is an index already retained for this entry; h is the key's hash.
   */
  insert(der: Uint8Array, idOffset: number, ver: number, ctx: number, expiresAt: number, h: number): number {
    if (idOffset > MAX_ID_OFFSET) throw new RangeError("session id too far into the DER");
    const handle = this.storeBytes(der);
    let e: number;
    try {
      e = this.allocEntry();
    } catch (err) {
      this.dropBytes(handle, der.length, NIL);
      throw err;
    }
    if (handle === LARGE) this.large.set(e, der.slice());
    const r = e * REC_I32;
    const q = e * REC_U16;
    this.i32[r + HANDLE] = handle;
    this.u16[q + LEN] = der.length;
    this.u16[q + IDOFF_TAG] = idOffset | ((h >>> 24) << 8);
    this.u16[q + VER] = ver;
    this.u16[q + CTX] = ctx;
    this.f64[e * REC_F64] = expiresAt;
    const bi = h & this.mask;
    this.i32[r + CHAIN] = this.buckets[bi];
    this.buckets[bi] = e;
    this.link(e);
    this.count++;
    return e;
  }

  /** Takes an entry out of the hash and the list and frees its storage (its context reference too). */
  remove(e: number): void {
    const i32 = this.i32;
    const r = e * REC_I32;
    const bi = this.rehashOf(e) & this.mask;
    let p = this.buckets[bi];
    if (p === e) this.buckets[bi] = i32[r + CHAIN];
    else {
      while (i32[p * REC_I32 + CHAIN] !== e) p = i32[p * REC_I32 + CHAIN];
      i32[p * REC_I32 + CHAIN] = i32[r + CHAIN];
    }
    this.unlink(e);
    this.dropBytes(i32[r + HANDLE], this.u16[e * REC_U16 + LEN], e);
    this.contexts.release(this.u16[e * REC_U16 + CTX]);
    i32[r + NEXT] = this.freeEntry;
    i32[r + PREV] = NIL;
    this.freeEntry = e;
    this.count--;
  }

  /** Moves an entry to its place for a new expiry (an add of a session already there, R10). */
  relink(e: number, expiresAt: number): void {
    this.unlink(e);
    this.f64[e * REC_F64] = expiresAt;
    this.link(e);
  }

  /** Replaces an entry's bytes by a re-encoding of the same key (UPDATE_TIME on a re-add). */
  replaceBytes(e: number, der: Uint8Array, idOffset: number): void {
    if (idOffset > MAX_ID_OFFSET) throw new RangeError("session id too far into the DER");
    const r = e * REC_I32;
    const q = e * REC_U16;
    const handle = this.storeBytes(der);
    // Dropped first: the old bytes may be e's own large buffer.
    this.dropBytes(this.i32[r + HANDLE], this.u16[q + LEN], e);
    if (handle === LARGE) this.large.set(e, der.slice());
    this.i32[r + HANDLE] = handle;
    this.u16[q + LEN] = der.length;
    this.u16[q + IDOFF_TAG] = idOffset | (this.u16[q + IDOFF_TAG] & 0xff00);
  }

  /** True when entry e holds exactly these bytes. */
  bytesEqual(e: number, der: Uint8Array): boolean {
    const n = this.u16[e * REC_U16 + LEN];
    if (der.length !== n) return false;
    const b = this.bytesOf(e);
    const o = this.at;
    for (let i = 0; i < n; i++) if (b[o + i] !== der[i]) return false;
    return true;
  }

  /** A fresh copy of an entry's DER: slots are reused, so nothing outside may view the slab. */
  copyBytes(e: number): Buffer {
    const n = this.u16[e * REC_U16 + LEN];
    const b = this.bytesOf(e);
    const o = this.at;
    // allocUnsafe takes small buffers from Node's pool: ~6x cheaper than an ArrayBuffer each.
    const out = Buffer.allocUnsafe(n);
    out.set(b.subarray(o, o + n));
    return out;
  }

  /** Entries from the head (latest expiry) to the tail. */
  *entries(): Generator<number> {
    for (let e = this.head; e !== NIL; e = this.i32[e * REC_I32 + NEXT]) yield e;
  }

  /** Frees all storage. Only valid when empty (context references are released by remove()). */
  reset(): void {
    if (this.count !== 0) throw new Error("PackedIndex.reset on a non-empty index");
    this.head = this.tail = this.freeEntry = NIL;
    this.cap = this.used = 0;
    this.f64 = new Float64Array(0);
    this.i32 = new Int32Array(0);
    this.u16 = new Uint16Array(0);
    this.buckets = new Int32Array(1).fill(NIL);
    this.mask = 0;
    this.slab.reset();
    this.large.clear();
  }

  memory(): IndexMemory {
    let largeBytes = 0;
    for (const b of this.large.values()) largeBytes += b.length;
    return {
      capacity: this.cap,
      buckets: this.buckets.length,
      metadataBytes: this.cap * RECORD_BYTES + this.buckets.byteLength,
      slabChunks: this.slab.chunks.length,
      slabBytes: this.slab.chunks.length * (1 << CHUNK_SHIFT),
      slabBytesInUse: this.slab.bytesInUse,
      largeSessions: this.large.size,
      largeBytes,
      contexts: this.contexts.size,
    };
  }

  /**
   * Checks every invariant (for tests): list order and links, count, each entry reachable through
   * its bucket, bucket chains holding exactly the live entries. Throws on the first violation.
   */
  verify(): void {
    const i32 = this.i32;
    let n = 0;
    let p = NIL;
    for (let e = this.head; e !== NIL; e = i32[e * REC_I32 + NEXT]) {
      if (i32[e * REC_I32 + PREV] !== p) throw new Error(`index: prev link of ${e} is wrong`);
      if (p !== NIL && this.expiryOf(p) < this.expiryOf(e)) {
        throw new Error(`index: list out of expiry order at ${e}`);
      }
      const b = this.bytesOf(e);
      const o = this.at + (this.u16[e * REC_U16 + IDOFF_TAG] & 0xff);
      const id = b.slice(o, o + b[o - 1]);
      const ver = this.versionOf(e);
      if (this.find(id, ver, this.hash(id, 0, id.length, ver)) !== e) {
        throw new Error(`index: entry ${e} not found through its bucket`);
      }
      p = e;
      if (++n > this.count) throw new Error("index: list longer than count (cycle?)");
    }
    if (p !== this.tail) throw new Error("index: tail is not the last entry");
    if (n !== this.count) throw new Error(`index: list holds ${n}, count is ${this.count}`);
    let chained = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      for (let e = this.buckets[i]; e !== NIL && chained <= this.count; e = i32[e * REC_I32 + CHAIN])
        chained++;
    }
    if (chained !== this.count) throw new Error(`index: buckets hold ${chained}, count is ${this.count}`);
    let free = 0;
    for (let e = this.freeEntry; e !== NIL && free <= this.used; e = i32[e * REC_I32 + NEXT]) free++;
    if (free + this.count !== this.used) {
      throw new Error(`index: ${free} free + ${this.count} live entries, ${this.used} handed out`);
    }
  }

  /** Bytes of entry e; they start at this.at. */
  private bytesOf(e: number): Uint8Array {
    const h = this.i32[e * REC_I32 + HANDLE];
    if (h === LARGE) {
      this.at = 0;
      return this.large.get(e)!;
    }
    this.at = h & OFFSET_MASK;
    return this.slab.chunks[h >>> CHUNK_SHIFT];
  }

  /** The hash of entry e's key, recomputed from its stored id. */
  private rehashOf(e: number): number {
    const b = this.bytesOf(e);
    const o = this.at + (this.u16[e * REC_U16 + IDOFF_TAG] & 0xff);
    return this.hash(b, o, b[o - 1], this.u16[e * REC_U16 + VER]);
  }

  /** A slab slot holding der, or LARGE (the caller keeps its own copy). */
  private storeBytes(der: Uint8Array): number {
    if (der.length > SLAB_MAX_BYTES) return LARGE;
    const s = this.slab.alloc(der.length);
    this.slab.chunks[s >>> CHUNK_SHIFT].set(der, s & OFFSET_MASK);
    // Stored as an int32: handles above 2^31 read back negative, and >>> / & undo that.
    return s | 0;
  }

  private dropBytes(handle: number, len: number, e: number): void {
    if (handle === LARGE) {
      if (e !== NIL) this.large.delete(e);
    } else this.slab.release(handle >>> 0, len);
  }

  /**
   * Puts e in the list by its expiry: before every entry expiring at or before it, so among equal
   * expiries the newest is nearest the head and the oldest is evicted first (R13, OpenSSL's
   * SSL_SESSION_list_add). O(1) when e expires no earlier than the head (the normal case: clock
   * moving forward, fixed timeout) or before the tail; otherwise a walk from both ends at once,
   * bounded by the entries on the shorter side (OpenSSL walks from the head only).
   */
  private link(e: number): void {
    const i32 = this.i32;
    const f64 = this.f64;
    const x = f64[e * REC_F64];
    const re = e * REC_I32;
    const head = this.head;
    const tail = this.tail;
    if (head === NIL) {
      i32[re + PREV] = i32[re + NEXT] = NIL;
      this.head = this.tail = e;
      return;
    }
    if (x > f64[head * REC_F64]) {
      i32[re + PREV] = NIL;
      i32[re + NEXT] = head;
      i32[head * REC_I32 + PREV] = e;
      this.head = e;
      return;
    }
    if (x < f64[tail * REC_F64]) {
      i32[re + NEXT] = NIL;
      i32[re + PREV] = tail;
      i32[tail * REC_I32 + NEXT] = e;
      this.tail = e;
      return;
    }
    // Here expiry(head) > x >= expiry(tail): find p, the last entry expiring after x.
    let a = head;
    let b = tail;
    let p: number;
    for (;;) {
      const an = i32[a * REC_I32 + NEXT];
      if (f64[an * REC_F64] <= x) {
        p = a;
        break;
      }
      a = an;
      const bp = i32[b * REC_I32 + PREV];
      if (f64[bp * REC_F64] > x) {
        p = bp;
        break;
      }
      b = bp;
    }
    const q = i32[p * REC_I32 + NEXT];
    i32[re + PREV] = p;
    i32[re + NEXT] = q;
    i32[p * REC_I32 + NEXT] = e;
    i32[q * REC_I32 + PREV] = e;
  }

  private unlink(e: number): void {
    const i32 = this.i32;
    const p = i32[e * REC_I32 + PREV];
    const q = i32[e * REC_I32 + NEXT];
    if (p === NIL) this.head = q;
    else i32[p * REC_I32 + NEXT] = q;
    if (q === NIL) this.tail = p;
    else i32[q * REC_I32 + PREV] = p;
  }

  private allocEntry(): number {
    const e = this.freeEntry;
    if (e !== NIL) {
      this.freeEntry = this.i32[e * REC_I32 + NEXT];
      return e;
    }
    if (this.used === this.cap) this.grow();
    return this.used++;
  }

  private grow(): void {
    const old = this.cap;
    let cap = old === 0 ? 64 : old * 2;
    // Grow straight to the configured size rather than past it: a full bounded cache wastes nothing.
    if (this.capacityHint > old && this.capacityHint < cap) cap = this.capacityHint;
    const buf = new ArrayBuffer(cap * RECORD_BYTES);
    const i32 = new Int32Array(buf);
    i32.set(this.i32);
    this.i32 = i32;
    this.f64 = new Float64Array(buf);
    this.u16 = new Uint16Array(buf);
    this.cap = cap;
    let nb = 16;
    while (nb < cap) nb *= 2;
    if (nb !== this.buckets.length) this.rehash(nb);
  }

  private rehash(nb: number): void {
    this.buckets = new Int32Array(nb).fill(NIL);
    this.mask = nb - 1;
    const i32 = this.i32;
    for (let e = this.head; e !== NIL; e = i32[e * REC_I32 + NEXT]) {
      const bi = this.rehashOf(e) & this.mask;
      i32[e * REC_I32 + CHAIN] = this.buckets[bi];
      this.buckets[bi] = e;
    }
  }
}
