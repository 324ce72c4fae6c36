import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { inspect } from "node:util";
import { type ExternalLookupResult, SessionCacheMode as M, SessionCache } from "../src/engine/index.js";
import { parseSession, type Session } from "../src/session/index.js";
import { hex, order, recordingCache, session, T0 } from "./support/engine.js";
import { buildSessionDer, newId } from "./support/session-der.js";

const V12 = 0x0303;
const V13 = 0x0304;

function sync(r: Session | undefined | Promise<Session | undefined>): Session | undefined {
  assert.ok(!(r instanceof Promise), "expected a synchronous answer");
  return r;
}

/** An external cache: a map by hex id, answering with what it holds (DER or Session). */
function external(entries: Session[] = [], as: "der" | "session" = "der") {
  const byId = new Map(entries.map((s) => [hex(s.id), s]));
  const asked: string[] = [];
  const get = (id: Uint8Array): ExternalLookupResult => {
    asked.push(hex(id));
    const s = byId.get(hex(id));
    if (!s) return undefined;
    return as === "der" ? new Uint8Array(s.der) : s;
  };
  return { get, asked, byId };
}

describe("R6 look-up order and counters", () => {
  test("R6 an internal hit counts hits and does not ask the external cache", () => {
    const ext = external();
    const { cache } = recordingCache({ getSession: ext.get });
    const s = session();
    cache.addSession(s);
    const hit = sync(cache.lookup(s.id, V12));
    assert.equal(hex(hit!.id), hex(s.id));
    assert.deepEqual(ext.asked, []);
    const st = cache.stats();
    assert.deepEqual([st.hits, st.misses, st.cbHits], [1, 0, 0]);
  });

  test("R6 an internal miss counts misses, then the external cache is asked", () => {
    const s = session();
    const ext = external([s]);
    const { cache } = recordingCache({ getSession: ext.get });
    const hit = sync(cache.lookup(s.id, V12));
    assert.ok(hit);
    assert.deepEqual(ext.asked, [hex(s.id)]);
    const st = cache.stats();
    assert.deepEqual([st.misses, st.cbHits, st.hits], [1, 1, 1]);
  });

  test("R6 a miss everywhere counts one miss", () => {
    const ext = external();
    const { cache } = recordingCache({ getSession: ext.get });
    assert.equal(cache.lookup(newId(), V12), undefined);
    const st = cache.stats();
    assert.deepEqual([st.misses, st.cbHits, st.hits], [1, 0, 0]);
  });

  test("R6 NO_INTERNAL_LOOKUP skips the internal cache and counts no misses", () => {
    const inside = session();
    const ext = external();
    const { cache } = recordingCache({ mode: M.SERVER | M.NO_INTERNAL_LOOKUP, getSession: ext.get });
    cache.addSession(inside);
    assert.equal(cache.lookup(inside.id, V12), undefined);
    assert.deepEqual(ext.asked, [hex(inside.id)]);
    assert.equal(cache.stats().misses, 0);
    assert.equal(cache.stats().hits, 0);
  });

  test("R6 an external hit is copied into the internal cache (R10 applies)", () => {
    const s = session();
    const ext = external([s]);
    const { cache, rec } = recordingCache({ getSession: ext.get, cacheSize: 1 });
    const old = session({ timeout: 10 });
    cache.addSession(old);
    sync(cache.lookup(s.id, V12));
    assert.deepEqual(order(cache), [hex(s.id)]);
    assert.deepEqual(rec.removedIds(), [hex(old.id)], "the copy evicted the old session");
    assert.equal(cache.stats().cacheFull, 1);
    assert.equal(rec.added.length, 0, "a copy is not a new session");
    // The second look-up is internal.
    sync(cache.lookup(s.id, V12));
    assert.equal(ext.asked.length, 1);
  });

  test("R6 NO_INTERNAL_STORE: external hits are not copied in", () => {
    const s = session();
    const ext = external([s]);
    const { cache } = recordingCache({ mode: M.SERVER | M.NO_INTERNAL_STORE, getSession: ext.get });
    assert.ok(sync(cache.lookup(s.id, V12)));
    assert.equal(cache.stats().number, 0);
    assert.ok(sync(cache.lookup(s.id, V12)));
    assert.equal(ext.asked.length, 2);
    assert.equal(cache.stats().cbHits, 2);
  });

  test("R6 an external answer may be a Session object", () => {
    const s = session();
    const ext = external([s], "session");
    const { cache } = recordingCache({ getSession: ext.get });
    assert.equal(hex(sync(cache.lookup(s.id, V12))!.id), hex(s.id));
    assert.equal(cache.stats().number, 1);
  });

  test("R6 an expired external hit goes in, then out through R7 with the remove callback", () => {
    const s = session({ time: T0 - 10000 });
    const ext = external([s]);
    const { cache, rec } = recordingCache({ getSession: ext.get });
    assert.equal(sync(cache.lookup(s.id, V12)), undefined);
    const st = cache.stats();
    assert.deepEqual([st.misses, st.cbHits, st.timeouts, st.hits, st.number], [1, 1, 1, 0, 0]);
    assert.deepEqual(rec.removedIds(), [hex(s.id)]);
  });

  test("R6 an expired external hit under NO_INTERNAL_STORE still calls the remove callback", () => {
    const s = session({ time: T0 - 10000 });
    const ext = external([s]);
    const { cache, rec } = recordingCache({ mode: "server,no_internal_store", getSession: ext.get });
    assert.equal(sync(cache.lookup(s.id, V12)), undefined);
    assert.equal(cache.stats().timeouts, 1);
    assert.deepEqual(rec.removedIds(), [hex(s.id)]);
  });

  test("R6 a context-mismatched external hit stays in the internal cache", () => {
    const s = session({ ctx: "other" });
    const ext = external([s]);
    const { cache, rec } = recordingCache({ getSession: ext.get, sessionIdContext: "mine" });
    assert.equal(sync(cache.lookup(s.id, V12)), undefined);
    const st = cache.stats();
    assert.deepEqual([st.cbHits, st.hits, st.timeouts, st.number], [1, 0, 0, 1]);
    assert.equal(rec.removed.length, 0);
  });

  test("R6 UPDATE_TIME refreshes an external copy (so an old one is not expired)", () => {
    const s = session({ time: T0 - 10000 });
    const ext = external([s]);
    const { cache } = recordingCache({ getSession: ext.get, mode: "server,update_time" });
    const hit = sync(cache.lookup(s.id, V12));
    assert.ok(hit);
    assert.equal(hit.time, T0);
    assert.equal(parseSession(hit.der).time, T0);
    assert.equal(cache.sessions()[0].time, T0);
    assert.equal(cache.stats().timeouts, 0);
  });
});

