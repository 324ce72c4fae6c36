import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SessionCacheMode as M, SessionCache, type Side } from "../src/engine/index.js";
import { parseSession } from "../src/session/index.js";
import { hex, recordingCache, session, T0 } from "./support/engine.js";

const V12 = 0x0303;

describe("R14 updateCache (ssl_update_cache)", () => {
  test("R14 SERVER set: a new server session is stored and handed to the new-session callback", () => {
    const { cache, rec } = recordingCache();
    const s = session();
    const stored = cache.updateCache(s, "server");
    assert.ok(stored);
    assert.equal(cache.stats().number, 1);
    assert.deepEqual(rec.addedIds(), [hex(s.id)]);
    assert.equal(rec.added[0], stored);
    assert.ok(cache.lookup(s.id, V12));
  });

  test("R14 NO_INTERNAL_STORE: not stored, but the external cache still gets it", () => {
    const { cache, rec } = recordingCache({ mode: M.SERVER | M.NO_INTERNAL_STORE });
    const s = session();
    assert.ok(cache.updateCache(s, "server"));
    assert.equal(cache.stats().number, 0);
    assert.deepEqual(rec.addedIds(), [hex(s.id)]);
  });

  test("R14 the side's bit must be set: SERVER for server sessions, CLIENT for client ones", () => {
    const cases: [number, Side, boolean][] = [
      [M.SERVER, "server", true],
      [M.SERVER, "client", false],
      [M.CLIENT, "client", true],
      [M.CLIENT, "server", false],
      [M.BOTH, "client", true],
      [M.BOTH, "server", true],
      [M.OFF, "server", false],
      [M.OFF, "client", false],
    ];
    for (const [mode, side, stores] of cases) {
      const { cache, rec } = recordingCache({ mode });
      const out = cache.updateCache(session(), side);
      assert.equal(out !== undefined, stores, `mode ${mode} side ${side}`);
      assert.equal(cache.stats().number, stores ? 1 : 0);
      assert.equal(rec.added.length, stores ? 1 : 0);
    }
  });

  test("R14 the cache's timeout is applied to the new session, in its bytes", () => {
    const { cache, rec } = recordingCache({ timeout: 300 });
    const s = session({ timeout: 7200 });
    const stored = cache.updateCache(s, "server")!;
    assert.equal(stored.timeout, 300);
    assert.equal(parseSession(stored.der).timeout, 300);
    assert.equal(rec.added[0].timeout, 300);
    assert.equal(cache.sessions()[0].timeout, 300);
    assert.equal(s.timeout, 7200, "the caller's session is not modified");
  });

  test("R14 a session already carrying the cache's timeout is stored as is", () => {
    const { cache } = recordingCache();
    const s = session({ timeout: 7200 });
    assert.equal(cache.updateCache(s, "server"), s);
  });

  test("R14 UPDATE_TIME applies to new sessions too", () => {
    const { cache, clock } = recordingCache({ mode: "server,update_time" });
    clock.advance(30);
    const stored = cache.updateCache(session({ time: T0 }), "server")!;
    assert.equal(stored.time, T0 + 30);
  });

  test("R14 DER bytes are accepted and an empty id stores nothing and calls nothing", () => {
    const { cache, rec } = recordingCache();
    const s = session();
    assert.ok(cache.updateCache(new Uint8Array(s.der), "server"));
    assert.equal(cache.updateCache(session({ id: new Uint8Array(0) }), "server"), undefined);
    assert.equal(rec.added.length, 1);
    assert.equal(cache.stats().number, 1);
  });

  test("R14 a throwing new-session callback does not stop the store nor corrupt the cache", () => {
    const errors: string[] = [];
    const cache = new SessionCache({
      clock: () => T0,
      onNewSession: () => {
        throw new Error("redis down");
      },
      onError: (e, where) => errors.push(`${where}: ${(e as Error).message}`),
    });
    const s = session();
    assert.ok(cache.updateCache(s, "server"));
    assert.ok(cache.lookup(s.id, V12));
    assert.deepEqual(errors, ["onNewSession: redis down"]);
    cache.verifyIntegrity();
  });

  test("R14 without onError a throwing callback becomes a process warning", async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on("warning", onWarning);
    try {
      const cache = new SessionCache({
        clock: () => T0,
        onNewSession: () => {
          throw new Error("store unreachable");
        },
      });
      assert.ok(cache.updateCache(session(), "server"));
      await new Promise((r) => setImmediate(r));
      assert.equal(warnings.length, 1);
      assert.match(warnings[0].message, /onNewSession failed: store unreachable/);
      assert.equal(warnings[0].name, "SessionCacheWarning");
    } finally {
      process.off("warning", onWarning);
    }
  });

  test("R14 a bad side is refused", () => {
    const cache = new SessionCache();
    assert.throws(() => cache.updateCache(session(), "peer" as Side), TypeError);
    assert.throws(() => cache.handshakeStarted("peer" as Side), TypeError);
  });
});

