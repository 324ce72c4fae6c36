import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidSessionIdError, SessionCacheMode as M, SessionCache } from "../src/engine/index.js";
import { parseSession, SessionDecodeError } from "../src/session/index.js";
import { hex, order, recordingCache, session, T0 } from "./support/engine.js";
import { buildSessionDer, newId } from "./support/session-der.js";

const V12 = 0x0303;
const V13 = 0x0304;

describe("R3 sessions are OpenSSL DER", () => {
  test("R3 addSession takes DER bytes and a hit gives the same bytes back", () => {
    const { cache } = recordingCache();
    const id = newId();
    const der = buildSessionDer({ id, time: T0, timeout: 7200, hostname: "a.example", alpn: "h2" });
    assert.equal(cache.addSession(der), true);
    const hit = cache.lookup(id, V12);
    assert.ok(hit && !(hit instanceof Promise));
    assert.deepEqual(new Uint8Array(hit.der), der);
    assert.equal(hit.hostname, "a.example");
    assert.equal(hit.alpn, "h2");
    assert.equal(hex(hit.id), hex(id));
    assert.equal(hit.time, T0);
    assert.equal(hit.timeout, 7200);
  });

  test("R3 malformed bytes are refused with SessionDecodeError and leave the cache unchanged", () => {
    const { cache, rec } = recordingCache();
    cache.addSession(session());
    assert.throws(() => cache.addSession(new Uint8Array([0x30, 0x03, 0x02, 0x01])), SessionDecodeError);
    assert.throws(() => cache.removeSession(new Uint8Array([1, 2, 3])), SessionDecodeError);
    assert.equal(cache.stats().number, 1);
    assert.equal(rec.removed.length, 0);
    cache.verifyIntegrity();
  });

  test("R3 a session without time or timeout is stored with the values it was read with", () => {
    const { cache, clock } = recordingCache();
    const id = newId();
    // No [1] time (reads as now) and no [2] timeout (reads as 3 s).
    cache.addSession(buildSessionDer({ id, timeout: null }));
    clock.advance(2);
    const hit = cache.lookup(id, V12);
    assert.ok(hit && !(hit instanceof Promise));
    assert.equal(hit.time, T0, "time is the add time, not the look-up time");
    assert.equal(hit.timeout, 3);
    assert.equal(parseSession(hit.der).time, T0, "the bytes carry it too");
  });

  test("R3 another Session implementation is decoded from its bytes, not trusted", () => {
    const { cache } = recordingCache();
    const real = session();
    const fake = { ...toPlain(real), expiresAt: Number.MAX_SAFE_INTEGER, der: real.der };
    assert.equal(cache.addSession(fake), true);
    const [stored] = cache.sessions();
    assert.equal(stored.expiresAt, real.expiresAt);
  });
});

function toPlain(s: ReturnType<typeof session>) {
  return {
    id: s.id,
    protocolVersion: s.protocolVersion,
    protocol: s.protocol,
    cipherId: s.cipherId,
    cipherName: s.cipherName,
    time: s.time,
    timeout: s.timeout,
    expiresAt: s.expiresAt,
    sessionIdContext: s.sessionIdContext,
    peerCertificate: s.peerCertificate,
    verifyResult: s.verifyResult,
    hostname: s.hostname,
    ticket: s.ticket,
    ticketLifetimeHint: s.ticketLifetimeHint,
    ticketAgeAdd: s.ticketAgeAdd,
    alpn: s.alpn,
    extendedMasterSecret: s.extendedMasterSecret,
    maxEarlyData: s.maxEarlyData,
    group: s.group,
    isExpiredAt: (t: number) => t > s.expiresAt,
  };
}

