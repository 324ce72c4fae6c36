// Trust boundaries of the server adapter (spec §10): each test tries to make a session resume where
// it was not made to, with real Node clients on 127.0.0.1, and checks that it does not (plus a
// positive control showing the same session does resume where it belongs).
//   R24 virtual hosts (addContext, SNICallback, setSecureContext; with and without client certs)
//   R25 one cache, several servers
//   R27 lifetimes
//   and the server-side bullets of issue 9 §6 (TLS 1.0 sessions, helloTimeout's tlsClientError)
import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { describe, it } from "node:test";
import tls from "node:tls";
import { SessionCache, type SessionCacheOptions } from "../src/engine/index.js";
import {
  type AttachedSessionCache,
  type AttachSessionCacheOptions,
  attachSessionCache,
  statefulServerOptions,
} from "../src/server/index.js";
import { testPki, vhostPki } from "./support/certs.js";
import { listenLocal, type TlsVersion, trackConnections } from "./support/tls-peers.js";

const pki = testPki();
const hosts = vhostPki();
const VERSIONS: TlsVersion[] = ["1.2", "1.3"];

interface Started {
  server: tls.Server;
  port: number;
  cache: SessionCache;
  handle: AttachedSessionCache;
  close(): Promise<void>;
}

async function start(
  server: tls.Server,
  o: { cache?: SessionCache; cacheOptions?: SessionCacheOptions; attach?: AttachSessionCacheOptions } = {},
): Promise<Started> {
  const cache = o.cache ?? new SessionCache(o.cacheOptions);
  const handle = attachSessionCache(server, cache, o.attach);
  const tracker = trackConnections(server);
  const port = await listenLocal(server);
  return { server, port, cache, handle, close: tracker.close };
}

/** A server that answers every connection with its SNI name and whether the client is authorized. */
function vhostServer(options: tls.TlsOptions): tls.Server {
  return tls.createServer({ key: pki.key, cert: pki.cert, ...options }, (s) => {
    s.on("error", () => {});
    s.on("data", () => {});
    s.end(`${(s as tls.TLSSocket & { servername?: string }).servername ?? "-"}`);
  });
}

interface Seen {
  reused: boolean;
  authorized: boolean;
  /** CN of the certificate the server presented (on a resumption: none is sent, so undefined). */
  cn: string | undefined;
  sessions: Buffer[];
}

/** One connection: offers `session` to `servername`, with an optional client certificate. */
function connect(
  port: number,
  version: TlsVersion,
  o: { servername?: string; session?: Buffer; client?: { cert: string; key: string } } = {},
): Promise<Seen> {
  const v = version === "1.3" ? "TLSv1.3" : "TLSv1.2";
  return new Promise((resolve, reject) => {
    const sessions: Buffer[] = [];
    const sock = tls.connect({
      port,
      host: "127.0.0.1",
      servername: o.servername,
      rejectUnauthorized: false,
      session: o.session,
      minVersion: v,
      maxVersion: v,
      cert: o.client?.cert,
      key: o.client?.key,
    });
    sock.on("session", (s: Buffer) => sessions.push(s));
    sock.once("error", reject);
    let result: Omit<Seen, "sessions"> | undefined;
    sock.once("secureConnect", () => {
      result = {
        reused: sock.isSessionReused(),
        authorized: false,
        cn: (sock.getPeerCertificate() as tls.PeerCertificate).subject?.CN as string | undefined,
      };
    });
    sock.on("data", () => {});
    sock.once("close", () => resolve({ ...result!, sessions }));
    // The server's own view of the client (authorized) comes back through the server's listener.
  });
}

/** The server-side `authorized` of each secure connection, in order. */
function watchAuthorized(server: tls.Server): boolean[] {
  const seen: boolean[] = [];
  server.on("secureConnection", (s: tls.TLSSocket) => seen.push(s.authorized));
  return seen;
}

