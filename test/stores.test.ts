// Stores without external services: sealing (encryption at rest), the checked read path, the
// in-memory store. Real-Redis tests are in stores-redis.test.ts, node:cluster ones in
// stores-cluster.test.ts.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import type { StoreKey } from "../src/engine/store.js";
import { parseSession } from "../src/session/index.js";
import {
  fetchStoredSession,
  generateSealKey,
  MemoryStore,
  openStoredSession,
  PLAINTEXT_V1,
  putStoredSession,
  RedisStore,
  SEAL_OVERHEAD,
  SEALED_V1,
  Sealer,
  StoreValueError,
  type StoreValueReason,
  sealKeyId,
  sealStoredSession,
  serverStoreKey,
  storeKeyBytes,
} from "../src/stores/index.js";
import { buildSessionDer, newId } from "./support/session-der.js";

const now = () => Math.floor(Date.now() / 1000);
const CTX = new TextEncoder().encode("svc-a");

function fixture(fields: Parameters<typeof buildSessionDer>[0] = {}) {
  const id = fields.id ?? newId();
  const masterKey = fields.masterKey ?? randomBytes(48);
  const der = buildSessionDer({ time: now(), sessionIdContext: CTX, ...fields, id, masterKey });
  const session = parseSession(der);
  const key: StoreKey = serverStoreKey(session);
  return { id, masterKey, der, session, key };
}

function rejects(fn: () => unknown, reason: StoreValueReason) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof StoreValueError, `expected StoreValueError, got ${String(err)}`);
    assert.equal(err.reason, reason);
    return true;
  });
}

/** True when `needle` occurs in `hay` (Buffer.indexOf on bytes). */
const contains = (hay: Uint8Array, needle: Uint8Array) =>
  Buffer.from(hay).indexOf(Buffer.from(needle)) !== -1;

