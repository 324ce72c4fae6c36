// The server adapter against Node's own TLS client on 127.0.0.1: TLS 1.2 and 1.3 resumption, single-
// use tickets, the session-id context rules, hostile and slow clients, slow and failing caches,
// wrong answers, detach(), and listener hygiene. Real peers (openssl, curl, Python, http2) are in
// server-peers.test.ts.
import assert from "node:assert/strict";
import { createHash, constants as cryptoConstants, X509Certificate } from "node:crypto";
import { once } from "node:events";
import https from "node:https";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { SessionCache, type SessionCacheOptions } from "../src/engine/index.js";
import {
  type AttachedSessionCache,
  type AttachSessionCacheOptions,
  attachSessionCache,
  defaultSessionIdContext,
  statefulServerOptions,
} from "../src/server/index.js";
import { parseSession, type Session } from "../src/session/index.js";
import { testPki } from "./support/certs.js";
import { buildSessionDer } from "./support/session-der.js";
import { listenLocal, nodeClient, type TlsVersion, trackConnections } from "./support/tls-peers.js";

const pki = testPki();
const VERSIONS: TlsVersion[] = ["1.2", "1.3"];

interface Started {
  server: tls.Server;
  port: number;
  cache: SessionCache;
  handle: AttachedSessionCache;
  logs: string[];
  close(): Promise<void>;
}

/** A TLS server that writes one byte after each handshake (so TLS 1.3 tickets reach the client). */
function plainServer(options: tls.TlsOptions = {}): tls.Server {
  return tls.createServer({ key: pki.key, cert: pki.cert, ...options }, (s) => {
    s.on("error", () => {});
    s.on("data", () => {});
    s.write("x");
  });
}

async function start(
  o: {
    server?: tls.Server;
    cache?: SessionCache;
    cacheOptions?: SessionCacheOptions;
    attach?: AttachSessionCacheOptions;
  } = {},
): Promise<Started> {
  const server = o.server ?? plainServer(statefulServerOptions());
  const cache = o.cache ?? new SessionCache(o.cacheOptions);
  const logs: string[] = [];
  const handle = attachSessionCache(server, cache, { log: (m) => logs.push(m), ...o.attach });
  const tracker = trackConnections(server);
  const port = await listenLocal(server);
  return { server, port, cache, handle, logs, close: tracker.close };
}

const client = (s: Started, version: TlsVersion, session?: Buffer) =>
  nodeClient({ port: s.port, version, session, ca: pki.caCert });

