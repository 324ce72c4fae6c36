// The internal cache's storage: a hash index keyed by (protocol version, session id) plus the
// expiry-ordered doubly linked list of R13. No JS object per session: each entry is one slab slot
// holding a 32-byte record followed by its DER, so a probe or a hit reads one place in memory
// (record, id and bytes are adjacent) and the only other memory per entry is ~4 bytes of hash
// buckets. An entry is named by its slot handle. Ids are not stored apart: the index compares
// them in place inside the stored DER. The [4] session-id context field is cut out of the stored
// bytes (contexts are interned) and put back when the bytes are copied out.
//
// Slot layout (byte offsets): 0 f64 expiresAt | 8 i32 prev | 12 i32 next | 16 i32 chain (next in
// bucket) | 20 u16 DER length | 22 u16 protocol version | 24 u16 context | 26 u8 id offset, u8
// hash tag | 28 u16 cut (where the context field was, 0: not cut) | 30 u16 flags | 32 stored bytes.

import { Buffer } from "node:buffer";
import { ContextTable } from "./contexts.js";
import { CHUNK_SHIFT, CHUNK_SIZE, NO_SLOT, OFFSET_MASK, SLAB_MAX_BYTES, Slab } from "./slab.js";

/** "No entry" in every link. */
export const NIL = NO_SLOT;
/** locateId offsets must fit the record's byte (OpenSSL's DER puts the id within the first ~20). */
export const MAX_ID_OFFSET = 0xff;

// Record fields, as indices relative to (offset >> 2) for i32 and (offset >> 1) for u16.
const PREV = 2;
const NEXT = 3;
const CHAIN = 4;
const LEN = 10;
const VER = 11;
const CTX = 12;
const IDOFF_TAG = 13;
const CUT = 14;
const FLAGS = 15;
/** Bytes of record before the stored DER. */
const DATA = 32;
/** bmeta bit: the bucket holds more than one entry. */
const MORE = 0x100;
/** FLAGS bit: the bytes are in `large`; the slot keeps only the DER up to the end of the id. */
const LARGE = 1;

export interface IndexMemory {
  buckets: number;
  /** Bytes of hash buckets. */
  bucketBytes: number;
  slabChunks: number;
  /** Bytes of slab chunks allocated (in use or free). */
  slabBytes: number;
  /** Bytes of slab slots holding entries (records and DER). */
  slabBytesInUse: number;
  /** Sessions too large for a slot, whose bytes have their own buffer. */
  largeSessions: number;
  largeBytes: number;
  contexts: number;
}

export class PackedIndex {
  /** Latest expiry (R13: head) and earliest (tail: evicted and flushed first). */
  head = NIL;
  tail = NIL;
  count = 0;

  private buckets = new Int32Array(16).fill(NIL);
  /**
   * Per bucket: the hash tag of its first entry (low 8 bits) and whether more entries follow
   * (MORE). A look-up for an absent key then mostly ends here, without reading any slot.
   */
  private bmeta = new Uint16Array(16);
  private mask = 15;
  private readonly slab = new Slab();
  private readonly large = new Map<number, Uint8Array>();
  readonly contexts = new ContextTable();
  /** Per-cache secret words for the hash: clients choose the ids they offer, not their bucket. */
  private readonly key = new Int32Array(10);

  constructor() {
    globalThis.crypto.getRandomValues(this.key);
  }

  /** expiresAt of entry e (R5). */
  expiryOf(e: number): number {
    return this.slab.f64s[e >>> CHUNK_SHIFT][(e & OFFSET_MASK) >> 3];
  }
  /** Protocol version of entry e (half of the key, R4). */
  versionOf(e: number): number {
    return this.slab.u16s[e >>> CHUNK_SHIFT][((e & OFFSET_MASK) >> 1) + VER];
  }
  /** Interned session-id context of entry e. */
  contextOf(e: number): number {
    return this.slab.u16s[e >>> CHUNK_SHIFT][((e & OFFSET_MASK) >> 1) + CTX];
  }
  /** Offset of the session id in entry e's DER. */
  idOffsetOf(e: number): number {
    return this.slab.u16s[e >>> CHUNK_SHIFT][((e & OFFSET_MASK) >> 1) + IDOFF_TAG] & 0xff;
  }
  /** The entry after e towards the tail. */
  nextOf(e: number): number {
    return this.slab.i32s[e >>> CHUNK_SHIFT][((e & OFFSET_MASK) >> 2) + NEXT];
  }

