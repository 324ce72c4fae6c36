// The client cache against real servers: Node's TLS server, nginx and `openssl s_server`, TLS 1.2
// and 1.3, through connect(), the https.Agent and the undici connector. A TCP proxy in front of a
// server reads every ClientHello (session id, ticket, pre_shared_key identities), so "what was
// offered" is observed on the wire, not taken from the cache's word.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { Agent as UndiciAgent, request as undiciRequest } from "undici";
import {
  ClientSessionCache,
  type ClientSessionCacheOptions,
  clientIdentity,
  connect,
  createHttpsAgent,
  ResumedIdentityError,
  undiciConnector,
} from "../src/client/index.js";
import { testPki } from "./support/certs.js";
import { freePort, type Nginx, nginxSkipReason, startNginx } from "./support/nginx.js";

const pki = testPki();
const VERSIONS = ["TLSv1.2", "TLSv1.3"] as const;
type Version = (typeof VERSIONS)[number];

// ---- a ClientHello-reading proxy ------------------------------------------------------------

interface Hello {
  sessionId: string;
  /** TLS 1.2 session ticket extension (35), hex, "" when empty or absent. */
  ticket: string;
  /** TLS 1.3 pre_shared_key (41) identities, hex. */
  psk: string[];
}

function parseClientHello(buf: Buffer): Hello | undefined {
  if (buf.length < 5 || buf[0] !== 22) return undefined;
  const recLen = buf.readUInt16BE(3);
  if (buf.length < 5 + recLen) return undefined;
  const hs = buf.subarray(5, 5 + recLen);
  if (hs[0] !== 1) throw new Error("not a ClientHello");
  let o = 4 + 2 + 32;
  const sidLen = hs[o]!;
  const sessionId = hs.subarray(o + 1, o + 1 + sidLen).toString("hex");
  o += 1 + sidLen;
  o += 2 + hs.readUInt16BE(o);
  o += 1 + hs[o]!;
  const extEnd = o + 2 + hs.readUInt16BE(o);
  o += 2;
  const hello: Hello = { sessionId, ticket: "", psk: [] };
  while (o + 4 <= extEnd) {
    const type = hs.readUInt16BE(o);
    const len = hs.readUInt16BE(o + 2);
    const data = hs.subarray(o + 4, o + 4 + len);
    if (type === 35) hello.ticket = data.toString("hex");
    if (type === 41) {
      const idsEnd = 2 + data.readUInt16BE(0);
      for (let p = 2; p < idsEnd; ) {
        const n = data.readUInt16BE(p);
        hello.psk.push(data.subarray(p + 2, p + 2 + n).toString("hex"));
        p += 2 + n + 4;
      }
    }
    o += 4 + len;
  }
  return hello;
}

type ProxyMode = "pass" | "alert" | "strip-alerts" | "corrupt";

interface HelloProxy {
  port: number;
  hellos: Hello[];
  mode: ProxyMode;
  close(): Promise<void>;
}

// A fatal handshake_failure alert (TLS 1.2 record layer), what a server sends to refuse a hello.
const FATAL_ALERT = Buffer.from([21, 3, 3, 0, 2, 2, 40]);

/**
 * Forwards a TLS 1.2 stream record by record, where each record's outer type is visible:
 * "strip-alerts" drops alerts (the client sees FIN but no close_notify), "corrupt" flips a byte in
 * every application-data record (the client's MAC check fails: a fatal alert after the handshake).
 */
function filterRecords(from: net.Socket, to: net.Socket, mode: "strip-alerts" | "corrupt"): void {
  let pending = Buffer.alloc(0);
  from.on("data", (d: Buffer) => {
    pending = Buffer.concat([pending, d]);
    while (pending.length >= 5 && pending.length >= 5 + pending.readUInt16BE(3)) {
      const n = 5 + pending.readUInt16BE(3);
      const record = Buffer.from(pending.subarray(0, n));
      pending = pending.subarray(n);
      if (mode === "strip-alerts" && record[0] === 21) continue;
      if (mode === "corrupt" && record[0] === 23) record[n - 1]! ^= 0xff;
      to.write(record);
    }
  });
  from.on("end", () => to.end());
}

