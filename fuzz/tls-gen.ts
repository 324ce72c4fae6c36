// Structure-aware ClientHello generation for the two hello targets: hellos built from parts (with
// thousands of extensions, maximal sizes, oversized session ids, odd PSK and SNI lists), corpus
// hellos taken apart and mutated inside their handshake message, and any of them cut into TLS
// records at varied offsets.
import { concat, mutate } from "./mutate.js";
import type { Rng } from "./prng.js";

const u16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
const u24 = (n: number) => [(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];

export const MAX_RECORD = 16384;

function ext(type: number, data: Uint8Array | number[]): Uint8Array {
  const d = data instanceof Uint8Array ? data : Uint8Array.from(data);
  return concat(Uint8Array.from([...u16(type), ...u16(d.length)]), d);
}

/** The handshake messages of a run of handshake records (the corpus stores raw first flights). */
export function handshakeOf(raw: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let p = 0;
  while (p + 5 <= raw.length && raw[p] === 22) {
    const len = (raw[p + 3]! << 8) | raw[p + 4]!;
    parts.push(raw.subarray(p + 5, Math.min(raw.length, p + 5 + len)));
    p += 5 + len;
  }
  return parts.length === 0 ? raw : concat(...parts);
}

/** Wraps handshake bytes in records: one record, or cut at random offsets (never empty records). */
export function toRecords(hs: Uint8Array, rng: Rng, version = 0x0301): Uint8Array {
  const cuts: number[] = [];
  const r = rng.int(10);
  if (r >= 6 && hs.length > 1) {
    // Several records: a few random cuts, or many small ones.
    const n = r === 9 ? Math.min(hs.length - 1, rng.range(2, 200)) : rng.range(1, 4);
    for (let i = 0; i < n; i++) cuts.push(rng.range(1, hs.length - 1));
  }
  // Records are at most 2^14 bytes unless the generator asks for oversized ones on purpose.
  for (let at = MAX_RECORD; at < hs.length; at += MAX_RECORD) cuts.push(at);
  const sorted = [...new Set(cuts)].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...sorted, hs.length]) {
    if (c <= prev) continue;
    const frag = hs.subarray(prev, c);
    out.push(Uint8Array.from([22, ...u16(version), ...u16(frag.length)]), frag);
    prev = c;
  }
  if (hs.length === 0) out.push(Uint8Array.from([22, ...u16(version), 0, 0]));
  return concat(...out);
}

interface HelloParts {
  legacyVersion: number;
  legacyId: Uint8Array;
  ciphers: Uint8Array;
  compression: Uint8Array;
  extensions: Uint8Array[] | null;
}

function helloMessage(h: HelloParts): Uint8Array {
  const exts = h.extensions === null ? undefined : concat(...h.extensions);
  const body = concat(
    Uint8Array.from(u16(h.legacyVersion)),
    new Uint8Array(32).fill(0x11),
    Uint8Array.from([h.legacyId.length & 0xff]),
    h.legacyId,
    Uint8Array.from(u16(h.ciphers.length)),
    h.ciphers,
    Uint8Array.from([h.compression.length]),
    h.compression,
    exts === undefined ? new Uint8Array(0) : concat(Uint8Array.from(u16(exts.length & 0xffff)), exts),
  );
  return concat(Uint8Array.from([1, ...u24(body.length)]), body);
}

function sni(rng: Rng): Uint8Array {
  const names: number[] = [];
  const n = rng.chance(0.8) ? 1 : rng.range(0, 5);
  for (let i = 0; i < n; i++) {
    const len = rng.chance(0.1) ? rng.range(250, 300) : rng.range(0, 40);
    const type = rng.chance(0.85) ? 0 : rng.int(256);
    const name = Array.from({ length: len }, () => (rng.chance(0.9) ? 0x61 + rng.int(26) : rng.int(256)));
    names.push(type, ...u16(len), ...name);
  }
  return ext(0, [...u16(names.length), ...names]);
}

function psk(rng: Rng): Uint8Array {
  const ids: number[] = [];
  const n = rng.chance(0.7) ? 1 : rng.chance(0.9) ? rng.range(0, 8) : rng.range(0, 300);
  for (let i = 0; i < n; i++) {
    const len = rng.chance(0.1) ? rng.range(0, 2000) : rng.range(1, 200);
    ids.push(...u16(len), ...rng.bytes(len), 0, 0, 0, 1);
  }
  const binders: number[] = [];
  for (let i = 0; i < Math.max(1, n); i++) binders.push(32, ...new Array<number>(32).fill(0xbb));
  return ext(41, [...u16(ids.length & 0xffff), ...ids, ...u16(binders.length), ...binders]);
}