type Way = "addContext" | "SNICallback";

/**
 * A server with hosts a.test and b.test. With client certificates, each host verifies them against
 * its own CA set (Node uses the selected host's context for that): a.test trusts the test CA, b.test
 * only the other CA, so hosts.client is accepted on a.test and refused on b.test in a full handshake.
 */
function twoHosts(way: Way, clientAuth: boolean): { server: tls.Server; addHosts(): void } {
  const auth = clientAuth ? { requestCert: true, rejectUnauthorized: false, ca: pki.caCert } : {};
  const optsA = clientAuth ? { ...hosts.a, ca: pki.caCert } : hosts.a;
  const optsB = clientAuth ? { ...hosts.b, ca: pki.otherCaCert } : hosts.b;
  if (way === "addContext") {
    const server = vhostServer({ ...statefulServerOptions(), ...auth });
    return {
      server,
      addHosts() {
        server.addContext("a.test", optsA);
        server.addContext("b.test", optsB);
      },
    };
  }
  const ctxA = tls.createSecureContext(optsA);
  const ctxB = tls.createSecureContext(optsB);
  const server = vhostServer({
    ...statefulServerOptions(),
    ...auth,
    // Asynchronous on purpose: the adapter must wait for it before the hand-off.
    SNICallback: (name, cb) => {
      setImmediate(() => cb(null, name === "a.test" ? ctxA : name === "b.test" ? ctxB : undefined));
    },
  });
  return { server, addHosts() {} };
}