  /**
   * Keyed 32-bit hash of (version, id): two lanes of multiply-rotate over 4-byte words, each word
   * mixed with its own secret word first, then a MurmurHash3-style finalizer. Colliding ids cannot
   * be worked out without the key. Not a cryptographic MAC; stored ids come from OpenSSL's CSPRNG
   * anyway, an attacker only chooses the ids it offers, and those never enter the index unless a
   * store vouches for them.
   */
  hash(b: Uint8Array, off: number, n: number, ver: number): number {
    const k = this.key;
    let a = k[0] ^ ver ^ (n << 16);
    let c = k[9];
    let i = 0;
    let w = 1;
    for (; i + 8 <= n; i += 8, w += 2) {
      const p = off + i;
      a = Math.imul(a ^ (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) ^ k[w], 0x9e3779b1);
      c = Math.imul(
        c ^ (b[p + 4] | (b[p + 5] << 8) | (b[p + 6] << 16) | (b[p + 7] << 24)) ^ k[w + 1],
        0x85ebca77,
      );
      a = (a << 13) | (a >>> 19);
      c = (c << 17) | (c >>> 15);
    }
    let x = 0;
    for (let s = 0; i < n; i++, s = (s + 8) & 31) x ^= b[off + i] << s;
    let h = a ^ Math.imul(c ^ x ^ k[w], 0xc2b2ae3d);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return h ^ (h >>> 16);
  }

  /** The entry for (id, ver), h being hash(id, 0, id.length, ver); NIL if absent. */
  find(id: Uint8Array, ver: number, h: number): number {
    const n = id.length;
    const slab = this.slab;
    // 8 bits of the hash sit in the record: chain entries for other keys are mostly skipped
    // without comparing ids.
    const tagged = h >>> 24;
    const bi = h & this.mask;
    let e = this.buckets[bi];
    if (e === NIL) return NIL;
    const bm = this.bmeta[bi];
    // A single entry with another tag: absent, and no slot read.
    if ((bm & MORE) === 0 && (bm & 0xff) !== tagged) return NIL;
    while (e !== NIL) {
      const c = e >>> CHUNK_SHIFT;
      const o = e & OFFSET_MASK;
      const u16 = slab.u16s[c];
      const m = u16[(o >> 1) + IDOFF_TAG];
      if (m >>> 8 === tagged && u16[(o >> 1) + VER] === ver) {
        const b = slab.u8s[c];
        const p = o + DATA + (m & 0xff);
        if (b[p - 1] === n) {
          let i = 0;
          while (i < n && b[p + i] === id[i]) i++;
          if (i === n) return e;
        }
      }
      e = slab.i32s[c][(o >> 2) + CHAIN];
    }
    return NIL;
  }

  /**
   * Stores a session not already present and returns its entry. idOffset comes from locateId(der)
   * (at most MAX_ID_OFFSET); cut is layout()'s contextField (0: none), and the context there
   * must be the one ctx stands for; ctx is an index already retained for this entry; h is the
   * key's hash.
   */
  insert(
    der: Uint8Array,
    idOffset: number,
    cut: number,
    ver: number,
    ctx: number,
    expiresAt: number,
    h: number,
  ): number {
    if (idOffset > MAX_ID_OFFSET) throw new RangeError("session id too far into the DER");
    const fieldLen = cut === 0 ? 0 : this.contexts.field(ctx).length;
    const stored = der.length - fieldLen;
    const large = DATA + stored > SLAB_MAX_BYTES;
    const slab = this.slab;
    const e = slab.alloc(large ? DATA + idOffset + der[idOffset - 1] : DATA + stored);
    const c = e >>> CHUNK_SHIFT;
    const o = e & OFFSET_MASK;
    const u8 = slab.u8s[c];
    if (large) {
      const own = new Uint8Array(stored);
      writeStored(own, 0, der, cut, fieldLen);
      this.large.set(e, own);
      u8.set(own.subarray(0, idOffset + der[idOffset - 1]), o + DATA);
    } else writeStored(u8, o + DATA, der, cut, fieldLen);
    const u16 = slab.u16s[c];
    const q = o >> 1;
    u16[q + LEN] = der.length;
    u16[q + VER] = ver;
    u16[q + CTX] = ctx;
    u16[q + IDOFF_TAG] = idOffset | ((h >>> 24) << 8);
    u16[q + CUT] = cut;
    u16[q + FLAGS] = large ? LARGE : 0;
    slab.f64s[c][o >> 3] = expiresAt;
    const i32 = slab.i32s[c];
    const bi = h & this.mask;
    const first = this.buckets[bi];
    i32[(o >> 2) + CHAIN] = first;
    this.buckets[bi] = e;
    this.bmeta[bi] = (h >>> 24) | (first === NIL ? 0 : MORE);
    this.link(e, expiresAt);
    if (++this.count > this.buckets.length) this.rehash(this.buckets.length * 2);
    return e;
  }