describe("R6 the external cache is never trusted", () => {
  const cases: [string, (id: Uint8Array) => unknown][] = [
    ["garbage bytes", () => new Uint8Array([1, 2, 3])],
    ["a session for another id", () => buildSessionDer({ id: newId(), time: T0 })],
    [
      "the right id under another protocol version",
      (id) => buildSessionDer({ id, time: T0, protocolVersion: V13 }),
    ],
    ["a number", () => 42],
    ["an object without DER", () => ({ id: new Uint8Array(1) })],
    ["an object with garbage DER", () => ({ der: new Uint8Array([0x30, 0]) })],
  ];
  for (const [what, answer] of cases) {
    test(`R6 getSession returning ${what} is a miss counted as rejected, nothing stored`, () => {
      const { cache, rec } = recordingCache({ getSession: answer as never });
      assert.equal(sync(cache.lookup(newId(), V12)), undefined);
      const st = cache.stats();
      assert.deepEqual([st.misses, st.cbHits, st.hits, st.number, st.rejected], [1, 0, 0, 0, 1]);
      assert.equal(rec.removed.length, 0);
    });
  }

  test("R6 a getSession that throws is a miss, reported through onError", () => {
    const { cache, rec } = recordingCache({
      getSession: () => {
        throw new Error("boom");
      },
    });
    assert.equal(cache.lookup(newId(), V12), undefined);
    assert.equal((rec.errors[0] as Error).message, "boom");
  });

  test("R6 the external cache's buffer is copied: changing it later changes nothing", () => {
    const s = session();
    const buf = new Uint8Array(s.der);
    const { cache } = recordingCache({ getSession: () => buf });
    const hit = sync(cache.lookup(s.id, V12))!;
    buf.fill(0);
    assert.deepEqual(new Uint8Array(hit.der), new Uint8Array(s.der));
    assert.deepEqual(new Uint8Array(cache.sessions()[0].der), new Uint8Array(s.der));
  });
});

