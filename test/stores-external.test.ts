// A store plugged into the engine's external-cache callbacks (externalCache): what one cache
// stores, another cache with the same session-id context resumes; nothing crosses contexts;
// TLS 1.3 tickets are taken once; tampered values are rejected and counted.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SessionCache } from "../src/engine/index.js";
import {
  externalCache,
  generateSealKey,
  MemoryStore,
  RedisStore,
  serverStoreKey,
} from "../src/stores/index.js";
import { session } from "./support/engine.js";
import { redisSkipReason, startRedis } from "./support/redis.js";

const V12 = 0x0303;
const V13 = 0x0304;
const now = () => Math.floor(Date.now() / 1000);

function fleet(store: MemoryStore, ctx = "svc-a") {
  const ext = externalCache(store, { lookupTimeout: 200 });
  const cache = new SessionCache({ sessionIdContext: ctx, ...ext });
  return { cache, ext };
}

describe("externalCache: a store behind the engine's callbacks", () => {
  test("a session stored by one cache resumes on another with the same context, sealed at rest", async () => {
    const store = new MemoryStore({ sealing: { keys: [generateSealKey()] } });
    const a = fleet(store);
    const b = fleet(store);
    const s = session({ ctx: "svc-a", time: now() });
    assert.ok(a.cache.updateCache(s, "server"));
    const raw = await store.get(serverStoreKey(s));
    assert.ok(raw, "the store got the session");
    assert.equal(Buffer.from(raw).includes(Buffer.from(s.der.subarray(-40))), false, "no DER tail in clear");
    const hit = await b.cache.lookup(s.id, V12);
    assert.ok(hit);
    assert.equal(Buffer.compare(hit.id, s.id), 0);
    assert.deepEqual([b.cache.stats().cbHits, b.cache.stats().hits], [1, 1]);
    assert.equal(b.ext.stats().found, 1);
  });

  test("another session-id context never finds it (the key carries the context)", async () => {
    const store = new MemoryStore();
    const a = fleet(store, "svc-a");
    const other = fleet(store, "svc-b");
    const s = session({ ctx: "svc-a", time: now() });
    a.cache.updateCache(s, "server");
    assert.equal(await other.cache.lookup(s.id, V12), undefined);
    assert.equal(other.cache.stats().cbHits, 0);
  });

  test("a TLS 1.3 ticket is taken from the store: the second cache to ask misses", async () => {
    const store = new MemoryStore();
    const a = fleet(store);
    const b = fleet(store);
    const c = fleet(store);
    const s = session({ ctx: "svc-a", time: now(), protocolVersion: V13 });
    a.cache.updateCache(s, "server");
    assert.ok(await b.cache.lookup(s.id, V13));
    assert.equal(await c.cache.lookup(s.id, V13), undefined);
    assert.equal(await store.get(serverStoreKey(s)), undefined);
  });

  test("claim(): a ticket is handed over once across the fleet, its issuer included", async () => {
    const store = new MemoryStore();
    const a = fleet(store);
    const b = fleet(store);
    const s = session({ ctx: "svc-a", time: now(), protocolVersion: V13 });
    a.cache.updateCache(s, "server");
    const taken = await b.cache.lookup(s.id, V13);
    assert.ok(taken);
    assert.equal(await b.ext.claim(taken), true, "B took it during its look-up");
    assert.equal(await b.ext.claim(taken), false, "a claim is spent once");
    assert.ok(a.cache.lookup(s.id, V13), "A still holds its own copy");
    assert.equal(await a.ext.claim(s), false, "but the store no longer hands it over");
    const t = session({ ctx: "svc-a", time: now(), protocolVersion: V13 });
    a.cache.updateCache(t, "server");
    assert.equal(await a.ext.claim(t), true, "the issuer wins a ticket nobody used");
    assert.equal(await b.cache.lookup(t.id, V13), undefined);
    // The adapter removes a claimed ticket next: the store already lost it, so no delete is sent.
    const removedBefore = a.ext.stats().removed;
    a.cache.removeSession(t);
    assert.equal(a.ext.stats().removed, removedBefore, "no redundant delete after a claim");
  });

  test("removing a session removes the shared copy", async () => {
    const store = new MemoryStore();
    const a = fleet(store);
    const s = session({ ctx: "svc-a", time: now() });
    a.cache.updateCache(s, "server");
    assert.ok(await store.get(serverStoreKey(s)));
    a.cache.removeSession(s);
    assert.equal(await store.get(serverStoreKey(s)), undefined);
    assert.equal(a.ext.stats().removed, 1);
  });

  test("a tampered value is a miss, counted as rejected by the cache that asked", async () => {
    const store = new MemoryStore({ sealing: { keys: [generateSealKey()] } });
    const a = fleet(store);
    const s = session({ ctx: "svc-a", time: now() });
    a.cache.updateCache(s, "server");
    const key = serverStoreKey(s);
    const raw = new Uint8Array((await store.get(key))!);
    raw[raw.length - 1] ^= 1;
    await store.set(key, raw, s.expiresAt);
    const ext = externalCache(store, { onRejected: () => b.recordRejected() });
    const b: SessionCache = new SessionCache({ sessionIdContext: "svc-a", ...ext });
    assert.equal(await b.lookup(s.id, V12), undefined);
    assert.equal(b.stats().rejected, 1);
    assert.equal(ext.stats().rejected, 1);
  });

  test("a store that never answers costs one deadline, then a miss", async () => {
    const stuck = new MemoryStore();
    stuck.get = () => new Promise(() => {});
    const ext = externalCache(stuck, { lookupTimeout: 30 });
    const cache = new SessionCache({ sessionIdContext: "svc-a", ...ext });
    const t0 = performance.now();
    const answer = await Promise.race([
      cache.lookup(session({ ctx: "svc-a" }).id, V12),
      new Promise((r) => setTimeout(() => r("stalled"), 1000)),
    ]);
    assert.equal(answer, undefined, "the look-up ended as a miss, not a stall");
    assert.ok(performance.now() - t0 < 500);
    assert.equal(ext.stats().timeouts, 1);
  });
});

