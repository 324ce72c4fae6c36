// The packed index against a plain reference model (a Map plus a sort), over random operations
// with a fake clock, and the slab's memory behaviour.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { SessionCacheMode as M, SessionCache } from "../src/engine/index.js";
import { parseSession, type Session } from "../src/session/index.js";
import { fakeClock, hex, session, T0 } from "./support/engine.js";
import { buildSessionDer, explicit, integer, newId, octets, sequence } from "./support/session-der.js";

const DEFAULT_TIMEOUT = 7200;

/** A session as the model sees it: every field that ends up in the bytes. */
interface Spec {
  slot: number; // which (id, version) of the pool
  variant: number; // hostname / size: a different session under the same key
  time: number;
  timeout: number;
  ctx: number;
}

interface Entry extends Spec {
  seq: number;
}

const SIZES = [0, 158, 600, 2000, 4200, 9000];
const CTXS = ["", "svc-a", "svc-b"];

function makePool(n: number) {
  return Array.from({ length: n }, (_, i) => ({
    id: newId(1 + ((i * 7) % 32)),
    ver: i % 3 === 0 ? 0x0304 : 0x0303,
  }));
}
type Pool = ReturnType<typeof makePool>;

const derCaches = new WeakMap<Pool, Map<string, Session>>();
function toSession(pool: Pool, s: Spec): Session {
  let derCache = derCaches.get(pool);
  if (!derCache) {
    derCache = new Map();
    derCaches.set(pool, derCache);
  }
  const k = `${s.slot}/${s.variant}/${s.time}/${s.timeout}/${s.ctx}`;
  let out = derCache.get(k);
  if (!out) {
    out = session({
      id: pool[s.slot].id,
      protocolVersion: pool[s.slot].ver,
      time: s.time,
      timeout: s.timeout,
      ctx: CTXS[s.ctx],
      hostname: `v${s.variant}`,
      padTo: SIZES[s.variant % SIZES.length],
    });
    derCache.set(k, out);
  }
  return out;
}

const expiryOf = (e: Spec) => Math.min(e.time + e.timeout, Number.MAX_SAFE_INTEGER);
const keyOf = (pool: Pool, slot: number) => `${pool[slot].ver}/${hex(pool[slot].id)}`;

/** OpenSSL's cache as the spec states it, written as plainly as possible. */
class Model {
  map = new Map<string, Entry>();
  seq = 0;
  size = 8;
  timeout = DEFAULT_TIMEOUT;
  ctx = 0;
  updateTime = false;
  stats = { hits: 0, misses: 0, timeouts: 0, cacheFull: 0 };
  removed: string[] = [];
  constructor(
    readonly pool: Pool,
    readonly now: () => number,
  ) {}

  /** Tail first: earliest expiry, then oldest. */
  private byEviction(): [string, Entry][] {
    return [...this.map].sort(([, a], [, b]) => expiryOf(a) - expiryOf(b) || a.seq - b.seq);
  }
  order(): string[] {
    return this.byEviction()
      .reverse()
      .map(([k]) => k);
  }
  add(s: Spec): boolean {
    const k = keyOf(this.pool, s.slot);
    const t = this.updateTime ? { ...s, time: this.now() } : { ...s };
    const old = this.map.get(k);
    if (old) {
      const same =
        old.variant === t.variant &&
        old.ctx === t.ctx &&
        old.timeout === t.timeout &&
        (this.updateTime || old.time === t.time);
      if (same) {
        old.time = t.time;
        old.seq = ++this.seq;
        return false;
      }
      this.map.delete(k);
    }
    if (this.size > 0) {
      while (this.map.size >= this.size) {
        const [vk] = this.byEviction()[0];
        this.map.delete(vk);
        this.removed.push(vk);
        this.stats.cacheFull++;
      }
    }
    this.map.set(k, { ...t, seq: ++this.seq });
    return true;
  }
  updateCache(s: Spec): void {
    this.add({ ...s, timeout: this.timeout === 0 ? DEFAULT_TIMEOUT : this.timeout });
  }
  remove(slot: number): boolean {
    const k = keyOf(this.pool, slot);
    const had = this.map.delete(k);
    this.removed.push(k);
    return had;
  }
  lookup(slot: number): string | undefined {
    const k = keyOf(this.pool, slot);
    const e = this.map.get(k);
    if (!e) {
      this.stats.misses++;
      return undefined;
    }
    if (e.ctx !== this.ctx) return undefined;
    if (this.now() > expiryOf(e)) {
      this.stats.timeouts++;
      this.map.delete(k);
      this.removed.push(k);
      return undefined;
    }
    this.stats.hits++;
    return `${k}/${e.variant}/${e.time}/${e.timeout}`;
  }
  flush(t: number): number {
    let n = 0;
    for (const [k, e] of this.byEviction()) {
      if (t !== 0 && !(t > expiryOf(e))) break;
      this.map.delete(k);
      this.removed.push(k);
      n++;
    }
    return n;
  }
}