describe("sealing", () => {
  const k1 = randomBytes(32);
  const k2 = generateSealKey();

  test("round trip: the DER comes back, the value is header|ciphertext|tag and hides the secret", () => {
    const s = new Sealer({ keys: [k1] });
    const { der, key, masterKey } = fixture();
    const v = s.seal(key, der);
    assert.equal(v[0], SEALED_V1);
    assert.equal(v.length, der.length + SEAL_OVERHEAD);
    assert.equal(SEAL_OVERHEAD, 1 + 2 + 12 + 16);
    assert.equal(Buffer.from(v.subarray(1, 3)).toString("hex"), sealKeyId(k1));
    assert.ok(!contains(v, masterKey));
    assert.ok(!contains(v, der.subarray(0, 24)));
    assert.deepEqual(Buffer.from(s.open(key, v)), Buffer.from(der));
    // Random nonces: sealing twice gives different values.
    assert.notDeepEqual(Buffer.from(s.seal(key, der)), Buffer.from(v));
  });

  test("keys as base64 text or bytes are the same key; ids are derived and stable", () => {
    const b64 = k1.toString("base64");
    const fromText = new Sealer({ keys: [`  ${b64}\n`] });
    const fromUrl = new Sealer({ keys: [k1.toString("base64url")] });
    const fromBytes = new Sealer({ keys: [new Uint8Array(k1)] });
    const { der, key } = fixture();
    assert.deepEqual(Buffer.from(fromBytes.open(key, fromText.seal(key, der))), Buffer.from(der));
    assert.deepEqual(Buffer.from(fromUrl.open(key, fromText.seal(key, der))), Buffer.from(der));
    assert.deepEqual(fromText.keyIds, [sealKeyId(k1)]);
    assert.match(sealKeyId(k2), /^[0-9a-f]{4}$/);
  });

  test("bad keys are refused without echoing them", () => {
    const secretish = "not-a-key-but-should-not-be-echoed";
    assert.throws(
      () => new Sealer({ keys: [secretish] }),
      (e: Error) => e instanceof TypeError && !e.message.includes(secretish),
    );
    assert.throws(() => new Sealer({ keys: [randomBytes(16)] }), RangeError);
    assert.throws(() => new Sealer({ keys: [randomBytes(31).toString("base64")] }), TypeError);
    // The same key twice is fine (deduplicated).
    assert.deepEqual(new Sealer({ keys: [k1, k1.toString("base64")] }).keyIds, [sealKeyId(k1)]);
  });

  test("rotation: the first key seals, every key opens", () => {
    const old = new Sealer({ keys: [k1] });
    const rotated = new Sealer({ keys: [k2, k1] });
    const { der, key } = fixture();
    const oldValue = old.seal(key, der);
    assert.deepEqual(Buffer.from(rotated.open(key, oldValue)), Buffer.from(der));
    const newValue = rotated.seal(key, der);
    assert.equal(Buffer.from(newValue.subarray(1, 3)).toString("hex"), sealKeyId(k2));
    assert.deepEqual(rotated.keyIds, [sealKeyId(k2), sealKeyId(k1)]);
    // A server that has not got the new key yet refuses the new values as unknown-key (a miss).
    rejects(() => old.open(key, newValue), "unknown-key");
  });

  test("tampered values fail authentication", () => {
    const s = new Sealer({ keys: [k1] });
    const { der, key } = fixture();
    const v = s.seal(key, der);
    for (const at of [3, 10, 15, 15 + 40, v.length - 1]) {
      const t = Uint8Array.from(v);
      t[at] ^= 0x01;
      rejects(() => s.open(key, t), "auth-failed"); // nonce, body, tag
    }
    const otherId = Uint8Array.from(v);
    otherId[1] ^= 0xff;
    rejects(() => s.open(key, otherId), "unknown-key");
    const otherVersion = Uint8Array.from(v);
    otherVersion[0] = 0xa2;
    rejects(() => s.open(key, otherVersion), "bad-format");
    rejects(() => s.open(key, der), "bad-format"); // raw DER (0x30) is neither format
  });

  test("truncated values are refused", () => {
    const s = new Sealer({ keys: [k1] });
    const { der, key } = fixture();
    const v = s.seal(key, der);
    rejects(() => s.open(key, new Uint8Array(0)), "truncated");
    rejects(() => s.open(key, v.subarray(0, 20)), "truncated");
    rejects(() => s.open(key, v.subarray(0, SEAL_OVERHEAD - 1)), "truncated");
    rejects(() => s.open(key, v.subarray(0, v.length - 1)), "auth-failed");
    rejects(() => s.open(key, v.subarray(0, v.length - 17)), "auth-failed");
  });

  test("a value moved to another id, context, protocol version or namespace does not open", () => {
    const s = new Sealer({ keys: [k1] });
    const { der, key } = fixture();
    const v = s.seal(key, der);
    rejects(() => s.open({ ...key, id: newId() }, v), "auth-failed");
    rejects(() => s.open({ ...key, context: new TextEncoder().encode("svc-b") }, v), "auth-failed");
    rejects(() => s.open({ ...key, context: new Uint8Array(0) }, v), "auth-failed");
    rejects(() => s.open({ ...key, protocolVersion: 0x0304 }, v), "auth-failed");
    rejects(() => s.open({ ...key, namespace: "client" }, v), "auth-failed");
  });

  test("the canonical key encoding is unambiguous", () => {
    // context "ab" + id "c" must differ from context "a" + id "bc".
    const a = storeKeyBytes({
      namespace: "server",
      protocolVersion: 0x303,
      context: Buffer.from("ab"),
      id: Buffer.from("c"),
    });
    const b = storeKeyBytes({
      namespace: "server",
      protocolVersion: 0x303,
      context: Buffer.from("a"),
      id: Buffer.from("bc"),
    });
    assert.notDeepEqual(Buffer.from(a), Buffer.from(b));
    assert.throws(
      () =>
        storeKeyBytes({ namespace: "server", protocolVersion: 0x303, context: CTX, id: new Uint8Array(0) }),
      RangeError,
    );
    assert.throws(
      () =>
        storeKeyBytes({ namespace: "server", protocolVersion: 0x303, context: CTX, id: new Uint8Array(33) }),
      RangeError,
    );
    assert.throws(
      () =>
        storeKeyBytes({
          namespace: "server",
          protocolVersion: 0x303,
          context: new Uint8Array(33),
          id: newId(),
        }),
      RangeError,
    );
  });

  test("plaintext is an explicit opt-in, with its own marker, never mixed with sealed values", () => {
    assert.throws(() => new Sealer({}), /plaintext: true/);
    assert.throws(() => new Sealer({ keys: [] }), /plaintext: true/);
    assert.throws(() => new Sealer({ keys: [k1], plaintext: true }), /not both/);
    assert.throws(() => new Sealer({ plaintext: false }), /plaintext: true/);
    // A shared store refuses to start without keys, before it connects anywhere.
    assert.throws(() => new RedisStore({ url: "redis://127.0.0.1:1" }), /plaintext: true/);

    const plain = new Sealer({ plaintext: true });
    const sealed = new Sealer({ keys: [k1] });
    const { der, key } = fixture();
    const pv = plain.seal(key, der);
    assert.equal(pv[0], PLAINTEXT_V1);
    assert.deepEqual(Buffer.from(plain.open(key, pv)), Buffer.from(der));
    rejects(() => sealed.open(key, pv), "mode-mismatch");
    rejects(() => plain.open(key, sealed.seal(key, der)), "mode-mismatch");
    rejects(() => plain.open(key, der), "bad-format");
    assert.ok(plain.ownsFormat(pv) && !plain.ownsFormat(der) && sealed.ownsFormat(sealed.seal(key, der)));
  });

  test("error messages carry no value bytes", () => {
    const s = new Sealer({ keys: [k1] });
    const { der, key } = fixture();
    const v = Uint8Array.from(s.seal(key, der));
    v[20] ^= 1;
    try {
      s.open(key, v);
      assert.fail("should throw");
    } catch (err) {
      const text = `${(err as Error).message} ${(err as Error).stack}`;
      assert.ok(!text.includes(Buffer.from(v.subarray(3, 15)).toString("hex")));
      assert.ok(!text.includes(Buffer.from(v.subarray(3, 15)).toString("base64")));
    }
  });
});