describe("R24 virtual hosts: a session made for a.test never resumes on b.test", () => {
  for (const v of VERSIONS) {
    for (const way of ["addContext", "SNICallback"] as Way[]) {
      for (const clientAuth of [false, true]) {
        it(`TLS ${v}, hosts by ${way}, ${clientAuth ? "with" : "without"} client certificates`, async () => {
          const { server, addHosts } = twoHosts(way, clientAuth);
          const authorized = watchAuthorized(server);
          const s = await start(server);
          addHosts();
          try {
            const client = clientAuth ? hosts.client : undefined;
            const a = await connect(s.port, v, { servername: "a.test", client });
            assert.equal(a.cn, "a.test");
            if (clientAuth)
              assert.equal(authorized.at(-1), true, "the client certificate is accepted on a.test");
            const [first, second] = a.sessions;
            // Crossing: the session of a.test offered to b.test, whose CA set refuses hosts.client.
            const b = await connect(s.port, v, { servername: "b.test", session: first, client });
            assert.equal(b.reused, false, "a.test's session must not resume on b.test");
            assert.equal(b.cn, "b.test", "a full handshake with b.test's certificate");
            if (clientAuth) {
              assert.equal(
                authorized.at(-1),
                false,
                "b.test's CA set refuses the client: no authorization carried over",
              );
            }
            // Nor on the default host (no SNI), nor on a name no host claims.
            assert.equal((await connect(s.port, v, { session: first })).reused, false, "default host");
            assert.equal(
              (await connect(s.port, v, { servername: "c.test", session: first })).reused,
              false,
              "unknown name (default host)",
            );
            // Positive control: where it was made, it resumes (TLS 1.3: the other ticket of the pair).
            const back = await connect(s.port, v, {
              servername: "a.test",
              session: v === "1.3" ? second : first,
            });
            assert.equal(back.reused, true, "a.test's session resumes on a.test");
            if (clientAuth) assert.equal(authorized.at(-1), true);
          } finally {
            await s.close();
          }
        });
      }
    }
  }

  for (const how of ["addContext after attach", "addContext before attach", "SNICallback"] as const) {
    it(`two hosts with the same certificate but different client CA sets stay apart (${how})`, async () => {
      const optsA = { ...hosts.a, ca: pki.caCert };
      const optsA2 = { ...hosts.a, ca: pki.otherCaCert };
      const ctxA = tls.createSecureContext(optsA);
      const ctxA2 = tls.createSecureContext(optsA2);
      const server = vhostServer({
        ...statefulServerOptions(),
        requestCert: true,
        rejectUnauthorized: false,
        ...(how === "SNICallback"
          ? {
              SNICallback: (n: string, cb: (e: Error | null, c?: tls.SecureContext) => void) =>
                cb(null, n === "a.test" ? ctxA : ctxA2),
            }
          : {}),
      });
      const add = () => {
        server.addContext("a.test", optsA);
        server.addContext("a2.test", optsA2);
      };
      if (how === "addContext before attach") add();
      const authorized = watchAuthorized(server);
      const s = await start(server);
      if (how === "addContext after attach") add();
      try {
        for (const v of VERSIONS) {
          const a = await connect(s.port, v, { servername: "a.test", client: hosts.client });
          assert.equal(authorized.at(-1), true);
          const [first, second] = a.sessions;
          const x = await connect(s.port, v, { servername: "a2.test", session: first, client: hosts.client });
          assert.equal(x.reused, false, `TLS ${v}: must not resume where the client CA set differs`);
          assert.equal(authorized.at(-1), false, "a2.test's CA set refuses the client");
          const back = await connect(s.port, v, {
            servername: "a.test",
            session: v === "1.3" ? second : first,
          });
          assert.equal(back.reused, true, `TLS ${v} control`);
        }
      } finally {
        await s.close();
      }
    });
  }

  it("the default host's sessions do not resume on a virtual host either (both versions)", async () => {
    const { server, addHosts } = twoHosts("addContext", false);
    const s = await start(server);
    addHosts();
    try {
      for (const v of VERSIONS) {
        const d = await connect(s.port, v, {});
        assert.equal(d.cn, "localhost");
        assert.equal(
          (await connect(s.port, v, { servername: "b.test", session: d.sessions[0] })).reused,
          false,
        );
        assert.equal(
          (await connect(s.port, v, { session: d.sessions.at(-1) })).reused,
          true,
          `TLS ${v} control`,
        );
      }
    } finally {
      await s.close();
    }
  });

  it("an SNICallback that fails or never answers: full handshakes, no session stored", async () => {
    let mode: "fail" | "hang" = "fail";
    const server = vhostServer({
      ...statefulServerOptions(),
      // Node's own call of a callback that never answers waits for the handshake timeout.
      handshakeTimeout: 1000,
      SNICallback: (_name, cb) => {
        if (mode === "fail") cb(new Error("no such host"));
      },
    });
    // With a listener, Node leaves closing the failed socket to it.
    server.on("tlsClientError", (_err, socket) => socket.destroy());
    const s = await start(server, { attach: { helloTimeout: 200 } });
    try {
      // Node's own SNICallback call fails the handshake; ours must not have stored anything.
      await assert.rejects(connect(s.port, "1.2", { servername: "x.test" }));
      mode = "hang";
      const t0 = performance.now();
      await assert.rejects(connect(s.port, "1.2", { servername: "x.test" }));
      assert.ok(performance.now() - t0 < 5000);
      assert.equal(s.cache.stats().number, 0);
    } finally {
      await s.close();
    }
  });

  it("tickets: true: a stateless ticket of a.test does not resume on b.test (per-host ticket keys)", async () => {
    for (const v of VERSIONS) {
      const server = vhostServer({ ...statefulServerOptions({ tickets: true }) });
      server.addContext("a.test", hosts.a);
      server.addContext("b.test", hosts.b);
      const s = await start(server, { attach: { tickets: true } });
      try {
        const a = await connect(s.port, v, { servername: "a.test" });
        const [first, second] = a.sessions;
        assert.equal((await connect(s.port, v, { servername: "b.test", session: first })).reused, false);
        const back = await connect(s.port, v, {
          servername: "a.test",
          session: v === "1.3" ? second : first,
        });
        assert.equal(back.reused, true, `TLS ${v}: the ticket resumes on a.test`);
      } finally {
        await s.close();
      }
    }
  });

  for (const v of VERSIONS) {
    it(`TLS ${v}: setSecureContext with another client CA ends the old sessions`, async () => {
      const server = vhostServer({
        ...statefulServerOptions(),
        requestCert: true,
        rejectUnauthorized: false,
        ca: pki.caCert,
      });
      const authorized = watchAuthorized(server);
      const s = await start(server);
      try {
        const a = await connect(s.port, v, { client: hosts.client });
        assert.equal(authorized.at(-1), true);
        const before = s.handle.sessionIdContext;
        // The service now trusts only the other CA: hosts.client would be refused in full.
        server.setSecureContext({ key: pki.key, cert: pki.cert, ca: pki.otherCaCert });
        assert.notDeepEqual(s.handle.sessionIdContext, before);
        const again = await connect(s.port, v, { session: a.sessions[0] });
        assert.equal(again.reused, false, "a session authorized under the old CA set must not resume");
        assert.equal(authorized.at(-1), false);
        // Positive control: sessions made under the new context resume.
        const c = await connect(s.port, v, { client: hosts.otherClient });
        assert.equal(authorized.at(-1), true);
        assert.equal((await connect(s.port, v, { session: c.sessions.at(-1) })).reused, true);
      } finally {
        await s.close();
      }
    });
  }
});