type Op =
  | { op: "add"; spec: Spec }
  | { op: "update"; spec: Spec }
  | { op: "remove"; slot: number }
  | { op: "lookup"; slot: number }
  | { op: "advance"; by: number }
  | { op: "flush"; at: "now" | "zero" | number }
  | { op: "size"; size: number }
  | { op: "timeout"; timeout: number }
  | { op: "context"; ctx: number }
  | { op: "updateTime"; on: boolean };

const POOL = 24;
const specArb = fc.record({
  slot: fc.integer({ min: 0, max: POOL - 1 }),
  variant: fc.integer({ min: 0, max: 7 }),
  time: fc.integer({ min: -60, max: 60 }), // relative to the clock at the time of the op
  timeout: fc.constantFrom(1, 5, 10, 30, 30, 60, 300, Number.MAX_SAFE_INTEGER),
  ctx: fc.constantFrom(0, 0, 0, 1, 2),
});
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: specArb.map((spec) => ({ op: "add" as const, spec })) },
  { weight: 3, arbitrary: specArb.map((spec) => ({ op: "update" as const, spec })) },
  {
    weight: 3,
    arbitrary: fc.integer({ min: 0, max: POOL - 1 }).map((slot) => ({ op: "remove" as const, slot })),
  },
  {
    weight: 8,
    arbitrary: fc.integer({ min: 0, max: POOL - 1 }).map((slot) => ({ op: "lookup" as const, slot })),
  },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 40 }).map((by) => ({ op: "advance" as const, by })) },
  {
    weight: 2,
    arbitrary: fc
      .oneof(fc.constant<"now">("now"), fc.constant<"zero">("zero"), fc.integer({ min: -100, max: 100 }))
      .map((at) => ({ op: "flush" as const, at })),
  },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 12 }).map((size) => ({ op: "size" as const, size })) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(0, 7, 20, 3600).map((timeout) => ({ op: "timeout" as const, timeout })),
  },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 2).map((ctx) => ({ op: "context" as const, ctx })) },
  { weight: 1, arbitrary: fc.boolean().map((on) => ({ op: "updateTime" as const, on })) },
);

function describeHit(pool: Pool, s: Session | undefined): string | undefined {
  if (!s) return undefined;
  const slot = pool.findIndex((p) => hex(p.id) === hex(s.id) && p.ver === s.protocolVersion);
  return `${keyOf(pool, slot)}/${Number(s.hostname?.slice(1))}/${s.time}/${s.timeout}`;
}

function run(ops: Op[], pool: Pool, checkEvery = 1): void {
  const clock = fakeClock();
  const model = new Model(pool, () => clock.now);
  const removed: string[] = [];
  const errors: unknown[] = [];
  const cache = new SessionCache({
    clock,
    cacheSize: model.size,
    onRemoveSession: (s) => removed.push(`${s.protocolVersion}/${hex(s.id)}`),
    onError: (e) => errors.push(e),
  });
  let seen = 0;
  const abs = (s: Spec): Spec => ({ ...s, time: Math.max(1, clock.now + s.time) });
  ops.forEach((o, i) => {
    const where = `op ${i} ${JSON.stringify(o)}`;
    switch (o.op) {
      case "add": {
        const s = abs(o.spec);
        assert.equal(cache.addSession(toSession(pool, s)), model.add(s), where);
        break;
      }
      case "update": {
        const s = abs(o.spec);
        cache.updateCache(toSession(pool, s), "server");
        model.updateCache(s);
        break;
      }
      case "remove":
        assert.equal(
          cache.removeSession(toSession(pool, { ...o, variant: 0, time: T0, timeout: 1, ctx: 0 })),
          model.remove(o.slot),
          where,
        );
        break;
      case "lookup": {
        const got = cache.lookup(pool[o.slot].id, pool[o.slot].ver);
        assert.ok(!(got instanceof Promise));
        assert.equal(describeHit(pool, got), model.lookup(o.slot), where);
        break;
      }
      case "advance":
        clock.advance(o.by);
        break;
      case "flush": {
        const t = o.at === "now" ? clock.now : o.at === "zero" ? 0 : clock.now + o.at;
        assert.equal(o.at === "now" ? cache.flush() : cache.flush(t), model.flush(t), where);
        break;
      }
      case "size":
        cache.setCacheSize(o.size);
        model.size = o.size;
        break;
      case "timeout":
        cache.setTimeout(o.timeout);
        model.timeout = o.timeout;
        break;
      case "context":
        cache.setSessionIdContext(CTXS[o.ctx]);
        model.ctx = o.ctx;
        break;
      case "updateTime":
        cache.setMode(o.on ? M.SERVER | M.UPDATE_TIME : M.SERVER);
        model.updateTime = o.on;
        break;
    }
    assert.deepEqual(errors, [], where);
    // Only what this op added (comparing the whole history each time would be quadratic).
    assert.equal(removed.length, model.removed.length, `remove callbacks after ${where}`);
    assert.deepEqual(removed.slice(seen), model.removed.slice(seen), `remove callbacks after ${where}`);
    seen = removed.length;
    const st = cache.stats();
    assert.deepEqual(
      { hits: st.hits, misses: st.misses, timeouts: st.timeouts, cacheFull: st.cacheFull, number: st.number },
      { ...model.stats, number: model.map.size },
      where,
    );
    if (i % checkEvery === 0 || i === ops.length - 1) {
      assert.deepEqual(
        cache.sessions().map((s) => `${s.protocolVersion}/${hex(s.id)}`),
        model.order(),
        `list order after ${where}`,
      );
      cache.verifyIntegrity();
    }
  });
  cache.close();
  assert.equal(removed.length, model.removed.length + model.map.size);
}

