// The client cache without a network: identity keying, choosing (R22), expiry, the per-identity
// cap, consistency with the engine's evictions, and the encrypted file persistence.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { ClientSessionCache, clientIdentity, MAX_SESSION_LIFETIME } from "../src/client/index.js";
import { FileSessionStore } from "../src/stores/file-store.js";
import { buildSessionDer, newId } from "./support/session-der.js";

const T0 = 1_800_000_000;
const TLS12 = 0x0303;
const TLS13 = 0x0304;

function fakeClock(start = T0) {
  const c = { now: start, clock: () => c.now };
  return c;
}

function session(pv: number, fields: { time?: number; timeout?: number; hint?: number } = {}) {
  return buildSessionDer({
    protocolVersion: pv,
    cipherId: pv === TLS13 ? 0x1301 : 0xc02f,
    id: newId(),
    time: fields.time ?? T0,
    timeout: fields.timeout ?? 7200,
    ticketLifetimeHint: fields.hint,
    ticket: fields.hint === undefined ? undefined : randomBytes(64),
    hostname: "localhost",
  });
}

// A function, so an earlier assertion on the property does not narrow it for later reads.
const reasonOf = (s: FileSessionStore) => s.lastLoadError?.reason;

const base = { host: "example.test", port: 443, servername: "example.test" };

describe("client identity (R21)", () => {
  test("equal options give the same 32-byte key; each validity-relevant option changes it", () => {
    const a = clientIdentity(base);
    assert.equal(a.hash.length, 32);
    assert.equal(a.key, clientIdentity({ ...base }).key);
    assert.equal(
      a.key,
      clientIdentity({ ...base, host: "EXAMPLE.test" }).key,
      "DNS names are case-insensitive",
    );
    const variants = [
      { ...base, host: "other.test" },
      { ...base, port: 8443 },
      { ...base, servername: "www.example.test" },
      { ...base, servername: undefined },
      { ...base, ALPNProtocols: ["h2", "http/1.1"] },
      { ...base, ALPNProtocols: ["http/1.1"] },
      { ...base, minVersion: "TLSv1.3" as const },
      { ...base, maxVersion: "TLSv1.2" as const },
      { ...base, ca: "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n" },
      { ...base, rejectUnauthorized: false },
      { ...base, cert: "client cert" },
      { ...base, pfx: Buffer.from("pfx") },
      { ...base, ciphers: "ECDHE-RSA-AES128-GCM-SHA256" },
      { ...base, sigalgs: "ecdsa_secp256r1_sha256" },
      { ...base, ecdhCurve: "X25519" },
    ];
    const keys = new Set([a.key, ...variants.map((v) => clientIdentity(v).key)]);
    assert.equal(keys.size, variants.length + 1);
  });

  test("a CA set is a set: order does not matter, content does; ALPN forms agree", () => {
    const ca1 = Buffer.from("ca one");
    const ca2 = "ca two";
    assert.equal(
      clientIdentity({ ...base, ca: [ca1, ca2] }).key,
      clientIdentity({ ...base, ca: [ca2, ca1] }).key,
    );
    assert.notEqual(
      clientIdentity({ ...base, ca: [ca1] }).key,
      clientIdentity({ ...base, ca: [ca1, ca2] }).key,
    );
    const wire = Buffer.from("\x02h2\x08http/1.1", "latin1");
    assert.equal(
      clientIdentity({ ...base, ALPNProtocols: wire }).key,
      clientIdentity({ ...base, ALPNProtocols: ["h2", "http/1.1"] }).key,
    );
  });

  test("content changed in place is a new identity: CA arrays, Buffers, Buffers in arrays, { pem } forms", () => {
    const pem = (tag: string) => `-----BEGIN CERTIFICATE-----\n${tag}\n-----END CERTIFICATE-----\n`;
    // Array: an item replaced, pushed, removed.
    const ca: (string | Buffer)[] = [pem("A")];
    const a = clientIdentity({ ...base, ca }).key;
    ca[0] = pem("B");
    const b = clientIdentity({ ...base, ca }).key;
    assert.notEqual(b, a, "an item replaced in place");
    assert.equal(b, clientIdentity({ ...base, ca: [pem("B")] }).key, "same content, same identity");
    ca.push(pem("C"));
    assert.notEqual(clientIdentity({ ...base, ca }).key, b, "an item pushed");
    ca.pop();
    assert.equal(clientIdentity({ ...base, ca }).key, b, "back to the same content");
    // Buffer: bytes overwritten, same length.
    const buf = Buffer.from(pem("A"));
    const c = clientIdentity({ ...base, ca: buf }).key;
    buf.write(pem("B"));
    const d = clientIdentity({ ...base, ca: buf }).key;
    assert.notEqual(d, c, "a Buffer changed in place");
    assert.equal(d, clientIdentity({ ...base, ca: Buffer.from(pem("B")) }).key);
    // A Buffer inside an array that itself is unchanged.
    const inner = Buffer.from(pem("A"));
    const list = [inner, pem("X")];
    const e = clientIdentity({ ...base, ca: list }).key;
    inner.write(pem("B"));
    assert.notEqual(clientIdentity({ ...base, ca: list }).key, e, "a Buffer in an array changed in place");
    // Our own certificate in the { buf, passphrase } form; a view on a larger buffer.
    const pfx = { buf: Buffer.from("client pfx one"), passphrase: "p" };
    const f = clientIdentity({ ...base, pfx: [pfx] }).key;
    pfx.buf.write("client pfx two");
    assert.notEqual(clientIdentity({ ...base, pfx: [pfx] }).key, f, "a { buf } changed in place");
    const backing = Buffer.from("..ca one..");
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 2, 6);
    const g = clientIdentity({ ...base, ca: view as never }).key;
    backing.write("two", 5);
    assert.notEqual(clientIdentity({ ...base, ca: view as never }).key, g, "a view's backing bytes changed");
  });

  test("a secureContext makes a process-local identity, never persisted", () => {
    const ctx = { context: {} } as never;
    const i = clientIdentity({ ...base, secureContext: ctx });
    assert.equal(i.persistable, false);
    assert.equal(i.key, clientIdentity({ ...base, secureContext: ctx }).key);
    assert.notEqual(i.key, clientIdentity({ ...base, secureContext: { context: {} } as never }).key);
  });

  test("checkName is what Node checks a certificate against", () => {
    assert.equal(clientIdentity({ host: "127.0.0.1", port: 1 }).checkName, "127.0.0.1");
    assert.equal(clientIdentity({ host: "127.0.0.1", port: 1, servername: "a.test" }).checkName, "a.test");
    assert.equal(clientIdentity({ port: 1 }).checkName, "localhost");
  });
});