describe("R25 one cache, several servers", () => {
  it("servers with different certificates or client CAs on one cache never resume each other's sessions", async () => {
    const cache = new SessionCache();
    const a = await start(vhostServer({ ...hosts.a, ...statefulServerOptions() }), { cache });
    const b = await start(vhostServer({ ...hosts.b, ...statefulServerOptions() }), { cache });
    // Same certificate as a, but it asks for client certificates from a CA.
    const c = await start(
      vhostServer({ ...hosts.a, requestCert: true, rejectUnauthorized: false, ca: pki.caCert }),
      { cache },
    );
    try {
      assert.notDeepEqual(a.handle.sessionIdContext, b.handle.sessionIdContext);
      assert.notDeepEqual(a.handle.sessionIdContext, c.handle.sessionIdContext);
      for (const v of VERSIONS) {
        const s = await connect(a.port, v, { servername: "a.test" });
        const [first, second] = s.sessions;
        assert.equal((await connect(b.port, v, { servername: "a.test", session: first })).reused, false);
        assert.equal((await connect(c.port, v, { servername: "a.test", session: first })).reused, false);
        const back = await connect(a.port, v, {
          servername: "a.test",
          session: v === "1.3" ? second : first,
        });
        assert.equal(back.reused, true, `TLS ${v} control`);
      }
    } finally {
      await a.close();
      await b.close();
      await c.close();
    }
  });
});

describe("R27 lifetimes: the shorter of the server's sessionTimeout and the cache's timeout wins", () => {
  for (const v of VERSIONS) {
    it(`TLS ${v}: sessionTimeout 2 s, cache timeout 7200 s: no resumption after 2 s`, async () => {
      // The cache's clock runs ahead of the real one on demand (OpenSSL stamps real time).
      let ahead = 0;
      const server = vhostServer({ ...statefulServerOptions(), sessionTimeout: 2 });
      const s = await start(server, { cacheOptions: { clock: () => Math.floor(Date.now() / 1000) + ahead } });
      try {
        const a = await connect(s.port, v, {});
        for (const x of s.cache.sessions()) assert.equal(x.timeout, 2, "stored with the advertised lifetime");
        assert.equal((await connect(s.port, v, { session: a.sessions[0] })).reused, true, "within 2 s");
        ahead = 4; // 4 s later: past the advertised lifetime, far within the cache's
        const late = a.sessions.at(-1);
        assert.equal((await connect(s.port, v, { session: late })).reused, false, "after 2 s");
      } finally {
        await s.close();
      }
    });
  }

  it("a cache timeout shorter than sessionTimeout wins", async () => {
    const server = vhostServer({ ...statefulServerOptions(), sessionTimeout: 3600 });
    const s = await start(server, { cacheOptions: { timeout: 60 } });
    try {
      await connect(s.port, "1.2", {});
      assert.deepEqual(
        s.cache.sessions().map((x) => x.timeout),
        [60],
      );
    } finally {
      await s.close();
    }
  });
});