describe("R4 the key", () => {
  test("R4 the key is (protocol version, id): same id under two versions is two sessions", () => {
    const { cache, rec } = recordingCache();
    const id = newId();
    const a = session({ id, protocolVersion: V12 });
    const b = session({ id, protocolVersion: V13 });
    assert.equal(cache.addSession(a), true);
    assert.equal(cache.addSession(b), true);
    assert.equal(cache.stats().number, 2);
    assert.equal(rec.removed.length, 0);
    assert.equal((cache.lookup(id, V12) as { protocolVersion: number }).protocolVersion, V12);
    assert.equal((cache.lookup(id, V13) as { protocolVersion: number }).protocolVersion, V13);
    assert.equal(cache.lookup(id, 0x0302), undefined);
  });

  test("R4 ids of 1 to 32 bytes are keys", () => {
    const { cache } = recordingCache();
    for (const n of [1, 2, 3, 4, 5, 16, 31, 32]) {
      const id = newId(n);
      cache.addSession(session({ id }));
      assert.ok(cache.lookup(id, V12), `id of ${n} bytes`);
      // A prefix or an extension of the id is another key.
      if (n > 1) assert.equal(cache.lookup(id.subarray(0, n - 1), V12), undefined);
    }
  });

  test("R4 a look-up with an id over 32 bytes throws InvalidSessionIdError", () => {
    const cache = new SessionCache();
    assert.throws(() => cache.lookup(new Uint8Array(33), V12), InvalidSessionIdError);
    assert.throws(
      () => cache.lookup(new Uint8Array(33), V12),
      (e: unknown) => e instanceof RangeError && (e as InvalidSessionIdError).length === 33,
    );
  });

  test("R4 an empty id: lookup and removeSession are no-op misses, addSession stores nothing", () => {
    let asked = 0;
    const { cache, rec } = recordingCache({
      getSession: () => {
        asked++;
        return undefined;
      },
    });
    const empty = session({ id: new Uint8Array(0) });
    assert.equal(cache.lookup(new Uint8Array(0), V12), undefined);
    assert.equal(cache.removeSession(empty), false);
    assert.equal(cache.addSession(empty), false);
    assert.equal(asked, 0);
    assert.equal(rec.removed.length, 0);
    assert.deepEqual(cache.stats(), new SessionCache().stats());
  });
});

describe("R5 expiry", () => {
  test("R5 a session is expired only when now > time + timeout (strictly)", () => {
    const { cache, clock } = recordingCache();
    const s = session({ time: T0, timeout: 100 });
    cache.addSession(s);
    clock.set(T0 + 100);
    assert.ok(cache.lookup(s.id, V12), "still valid at exactly time + timeout");
    clock.set(T0 + 101);
    assert.equal(cache.lookup(s.id, V12), undefined);
    assert.equal(cache.stats().timeouts, 1);
  });

  test("R5 a huge timeout saturates and never expires by clock", () => {
    const { cache, clock } = recordingCache();
    const s = session({ time: T0, timeout: Number.MAX_SAFE_INTEGER });
    assert.equal(s.expiresAt, Number.MAX_SAFE_INTEGER);
    cache.addSession(s);
    clock.set(Number.MAX_SAFE_INTEGER);
    assert.ok(cache.lookup(s.id, V12));
    assert.equal(cache.flush(Number.MAX_SAFE_INTEGER), 0);
  });

  test("R5 changing the cache timeout changes only sessions made afterwards", () => {
    const { cache, clock } = recordingCache({ timeout: 300 });
    const a = cache.updateCache(session({ timeout: 50 }), "server")!;
    assert.equal(a.timeout, 300);
    assert.equal(cache.setTimeout(10), 300);
    const b = cache.updateCache(session(), "server")!;
    assert.equal(b.timeout, 10);
    clock.advance(200);
    assert.ok(cache.lookup(a.id, V12), "the old session keeps its 300 s");
    assert.equal(cache.lookup(b.id, V12), undefined);
  });

  test("R5 a cache timeout of 0 means the default 7200 s for new sessions", () => {
    const { cache } = recordingCache();
    assert.equal(cache.setTimeout(0), 7200);
    assert.equal(cache.getTimeout(), 0);
    const s = cache.updateCache(session({ timeout: 5 }), "server")!;
    assert.equal(s.timeout, 7200);
    assert.equal(parseSession(s.der).timeout, 7200);
  });

  test("R5 setTimeout refuses negative and fractional values", () => {
    const cache = new SessionCache();
    assert.throws(() => cache.setTimeout(-1), RangeError);
    assert.throws(() => cache.setTimeout(1.5), RangeError);
    assert.equal(cache.getTimeout(), 7200);
  });
});