describe("R18 auto flush", () => {
  function expiredCache(mode: number | string) {
    const r = recordingCache({ mode, cacheSize: 0 });
    for (let i = 0; i < 5; i++) r.cache.addSession(session({ timeout: 10 }));
    r.clock.advance(11);
    return r;
  }

  test("R18 the 256th completed server handshake flushes expired sessions (tested before incrementing)", () => {
    const { cache, rec } = expiredCache(M.SERVER);
    for (let i = 0; i < 255; i++) cache.handshakeCompleted("server");
    assert.equal(cache.stats().number, 5, "not before the 256th");
    assert.equal(cache.stats().acceptGood, 255);
    cache.handshakeCompleted("server");
    assert.equal(cache.stats().number, 0);
    assert.equal(rec.removed.length, 5, "with the remove callback");
    assert.equal(cache.stats().acceptGood, 256);
    assert.equal(cache.stats().timeouts, 0, "a flush counts nothing");
  });

  test("R18 then again at the 512th", () => {
    const { cache, clock } = expiredCache(M.SERVER);
    for (let i = 0; i < 256; i++) cache.handshakeCompleted("server");
    cache.addSession(session({ time: clock.now, timeout: 10 }));
    clock.advance(11);
    for (let i = 0; i < 255; i++) cache.handshakeCompleted("server");
    assert.equal(cache.stats().number, 1);
    cache.handshakeCompleted("server");
    assert.equal(cache.stats().number, 0);
  });

  test("R18 client side counts connectGood and needs CLIENT", () => {
    const { cache } = expiredCache(M.CLIENT);
    for (let i = 0; i < 256; i++) cache.handshakeCompleted("server");
    assert.equal(cache.stats().number, 5, "server handshakes do not flush a CLIENT-only cache");
    for (let i = 0; i < 256; i++) cache.handshakeCompleted("client");
    assert.equal(cache.stats().number, 0);
    assert.equal(cache.stats().connectGood, 256);
  });

  test("R18 NO_AUTO_CLEAR disables it", () => {
    const { cache } = expiredCache(M.BOTH | M.NO_AUTO_CLEAR);
    for (let i = 0; i < 1024; i++) {
      cache.handshakeCompleted("server");
      cache.handshakeCompleted("client");
    }
    assert.equal(cache.stats().number, 5);
  });

  test("R18 never with mode OFF", () => {
    const { cache } = expiredCache(M.OFF);
    for (let i = 0; i < 1024; i++) {
      cache.handshakeCompleted("server");
      cache.handshakeCompleted("client");
    }
    assert.equal(cache.stats().number, 5);
  });

  test("R18 only expired sessions go", () => {
    const { cache, clock } = expiredCache(M.SERVER);
    const fresh = session({ time: clock.now });
    cache.addSession(fresh);
    for (let i = 0; i < 256; i++) cache.handshakeCompleted("server");
    assert.equal(cache.stats().number, 1);
    assert.ok(cache.lookup(fresh.id, V12));
  });
});

describe("R20 statistics", () => {
  test("R20 handshakes started and completed count accept/connect and their Good ones", () => {
    const cache = new SessionCache({ mode: "both,no_auto_clear" });
    cache.handshakeStarted("server");
    cache.handshakeStarted("server");
    cache.handshakeCompleted("server");
    cache.handshakeStarted("client");
    cache.handshakeCompleted("client");
    cache.handshakeStarted("server", true);
    cache.handshakeStarted("client", true);
    cache.handshakeStarted("client", true);
    const st = cache.stats();
    assert.deepEqual(
      [st.accept, st.acceptGood, st.acceptRenegotiate, st.connect, st.connectGood, st.connectRenegotiate],
      [2, 1, 1, 1, 1, 2],
    );
  });

  test("R20 number is the internal cache's size, and all twelve counters (and rejected) move as the rules say", () => {
    const { cache, clock } = recordingCache({ cacheSize: 2, getSession: () => undefined });
    const a = session({ timeout: 5 });
    cache.addSession(a);
    cache.addSession(session());
    cache.addSession(session()); // evicts a
    cache.lookup(a.id, V12); // miss
    const b = cache.sessions()[0];
    cache.lookup(b.id, V12); // hit
    clock.advance(8000);
    cache.lookup(b.id, V12); // timeout
    const st = cache.stats();
    assert.deepEqual(
      { number: st.number, hits: st.hits, misses: st.misses, timeouts: st.timeouts, cacheFull: st.cacheFull },
      { number: 1, hits: 1, misses: 1, timeouts: 1, cacheFull: 1 },
    );
    assert.deepEqual(Object.keys(st).sort(), [
      "accept",
      "acceptGood",
      "acceptRenegotiate",
      "cacheFull",
      "cbHits",
      "connect",
      "connectGood",
      "connectRenegotiate",
      "hits",
      "misses",
      "number",
      "rejected",
      "timeouts",
    ]);
  });

  test("R20 stats() is a snapshot", () => {
    const cache = new SessionCache({ clock: () => T0 });
    const st = cache.stats();
    cache.addSession(session());
    assert.equal(st.number, 0);
    assert.equal(cache.stats().number, 1);
  });
});