describe("packed index against the reference model", () => {
  const pool = makePool(POOL);

  test("random operations agree with the model (fast-check)", () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 250 }), (ops) => run(ops, pool)),
      { numRuns: 120 },
    );
  });

  test("a long random run (20000 operations) agrees with the model", () => {
    const ops = fc.sample(opArb, { numRuns: 20000, seed: 4242 });
    run(ops, pool, 97);
  });

  test("a long run over a larger cache (size 0 and 300, 2000 keys) agrees with the model", () => {
    const big = makePool(2000);
    const bigSpec = specArb.map((s) => ({ ...s, slot: 0 }));
    const ops: Op[] = [{ op: "size", size: 0 }];
    const sample = fc.sample(
      fc.tuple(bigSpec, fc.integer({ min: 0, max: 1999 }), fc.integer({ min: 0, max: 99 })),
      { numRuns: 12000, seed: 7 },
    );
    for (const [spec, slot, r] of sample) {
      if (r < 55) ops.push({ op: "add", spec: { ...spec, slot, variant: spec.variant % 2 } });
      else if (r < 85) ops.push({ op: "lookup", slot });
      else if (r < 90) ops.push({ op: "remove", slot });
      else if (r < 97) ops.push({ op: "advance", by: r - 88 });
      else if (r < 98) ops.push({ op: "flush", at: "now" });
      else ops.push({ op: "size", size: r === 98 ? 300 : 0 });
    }
    run(ops, big, 499);
  });
});

