// DER-aware damage for the session targets: lengths rewritten in long, overlong, indefinite or
// over-4-byte forms, fields wrapped in deep nesting, huge tag numbers, and elements swapped,
// duplicated or dropped inside the top SEQUENCE.
import { concat, mutate } from "./mutate.js";
import type { Rng } from "./prng.js";

interface Tlv {
  hdr: number;
  /** Where the length octets start (after the tag octets). */
  lenAt: number;
  start: number;
  end: number;
}

/** The elements at one level of a DER buffer (best effort: stops at the first bad header). */
function elements(b: Uint8Array, from: number, to: number): Tlv[] {
  const out: Tlv[] = [];
  let p = from;
  while (p + 2 <= to) {
    const hdr = p;
    if ((b[p++]! & 0x1f) === 0x1f) {
      while (p < to && b[p]! & 0x80) p++;
      p++;
    }
    if (p >= to) break;
    const lenAt = p;
    let len = b[p++]!;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 4 || p + n > to) break;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + b[p++]!;
    }
    if (p + len > to) break;
    out.push({ hdr, lenAt, start: p, end: p + len });
    p += len;
  }
  return out;
}

function lengthBytes(len: number, rng: Rng): Uint8Array {
  const r = rng.int(8);
  if (r === 0) return Uint8Array.from([0x80]); // indefinite (BER)
  if (r === 1) return Uint8Array.from([0x85, 0, 0, 0, 0, len & 0xff]); // 5 length bytes
  if (r === 2)
    return Uint8Array.from([0x84, (len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff]); // overlong form
  if (r === 3) return Uint8Array.from([0x84, 0xff, 0xff, 0xff, 0xff]); // 4 GiB
  if (r === 4) return Uint8Array.from([0x81, Math.min(255, len + rng.range(1, 5))]); // past its container
  if (r === 5) return Uint8Array.from([0xff]); // 127 length bytes
  if (len < 0x80) return Uint8Array.from([0x81, len]); // non-minimal but valid
  return Uint8Array.from([0x82, (len >> 8) & 0xff, len & 0xff]);
}

function encodeLength(len: number): Uint8Array {
  if (len < 0x80) return Uint8Array.from([len]);
  if (len < 0x100) return Uint8Array.from([0x81, len]);
  if (len < 0x10000) return Uint8Array.from([0x82, len >> 8, len & 0xff]);
  return Uint8Array.from([0x83, len >> 16, (len >> 8) & 0xff, len & 0xff]);
}

/** Deeply nested constructed elements (SEQUENCE or [n] EXPLICIT) around `inner`. */
export function nest(inner: Uint8Array, depth: number, rng: Rng): Uint8Array {
  const tag = rng.pick([0x30, 0xa0, 0xa3, 0xbf]);
  // Built from the inside out with one allocation per level would be quadratic: compute lengths first.
  const lens: Uint8Array[] = [];
  let len = inner.length;
  for (let i = 0; i < depth; i++) {
    const l = encodeLength(len);
    lens.push(l);
    len += 1 + l.length + (tag === 0xbf ? 1 : 0);
  }
  const out = new Uint8Array(len);
  let o = 0;
  for (let i = depth - 1; i >= 0; i--) {
    out[o++] = tag;
    if (tag === 0xbf) out[o++] = 0x21;
    out.set(lens[i]!, o);
    o += lens[i]!.length;
  }
  out.set(inner, o);
  return out;
}

/** One structure-aware change to a DER session (or a fresh hostile blob). */
export function derMutate(der: Uint8Array, rng: Rng, pool: readonly Uint8Array[]): Uint8Array {
  const top = elements(der, 0, der.length)[0];
  const kids = top ? elements(der, top.start, top.end) : [];
  const r = rng.int(10);
  if (r === 0 || kids.length === 0) {
    // Hostile blobs on their own: deep nesting, huge tags, long runs of length bytes.
    const k = rng.int(4);
    if (k === 0) return nest(new Uint8Array(0), rng.range(100, 20000), rng);
    if (k === 1) return Uint8Array.from([0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, ...rng.bytes(rng.smallLen(64))]);
    if (k === 2)
      return Uint8Array.from([0x3f, ...new Array<number>(rng.range(1, 50)).fill(0xff), 0x00, 0x00]);
    return Uint8Array.from([0x30, 0x0a, 0xbf, 0x80, 0x80, 0x80, 0x80, 0x01, 0x02, 0x02, 0x01, 0x00]);
  }
  const i = rng.int(kids.length);
  const kid = kids[i]!;
  const contentStart = top!.start;
  const contentEnd = top!.end;
  let content: Uint8Array;
  const before = der.subarray(contentStart, kid.hdr);
  const after = der.subarray(kid.end, contentEnd);
  const self = der.subarray(kid.hdr, kid.end);
  switch (r) {
    case 1: {
      // Rewrite this field's length in an odd form (value kept).
      const head = der.subarray(kid.hdr, kid.lenAt);
      content = concat(
        before,
        head,
        lengthBytes(kid.end - kid.start, rng),
        der.subarray(kid.start, kid.end),
        after,
      );
      break;
    }
    case 2:
      content = concat(before, nest(self, rng.range(2, 5000), rng), after); // nested deep
      break;
    case 3:
      content = concat(before, self, self, after); // duplicated field
      break;
    case 4:
      content = concat(before, after); // dropped field
      break;
    case 5: {
      const j = rng.int(kids.length); // swapped with another field
      const other = der.subarray(kids[j]!.hdr, kids[j]!.end);
      content = concat(before, other, after);
      break;
    }
    case 6: {
      // A field's content replaced: oversized (ids over 32, master keys over 48, long integers).
      const head = der.subarray(kid.hdr, kid.lenAt);
      const n = rng.pick([33, 49, 10, 255, 256, 4096, 0]);
      const body = rng.bytes(n);
      content = concat(before, head, encodeLength(body.length), body, after);
      break;
    }
    case 7: {
      // A field from another session spliced in at this position.
      const o = rng.pick(pool);
      const ot = elements(o, 0, o.length)[0];
      const ok = ot ? elements(o, ot.start, ot.end) : [];
      const pick = ok.length > 0 ? rng.pick(ok) : undefined;
      content = concat(before, pick ? o.subarray(pick.hdr, pick.end) : new Uint8Array(0), after);
      break;
    }
    default:
      // Byte-level damage inside this one field, lengths above it kept consistent.
      content = concat(before, mutate(self, rng), after);
  }
  const out = concat(der.subarray(0, 1), encodeLength(content.length), content);
  return rng.chance(0.2) ? mutate(out, rng, pool) : out;
}