describe("openStoredSession", () => {
  const sealer = new Sealer({ keys: [randomBytes(32)] });

  test("a value sealed for the key opens into the session asked for", () => {
    const { session, key, der } = fixture();
    const got = openStoredSession(key, sealStoredSession(key, session, sealer), sealer);
    assert.deepEqual(Buffer.from(got.id), Buffer.from(key.id));
    assert.equal(got.protocolVersion, key.protocolVersion);
    assert.deepEqual(Buffer.from(got.der), Buffer.from(der));
  });

  test("a session with another id, version or context is refused even when the sealing is valid", () => {
    // Sealed under the right key (as a compromised writer holding the key could do).
    const { session, key } = fixture();
    const other = fixture();
    rejects(() => openStoredSession(key, sealer.seal(key, other.der), sealer), "id-mismatch");
    const tls13 = fixture({ id: key.id, protocolVersion: 0x0304 });
    rejects(() => openStoredSession(key, sealer.seal(key, tls13.der), sealer), "version-mismatch");
    const otherCtx = fixture({ id: key.id, sessionIdContext: new TextEncoder().encode("svc-b") });
    rejects(() => openStoredSession(key, sealer.seal(key, otherCtx.der), sealer), "context-mismatch");
    // sealStoredSession refuses to file a session under a key that is not its own.
    rejects(() => sealStoredSession(key, other.session, sealer), "id-mismatch");
    assert.ok(openStoredSession(key, sealer.seal(key, session.der), sealer));
  });

  test("client namespace: the context is an identity hash, bound by the sealing only", () => {
    const { session } = fixture();
    const key: StoreKey = {
      namespace: "client",
      protocolVersion: session.protocolVersion,
      context: randomBytes(32),
      id: session.id,
    };
    const v = sealer.seal(key, session.der);
    assert.ok(openStoredSession(key, v, sealer));
    rejects(() => openStoredSession({ ...key, context: randomBytes(32) }, v, sealer), "auth-failed");
  });

  test("bytes that are not a session are refused as undecodable", () => {
    const { key } = fixture();
    rejects(
      () => openStoredSession(key, sealer.seal(key, Uint8Array.of(0x30, 0x03, 0x02, 0x01)), sealer),
      "undecodable",
    );
    rejects(() => openStoredSession(key, sealer.seal(key, randomBytes(100)), sealer), "undecodable");
  });

  test("expiry is checked only when asked (the engine applies R7 itself)", () => {
    const { key, der } = fixture({ time: now() - 100, timeout: 10 });
    const v = sealer.seal(key, der);
    assert.ok(openStoredSession(key, v, sealer));
    rejects(() => openStoredSession(key, v, sealer, { now: now() }), "expired");
  });
});

