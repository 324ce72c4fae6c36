// Property tests: whatever bytes come in, parseSession returns a Session or throws a
// SessionDecodeError, quickly, and never anything else.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { test } from "node:test";
import fc from "fast-check";
import { parseSession, type Session, SessionDecodeError, withTimes } from "../src/session/index.js";
import { testPki } from "./support/certs.js";
import { buildSessionDer, type SessionFields } from "./support/session-der.js";

const SEED = Number(process.env.FC_SEED ?? 20240611);

/** Runs parseSession; a Session or a SessionDecodeError is fine, anything else fails the property. */
function decodeOrReject(input: Uint8Array): Session | SessionDecodeError {
  try {
    const s = parseSession(input, { now: 1 });
    // Touch every accessor: lazily decoded fields must not throw either.
    void [s.id, s.protocol, s.cipherName, s.expiresAt, s.sessionIdContext, s.peerCertificate];
    void [s.hostname, s.ticket, s.ticketLifetimeHint, s.ticketAgeAdd, s.alpn, s.group, s.maxEarlyData];
    void [String(s), JSON.stringify(s), s.isExpiredAt(0)];
    assert.ok(s.id.length <= 32 && s.sessionIdContext.length <= 32);
    assert.ok(Number.isSafeInteger(s.time) && Number.isSafeInteger(s.expiresAt));
    return s;
  } catch (e) {
    if (!(e instanceof SessionDecodeError)) throw e;
    assert.equal(e.name, "SessionDecodeError");
    assert.match(e.message, /^[ -~]+$/, "a short printable message");
    assert.ok(e.message.length < 120);
    return e;
  }
}

const cert = new Uint8Array(new X509Certificate(testPki().cert).raw);
const text = fc.string({ maxLength: 20 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const bytes = (max: number) => fc.uint8Array({ maxLength: max });

/** Builder inputs covering every field, each present or not. */
const fields: fc.Arbitrary<SessionFields> = fc.record(
  {
    protocolVersion: fc.constantFrom(0x0303, 0x0304, 0xfefd, 0x0300),
    cipherId: fc.integer({ min: 0, max: 0xffff }),
    id: bytes(32),
    masterKey: bytes(48),
    keyArg: bytes(8),
    time: fc.integer({ min: 1, max: 2 ** 40 }),
    timeout: fc.integer({ min: 1, max: 2 ** 40 }),
    peerCertificate: fc.constant(cert),
    sessionIdContext: bytes(32),
    verifyResult: fc.integer({ min: 0, max: 80 }),
    hostname: text,
    pskIdentityHint: text,
    pskIdentity: text,
    ticketLifetimeHint: u32,
    ticket: bytes(300),
    compId: fc.uint8Array({ minLength: 1, maxLength: 1 }),
    srpUsername: text,
    flags: fc.integer({ min: 0, max: 3 }),
    ticketAgeAdd: u32,
    maxEarlyData: u32,
    alpn: fc.constantFrom("h2", "http/1.1", ""),
    maxFragmentLengthMode: fc.integer({ min: 0, max: 4 }),
    ticketAppData: bytes(10),
    group: fc.integer({ min: 0, max: 0xffff }),
    peerRpk: bytes(10),
  },
  { requiredKeys: [] },
);

const validDer = fields.map((f) => buildSessionDer(f));
// Mutation tests start from a fixed pool of valid blobs: building one per run would dominate the time.
const pool = fc.sample(validDer, { seed: SEED, numRuns: 300 });
pool.push(buildSessionDer(), buildSessionDer({ timeout: null }));

/** One mutation of a valid blob: the kinds of damage storage, transport or an attacker do. */
const mutated = fc
  .tuple(
    fc.constantFrom(...pool),
    fc.oneof(
      fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
      fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), data: bytes(8) }),
      fc.record({
        kind: fc.constant("delete" as const),
        at: fc.nat(),
        count: fc.integer({ min: 1, max: 8 }),
      }),
      fc.record({
        kind: fc.constant("length" as const),
        nth: fc.nat(),
        value: fc.constantFrom(0, 1, 0x7f, 0x80, 0x81, 0x82, 0x84, 0x85, 0xff),
      }),
    ),
  )
  .map(([der, m]) => {
    const out = Array.from(der);
    const at = "at" in m ? m.at % (out.length + 1) : 0;
    switch (m.kind) {
      case "flip":
        if (at < out.length) out[at] ^= 1 << m.bit;
        break;
      case "set":
        if (at < out.length) out[at] = m.value;
        break;
      case "truncate":
        out.length = at;
        break;
      case "insert":
        out.splice(at, 0, ...m.data);
        break;
      case "delete":
        out.splice(at, m.count);
        break;
      case "length": {
        // Hit a length octet: the byte after each tag of the outer walk is a good candidate.
        const lengthOffsets = [1];
        for (let i = 2; i < out.length; i++)
          if ([0x02, 0x04, 0x30].includes(out[i - 1]) || out[i - 1] >= 0xa0) lengthOffsets.push(i);
        out[lengthOffsets[m.nth % lengthOffsets.length]] = m.value;
        break;
      }
    }
    return Uint8Array.from(out);
  });

