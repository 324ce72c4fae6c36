// The server adapter against peers no one here wrote: openssl s_client and s_time, curl, Python's
// ssl module, and an http2 secure server with Node's http2 client. Recipes and their quirks:
// shared/notes/test-peers.md.
import assert from "node:assert/strict";
import { once } from "node:events";
import { rmSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { SessionCache } from "../src/engine/index.js";
import { type AttachedSessionCache, attachSessionCache, statefulServerOptions } from "../src/server/index.js";
import { testPki } from "./support/certs.js";
import {
  curl,
  have,
  listenLocal,
  pythonResumption,
  sClient,
  sTime,
  type TlsVersion,
  trackConnections,
} from "./support/tls-peers.js";

const pki = testPki();
const VERSIONS: TlsVersion[] = ["1.2", "1.3"];
const hasOpenssl = have("openssl", "version");
const hasCurl = have("curl");
const hasPython = have("python3");

interface Started {
  port: number;
  cache: SessionCache;
  handle: AttachedSessionCache;
  close(): Promise<void>;
}

async function startHttps(tickets = false): Promise<Started> {
  // Keep-alive connections answer each request; s_client's bare connection gets a byte at once so
  // TLS 1.3 tickets are sent before the client leaves.
  const server = https.createServer(
    { key: pki.key, cert: pki.cert, ...statefulServerOptions({ tickets, sessionIdContext: "peers" }) },
    (_req, res) => res.end("hello\n"),
  );
  const cache = new SessionCache();
  const handle = attachSessionCache(server, cache, { tickets, sessionIdContext: "peers" });
  const tracker = trackConnections(server);
  const port = await listenLocal(server);
  return { port, cache, handle, close: tracker.close };
}

/** Ends stdin once the server wrote its answer to the request s_client sent (tickets precede it). */
const REQUEST = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

describe("openssl s_client", { skip: !hasOpenssl && "openssl not installed" }, () => {
  let s: Started;
  before(async () => {
    s = await startHttps();
  });
  after(() => s.close());

  it("TLS 1.2 -reconnect: 1 full handshake, then 5 resumed by session id", async () => {
    const r = await sClient({
      port: s.port,
      version: "1.2",
      reconnect: true,
      caFile: pki.caFile,
      input: REQUEST,
    });
    assert.equal(r.full, 1, r.stdout);
    assert.equal(r.reused, 5);
  });

  it("TLS 1.2 -sess_out / -sess_in: the saved session resumes, more than once", async () => {
    const file = join(pki.dir, "s12.pem");
    rmSync(file, { force: true });
    const a = await sClient({ port: s.port, version: "1.2", sessOut: file, input: REQUEST });
    assert.equal(a.full, 1);
    for (let i = 0; i < 2; i++) {
      const b = await sClient({ port: s.port, version: "1.2", sessIn: file, input: REQUEST });
      assert.equal(b.reused, 1, b.stdout);
    }
  });

  it("TLS 1.3 -sess_out / -sess_in: New, Reused, then New again (the ticket was single-use)", async () => {
    const file = join(pki.dir, "s13.pem");
    rmSync(file, { force: true });
    // s_client reads the answer (and the tickets before it) until the server closes.
    const a = await sClient({ port: s.port, version: "1.3", sessOut: file, input: REQUEST, stdinEnd: 3000 });
    assert.equal(a.full, 1);
    const b = await sClient({ port: s.port, version: "1.3", sessIn: file, input: REQUEST, stdinEnd: 3000 });
    assert.equal(b.reused, 1, b.stdout);
    const c = await sClient({ port: s.port, version: "1.3", sessIn: file, input: REQUEST, stdinEnd: 3000 });
    assert.equal(c.full, 1, "a ticket offered twice is refused");
  });
});

describe("openssl s_time -reuse", { skip: !hasOpenssl && "openssl not installed" }, () => {
  let s: Started;
  before(async () => {
    s = await startHttps();
  });
  after(() => s.close());

  for (const v of VERSIONS) {
    it(`TLS ${v}: every timed connection resumes`, async () => {
      // TLS 1.3 tickets come after the handshake: s_time only gets them reading a page (-www).
      const r = await sTime({ port: s.port, version: v, reuse: true, seconds: 1, www: "/" });
      assert.ok(r.connections > 10, r.stdout);
      assert.equal(r.fullHandshakes, 0, r.stdout);
      assert.ok(r.resumed >= r.connections - 1, r.stdout);
    });
  }
});

describe("curl, two URLs in one invocation", { skip: !hasCurl && "curl not installed" }, () => {
  let s: Started;
  before(async () => {
    s = await startHttps();
  });
  after(() => s.close());

  for (const v of VERSIONS) {
    it(`TLS ${v}: the second connection resumes`, async () => {
      const url = `https://localhost:${s.port}/`;
      const r = await curl({
        urls: [url, url],
        version: v,
        caFile: pki.caFile,
        extra: ["--resolve", `localhost:${s.port}:127.0.0.1`],
      });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "hello\nhello\n");
      assert.equal(r.hellos, 2, r.stderr);
      assert.equal(r.resumed, 1, r.stderr);
    });
  }
});