/** A TLS 1.3 ClientHello (structure only: its binder is zeros) offering `psk`, with extra extensions. */
function rawHello(o: { legacyId: Buffer; psk: Uint8Array; ticketExt?: Buffer }): Buffer {
  const u16 = (n: number) => [n >> 8, n & 0xff];
  const ext = (type: number, data: number[]) => [...u16(type), ...u16(data.length), ...data];
  const identity = [...u16(o.psk.length), ...o.psk, 0, 0, 0, 0];
  const binders = [32, ...new Array(32).fill(0)];
  const exts = [
    ...ext(43, [2, 3, 4]),
    ...ext(45, [1, 1]),
    ...(o.ticketExt ? ext(35, [...o.ticketExt]) : []),
    ...ext(41, [...u16(identity.length), ...identity, ...u16(binders.length), ...binders]),
  ];
  const body = [
    3,
    3,
    ...new Array(32).fill(7),
    o.legacyId.length,
    ...o.legacyId,
    ...u16(2),
    0x13,
    0x01,
    1,
    0,
  ];
  body.push(...u16(exts.length), ...exts);
  const hs = [1, 0, ...u16(body.length), ...body];
  return Buffer.from([22, 3, 1, ...u16(hs.length), ...hs]);
}

describe("pending hellos: an answer goes only to a hello Node will ask about", () => {
  it("a hello carrying a TLS 1.2 ticket (Node never asks for its session) starts no look-up and spends no ticket", async () => {
    const s = await start(vhostServer(statefulServerOptions()));
    try {
      const a = await connect(s.port, "1.3", {});
      const ticket = (await import("../src/session/index.js")).parseSession(a.sessions[0]).ticket!;
      const held = s.cache.stats().number;
      const before = s.handle.stats();
      const sock = net.connect(s.port, "127.0.0.1");
      sock.on("error", () => {});
      sock.on("data", () => {});
      sock.write(rawHello({ legacyId: Buffer.alloc(32, 9), psk: ticket, ticketExt: Buffer.from([1]) }));
      await once(sock, "close");
      const after = s.handle.stats();
      assert.equal(after.hellosRead, before.hellosRead + 1, "the hello was read");
      assert.equal(after.lookups, before.lookups, "no look-up for a hello Node will not ask about");
      assert.equal(s.cache.stats().number, held, "the ticket is not spent");
      // Control: the same ticket still resumes for its owner.
      assert.equal((await connect(s.port, "1.3", { session: a.sessions[0] })).reused, true);
    } finally {
      await s.close();
    }
  });
});

