// The ClientHello reader: hand-built hellos (whole, byte by byte, over several records), hostile
// input (every truncation, bad lengths, caps), and a fuzz that it never throws and always ends.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  ClientHelloReader,
  type ClientHelloResult,
  MAX_BUFFERED_BYTES,
  MAX_HELLO_BYTES,
} from "../src/server/client-hello.js";

const u16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
const u24 = (n: number) => [(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
const bytes = (n: number, v = 0xab) => new Array<number>(n).fill(v);

function ext(type: number, data: number[]): number[] {
  return [...u16(type), ...u16(data.length), ...data];
}
function supportedVersions(...vs: number[]): number[] {
  return ext(43, [vs.length * 2, ...vs.flatMap(u16)]);
}
function psk(...identities: number[][]): number[] {
  const ids = identities.flatMap((id) => [...u16(id.length), ...id, 0, 0, 0, 1]);
  const binders = identities.flatMap(() => [32, ...bytes(32, 0xbb)]);
  return ext(41, [...u16(ids.length), ...ids, ...u16(binders.length), ...binders]);
}

interface HelloSpec {
  legacyVersion?: number;
  legacyId?: number[];
  extensions?: number[][] | null; // null: no extensions block at all
}
/** A ClientHello handshake message (header included). */
function helloMessage(spec: HelloSpec = {}): number[] {
  const body = [
    ...u16(spec.legacyVersion ?? 0x0303),
    ...bytes(32, 0x11), // random
    (spec.legacyId ?? []).length,
    ...(spec.legacyId ?? []),
    ...u16(4),
    0x13,
    0x01,
    0xc0,
    0x2f, // cipher suites
    1,
    0, // compression: null
  ];
  if (spec.extensions !== null) {
    const exts = (spec.extensions ?? []).flat();
    body.push(...u16(exts.length), ...exts);
  }
  return [1, ...u24(body.length), ...body];
}
/** Wraps handshake bytes into records of at most `fragment` bytes each. */
function records(hs: number[], fragment = 16384): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < hs.length; i += fragment) {
    const frag = hs.slice(i, i + fragment);
    out.push(22, 3, 1, ...u16(frag.length), ...frag);
  }
  return Uint8Array.from(out);
}
function feed(data: Uint8Array, chunk = data.length): ClientHelloResult {
  const r = new ClientHelloReader();
  let res: ClientHelloResult = { kind: "more" };
  for (let i = 0; i < data.length; i += chunk) {
    res = r.push(data.subarray(i, i + chunk));
    if (res.kind !== "more") break;
  }
  return res;
}
function done(res: ClientHelloResult) {
  assert.equal(res.kind, "done", JSON.stringify(res));
  return (res as Extract<ClientHelloResult, { kind: "done" }>).hello;
}

const id32 = bytes(32, 0x42);
const ticketId = Array.from({ length: 32 }, (_, i) => i);
const tls13Hello = helloMessage({
  legacyId: id32,
  extensions: [ext(0, [0, 0]), supportedVersions(0x0a0a, 0x0304, 0x0303), ext(35, []), psk(ticketId)],
});

