// PROXY protocol version 2 (HAProxy's binary header): what `serve --backend --proxy-protocol`
// sends the backend before any payload so it sees the client's address rather than ours.
import { isIPv4, isIPv6 } from "node:net";

/** The 12-byte signature every v2 header starts with. */
export const PROXY_V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);

/** TLV types used here (PP2_TYPE_*). */
export const PP2_TYPE_ALPN = 0x01;
export const PP2_TYPE_AUTHORITY = 0x02;

export interface ProxyEndpoints {
  /** The client's address and port (the connection's remote end). */
  sourceAddress: string | undefined;
  sourcePort: number | undefined;
  /** The address and port the client connected to (our local end). */
  destAddress: string | undefined;
  destPort: number | undefined;
}

export interface ProxyTlvs {
  /** The negotiated ALPN protocol, e.g. "h2". */
  alpn?: string | false | null;
  /** The SNI host name the client sent. */
  authority?: string | false | null;
}

/**
 * The v2 header for a TCP connection: PROXY command, TCP over IPv4 or IPv6 (both addresses in one
 * family: an IPv4-mapped IPv6 address on a dual-stack listener counts as IPv4 when both are, and a
 * lone IPv4 address is mapped into IPv6 otherwise), then the optional TLVs. Without usable addresses
 * (the socket already closed) it is a LOCAL header with no address block, which backends accept
 * and treat as "use the real connection's addresses".
 */
export function encodeProxyV2(ends: ProxyEndpoints, tlvs: ProxyTlvs = {}): Buffer {
  const tlvBytes = encodeTlvs(tlvs);
  const addrs = addressBlock(ends);
  // Byte 12: version 2 in the high nibble, command PROXY (1) or LOCAL (0) in the low one.
  const verCmd = addrs ? 0x21 : 0x20;
  // Byte 13: address family in the high nibble (1 INET, 2 INET6), transport (1 STREAM) in the low.
  const famProto = addrs ? addrs.famProto : 0x00;
  const body = addrs ? Buffer.concat([addrs.bytes, tlvBytes]) : tlvBytes;
  if (body.length > 0xffff) throw new RangeError("PROXY v2 header too long");
  const head = Buffer.alloc(16);
  PROXY_V2_SIGNATURE.copy(head, 0);
  head[12] = verCmd;
  head[13] = famProto;
  head.writeUInt16BE(body.length, 14);
  return Buffer.concat([head, body]);
}

function addressBlock(e: ProxyEndpoints): { famProto: number; bytes: Buffer } | undefined {
  if (!e.sourceAddress || !e.destAddress || e.sourcePort === undefined || e.destPort === undefined) {
    return undefined;
  }
  const src = unmapV4(e.sourceAddress);
  const dst = unmapV4(e.destAddress);
  if (isIPv4(src) && isIPv4(dst)) {
    const b = Buffer.alloc(12);
    ipv4Bytes(src).copy(b, 0);
    ipv4Bytes(dst).copy(b, 4);
    b.writeUInt16BE(e.sourcePort, 8);
    b.writeUInt16BE(e.destPort, 10);
    return { famProto: 0x11, bytes: b };
  }
  const s6 = ipv6Bytes(src);
  const d6 = ipv6Bytes(dst);
  if (!s6 || !d6) return undefined;
  const b = Buffer.alloc(36);
  s6.copy(b, 0);
  d6.copy(b, 16);
  b.writeUInt16BE(e.sourcePort, 32);
  b.writeUInt16BE(e.destPort, 34);
  return { famProto: 0x21, bytes: b };
}

function encodeTlvs(t: ProxyTlvs): Buffer {
  const parts: Buffer[] = [];
  const add = (type: number, value: string | false | null | undefined) => {
    if (!value) return;
    // Node gives the SNI and ALPN names one character per wire byte (latin1): encoding them as
    // UTF-8 would double-encode any byte over 0x7f, so the backend would not see what the client sent.
    const v = Buffer.from(value, /^[\x00-\xff]*$/.test(value) ? "latin1" : "utf8");
    const h = Buffer.alloc(3);
    h[0] = type;
    h.writeUInt16BE(v.length, 1);
    parts.push(h, v);
  };
  add(PP2_TYPE_ALPN, t.alpn);
  add(PP2_TYPE_AUTHORITY, t.authority);
  return Buffer.concat(parts);
}