test("random bytes give a Session or a SessionDecodeError, nothing else", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (b) => {
      decodeOrReject(b);
    }),
    { seed: SEED, numRuns: 2000 },
  );
});

test("random bytes behind a valid SEQUENCE header give a Session or a SessionDecodeError", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
      const header = b.length < 0x80 ? [0x30, b.length] : [0x30, 0x82, b.length >> 8, b.length & 0xff];
      decodeOrReject(Uint8Array.from([...header, ...b]));
    }),
    { seed: SEED, numRuns: 2000 },
  );
});

test("mutated valid sessions (flips, truncation, insertion, deletion, length changes) never crash", () => {
  fc.assert(
    fc.property(mutated, (b) => {
      decodeOrReject(b);
    }),
    { seed: SEED, numRuns: 5000 },
  );
});

test("any builder session decodes to the fields it was built from", () => {
  fc.assert(
    fc.property(fields, (f) => {
      const s = parseSession(buildSessionDer(f), { now: 7 });
      assert.equal(s.protocolVersion, f.protocolVersion ?? 0x0303);
      assert.equal(s.cipherId, f.cipherId ?? 0xc02f);
      if (f.id) assert.deepEqual(s.id, f.id);
      assert.equal(s.time, f.time ?? 7);
      assert.equal(s.timeout, f.timeout ?? 7200);
      assert.deepEqual(s.sessionIdContext, f.sessionIdContext ?? new Uint8Array(0));
      assert.equal(s.verifyResult, f.verifyResult ?? 0);
      assert.equal(s.hostname, f.hostname);
      assert.equal(s.ticketLifetimeHint, f.ticketLifetimeHint);
      assert.deepEqual(s.ticket, f.ticket);
      assert.equal(s.extendedMasterSecret, ((f.flags ?? 0) & 1) === 1);
      assert.equal(s.ticketAgeAdd, f.ticketAgeAdd);
      assert.equal(s.maxEarlyData, f.maxEarlyData ?? 0);
      assert.equal(s.alpn, f.alpn);
      assert.equal(s.group, f.group);
    }),
    { seed: SEED, numRuns: 600 },
  );
});

test("withTimes on any decodable (even mutated) session round-trips or refuses cleanly", () => {
  fc.assert(
    fc.property(
      fc.oneof(validDer, mutated),
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      (der, time, timeout) => {
        const s = decodeOrReject(der);
        if (s instanceof SessionDecodeError) return;
        let t: Session;
        try {
          t = withTimes(s, { time, timeout });
        } catch (e) {
          // Only growth past the size limit can fail on a session that decoded.
          assert.ok(e instanceof SessionDecodeError && e.reason === "too-large", String(e));
          return;
        }
        const p = parseSession(t.der);
        assert.equal(p.time, time);
        assert.equal(p.timeout, timeout);
        assert.deepEqual(p.id, s.id);
        assert.deepEqual(p.sessionIdContext, s.sessionIdContext);
        assert.equal(p.alpn, s.alpn);
        assert.equal(p.hostname, s.hostname);
        assert.deepEqual(p.ticket, s.ticket);
        assert.deepEqual(p.peerCertificate, s.peerCertificate);
      },
    ),
    { seed: SEED, numRuns: 1000 },
  );
});

test("decoding stays linear on thousands of skipped unknown fields", () => {
  // ~2400 empty [n] fields in ascending high-tag form, filling the 10 KiB limit.
  const extra = Array.from({ length: 2300 }, (_, i) => ({ tag: 200 + i, content: new Uint8Array(0) }));
  const der = buildSessionDer({ time: 1, extra });
  assert.ok(der.length > 9000 && der.length <= 10240, `${der.length}`);
  const started = performance.now();
  for (let i = 0; i < 200; i++) assert.equal(parseSession(der).time, 1);
  assert.ok(performance.now() - started < 1000);
});