describe("other inputs that select a session", () => {
  it("version: a TLS 1.2 session id offered as a TLS 1.3 PSK identity finds nothing", async () => {
    const s = await start(vhostServer(statefulServerOptions()));
    try {
      const a = await connect(s.port, "1.2", {});
      const id = (await import("../src/session/index.js")).parseSession(a.sessions[0]).id;
      assert.equal(id.length, 32);
      const hits = s.cache.stats().hits;
      const lookups = s.handle.stats().lookups;
      const sock = net.connect(s.port, "127.0.0.1");
      sock.on("error", () => {});
      sock.on("data", () => {});
      sock.write(rawHello({ legacyId: Buffer.alloc(32, 5), psk: id }));
      await once(sock, "close");
      assert.equal(s.handle.stats().lookups, lookups + 1, "looked up (as TLS 1.3)");
      assert.equal(s.cache.stats().hits, hits, "and not found: the key holds the version");
      assert.equal((await connect(s.port, "1.2", { session: a.sessions[0] })).reused, true, "control");
    } finally {
      await s.close();
    }
  });

  it("ALPN is not a boundary: it is negotiated afresh on a resumed connection", async () => {
    const server = tls.createServer(
      { key: pki.key, cert: pki.cert, ALPNProtocols: ["h2", "http/1.1"], ...statefulServerOptions() },
      (c) => {
        c.on("error", () => {});
        c.end("x");
      },
    );
    const s = await start(server);
    const alpn = (version: TlsVersion, protocols: string[], session?: Buffer) =>
      new Promise<{ reused: boolean; alpn: string | false | null; sessions: Buffer[] }>((resolve, reject) => {
        const v = version === "1.3" ? "TLSv1.3" : "TLSv1.2";
        const sessions: Buffer[] = [];
        const c = tls.connect({
          port: s.port,
          host: "127.0.0.1",
          rejectUnauthorized: false,
          ALPNProtocols: protocols,
          session,
          minVersion: v,
          maxVersion: v,
        });
        c.on("session", (x: Buffer) => sessions.push(x));
        c.once("error", reject);
        let r: { reused: boolean; alpn: string | false | null } | undefined;
        c.once("secureConnect", () => {
          r = { reused: c.isSessionReused(), alpn: c.alpnProtocol };
        });
        c.on("data", () => {});
        c.once("close", () => resolve({ ...r!, sessions }));
      });
    try {
      for (const v of VERSIONS) {
        const first = await alpn(v, ["h2"]);
        assert.equal(first.alpn, "h2");
        const again = await alpn(v, ["http/1.1"], first.sessions.at(-1));
        assert.equal(again.reused, true, `TLS ${v}`);
        assert.equal(again.alpn, "http/1.1", "the new offer decides, not the session");
      }
    } finally {
      await s.close();
    }
  });
});

describe("issue 9 §6, server side", () => {
  it("TLS 1.0 sessions are not stored (they would never resume); TLS 1.2 ones are", async () => {
    const server = vhostServer({
      ...statefulServerOptions(),
      minVersion: "TLSv1",
      ciphers: "DEFAULT@SECLEVEL=0",
    });
    const s = await start(server);
    try {
      const old = await new Promise<boolean>((resolve, reject) => {
        const sock = tls.connect({
          port: s.port,
          host: "127.0.0.1",
          rejectUnauthorized: false,
          minVersion: "TLSv1",
          maxVersion: "TLSv1",
          ciphers: "DEFAULT@SECLEVEL=0",
        });
        sock.once("error", reject);
        sock.once("secureConnect", () => resolve(sock.getProtocol() === "TLSv1"));
        sock.on("data", () => {});
      });
      assert.equal(old, true, "a TLS 1.0 handshake happened");
      assert.equal(s.cache.stats().number, 0);
      assert.equal(s.handle.stats().legacySessionsSkipped, 1);
      await connect(s.port, "1.2", {});
      assert.equal(s.cache.stats().number, 1);
    } finally {
      await s.close();
    }
  });

  it("a connection closed by helloTimeout is counted and emitted as tlsClientError", async () => {
    const server = vhostServer(statefulServerOptions());
    const s = await start(server, { attach: { helloTimeout: 100 } });
    try {
      const errored = once(server, "tlsClientError");
      const sock = net.connect(s.port, "127.0.0.1");
      sock.on("error", () => {});
      const [err, socket] = (await errored) as [Error & { code?: string }, net.Socket];
      assert.equal(err.code, "ERR_TLS_HANDSHAKE_TIMEOUT");
      assert.ok(socket instanceof net.Socket);
      assert.equal(s.handle.stats().helloTimeouts, 1);
      sock.destroy();
    } finally {
      await s.close();
    }
  });
});
