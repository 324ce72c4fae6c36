// The bounded-resources suites of reliability/ at CI size (the full sizes: `npm run reliability --
// <suite>`, figures in reliability/RESULTS.md). Each suite checks its own bounds and returns the
// failed checks; these tests assert there are none.
import assert from "node:assert/strict";
import { test } from "node:test";
import { churn } from "../reliability/churn.js";
import { oversized } from "../reliability/oversized.js";
import { slowHellos } from "../reliability/slow-hellos.js";
import { virtualDay } from "../reliability/virtual-day.js";
import { redisSkipReason } from "./support/redis.js";

test("churn: 10^5 real sessions through a cache of 20480: RSS bounded, integrity holds", {
  timeout: 60_000,
}, async () => {
  const r = await churn({ sessions: 100_000 });
  assert.deepEqual(r.failures, []);
  assert.equal(r.figures.evictions, 100_000 - 20480);
});

test("virtual-day: 3 virtual hours at 20 sessions/s, timeout 600 s: steady at ≈ 12 000", {
  timeout: 60_000,
}, async () => {
  const r = await virtualDay({ seconds: 3 * 3600, rate: 20, lookupRate: 60, timeout: 600 });
  assert.deepEqual(r.failures, []);
  assert.equal(r.figures.checkpoints, 3);
});

test("virtual-day: bounded by cacheSize 2048 when rate × timeout exceeds it", {
  timeout: 60_000,
}, async () => {
  const r = await virtualDay({ seconds: 3600, rate: 20, lookupRate: 20, timeout: 7200, cacheSize: 2048 });
  assert.deepEqual(r.failures, []);
  assert.equal(r.figures.steadyState, 2048);
  assert.ok((r.figures.cacheFull as number) > 0);
});

test("slow-hellos: 300 trickling + 300 silent clients held, each closed at helloTimeout; resumption goes on", {
  timeout: 60_000,
}, async () => {
  // Hold mode: the 600 are opened first, held through a 3 s slow-only and a 3 s loaded window, and
  // closed by helloTimeout (9 s). The ≥ 90 % rate criterion is the full run's (RESULTS.md): here the
  // slow clients' process competes for the same few shared cores as the normal clients, so the
  // ratio measures the machine more than the server; resumption must only go on, without a failure.
  const r = await slowHellos({
    tricklers: 300,
    silent: 300,
    helloTimeout: 9000,
    seconds: 3,
    minRateRatio: 0,
    lateSlackMs: 2000,
  });
  assert.deepEqual(r.failures, []);
  assert.equal(r.figures.mode, "hold");
  assert.equal(r.figures.slowConnectionsClosed, 600);
  assert.equal(r.figures.serverHelloTimeouts, 600);
  assert.equal((r.figures.heldOpenMinInLoadedWindow as number) >= 600, true);
});

test("oversized: bursts at RedisStore and the cluster primary are refused at once", {
  timeout: 60_000,
  skip: redisSkipReason(),
}, async () => {
  const r = await oversized({ burst: 300 });
  assert.deepEqual(r.failures, []);
});