async function helloProxy(targetPort: number): Promise<HelloProxy> {
  const sockets = new Set<net.Socket>();
  const proxy: HelloProxy = {
    port: 0,
    hellos: [],
    mode: "pass",
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => {});
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const hello = parseClientHello(buf);
      if (!hello) return;
      client.off("data", onData);
      proxy.hellos.push(hello);
      const mode = proxy.mode;
      if (mode === "alert") {
        client.end(FATAL_ALERT);
        return;
      }
      const upstream = net.connect(targetPort, "127.0.0.1");
      sockets.add(upstream);
      upstream.on("close", () => sockets.delete(upstream));
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
      upstream.write(buf);
      client.pipe(upstream);
      if (mode === "pass") upstream.pipe(client);
      else filterRecords(upstream, client, mode);
    };
    client.on("data", onData);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  proxy.port = (server.address() as net.AddressInfo).port;
  return proxy;
}

// ---- servers ----------------------------------------------------------------------------------

interface Running {
  port: number;
  close(): Promise<void>;
}

function track(server: net.Server): () => Promise<void> {
  const open = new Set<net.Socket>();
  server.on("connection", (s: net.Socket) => {
    open.add(s);
    s.on("close", () => open.delete(s));
  });
  return () =>
    new Promise<void>((resolve) => {
      for (const s of open) s.destroy();
      server.close(() => resolve());
    });
}

/** A Node TLS server answering "r TLSv1.3" / ". TLSv1.2" (resumed or not) and closing. */
async function nodeTlsServer(options: tls.TlsOptions = {}): Promise<Running> {
  const server = tls.createServer({ key: pki.key, cert: pki.cert, ...options }, (s) => {
    s.on("error", () => {});
    s.end(`${s.isSessionReused() ? "r" : "."} ${s.getProtocol()}\n`);
  });
  server.on("tlsClientError", () => {});
  const close = track(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, close };
}

/**
 * nodeTlsServer that also records the application bytes each connection received: `received(i)`
 * settles when the i-th connection (counted as it is secured or fails) is gone.
 */
async function recordingTlsServer(
  options: tls.TlsOptions = {},
): Promise<Running & { received(i: number): Promise<Buffer> }> {
  const got: { promise: Promise<Buffer>; resolve: (b: Buffer) => void }[] = [];
  const slot = (i: number) => {
    while (got.length <= i) {
      let resolve!: (b: Buffer) => void;
      const promise = new Promise<Buffer>((r) => {
        resolve = r;
      });
      got.push({ promise, resolve });
    }
    return got[i]!;
  };
  let n = 0;
  const server = tls.createServer({ key: pki.key, cert: pki.cert, ...options }, (s) => {
    const mine = slot(n++);
    const chunks: Buffer[] = [];
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", () => {});
    // Settled once the connection is gone: every byte the client sent has been read by then.
    s.on("close", () => mine.resolve(Buffer.concat(chunks)));
    s.end(`${s.isSessionReused() ? "r" : "."} ${s.getProtocol()}\n`);
  });
  // A connection that fails before the handshake completes (the client destroyed it) read none.
  server.on("tlsClientError", () => slot(n++).resolve(Buffer.alloc(0)));
  const close = track(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as net.AddressInfo).port;
  return { port, close, received: (i) => slot(i).promise };
}

/** A Node HTTPS server answering the same, with Connection: close so every request is a new connection. */
async function nodeHttpsServer(options: https.ServerOptions = {}): Promise<Running> {
  const server = https.createServer({ key: pki.key, cert: pki.cert, ...options }, (req, res) => {
    const s = req.socket as tls.TLSSocket;
    res.setHeader("connection", "close");
    res.end(`${s.isSessionReused() ? "r" : "."} ${s.getProtocol()}\n`);
  });
  server.on("tlsClientError", () => {});
  const close = track(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, close };
}

/** `openssl s_server -www`: its status page says "Reused, TLSv1.3, ..." or "New, TLSv1.3, ...". */
async function sServer(version: Version, noTicket: boolean): Promise<Running> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const args = ["s_server", "-accept", `127.0.0.1:${port}`, "-cert", pki.certFile, "-key", pki.keyFile];
    args.push("-www", version === "TLSv1.3" ? "-tls1_3" : "-tls1_2");
    if (noTicket) args.push("-no_ticket");
    const child: ChildProcess = spawn("openssl", args, { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    const ready = await new Promise<boolean>((resolve) => {
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("ACCEPT")) resolve(true);
      });
      child.once("exit", () => resolve(false));
    });
    if (ready) {
      return {
        port,
        close: async () => {
          if (child.exitCode === null) {
            child.kill();
            await once(child, "exit");
          }
        },
      };
    }
    if (attempt >= 2) throw new Error(`openssl s_server did not start: ${out}`);
  }
}

// ---- clients ----------------------------------------------------------------------------------

interface Outcome {
  line: string;
  reused: boolean;
}