describe("fetchStoredSession / putStoredSession", () => {
  test("put then fetch (get, or take once); a bad value is a miss reported to onRejected", async () => {
    const store = new MemoryStore({ sealing: { keys: [randomBytes(32)] } });
    const { session, key, der } = fixture();
    await putStoredSession(store, key, session);
    const got = await fetchStoredSession(store, key);
    assert.deepEqual(Buffer.from(got!.der), Buffer.from(der));
    assert.ok(await fetchStoredSession(store, key, { take: true }));
    assert.equal(await fetchStoredSession(store, key, { take: true }), undefined);

    const rejected: StoreValueError[] = [];
    await store.set(key, Uint8Array.of(0xa1, 0, 0), session.expiresAt);
    assert.equal(await fetchStoredSession(store, key, { onRejected: (e) => rejected.push(e) }), undefined);
    assert.deepEqual(
      rejected.map((e) => e.reason),
      ["truncated"],
    );
    // Filing a session under another key is refused before anything is written.
    assert.throws(() => putStoredSession(store, { ...key, id: newId() }, session), { reason: "id-mismatch" });
  });
});

describe("MemoryStore", () => {
  const key = (): StoreKey => ({ namespace: "server", protocolVersion: 0x0303, context: CTX, id: newId() });

  test("get / set / take / delete", async () => {
    const s = new MemoryStore();
    const k = key();
    const v = Uint8Array.of(PLAINTEXT_V1, 1, 2, 3);
    assert.equal(await s.get(k), undefined);
    await s.set(k, v, now() + 60);
    assert.deepEqual(await s.get(k), v);
    assert.deepEqual(await s.take(k), v);
    assert.equal(await s.take(k), undefined);
    await s.set(k, v, now() + 60);
    await s.delete(k);
    assert.equal(await s.get(k), undefined);
    assert.deepEqual(s.stats(), {
      gets: 3,
      hits: 1,
      sets: 2,
      deletes: 1,
      takes: 2,
      takeHits: 1,
      errors: 0,
      timeouts: 0,
      dropped: 0,
      inFlight: 0,
      oversized: 0,
    });
    await s.close();
  });

  test("keys differ by namespace, version and context; values are copies", async () => {
    const s = new MemoryStore();
    const k = key();
    const v = Uint8Array.of(PLAINTEXT_V1, 9);
    await s.set(k, v, now() + 60);
    v[1] = 0;
    for (const other of [
      { ...k, namespace: "client" as const },
      { ...k, protocolVersion: 0x304 },
      { ...k, context: new Uint8Array(0) },
    ]) {
      assert.equal(await s.get(other), undefined);
    }
    const got = (await s.get(k))!;
    assert.equal(got[1], 9);
    got[1] = 7;
    assert.equal((await s.get(k))![1], 9);
  });

  test("expiry follows R5 (usable through second expiresAt), expired sets are not stored", async () => {
    let t = 1_000_000_000_000;
    const s = new MemoryStore({ now: () => t });
    const k = key();
    const expiresAt = t / 1000 + 10;
    await s.set(k, Uint8Array.of(PLAINTEXT_V1), expiresAt);
    t = expiresAt * 1000 + 999;
    assert.ok(await s.get(k));
    t = (expiresAt + 1) * 1000;
    assert.equal(await s.get(k), undefined);
    await s.set(k, Uint8Array.of(PLAINTEXT_V1), t / 1000 - 1);
    assert.equal(s.size, 0);
    // Writes prune expired entries from the oldest end: memory follows the live set.
    for (let i = 0; i < 40; i++) await s.set(key(), Uint8Array.of(PLAINTEXT_V1), t / 1000 + 5);
    t += 10_000;
    await s.set(key(), Uint8Array.of(PLAINTEXT_V1), t / 1000 + 5);
    await s.set(key(), Uint8Array.of(PLAINTEXT_V1), t / 1000 + 5);
    assert.equal(s.size, 2);
  });

  test("maxEntries evicts the oldest written", async () => {
    const s = new MemoryStore({ maxEntries: 2 });
    const [a, b, c] = [key(), key(), key()];
    for (const k of [a, b, c]) await s.set(k, Uint8Array.of(PLAINTEXT_V1), now() + 60);
    assert.equal(s.size, 2);
    assert.equal(await s.get(a), undefined);
    assert.ok((await s.get(b)) && (await s.get(c)));
  });
});