describe("Python's ssl", { skip: !hasPython && "python3 not installed" }, () => {
  let s: Started;
  before(async () => {
    s = await startHttps();
  });
  after(() => s.close());

  for (const v of VERSIONS) {
    it(`TLS ${v}: each connection resumes the previous one's session`, async () => {
      const { reused, result } = await pythonResumption({
        port: s.port,
        version: v,
        connections: 3,
        caFile: pki.caFile,
        send: REQUEST,
      });
      assert.deepEqual(reused, [false, true, true], result.stderr);
    });
  }
});

describe("tickets: true beside session ids", { skip: !hasOpenssl && "openssl not installed" }, () => {
  it("a TLS 1.2 client that asks for no ticket still resumes by id through the cache", async () => {
    const s = await startHttps(true);
    try {
      const r = await sClient({ port: s.port, version: "1.2", reconnect: true, input: REQUEST });
      assert.equal(r.reused, 5, r.stdout);
      assert.ok(s.cache.stats().hits >= 5);
    } finally {
      await s.close();
    }
  });
});

describe("http2.createSecureServer with Node's http2 client", () => {
  let port: number;
  let handle: AttachedSessionCache;
  let close: () => Promise<void>;
  before(async () => {
    const server = http2.createSecureServer(
      { key: pki.key, cert: pki.cert, allowHTTP1: true, ...statefulServerOptions() },
      (_req, res) => res.end("h2"),
    );
    handle = attachSessionCache(server, new SessionCache());
    close = trackConnections(server).close;
    port = await listenLocal(server);
  });
  after(() => close());

  /** One h2 request over its own TLS connection; returns whether it resumed and the sessions. */
  async function h2Request(version: TlsVersion, session?: Buffer) {
    const sessions: Buffer[] = [];
    let socket: tls.TLSSocket | undefined;
    const v = version === "1.3" ? "TLSv1.3" : "TLSv1.2";
    const client = http2.connect(`https://localhost:${port}`, {
      createConnection: () => {
        socket = tls.connect({
          host: "127.0.0.1",
          port,
          servername: "localhost",
          ca: pki.caCert,
          ALPNProtocols: ["h2"],
          session,
          minVersion: v,
          maxVersion: v,
        });
        socket.on("session", (x: Buffer) => sessions.push(x));
        return socket;
      },
    });
    client.on("error", () => {});
    const req = client.request({ ":path": "/" });
    req.setEncoding("utf8");
    let body = "";
    req.on("data", (d: string) => {
      body += d;
    });
    await once(req, "end");
    const reused = socket!.isSessionReused();
    const alpn = socket!.alpnProtocol;
    client.close();
    await once(client, "close");
    return { reused, alpn, body, sessions };
  }

  for (const v of VERSIONS) {
    it(`TLS ${v}: h2 connections resume through the cache`, async () => {
      const a = await h2Request(v);
      assert.equal(a.body, "h2");
      assert.equal(a.alpn, "h2");
      assert.equal(a.reused, false);
      const b = await h2Request(v, a.sessions[0]);
      assert.equal(b.reused, true);
      assert.equal(b.body, "h2");
    });
  }

  it("HTTP/1.1 over the same server (allowHTTP1) resumes too", async () => {
    const agent = new https.Agent({ ca: pki.caCert, maxCachedSessions: 10, keepAlive: false });
    const get = () =>
      new Promise<boolean>((resolve, reject) => {
        const req = https.get(
          { host: "127.0.0.1", servername: "localhost", port, path: "/", agent },
          (res) => {
            const reused = (res.socket as tls.TLSSocket).isSessionReused();
            res.resume();
            res.on("end", () => resolve(reused));
          },
        );
        req.on("error", reject);
      });
    assert.equal(await get(), false);
    assert.equal(await get(), true);
    agent.destroy();
    assert.ok(handle.stats().lookups > 0);
  });
});