describe("slab memory", () => {
  test("slab slots are reused: many add/remove cycles do not grow memory", () => {
    const clock = fakeClock();
    const cache = new SessionCache({ clock, cacheSize: 500 });
    const fill = (n: number) => {
      for (let i = 0; i < n; i++) cache.addSession(session({ time: clock.now, padTo: 158 }));
    };
    fill(2000);
    const warm = cache.memoryUsage();
    for (let round = 0; round < 20; round++) {
      fill(1000);
      for (const s of cache.sessions().slice(0, 250)) cache.removeSession(s);
      clock.advance(1);
    }
    const after = cache.memoryUsage();
    assert.equal(after.slabChunks, warm.slabChunks);
    assert.equal(after.buckets, warm.buckets);
    assert.ok(after.slabBytesInUse <= warm.slabBytesInUse);
    cache.verifyIntegrity();
  });

  test("sessions of mixed sizes (158 B to 9 KiB) are stored and read back byte for byte", () => {
    const clock = fakeClock();
    const cache = new SessionCache({ clock, cacheSize: 0 });
    const sizes = [158, 162, 300, 559, 1200, 2048, 4096, 4097, 6000, 9216];
    const all = Array.from({ length: 400 }, (_, i) => session({ padTo: sizes[i % sizes.length] }));
    for (const s of all) cache.addSession(s);
    assert.deepEqual(
      sizes.map((n) => all.find((s) => s.der.length === n) !== undefined),
      sizes.map(() => true),
      "every size class is represented",
    );
    for (const s of all) {
      const hit = cache.lookup(s.id, s.protocolVersion);
      assert.ok(hit && !(hit instanceof Promise));
      assert.deepEqual(new Uint8Array(hit.der), new Uint8Array(s.der));
    }
    const mem = cache.memoryUsage();
    // Past the slab's largest slot (4096 B, 32-byte record included: 4096, 4097, 6000 and 9216 B
    // sessions) the bytes get their own buffers.
    assert.equal(mem.largeSessions, 160);
    // Remove the odd ones, add the same sizes again: slots are reused.
    for (let i = 1; i < all.length; i += 2) cache.removeSession(all[i]);
    const chunks = cache.memoryUsage().slabChunks;
    for (let i = 1; i < all.length; i += 2) cache.addSession(session({ padTo: all[i].der.length }));
    assert.equal(cache.memoryUsage().slabChunks, chunks);
    cache.verifyIntegrity();
    cache.close();
    assert.equal(cache.memoryUsage().largeSessions, 0);
  });

  test("every field survives storage byte for byte (the context field is cut out and restored)", () => {
    const cert = sequence(octets(new Uint8Array(300).fill(3)));
    const clock = fakeClock();
    const variants: Uint8Array[] = [];
    for (const ctxLen of [0, 1, 5, 31, 32]) {
      const ctx = Uint8Array.from({ length: ctxLen }, (_, i) => 0x30 + i);
      variants.push(
        buildSessionDer({ id: newId(), time: T0, sessionIdContext: ctx }),
        buildSessionDer({
          id: newId(),
          time: T0,
          sessionIdContext: ctx,
          peerCertificate: cert,
          hostname: "h",
        }),
        buildSessionDer({
          id: newId(),
          time: T0,
          sessionIdContext: ctx,
          hostname: "a-long-host-name.example.com",
          alpn: "http/1.1",
          ticket: new Uint8Array(200).fill(9),
          ticketLifetimeHint: 300,
          flags: 1,
          group: 0x1d,
        }),
      );
    }
    // A context field in a non-minimal length form is stored as it is, not cut.
    const id = newId();
    const head = [integer(1), integer(0x0303), octets(Uint8Array.of(0xc0, 0x2f)), octets(id)];
    const odd = sequence(
      ...head,
      octets(new Uint8Array(48)),
      explicit(1, integer(T0)),
      explicit(2, integer(300)),
      Uint8Array.of(0xa4, 0x81, 5, 0x04, 3, 0x61, 0x62, 0x63),
    );
    variants.push(odd);
    // One cache per context, so every session is found under its own.
    for (const der of variants) {
      const s = parseSession(der);
      const cache = new SessionCache({ clock, sessionIdContext: s.sessionIdContext });
      const removed: Uint8Array[] = [];
      const withCb = new SessionCache({
        clock,
        sessionIdContext: s.sessionIdContext,
        onRemoveSession: (r) => removed.push(new Uint8Array(r.der)),
      });
      cache.addSession(der);
      withCb.addSession(der);
      const hit = cache.lookup(s.id, s.protocolVersion);
      assert.ok(hit && !(hit instanceof Promise), hex(der));
      assert.equal(hex(hit.der), hex(der));
      assert.equal(cache.addSession(der), false, "the stored bytes compare equal to the original");
      assert.equal(hex(cache.sessions()[0].der), hex(der));
      withCb.close();
      assert.equal(hex(removed[0]), hex(der));
    }
  });

  test("an entry costs its slot (record + DER) and a hash bucket, nothing per session besides", () => {
    const clock = fakeClock();
    const cache = new SessionCache({ clock, cacheSize: 3000 });
    for (let i = 0; i < 5000; i++) cache.addSession(session({ padTo: 158 }));
    const mem = cache.memoryUsage();
    assert.equal(mem.sessions, 3000);
    // 32-byte record + 158 bytes less the 4-byte empty context field: 186 → 192.
    assert.equal(mem.slabBytesInUse, 3000 * 192);
    assert.ok(mem.slabBytes <= mem.slabBytesInUse + 2 * 256 * 1024);
    assert.ok(mem.bucketBytes <= 4096 * 6, "a handle and 2 bytes of tag per bucket");
  });

  test("a 158-byte session with a 32-byte context takes a 160-byte slot, record included", () => {
    const ctx = new Uint8Array(32).fill(0x61);
    const cache = new SessionCache({ clock: fakeClock(), sessionIdContext: ctx });
    for (let i = 0; i < 100; i++) {
      const s = session({ ctx, flags: 1, group: 0x1d });
      assert.equal(s.der.length, 158);
      cache.addSession(s);
    }
    assert.equal(cache.memoryUsage().slabBytesInUse, 100 * 160);
  });

  test("the bytes handed out are copies, not views of the slab", () => {
    const cache = new SessionCache({ clock: () => T0 });
    const s = session();
    cache.addSession(s);
    const hit = cache.lookup(s.id, s.protocolVersion) as Session;
    cache.removeSession(s);
    for (let i = 0; i < 50; i++) cache.addSession(session());
    assert.equal(hex(parseSession(hit.der).id), hex(s.id));
    assert.ok(
      hit.der.byteLength < 8192 && hit.der.buffer.byteLength <= 8192,
      "not a view of a 256 KiB chunk",
    );
  });
});
