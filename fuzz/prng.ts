// A small seeded PRNG for the fuzzers. Every case gets its own generator derived from (seed, case
// index), so a failure is replayed from those two numbers alone, whatever ran before it.

/** splitmix32-style mixing of a 32-bit state: good enough spread for seeding. */
function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x21f0aaad);
  x = Math.imul(x ^ (x >>> 15), 0x735a2d97);
  return (x ^ (x >>> 15)) >>> 0;
}

/** xorshift128+ style generator over four 32-bit words (xoshiro128**). Deterministic, fast. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, index = 0) {
    let s = mix32(seed >>> 0) ^ mix32((index >>> 0) + 0x632be5ab) ^ mix32(Math.floor(index / 2 ** 32));
    this.a = s = mix32(s);
    this.b = s = mix32(s);
    this.c = s = mix32(s);
    this.d = mix32(s) | 1;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** An integer in [0, n) (n ≤ 2^32). */
  int(n: number): number {
    if (n <= 0) return 0;
    return Math.floor((this.u32() / 2 ** 32) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      let x = this.u32();
      for (let k = i; k < i + 4 && k < n; k++, x >>>= 8) out[k] = x & 0xff;
    }
    return out;
  }

  /** A small length, biased towards 0..16 with an occasional large one. */
  smallLen(max: number): number {
    const r = this.int(10);
    if (r < 6) return this.int(Math.min(17, max + 1));
    if (r < 9) return this.int(Math.min(257, max + 1));
    return this.int(max + 1);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString("hex");
}