  /** Takes an entry out of the hash and the list and frees it (its context reference too). */
  remove(e: number): void {
    const slab = this.slab;
    const c = e >>> CHUNK_SHIFT;
    const o = e & OFFSET_MASK;
    const i32 = slab.i32s[c];
    const chain = i32[(o >> 2) + CHAIN];
    const bi = this.hashOf(e) & this.mask;
    let p = this.buckets[bi];
    if (p === e) {
      this.buckets[bi] = chain;
      if (chain !== NIL) {
        this.bmeta[bi] = this.tagOf(chain) | (this.chainOf(chain) === NIL ? 0 : MORE);
      }
    } else {
      const head = p;
      let pc = slab.i32s[p >>> CHUNK_SHIFT];
      let pi = ((p & OFFSET_MASK) >> 2) + CHAIN;
      while (pc[pi] !== e) {
        p = pc[pi];
        pc = slab.i32s[p >>> CHUNK_SHIFT];
        pi = ((p & OFFSET_MASK) >> 2) + CHAIN;
      }
      pc[pi] = chain;
      if (p === head && chain === NIL) this.bmeta[bi] &= ~MORE;
    }
    this.unlink(e);
    const u16 = slab.u16s[c];
    const q = o >> 1;
    const ctx = u16[q + CTX];
    if ((u16[q + FLAGS] & LARGE) !== 0) this.large.delete(e);
    slab.release(e, this.slotSize(e));
    this.contexts.release(ctx);
    this.count--;
  }

  /** Moves an entry to its place for a new expiry (an add of a session already there, R10). */
  relink(e: number, expiresAt: number): void {
    this.unlink(e);
    this.slab.f64s[e >>> CHUNK_SHIFT][(e & OFFSET_MASK) >> 3] = expiresAt;
    this.link(e, expiresAt);
  }

  /**
   * Replaces entry e by a re-encoding of the same session (UPDATE_TIME on a re-add: same key, same
   * context), placed by its new expiry. Returns the new entry.
   */
  replace(e: number, der: Uint8Array, idOffset: number, cut: number, expiresAt: number, h: number): number {
    const ctx = this.contextOf(e);
    const ver = this.versionOf(e);
    this.contexts.retainIndex(ctx);
    this.remove(e);
    return this.insert(der, idOffset, cut, ver, ctx, expiresAt, h);
  }

  /** True when entry e holds exactly these bytes. */
  bytesEqual(e: number, der: Uint8Array): boolean {
    const c = e >>> CHUNK_SHIFT;
    const o = e & OFFSET_MASK;
    const u16 = this.slab.u16s[c];
    const q = o >> 1;
    const n = u16[q + LEN];
    if (der.length !== n) return false;
    let b = this.slab.u8s[c];
    let s = o + DATA;
    if ((u16[q + FLAGS] & LARGE) !== 0) {
      b = this.large.get(e)!;
      s = 0;
    }
    const cut = u16[q + CUT];
    if (cut === 0) {
      for (let i = 0; i < n; i++) if (b[s + i] !== der[i]) return false;
      return true;
    }
    const field = this.contexts.field(u16[q + CTX]);
    const fl = field.length;
    for (let i = 0; i < cut; i++) if (b[s + i] !== der[i]) return false;
    for (let i = 0; i < fl; i++) if (field[i] !== der[cut + i]) return false;
    for (let i = cut + fl; i < n; i++) if (b[s + i - fl] !== der[i]) return false;
    return true;
  }

