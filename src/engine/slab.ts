// A slab allocator for session DER bytes. One Buffer per session costs ~1 KB of V8 and allocator
// overhead for a ~160-byte payload; packing the bytes into 256 KiB chunks costs the payload rounded
// up to 16 bytes. Slots are size-classed (16-byte grain) with one free list per class, threaded
// through the free slots themselves, so alloc and free are O(1) and need no side memory.

const CHUNK_SHIFT = 18;
/** Bytes per chunk (256 KiB). */
export const CHUNK_SIZE = 1 << CHUNK_SHIFT;
const OFFSET_MASK = CHUNK_SIZE - 1;
const GRAIN_SHIFT = 4;
/** Largest blob kept in the slab; bigger ones (rare: client sessions with certificate chains) get their own buffer. */
export const SLAB_MAX_BYTES = 4096;
const CLASSES = (SLAB_MAX_BYTES >> GRAIN_SHIFT) + 1;
/** A handle is chunk * CHUNK_SIZE + offset in a u32, so at most 2^32 bytes of chunks. */
const MAX_CHUNKS = 2 ** (32 - CHUNK_SHIFT);
/** Never a valid handle: offsets are multiples of 16. */
export const NO_SLOT = 0xffffffff;

export class Slab {
  /** The chunks; a handle h lives in chunks[h >>> 18] at offset h & 0x3ffff. */
  chunks: Uint8Array[] = [];
  /** Next unused byte in the last chunk. */
  private bump = CHUNK_SIZE;
  /** Head of each size class's free list (a handle, or NO_SLOT). */
  private readonly free = new Uint32Array(CLASSES).fill(NO_SLOT);
  /** Bytes handed out in slots (rounded sizes), for memoryUsage(). */
  bytesInUse = 0;

  /** Rounded slot size for a blob of len bytes. */
  static slotSize(len: number): number {
    return ((len + 15) >> GRAIN_SHIFT) << GRAIN_SHIFT;
  }

  /** A slot for len bytes (1..SLAB_MAX_BYTES). */
  alloc(len: number): number {
    const cls = (len + 15) >> GRAIN_SHIFT;
    const size = cls << GRAIN_SHIFT;
    this.bytesInUse += size;
    const h = this.free[cls];
    if (h !== NO_SLOT) {
      this.free[cls] = this.readLink(h);
      return h;
    }
    if (this.bump + size > CHUNK_SIZE) this.newChunk();
    const out = (this.chunks.length - 1) * CHUNK_SIZE + this.bump;
    this.bump += size;
    return out;
  }

  /** Gives a slot back; len is the blob length it was allocated for. */
  release(h: number, len: number): void {
    const cls = (len + 15) >> GRAIN_SHIFT;
    this.bytesInUse -= cls << GRAIN_SHIFT;
    this.pushFree(h, cls);
  }

  /** Drops every chunk (the cache is empty). */
  reset(): void {
    this.chunks = [];
    this.bump = CHUNK_SIZE;
    this.free.fill(NO_SLOT);
    this.bytesInUse = 0;
  }

  private newChunk(): void {
    if (this.chunks.length >= MAX_CHUNKS) throw new RangeError("session cache slab is full (4 GiB)");
    // The unused tail of the old chunk becomes one free slot of its size, so nothing is lost.
    const rest = CHUNK_SIZE - this.bump;
    if (this.chunks.length > 0 && rest >= 16) {
      this.pushFree(
        (this.chunks.length - 1) * CHUNK_SIZE + this.bump,
        Math.min(rest >> GRAIN_SHIFT, CLASSES - 1),
      );
    }
    this.chunks.push(new Uint8Array(CHUNK_SIZE));
    this.bump = 0;
  }

  private pushFree(h: number, cls: number): void {
    const link = this.free[cls];
    const c = this.chunks[h >>> CHUNK_SHIFT];
    const o = h & OFFSET_MASK;
    c[o] = link & 0xff;
    c[o + 1] = (link >>> 8) & 0xff;
    c[o + 2] = (link >>> 16) & 0xff;
    c[o + 3] = link >>> 24;
    this.free[cls] = h;
  }

  private readLink(h: number): number {
    const c = this.chunks[h >>> CHUNK_SHIFT];
    const o = h & OFFSET_MASK;
    return (c[o] | (c[o + 1] << 8) | (c[o + 2] << 16) | (c[o + 3] << 24)) >>> 0;
  }
}