/** One connection through connect(): reads until the server closes. */
function viaConnect(cache: ClientSessionCache, options: tls.ConnectionOptions): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const s = connect({ cache, host: "127.0.0.1", ca: pki.caCert, servername: "localhost", ...options });
    let reused = false;
    let line = "";
    s.once("secureConnect", () => {
      reused = s.isSessionReused();
    });
    s.setEncoding("utf8");
    s.on("data", (d: string) => {
      line += d;
    });
    // Settled on close, after the cache's own close handling (R23) has run.
    let error: Error | undefined;
    s.once("error", (err) => {
      error = err;
    });
    s.once("close", () => (error ? reject(error) : resolve({ line: line.trim(), reused })));
  });
}

/** One HTTP/1.0 GET through connect() to s_server -www: resumed or not, from the page. */
function viaConnectHttp(cache: ClientSessionCache, options: tls.ConnectionOptions): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const s = connect({ cache, host: "127.0.0.1", ca: pki.caCert, servername: "localhost", ...options }, () =>
      s.write("GET / HTTP/1.0\r\n\r\n"),
    );
    let page = "";
    let reused = false;
    s.once("secureConnect", () => {
      reused = s.isSessionReused();
    });
    s.setEncoding("utf8");
    s.on("data", (d: string) => {
      page += d;
    });
    s.once("error", reject);
    s.once("close", () => {
      const m = /^(New|Reused), /m.exec(page);
      resolve({ line: m?.[1] ?? "?", reused });
    });
  });
}

function viaAgent(agent: https.Agent, url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { agent }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          body += d;
        });
        res.on("end", () => resolve(body.trim()));
        res.on("error", reject);
      })
      .on("error", reject);
  });
}

function newCache(options: ClientSessionCacheOptions = {}): ClientSessionCache {
  return new ClientSessionCache(options);
}

// ---- tests ------------------------------------------------------------------------------------

