// Byte-level mutations shared by the targets: the damage storage, transport and attackers do. Each
// takes the input and a PRNG and returns a new array (inputs are never modified in place, so corpus
// items can be reused across cases).
import type { Rng } from "./prng.js";

export const INTERESTING = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe, 0x81, 0x20, 0x21, 0x40] as const;

/** The largest input a mutation may produce: inputs stay bounded whatever is stacked. */
export const MAX_MUTANT_BYTES = 80 * 1024;

export type Mutation = (b: Uint8Array, rng: Rng, pool: readonly Uint8Array[]) => Uint8Array;

const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

function flipBit(b: Uint8Array, rng: Rng): Uint8Array {
  if (b.length === 0) return b;
  const out = b.slice();
  out[rng.int(out.length)]! ^= 1 << rng.int(8);
  return out;
}

function setInteresting(b: Uint8Array, rng: Rng): Uint8Array {
  if (b.length === 0) return b;
  const out = b.slice();
  out[rng.int(out.length)] = rng.pick(INTERESTING);
  return out;
}

function randomByte(b: Uint8Array, rng: Rng): Uint8Array {
  if (b.length === 0) return b;
  const out = b.slice();
  out[rng.int(out.length)] = rng.int(256);
  return out;
}

function truncate(b: Uint8Array, rng: Rng): Uint8Array {
  return b.slice(0, rng.int(b.length + 1));
}

function dropHead(b: Uint8Array, rng: Rng): Uint8Array {
  return b.slice(rng.int(Math.min(b.length, 64) + 1));
}

/** A big-endian length field of 1, 2, 3 or 4 bytes somewhere, set to a bogus value. */
function bogusLength(b: Uint8Array, rng: Rng): Uint8Array {
  if (b.length === 0) return b;
  const width = rng.range(1, Math.min(4, b.length));
  const at = rng.int(b.length - width + 1);
  let old = 0;
  for (let i = 0; i < width; i++) old = old * 256 + b[at + i]!;
  const max = 2 ** (8 * width) - 1;
  const v = rng.pick([
    0,
    max,
    max >>> 1,
    (max >>> 1) + 1,
    old + 1,
    old - 1,
    old + rng.range(2, 300),
    old - rng.range(2, 64),
    old * 2,
    1,
  ]);
  const out = b.slice();
  let x = Math.max(0, Math.min(max, v));
  for (let i = width - 1; i >= 0; i--) {
    out[at + i] = x & 0xff;
    x = Math.floor(x / 256);
  }
  return out;
}

function insertRandom(b: Uint8Array, rng: Rng): Uint8Array {
  const at = rng.int(b.length + 1);
  return concat(b.subarray(0, at), rng.bytes(rng.smallLen(512)), b.subarray(at));
}

function duplicateChunk(b: Uint8Array, rng: Rng): Uint8Array {
  if (b.length === 0) return b;
  const from = rng.int(b.length);
  const len = rng.range(1, Math.min(b.length - from, 256));
  const chunk = b.slice(from, from + len);
  const times = rng.chance(0.1) ? rng.range(2, 64) : 1;
  const at = rng.int(b.length + 1);
  const parts: Uint8Array[] = [b.subarray(0, at)];
  for (let i = 0; i < times; i++) parts.push(chunk);
  parts.push(b.subarray(at));
  return concat(...parts);
}

function deleteChunk(b: Uint8Array, rng: Rng): Uint8Array {
  if (b.length === 0) return b;
  const from = rng.int(b.length);
  const len = rng.range(1, Math.min(b.length - from, 128));
  return concat(b.subarray(0, from), b.subarray(from + len));
}

function overwriteChunk(b: Uint8Array, rng: Rng): Uint8Array {
  if (b.length === 0) return b;
  const from = rng.int(b.length);
  const len = rng.range(1, Math.min(b.length - from, 32));
  const out = b.slice();
  const fill = rng.chance(0.5) ? undefined : rng.pick(INTERESTING);
  for (let i = 0; i < len; i++) out[from + i] = fill ?? rng.int(256);
  return out;
}

/** The head of this input and the tail of another corpus item. */
function splice(b: Uint8Array, rng: Rng, pool: readonly Uint8Array[]): Uint8Array {
  if (pool.length === 0) return b;
  const other = rng.pick(pool);
  return concat(b.subarray(0, rng.int(b.length + 1)), other.subarray(rng.int(other.length + 1)));
}

function appendRandom(b: Uint8Array, rng: Rng): Uint8Array {
  return concat(b, rng.bytes(rng.smallLen(256)));
}

export const MUTATIONS: readonly Mutation[] = [
  flipBit,
  flipBit,
  setInteresting,
  setInteresting,
  randomByte,
  truncate,
  dropHead,
  bogusLength,
  bogusLength,
  bogusLength,
  insertRandom,
  duplicateChunk,
  deleteChunk,
  overwriteChunk,
  splice,
  appendRandom,
];

/** 1..8 stacked mutations (mostly 1 or 2), capped at MAX_MUTANT_BYTES. */
export function mutate(b: Uint8Array, rng: Rng, pool: readonly Uint8Array[] = []): Uint8Array {
  const n = rng.chance(0.6) ? 1 : rng.range(2, 8);
  let out = b;
  for (let i = 0; i < n; i++) {
    out = rng.pick(MUTATIONS)(out, rng, pool);
    if (out.length > MAX_MUTANT_BYTES) out = out.subarray(0, MAX_MUTANT_BYTES);
  }
  return out === b ? b.slice() : out;
}

export { concat };