describe("R10 addSession", () => {
  test("R10 a new session returns true, the very same one again returns false", () => {
    const { cache, rec } = recordingCache();
    const s = session();
    assert.equal(cache.addSession(s), true);
    assert.equal(cache.addSession(s), false);
    assert.equal(cache.addSession(new Uint8Array(s.der)), false, "same key and same bytes");
    assert.equal(cache.stats().number, 1);
    assert.equal(rec.removed.length, 0);
  });

  test("R10 a different session under the same key replaces it silently and returns true", () => {
    const { cache, rec } = recordingCache();
    const id = newId();
    const a = session({ id, hostname: "a" });
    const b = session({ id, hostname: "b" });
    cache.addSession(a);
    assert.equal(cache.addSession(b), true);
    assert.equal(cache.stats().number, 1);
    assert.equal(rec.removed.length, 0, "no remove callback for a replacement");
    assert.equal((cache.lookup(id, V12) as { hostname: string }).hostname, "b");
    assert.equal(cache.stats().cacheFull, 0);
  });

  test("R10 replacing in a full cache evicts nothing", () => {
    const { cache, rec } = recordingCache({ cacheSize: 2 });
    const id = newId();
    cache.addSession(session({ id, hostname: "a" }));
    cache.addSession(session());
    assert.equal(cache.addSession(session({ id, hostname: "b" })), true);
    assert.equal(cache.stats().number, 2);
    assert.equal(cache.stats().cacheFull, 0);
    assert.equal(rec.removed.length, 0);
  });

  test("R10 a full cache evicts the session expiring first, with the callback and cacheFull", () => {
    const { cache, rec } = recordingCache({ cacheSize: 2 });
    const a = session({ timeout: 100 });
    const b = session({ timeout: 50 });
    const c = session({ timeout: 200 });
    cache.addSession(a);
    cache.addSession(b);
    assert.equal(cache.addSession(c), true);
    assert.deepEqual(rec.removedIds(), [hex(b.id)]);
    assert.equal(cache.stats().cacheFull, 1);
    assert.deepEqual(order(cache), [hex(c.id), hex(a.id)]);
  });

  test("R10 the newly added session is never the victim, even when it expires first", () => {
    const { cache, rec } = recordingCache({ cacheSize: 1 });
    const a = session({ timeout: 1000 });
    const b = session({ timeout: 1 });
    cache.addSession(a);
    cache.addSession(b);
    assert.deepEqual(order(cache), [hex(b.id)]);
    assert.deepEqual(rec.removedIds(), [hex(a.id)]);
  });

  test("R10 addSession works whatever the mode, OFF included", () => {
    const { cache } = recordingCache({ mode: M.OFF });
    assert.equal(cache.addSession(session()), true);
    assert.equal(cache.stats().number, 1);
  });
});