describe("R6 asynchronous external cache", () => {
  test("R6 lookup returns a Promise only when getSession answers with one", async () => {
    const s = session();
    const { cache } = recordingCache({
      getSession: async (id) => (hex(id) === hex(s.id) ? s.der : undefined),
    });
    const p = cache.lookup(s.id, V12);
    assert.ok(p instanceof Promise);
    const hit = await p;
    assert.equal(hex(hit!.id), hex(s.id));
    assert.equal(cache.stats().cbHits, 1);
    // Now internal: synchronous.
    assert.ok(!(cache.lookup(s.id, V12) instanceof Promise));
    assert.equal(await cache.lookup(newId(), V12), undefined);
  });

  test("R6 a rejected getSession is a miss and never throws out of lookup", async () => {
    const { cache, rec } = recordingCache({ getSession: () => Promise.reject(new Error("redis down")) });
    assert.equal(await cache.lookup(newId(), V12), undefined);
    assert.equal((rec.errors[0] as Error).message, "redis down");
    assert.equal(cache.stats().misses, 1);
  });

  test("R6 the asked id is kept: changing the caller's buffer meanwhile changes nothing", async () => {
    const s = session();
    let release!: (v: Uint8Array) => void;
    const { cache } = recordingCache({ getSession: () => new Promise((r) => (release = r)) });
    const id = new Uint8Array(s.id);
    const p = cache.lookup(id, V12);
    id.fill(0);
    release(s.der);
    assert.ok(await p);
  });

  test("R6 the async answer is checked with the clock at the time it arrives", async () => {
    const s = session({ time: T0, timeout: 10 });
    let release!: (v: Uint8Array) => void;
    const { cache, clock, rec } = recordingCache({ getSession: () => new Promise((r) => (release = r)) });
    const p = cache.lookup(s.id, V12);
    clock.advance(11);
    release(s.der);
    assert.equal(await p, undefined);
    assert.equal(cache.stats().timeouts, 1);
    assert.equal(rec.removed.length, 1);
  });
});

describe("R7 checks on a found session", () => {
  test("R7 expired on look-up: timeouts+1, removed, remove callback, miss", () => {
    const { cache, clock, rec } = recordingCache();
    const s = session({ timeout: 60 });
    cache.addSession(s);
    clock.advance(61);
    assert.equal(cache.lookup(s.id, V12), undefined);
    const st = cache.stats();
    assert.deepEqual([st.timeouts, st.hits, st.misses, st.number], [1, 0, 0, 0]);
    assert.deepEqual(rec.removedIds(), [hex(s.id)]);
  });

  test("R7 an internal session found expired is not looked for externally", () => {
    const s = session({ timeout: 60 });
    const ext = external([session({ id: s.id, timeout: 100000 })]);
    const { cache, clock } = recordingCache({ getSession: ext.get });
    cache.addSession(s);
    clock.advance(61);
    assert.equal(cache.lookup(s.id, V12), undefined);
    assert.deepEqual(ext.asked, []);
  });

  test("R7 a context mismatch internally is not looked for externally either", () => {
    const s = session({ ctx: "b" });
    const ext = external([session({ id: s.id, ctx: "a" })]);
    const { cache } = recordingCache({ getSession: ext.get, sessionIdContext: "a" });
    cache.addSession(s);
    assert.equal(cache.lookup(s.id, V12), undefined);
    assert.deepEqual(ext.asked, []);
  });

  test("R7 the protocol version must match: a session stored under TLS 1.2 is not found for 1.3", () => {
    const { cache } = recordingCache();
    const s = session({ protocolVersion: V12 });
    cache.addSession(s);
    assert.equal(cache.lookup(s.id, V13), undefined);
    assert.equal(cache.stats().misses, 1);
  });
});