/** Polls a condition a few ms apart (for counters updated after an event the test cannot see). */
async function until(pred: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A cache that answers look-ups with `lookup` and delegates everything else to `real`. */
function withLookup(real: SessionCache, lookup: SessionCache["lookup"]): SessionCache {
  return new Proxy(real, {
    get(t, p) {
      if (p === "lookup") return lookup;
      const v = Reflect.get(t, p);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
}

describe("statefulServerOptions", () => {
  it("turns tickets off and passes the context through, OR-ing given secureOptions", () => {
    const NO_TICKET = cryptoConstants.SSL_OP_NO_TICKET;
    assert.deepEqual(statefulServerOptions(), { secureOptions: NO_TICKET });
    assert.deepEqual(statefulServerOptions({ tickets: true }), {});
    assert.deepEqual(statefulServerOptions({ sessionIdContext: "shop", secureOptions: 1 }), {
      secureOptions: 1 | NO_TICKET,
      sessionIdContext: "shop",
    });
    assert.throws(() => statefulServerOptions({ sessionIdContext: "x".repeat(33) }), RangeError);
  });
});

describe("attachSessionCache: resumption with Node clients", () => {
  let s: Started;
  before(async () => {
    s = await start({
      server: plainServer(statefulServerOptions({ sessionIdContext: "svc-a" })),
      attach: { sessionIdContext: "svc-a" },
    });
  });
  after(() => s.close());

  it("needs no fix-up when the server was made with statefulServerOptions", () => {
    assert.deepEqual(s.logs, []);
    assert.deepEqual([...s.handle.sessionIdContext], [...Buffer.from("svc-a")]);
    // R25: attach leaves the cache's own context alone (each server asks under its own).
    assert.deepEqual([...s.cache.getSessionIdContext()], []);
  });

  it("TLS 1.2: full handshake, then the session id resumes again and again", async () => {
    const a = await client(s, "1.2");
    assert.equal(a.reused, false);
    assert.equal(a.protocol, "TLSv1.2");
    const sess = parseSession(a.sessions.at(-1)!);
    assert.equal(sess.ticket, undefined, "stateful: no ticket issued");
    assert.equal(sess.id.length, 32);
    for (let i = 0; i < 3; i++) assert.equal((await client(s, "1.2", a.sessions.at(-1))).reused, true);
  });

  it("TLS 1.3: two stateful tickets, each resumes once (R22), a used one gets a full handshake", async () => {
    const before = s.handle.stats();
    const a = await client(s, "1.3");
    assert.equal(a.reused, false);
    assert.equal(a.sessions.length, 2);
    const [t1, t2] = a.sessions;
    const b = await client(s, "1.3", t1);
    assert.equal(b.reused, true);
    assert.equal(b.sessions.length, 1, "a resumption issues one new ticket");
    assert.equal((await client(s, "1.3", t1)).reused, false, "ticket used twice is refused");
    assert.equal((await client(s, "1.3", t2)).reused, true);
    assert.equal((await client(s, "1.3", b.sessions[0])).reused, true, "the ticket from a resumption works");
    const after = s.handle.stats();
    assert.equal(after.ticketsConsumed - before.ticketsConsumed, 3);
    assert.equal(after.pskOffered - before.pskOffered, 4);
    assert.equal(after.lookupsSkipped - before.lookupsSkipped, 1, "the first hello had no PSK: no look-up");
  });

  it("counts accept / acceptGood per connection and hits/misses in the cache", async () => {
    const c0 = s.cache.stats();
    const a = await client(s, "1.2");
    await client(s, "1.2", a.sessions.at(-1));
    const c1 = s.cache.stats();
    assert.equal(c1.accept - c0.accept, 2);
    assert.equal(c1.acceptGood - c0.acceptGood, 2);
    assert.equal(c1.hits - c0.hits, 1);
  });

  it("sessions are stored with the session-id context in force", async () => {
    const stored: Session[] = [];
    const cache = new SessionCache({ onNewSession: (x) => stored.push(x) });
    const t = await start({ cache, attach: { sessionIdContext: "ctx-check" } });
    try {
      await client(t, "1.2");
      await client(t, "1.3");
      assert.equal(stored.length, 3);
      for (const x of stored) assert.equal(Buffer.from(x.sessionIdContext).toString(), "ctx-check");
    } finally {
      await t.close();
    }
  });
});

describe("attachSessionCache: options", () => {
  it("reuseTickets: a TLS 1.3 ticket resumes more than once", async () => {
    const s = await start({ attach: { reuseTickets: true } });
    try {
      const a = await client(s, "1.3");
      for (let i = 0; i < 3; i++) assert.equal((await client(s, "1.3", a.sessions[0])).reused, true);
      assert.equal(s.handle.stats().ticketsConsumed, 0);
    } finally {
      await s.close();
    }
  });

  it("tickets: true keeps Node's stateless tickets and stores no TLS 1.3 session", async () => {
    const s = await start({ server: plainServer(), attach: { tickets: true } });
    try {
      for (const v of VERSIONS) {
        const a = await client(s, v);
        assert.ok(parseSession(a.sessions.at(-1)!).ticket !== undefined, "a ticket was issued");
        assert.equal((await client(s, v, a.sessions.at(-1))).reused, true);
      }
      assert.ok(s.cache.sessions().every((x) => x.protocolVersion === 0x0303));
    } finally {
      await s.close();
    }
  });

  it("fixes up a server created without statefulServerOptions, and says so", async () => {
    const server = plainServer();
    const s = await start({ server });
    try {
      assert.equal(s.logs.length, 1);
      assert.match(s.logs[0], /SSL_OP_NO_TICKET.*session-id context/);
      const a = await client(s, "1.2");
      assert.equal(parseSession(a.sessions.at(-1)!).ticket, undefined);
      assert.equal((await client(s, "1.2", a.sessions.at(-1))).reused, true);
    } finally {
      await s.close();
    }
  });

  it("a later setSecureContext (certificate rotation) keeps tickets off and the context", async () => {
    const s = await start();
    try {
      const ctx = Buffer.from(s.handle.sessionIdContext).toString();
      s.server.setSecureContext({ key: pki.key, cert: pki.cert });
      const a = await client(s, "1.2");
      assert.equal(parseSession(a.sessions.at(-1)!).ticket, undefined);
      assert.equal((await client(s, "1.2", a.sessions.at(-1))).reused, true);
      const b = await client(s, "1.3");
      assert.equal((await client(s, "1.3", b.sessions[0])).reused, true);
      // (A client's session has no context: the server's, in the cache, do.)
      const stored = s.cache.sessions();
      assert.ok(stored.length >= 3);
      for (const x of stored) assert.equal(Buffer.from(x.sessionIdContext).toString(), ctx);
    } finally {
      await s.close();
    }
  });

  it("a TLS 1.2-only server reads no hellos and still resumes", async () => {
    const s = await start({ server: plainServer({ ...statefulServerOptions(), maxVersion: "TLSv1.2" }) });
    try {
      const a = await client(s, "1.2");
      assert.equal((await client(s, "1.2", a.sessions.at(-1))).reused, true);
      assert.equal(s.handle.stats().hellosRead, 0);
    } finally {
      await s.close();
    }
  });

  it("one cache serves two servers (one https): a session made on one resumes on the other", async () => {
    const cache = new SessionCache();
    const a = await start({ cache });
    const httpsServer = https.createServer(
      { key: pki.key, cert: pki.cert, ...statefulServerOptions() },
      (_q, r) => r.end("x"),
    );
    const b = await start({ cache, server: httpsServer });
    try {
      assert.deepEqual(a.handle.sessionIdContext, b.handle.sessionIdContext);
      for (const v of VERSIONS) {
        const first = await client(a, v);
        const second = await nodeClient({
          port: b.port,
          version: v,
          session: first.sessions[0],
          ca: pki.caCert,
          readBytes: 0,
        });
        assert.equal(second.reused, true, `TLS ${v}`);
      }
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe("session-id context", () => {
  const derived = () => {
    const der = new X509Certificate(pki.cert).raw;
    return createHash("sha256").update("sesscache sid_ctx v1\0").update(der).digest("hex").slice(0, 32);
  };

  it("is derived from the certificate when none is given, the same for every server with it", () => {
    const c1 = new SessionCache();
    const h1 = attachSessionCache(plainServer(), c1);
    const h2 = attachSessionCache(plainServer(), new SessionCache());
    assert.equal(Buffer.from(h1.sessionIdContext).toString(), derived());
    assert.deepEqual(h1.sessionIdContext, h2.sessionIdContext);
    assert.equal(c1.getSessionIdContext().length, 0, "the cache keeps none of its own (R25)");
  });

  it("defaultSessionIdContext gives it beforehand (PEM or DER); statefulServerOptions({ cert }) then needs no fix-up", () => {
    const pem = pki.cert;
    const der = new X509Certificate(pem).raw;
    assert.equal(defaultSessionIdContext({ cert: pem }), derived());
    assert.equal(defaultSessionIdContext({ cert: Buffer.from(pem) }), derived());
    assert.equal(defaultSessionIdContext({ cert: der }), derived());
    const logs: string[] = [];
    const h = attachSessionCache(plainServer(statefulServerOptions({ cert: pem })), new SessionCache(), {
      log: (m) => logs.push(m),
    });
    assert.deepEqual(logs, []);
    assert.equal(Buffer.from(h.sessionIdContext).toString(), derived());
    const auth = { cert: pem, requestCert: true, ca: pki.caCert };
    const h2 = attachSessionCache(plainServer({ requestCert: true, ca: pki.caCert }), new SessionCache());
    assert.equal(Buffer.from(h2.sessionIdContext).toString(), defaultSessionIdContext(auth));
  });

  it("a client-auth server derives another one", () => {
    const h = attachSessionCache(plainServer({ requestCert: true, ca: pki.caCert }), new SessionCache());
    assert.notEqual(Buffer.from(h.sessionIdContext).toString(), derived());
  });

  it("a context the application set on the cache wins over the derived one; an explicit one wins over it", () => {
    const cache = new SessionCache({ sessionIdContext: "from-cache" });
    const h = attachSessionCache(plainServer(), cache);
    assert.equal(Buffer.from(h.sessionIdContext).toString(), "from-cache");
    // R25: another server on the same cache may run under its own context.
    const other = attachSessionCache(plainServer(), cache, { sessionIdContext: "other" });
    assert.equal(Buffer.from(other.sessionIdContext).toString(), "other");
    assert.equal(Buffer.from(cache.getSessionIdContext()).toString(), "from-cache");
  });

  it("refuses contexts Node cannot carry: empty, over 32 bytes, not UTF-8", () => {
    for (const bad of ["", "x".repeat(33), Uint8Array.from([0xff, 0xfe]), "é".repeat(17)]) {
      assert.throws(
        () => attachSessionCache(plainServer(), new SessionCache(), { sessionIdContext: bad }),
        RangeError,
      );
    }
  });
});

describe("attachSessionCache: misuse is refused at attach time", () => {
  it("not a tls.Server, attached twice, or other session listeners present", () => {
    assert.throws(
      () => attachSessionCache(net.createServer() as unknown as tls.Server, new SessionCache()),
      TypeError,
    );
    const server = plainServer();
    const h = attachSessionCache(server, new SessionCache());
    assert.throws(() => attachSessionCache(server, new SessionCache()), /already/);
    h.detach();
    attachSessionCache(server, new SessionCache()).detach();
    const other = plainServer();
    other.on("newSession", (_id, _d, done) => done());
    assert.throws(() => attachSessionCache(other, new SessionCache()), /listeners/);
    assert.throws(
      () => attachSessionCache(plainServer(), new SessionCache(), { lookupTimeout: -1 }),
      RangeError,
    );
  });
});

describe("slow, failing and lying caches", () => {
  it("a look-up slower than lookupTimeout is a miss: full handshake within the deadline", async () => {
    const store = new Map<string, Uint8Array>();
    const cache = new SessionCache({
      mode: "server,no_internal_lookup",
      onNewSession: (x) => store.set(Buffer.from(x.id).toString("hex"), x.der),
      getSession: (id) =>
        new Promise((r) => setTimeout(() => r(store.get(Buffer.from(id).toString("hex"))), 1000).unref()),
    });
    const s = await start({ cache, attach: { lookupTimeout: 30 } });
    try {
      for (const v of VERSIONS) {
        const a = await client(s, v);
        const t0 = performance.now();
        const b = await client(s, v, a.sessions[0]);
        const ms = performance.now() - t0;
        assert.equal(b.reused, false);
        assert.ok(ms < 800, `handshake took ${ms} ms: it waited for the slow store`);
      }
      assert.equal(s.handle.stats().lookupTimeouts, 2);
    } finally {
      await s.close();
    }
    // The same slow store within a generous deadline resumes (the asynchronous hit path).
    const s2 = await start({ cache, attach: { lookupTimeout: 2000 } });
    try {
      for (const v of VERSIONS) {
        const a = await client(s2, v);
        assert.equal((await client(s2, v, a.sessions[0])).reused, true, `TLS ${v}`);
      }
    } finally {
      await s2.close();
    }
  });

  it("a getSession that throws or rejects is a miss, never a failed connection", async () => {
    const errors: unknown[] = [];
    let n = 0;
    const cache = new SessionCache({
      mode: "server,no_internal_lookup",
      onError: (e) => errors.push(e),
      getSession: () => {
        if (n++ % 2 === 0) throw new Error("store down");
        return Promise.reject(new Error("store down"));
      },
    });
    const s = await start({ cache });
    try {
      for (const v of VERSIONS) {
        const a = await client(s, v);
        assert.equal((await client(s, v, a.sessions[0])).reused, false);
        assert.equal((await client(s, v, a.sessions[0])).reused, false);
      }
      assert.equal(errors.length, 4, "every look-up went to the failing store");
    } finally {
      await s.close();
    }
  });

  it("a cache whose lookup itself throws or rejects: counted, full handshake", async () => {
    const real = new SessionCache();
    let k = 0;
    const cache = withLookup(real, () => {
      if (k++ % 2 === 0) throw new Error("boom");
      return Promise.reject(new Error("boom"));
    });
    const s = await start({ cache });
    try {
      for (const v of VERSIONS) {
        const a = await client(s, v);
        assert.equal((await client(s, v, a.sessions[0])).reused, false);
      }
      await client(s, "1.2", (await client(s, "1.2")).sessions[0]);
      assert.equal(s.handle.stats().lookupErrors, 3);
      assert.ok(s.logs.some((l) => /look-up failed/.test(l)));
    } finally {
      await s.close();
    }
  });

  it("a session answered under another id or version is refused (spec §9.6): full handshake, no failure", async () => {
    const real = new SessionCache();
    let swap: Uint8Array | undefined;
    const cache = withLookup(real, (id, v, ctx) => real.lookup(swap ?? id, v, ctx));
    const s = await start({ cache });
    try {
      for (const v of VERSIONS) {
        const a = await client(s, v);
        const b = await client(s, v);
        // Answer B's session when A's is asked. (A TLS 1.3 client session's id is a hash of its
        // ticket; the ticket is the identity, the server session's id.)
        const bs = parseSession(b.sessions[0]);
        swap = v === "1.3" ? bs.ticket : bs.id;
        assert.equal((await client(s, v, a.sessions[0])).reused, false, `TLS ${v}`);
        swap = undefined;
        assert.equal((await client(s, v, a.sessions[0])).reused, true, `TLS ${v} unswapped`);
      }
      // A TLS 1.2 session with the very id of the TLS 1.3 ticket asked for is refused as well.
      const ctx = s.handle.sessionIdContext;
      const wrongVersion = withLookup(real, (id) =>
        parseSession(
          buildSessionDer({ protocolVersion: 0x0303, id: new Uint8Array(id), sessionIdContext: ctx }),
        ),
      );
      const t = await start({ cache: wrongVersion, attach: { sessionIdContext: Buffer.from(ctx) } });
      try {
        const a = await client(t, "1.3");
        assert.equal((await client(t, "1.3", a.sessions[0])).reused, false);
      } finally {
        await t.close();
      }
      assert.equal(t.handle.stats().wrongAnswers, 1);
      assert.equal(s.handle.stats().wrongAnswers, 2);
    } finally {
      await s.close();
    }
  });
});

describe("hostile and slow clients", () => {
  let s: Started;
  let clientErrors: Error[];
  before(async () => {
    s = await start({ attach: { helloTimeout: 1000 } });
    clientErrors = [];
    s.server.on("tlsClientError", (e) => clientErrors.push(e));
  });
  after(() => s.close());

  const healthy = async () => {
    const a = await client(s, "1.3");
    assert.equal((await client(s, "1.3", a.sessions[0])).reused, true);
  };

  it("non-TLS bytes go to OpenSSL at once, which refuses them; the server stays healthy", async () => {
    const sock = net.connect(s.port, "127.0.0.1");
    sock.on("error", () => {});
    sock.on("data", () => {});
    sock.write("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    const t0 = performance.now();
    await once(sock, "close");
    assert.ok(performance.now() - t0 < 800, "closed without waiting for the hello deadline");
    assert.equal(s.handle.stats().helloNotUnderstood, 1);
    await until(() => clientErrors.length === 1);
    await healthy();
  });

  it("a client that sends nothing is closed at the hello deadline", async () => {
    const sock = net.connect(s.port, "127.0.0.1");
    sock.on("error", () => {});
    await once(sock, "connect");
    const t0 = performance.now();
    await once(sock, "close");
    const ms = performance.now() - t0;
    // The deadline is swept every helloTimeout / 4: closed within (1000, 1250] ms, plus scheduling.
    assert.ok(ms >= 950 && ms < 3000, `closed after ${ms} ms`);
    assert.equal(s.handle.stats().helloTimeouts, 1);
    await healthy();
  });

  it("a client that sends half a hello and hangs up is dropped quietly", async () => {
    const sock = net.connect(s.port, "127.0.0.1");
    sock.on("error", () => {});
    await once(sock, "connect");
    sock.end(Buffer.from([22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3]));
    await once(sock, "close");
    await until(() => s.handle.stats().helloAborted === 1);
    await healthy();
  });

  it("a hello cut into 1-byte TCP writes still resumes (TLS 1.2 and 1.3)", async () => {
    const proxy = await slowProxy(s.port, "bytes");
    try {
      for (const v of VERSIONS) {
        const a = await client(s, v);
        const b = await nodeClient({ port: proxy.port, version: v, session: a.sessions[0], ca: pki.caCert });
        assert.equal(b.reused, true, `TLS ${v}`);
      }
      assert.ok(proxy.writes() > 200, "the hello went byte by byte");
    } finally {
      await proxy.close();
    }
  });

  it("a hello spread over several records falls back to a full handshake (Node's parser, §9.5)", async () => {
    const proxy = await slowProxy(s.port, "records");
    const before = s.handle.stats();
    try {
      for (const v of VERSIONS) {
        const a = await client(s, v);
        const b = await nodeClient({ port: proxy.port, version: v, session: a.sessions[0], ca: pki.caCert });
        assert.equal(b.reused, false, `TLS ${v}`);
      }
      assert.equal(s.handle.stats().fragmentedHellos - before.fragmentedHellos, 2);
    } finally {
      await proxy.close();
    }
  });

  it("many connections leave no listeners and no pending entries behind", async () => {
    const events = [
      "connection",
      "secureConnection",
      "newSession",
      "resumeSession",
      "tlsClientError",
      "close",
    ];
    const counts = events.map((e) => s.server.listenerCount(e));
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on("warning", onWarning);
    try {
      const t13 = await client(s, "1.3");
      const t12 = await client(s, "1.2");
      let ticket = t13.sessions[0];
      for (let i = 0; i < 40; i++) {
        const r = await client(s, "1.3", ticket);
        assert.equal(r.reused, true);
        ticket = r.sessions[0];
        assert.equal((await client(s, "1.2", t12.sessions[0])).reused, true);
      }
      // Concurrent connections too.
      await Promise.all(Array.from({ length: 20 }, (_, i) => client(s, i % 2 ? "1.2" : "1.3")));
      assert.deepEqual(
        events.map((e) => s.server.listenerCount(e)),
        counts,
      );
      await until(() => s.handle.stats().pendingHellos === 0);
      assert.deepEqual(warnings, []);
    } finally {
      process.off("warning", onWarning);
    }
  });
});

describe("detach()", () => {
  it("restores listeners (in order), the secure context and options; nothing resumes through the cache", async () => {
    const server = plainServer();
    const userListener = () => {};
    server.on("connection", userListener);
    const events = ["connection", "secureConnection", "newSession", "resumeSession", "tlsClientError"];
    const raw0 = events.map((e) => server.rawListeners(e));
    const internals = server as unknown as Record<string, unknown>;
    const creds0 = internals._sharedCreds;
    const fields0 = [internals.secureOptions, internals.sessionIdContext, internals.ticketKeys];
    const s = await start({ server }); // with a fix-up (tickets were on)
    const raw1 = events.map((e) => server.rawListeners(e)); // track's own listener added by start()
    try {
      assert.notEqual(internals._sharedCreds, creds0);
      const a = await client(s, "1.2");
      assert.equal((await client(s, "1.2", a.sessions.at(-1))).reused, true);
      s.handle.detach();
      s.handle.detach(); // idempotent
      const raw2 = events.map((e) => server.rawListeners(e));
      assert.deepEqual(raw2[0].slice(0, 2), raw0[0]);
      assert.equal((raw2[0][0] as { name: string }).name, "tlsConnectionListener");
      assert.deepEqual(raw2.slice(1), raw0.slice(1));
      assert.equal(raw2[0].length, raw1[0].length);
      assert.equal(internals._sharedCreds, creds0);
      assert.deepEqual([internals.secureOptions, internals.sessionIdContext, internals.ticketKeys], fields0);
      assert.equal(Object.hasOwn(server, "setSecureContext"), false);
      const stats0 = s.cache.stats();
      assert.equal((await client(s, "1.2", a.sessions.at(-1))).reused, false);
      const b = await client(s, "1.2");
      assert.ok(parseSession(b.sessions.at(-1)!).ticket !== undefined, "Node's tickets are back");
      assert.deepEqual(s.cache.stats(), stats0, "the cache saw nothing");
      // And it can be attached again.
      const again = attachSessionCache(server, s.cache);
      again.detach();
    } finally {
      await s.close();
    }
  });
});

// ---- a TCP proxy that slows or re-frames the client's first flight ----------------------------

/**
 * Forwards 127.0.0.1:port. "bytes": the client's first 4 KiB go one byte per write, each after the
 * previous one was flushed. "records": the client's first TLS record is re-cut into 64-byte records.
 */
async function slowProxy(target: number, mode: "bytes" | "records") {
  let writes = 0;
  const server = net.createServer((c) => {
    c.setNoDelay(true);
    const up = net.connect(target, "127.0.0.1");
    up.setNoDelay(true);
    up.on("error", () => c.destroy());
    c.on("error", () => up.destroy());
    up.pipe(c);
    let head = Buffer.alloc(0);
    let passing = false;
    const writeSlowly = async (buf: Buffer) => {
      for (let i = 0; i < buf.length; i++) {
        writes++;
        if (!up.write(buf.subarray(i, i + 1))) await once(up, "drain");
        await new Promise((r) => setImmediate(r));
      }
    };
    c.on("data", (d: Buffer) => {
      if (passing) {
        up.write(d);
        return;
      }
      head = Buffer.concat([head, d]);
      if (mode === "bytes") {
        c.pause();
        const chunk = head;
        head = Buffer.alloc(0);
        writeSlowly(chunk).then(() => {
          passing = true;
          c.resume();
        });
        return;
      }
      if (head.length < 5) return;
      const len = head.readUInt16BE(3);
      if (head.length < 5 + len) return;
      const out: Buffer[] = [];
      for (let i = 0; i < len; i += 64) {
        const frag = head.subarray(5 + i, 5 + Math.min(len, i + 64));
        out.push(Buffer.from([head[0], head[1], head[2], frag.length >> 8, frag.length & 0xff]), frag);
      }
      out.push(head.subarray(5 + len));
      passing = true;
      up.write(Buffer.concat(out));
    });
    c.on("end", () => up.end());
  });
  const tracker = trackConnections(server);
  const port = await listenLocal(server);
  return { port, writes: () => writes, close: tracker.close };
}

describe("claimTicket: a shared store decides whether a TLS 1.3 ticket may resume here", () => {
  it("a claim refused (used elsewhere) or too slow means a full handshake; a claim won resumes", async () => {
    let verdict: "yes" | "no" | "never" = "no";
    const claimed: Session[] = [];
    const s = await start({
      attach: {
        lookupTimeout: 100,
        claimTicket: (session) => {
          claimed.push(session);
          if (verdict === "never") return new Promise<boolean>(() => {});
          return Promise.resolve(verdict === "yes");
        },
      },
    });
    after(() => s.close());
    const [t1, t2] = (await client(s, "1.3")).sessions;
    assert.equal((await client(s, "1.3", t1)).reused, false, "refused claim: full handshake");
    assert.equal(s.handle.stats().ticketsRefused, 1);
    assert.equal(
      s.cache.lookup(parseSession(t1).ticket!, 0x0304, s.handle.sessionIdContext) !== undefined,
      true,
      "a refused ticket is kept",
    );
    verdict = "never";
    const t0 = performance.now();
    assert.equal((await client(s, "1.3", t1)).reused, false, "claim past the deadline: full handshake");
    assert.ok(performance.now() - t0 < 2000);
    verdict = "yes";
    assert.equal((await client(s, "1.3", t2)).reused, true, "claim won: resumed");
    assert.equal(claimed.length, 3);
    assert.equal(
      Buffer.compare(claimed[2].id, parseSession(t2).ticket!),
      0,
      "the claim names the ticket offered",
    );
    assert.equal(s.handle.stats().ticketsRefused, 2);
  });
});

describe("TLS 1.3 look-ups and a shared store's ordering", () => {
  it("the look-up and claim start when the hello is read, before Node's resumeSession asks", async () => {
    let asked = 0;
    const askedAtClaim: number[] = [];
    const s = await start({
      attach: {
        claimTicket: () => {
          askedAtClaim.push(asked);
          // A store's round trip: answered later, while Node sets the connection up meanwhile.
          return new Promise<boolean>((r) => setTimeout(r, 20, true));
        },
      },
    });
    after(() => s.close());
    // Counts Node's question without answering it (the adapter answers).
    s.server.prependListener("resumeSession", () => asked++);
    const [t1] = (await client(s, "1.3")).sessions;
    const askedBefore = asked;
    const b = await client(s, "1.3", t1);
    assert.equal(b.reused, true, "the early answer reached Node");
    assert.deepEqual(askedAtClaim, [askedBefore], "the claim began before resumeSession was emitted");
    assert.equal(asked, askedBefore + 1);
    assert.equal(s.handle.stats().ticketsConsumed, 1);
  });

  it("a hello answered early still resumes when the answer comes after Node asked, or at once", async () => {
    // The claim resolves after resumeSession (slow store) or synchronously (before it): both resume.
    for (const delay of [30, -1]) {
      const s = await start({
        attach: {
          claimTicket: () => (delay < 0 ? true : new Promise<boolean>((r) => setTimeout(r, delay, true))),
        },
      });
      try {
        const [t1, t2] = (await client(s, "1.3")).sessions;
        assert.equal((await client(s, "1.3", t1)).reused, true, `claim after ${delay} ms`);
        assert.equal((await client(s, "1.3", t1)).reused, false, "still single use");
        assert.equal((await client(s, "1.3", t2)).reused, true);
      } finally {
        await s.close();
      }
    }
  });

  it("a new session reaches the cache (and its stores) before done() lets Node send it", async () => {
    const order: string[] = [];
    const stored: Session[] = [];
    const cache = new SessionCache({
      onNewSession: (x) => {
        stored.push(x);
        order.push("stored");
      },
    });
    const s = await start({ cache });
    after(() => s.close());
    await client(s, "1.3");
    assert.ok(stored.length > 0, "a real handshake stored a session");
    order.length = 0;
    // Node's newSession, as Node calls it: the listener must store, then release the ticket.
    const [listener] = s.server.listeners("newSession") as ((
      id: Buffer,
      der: Buffer,
      done: () => void,
    ) => void)[];
    const der = Buffer.from(stored[0].der);
    listener(Buffer.from(stored[0].id), der, () => order.push("done"));
    assert.deepEqual(order, ["stored", "done"]);
    // An undecodable session still releases the handshake.
    order.length = 0;
    listener(Buffer.alloc(32), Buffer.from("not a session"), () => order.push("done"));
    assert.deepEqual(order, ["done"]);
    assert.equal(s.handle.stats().storeErrors, 1);
  });
});