describe("R11/R12 capacity", () => {
  test("R11 holds exactly cacheSize sessions", () => {
    for (const size of [1, 2, 3, 10]) {
      const { cache, rec } = recordingCache({ cacheSize: size });
      const all = Array.from({ length: size + 5 }, (_, i) => session({ timeout: 1000 + i }));
      for (const s of all) cache.addSession(s);
      assert.equal(cache.stats().number, size, `size ${size}`);
      assert.equal(cache.stats().cacheFull, 5);
      assert.deepEqual(
        rec.removedIds(),
        all.slice(0, 5).map((s) => hex(s.id)),
      );
      cache.verifyIntegrity();
    }
  });

  test("R12 size 0 means unlimited", () => {
    const { cache } = recordingCache({ cacheSize: 0 });
    for (let i = 0; i < 30000; i++) cache.addSession(session());
    assert.equal(cache.stats().number, 30000);
    assert.equal(cache.stats().cacheFull, 0);
    cache.verifyIntegrity();
  });

  test("R12 setCacheSize returns the previous size; negative is refused and the size kept", () => {
    const cache = new SessionCache();
    assert.equal(cache.setCacheSize(10), 20480);
    assert.equal(cache.setCacheSize(0), 10);
    assert.throws(() => cache.setCacheSize(-1), RangeError);
    assert.throws(() => cache.setCacheSize(2.5), RangeError);
    assert.equal(cache.getCacheSize(), 0);
    assert.throws(() => new SessionCache({ cacheSize: -5 }), RangeError);
  });

  test("R12 lowering the size evicts nothing until the next add, which evicts down to it", () => {
    const { cache, rec } = recordingCache({ cacheSize: 10 });
    const all = Array.from({ length: 10 }, (_, i) => session({ timeout: 100 + i }));
    for (const s of all) cache.addSession(s);
    cache.setCacheSize(3);
    assert.equal(cache.stats().number, 10);
    assert.equal(rec.removed.length, 0);
    const extra = session({ timeout: 5000 });
    cache.addSession(extra);
    assert.equal(cache.stats().number, 3);
    assert.equal(cache.stats().cacheFull, 8);
    assert.deepEqual(
      rec.removedIds(),
      all.slice(0, 8).map((s) => hex(s.id)),
    );
    assert.deepEqual(order(cache), [hex(extra.id), hex(all[9].id), hex(all[8].id)]);
  });
});

describe("R13 the expiry-ordered list", () => {
  test("R13 eviction takes the earliest expiry first, whatever the order of adding", () => {
    const { cache, rec } = recordingCache({ cacheSize: 4 });
    const timeouts = [500, 100, 300, 200];
    const all = timeouts.map((timeout) => session({ timeout }));
    for (const s of all) cache.addSession(s);
    assert.deepEqual(
      order(cache),
      [0, 2, 3, 1].map((i) => hex(all[i].id)),
      "latest expiry at the head",
    );
    for (let i = 0; i < 4; i++) cache.addSession(session({ timeout: 1000 }));
    assert.deepEqual(
      rec.removedIds(),
      [1, 3, 2, 0].map((i) => hex(all[i].id)),
    );
  });

  test("R13 among equal expiries the oldest added is evicted first", () => {
    const { cache, rec } = recordingCache({ cacheSize: 3 });
    const all = [session(), session(), session()];
    for (const s of all) cache.addSession(s);
    cache.addSession(session());
    cache.addSession(session());
    assert.deepEqual(rec.removedIds(), [hex(all[0].id), hex(all[1].id)]);
  });

  test("R13 a session with an older time goes in the middle of the list at its place", () => {
    const { cache } = recordingCache({ cacheSize: 0 });
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const s = session({ time: T0 + i * 10 });
      ids.unshift(hex(s.id));
      cache.addSession(s);
    }
    const mid = session({ time: T0 + 45 });
    cache.addSession(mid);
    const tie = session({ time: T0 + 30 });
    cache.addSession(tie);
    const expected = [...ids];
    expected.splice(5, 0, hex(mid.id));
    expected.splice(expected.indexOf(ids[6]), 0, hex(tie.id));
    assert.deepEqual(order(cache), expected);
    cache.verifyIntegrity();
  });

  test("R13 flush and eviction cost only what they remove (no full scan)", () => {
    const { cache, clock } = recordingCache({ cacheSize: 0, onRemoveSession: undefined });
    for (let i = 0; i < 50000; i++) cache.addSession(session({ time: T0 + i }));
    clock.set(T0 + 7200 + 10);
    const t0 = process.hrtime.bigint();
    let removed = 0;
    for (let k = 0; k < 1000; k++) removed += cache.flush();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.equal(removed, 10);
    // 1000 flushes of a 50k cache; a scan would take seconds.
    assert.ok(ms < 200, `1000 flushes took ${ms} ms`);
  });
});