describe("externalCache over RedisStore (a real redis-server)", { skip: redisSkipReason() }, () => {
  test("a new session's SET and a claim's GETDEL go on the wire in the call that issues them", async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const key = generateSealKey();
    const a = new RedisStore({ url: redis.url, keys: [key] });
    t.after(() => a.close());
    await a.ready();
    // What the store hands to its socket, as it does (ioredis' connection stream).
    const stream = (
      a.client as unknown as { stream: { write: (chunk: unknown, ...rest: unknown[]) => boolean } }
    ).stream;
    const wire: string[] = [];
    const write = stream.write;
    stream.write = function (this: unknown, chunk: unknown, ...rest: unknown[]) {
      wire.push(typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString("latin1"));
      return write.call(this, chunk, ...rest);
    };
    const ext = externalCache(a, { lookupTimeout: 1000 });
    const cache = new SessionCache({ sessionIdContext: "svc-a", ...ext });
    const s = session({ ctx: "svc-a", time: now(), protocolVersion: V13 });

    // The server adapter releases a ticket right after updateCache returns: the SET must have left
    // by then, so a client cannot offer the ticket to another server before Redis has it.
    const stored = cache.updateCache(s, "server");
    assert.ok(stored);
    assert.match(wire.join(""), /\$3\r\nset\r\n/i, "SET written before updateCache returned");
    wire.length = 0;
    // The adapter starts a claim while the connection is still being set up: it must be sent now,
    // not a tick later.
    const claim = ext.claim(stored);
    assert.match(wire.join(""), /\$6\r\ngetdel\r\n/i, "GETDEL written before claim() returned");
    assert.equal(await claim, true, "the SET was there for the GETDEL");

    // A second server sharing the store finds the ticket gone.
    const b = new RedisStore({ url: redis.url, keys: [key] });
    t.after(() => b.close());
    await b.ready();
    const other = new SessionCache({
      sessionIdContext: "svc-a",
      ...externalCache(b, { lookupTimeout: 1000 }),
    });
    assert.equal(await other.lookup(s.id, V13), undefined);
  });
});