/** "::ffff:1.2.3.4" → "1.2.3.4"; anything else unchanged. */
function unmapV4(a: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  return m ? m[1]! : a;
}

function ipv4Bytes(a: string): Buffer {
  return Buffer.from(a.split(".").map(Number));
}

/** 16 bytes of an IPv6 address, or of an IPv4 one mapped into IPv6 (::ffff:a.b.c.d). */
function ipv6Bytes(a: string): Buffer | undefined {
  if (isIPv4(a))
    return Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]), ipv4Bytes(a)]);
  // A zone id (fe80::1%eth0) has no place in the header.
  const addr = a.replace(/%.*$/, "");
  if (!isIPv6(addr)) return undefined;
  let text = addr;
  let tail: number[] = [];
  // An embedded IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) is two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [p, q, r, s] = v4[1]!.split(".").map(Number) as [number, number, number, number];
    tail = [(p << 8) | q, (r << 8) | s];
    text = text.slice(0, -v4[1]!.length);
    if (text.endsWith(":") && !text.endsWith("::")) text = text.slice(0, -1);
  }
  const [left, right] = text.includes("::") ? text.split("::") : [text, undefined];
  const parse = (s: string | undefined) => (s ? s.split(":").map((g) => Number.parseInt(g, 16)) : []);
  const l = parse(left);
  const r = [...parse(right), ...tail];
  const zeros = 8 - l.length - r.length;
  const groups = right === undefined ? [...l, ...tail] : [...l, ...new Array<number>(zeros).fill(0), ...r];
  if (groups.length !== 8) return undefined;
  const b = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) b.writeUInt16BE(g, i * 2);
  return b;
}

/** Decodes a v2 header (for tests and debugging); undefined when `buf` does not hold a whole one. */
export function decodeProxyV2(buf: Buffer):
  | {
      length: number;
      command: "PROXY" | "LOCAL";
      family: "INET" | "INET6" | "UNSPEC";
      sourceAddress?: string;
      sourcePort?: number;
      destAddress?: string;
      destPort?: number;
      tlvs: Map<number, Buffer>;
    }
  | undefined {
  if (buf.length < 16 || !buf.subarray(0, 12).equals(PROXY_V2_SIGNATURE)) return undefined;
  const len = buf.readUInt16BE(14);
  if (buf.length < 16 + len) return undefined;
  const command = (buf[12]! & 0x0f) === 1 ? "PROXY" : "LOCAL";
  const fam = buf[13]! >> 4;
  const body = buf.subarray(16, 16 + len);
  const out: NonNullable<ReturnType<typeof decodeProxyV2>> = {
    length: 16 + len,
    command,
    family: fam === 1 ? "INET" : fam === 2 ? "INET6" : "UNSPEC",
    tlvs: new Map(),
  };
  let at = 0;
  if (fam === 1) {
    out.sourceAddress = [...body.subarray(0, 4)].join(".");
    out.destAddress = [...body.subarray(4, 8)].join(".");
    out.sourcePort = body.readUInt16BE(8);
    out.destPort = body.readUInt16BE(10);
    at = 12;
  } else if (fam === 2) {
    const six = (o: number) =>
      Array.from({ length: 8 }, (_, i) => body.readUInt16BE(o + i * 2).toString(16)).join(":");
    out.sourceAddress = six(0);
    out.destAddress = six(16);
    out.sourcePort = body.readUInt16BE(32);
    out.destPort = body.readUInt16BE(34);
    at = 36;
  }
  while (at + 3 <= body.length) {
    const type = body[at]!;
    const n = body.readUInt16BE(at + 1);
    out.tlvs.set(type, body.subarray(at + 3, at + 3 + n));
    at += 3 + n;
  }
  return out;
}