describe("R15 removeSession", () => {
  test("R15 removes a cached session (true) and calls the remove callback", () => {
    const { cache, rec } = recordingCache();
    const s = session();
    cache.addSession(s);
    assert.equal(cache.removeSession(s), true);
    assert.equal(cache.stats().number, 0);
    assert.deepEqual(rec.removedIds(), [hex(s.id)]);
    assert.equal(cache.lookup(s.id, V12), undefined);
  });

  test("R15 a session not cached: false, and the remove callback is still called", () => {
    const { cache, rec } = recordingCache();
    const s = session();
    assert.equal(cache.removeSession(s), false);
    assert.equal(cache.removeSession(s.der), false);
    assert.equal(rec.removed.length, 2);
    assert.equal(hex(rec.removed[0].id), hex(s.id));
  });

  test("R15 removal is by key: another session under the same key is removed, the callback gets the argument", () => {
    const { cache, rec } = recordingCache();
    const id = newId();
    cache.addSession(session({ id, hostname: "stored" }));
    const other = session({ id, hostname: "argument" });
    assert.equal(cache.removeSession(other), true);
    assert.equal(rec.removed[0].hostname, "argument");
    assert.equal(cache.stats().number, 0);
  });
});

describe("R16 the remove callback", () => {
  test("R16 it is called for eviction, flush, expiry on look-up, explicit removal and close, not replacement", () => {
    const { cache, rec, clock } = recordingCache({ cacheSize: 3 });
    const evicted = session({ timeout: 10 });
    const flushed = session({ timeout: 20 });
    const expired = session({ timeout: 30 });
    const removed = session({ timeout: 5000 });
    const closed = session({ timeout: 6000 });
    const replacedId = newId();
    cache.addSession(evicted);
    cache.addSession(flushed);
    cache.addSession(expired);
    cache.addSession(removed); // evicts `evicted`
    assert.deepEqual(rec.removedIds(), [hex(evicted.id)]);
    clock.set(T0 + 25);
    assert.equal(cache.flush(), 1);
    assert.deepEqual(rec.removedIds().slice(1), [hex(flushed.id)]);
    clock.set(T0 + 31);
    assert.equal(cache.lookup(expired.id, V12), undefined);
    assert.deepEqual(rec.removedIds().slice(2), [hex(expired.id)]);
    cache.removeSession(removed);
    assert.deepEqual(rec.removedIds().slice(3), [hex(removed.id)]);
    cache.addSession(session({ id: replacedId, hostname: "1", timeout: 7000 }));
    cache.addSession(session({ id: replacedId, hostname: "2", timeout: 7000 }));
    assert.equal(rec.removed.length, 4, "replacement is silent");
    cache.addSession(closed);
    cache.close();
    assert.deepEqual(rec.removedIds().slice(4).sort(), [hex(closed.id), hex(replacedId)].sort());
    assert.equal(rec.removed.find((s) => hex(s.id) === hex(replacedId))?.hostname, "2");
  });

  test("R16 the callback gets the stored session, as a copy independent of the cache", () => {
    const { cache, rec } = recordingCache({ cacheSize: 1 });
    const a = session({ hostname: "kept" });
    cache.addSession(a);
    cache.addSession(session());
    const got = rec.removed[0];
    assert.deepEqual(new Uint8Array(got.der), new Uint8Array(a.der));
    for (let i = 0; i < 100; i++) cache.addSession(session({ hostname: "overwrites slots" }));
    assert.deepEqual(new Uint8Array(got.der), new Uint8Array(a.der), "slab slots reused, the copy stays");
    assert.equal(got.hostname, "kept");
  });

  test("R16 close() flushes everything with callbacks, frees the storage, is idempotent", () => {
    const { cache, rec } = recordingCache();
    for (let i = 0; i < 100; i++) cache.addSession(session());
    cache.close();
    assert.equal(rec.removed.length, 100);
    assert.equal(cache.stats().number, 0);
    assert.equal(cache.memoryUsage().slabChunks, 0);
    cache.close();
    assert.equal(rec.removed.length, 100);
    assert.equal(cache.addSession(session()), true, "still usable");
  });

  test("R16 a throwing remove callback does not corrupt the cache", () => {
    const errors: unknown[] = [];
    let calls = 0;
    const cache = new SessionCache({
      cacheSize: 2,
      clock: () => T0,
      onRemoveSession: () => {
        calls++;
        throw new Error("store down");
      },
      onError: (e, where) => errors.push([where, (e as Error).message]),
    });
    const all = Array.from({ length: 5 }, () => session());
    for (const s of all) cache.addSession(s);
    assert.equal(cache.stats().number, 2);
    assert.equal(cache.flush(0), 2);
    assert.equal(calls, 5);
    assert.deepEqual(errors[0], ["onRemoveSession", "store down"]);
    cache.verifyIntegrity();
  });

  test("R16 a remove callback may use the cache while it runs", () => {
    const seen: number[] = [];
    const cache: SessionCache = new SessionCache({
      cacheSize: 2,
      clock: () => T0,
      onRemoveSession: (s) => {
        seen.push(cache.stats().number);
        assert.equal(cache.lookup(s.id, V12), undefined);
      },
    });
    for (let i = 0; i < 4; i++) cache.addSession(session());
    assert.deepEqual(seen, [2, 2]);
    cache.verifyIntegrity();
  });
});