describe("choosing sessions (R22)", () => {
  test("TLS 1.3: newest ticket first, each taken once", () => {
    const c = fakeClock();
    const cache = new ClientSessionCache({ clock: c.clock });
    const id = clientIdentity(base);
    const a = cache.add(id, session(TLS13, { hint: 7200 }))!;
    const b = cache.add(id, session(TLS13, { hint: 7200 }))!;
    assert.ok(a && b);
    assert.deepEqual(cache.take(id)?.id, b.id);
    assert.deepEqual(cache.take(id)?.id, a.id);
    assert.equal(cache.take(id), undefined);
    assert.equal(cache.engine.stats().number, 0, "taken tickets left the engine too");
  });

  test("TLS 1.2: reused until it expires; a new one replaces it", () => {
    const c = fakeClock();
    const cache = new ClientSessionCache({ clock: c.clock });
    const id = clientIdentity(base);
    const a = cache.add(id, session(TLS12))!;
    assert.deepEqual(cache.take(id)?.id, a.id);
    assert.deepEqual(cache.take(id)?.id, a.id);
    const b = cache.add(id, session(TLS12))!;
    assert.equal(cache.sessions(id).length, 1);
    assert.deepEqual(cache.take(id)?.id, b.id);
    c.now = T0 + 7200;
    assert.ok(cache.take(id), "expired only when now > time + timeout (R5)");
    c.now = T0 + 7201;
    assert.equal(cache.take(id), undefined);
    assert.equal(cache.stats().timeouts, 1);
    assert.equal(cache.sessions(id).length, 0);
  });

  test("a few tickets per identity, the oldest dropped", () => {
    const cache = new ClientSessionCache({ clock: fakeClock().clock, ticketsPerIdentity: 3 });
    const id = clientIdentity(base);
    const added = Array.from({ length: 5 }, () => cache.add(id, session(TLS13, { hint: 600 }))!);
    assert.deepEqual(
      cache.sessions(id).map((s) => s.id),
      added.slice(2).map((s) => s.id),
    );
    assert.equal(cache.engine.stats().number, 3);
  });

  test("expiry: time + min(timeout, hint), at most 7 days; TLS 1.3 hint 0 discarded, TLS 1.2 hint 0 = timeout", () => {
    const c = fakeClock();
    const cache = new ClientSessionCache({ clock: c.clock, timeout: 30 * 86400 });
    const id = clientIdentity(base);
    assert.equal(cache.add(id, session(TLS13, { hint: 300 }))?.expiresAt, T0 + 300);
    assert.equal(cache.add(id, session(TLS13, { hint: 90 * 86400 }))?.expiresAt, T0 + MAX_SESSION_LIFETIME);
    assert.equal(cache.add(id, session(TLS13, { hint: 0 })), undefined);
    assert.equal(cache.add(id, session(TLS12, { hint: 0 }))?.expiresAt, T0 + MAX_SESSION_LIFETIME);
    const short = new ClientSessionCache({ clock: c.clock, timeout: 100 });
    assert.equal(short.add(id, session(TLS12, { hint: 0 }))?.expiresAt, T0 + 100);
    assert.equal(short.add(id, session(TLS12, { hint: 50 }))?.expiresAt, T0 + 50);
    c.now = T0 + 101;
    assert.equal(short.add(id, session(TLS12)), undefined, "already expired: not stored");
  });

  test("undecodable bytes and id-less sessions are not stored", () => {
    const cache = new ClientSessionCache({ clock: fakeClock().clock });
    const id = clientIdentity(base);
    assert.equal(cache.add(id, Uint8Array.of(0x30, 0x03, 1, 2)), undefined);
    assert.equal(cache.add(id, buildSessionDer({ id: new Uint8Array(0), time: T0 })), undefined);
    assert.equal(cache.sessions(id).length, 0);
  });

  test("sessions of one identity are never chosen for another", () => {
    const cache = new ClientSessionCache({ clock: fakeClock().clock });
    cache.add(clientIdentity(base), session(TLS12));
    assert.equal(cache.take(clientIdentity({ ...base, port: 8443 })), undefined);
    assert.equal(cache.prepare({ ...base, servername: "other.test" }).session, undefined);
    assert.ok(cache.prepare(base).session);
  });

  test("engine eviction, flush and close drop the identity's references (remove callback)", () => {
    const c = fakeClock();
    const cache = new ClientSessionCache({ clock: c.clock, cacheSize: 2 });
    const x = clientIdentity(base);
    const y = clientIdentity({ ...base, port: 1 });
    cache.add(x, session(TLS12, { hint: 100 }));
    cache.add(y, session(TLS13, { hint: 200 }));
    cache.add(y, session(TLS13, { hint: 300 })); // evicts the one expiring first: x's
    assert.equal(cache.sessions(x).length, 0);
    assert.equal(cache.sessions(y).length, 2);
    assert.equal(cache.stats().cacheFull, 1);
    c.now = T0 + 250;
    assert.equal(cache.flush(), 1);
    assert.equal(cache.sessions(y).length, 1);
    cache.close();
    assert.equal(cache.sessions(y).length, 0);
    assert.equal(cache.stats().number, 0);
  });

  test("option validation", () => {
    assert.throws(() => new ClientSessionCache({ cacheSize: -1 }), RangeError);
    assert.throws(() => new ClientSessionCache({ ticketsPerIdentity: 0 }), RangeError);
    assert.throws(() => new ClientSessionCache({ timeout: 1.5 }), RangeError);
    assert.throws(() => new ClientSessionCache({ clock: 5 as never }), TypeError);
  });
});