function supportedVersions(rng: Rng): Uint8Array {
  const vs = Array.from({ length: rng.range(0, 6) }, () =>
    rng.pick([0x0304, 0x0303, 0x0302, 0x7f1c, 0xfafa]),
  );
  return ext(43, [vs.length * 2, ...vs.flatMap(u16)]);
}

/** A hello built from parts, often at or past one of the reader's limits. */
export function generateHello(rng: Rng): Uint8Array {
  const legacyId = rng.chance(0.15)
    ? rng.bytes(rng.range(33, 255))
    : rng.bytes(rng.pick([0, 0, 32, rng.int(33)]));
  const ciphers = rng.chance(0.05)
    ? rng.bytes(rng.range(0, 3))
    : rng.bytes(2 * rng.range(1, rng.chance(0.1) ? 4000 : 20));
  const compression = rng.chance(0.05) ? new Uint8Array(0) : Uint8Array.from([0]);
  const extensions: Uint8Array[] | null = rng.chance(0.05) ? null : [];
  if (extensions) {
    const kinds = rng.int(16); // 1 in 8 at the extremes: they are slow to build
    if (kinds === 0) {
      // Thousands of extensions (small, unknown types, sometimes repeated known ones).
      const n = rng.range(1000, 4000);
      for (let i = 0; i < n; i++) {
        const type = rng.chance(0.002) ? rng.pick([0, 35, 41, 43]) : 0x1000 + rng.int(0xe000);
        extensions.push(ext(type, rng.chance(0.5) ? [] : [rng.int(256)]));
      }
    } else if (kinds === 1) {
      // Maximal sizes: padding filling the message up to (or just past) the 2^14 / 2^16 bounds.
      const target = rng.pick([MAX_RECORD - 4, MAX_RECORD - 3, MAX_RECORD, 65535 - 4, 65535]);
      extensions.push(ext(21, new Uint8Array(Math.max(0, target - 200 - legacyId.length - ciphers.length))));
    }
    if (rng.chance(0.7)) extensions.push(sni(rng));
    if (rng.chance(0.6)) extensions.push(supportedVersions(rng));
    if (rng.chance(0.4)) extensions.push(ext(35, rng.bytes(rng.chance(0.7) ? 0 : rng.range(1, 1000))));
    if (rng.chance(0.2)) extensions.push(ext(rng.pick([0, 35, 41, 43]), rng.bytes(rng.smallLen(64))));
    if (rng.chance(0.5)) extensions.push(psk(rng)); // last, as RFC 8446 wants (not that we rely on it)
  }
  let hs = helloMessage({
    legacyVersion: rng.pick([0x0303, 0x0301, 0x0300, 0x0304, 0xfefd]),
    legacyId,
    ciphers,
    compression,
    extensions,
  });
  if (rng.chance(0.1)) hs = mutate(hs, rng);
  return hs;
}

/** One first flight: a corpus hello (mutated inside its message or as raw bytes) or a generated one. */
export function helloInput(
  rng: Rng,
  corpus: readonly Uint8Array[],
  messages: readonly Uint8Array[],
): Uint8Array {
  const r = rng.int(100);
  if (r < 10 && corpus.length > 0) return mutate(rng.pick(corpus), rng, corpus); // raw record bytes
  if (r < 15 && corpus.length > 0) return rng.pick(corpus).slice(); // as captured
  let hs: Uint8Array;
  if (r < 65 && messages.length > 0) {
    hs = rng.pick(messages);
    if (rng.chance(0.85)) hs = mutate(hs, rng, messages);
  } else hs = generateHello(rng);
  let raw = toRecords(hs, rng, rng.chance(0.9) ? 0x0301 : rng.pick([0x0303, 0x0300, 0x0304, 0x0201]));
  if (rng.chance(0.1)) raw = mutate(raw, rng, corpus); // record layer damage too
  if (rng.chance(0.05)) raw = concat(raw, rng.bytes(rng.smallLen(64))); // data after the hello
  return raw;
}