describe("R17 flush", () => {
  test("R17 flush boundary is strict >", () => {
    const { cache } = recordingCache();
    const s = session({ time: T0, timeout: 100 });
    cache.addSession(s);
    assert.equal(cache.flush(T0 + 100), 0);
    assert.equal(cache.stats().number, 1);
    assert.equal(cache.flush(T0 + 101), 1);
    assert.equal(cache.stats().number, 0);
  });

  test("R17 flush(t) removes every session expired at t, calls back for each, returns the count", () => {
    const { cache, rec } = recordingCache({ cacheSize: 0 });
    const all = Array.from({ length: 20 }, (_, i) => session({ timeout: 10 * (i + 1) }));
    for (const s of [...all].reverse()) cache.addSession(s);
    assert.equal(cache.flush(T0 + 55), 5);
    assert.deepEqual(
      rec.removedIds(),
      all.slice(0, 5).map((s) => hex(s.id)),
    );
    assert.equal(cache.stats().number, 15);
  });

  test("R17 flush() uses now and flush(0) removes all; counters are unchanged", () => {
    let asked = 0;
    const { cache, clock, rec } = recordingCache({
      getSession: () => {
        asked++;
        return undefined;
      },
    });
    for (let i = 0; i < 10; i++) cache.addSession(session({ timeout: 100 + i }));
    const before = cache.stats();
    clock.set(T0 + 104);
    assert.equal(cache.flush(), 4);
    assert.equal(cache.flush(0), 6);
    assert.equal(rec.removed.length, 10);
    assert.deepEqual(cache.stats(), { ...before, number: 0 });
    assert.equal(asked, 0, "the internal cache only");
  });
});

describe("R19 session-id context", () => {
  test("R19 a context over 32 bytes is refused and the old one kept", () => {
    const cache = new SessionCache({ sessionIdContext: "a" });
    assert.throws(() => cache.setSessionIdContext(new Uint8Array(33)), RangeError);
    assert.throws(() => cache.setSessionIdContext("x".repeat(33)), RangeError);
    assert.deepEqual(cache.getSessionIdContext(), new TextEncoder().encode("a"));
    cache.setSessionIdContext(new Uint8Array(32).fill(7));
    assert.deepEqual(cache.getSessionIdContext(), new Uint8Array(32).fill(7));
    cache.setSessionIdContext("");
    assert.deepEqual(cache.getSessionIdContext(), new Uint8Array(0));
  });

  test("R19 getSessionIdContext returns a copy", () => {
    const cache = new SessionCache({ sessionIdContext: "abc" });
    cache.getSessionIdContext().fill(0);
    assert.deepEqual(cache.getSessionIdContext(), new TextEncoder().encode("abc"));
  });

  test("R19 a session made under another context is a plain miss: not removed, not counted", () => {
    const { cache, rec, clock } = recordingCache({ sessionIdContext: "service-a" });
    const mine = session({ ctx: "service-a" });
    const theirs = session({ ctx: "service-b" });
    cache.addSession(mine);
    cache.addSession(theirs);
    assert.ok(cache.lookup(mine.id, V12));
    assert.equal(cache.lookup(theirs.id, V12), undefined);
    clock.advance(8000);
    assert.equal(cache.lookup(theirs.id, V12), undefined, "even expired: the context check comes first");
    const st = cache.stats();
    assert.equal(st.hits, 1);
    assert.equal(st.misses, 0);
    assert.equal(st.timeouts, 0);
    assert.equal(st.number, 2);
    assert.equal(rec.removed.length, 0);
    cache.setSessionIdContext("service-b");
    clock.set(T0);
    assert.ok(cache.lookup(theirs.id, V12), "found once the cache is in its context");
  });
});

