// A slab allocator for the cache's entries. One Buffer per session costs ~1 KB of V8 and allocator
// overhead for a ~160-byte payload; packing entries into 256 KiB chunks costs the payload rounded
// up to 16 bytes. Slots are size-classed (16-byte grain) with one free list per class, threaded
// through the free slots themselves, so alloc and free are O(1) and need no side memory. Each
// chunk is seen through u8, u16, i32 and f64 views so that entry records can live in the slots.

export const CHUNK_SHIFT = 18;
/** Bytes per chunk (256 KiB). */
export const CHUNK_SIZE = 1 << CHUNK_SHIFT;
export const OFFSET_MASK = CHUNK_SIZE - 1;
const GRAIN_SHIFT = 4;
/** Largest slot; bigger entries keep their bytes in their own buffer. */
export const SLAB_MAX_BYTES = 4096;
const CLASSES = (SLAB_MAX_BYTES >> GRAIN_SHIFT) + 1;
/**
 * A handle is chunk * CHUNK_SIZE + offset, kept as an int32 (negative above 2^31; >>> and & read
 * it back). One chunk fewer than 2^32 / CHUNK_SIZE so that -1 (0xffffffff) is never a handle.
 */
const MAX_CHUNKS = 2 ** (32 - CHUNK_SHIFT) - 1;
/** "No slot": never a handle, since handles are multiples of 16. */
export const NO_SLOT = -1;

export class Slab {
  /** The chunks and their views; handle h lives in chunk h >>> 18 at byte h & 0x3ffff. */
  u8s: Uint8Array[] = [];
  u16s: Uint16Array[] = [];
  i32s: Int32Array[] = [];
  f64s: Float64Array[] = [];
  /** Next unused byte in the last chunk. */
  private bump = CHUNK_SIZE;
  /** Head of each size class's free list (a handle, or NO_SLOT). */
  private readonly free = new Int32Array(CLASSES).fill(NO_SLOT);
  /** Bytes handed out in slots (rounded sizes), for memoryUsage(). */
  bytesInUse = 0;

  /** A slot of at least `size` bytes (1..SLAB_MAX_BYTES), 16-byte aligned. */
  alloc(size: number): number {
    const cls = (size + 15) >> GRAIN_SHIFT;
    this.bytesInUse += cls << GRAIN_SHIFT;
    const h = this.free[cls];
    if (h !== NO_SLOT) {
      this.free[cls] = this.i32s[h >>> CHUNK_SHIFT][(h & OFFSET_MASK) >> 2];
      return h;
    }
    const rounded = cls << GRAIN_SHIFT;
    if (this.bump + rounded > CHUNK_SIZE) this.newChunk();
    const out = ((this.u8s.length - 1) * CHUNK_SIZE + this.bump) | 0;
    this.bump += rounded;
    return out;
  }

  /** Gives a slot back; size is what it was allocated with. */
  release(h: number, size: number): void {
    const cls = (size + 15) >> GRAIN_SHIFT;
    this.bytesInUse -= cls << GRAIN_SHIFT;
    this.pushFree(h, cls);
  }

  /** Drops every chunk (the cache is empty). */
  reset(): void {
    this.u8s = [];
    this.u16s = [];
    this.i32s = [];
    this.f64s = [];
    this.bump = CHUNK_SIZE;
    this.free.fill(NO_SLOT);
    this.bytesInUse = 0;
  }

  get chunkCount(): number {
    return this.u8s.length;
  }

  private newChunk(): void {
    if (this.u8s.length >= MAX_CHUNKS) throw new RangeError("session cache slab is full (4 GiB)");
    // The unused tail of the old chunk becomes one free slot of its size, so nothing is lost.
    const rest = CHUNK_SIZE - this.bump;
    if (this.u8s.length > 0 && rest >= 16) {
      this.pushFree(((this.u8s.length - 1) * CHUNK_SIZE + this.bump) | 0, rest >> GRAIN_SHIFT);
    }
    const buf = new ArrayBuffer(CHUNK_SIZE);
    this.u8s.push(new Uint8Array(buf));
    this.u16s.push(new Uint16Array(buf));
    this.i32s.push(new Int32Array(buf));
    this.f64s.push(new Float64Array(buf));
    this.bump = 0;
  }

  private pushFree(h: number, cls: number): void {
    this.i32s[h >>> CHUNK_SHIFT][(h & OFFSET_MASK) >> 2] = this.free[cls];
    this.free[cls] = h;
  }
}