describe("R8/R9", () => {
  test("R8 a hit never reorders the list nor refreshes the time", () => {
    const { cache, clock, rec } = recordingCache({ cacheSize: 2 });
    const a = session();
    const b = session();
    cache.addSession(a);
    cache.addSession(b);
    clock.advance(100);
    for (let i = 0; i < 5; i++) assert.ok(cache.lookup(a.id, V12));
    assert.deepEqual(order(cache), [hex(b.id), hex(a.id)]);
    assert.equal(cache.sessions()[1].time, T0);
    cache.addSession(session());
    assert.deepEqual(rec.removedIds(), [hex(a.id)], "not LRU: the hits did not save a");
  });

  test("R9 mode OFF still looks up, internal then external", () => {
    const inside = session();
    const outside = session();
    const ext = external([outside]);
    const { cache } = recordingCache({ mode: M.OFF, getSession: ext.get });
    cache.addSession(inside);
    assert.ok(sync(cache.lookup(inside.id, V12)));
    assert.ok(sync(cache.lookup(outside.id, V12)));
    const st = cache.stats();
    assert.deepEqual([st.hits, st.misses, st.cbHits], [2, 1, 1]);
  });

  test("R9 mode OFF with NO_INTERNAL_STORE does not copy", () => {
    const outside = session();
    const { cache } = recordingCache({ mode: M.NO_INTERNAL_STORE, getSession: external([outside]).get });
    assert.ok(sync(cache.lookup(outside.id, V12)));
    assert.equal(cache.stats().number, 0);
  });
});

describe("hits hand out copies", () => {
  test("a hit's bytes are a copy: changing them does not change the cache", () => {
    const cache = new SessionCache({ clock: () => T0 });
    const s = session();
    cache.addSession(s);
    const hit = sync(cache.lookup(s.id, V12))!;
    (hit.der as Uint8Array).fill(0);
    assert.deepEqual(new Uint8Array(sync(cache.lookup(s.id, V12))!.der), new Uint8Array(s.der));
  });

  test("a hit reads like a decoded session and hides the master secret", () => {
    const cache = new SessionCache({ clock: () => T0 });
    const s = session({ hostname: "h.example", alpn: "h2", masterKey: new Uint8Array(48).fill(0x77) });
    cache.addSession(s);
    const hit = sync(cache.lookup(s.id, V12))!;
    for (const k of [
      "id",
      "protocol",
      "cipherId",
      "cipherName",
      "time",
      "timeout",
      "expiresAt",
      "hostname",
    ] as const) {
      assert.deepEqual(
        k === "id" ? hex(hit[k]) : hit[k],
        k === "id" ? hex(s[k]) : (s as unknown as Record<string, unknown>)[k],
        k,
      );
    }
    assert.equal(hit.isExpiredAt(s.expiresAt), false);
    assert.equal(hit.isExpiredAt(s.expiresAt + 1), true);
    const shown = `${JSON.stringify(hit)} ${String(hit)} ${inspect(hit)}`;
    assert.ok(!shown.includes("77777777"), "no master secret");
    assert.ok(shown.includes(hex(s.id)));
  });
});
