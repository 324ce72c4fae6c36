// Session-id contexts, interned (R19). A cache sees a handful of distinct contexts (usually one),
// so each entry stores a u16 index instead of up to 32 bytes, and the R7 context check is an
// integer compare. Reference counts free an index when its last user goes.

/** Most distinct contexts alive at once (u16 indices). */
export const MAX_CONTEXTS = 0xffff;

export class ContextTable {
  private readonly bytes: Uint8Array[] = [];
  /** Each context as its DER field, a4 (n+2) 04 n <bytes>, written back into sessions on copy-out. */
  private readonly fields: Uint8Array[] = [];
  private readonly refs: number[] = [];
  private readonly byKey = new Map<string, number>();
  private readonly spare: number[] = [];
  /** The last index interned: nearly every session carries the same context as the previous one. */
  private last = -1;

  /** The interned index for ctx with one more reference, or -1 when the table is full. */
  retain(ctx: Uint8Array): number {
    return this.retainAt(ctx, 0, ctx.length);
  }

  /** retain() for the n bytes of buf at off, without a view object on the fast path. */
  retainAt(buf: Uint8Array, off: number, n: number): number {
    const last = this.last;
    if (last >= 0 && this.refs[last] > 0) {
      const b = this.bytes[last];
      if (b.length === n) {
        let i = 0;
        while (i < n && b[i] === buf[off + i]) i++;
        if (i === n) {
          this.refs[last]++;
          return last;
        }
      }
    }
    const ctx = buf.subarray(off, off + n);
    const key = latin1(ctx);
    let i = this.byKey.get(key);
    if (i === undefined) {
      if (this.spare.length > 0) i = this.spare.pop()!;
      else if (this.bytes.length < MAX_CONTEXTS) i = this.bytes.length;
      else return -1;
      this.bytes[i] = ctx.slice();
      const field = new Uint8Array(4 + n);
      field[0] = 0xa4;
      field[1] = n + 2;
      field[2] = 0x04;
      field[3] = n;
      field.set(ctx, 4);
      this.fields[i] = field;
      this.refs[i] = 0;
      this.byKey.set(key, i);
    }
    this.refs[i]++;
    this.last = i;
    return i;
  }

  /** One more reference to an index already held. */
  retainIndex(i: number): void {
    this.refs[i]++;
  }

  release(i: number): void {
    if (--this.refs[i] === 0) {
      this.byKey.delete(latin1(this.bytes[i]));
      this.bytes[i] = EMPTY;
      this.fields[i] = EMPTY;
      this.spare.push(i);
    }
  }

  /** The bytes of an index (shared: callers must not modify them). */
  get(i: number): Uint8Array {
    return this.bytes[i];
  }

  /** The DER field of an index (shared: callers must not modify it). */
  field(i: number): Uint8Array {
    return this.fields[i];
  }

  /** Distinct contexts alive. */
  get size(): number {
    return this.byKey.size;
  }
}

const EMPTY = new Uint8Array(0);

function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}
