import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { constants, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import tls from "node:tls";
import util from "node:util";
import {
  cipherName,
  knownCiphers,
  MAX_SESSION_DER_BYTES,
  opensslCipherName,
  parseSession,
  protocolName,
  type Session,
  SessionDecodeError,
  type SessionDecodeReason,
  type SslSession,
  withTimes,
} from "../src/session/index.js";
import { sessionMasterKey } from "../src/session/parse.js";
import { testPki } from "./support/certs.js";
import {
  buildSessionDer,
  concat,
  explicit,
  integer,
  newId,
  octets,
  type SessionFields,
  sequence,
  tlv,
} from "./support/session-der.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const bytes = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 13 + seed) & 0xff);

function rejects(input: Uint8Array | string, reason: SessionDecodeReason) {
  assert.throws(
    () => parseSession(input),
    (e: unknown) => e instanceof SessionDecodeError && e.name === "SessionDecodeError" && e.reason === reason,
  );
}

/** Wraps already-encoded SSL_SESSION fields, for layouts the builder will not produce. */
const raw = (...parts: Uint8Array[]) => sequence(...parts);
const head = (f: { id?: Uint8Array; masterKey?: Uint8Array } = {}) => [
  integer(1),
  integer(0x0303),
  octets(Uint8Array.of(0xc0, 0x2f)),
  octets(f.id ?? newId()),
  octets(f.masterKey ?? bytes(48)),
];

const masterKey = bytes(48, 0x77);
const cert = new X509Certificate(testPki().cert);
const full = {
  protocolVersion: 0x0304,
  cipherId: 0x1302,
  id: newId(),
  masterKey,
  keyArg: bytes(8),
  time: 1_700_000_000,
  timeout: 86_400,
  peerCertificate: new Uint8Array(cert.raw),
  sessionIdContext: bytes(32, 5),
  verifyResult: 20,
  hostname: "example.test",
  pskIdentityHint: "hint",
  pskIdentity: "identity",
  ticketLifetimeHint: 172_800,
  ticket: bytes(200, 9),
  compId: Uint8Array.of(1),
  srpUsername: "srp",
  flags: 1,
  ticketAgeAdd: 0xdeadbeef,
  maxEarlyData: 16_384,
  alpn: "h2",
  maxFragmentLengthMode: 2,
  ticketAppData: bytes(3),
  group: 0x001d,
  peerRpk: bytes(4),
};

describe("synthetic sessions", () => {
  test("every field round-trips from the builder", () => {
    const der = buildSessionDer(full);
    const s = parseSession(der);
    assert.equal(s.der, der);
    assert.deepEqual(s.id, full.id);
    assert.equal(s.protocolVersion, 0x0304);
    assert.equal(s.protocol, "TLSv1.3");
    assert.equal(s.cipherId, 0x1302);
    assert.equal(s.cipherName, "TLS_AES_256_GCM_SHA384");
    assert.equal(s.time, full.time);
    assert.equal(s.timeout, full.timeout);
    assert.equal(s.expiresAt, full.time + full.timeout);
    assert.deepEqual(s.peerCertificate, full.peerCertificate);
    assert.deepEqual(s.sessionIdContext, full.sessionIdContext);
    assert.equal(s.verifyResult, 20);
    assert.equal(s.hostname, "example.test");
    assert.equal(s.ticketLifetimeHint, 172_800);
    assert.deepEqual(s.ticket, full.ticket);
    assert.equal(s.extendedMasterSecret, true);
    assert.equal(s.ticketAgeAdd, 0xdeadbeef);
    assert.equal(s.maxEarlyData, 16_384);
    assert.equal(s.alpn, "h2");
    assert.equal(s.group, 0x001d);
    assert.equal(s.pskIdentityHint, "hint");
    assert.equal(s.pskIdentity, "identity");
    assert.equal(s.srpUsername, "srp");
    assert.equal(s.maxFragmentLengthMode, 2);
  });

  test("byte fields are zero-copy views of der", () => {
    const der = buildSessionDer(full);
    const s = parseSession(der);
    for (const b of [s.id, s.sessionIdContext, s.peerCertificate!, s.ticket!])
      assert.equal(b.buffer, der.buffer);
  });

  test("optional fields left out read as absent or zero", () => {
    const s = parseSession(buildSessionDer({ time: 1000, timeout: 10 }));
    assert.equal(s.peerCertificate, undefined);
    assert.equal(s.hostname, undefined);
    assert.equal(s.ticket, undefined);
    assert.equal(s.ticketLifetimeHint, undefined);
    assert.equal(s.ticketAgeAdd, undefined);
    assert.equal(s.alpn, undefined);
    assert.equal(s.group, undefined);
    assert.equal(s.verifyResult, 0);
    assert.equal(s.maxEarlyData, 0);
    assert.equal(s.extendedMasterSecret, false);
    assert.equal(s.sessionIdContext.length, 0);
    assert.equal(s.pskIdentityHint, undefined);
    assert.equal(s.pskIdentity, undefined);
    assert.equal(s.srpUsername, undefined);
    assert.equal(s.maxFragmentLengthMode, 0);
  });

  test("a session without session_id_context has an empty one", () => {
    const s = parseSession(raw(...head(), explicit(1, integer(5))));
    assert.deepEqual(s.sessionIdContext, new Uint8Array(0));
  });

  test("missing timeout reads as 3 s and missing time as options.now", () => {
    const s = parseSession(buildSessionDer({ timeout: null }), { now: 12345 });
    assert.equal(s.time, 12345);
    assert.equal(s.timeout, 3);
    assert.equal(s.expiresAt, 12348);
  });

  test("missing time defaults to the current clock when no now is given", () => {
    const before = Math.floor(Date.now() / 1000);
    const s = parseSession(buildSessionDer());
    assert.ok(s.time >= before && s.time <= Math.floor(Date.now() / 1000));
  });

  test("time and timeout of 0 read as missing, as OpenSSL's ZINT64 does", () => {
    const s = parseSession(buildSessionDer({ time: 0, timeout: 0 }), { now: 99 });
    assert.equal(s.time, 99);
    assert.equal(s.timeout, 3);
  });

  test("a negative timeout counts as 0", () => {
    const s = parseSession(
      raw(...head(), explicit(1, integer(100)), explicit(2, tlv(2, Uint8Array.of(0xff)))),
    );
    assert.equal(s.timeout, 0);
    assert.equal(s.expiresAt, 100);
  });

  test("a huge timeout saturates expiresAt at MAX_SAFE_INTEGER and never expires", () => {
    const int64Max = tlv(2, Uint8Array.of(0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
    const s = parseSession(raw(...head(), explicit(1, integer(1_700_000_000)), explicit(2, int64Max)));
    assert.equal(s.timeout, Number.MAX_SAFE_INTEGER);
    assert.equal(s.expiresAt, Number.MAX_SAFE_INTEGER);
    assert.equal(s.isExpiredAt(Number.MAX_SAFE_INTEGER), false);
    const big = parseSession(buildSessionDer({ time: 1_700_000_000, timeout: Number.MAX_SAFE_INTEGER - 5 }));
    assert.equal(big.expiresAt, Number.MAX_SAFE_INTEGER);
  });

  test("isExpiredAt is strict: expired only after time + timeout", () => {
    const s = parseSession(buildSessionDer({ time: 1000, timeout: 300 }));
    assert.equal(s.isExpiredAt(999), false);
    assert.equal(s.isExpiredAt(1300), false);
    assert.equal(s.isExpiredAt(1301), true);
  });

  test("session ids of 0..32 bytes are accepted and 33 rejected", () => {
    for (let n = 0; n <= 32; n++) assert.equal(parseSession(buildSessionDer({ id: bytes(n) })).id.length, n);
    rejects(buildSessionDer({ id: bytes(33) }), "id-too-long");
  });

  test("session id context over 32 bytes is rejected", () => {
    assert.equal(parseSession(buildSessionDer({ sessionIdContext: bytes(32) })).sessionIdContext.length, 32);
    rejects(buildSessionDer({ sessionIdContext: bytes(33) }), "sid-ctx-too-long");
  });

  test("a master key over 48 bytes is rejected", () => {
    parseSession(buildSessionDer({ masterKey: bytes(48) }));
    rejects(buildSessionDer({ masterKey: bytes(49) }), "master-key-too-long");
  });

  test("a structure version other than 1 is rejected", () => {
    rejects(buildSessionDer({ version: 0 }), "bad-version");
    rejects(buildSessionDer({ version: 2 }), "bad-version");
  });

  test("a cipher that is not 2 bytes is rejected", () => {
    const der = raw(
      integer(1),
      integer(0x0303),
      octets(Uint8Array.of(1, 2, 3)),
      octets(newId()),
      octets(bytes(48)),
    );
    rejects(der, "bad-cipher");
  });

  test("ssl_version outside 0..0xffff is rejected; unknown versions are named", () => {
    rejects(buildSessionDer({ protocolVersion: 0x10000 }), "bad-protocol");
    assert.equal(parseSession(buildSessionDer({ protocolVersion: 0x0305 })).protocol, "unknown (0x0305)");
  });

  test("protocol names follow OpenSSL's", () => {
    const names: [number, string][] = [
      [0x0300, "SSLv3"],
      [0x0301, "TLSv1"],
      [0x0302, "TLSv1.1"],
      [0x0303, "TLSv1.2"],
      [0x0304, "TLSv1.3"],
      [0xfeff, "DTLSv1"],
      [0xfefd, "DTLSv1.2"],
      [0x0100, "unknown (0x0100)"],
    ];
    for (const [v, name] of names) assert.equal(protocolName(v), name);
  });

  test("unknown fields after [20] are skipped, in low and high tag forms", () => {
    const der = buildSessionDer({
      time: 5,
      alpn: "h2",
      extra: [
        { tag: 21, content: integer(7) },
        { tag: 30, content: octets(bytes(3)) },
        { tag: 31, content: new Uint8Array(0) },
        { tag: 1000, content: sequence(integer(1)) },
      ],
    });
    const s = parseSession(der);
    assert.equal(s.alpn, "h2");
    assert.equal(s.time, 5);
  });

  test("a primitive unknown field [21] is skipped too", () => {
    parseSession(concatSeq(buildSessionDer(), tlv(0x95, bytes(2))));
  });

  test("fields out of order or repeated are rejected", () => {
    rejects(raw(...head(), explicit(2, integer(5)), explicit(1, integer(5))), "bad-tag");
    rejects(raw(...head(), explicit(1, integer(5)), explicit(1, integer(6))), "bad-tag");
    rejects(
      concatSeq(buildSessionDer({ extra: [{ tag: 22, content: integer(1) }] }), explicit(21, integer(1))),
      "bad-tag",
    );
  });

  test("universal-class or non-EXPLICIT elements among the optional fields are rejected", () => {
    rejects(raw(...head(), integer(5)), "bad-tag");
    rejects(raw(...head(), tlv(0x81, integer(5))), "bad-tag"); // [1] IMPLICIT instead of EXPLICIT
    rejects(raw(...head(), tlv(0xa0, octets(bytes(2)))), "bad-tag"); // key_arg constructed
  });

  test("a field holding the wrong type is rejected", () => {
    rejects(raw(...head(), explicit(1, octets(bytes(2)))), "bad-tag");
    rejects(raw(...head(), explicit(3, octets(bytes(2)))), "bad-tag"); // peer cert is a SEQUENCE
    rejects(raw(...head(), explicit(6, integer(2))), "bad-tag");
  });

  test("extra bytes inside an EXPLICIT field are rejected", () => {
    rejects(raw(...head(), explicit(1, concat([integer(5), integer(6)]))), "trailing-bytes");
  });

  test("out-of-range integers are rejected", () => {
    rejects(buildSessionDer({ ticketAgeAdd: 0x1_0000_0000 }), "bad-integer");
    rejects(raw(...head(), explicit(14, tlv(2, Uint8Array.of(0xff)))), "bad-integer"); // negative uint32
    rejects(raw(...head(), explicit(1, tlv(2, new Uint8Array(0)))), "bad-integer");
    rejects(raw(...head(), explicit(1, tlv(2, new Uint8Array(10)))), "bad-integer");
    rejects(raw(...head(), explicit(5, integer(0x8000_0000))), "bad-integer");
  });

  test("comp_id must be 1 byte", () => {
    rejects(buildSessionDer({ compId: bytes(2) }), "bad-field");
  });

  test("bytes after the SEQUENCE are rejected", () => {
    rejects(concat([buildSessionDer(), Uint8Array.of(0)]), "trailing-bytes");
  });

  test("indefinite and over-long length forms are rejected", () => {
    const der = buildSessionDer();
    const indefinite = concat([Uint8Array.of(0x30, 0x80), der.subarray(2), Uint8Array.of(0, 0)]);
    rejects(indefinite, "bad-length");
    rejects(Uint8Array.of(0x30, 0x85, 0, 0, 0, 0, 1, 0), "bad-length");
  });

  test("an inner length overrunning its enclosing field is a bad length, past the input truncation", () => {
    // [1] holds 3 bytes but its INTEGER claims 5, and the input goes on after [1].
    rejects(
      raw(...head(), tlv(0xa1, Uint8Array.of(0x02, 0x05, 0x01)), explicit(2, integer(5))),
      "bad-length",
    );
    // session_id claims 40 bytes where only 10 are left.
    const inner = concat([
      integer(1),
      integer(0x0303),
      octets(Uint8Array.of(0xc0, 0x2f)),
      Uint8Array.of(4, 40),
    ]);
    rejects(tlv(0x30, concat([inner, bytes(10)])), "truncated");
  });

  test("truncation at every byte offset throws SessionDecodeError", () => {
    const der = buildSessionDer(full);
    for (let n = 0; n < der.length; n++) {
      assert.throws(() => parseSession(der.subarray(0, n)), SessionDecodeError, `length ${n}`);
    }
    rejects(new Uint8Array(0), "truncated");
    rejects(der.subarray(0, der.length - 1), "truncated");
  });

  test("sessions over 10 KiB are rejected; exactly 10 KiB is accepted", () => {
    assert.equal(MAX_SESSION_DER_BYTES, 10240);
    const ticketLen = ticketLengthFor(MAX_SESSION_DER_BYTES, {});
    const exact = buildSessionDer({ ticket: new Uint8Array(ticketLen) });
    assert.equal(exact.length, MAX_SESSION_DER_BYTES);
    assert.equal(parseSession(exact).ticket?.length, ticketLen);
    rejects(buildSessionDer({ ticket: new Uint8Array(ticketLen + 1) }), "too-large");
    rejects(new Uint8Array(1 << 20), "too-large");
  });

  test("PEM from `openssl s_client -sess_out` is accepted, text around it ignored", () => {
    const der = buildSessionDer(full);
    const s = parseSession(`junk before\n${pem(der)}junk after\n`);
    assert.deepEqual(s.der, der);
    assert.deepEqual(s.id, full.id);
    assert.equal(s.der.buffer.byteLength, der.length, "PEM bytes are not a view of a pooled slab");
  });

  test("bad PEM is rejected", () => {
    const der = buildSessionDer();
    rejects("", "bad-pem");
    rejects(hex(der), "bad-pem");
    rejects(pem(der).replace("BEGIN SSL SESSION PARAMETERS", "BEGIN CERTIFICATE"), "bad-pem");
    rejects(pem(der).replace("-----END SSL SESSION PARAMETERS-----", ""), "bad-pem");
    rejects(pem(der).replace(/\n[A-Za-z0-9]/, "\n*"), "bad-pem");
    rejects(pem(der).replace(/[A-Za-z0-9+/]=*\n-----END/, "\n-----END"), "bad-pem"); // length not 4k
    rejects(pem(Uint8Array.of(0x30, 0x00)), "truncated");
    rejects(pem(new Uint8Array(11000)), "too-large");
  });

  test("input that is neither bytes nor a string is rejected", () => {
    for (const bad of [undefined, null, 42, {}, [0x30, 0], new ArrayBuffer(4)]) {
      assert.throws(
        () => parseSession(bad as unknown as Uint8Array),
        (e: unknown) => {
          return e instanceof SessionDecodeError && e.reason === "bad-input";
        },
      );
    }
  });

  test("a Buffer (what Node hands out) is accepted as is", () => {
    const der = Buffer.from(buildSessionDer());
    assert.equal(parseSession(der).der, der);
  });

  test("errors carry reason and offset but no session bytes", () => {
    const der = buildSessionDer({ id: bytes(33, 0xab), masterKey });
    try {
      parseSession(der);
      assert.fail("no error");
    } catch (e) {
      assert.ok(e instanceof SessionDecodeError);
      assert.equal(e.reason, "id-too-long");
      assert.equal(typeof e.offset, "number");
      assert.ok(!e.message.includes(hex(bytes(33, 0xab)).slice(0, 8)));
      assert.doesNotMatch(e.message, /[0-9a-f]{8}/i);
    }
  });
});

describe("secrets", () => {
  test("String, JSON.stringify and util.inspect show neither the master key nor the DER", () => {
    const der = buildSessionDer(full);
    const s = parseSession(der);
    assertNoSecrets(s, hex(masterKey), hex(der));
  });

  test("the master secret is not reachable through any property", () => {
    const s = parseSession(buildSessionDer(full));
    assert.deepEqual(Object.keys(s), []);
    assert.deepEqual(Object.getOwnPropertyNames(s), []);
    const summary = s.toJSON() as unknown as Record<string, unknown>;
    assert.equal(summary.der, undefined);
    assert.equal(summary.masterKey, undefined);
    assert.equal(summary.id, hex(full.id));
  });

  test("sessionMasterKey (not a member, not in the package surface) reads it for inspect --show-secrets", async () => {
    const s = parseSession(buildSessionDer(full));
    assert.equal(hex(sessionMasterKey(s)), hex(masterKey));
    assert.equal(sessionMasterKey(parseSession(buildSessionDer({ masterKey: new Uint8Array(0) }))).length, 0);
    const surface = (await import("../src/index.js")) as Record<string, unknown>;
    assert.equal(surface.sessionMasterKey, undefined);
    assert.equal(
      ((await import("../src/session/index.js")) as Record<string, unknown>).sessionMasterKey,
      undefined,
    );
  });

  test("toString names protocol, cipher and id", () => {
    const s = parseSession(buildSessionDer({ ...full, time: 10, timeout: 20 }));
    assert.equal(
      String(s),
      `SslSession(TLSv1.3 TLS_AES_256_GCM_SHA384 id=${hex(full.id)} time=10 timeout=20)`,
    );
  });
});

describe("cipher names", () => {
  test("cipherName agrees with `openssl ciphers -stdname` for every suite in the table", () => {
    const out = execFileSync(
      "openssl",
      [
        "ciphers",
        "-V",
        "-stdname",
        "-ciphersuites",
        "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256",
        "ALL:@SECLEVEL=0",
      ],
      { encoding: "utf8" },
    );
    const openssl = new Map<number, string>();
    for (const m of out.matchAll(/0x([0-9A-F]{2}),0x([0-9A-F]{2}) - (\S+)/g)) {
      openssl.set(Number.parseInt(m[1] + m[2], 16), m[3]);
    }
    const table = knownCiphers();
    assert.ok(table.size >= 30);
    for (const [id, name] of table) assert.equal(openssl.get(id), name, `0x${id.toString(16)}`);
    for (const m of out.matchAll(/0x([0-9A-F]{2}),0x([0-9A-F]{2}) - \S+\s+- (\S+)/g)) {
      const id = Number.parseInt(m[1] + m[2], 16);
      if (table.has(id)) assert.equal(opensslCipherName(id), m[3], `0x${id.toString(16)}`);
    }
    assert.equal(opensslCipherName(0xc02f), "ECDHE-RSA-AES128-GCM-SHA256");
    assert.equal(opensslCipherName(0xffff), undefined);
    assert.equal(cipherName(0x1301), "TLS_AES_128_GCM_SHA256");
    assert.equal(cipherName(0xffff), undefined);
  });

  test("every suite OpenSSL offers by DEFAULT (but PSK/SRP) and Node names explicitly has a name", () => {
    const names = new Set(knownCiphers().values());
    const expand = (list: string) =>
      execFileSync("openssl", ["ciphers", "-stdname", list], { encoding: "utf8" })
        .trim()
        .split("\n")
        .map((line) => line.split(" - ")[0].trim());
    // Node's list ends in selectors (HIGH:...), which add DSS, CCM and ARIA suites nobody
    // negotiates with a default certificate; its explicit names come first.
    const nodeNamed = tls.DEFAULT_CIPHERS.split(":").filter((c) => /^[A-Z0-9-]+$/.test(c) && c !== "HIGH");
    for (const std of [...expand("DEFAULT:!PSK:!SRP"), ...expand(nodeNamed.join(":"))]) {
      assert.ok(names.has(std), std);
    }
  });
});

describe("withTimes", () => {
  test("replaces time and timeout and leaves every other field equal", () => {
    const der = buildSessionDer(full);
    const s = parseSession(der);
    const t = withTimes(s, { time: 1_800_000_000, timeout: 300 });
    const p = parseSession(t.der);
    assert.equal(p.time, 1_800_000_000);
    assert.equal(p.timeout, 300);
    assert.equal(t.time, 1_800_000_000);
    assert.equal(t.expiresAt, 1_800_000_300);
    assert.deepEqual(summaryWithout(p), summaryWithout(s));
    assert.deepEqual(p.peerCertificate, s.peerCertificate);
    assert.deepEqual(p.ticket, s.ticket);
    // The master key (and every other byte) is carried over untouched.
    assert.ok(hex(p.der).includes(hex(masterKey)));
  });

  test("with nothing to change, OpenSSL's own encoding comes back byte-identical", () => {
    const der = buildSessionDer({ time: 1_700_000_000, timeout: 7200, alpn: "h2" });
    assert.deepEqual(withTimes(parseSession(der), {}).der, der);
    assert.deepEqual(withTimes(parseSession(der), { time: 1_700_000_000 }).der, der);
  });

  test("changes only the [1]/[2] fields and the outer length", () => {
    const der = buildSessionDer({ ...full, time: 1, timeout: 2 });
    const t = withTimes(parseSession(der), { time: 0x7fff_ffff, timeout: 0x10000 });
    // Old [1]/[2] are 10 bytes (a1 03 02 01 01, a2 03 02 01 02), the new ones 8 + 7.
    const grow = 5;
    assert.equal(t.der.length, der.length + grow);
    const at = hex(der).indexOf("a103020101");
    assert.ok(at > 0);
    const cut = at / 2;
    const sameHeader = 4; // 30 82 xx xx in both
    assert.deepEqual(t.der.subarray(sameHeader, cut), der.subarray(sameHeader, cut));
    assert.deepEqual(t.der.subarray(cut + 10 + grow), der.subarray(cut + 10));
  });

  test("inserts time and timeout when the session had none", () => {
    const der = buildSessionDer({ timeout: null, alpn: "h2" });
    const s = parseSession(der, { now: 4242 });
    const t = withTimes(s, { timeout: 60 });
    assert.equal(parseSession(t.der, { now: 1 }).time, 4242, "the defaulted time is pinned");
    assert.equal(parseSession(t.der).timeout, 60);
    assert.equal(parseSession(t.der).alpn, "h2");
  });

  test("keeps key_arg and unknown fields in place", () => {
    const der = buildSessionDer({ keyArg: bytes(8), time: 9, extra: [{ tag: 25, content: integer(3) }] });
    const t = withTimes(parseSession(der), { time: 10 });
    assert.equal(t.time, 10);
    assert.ok(hex(t.der).includes(`8008${hex(bytes(8))}a10302010a`));
    assert.ok(hex(t.der).endsWith("b903020103"));
  });

  test("the outer length form grows and shrinks across 0x7f and 0xff", () => {
    for (const ticketLen of [0, 20, 30, 60, 120, 200, 255, 300]) {
      const der = buildSessionDer({ ticket: new Uint8Array(ticketLen), time: 1, timeout: 1 });
      for (const v of [1, 0x7f, 0x80, 0xffff, 0x1_0000_0000, Number.MAX_SAFE_INTEGER]) {
        const t = withTimes(parseSession(der), { time: v, timeout: v });
        const p = parseSession(t.der);
        assert.equal(p.time, v);
        assert.equal(p.timeout, v);
        assert.equal(p.ticket?.length, ticketLen);
      }
    }
  });

  test("a zero value leaves the field out, as i2d_SSL_SESSION does", () => {
    const s = parseSession(buildSessionDer({ time: 100, timeout: 100 }));
    const t = withTimes(s, { timeout: 0 });
    assert.ok(!hex(t.der).includes("a203"));
    assert.equal(parseSession(t.der).timeout, 3);
  });

  test("negative or fractional values are a RangeError", () => {
    const s = parseSession(buildSessionDer());
    assert.throws(() => withTimes(s, { time: -1 }), RangeError);
    assert.throws(() => withTimes(s, { timeout: 1.5 }), RangeError);
    assert.throws(() => withTimes(s, { timeout: Number.NaN }), RangeError);
  });

  test("a result over 10 KiB is a too-large SessionDecodeError", () => {
    const f = { time: 1, timeout: 1 };
    const der = buildSessionDer({ ...f, ticket: new Uint8Array(ticketLengthFor(MAX_SESSION_DER_BYTES, f)) });
    assert.equal(der.length, MAX_SESSION_DER_BYTES);
    const s = parseSession(der);
    assert.throws(
      () => withTimes(s, { time: 1_800_000_000 }),
      (e: unknown) => e instanceof SessionDecodeError && e.reason === "too-large",
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Real sessions from Node's own TLS stack.

interface ServerRun {
  port: number;
  issued: { id: Buffer; der: Buffer }[];
  keylog: string[];
  close(): Promise<void>;
}

async function startServer(opts: {
  maxVersion: tls.SecureVersion;
  alpn?: string[];
  resume?: (id: Buffer) => Uint8Array | null;
}): Promise<ServerRun> {
  const pki = testPki();
  const srv = tls.createServer({
    key: pki.key,
    cert: pki.cert,
    maxVersion: opts.maxVersion,
    secureOptions: constants.SSL_OP_NO_TICKET,
    ALPNProtocols: opts.alpn,
  });
  const run: ServerRun = {
    port: 0,
    issued: [],
    keylog: [],
    close: () => new Promise((res) => srv.close(() => res())),
  };
  srv.on("newSession", (id: Buffer, der: Buffer, done: () => void) => {
    run.issued.push({ id, der });
    done();
  });
  srv.on("resumeSession", (id: Buffer, cb: (err: Error | null, der: Buffer | null) => void) => {
    const der = opts.resume?.(id);
    cb(null, der ? Buffer.from(der) : null);
  });
  srv.on("keylog", (line: Buffer) => run.keylog.push(line.toString()));
  srv.on("secureConnection", (s) => s.end("hello"));
  await new Promise<void>((res) => srv.listen(0, "127.0.0.1", res));
  run.port = (srv.address() as AddressInfo).port;
  return run;
}

interface ClientRun {
  sessions: Buffer[];
  reused: boolean;
  cipher: string;
  protocol: string | null;
  before: number;
  after: number;
}

function connect(port: number, opts: { session?: Uint8Array; alpn?: string[] } = {}): Promise<ClientRun> {
  const before = Math.floor(Date.now() / 1000);
  return new Promise((resolve, reject) => {
    const run: ClientRun = { sessions: [], reused: false, cipher: "", protocol: null, before, after: 0 };
    const c = tls.connect({
      port,
      host: "127.0.0.1",
      servername: "localhost",
      ca: testPki().caCert,
      session: opts.session ? Buffer.from(opts.session) : undefined,
      ALPNProtocols: opts.alpn,
    });
    c.on("session", (s: Buffer) => run.sessions.push(s));
    c.on("secureConnect", () => {
      run.reused = c.isSessionReused();
      run.cipher = c.getCipher().standardName;
      run.protocol = c.getProtocol();
    });
    c.on("data", () => {});
    c.on("end", () => c.end());
    c.on("close", () => {
      run.after = Math.floor(Date.now() / 1000);
      resolve(run);
    });
    c.on("error", reject);
  });
}

const serverCertDer = () => new Uint8Array(new X509Certificate(testPki().cert).raw);

describe("real sessions from Node's TLS", () => {
  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`${version} server and client sessions decode with the handshake's id, protocol, cipher and times`, async () => {
      const srv = await startServer({ maxVersion: version, alpn: ["h2", "http/1.1"] });
      try {
        const cli = await connect(srv.port, { alpn: ["h2"] });
        assert.equal(cli.protocol, version);
        const expectedIssued = version === "TLSv1.2" ? 1 : 2; // TLS 1.3: two tickets (R14)
        assert.equal(srv.issued.length, expectedIssued);
        assert.equal(cli.sessions.length, expectedIssued);
        const pv = version === "TLSv1.2" ? 0x0303 : 0x0304;

        for (const { id, der } of srv.issued) {
          const s = parseSession(der);
          sameBytes(s.id, id);
          assert.equal(s.id.length, 32);
          assert.equal(s.protocolVersion, pv);
          assert.equal(s.protocol, version);
          assert.equal(s.cipherName, cli.cipher);
          assert.ok(s.time >= cli.before && s.time <= cli.after, "time is the handshake's");
          assert.equal(s.timeout, 7200, "Node's default sessionTimeout is really 7200 s");
          assert.equal(s.alpn, "h2");
          assert.equal(s.peerCertificate, undefined, "no client certificate");
          assert.equal(s.sessionIdContext.length, 32, "Node's default context: hex of an argv hash");
          assert.equal(s.extendedMasterSecret, version === "TLSv1.2");
          assert.equal(s.ticket, undefined);
          assert.ok(s.der.length >= 150 && s.der.length <= 180, `server session is ${s.der.length} B`);
        }

        for (const der of cli.sessions) {
          const s = parseSession(der);
          assert.equal(s.protocol, version);
          assert.equal(s.cipherName, cli.cipher);
          assert.equal(s.timeout, 7200);
          sameBytes(s.peerCertificate, serverCertDer());
          assert.equal(s.verifyResult, 0);
          assert.equal(s.alpn, "h2");
          // OpenSSL's client records the hostname only when the server acknowledges SNI, and a
          // Node server never does (see the openssl s_server test below).
          assert.equal(s.hostname, undefined);
          if (version === "TLSv1.3") {
            assert.ok(s.ticket, "a TLS 1.3 client session carries its ticket");
            assert.equal(s.ticket.length, 32, "stateful ticket: the identity is the session id");
            assert.ok(
              srv.issued.some((x) => hex(x.id) === hex(s.ticket!)),
              "the ticket is one of the ids the server issued",
            );
            assert.equal(s.ticketLifetimeHint, 7200);
            assert.equal(typeof s.ticketAgeAdd, "number");
          } else {
            sameBytes(s.id, srv.issued[0].id);
          }
          assert.ok(s.der.length >= 500 && s.der.length <= 1200, `client session is ${s.der.length} B`);
        }
      } finally {
        await srv.close();
      }
    });
  }

  test("a real TLS 1.2 session's master key (from keylog) never shows in String, JSON or inspect", async () => {
    const srv = await startServer({ maxVersion: "TLSv1.2" });
    try {
      const cli = await connect(srv.port);
      const line = srv.keylog.find((l) => l.startsWith("CLIENT_RANDOM "));
      assert.ok(line);
      const mk = line.trim().split(" ")[2].toLowerCase();
      assert.equal(mk.length, 96);
      for (const der of [srv.issued[0].der, cli.sessions[0]]) {
        assert.ok(hex(der).includes(mk), "the DER does hold the master key");
        assertNoSecrets(parseSession(der), mk, hex(der));
      }
    } finally {
      await srv.close();
    }
  });

  test("truncating a real client session at every offset throws SessionDecodeError", async () => {
    const srv = await startServer({ maxVersion: "TLSv1.3" });
    try {
      const der = (await connect(srv.port)).sessions[0];
      for (let n = 0; n < der.length; n++)
        assert.throws(() => parseSession(der.subarray(0, n)), SessionDecodeError);
    } finally {
      await srv.close();
    }
  });

  test("Node resumes TLS 1.2 sessions re-encoded by withTimes, and refuses an expired one", async () => {
    const now = Math.floor(Date.now() / 1000);
    const store = new Map<string, Uint8Array>();
    const srv = await startServer({ maxVersion: "TLSv1.2", resume: (id) => store.get(hex(id)) ?? null });
    try {
      const first = await connect(srv.port);
      const serverSession = parseSession(srv.issued[0].der);
      const clientSession = parseSession(first.sessions[0]);

      // Both sides re-encoded: the server's copy in the store, the client's offered back.
      store.set(hex(serverSession.id), withTimes(serverSession, { time: now - 10, timeout: 600 }).der);
      const client = withTimes(clientSession, { time: now - 10, timeout: 600 });
      const second = await connect(srv.port, { session: client.der });
      assert.equal(second.reused, true, "resumed from re-encoded DER");

      // The server honours the new times: an expired copy is a miss (full handshake).
      store.set(hex(serverSession.id), withTimes(serverSession, { time: now - 100, timeout: 10 }).der);
      const third = await connect(srv.port, { session: client.der });
      assert.equal(third.reused, false, "expired re-encoded session not resumed");
    } finally {
      await srv.close();
    }
  });

  test("a TLS 1.3 client session re-encoded by withTimes is accepted by tls.connect", async () => {
    const srv = await startServer({ maxVersion: "TLSv1.3" });
    try {
      const first = await connect(srv.port);
      const t = withTimes(parseSession(first.sessions[0]), { time: Math.floor(Date.now() / 1000) });
      const again = await connect(srv.port, { session: t.der });
      assert.equal(again.protocol, "TLSv1.3");
    } finally {
      await srv.close();
    }
  });
});

describe("openssl command line", () => {
  test("`openssl s_client -sess_out` PEM against a Node server matches `openssl sess_id -text`", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sesscache-sess-"));
    for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
      const srv = await startServer({ maxVersion: version });
      const file = join(dir, `${version}.pem`);
      try {
        await run("openssl", [
          "s_client",
          "-connect",
          `127.0.0.1:${srv.port}`,
          "-servername",
          "localhost",
          "-CAfile",
          testPki().caFile,
          "-ign_eof", // stay for the TLS 1.3 tickets, which come after the handshake
          "-sess_out",
          file,
        ]);
      } finally {
        await srv.close();
      }
      const text = readFileSync(file, "utf8");
      assert.match(text, /-----BEGIN SSL SESSION PARAMETERS-----/);
      const s = parseSession(text);
      const info = execFileSync("openssl", ["sess_id", "-in", file, "-noout", "-text"], { encoding: "utf8" });
      const field = (name: string) => new RegExp(`^\\s*${name}\\s*:\\s*(.*)$`, "m").exec(info)?.[1].trim();
      assert.equal(field("Protocol"), version);
      assert.equal(field("Session-ID")?.toLowerCase(), hex(s.id));
      assert.equal(field("Timeout"), `${s.timeout} (sec)`);
      assert.equal(Number(field("Start Time")), s.time);
      assert.equal(field("Extended master secret"), s.extendedMasterSecret ? "yes" : "no");
      assert.equal(s.protocol, version);
      assert.equal(s.timeout, 7200);
      sameBytes(s.peerCertificate, serverCertDer());
    }
  });

  test("a client session records the hostname when the server acknowledges SNI (openssl s_server)", async () => {
    const pki = testPki();
    const port = await freePort();
    const server = spawn(
      "openssl",
      [
        "s_server",
        "-accept",
        `127.0.0.1:${port}`,
        "-cert",
        pki.certFile,
        "-key",
        pki.keyFile,
        "-servername",
        "localhost",
        "-cert2",
        pki.certFile,
        "-key2",
        pki.keyFile,
        "-tls1_2",
        "-quiet",
        "-naccept",
        "1",
      ],
      { stdio: ["ignore", "ignore", "ignore"] },
    );
    try {
      const der = await retry(
        () =>
          new Promise<Buffer>((resolve, reject) => {
            const c = tls.connect({ port, host: "127.0.0.1", servername: "localhost", ca: pki.caCert });
            c.on("session", (s: Buffer) => {
              resolve(s);
              c.destroy();
            });
            c.on("error", reject);
          }),
      );
      const s = parseSession(der);
      assert.equal(s.hostname, "localhost");
      assert.ok(s.ticket, "s_server issues a stateless TLS 1.2 ticket");
    } finally {
      server.kill();
    }
  });
});

// ---------------------------------------------------------------------------------------------

function assertNoSecrets(s: Session, masterHex: string, derHex: string) {
  const shown = [
    String(s),
    `${s}`,
    JSON.stringify(s),
    JSON.stringify({ nested: [s] }),
    util.inspect(s),
    util.inspect(s, { depth: 9, showHidden: true }),
    util.inspect({ a: { b: s } }, { depth: 9, showHidden: true }),
    util.format("%o %O %j %s", s, s, s, s),
  ];
  for (const text of shown) {
    const flat = text.toLowerCase().replace(/[^0-9a-f]/g, "");
    assert.ok(!flat.includes(masterHex.toLowerCase()), `master key in: ${text.slice(0, 80)}`);
    assert.ok(!flat.includes(derHex.toLowerCase()), "der in output");
  }
}

function sameBytes(actual: Uint8Array | undefined, expected: Uint8Array) {
  assert.ok(actual, "bytes present");
  assert.equal(hex(actual), hex(expected));
}

function summaryWithout(s: SslSession) {
  const { time: _t, timeout: _o, expiresAt: _e, derLength: _d, ...rest } = s.toJSON();
  return rest;
}

function pem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64");
  return `-----BEGIN SSL SESSION PARAMETERS-----\n${b64.replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END SSL SESSION PARAMETERS-----\n`;
}

/** The ticket length that makes buildSessionDer(f + ticket) exactly `size` bytes. */
function ticketLengthFor(size: number, f: SessionFields): number {
  const id = newId();
  for (let n = size - 200; n < size; n++) {
    if (buildSessionDer({ ...f, id, ticket: new Uint8Array(n) }).length === size) return n;
  }
  throw new Error(`no ticket length gives ${size} bytes`);
}

/** Appends an already-encoded field to a session's SEQUENCE. */
function concatSeq(der: Uint8Array, field: Uint8Array): Uint8Array {
  const headerLen = der[1] & 0x80 ? 2 + (der[1] & 0x7f) : 2;
  return tlv(0x30, concat([der.subarray(headerLen), field]));
}

/** Runs a command with stdin at EOF. Its exit code is not checked: s_client exits 1 when a TLS 1.3
 * server closes without close_notify, after writing the session. */
function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ["pipe", "ignore", "ignore"] });
    p.stdin.end();
    p.on("error", reject);
    p.on("exit", () => resolve());
  });
}

/** A port the OS just handed out and released: free unless something grabs it in between. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function retry<T>(fn: () => Promise<T>, tries = 50): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= tries) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