describe("FileSessionStore", () => {
  const dir = mkdtempSync(join(tmpdir(), "sesscache-filestore-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const key = randomBytes(32);

  test("save and load round-trip through an encrypted, 0600 file", async () => {
    const path = join(dir, "a.bin");
    const c = fakeClock();
    const cache = new ClientSessionCache({
      clock: c.clock,
      persistence: new FileSessionStore({ path, keys: [key] }),
    });
    const id = clientIdentity(base);
    const s = cache.add(id, session(TLS13, { hint: 600 }))!;
    cache.add(clientIdentity({ ...base, secureContext: { context: {} } as never }), session(TLS12));
    await cache.save();
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const raw = readFileSync(path);
    assert.equal(raw.indexOf(Buffer.from(s.der.subarray(0, 40))), -1, "no session bytes in clear");
    assert.equal(raw.indexOf(Buffer.from(id.key)), -1, "no identity in clear");

    const again = new ClientSessionCache({
      clock: c.clock,
      persistence: new FileSessionStore({ path, keys: [key] }),
    });
    assert.equal(await again.load(), 1, "the process-local identity was not saved");
    assert.deepEqual(again.take(id)?.id, s.id);
    c.now = T0 + 601;
    const late = new ClientSessionCache({
      clock: c.clock,
      persistence: new FileSessionStore({ path, keys: [key] }),
    });
    assert.equal(await late.load(), 0, "expired sessions are not taken in");
  });

  test("a missing file, another key, or a tampered file loads as empty", async () => {
    const path = join(dir, "b.bin");
    const store = new FileSessionStore({ path, keys: [key] });
    assert.deepEqual(await store.load(), []);
    assert.equal(store.lastLoadError, undefined);
    await store.save([{ identity: "x", session: session(TLS12) }]);
    assert.equal((await store.load()).length, 1);

    const other = new FileSessionStore({ path, keys: [randomBytes(32)] });
    assert.deepEqual(await other.load(), []);
    assert.equal(reasonOf(other), "unknown-key");

    const raw = readFileSync(path);
    raw[raw.length - 20] ^= 1;
    writeFileSync(path, raw);
    assert.deepEqual(await store.load(), []);
    assert.equal(reasonOf(store), "auth-failed");
  });

  test("key rotation: a file sealed under the old key opens with [new, old]", async () => {
    const path = join(dir, "c.bin");
    await new FileSessionStore({ path, keys: [key] }).save([{ identity: "x", session: session(TLS12) }]);
    const rotated = new FileSessionStore({ path, keys: [randomBytes(32), key] });
    assert.equal((await rotated.load()).length, 1);
  });

  test("refuses to run without a key unless plaintext is asked for", () => {
    assert.throws(() => new FileSessionStore({ path: join(dir, "d.bin") }), TypeError);
    assert.ok(new FileSessionStore({ path: join(dir, "d.bin"), plaintext: true }));
  });
});
