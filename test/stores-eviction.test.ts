// R26: eviction is local, invalidation is shared. Two SessionCaches on one store stand for two
// nodes of a fleet: what one node evicts for space (or flushes, or drops on close) stays in the store
// for the other; what it removes explicitly (removeSession: a consumed ticket, a failed handshake)
// leaves the store too.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SessionCache } from "../src/engine/index.js";
import {
  externalCache,
  generateSealKey,
  MemoryStore,
  RedisStore,
  type SealingSessionStore,
  serverStoreKey,
} from "../src/stores/index.js";
import { session } from "./support/engine.js";
import { redisSkipReason, startRedis } from "./support/redis.js";

const V12 = 0x0303;
const now = () => Math.floor(Date.now() / 1000);

function node(store: SealingSessionStore, cacheSize = 2) {
  const ext = externalCache(store, { lookupTimeout: 1000 });
  const cache = new SessionCache({ sessionIdContext: "svc", cacheSize, ...ext });
  return { cache, ext };
}

/** Sessions with distinct lifetimes, earliest expiry first (the first is evicted first, R13). */
const sessions = (n: number) =>
  Array.from({ length: n }, (_, i) => session({ ctx: "svc", time: now(), timeout: 600 + i * 10 }));

/** Node A (cacheSize 2) makes 3 sessions; the evicted one stays shared; removeSession unshares. */
async function evictionStaysLocal(store: SealingSessionStore, other: SealingSessionStore) {
  const a = node(store);
  const b = node(other, 100);
  const [first, ...rest] = sessions(3);
  for (const s of [first!, ...rest]) assert.ok(a.cache.updateCache(s, "server"));
  await new Promise((r) => setImmediate(r));
  assert.equal(a.cache.stats().cacheFull, 1, "A evicted one session for space");
  const local = a.cache.sessions().map((s) => Buffer.from(s.id).toString("hex"));
  assert.equal(local.includes(Buffer.from(first!.id).toString("hex")), false, "A no longer has it locally");
  assert.equal(a.ext.stats().removed, 0, "no delete sent for an eviction");
  assert.equal(a.ext.stats().keptShared, 1);
  // B (another node) still resumes it from the store.
  const hit = await b.cache.lookup(first!.id, V12);
  assert.ok(hit, "B resumes the session A evicted");
  assert.equal(Buffer.compare(hit.id, first!.id), 0);
  // An explicit removal on A is an invalidation: it leaves the store.
  a.cache.removeSession(rest[0]!);
  assert.equal(a.ext.stats().removed, 1);
  for (let i = 0; i < 100 && (await store.get(serverStoreKey(rest[0]!))) !== undefined; i++) {
    await new Promise((r) => setImmediate(r)); // the DEL is in the background
  }
  assert.equal(await store.get(serverStoreKey(rest[0]!)), undefined, "removeSession deleted it");
  assert.equal(await b.cache.lookup(rest[0]!.id, V12), undefined, "B cannot resume it any more");
}

describe("R26 externalCache: eviction is local, invalidation is shared", () => {
  test("MemoryStore: a session evicted from node A's full cache still resumes on node B", async () => {
    const store = new MemoryStore({ sealing: { keys: [generateSealKey()] } });
    await evictionStaysLocal(store, store);
  });

  test("copying an external hit into a full cache evicts locally only", async () => {
    const store = new MemoryStore();
    const a = node(store, 1);
    const b = node(store, 100);
    const [mine, theirs] = sessions(2);
    a.cache.updateCache(mine!, "server");
    b.cache.updateCache(theirs!, "server");
    assert.ok(await a.cache.lookup(theirs!.id, V12), "A copies B's session in, evicting its own");
    assert.equal(a.cache.stats().cacheFull, 1);
    assert.equal(a.ext.stats().removed, 0);
    assert.ok(await store.get(serverStoreKey(mine!)), "A's evicted session is still shared");
    assert.ok(await b.cache.lookup(mine!.id, V12));
  });

  test("flush, expiry on look-up and close leave the store alone", async () => {
    const store = new MemoryStore();
    const a = node(store, 100);
    const short = session({ ctx: "svc", time: now() - 100, timeout: 10 }); // already expired
    const [s1, s2] = sessions(2);
    for (const s of [s1!, s2!]) a.cache.updateCache(s, "server");
    a.cache.addSession(short); // local only (addSession does not call the new-session callback)
    assert.equal(a.cache.lookup(short.id, V12), undefined, "expired on look-up");
    a.cache.flush(0);
    a.cache.updateCache(s1!, "server");
    a.cache.close();
    assert.equal(a.ext.stats().removed, 0);
    assert.equal(a.ext.stats().keptShared, 4, "expired + flushed×2 + closed");
    for (const s of [s1!, s2!]) assert.ok(await store.get(serverStoreKey(s)), "still shared");
  });

  test("a wrapper that passes no reason is taken as an explicit removal (nothing lost)", async () => {
    const store = new MemoryStore();
    const a = node(store, 100);
    const [s] = sessions(1);
    a.cache.updateCache(s!, "server");
    a.ext.onRemoveSession(s!);
    await new Promise((r) => setImmediate(r));
    assert.equal(await store.get(serverStoreKey(s!)), undefined);
    assert.equal(a.ext.stats().removed, 1);
  });
});

describe("R26 over RedisStore (a real redis-server, two nodes)", { skip: redisSkipReason() }, () => {
  test("a session evicted from node A's full cache still resumes on node B; removeSession deletes it", async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const key = generateSealKey();
    const storeA = new RedisStore({ url: redis.url, keys: [key] });
    const storeB = new RedisStore({ url: redis.url, keys: [key] });
    t.after(() => Promise.all([storeA.close(), storeB.close()]));
    await Promise.all([storeA.ready(), storeB.ready()]);
    await evictionStaysLocal(storeA, storeB);
  });
});