describe("UPDATE_TIME", () => {
  test("UPDATE_TIME on add sets the session's time to now, in the bytes too", () => {
    const { cache, clock } = recordingCache({ mode: M.SERVER | M.UPDATE_TIME });
    clock.set(T0 + 500);
    const s = session({ time: T0, timeout: 1000 });
    cache.addSession(s);
    const hit = cache.lookup(s.id, V12);
    assert.ok(hit && !(hit instanceof Promise));
    assert.equal(hit.time, T0 + 500);
    assert.equal(hit.expiresAt, T0 + 1500);
    assert.equal(parseSession(hit.der).time, T0 + 500);
    assert.equal(s.time, T0, "the caller's session is not modified");
  });

  test("UPDATE_TIME on re-add: returns false, refreshes the time and moves the session", () => {
    const { cache, clock, rec } = recordingCache({ mode: "server,update_time", cacheSize: 2 });
    const a = session({ time: T0 });
    const b = session({ time: T0 });
    cache.addSession(a);
    clock.advance(10);
    cache.addSession(b);
    clock.advance(10);
    assert.equal(cache.addSession(a), false);
    assert.equal(cache.stats().number, 2);
    assert.deepEqual(order(cache), [hex(a.id), hex(b.id)]);
    const stored = cache.sessions()[0];
    assert.equal(stored.time, T0 + 20);
    cache.addSession(session());
    assert.deepEqual(rec.removedIds(), [hex(b.id)], "b now expires first");
  });

  test("UPDATE_TIME re-adding the refreshed copy or the original is the same session", () => {
    const { cache, clock } = recordingCache({ mode: "server,update_time" });
    const a = session({ time: T0 });
    cache.addSession(a);
    clock.advance(5);
    const refreshed = cache.sessions()[0];
    clock.advance(5);
    assert.equal(cache.addSession(refreshed), false);
    assert.equal(cache.addSession(a), false);
    assert.equal(cache.sessions()[0].time, T0 + 10);
  });

  test("UPDATE_TIME does not act on a hit", () => {
    const { cache, clock } = recordingCache({ mode: M.SERVER | M.UPDATE_TIME });
    const s = session({ time: T0 });
    cache.addSession(s);
    clock.advance(100);
    const hit = cache.lookup(s.id, V12) as { time: number };
    assert.equal(hit.time, T0);
    assert.equal(cache.sessions()[0].time, T0);
  });

  test("without UPDATE_TIME a re-add keeps the time", () => {
    const { cache, clock } = recordingCache();
    const s = session({ time: T0 });
    cache.addSession(s);
    clock.advance(100);
    assert.equal(cache.addSession(s), false);
    assert.equal(cache.sessions()[0].time, T0);
  });

  test("a re-add without UPDATE_TIME makes the session the newest of its expiry", () => {
    const { cache, rec } = recordingCache({ cacheSize: 2 });
    const a = session();
    const b = session();
    cache.addSession(a);
    cache.addSession(b);
    cache.addSession(a);
    cache.addSession(session());
    assert.deepEqual(rec.removedIds(), [hex(b.id)]);
  });
});
