import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  DEFAULT_CACHE_SIZE,
  DEFAULT_TIMEOUT,
  formatMode,
  SessionCacheMode as M,
  parseMode,
  SessionCache,
  SessionCacheModeError,
} from "../src/engine/index.js";
import { session } from "./support/engine.js";

describe("R1 modes", () => {
  test("R1 the flag values are OpenSSL's", () => {
    assert.deepEqual(
      { ...M },
      {
        OFF: 0,
        CLIENT: 1,
        SERVER: 2,
        BOTH: 3,
        NO_AUTO_CLEAR: 0x80,
        NO_INTERNAL_LOOKUP: 0x100,
        NO_INTERNAL_STORE: 0x200,
        NO_INTERNAL: 0x300,
        UPDATE_TIME: 0x400,
      },
    );
  });

  test("R1 setMode returns the previous mode and getMode the current one", () => {
    const cache = new SessionCache();
    assert.equal(cache.setMode(M.BOTH), M.SERVER);
    assert.equal(cache.getMode(), M.BOTH);
    assert.equal(cache.setMode(0), M.BOTH);
    assert.equal(cache.getMode(), M.OFF);
  });

  test("R1 setMode stores unknown bits unchecked", () => {
    const cache = new SessionCache();
    cache.setMode(0x1002);
    assert.equal(cache.getMode(), 0x1002);
    assert.equal(cache.setMode("server"), 0x1002);
  });

  test("R1 names, OpenSSL macro names, lists and numbers in strings are accepted", () => {
    const cases: [string, number][] = [
      ["server", M.SERVER],
      ["no_internal_lookup", M.NO_INTERNAL_LOOKUP],
      ["SSL_SESS_CACHE_SERVER", M.SERVER],
      ["SSL_SESS_CACHE_BOTH", M.BOTH],
      ["server,no_auto_clear", M.SERVER | M.NO_AUTO_CLEAR],
      ["0x302", 0x302],
      ["both|update_time", M.BOTH | M.UPDATE_TIME],
      ["Client | No-Internal", M.CLIENT | M.NO_INTERNAL],
      ["off", 0],
      ["770", 770],
    ];
    for (const [input, value] of cases) {
      assert.equal(parseMode(input), value, input);
      const cache = new SessionCache();
      cache.setMode(input);
      assert.equal(cache.getMode(), value, input);
    }
  });

  test("R1 an unknown name throws an error naming the bad part, mode unchanged", () => {
    const cache = new SessionCache({ mode: "both" });
    assert.throws(
      () => cache.setMode("server,no_auto_clearr"),
      (err: unknown) =>
        err instanceof SessionCacheModeError &&
        err.part === "no_auto_clearr" &&
        err.message.includes('"no_auto_clearr"'),
    );
    assert.equal(cache.getMode(), M.BOTH);
    assert.throws(() => parseMode(""), SessionCacheModeError);
    assert.throws(() => parseMode(-1), SessionCacheModeError);
    assert.throws(() => parseMode(1.5), SessionCacheModeError);
    assert.throws(() => parseMode("0x100000000"), SessionCacheModeError);
    assert.throws(() => new SessionCache({ mode: "serve" }), /unknown session cache mode "serve"/);
  });

  test("R1 formatMode names the bits and parses back", () => {
    assert.equal(formatMode(M.SERVER | M.NO_AUTO_CLEAR), "server|no_auto_clear");
    assert.equal(formatMode(M.BOTH | M.NO_INTERNAL | M.NO_AUTO_CLEAR), "both|no_auto_clear|no_internal");
    assert.equal(formatMode(0), "off");
    assert.equal(formatMode(M.NO_INTERNAL_STORE), "off|no_internal_store");
    assert.equal(formatMode(0x1001), "client|0x1000");
    for (let m = 0; m < 0x800; m++) assert.equal(parseMode(formatMode(m)), m);
  });
});

describe("R2 defaults", () => {
  test("R2 defaults are mode SERVER, size 20480, timeout 7200 s, empty context", () => {
    const cache = new SessionCache();
    assert.equal(cache.getMode(), M.SERVER);
    assert.equal(cache.getCacheSize(), 20480);
    assert.equal(DEFAULT_CACHE_SIZE, 20480);
    assert.equal(cache.getTimeout(), 7200);
    assert.equal(DEFAULT_TIMEOUT, 7200);
    assert.deepEqual(cache.getSessionIdContext(), new Uint8Array(0));
    assert.deepEqual(cache.stats(), {
      number: 0,
      connect: 0,
      connectGood: 0,
      connectRenegotiate: 0,
      accept: 0,
      acceptGood: 0,
      acceptRenegotiate: 0,
      hits: 0,
      cbHits: 0,
      misses: 0,
      timeouts: 0,
      cacheFull: 0,
      rejected: 0,
    });
  });

  test("R2 options set mode, size, timeout and context", () => {
    const cache = new SessionCache({
      mode: "both,no_auto_clear",
      cacheSize: 5,
      timeout: 300,
      sessionIdContext: "svc",
    });
    assert.equal(cache.getMode(), M.BOTH | M.NO_AUTO_CLEAR);
    assert.equal(cache.getCacheSize(), 5);
    assert.equal(cache.getTimeout(), 300);
    assert.deepEqual(cache.getSessionIdContext(), new TextEncoder().encode("svc"));
  });

  test("R2 the default clock is wall time in whole seconds", () => {
    const cache = new SessionCache();
    const before = Math.floor(Date.now() / 1000);
    const s = cache.updateCache(
      // A session without time reads as "now"; the cache applies its own timeout.
      new Uint8Array([
        0x30, 0x15, 0x02, 0x01, 0x01, 0x02, 0x02, 0x03, 0x03, 0x04, 0x02, 0xc0, 0x2f, 0x04, 0x01, 0x07, 0x04,
        0x01, 0x00, 0xa4, 0x02, 0x04, 0x00,
      ]),
      "server",
    );
    assert.ok(s);
    assert.ok(s.time >= before && s.time <= Math.floor(Date.now() / 1000));
    assert.ok(Number.isInteger(s.time));
    assert.equal(s.timeout, 7200);
  });

  test("R2 the default clock (cached between calls) moves on with wall time", async () => {
    // UPDATE_TIME stamps sessions with the clock's now.
    const cache = new SessionCache({ mode: "server,update_time" });
    const first = cache.updateCache(session({ time: 1 }), "server")!.time;
    await new Promise((r) => setTimeout(r, 1100));
    const second = cache.updateCache(session({ time: 1 }), "server")!.time;
    assert.ok(second >= first + 1, `${first} then ${second}`);
    assert.ok(Math.abs(second - Date.now() / 1000) < 1.5);
  });
});