describe("Node TLS server", () => {
  for (const v of VERSIONS) {
    test(`${v}: the second connection resumes; counters`, async () => {
      const srv = await nodeTlsServer({ maxVersion: v });
      try {
        const cache = newCache();
        const opts = { port: srv.port, maxVersion: v };
        const first = await viaConnect(cache, opts);
        assert.deepEqual(first, { line: `. ${v}`, reused: false });
        const second = await viaConnect(cache, opts);
        assert.deepEqual(second, { line: `r ${v}`, reused: true });
        const st = cache.stats();
        assert.equal(st.connect, 2);
        assert.equal(st.connectGood, 2);
        assert.equal(st.hits, 1);
        assert.equal(st.misses, 1);
        // TLS 1.3: 2 tickets from the full handshake, one taken (Node's server issues none on a
        // resumed connection). TLS 1.2: the one session, still there.
        const id = clientIdentity({ host: "127.0.0.1", ...opts, ca: pki.caCert, servername: "localhost" });
        assert.equal(cache.sessions(id).length, 1);
      } finally {
        await srv.close();
      }
    });
  }

  test("TLSv1.3: a ticket is never offered twice (seen on the wire), concurrent connections too", async () => {
    const srv = await nodeTlsServer({ maxVersion: "TLSv1.3" });
    const proxy = await helloProxy(srv.port);
    try {
      const cache = newCache();
      const opts = { port: proxy.port };
      await viaConnect(cache, opts);
      // Two tickets from that handshake: two concurrent connections get one each.
      const concurrent = await Promise.all([viaConnect(cache, opts), viaConnect(cache, opts)]);
      assert.deepEqual(
        concurrent.map((r) => r.reused),
        [true, true],
      );
      // Node's server issues no ticket on a resumed connection: after two uses, a full handshake.
      const sequential: boolean[] = [];
      for (let i = 0; i < 4; i++) sequential.push((await viaConnect(cache, opts)).reused);
      assert.deepEqual(sequential, [false, true, true, false]);
      const offered = proxy.hellos.flatMap((h) => h.psk);
      assert.equal(offered.length, 4);
      assert.equal(new Set(offered).size, offered.length, "no pre_shared_key identity repeats");
    } finally {
      await proxy.close();
      await srv.close();
    }
  });

  for (const v of VERSIONS) {
    test(`${v}: no session offered under another servername, port, CA set or ALPN`, async () => {
      // Two servers sharing ticket keys: a session from one resumes on the other if offered.
      const ticketKeys = randomBytes(48);
      const a = await nodeTlsServer({ maxVersion: v, ticketKeys, ALPNProtocols: ["h2", "http/1.1"] });
      const b = await nodeTlsServer({ maxVersion: v, ticketKeys, ALPNProtocols: ["h2", "http/1.1"] });
      try {
        const cache = newCache();
        const opts = { port: a.port, maxVersion: v, ALPNProtocols: ["http/1.1"] };
        await viaConnect(cache, opts);
        const variants: tls.ConnectionOptions[] = [
          { ...opts, port: b.port },
          { ...opts, servername: undefined },
          { ...opts, ca: [pki.caCert, pki.otherCaCert] },
          { ...opts, ALPNProtocols: ["h2", "http/1.1"] },
        ];
        for (const variant of variants) {
          const r = await viaConnect(cache, variant);
          assert.equal(r.reused, false, JSON.stringify({ ...variant, ca: undefined }));
        }
        // Control: b would have accepted a's session, so "not resumed" above means "not offered".
        const [session] = cache.sessions(
          clientIdentity({ host: "127.0.0.1", ca: pki.caCert, servername: "localhost", ...opts }),
        );
        const control = tls.connect({
          host: "127.0.0.1",
          port: b.port,
          ca: pki.caCert,
          servername: "localhost",
          maxVersion: v,
          session: Buffer.from(session!.der),
        });
        await once(control, "secureConnect");
        assert.equal(control.isSessionReused(), true);
        control.destroy();
        assert.equal((await viaConnect(cache, opts)).reused, true, "the original identity still resumes");
      } finally {
        await a.close();
        await b.close();
      }
    });

    test(`${v}: a forged mapping (session filed under another name) is caught on resumption`, async () => {
      const srv = await nodeTlsServer({ maxVersion: v });
      try {
        const cache = newCache();
        const opts = { port: srv.port, maxVersion: v };
        await viaConnect(cache, opts);
        const good = clientIdentity({ host: "127.0.0.1", ca: pki.caCert, servername: "localhost", ...opts });
        const forgedOpts = { ...opts, servername: "forged.test" };
        const forged = clientIdentity({ host: "127.0.0.1", ca: pki.caCert, ...forgedOpts });
        const [session] = cache.sessions(good);
        // Without a session, Node's own check refuses the name.
        await assert.rejects(viaConnect(newCache(), forgedOpts), { code: "ERR_TLS_CERT_ALTNAME_INVALID" });
        // Node 20 skips that check when a session resumes: without sesscache's check the wrong
        // name is accepted, authorized.
        const lax = newCache({ verifyResumedIdentity: false });
        lax.add(forged, session!);
        assert.deepEqual(await viaConnect(lax, forgedOpts), { line: `r ${v}`, reused: true });
        // With it, the connection is destroyed and the session dropped.
        cache.add(forged, session!);
        await assert.rejects(viaConnect(cache, forgedOpts), (err: unknown) => {
          assert.ok(err instanceof ResumedIdentityError);
          assert.equal(err.code, "ERR_SESSCACHE_RESUMED_IDENTITY");
          assert.equal(err.hostname, "forged.test");
          assert.match(err.message, /not valid for "forged\.test"/);
          return true;
        });
        assert.equal(cache.sessions(forged).length, 0);
      } finally {
        await srv.close();
      }
    });

    for (const rejectUnauthorized of [true, false]) {
      test(`${v}: a resumed connection failing the identity check never reaches the application as authorized (rejectUnauthorized: ${rejectUnauthorized})`, async () => {
        const srv = await recordingTlsServer({ maxVersion: v });
        try {
          const cache = newCache();
          const opts = { port: srv.port, maxVersion: v };
          await viaConnect(cache, opts);
          assert.equal((await srv.received(0)).length, 0);
          // A session verified for "localhost", filed under "forged.test": it resumes (the server
          // accepts it), and only the post-resumption check can tell the name was never verified.
          const good = clientIdentity({
            host: "127.0.0.1",
            ca: pki.caCert,
            servername: "localhost",
            ...opts,
          });
          const forgedOpts = { ...opts, servername: "forged.test", rejectUnauthorized };
          const forged = clientIdentity({ host: "127.0.0.1", ca: pki.caCert, ...forgedOpts });
          const [session] = cache.sessions(good);
          cache.add(forged, session!);

          type Seen = { who: string; authorized: boolean; authorizationError: unknown; destroyed: boolean };
          const seen: Seen[] = [];
          const look = (who: string) =>
            seen.push({
              who,
              authorized: s.authorized,
              authorizationError: s.authorizationError,
              destroyed: s.destroyed,
            });
          // The application writes only to a server it trusts, as applications do.
          const app = (who: string) => () => {
            look(who);
            if (s.authorized) s.write(`secret from ${who}\n`);
          };
          const s = connect(
            { cache, host: "127.0.0.1", ca: pki.caCert, ...forgedOpts },
            app("connect callback"),
          );
          s.on("secureConnect", app("listener"));
          // Added after connect(): first in line, ahead of anything the cache itself listens with.
          s.prependListener("secureConnect", app("prepended listener"));
          let reused: boolean | null = null;
          s.on("data", () => {});
          let error: Error | undefined;
          s.on("error", (err) => {
            error = err;
          });
          if (!rejectUnauthorized) s.once("secureConnect", () => (reused = s.isSessionReused()));
          // Node holds what is written before the handshake until 'secureConnect'; with
          // rejectUnauthorized that must never leave.
          if (rejectUnauthorized) s.write("written before the handshake\n");
          await new Promise((resolve) => s.once("close", resolve));

          if (rejectUnauthorized) {
            // Destroyed with the error before any listener ran: none saw the connection at all.
            assert.deepEqual(seen, []);
            assert.ok(error instanceof ResumedIdentityError, String(error));
            assert.equal(error.hostname, "forged.test");
          } else {
            assert.equal(error, undefined);
            assert.equal(reused, true, "the forged session did resume");
            assert.deepEqual(
              seen.map((x) => x.who),
              ["prepended listener", "connect callback", "listener"],
            );
            for (const x of seen) {
              assert.deepEqual(
                { ...x, who: undefined },
                {
                  who: undefined,
                  authorized: false,
                  authorizationError: "ERR_SESSCACHE_RESUMED_IDENTITY",
                  destroyed: false,
                },
                x.who,
              );
            }
          }
          // Nothing of the application's reached the server.
          assert.equal((await srv.received(1)).toString(), "");
          assert.equal(cache.sessions(forged).length, 0, "the session is dropped");
        } finally {
          await srv.close();
        }
      });
    }

    test(`${v}: trust changed in place (a CA array, a CA Buffer) is a new identity: the old session is not offered`, async () => {
      const srv = await nodeTlsServer({ maxVersion: v });
      const proxy = await helloProxy(srv.port);
      try {
        const offered = () => {
          const h = proxy.hellos.at(-1)!;
          return h.psk.length > 0 || h.ticket.length > 0;
        };
        // A Buffer with room for either CA (PEM allows trailing newlines), so it can be rewritten
        // in place without changing its length.
        const room = Math.max(pki.caCert.length, pki.otherCaCert.length);
        const caBuffer = Buffer.alloc(room, "\n");
        caBuffer.write(pki.caCert);
        const caArray = [pki.caCert];
        const cases: [string, tls.ConnectionOptions["ca"], () => void][] = [
          ["array", caArray, () => (caArray[0] = pki.otherCaCert)],
          [
            "buffer",
            caBuffer,
            () => {
              caBuffer.fill("\n");
              caBuffer.write(pki.otherCaCert);
            },
          ],
        ];
        for (const [what, ca, trustOtherCa] of cases) {
          const cache = newCache();
          const opts = { port: proxy.port, maxVersion: v, ca };
          assert.equal((await viaConnect(cache, opts)).reused, false, what);
          assert.equal((await viaConnect(cache, opts)).reused, true, `${what}: resumes under the same trust`);
          // Now only the other CA is trusted, through the very same object: the server's chain no
          // longer verifies. A session verified under the old trust would resume authorized.
          trustOtherCa();
          await assert.rejects(viaConnect(cache, opts), { code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" }, what);
          assert.equal(offered(), false, `${what}: the session of the old trust was not offered`);
        }
      } finally {
        await proxy.close();
        await srv.close();
      }
    });

    test(`${v}: a handshake that fails loses the session it offered; an application error later keeps them (R23)`, async () => {
      const srv = await nodeTlsServer({ maxVersion: v });
      const proxy = await helloProxy(srv.port);
      try {
        const cache = newCache();
        const opts = { port: proxy.port, maxVersion: v };
        const id = clientIdentity({ host: "127.0.0.1", ca: pki.caCert, servername: "localhost", ...opts });
        await viaConnect(cache, opts);
        const before = cache.sessions(id).length;
        assert.ok(before >= 1);
        // A fatal alert instead of a ServerHello.
        proxy.mode = "alert";
        await assert.rejects(viaConnect(cache, opts), { code: "ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE" });
        assert.equal(
          proxy.hellos.at(-1)!.psk.length + proxy.hellos.at(-1)!.ticket.length > 0,
          true,
          "one was offered",
        );
        // TLS 1.2: the session is gone; TLS 1.3: the offered ticket was gone already (single use).
        assert.equal(cache.sessions(id).length, v === "TLSv1.3" ? before - 1 : 0);
        // An error of the application's after a good handshake says nothing against the session.
        proxy.mode = "pass";
        const fresh = newCache();
        await new Promise<void>((resolve) => {
          const s = connect({
            cache: fresh,
            host: "127.0.0.1",
            ca: pki.caCert,
            servername: "localhost",
            ...opts,
          });
          s.on("session", () => {
            if (fresh.sessions(id).length === (v === "TLSv1.3" ? 2 : 1))
              s.destroy(new Error("application gave up"));
          });
          s.on("error", () => {});
          s.on("close", () => resolve());
        });
        assert.equal(fresh.sessions(id).length, v === "TLSv1.3" ? 2 : 1);
      } finally {
        await proxy.close();
        await srv.close();
      }
    });
  }

  test("TLSv1.2: a fatal alert after the handshake (bad record MAC) drops the session used and those received (R23)", async () => {
    const srv = await nodeTlsServer({ maxVersion: "TLSv1.2" });
    const proxy = await helloProxy(srv.port);
    try {
      const cache = newCache();
      const opts = { port: proxy.port, maxVersion: "TLSv1.2" as const };
      const id = clientIdentity({ host: "127.0.0.1", ca: pki.caCert, servername: "localhost", ...opts });
      await viaConnect(cache, opts);
      assert.equal(cache.sessions(id).length, 1);
      proxy.mode = "corrupt";
      await assert.rejects(
        viaConnect(cache, opts),
        (e: { library?: string }) => typeof e.library === "string",
      );
      assert.equal(cache.sessions(id).length, 0, "the resumed session is gone");
      // A full handshake whose data then fails: the session it brought is not kept either.
      const fresh = newCache();
      await assert.rejects(
        viaConnect(fresh, opts),
        (e: { library?: string }) => typeof e.library === "string",
      );
      assert.equal(fresh.sessions(id).length, 0);
      assert.equal(fresh.stats().connectGood, 1, "the handshake itself completed");
    } finally {
      await proxy.close();
      await srv.close();
    }
  });

  test("R23 finding: a missing close_notify looks like a clean close to a Node client", async () => {
    // TLS 1.2, where alerts travel as their own record type, so the proxy can drop close_notify.
    const srv = await nodeTlsServer({ maxVersion: "TLSv1.2" });
    const proxy = await helloProxy(srv.port);
    try {
      const seen: Record<string, string[]> = { pass: [], "strip-alerts": [] };
      for (const mode of ["pass", "strip-alerts"] as const) {
        proxy.mode = mode;
        const cache = newCache();
        await new Promise<void>((resolve) => {
          const s = connect({
            cache,
            host: "127.0.0.1",
            port: proxy.port,
            ca: pki.caCert,
            servername: "localhost",
            maxVersion: "TLSv1.2",
          });
          s.on("data", () => seen[mode].push("data"));
          s.on("end", () => seen[mode].push("end"));
          s.on("error", (e) => seen[mode].push(`error ${e.message}`));
          s.on("close", (hadError) => {
            seen[mode].push(`close ${hadError}`);
            resolve();
          });
        });
        seen[mode].push(`kept ${cache.stats().number}`);
      }
      assert.deepEqual(seen["strip-alerts"], seen.pass);
      assert.deepEqual(seen.pass, ["data", "end", "close false", "kept 1"]);
    } finally {
      await proxy.close();
      await srv.close();
    }
  });
});

describe("https.Agent and undici integrations (Node HTTPS server, fresh connections)", () => {
  for (const v of VERSIONS) {
    test(`${v}: createHttpsAgent resumes; an IP URL is another identity`, async () => {
      const srv = await nodeHttpsServer({ maxVersion: v });
      try {
        const cache = newCache();
        const agent = createHttpsAgent({ cache, ca: pki.caCert, maxVersion: v, keepAlive: false });
        const url = `https://localhost:${srv.port}/`;
        const lines: string[] = [];
        for (let i = 0; i < 3; i++) lines.push(await viaAgent(agent, url));
        assert.deepEqual(lines, [`. ${v}`, `r ${v}`, `r ${v}`]);
        assert.equal(cache.stats().hits, 2);
        // An IP URL is another identity (no SNI): a full handshake first.
        assert.equal(await viaAgent(agent, `https://127.0.0.1:${srv.port}/`), `. ${v}`);
        assert.equal(await viaAgent(agent, `https://127.0.0.1:${srv.port}/`), `r ${v}`);
        agent.destroy();
      } finally {
        await srv.close();
      }
    });

    test(`${v}: undiciConnector resumes with undici 7's Agent`, async () => {
      const srv = await nodeHttpsServer({ maxVersion: v });
      const cache = newCache();
      const dispatcher = new UndiciAgent({
        connect: undiciConnector({ cache, ca: pki.caCert, maxVersion: v }),
      });
      try {
        const lines: string[] = [];
        for (let i = 0; i < 3; i++) {
          const res = await undiciRequest(`https://localhost:${srv.port}/`, { dispatcher });
          lines.push((await res.body.text()).trim());
        }
        assert.deepEqual(lines, [`. ${v}`, `r ${v}`, `r ${v}`]);
        assert.equal(cache.stats().hits, 2);
      } finally {
        await dispatcher.close();
        await srv.close();
      }
    });
  }

  test("undiciConnector: plain http:// origins connect without TLS", async () => {
    const server = http.createServer((_req, res) => res.end("plain"));
    const close = track(server);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const dispatcher = new UndiciAgent({ connect: undiciConnector({ cache: newCache() }) });
    try {
      const res = await undiciRequest(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/`, {
        dispatcher,
      });
      assert.equal(await res.body.text(), "plain");
    } finally {
      await dispatcher.close();
      await close();
    }
  });

  test("undiciConnector: a forged mapping fails the request with ResumedIdentityError", async () => {
    const srv = await nodeHttpsServer({ maxVersion: "TLSv1.3" });
    const cache = newCache();
    const dispatcher = new UndiciAgent({ connect: undiciConnector({ cache, ca: pki.caCert }) });
    try {
      await (await undiciRequest(`https://localhost:${srv.port}/`, { dispatcher })).body.text();
      const good = clientIdentity({
        host: "localhost",
        port: srv.port,
        servername: "localhost",
        ca: pki.caCert,
        ALPNProtocols: ["http/1.1"],
      });
      const forged = clientIdentity({
        host: "127.0.0.1",
        port: srv.port,
        servername: "forged.test",
        ca: pki.caCert,
        ALPNProtocols: ["http/1.1"],
      });
      const [session] = cache.sessions(good);
      assert.ok(session, "the connector files sessions under the identity it connects with");
      cache.add(forged, session);
      await assert.rejects(
        undiciRequest(`https://127.0.0.1:${srv.port}/`, {
          dispatcher,
          headers: { host: "forged.test" },
        }).then((r) => r.body.text()),
        (err: unknown) => err instanceof ResumedIdentityError,
      );
    } finally {
      await dispatcher.close();
      await srv.close();
    }
  });
});

describe("openssl s_server", () => {
  for (const v of VERSIONS) {
    for (const noTicket of [true, false]) {
      test(`${v} ${noTicket ? "-no_ticket (session ids / stateful tickets)" : "tickets"}: resumes on the second connection`, async () => {
        const srv = await sServer(v, noTicket);
        try {
          const cache = newCache();
          const opts = { port: srv.port, maxVersion: v };
          const outcomes: Outcome[] = [];
          for (let i = 0; i < 3; i++) outcomes.push(await viaConnectHttp(cache, opts));
          assert.deepEqual(
            outcomes.map((o) => `${o.line} ${o.reused}`),
            ["New false", "Reused true", "Reused true"],
          );
        } finally {
          await srv.close();
        }
      });
    }
  }
});

describe("nginx", { skip: nginxSkipReason() }, () => {
  for (const tickets of [false, true]) {
    describe(tickets ? "tickets on, no shared cache" : "shared cache, tickets off", () => {
      let nginx: Nginx;
      before(async () => {
        nginx = await startNginx({
          certFile: pki.certFile,
          keyFile: pki.keyFile,
          sharedCache: !tickets,
          tickets,
        });
      });
      after(() => nginx?.stop());

      for (const v of VERSIONS) {
        test(`${v}: https agent, connect() and undici resume on the second connection`, async () => {
          const cache = newCache();
          const agent = createHttpsAgent({ cache, ca: pki.caCert, maxVersion: v });
          const url = `https://localhost:${nginx.port}/`;
          assert.deepEqual([await viaAgent(agent, url), await viaAgent(agent, url)], [`. ${v}`, `r ${v}`]);
          agent.destroy();

          const c2 = newCache();
          const opts = { port: nginx.port, maxVersion: v };
          const first = await viaConnectHttp11(c2, opts);
          const second = await viaConnectHttp11(c2, opts);
          assert.deepEqual([first, second], [`. ${v}`, `r ${v}`]);

          const c3 = newCache();
          const dispatcher = new UndiciAgent({
            connect: undiciConnector({ cache: c3, ca: pki.caCert, maxVersion: v }),
            pipelining: 0,
          });
          const lines: string[] = [];
          for (let i = 0; i < 2; i++) {
            const res = await undiciRequest(url, { dispatcher, reset: true });
            lines.push((await res.body.text()).trim());
          }
          await dispatcher.close();
          assert.deepEqual(lines, [`. ${v}`, `r ${v}`]);
        });
      }

      test("TLSv1.3: nginx would accept a ticket twice; the cache never offers one twice", async () => {
        const proxy = await helloProxy(nginx.port);
        try {
          const cache = newCache();
          const agent = createHttpsAgent({ cache, ca: pki.caCert, maxVersion: "TLSv1.3" });
          const url = `https://localhost:${proxy.port}/`;
          const lines = [await viaAgent(agent, url)];
          for (let i = 0; i < 4; i++) lines.push(await viaAgent(agent, url));
          lines.push(...(await Promise.all([1, 2, 3].map(() => viaAgent(agent, url)))));
          agent.destroy();
          const offered = proxy.hellos.flatMap((h) => h.psk);
          assert.ok(offered.length >= 6);
          assert.equal(new Set(offered).size, offered.length, "no pre_shared_key identity repeats");
          assert.deepEqual(lines.slice(0, 5), [". TLSv1.3", ...Array(4).fill("r TLSv1.3")]);
          if (!tickets) {
            // Control: nginx's stateful cache does accept a ticket offered twice (sesscache's rule
            // is stricter than this server).
            const id = clientIdentity({
              host: "127.0.0.1",
              port: nginx.port,
              servername: "localhost",
              ca: pki.caCert,
              maxVersion: "TLSv1.3",
            });
            const c = newCache();
            await viaConnectHttp11(c, { port: nginx.port, maxVersion: "TLSv1.3" });
            const [ticket] = c.sessions(id);
            const reuse = async () => {
              const s = tls.connect({
                host: "127.0.0.1",
                port: nginx.port,
                ca: pki.caCert,
                servername: "localhost",
                session: Buffer.from(ticket!.der),
              });
              await once(s, "secureConnect");
              const r = s.isSessionReused();
              s.destroy();
              return r;
            };
            assert.deepEqual([await reuse(), await reuse()], [true, true]);
          }
        } finally {
          await proxy.close();
        }
      });
    });
  }

  test("TLSv1.2: a ticket renewed in a resumed handshake (no 'session' event) is captured", async () => {
    const dir = pki.dir;
    const k1 = join(dir, "ticket1.key");
    const k2 = join(dir, "ticket2.key");
    writeFileSync(k1, randomBytes(80));
    writeFileSync(k2, randomBytes(80));
    const base = {
      certFile: pki.certFile,
      keyFile: pki.keyFile,
      sharedCache: false,
      tickets: true,
      protocols: "TLSv1.2",
    };
    let nginx = await startNginx({ ...base, ticketKeyFiles: [k1] });
    const port = nginx.port;
    try {
      const cache = newCache();
      const opts = { port, maxVersion: "TLSv1.2" as const };
      const id = clientIdentity({ host: "127.0.0.1", servername: "localhost", ca: pki.caCert, ...opts });
      assert.equal(await viaConnectHttp11(cache, opts), ". TLSv1.2");
      const [firstSession] = cache.sessions(id);
      // Restart with a new encryption key first: nginx still decrypts k1 tickets and renews them.
      await nginx.stop();
      nginx = await startNginx({ ...base, ticketKeyFiles: [k2, k1], port });
      assert.equal(await viaConnectHttp11(cache, opts), "r TLSv1.2");
      const [renewed] = cache.sessions(id);
      assert.ok(renewed && firstSession);
      assert.notDeepEqual(renewed.id, firstSession.id, "the renewed ticket replaced the old session");
      assert.notDeepEqual(renewed.ticket, firstSession.ticket);
      assert.equal(cache.sessions(id).length, 1);
      // Only k2 now: the k1 ticket would fail, the renewed one resumes.
      await nginx.stop();
      nginx = await startNginx({ ...base, ticketKeyFiles: [k2], port });
      assert.equal(await viaConnectHttp11(cache, opts), "r TLSv1.2");
    } finally {
      await nginx.stop();
    }
  });
});

/** One HTTP/1.1 request (Connection: close) through connect(); returns the body line. */
function viaConnectHttp11(cache: ClientSessionCache, options: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ cache, host: "127.0.0.1", ca: pki.caCert, servername: "localhost", ...options }, () =>
      s.write("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    let text = "";
    s.setEncoding("utf8");
    s.on("data", (d: string) => {
      text += d;
    });
    s.once("error", reject);
    s.once("close", () => resolve(text.slice(text.indexOf("\r\n\r\n") + 4).trim()));
  });
}
