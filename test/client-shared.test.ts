// The client cache on a shared store (sharedClientSessions): caches standing for separate processes
// resume each other's sessions through a sealed MemoryStore, TLS 1.3 tickets are taken once, store
// trouble is a bounded miss; then real processes through a real redis-server.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as asn1js from "asn1js";
import { Redis } from "ioredis";
import { Agent as UndiciAgent, request as undiciRequest } from "undici";
import {
  ClientSessionCache,
  clientIdentity,
  connectAsync,
  createHttpsAgent,
  type IdentityOptions,
  undiciConnector,
} from "../src/client/index.js";
import type { StoreKey } from "../src/engine/store.js";
import {
  MemoryStore,
  RedisStore,
  type SealingSessionStore,
  type SharedClientSessionsOptions,
  sharedClientSessions,
} from "../src/stores/index.js";
import { testPki } from "./support/certs.js";
import { type RedisServer, redisSkipReason, startRedis } from "./support/redis.js";

const pki = testPki();
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
type Version = "TLSv1.2" | "TLSv1.3";

async function tlsServer(maxVersion: Version): Promise<{ port: number; close(): void }> {
  const server = tls.createServer({ key: pki.key, cert: pki.cert, maxVersion }, (s) => {
    s.on("error", () => {});
    s.end("hi\n");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

const target = (port: number, maxVersion: Version): IdentityOptions => ({
  host: "127.0.0.1",
  port,
  servername: "localhost",
  ca: pki.caCert,
  maxVersion,
});

/** One connection through connectAsync, read to the end (so TLS 1.3 tickets arrive). */
async function connectOnce(cache: ClientSessionCache, options: IdentityOptions): Promise<boolean> {
  const socket = await connectAsync({ cache, ...options });
  let reused = false;
  socket.once("secureConnect", () => {
    reused = socket.isSessionReused();
  });
  socket.resume();
  await once(socket, "close");
  return reused;
}

const sealedMemoryStore = () => new MemoryStore({ sealing: { keys: [randomBytes(32)] } });

/** A cache standing for one process on `store`. */
function processCache(store: SealingSessionStore, options: SharedClientSessionsOptions = {}) {
  const shared = sharedClientSessions(store, options);
  return { cache: new ClientSessionCache({ shared }), shared };
}

/**
 * A TCP proxy that forwards the server's TLS records one by one and, once `corrupt` is set, flips a
 * byte in each application-data record: the client's decryption fails, a fatal TLS error (R23).
 */
async function corruptingProxy(targetPort: number) {
  const sockets = new Set<net.Socket>();
  const proxy = { port: 0, corrupt: false, close: () => {} };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.pipe(upstream);
    let pending = Buffer.alloc(0);
    upstream.on("data", (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt16BE(3)) {
        const n = 5 + pending.readUInt16BE(3);
        const record = Buffer.from(pending.subarray(0, n));
        pending = pending.subarray(n);
        if (proxy.corrupt && record[0] === 23) record[n - 1]! ^= 0xff;
        client.write(record);
      }
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  proxy.port = (server.address() as net.AddressInfo).port;
  proxy.close = () => {
    for (const s of sockets) s.destroy();
    server.close();
  };
  return proxy;
}

/** `inner` with take() answering `delayMs` late; `taken` settles when the first slow take has. */
function slowTakes(inner: SealingSessionStore, delayMs: number) {
  let release!: () => void;
  const taken = new Promise<void>((r) => {
    release = r;
  });
  const store: SealingSessionStore = {
    sealer: inner.sealer,
    get: (k) => inner.get(k),
    set: (k, v, e) => inner.set(k, v, e),
    delete: (k) => inner.delete(k),
    take: async (k) => {
      const v = await inner.take(k);
      await new Promise((r) => setTimeout(r, delayMs));
      release();
      return v;
    },
    close: () => inner.close(),
    stats: () => inner.stats(),
  };
  return { store, taken };
}

describe("client cache on a shared store (in-process, sealed MemoryStore)", () => {
  const servers = {} as Record<Version, { port: number; close(): void }>;
  before(async () => {
    servers["TLSv1.2"] = await tlsServer("TLSv1.2");
    servers["TLSv1.3"] = await tlsServer("TLSv1.3");
  });
  after(() => {
    for (const s of Object.values(servers)) s.close();
  });

  test("TLS 1.2: another cache resumes the session through the store, and it stays shared", async () => {
    const store = sealedMemoryStore();
    const opts = target(servers["TLSv1.2"].port, "TLSv1.2");
    const a = processCache(store);
    assert.equal(await connectOnce(a.cache, opts), false);
    await a.cache.save();
    assert.equal(store.size, 1);
    const b = processCache(store);
    const c = processCache(store);
    assert.equal(await connectOnce(b.cache, opts), true);
    assert.equal(await connectOnce(c.cache, opts), true, "a TLS 1.2 session is read, not taken");
    // b keeps it locally: its next connection needs no store round trip.
    assert.equal(b.cache.sessions(clientIdentity(opts)).length, 1);
    const lookups = b.shared.stats().lookups;
    assert.equal(await connectOnce(b.cache, opts), true);
    assert.equal(b.shared.stats().lookups, lookups);
  });

  test("TLS 1.3: a ticket is here or in the store, never both, and each is offered once", async () => {
    const store = sealedMemoryStore();
    const opts = target(servers["TLSv1.3"].port, "TLSv1.3");
    const a = processCache(store);
    assert.equal(await connectOnce(a.cache, opts), false);
    // A Node server issues two tickets after a full handshake: the newest stays, one is shared.
    await a.shared.settled();
    assert.equal(store.size, 1);
    assert.equal(a.cache.sessions(clientIdentity(opts)).length, 1);
    // save() (before a process exits) hands the one kept over too.
    await a.cache.save();
    assert.equal(store.size, 2);
    assert.equal(a.cache.sessions(clientIdentity(opts)).length, 0);
    const b = processCache(store);
    const c = processCache(store);
    const d = processCache(store);
    assert.equal(await connectOnce(b.cache, opts), true);
    assert.equal(store.size, 1);
    assert.equal(await connectOnce(c.cache, opts), true);
    // A Node 20 server issues no ticket on a resumed connection: the store is empty now.
    assert.equal(store.size, 0);
    assert.equal(await connectOnce(d.cache, opts), false);
    await d.cache.save();
    assert.equal(store.size, 2, "the full handshake's tickets are shared again");
    assert.deepEqual(
      [b, c, d].map((p) => p.shared.stats().tickets),
      [1, 1, 0],
    );
  });

  test("TLS 1.3: a process resumes from the ticket it kept without asking the store", async () => {
    const store = sealedMemoryStore();
    const opts = target(servers["TLSv1.3"].port, "TLSv1.3");
    const a = processCache(store);
    assert.equal(await connectOnce(a.cache, opts), false);
    assert.equal(a.shared.stats().lookups, 1);
    assert.equal(await connectOnce(a.cache, opts), true);
    assert.equal(a.shared.stats().lookups, 1, "the kept ticket needed no look-up");
    // Then the one it shared comes back from the store (nobody else took it); the identity is
    // known to speak TLS 1.3, so the TLS 1.2 slot is not read.
    const gets = store.stats().gets;
    assert.equal(await connectOnce(a.cache, opts), true);
    assert.equal(store.stats().gets, gets);
    assert.deepEqual([a.shared.stats().lookups, a.shared.stats().tickets], [2, 1]);
  });

  test("a value moved to another identity does not open and is counted", async () => {
    const store = sealedMemoryStore();
    const opts = target(servers["TLSv1.2"].port, "TLSv1.2");
    const a = processCache(store);
    await connectOnce(a.cache, opts);
    await a.cache.save();
    const slotKey = (identity: Uint8Array): StoreKey => ({
      namespace: "client",
      protocolVersion: 0x0303,
      context: identity,
      id: new Uint8Array([0]),
    });
    const other = clientIdentity({ ...opts, servername: "other.example" });
    const value = await store.get(slotKey(clientIdentity(opts).hash));
    assert.ok(value);
    await store.set(slotKey(other.hash), value, Math.floor(Date.now() / 1000) + 60);
    const rejected: string[] = [];
    const b = processCache(store, { onRejected: (e) => rejected.push(e.reason) });
    assert.equal(await b.shared.fetch(other.hash), undefined);
    assert.deepEqual(rejected, ["auth-failed"]);
    assert.equal(b.shared.stats().rejected, 1);
  });

  test("a store slower than the deadline: a full handshake on time; the late ticket serves the next connection", async () => {
    const inner = sealedMemoryStore();
    const opts = target(servers["TLSv1.3"].port, "TLSv1.3");
    // One ticket slot: the second of the server's two tickets replaces the first.
    const a = processCache(inner, { ticketSlots: 1 });
    await connectOnce(a.cache, opts);
    await a.cache.save();
    assert.equal(inner.size, 1);
    const { store: slow, taken: released } = slowTakes(inner, 300);
    const b = processCache(slow, { lookupTimeout: 40, ticketSlots: 1 });
    const t0 = performance.now();
    const plan = await b.cache.prepareAsync(opts);
    const waited = performance.now() - t0;
    assert.equal(plan.session, undefined);
    assert.ok(waited < 200, `waited ${waited.toFixed(0)} ms for a 40 ms deadline`);
    assert.equal(b.shared.stats().timeouts, 1);
    await released;
    await new Promise((r) => setImmediate(r));
    assert.equal(b.shared.stats().late, 1);
    assert.equal(inner.size, 0);
    assert.equal(await connectOnce(b.cache, opts), true, "the late ticket is used next");
  });

  test("a failed TLS 1.2 session is withdrawn from the store, a newer one in its slot is not", async () => {
    const store = sealedMemoryStore();
    const opts = target(servers["TLSv1.2"].port, "TLSv1.2");
    const identity = clientIdentity(opts);
    const a = processCache(store);
    await connectOnce(a.cache, opts);
    const [first] = a.cache.sessions(identity);
    assert.ok(first);
    await a.cache.save();
    // c makes a new session (prepare() alone does not ask the store), which replaces a's there.
    const c = processCache(store);
    const plan = c.cache.prepare(opts);
    assert.equal(plan.session, undefined);
    const s = tls.connect(plan.options);
    c.cache.attach(s, plan);
    s.resume();
    await once(s, "close");
    await c.cache.save();
    const [newer] = c.cache.sessions(identity);
    assert.ok(newer && Buffer.compare(newer.id, first.id) !== 0);
    // a's (older) session failed: the slot holds c's, so it stays.
    a.cache.remove(first, identity);
    await a.cache.save();
    assert.equal(store.size, 1);
    const b = processCache(store);
    assert.equal(Buffer.compare((await b.shared.fetch(identity.hash))!.id, newer.id), 0);
    // c's failed: withdrawn.
    c.cache.remove(newer, identity);
    await c.cache.save();
    assert.equal(store.size, 0);
  });

  test("identities built on a secureContext never reach the store", async () => {
    const store = sealedMemoryStore();
    const secureContext = tls.createSecureContext({ ca: pki.caCert });
    const opts = { ...target(servers["TLSv1.3"].port, "TLSv1.3"), ca: undefined, secureContext };
    const a = processCache(store);
    assert.equal(await connectOnce(a.cache, opts), false);
    await a.cache.save();
    assert.equal(store.size, 0);
    assert.equal(a.shared.stats().published, 0);
    // Kept locally as without a store: the next connection resumes with no look-up.
    assert.equal(await connectOnce(a.cache, opts), true);
    assert.equal(a.shared.stats().lookups, 0);
  });

  for (const v of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`${v}: a second https.Agent and a second undici Agent resume the first agent's session`, async () => {
      const server = https.createServer({ key: pki.key, cert: pki.cert, maxVersion: v }, (_req, res) => {
        res.end("ok");
      });
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      const port = (server.address() as net.AddressInfo).port;
      const store = sealedMemoryStore();
      const get = (agent: https.Agent) =>
        new Promise<boolean>((done, fail) => {
          https
            .get({ host: "127.0.0.1", port, servername: "localhost", ca: pki.caCert, agent }, (res) => {
              const reused = (res.socket as tls.TLSSocket).isSessionReused();
              res.resume();
              res.once("end", () => done(reused));
            })
            .once("error", fail);
        });
      const agents: https.Agent[] = [];
      const dispatchers: UndiciAgent[] = [];
      try {
        const first = createHttpsAgent({ cache: processCache(store).cache, maxVersion: v });
        agents.push(first);
        assert.equal(await get(first), false);
        first.destroy();
        await first.cache.save();
        const second = createHttpsAgent({ cache: processCache(store).cache, maxVersion: v });
        agents.push(second);
        assert.equal(await get(second), true);

        // undici offers ALPN http/1.1: another identity than https.get's, with its own sessions.
        const reused: boolean[] = [];
        const undiciGet = async () => {
          const cache = processCache(store).cache;
          const connector = undiciConnector({
            cache,
            ca: pki.caCert,
            maxVersion: v,
            servername: "localhost",
          });
          const dispatcher = new UndiciAgent({
            connect: (opts, cb) =>
              connector(opts, (...args) => {
                if (args[1]) reused.push((args[1] as tls.TLSSocket).isSessionReused());
                (cb as (...a: typeof args) => void)(...args);
              }),
          });
          dispatchers.push(dispatcher);
          const res = await undiciRequest(`https://127.0.0.1:${port}/`, { dispatcher });
          await res.body.text();
          await dispatcher.close();
          await cache.save();
        };
        await undiciGet();
        await undiciGet();
        assert.deepEqual(reused, [false, true]);
      } finally {
        for (const a of agents) a.destroy();
        for (const d of dispatchers) if (!d.destroyed) await d.destroy();
        server.close();
      }
    });
  }

  test("TLS 1.3: tickets from a connection that then fails (bad record MAC) are withdrawn from the store", async () => {
    const server = tls.createServer({ key: pki.key, cert: pki.cert, maxVersion: "TLSv1.3" }, (s) => {
      s.on("error", () => {});
      s.on("data", () => s.write("hi\n"));
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const proxy = await corruptingProxy((server.address() as net.AddressInfo).port);
    try {
      const store = sealedMemoryStore();
      const a = processCache(store);
      const opts = target(proxy.port, "TLSv1.3");
      const socket = await connectAsync({ cache: a.cache, ...opts });
      const errors: Error[] = [];
      let tickets = 0;
      socket.on("session", () => {
        // Both tickets are in (the cache's listener runs first): one kept, one shared.
        if (++tickets !== 2) return;
        proxy.corrupt = true;
        // Not from inside the event: Node defers a write made during OpenSSL's ticket callback.
        setImmediate(() => socket.write("go"));
      });
      socket.on("error", (e) => {
        errors.push(e);
        socket.destroy(); // after the handshake Node reports the error but leaves the socket open
      });
      socket.resume();
      await new Promise((r) => socket.once("close", r));
      assert.equal(errors.length, 1);
      assert.equal(typeof (errors[0] as Error & { library?: string }).library, "string", String(errors[0]));
      await a.shared.settled();
      assert.deepEqual([a.shared.stats().published, a.shared.stats().removed], [1, 1]);
      assert.equal(store.size, 0, "the shared ticket was withdrawn");
      assert.equal(a.cache.sessions(clientIdentity(opts)).length, 0, "the kept one was dropped");
    } finally {
      proxy.close();
      server.close();
    }
  });

  test("ticketsPerIdentity: 1 still shares the older ticket rather than dropping it", async () => {
    const store = sealedMemoryStore();
    const shared = sharedClientSessions(store);
    const cache = new ClientSessionCache({ shared, ticketsPerIdentity: 1 });
    const opts = target(servers["TLSv1.3"].port, "TLSv1.3");
    await connectOnce(cache, opts);
    await shared.settled();
    assert.equal(store.size, 1);
    assert.equal(cache.sessions(clientIdentity(opts)).length, 1);
  });

  test("a store that throws instead of rejecting costs sharing, never the connection or the process", async () => {
    const inner = sealedMemoryStore();
    const throwing: SealingSessionStore = {
      sealer: inner.sealer,
      get: () => {
        throw new Error("get: boom");
      },
      set: () => {
        throw new Error("set: boom");
      },
      delete: () => {
        throw new Error("delete: boom");
      },
      take: () => {
        throw new Error("take: boom");
      },
      close: () => inner.close(),
      stats: () => inner.stats(),
    };
    const a = processCache(throwing);
    const opts = target(servers["TLSv1.2"].port, "TLSv1.2");
    assert.equal(await connectOnce(a.cache, opts), false);
    assert.equal(a.shared.stats().published, 1);
    assert.equal(await connectOnce(a.cache, opts), true, "the local copy still works");
    const [s] = a.cache.sessions(clientIdentity(opts));
    a.cache.remove(s!, clientIdentity(opts));
    await a.cache.save();
    const b = processCache(throwing);
    assert.equal(await connectOnce(b.cache, opts), false);
  });

  test("undici: a connect timeout during the look-up fails the request; the ticket taken comes back here", async () => {
    const server = https.createServer({ key: pki.key, cert: pki.cert, maxVersion: "TLSv1.3" }, (_q, res) =>
      res.end("ok"),
    );
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const url = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}/`;
    const inner = sealedMemoryStore();
    const common = { ca: pki.caCert, maxVersion: "TLSv1.3" as const, servername: "localhost" };
    try {
      const a = processCache(inner, { ticketSlots: 1 });
      const first = new UndiciAgent({ connect: undiciConnector({ cache: a.cache, ...common }) });
      await (await undiciRequest(url, { dispatcher: first })).body.text();
      await first.close();
      await a.cache.save();
      assert.equal(inner.size, 1);

      const { store: slow, taken } = slowTakes(inner, 300);
      const b = processCache(slow, { ticketSlots: 1, lookupTimeout: 2000 });
      const second = new UndiciAgent({
        connect: undiciConnector({ cache: b.cache, ...common, timeout: 50 }),
      });
      await assert.rejects(undiciRequest(url, { dispatcher: second }), { code: "UND_ERR_CONNECT_TIMEOUT" });
      await second.destroy();
      await taken;
      await b.shared.settled();
      await new Promise((r) => setImmediate(r));
      assert.equal(b.cache.engine.stats().number, 1, "the ticket is kept for the next connection");
      assert.equal(b.cache.engine.stats().connect, 0, "no connection was started after the timeout");
    } finally {
      server.close();
    }
  });

  test("options are checked", () => {
    const store = sealedMemoryStore();
    assert.throws(() => sharedClientSessions(store, { lookupTimeout: 0 }), RangeError);
    assert.throws(() => sharedClientSessions(store, { ticketSlots: 0 }), RangeError);
    assert.throws(() => sharedClientSessions(store, { ticketSlots: 1.5 }), RangeError);
    assert.throws(() => sharedClientSessions(store, { lateTimeout: -1 }), RangeError);
  });
});

// ---- real processes, real Redis --------------------------------------------------------------

const CHILD = `
import { ClientSessionCache, connectAsync, RedisStore, sharedClientSessions } from ${JSON.stringify(pathToFileURL(join(repo, "src/index.ts")).href)};
const { PORT, URL, KEY, CA, MAXV } = process.env;
const store = new RedisStore({ url: URL, keys: [KEY] });
await store.ready();
const cache = new ClientSessionCache({ shared: sharedClientSessions(store) });
const socket = await connectAsync({ cache, host: "127.0.0.1", port: Number(PORT), servername: "localhost", ca: CA, maxVersion: MAXV });
let reused = false;
let session = "";
socket.once("secureConnect", () => { reused = socket.isSessionReused(); });
socket.on("session", (der) => { session = der.toString("hex"); });
socket.resume();
await new Promise((resolve, reject) => { socket.once("close", resolve); socket.once("error", reject); });
await cache.save();
await store.close();
process.stdout.write(JSON.stringify({ reused, session }));
`;

function runChild(
  script: string,
  env: Record<string, string>,
): Promise<{ reused: boolean; session: string }> {
  return new Promise((done, fail) => {
    execFile(
      process.execPath,
      ["--import", "tsx", script],
      { cwd: repo, env: { ...process.env, ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err) fail(new Error(`child failed: ${err.message}\n${stderr}`));
        else done(JSON.parse(stdout));
      },
    );
  });
}

/** The master secret (5th field of the SSL_SESSION sequence) of a DER session. */
function masterSecret(derHex: string): Buffer {
  const parsed = asn1js.fromBER(Buffer.from(derHex, "hex"));
  const field = (parsed.result as asn1js.Sequence).valueBlock.value[4] as asn1js.OctetString;
  return Buffer.from(field.valueBlock.valueHexView);
}

const redisSkip = redisSkipReason();

describe("client processes sharing sessions through Redis", { skip: redisSkip }, () => {
  let redis: RedisServer;
  let dir: string;
  let script: string;
  before(async () => {
    redis = await startRedis();
    dir = mkdtempSync(join(tmpdir(), "sesscache-client-shared-"));
    script = join(dir, "child.mts");
    writeFileSync(script, CHILD);
  });
  after(async () => {
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const v of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`${v}: each later process resumes; Redis holds sealed values only`, async () => {
      const server = await tlsServer(v);
      const raw = new Redis({ host: redis.host, port: redis.port, lazyConnect: true });
      try {
        await raw.connect();
        await raw.flushall();
        const env = {
          PORT: String(server.port),
          URL: redis.url,
          KEY: randomBytes(32).toString("base64"),
          CA: pki.caCert,
          MAXV: v,
        };
        const first = await runChild(script, env);
        assert.equal(first.reused, false);
        const keys = (await raw.keys("sesscache:client:*")).sort();
        assert.equal(keys.length, v === "TLSv1.3" ? 2 : 1, keys.join(" "));
        const master = masterSecret(first.session);
        for (const k of keys) {
          const value = (await raw.getBuffer(k))!;
          assert.equal(value.includes(master), false, `master secret in clear under ${k}`);
          assert.ok((await raw.pttl(k)) > 0, `${k} has a TTL`);
        }
        const second = await runChild(script, env);
        assert.equal(second.reused, true);
        const third = await runChild(script, env);
        assert.equal(third.reused, true, "TLS 1.2 shares one session; TLS 1.3 had two tickets");
        if (v === "TLSv1.3") {
          // Both tickets used once each; a Node server issues none on resumption.
          assert.equal((await raw.keys("sesscache:client:*")).length, 0);
          assert.equal((await runChild(script, env)).reused, false);
        }
        const wrongKey = await runChild(script, { ...env, KEY: randomBytes(32).toString("base64") });
        assert.equal(wrongKey.reused, false);
      } finally {
        raw.disconnect();
        server.close();
      }
    });
  }

  test("one ticket, eight processes' stores asking at once: exactly one gets it (GETDEL)", async () => {
    const server = await tlsServer("TLSv1.3");
    const key = randomBytes(32);
    const stores = Array.from({ length: 8 }, () => new RedisStore({ url: redis.url, keys: [key] }));
    try {
      await Promise.all(stores.map((s) => s.ready()));
      await redis.cli("FLUSHALL");
      const opts = target(server.port, "TLSv1.3");
      const a = processCache(stores[0]!);
      await connectOnce(a.cache, opts);
      await a.cache.save();
      // Keep one ticket of the two.
      const identity = clientIdentity(opts).hash;
      const one = await a.shared.fetch(identity);
      assert.ok(one);
      const fetchers = stores.map((s) => sharedClientSessions(s, { lookupTimeout: 2000 }));
      const got = await Promise.all(fetchers.map((f) => f.fetch(identity)));
      assert.equal(got.filter((s) => s !== undefined).length, 1);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
      server.close();
    }
  });

  test("Redis asleep: a ticket taken after the deadline is held, and settled() hands it back", async () => {
    const server = await tlsServer("TLSv1.3");
    const key = randomBytes(32);
    const storeA = new RedisStore({ url: redis.url, keys: [key] });
    const storeB = new RedisStore({ url: redis.url, keys: [key] });
    const sleeper = new Redis({ host: redis.host, port: redis.port });
    try {
      await Promise.all([storeA.ready(), storeB.ready(), sleeper.ping()]);
      await redis.cli("FLUSHALL");
      const opts = target(server.port, "TLSv1.3");
      const a = processCache(storeA, { ticketSlots: 1 });
      await connectOnce(a.cache, opts);
      await a.cache.save();
      assert.equal((await sleeper.keys("sesscache:client:*")).length, 1);
      const b = processCache(storeB, { ticketSlots: 1, lookupTimeout: 50 });
      const asleep = sleeper.call("DEBUG", "SLEEP", "0.4");
      await new Promise((r) => setTimeout(r, 50)); // let the sleep reach the server first
      const plan = await b.cache.prepareAsync(opts);
      assert.equal(plan.session, undefined);
      assert.equal(b.shared.stats().timeouts, 1);
      await asleep;
      await b.shared.settled();
      assert.equal(b.shared.stats().late, 1, "the GETDEL ran: its ticket was kept, not dropped");
      assert.equal((await sleeper.keys("sesscache:client:*")).length, 1, "and handed back to the store");
      assert.equal(await connectOnce(b.cache, opts), true);
    } finally {
      sleeper.disconnect();
      await Promise.all([storeA.close(), storeB.close()]);
      server.close();
    }
  });

  test("Redis asleep (DEBUG SLEEP): the connection waits at most the deadline and completes", async () => {
    const server = await tlsServer("TLSv1.2");
    const store = new RedisStore({ url: redis.url, keys: [randomBytes(32)] });
    const sleeper = new Redis({ host: redis.host, port: redis.port });
    try {
      await store.ready();
      const { cache, shared } = processCache(store, { lookupTimeout: 50 });
      await sleeper.ping();
      const asleep = sleeper.call("DEBUG", "SLEEP", "0.6");
      // The sleep starts when Redis reads it; a PING on the same connection answers after it.
      await new Promise((r) => setTimeout(r, 50));
      const t0 = performance.now();
      assert.equal(await connectOnce(cache, target(server.port, "TLSv1.2")), false);
      const took = performance.now() - t0;
      assert.equal(shared.stats().timeouts, 1);
      assert.ok(took < 500, `connection took ${took.toFixed(0)} ms while Redis slept 600 ms`);
      await asleep;
    } finally {
      sleeper.disconnect();
      await store.close();
      server.close();
    }
  });
});
