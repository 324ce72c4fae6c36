// Where things sit inside an SSL_SESSION DER (R3) that was already decoded once. The index keeps
// only the offset of the session id in the stored bytes and compares ids in place, so it needs
// neither a copy of the id nor a full decode. Every read is bounds-checked: a layout it does not
// expect yields -1 and the caller re-encodes the session canonically.

let pos = 0;
let len = 0;

/** Reads the tag at `at` and its length; sets pos (content start) and len. False when malformed. */
function header(der: Uint8Array, at: number, tag: number): boolean {
  if (at + 2 > der.length || der[at] !== tag) return false;
  let p = at + 1;
  let n = der[p++];
  if (n >= 0x80) {
    const k = n & 0x7f;
    if (k === 0 || k > 3 || p + k > der.length) return false;
    n = 0;
    for (let i = 0; i < k; i++) n = n * 256 + der[p++];
  }
  if (p + n > der.length) return false;
  pos = p;
  len = n;
  return true;
}

/**
 * Offset of the session id bytes; the byte just before them is the id length (the index reads it
 * from there). -1 when the DER does not look like an SSL_SESSION.
 */
export function locateId(der: Uint8Array): number {
  if (!header(der, 0, 0x30)) return -1;
  // version INTEGER, ssl_version INTEGER, cipher OCTET STRING, then session_id OCTET STRING.
  if (!header(der, pos, 0x02)) return -1;
  if (!header(der, pos + len, 0x02)) return -1;
  if (!header(der, pos + len, 0x04)) return -1;
  if (!header(der, pos + len, 0x04)) return -1;
  // Whatever the length form, its last byte is the length when it is below 256.
  if (len > 32) return -1;
  return pos;
}

/** What layout() found: the id offset (-1: no SSL_SESSION shape), the times, the context field. */
export const found = { idOffset: -1, hasTimes: false, contextField: 0 };

/**
 * One pass over the head of an SSL_SESSION DER, results in `found`:
 * - idOffset: as locateId();
 * - hasTimes: whether [1] time and [2] timeout are both present (they follow the master key and
 *   the optional [0] key_arg). Without them a re-decode would read "time = now, timeout = 3", so
 *   the cache re-encodes such sessions before storing them;
 * - contextField: offset of the [4] session_id_context field when it has the canonical short form
 *   a4 (n+2) 04 n <n bytes> with n <= 32, else 0 (an offset no field can have). The index leaves
 *   that field out of the stored bytes, since contexts are interned anyway: 36 of a typical server
 *   session's 158 bytes.
 */
export function layout(der: Uint8Array): void {
  found.hasTimes = false;
  found.contextField = 0;
  const id = locateId(der);
  found.idOffset = id;
  if (id < 0) return;
  // Skip the id, then master_key and the optional key_arg.
  if (!header(der, id + der[id - 1], 0x04)) return;
  let at = pos + len;
  if (at < der.length && der[at] === 0x80) {
    if (!header(der, at, 0x80)) return;
    at = pos + len;
  }
  if (!header(der, at, 0xa1) || !header(der, pos + len, 0xa2)) return;
  found.hasTimes = true;
  at = pos + len;
  if (at < der.length && der[at] === 0xa3) {
    if (!header(der, at, 0xa3)) return;
    at = pos + len;
  }
  if (at + 4 > der.length || der[at] !== 0xa4 || der[at + 2] !== 0x04) return;
  const n = der[at + 3];
  if (n > 32 || der[at + 1] !== n + 2 || at + 4 + n > der.length) return;
  found.contextField = at;
}