  /** A fresh copy of an entry's DER: slots are reused, so nothing outside may view the slab. */
  copyBytes(e: number): Buffer {
    const c = e >>> CHUNK_SHIFT;
    const o = e & OFFSET_MASK;
    const u16 = this.slab.u16s[c];
    const q = o >> 1;
    const n = u16[q + LEN];
    let b = this.slab.u8s[c];
    let s = o + DATA;
    if ((u16[q + FLAGS] & LARGE) !== 0) {
      b = this.large.get(e)!;
      s = 0;
    }
    const cut = u16[q + CUT];
    // allocUnsafe takes small buffers from Node's pool: ~6x cheaper than an ArrayBuffer each.
    const out = Buffer.allocUnsafe(n);
    if (cut === 0) {
      out.set(b.subarray(s, s + n));
      return out;
    }
    // The context field goes back where it was cut out; what follows it is short in server
    // sessions (flags, group), where a loop beats making another view.
    out.set(b.subarray(s, s + cut));
    const field = this.contexts.field(u16[q + CTX]);
    out.set(field, cut);
    const rest = cut + field.length;
    if (n - rest > 48) out.set(b.subarray(s + cut, s + n - field.length), rest);
    else for (let i = rest, j = s + cut; i < n; i++, j++) out[i] = b[j];
    return out;
  }

  /** Entries from the head (latest expiry) to the tail. */
  *entries(): Generator<number> {
    for (let e = this.head; e !== NIL; e = this.nextOf(e)) yield e;
  }

  /** Frees all storage. Only valid when empty (context references are released by remove()). */
  reset(): void {
    if (this.count !== 0) throw new Error("PackedIndex.reset on a non-empty index");
    this.head = this.tail = NIL;
    this.buckets = new Int32Array(16).fill(NIL);
    this.bmeta = new Uint16Array(16);
    this.mask = 15;
    this.slab.reset();
    this.large.clear();
  }

