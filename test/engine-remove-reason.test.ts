// R16 + R26: the remove callback fires for every session leaving the internal cache, and says why,
// so an external cache can tell an invalidation ("removed") from a local removal.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type RemoveReason, SessionCache, type SessionCacheOptions } from "../src/engine/index.js";
import type { Session } from "../src/session/index.js";
import { fakeClock, hex, session, T0 } from "./support/engine.js";

const V12 = 0x0303;

/** A cache on a fake clock whose remove callback records [id hex, reason]. */
function reasons(options: SessionCacheOptions = {}) {
  const clock = fakeClock();
  const seen: [string, RemoveReason][] = [];
  const cache = new SessionCache({
    clock,
    onRemoveSession: (s: Session, reason: RemoveReason) => seen.push([hex(s.id), reason]),
    onError: (e) => {
      throw e;
    },
    ...options,
  });
  return { cache, clock, seen };
}

describe("R16/R26 the remove callback's reason", () => {
  test("removeSession: 'removed', whether the session was cached or not", () => {
    const { cache, seen } = reasons();
    const cached = session();
    const never = session();
    cache.addSession(cached);
    assert.equal(cache.removeSession(cached), true);
    assert.equal(cache.removeSession(never), false);
    assert.deepEqual(seen, [
      [hex(cached.id), "removed"],
      [hex(never.id), "removed"],
    ]);
  });

  test("a full cache: the victim leaves as 'evicted'", () => {
    const { cache, seen } = reasons({ cacheSize: 2 });
    const [a, b, c] = [session({ timeout: 100 }), session({ timeout: 200 }), session({ timeout: 300 })];
    for (const s of [a, b, c]) cache.addSession(s);
    assert.deepEqual(seen, [[hex(a.id), "evicted"]]);
  });

  test("an external hit copied into a full cache evicts with 'evicted', not 'removed'", async () => {
    const inStore = session({ timeout: 500 });
    const { cache, seen } = reasons({
      cacheSize: 1,
      getSession: async (id) => (hex(id) === hex(inStore.id) ? inStore : undefined),
    });
    const local = session({ timeout: 100 });
    cache.addSession(local);
    const hit = await cache.lookup(inStore.id, V12);
    assert.ok(hit);
    assert.deepEqual(seen, [[hex(local.id), "evicted"]]);
  });

  test("expiry found on an internal look-up: 'expired'", () => {
    const { cache, clock, seen } = reasons();
    const s = session({ timeout: 10 });
    cache.addSession(s);
    clock.set(T0 + 11);
    assert.equal(cache.lookup(s.id, V12), undefined);
    assert.deepEqual(seen, [[hex(s.id), "expired"]]);
  });

  test("an expired external answer: copied in, then out again as 'expired'", async () => {
    const old = session({ timeout: 10 });
    const { cache, clock, seen } = reasons({ getSession: () => old });
    clock.set(T0 + 11);
    assert.equal(await cache.lookup(old.id, V12), undefined);
    assert.deepEqual(seen, [[hex(old.id), "expired"]]);
  });

  test("flush(), explicit or automatic (R18): 'flushed'", () => {
    const { cache, clock, seen } = reasons();
    const a = session({ timeout: 10 });
    const b = session({ timeout: 20 });
    const keep = session({ timeout: 1000 });
    for (const s of [a, b, keep]) cache.addSession(s);
    clock.set(T0 + 11);
    assert.equal(cache.flush(), 1);
    clock.set(T0 + 21);
    // The 256th completed server handshake flushes expired sessions.
    for (let i = 0; i < 256; i++) cache.handshakeCompleted("server");
    assert.deepEqual(seen, [
      [hex(a.id), "flushed"],
      [hex(b.id), "flushed"],
    ]);
    assert.equal(cache.flush(0), 1);
    assert.deepEqual(seen[2], [hex(keep.id), "flushed"]);
  });

  test("close(): every session leaves as 'closed'", () => {
    const { cache, seen } = reasons();
    const ss = [session({ timeout: 10 }), session({ timeout: 20 })];
    for (const s of ss) cache.addSession(s);
    cache.close();
    assert.deepEqual(
      seen,
      ss.map((s) => [hex(s.id), "closed"]),
    );
  });

  test("a replacement under the same key stays silent (R10)", () => {
    const { cache, seen } = reasons();
    const s = session();
    cache.addSession(s);
    cache.addSession(session({ id: s.id, timeout: 50 }));
    assert.deepEqual(seen, []);
  });
});