describe("ClientHelloReader", () => {
  it("reads a TLS 1.3 hello in one chunk: legacy id, PSK identity, versions, ticket extension", () => {
    const data = records(tls13Hello);
    const h = done(feed(data));
    assert.deepEqual([...h.legacyId], id32);
    assert.equal(h.pskIdentities.length, 1);
    assert.deepEqual([...h.pskIdentities[0]], ticketId);
    assert.equal(h.offersTls13, true);
    assert.equal(h.hasSessionTicket, true);
    assert.equal(h.records, 1);
    assert.equal(h.legacyVersion, 0x0303);
    assert.equal(h.length, data.length);
  });

  it("reads the SNI host name (the first host_name), and none from an empty or malformed list", () => {
    const name = [...Buffer.from("B.Test")];
    const sni = (list: number[]) => ext(0, [...u16(list.length), ...list]);
    const entry = (type: number, n: number[]) => [type, ...u16(n.length), ...n];
    const read = (e: number[]) =>
      done(feed(records(helloMessage({ legacyId: id32, extensions: [e] })))).serverName;
    assert.equal(read(sni(entry(0, name))), "B.Test");
    assert.equal(read(sni([...entry(7, [1, 2]), ...entry(0, name), ...entry(0, [0x78])])), "B.Test");
    assert.equal(read(ext(0, [])), undefined);
    assert.equal(read(ext(0, [0, 0])), undefined);
    assert.equal(read(sni([0, 0, 9, 0x61])), undefined, "a name longer than its list");
    assert.equal(done(feed(records(tls13Hello))).serverName, undefined);
  });

  it("reads the same hello one byte at a time and in every two-way split", () => {
    const data = records(tls13Hello);
    const h = done(feed(data, 1));
    assert.deepEqual([...h.pskIdentities[0]], ticketId);
    for (let cut = 1; cut < data.length; cut++) {
      const r = new ClientHelloReader();
      assert.equal(r.push(data.subarray(0, cut)).kind, "more", `cut ${cut}`);
      const hh = done(r.push(data.subarray(cut)));
      assert.deepEqual([...hh.legacyId], id32);
    }
  });

  it("reassembles a hello spread over several records, and says so", () => {
    for (const frag of [1, 7, 50, 100]) {
      const data = records(tls13Hello, frag);
      for (const chunk of [1, 3, data.length]) {
        const h = done(feed(data, chunk));
        assert.ok(h.records > 1);
        assert.equal(h.records, Math.ceil(tls13Hello.length / frag));
        assert.deepEqual([...h.pskIdentities[0]], ticketId);
        assert.deepEqual([...h.legacyId], id32);
        assert.equal(h.length, data.length);
      }
    }
  });

  it("reads a TLS 1.2 hello: no supported_versions, no PSK, an empty legacy id", () => {
    const h = done(feed(records(helloMessage({ extensions: [ext(35, [1, 2, 3])] }))));
    assert.equal(h.offersTls13, false);
    assert.equal(h.hasSessionTicket, true);
    assert.equal(h.legacyId.length, 0);
    assert.deepEqual(h.pskIdentities, []);
  });

  it("reads a hello without an extensions block, and one with several PSK identities", () => {
    const h = done(feed(records(helloMessage({ extensions: null, legacyId: [1, 2, 3] }))));
    assert.deepEqual([...h.legacyId], [1, 2, 3]);
    const two = done(feed(records(helloMessage({ extensions: [psk(bytes(100, 7), ticketId)] }))));
    assert.deepEqual(
      two.pskIdentities.map((i) => i.length),
      [100, 32],
    );
  });

  it("keeps bytes after the hello out of its length (early data, pipelined records)", () => {
    const data = records(tls13Hello);
    const more = new Uint8Array(data.length + 10);
    more.set(data);
    more.set([23, 3, 3, 0, 5], data.length);
    assert.equal(done(feed(more)).length, data.length);
  });

  it("gives up at once on non-TLS bytes", () => {
    for (const text of ["GET / HTTP/1.1\r\n", "\x80\x2e\x01\x00\x02", "\x15\x03\x03\x00\x02\x02\x28"]) {
      const r = new ClientHelloReader();
      const res = r.push(Buffer.from(text.slice(0, 1), "latin1"));
      assert.deepEqual(res, { kind: "unknown", reason: "not-handshake" }, JSON.stringify(text));
    }
    assert.equal(feed(Uint8Array.from([22, 9, 1, 0, 5, 1, 0, 0, 1, 0])).kind, "unknown");
  });

  it("refuses malformed lengths, a non-ClientHello message and duplicated extensions", () => {
    const bad: [string, number[]][] = [
      ["not client hello", [2, ...u24(4), 3, 3, 0, 0]],
      ["legacy id > 32", helloMessage({ legacyId: bytes(33) })],
      [
        "duplicate supported_versions",
        helloMessage({ extensions: [supportedVersions(0x0304), supportedVersions(0x0303)] }),
      ],
      ["duplicate psk", helloMessage({ extensions: [psk(ticketId), psk(ticketId)] })],
      ["odd versions", helloMessage({ extensions: [ext(43, [3, 3, 4, 3])] })],
      ["psk with empty identity", helloMessage({ extensions: [ext(41, [...u16(6), 0, 0, 0, 0, 0, 0])] })],
    ];
    for (const [name, msg] of bad) {
      const res = feed(records(msg));
      assert.equal(res.kind, "unknown", name);
    }
    // extensions length that overruns the message
    const m = helloMessage({ extensions: [ext(0, [0, 0])] });
    m[m.length - 7] += 1;
    assert.equal(feed(records(m)).kind, "unknown");
    // an empty handshake record
    assert.deepEqual(feed(Uint8Array.from([22, 3, 1, 0, 0])), { kind: "unknown", reason: "malformed" });
  });

  it("every truncation of a valid hello is either `more` or, cut inside a record, still `more`", () => {
    const data = records(tls13Hello);
    for (let n = 0; n < data.length; n++) {
      assert.equal(feed(data.subarray(0, n)).kind, "more", `prefix ${n}`);
    }
  });

  it("caps what it buffers: a huge declared hello or too many tiny records end in too-large", () => {
    // Declared message longer than 16 KiB.
    assert.deepEqual(feed(Uint8Array.from([22, 3, 1, 0, 4, 1, ...u24(MAX_HELLO_BYTES)])), {
      kind: "unknown",
      reason: "too-large",
    });
    // A record longer than 2^14.
    assert.deepEqual(feed(Uint8Array.from([22, 3, 1, ...u16(16385)])), {
      kind: "unknown",
      reason: "too-large",
    });
    // A legal 16 KiB message cut into 1-byte records: more bytes than the cap.
    const big = helloMessage({ extensions: [ext(21, bytes(MAX_HELLO_BYTES - 200, 0))] });
    const res = feed(records(big, 1), 4096);
    assert.deepEqual(res, { kind: "unknown", reason: "too-large" });
    // Endless bytes of a never-ending hello stop at the cap.
    const r = new ClientHelloReader();
    r.push(Uint8Array.from([22, 3, 1, ...u16(16384), 1, ...u24(16380)]));
    let last: ClientHelloResult = { kind: "more" };
    let fed = 0;
    while (last.kind === "more" && fed < 10 * MAX_BUFFERED_BYTES) {
      last = r.push(new Uint8Array(1000));
      fed += 1000;
    }
    assert.notEqual(last.kind, "more");
    assert.ok(r.received <= MAX_BUFFERED_BYTES);
  });

  it("keeps its final answer and ignores what comes after", () => {
    const r = new ClientHelloReader();
    const first = r.push(records(tls13Hello));
    assert.equal(first.kind, "done");
    assert.equal(r.push(Uint8Array.from([1, 2, 3])), first);
  });

  it("fuzz: never throws and always terminates on arbitrary chunked input", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (chunks) => {
        const r = new ClientHelloReader();
        for (const c of chunks) {
          const res = r.push(c);
          assert.ok(res.kind === "more" || res.kind === "done" || res.kind === "unknown");
          if (res.kind === "unknown") assert.notEqual(res.reason, "internal");
        }
      }),
      { numRuns: 3000 },
    );
  });

  it("fuzz: well-framed records with random hello bodies never throw", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 600 }),
        fc.integer({ min: 1, max: 64 }),
        (body, chunk) => {
          const msg = [1, ...u24(body.length), ...body];
          const res = feed(records(msg), chunk);
          if (res.kind === "unknown") assert.notEqual(res.reason, "internal");
          else assert.notEqual(res.kind, "more");
        },
      ),
      { numRuns: 3000 },
    );
  });

  it("fuzz: mutations of a valid hello (bytes flipped, any fragmentation) never throw", () => {
    const base = tls13Hello;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.integer({ min: 1, max: 400 }),
        fc.integer({ min: 1, max: 600 }),
        (edits, frag, chunk) => {
          const m = base.slice();
          for (const [i, v] of edits) m[i] = v;
          const res = feed(records(m, frag), chunk);
          if (res.kind === "unknown") assert.notEqual(res.reason, "internal");
          if (res.kind === "done") {
            // Whatever it reports lies inside the message it read.
            assert.ok(res.hello.legacyId.length <= 32);
            for (const id of res.hello.pskIdentities) assert.ok(id.length >= 1 && id.length < m.length);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});