  memory(): IndexMemory {
    let largeBytes = 0;
    for (const b of this.large.values()) largeBytes += b.length;
    return {
      buckets: this.buckets.length,
      bucketBytes: this.buckets.byteLength + this.bmeta.byteLength,
      slabChunks: this.slab.chunkCount,
      slabBytes: this.slab.chunkCount * CHUNK_SIZE,
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
    let n = 0;
    let p = NIL;
    for (let e = this.head; e !== NIL; e = this.nextOf(e)) {
      const i32 = this.slab.i32s[e >>> CHUNK_SHIFT];
      if (i32[((e & OFFSET_MASK) >> 2) + PREV] !== p) throw new Error(`index: prev link of ${e} is wrong`);
      if (p !== NIL && this.expiryOf(p) < this.expiryOf(e)) {
        throw new Error(`index: list out of expiry order at ${e}`);
      }
      const id = this.idOf(e);
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
      const first = this.buckets[i];
      if (first !== NIL) {
        const want = this.tagOf(first) | (this.chainOf(first) === NIL ? 0 : MORE);
        if (this.bmeta[i] !== want) throw new Error(`index: bucket ${i} metadata is stale`);
      }
      for (let e = this.buckets[i]; e !== NIL && chained <= this.count; e = this.chainOf(e)) chained++;
    }
    if (chained !== this.count) throw new Error(`index: buckets hold ${chained}, count is ${this.count}`);
  }

  /** A copy of entry e's session id. */
  private idOf(e: number): Uint8Array {
    const o = e & OFFSET_MASK;
    const b = this.slab.u8s[e >>> CHUNK_SHIFT];
    const p = o + DATA + (this.slab.u16s[e >>> CHUNK_SHIFT][(o >> 1) + IDOFF_TAG] & 0xff);
    return b.slice(p, p + b[p - 1]);
  }

  private tagOf(e: number): number {
    return this.slab.u16s[e >>> CHUNK_SHIFT][((e & OFFSET_MASK) >> 1) + IDOFF_TAG] >>> 8;
  }

  private chainOf(e: number): number {
    return this.slab.i32s[e >>> CHUNK_SHIFT][((e & OFFSET_MASK) >> 2) + CHAIN];
  }

  /** The hash of entry e's key, recomputed from the id in its slot. */
  private hashOf(e: number): number {
    const c = e >>> CHUNK_SHIFT;
    const o = e & OFFSET_MASK;
    const u16 = this.slab.u16s[c];
    const b = this.slab.u8s[c];
    const p = o + DATA + (u16[(o >> 1) + IDOFF_TAG] & 0xff);
    return this.hash(b, p, b[p - 1], u16[(o >> 1) + VER]);
  }

  /** The size entry e's slot was allocated with. */
  private slotSize(e: number): number {
    const o = e & OFFSET_MASK;
    const u16 = this.slab.u16s[e >>> CHUNK_SHIFT];
    const q = o >> 1;
    if ((u16[q + FLAGS] & LARGE) !== 0) {
      const idOffset = u16[q + IDOFF_TAG] & 0xff;
      return DATA + idOffset + this.slab.u8s[e >>> CHUNK_SHIFT][o + DATA + idOffset - 1];
    }
    const cut = u16[q + CUT];
    return DATA + u16[q + LEN] - (cut === 0 ? 0 : this.contexts.field(u16[q + CTX]).length);
  }

  /**
   * Puts e in the list by its expiry x: before every entry expiring at or before it, so among
   * equal expiries the newest is nearest the head and the oldest is evicted first (R13, OpenSSL's
   * SSL_SESSION_list_add). O(1) when e expires no earlier than the head (the normal case: clock
   * moving forward, fixed timeout) or before the tail; otherwise a walk from both ends at once,
   * bounded by the entries on the shorter side (OpenSSL walks from the head only).
   */
  private link(e: number, x: number): void {
    const slab = this.slab;
    const i32 = slab.i32s[e >>> CHUNK_SHIFT];
    const r = (e & OFFSET_MASK) >> 2;
    const head = this.head;
    if (head === NIL) {
      i32[r + PREV] = i32[r + NEXT] = NIL;
      this.head = this.tail = e;
      return;
    }
    if (x >= this.expiryOf(head)) {
      i32[r + PREV] = NIL;
      i32[r + NEXT] = head;
      this.setLink(head, PREV, e);
      this.head = e;
      return;
    }
    const tail = this.tail;
    if (x < this.expiryOf(tail)) {
      i32[r + NEXT] = NIL;
      i32[r + PREV] = tail;
      this.setLink(tail, NEXT, e);
      this.tail = e;
      return;
    }
    // Here expiry(head) > x >= expiry(tail): find p, the last entry expiring after x.
    let a = head;
    let b = tail;
    let p: number;
    for (;;) {
      const an = this.getLink(a, NEXT);
      if (this.expiryOf(an) <= x) {
        p = a;
        break;
      }
      a = an;
      const bp = this.getLink(b, PREV);
      if (this.expiryOf(bp) > x) {
        p = bp;
        break;
      }
      b = bp;
    }
    const q = this.getLink(p, NEXT);
    i32[r + PREV] = p;
    i32[r + NEXT] = q;
    this.setLink(p, NEXT, e);
    this.setLink(q, PREV, e);
  }

  private unlink(e: number): void {
    const i32 = this.slab.i32s[e >>> CHUNK_SHIFT];
    const r = (e & OFFSET_MASK) >> 2;
    const p = i32[r + PREV];
    const q = i32[r + NEXT];
    if (p === NIL) this.head = q;
    else this.setLink(p, NEXT, q);
    if (q === NIL) this.tail = p;
    else this.setLink(q, PREV, p);
  }

  private getLink(e: number, field: number): number {
    return this.slab.i32s[e >>> CHUNK_SHIFT][((e & OFFSET_MASK) >> 2) + field];
  }

  private setLink(e: number, field: number, v: number): void {
    this.slab.i32s[e >>> CHUNK_SHIFT][((e & OFFSET_MASK) >> 2) + field] = v;
  }

  private rehash(nb: number): void {
    this.buckets = new Int32Array(nb).fill(NIL);
    this.bmeta = new Uint16Array(nb);
    this.mask = nb - 1;
    for (let e = this.head; e !== NIL; e = this.nextOf(e)) {
      const bi = this.hashOf(e) & this.mask;
      const first = this.buckets[bi];
      this.setLink(e, CHAIN, first);
      this.buckets[bi] = e;
      this.bmeta[bi] = this.tagOf(e) | (first === NIL ? 0 : MORE);
    }
  }
}

/** Writes der without its context field (fieldLen bytes at cut; none when cut is 0) at t[o]. */
function writeStored(t: Uint8Array, o: number, der: Uint8Array, cut: number, fieldLen: number): void {
  if (cut === 0) {
    t.set(der, o);
    return;
  }
  const n = der.length;
  // Views made directly: der.subarray() on a Buffer goes through Node's species constructor.
  t.set(new Uint8Array(der.buffer, der.byteOffset, cut), o);
  if (n - cut - fieldLen > 48) {
    t.set(new Uint8Array(der.buffer, der.byteOffset + cut + fieldLen, n - cut - fieldLen), o + cut);
  } else for (let i = cut + fieldLen, j = o + cut; i < n; i++, j++) t[j] = der[i];
}
