// The programs in examples/ run as a user runs them (`node examples/x.mjs`, importing "sesscache",
// which resolves to ./dist through the package's own "exports"), each against a real peer: curl,
// Node's TLS / HTTP/2 clients, a plain Node https server, redis-server. Needs `npm run build` first.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { testPki } from "./support/certs.js";
import { freePort, type RedisServer, redisSkipReason, startRedis } from "./support/redis.js";
import { curl, have, listenLocal, run, type TlsVersion, trackConnections } from "./support/tls-peers.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const example = (name: string) => join(root, "examples", name);
const VERSIONS: TlsVersion[] = ["1.2", "1.3"];

before(() => {
  assert.ok(
    existsSync(join(root, "dist", "index.js")),
    "examples import sesscache's dist/: run `npm run build`",
  );
});

interface Running {
  child: ChildProcess;
  output(): string;
  stop(): Promise<string>;
}

/** Starts an example server; resolves once it printed its "listening" line. */
async function startExample(file: string, env: Record<string, string>): Promise<Running> {
  const child = spawn(process.execPath, [example(file)], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${file}: no "listening" line in 20 s:\n${out}`)),
      20_000,
    );
    const onData = (d: string) => {
      out += d;
      if (/listening on https:\/\//.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.setEncoding("utf8").on("data", onData);
    child.stderr!.setEncoding("utf8").on("data", onData);
    exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`${file} exited before listening:\n${out}`));
    });
  });
  return {
    child,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(killer);
      }
      return out;
    },
  };
}

function serverEnv(port: number): Record<string, string> {
  const pki = testPki();
  return { PORT: String(port), HOST: "127.0.0.1", TLS_CERT: pki.certFile, TLS_KEY: pki.keyFile };
}

const tlsVersion = (v: TlsVersion) => (v === "1.3" ? "TLSv1.3" : "TLSv1.2") as tls.SecureVersion;

for (const [file, name] of [
  ["fastify-server.mjs", "fastify"],
  ["express-server.mjs", "express"],
] as const) {
  describe(`examples/${file}`, { skip: have("curl") ? undefined : "curl not installed" }, () => {
    let server: Running;
    let port: number;
    before(async () => {
      port = await freePort();
      server = await startExample(file, serverEnv(port));
    });
    after(async () => {
      const out = await server?.stop();
      assert.match(out ?? "", /stopped; cache stats: /);
    });

    for (const v of VERSIONS) {
      test(`curl: the second connection resumes (TLS ${v})`, async () => {
        const url = `https://localhost:${port}/`;
        const r = await curl({
          urls: [url, url],
          version: v,
          caFile: testPki().caFile,
          extra: ["--resolve", `localhost:${port}:127.0.0.1`],
        });
        assert.equal(r.code, 0, r.stderr);
        const bodies = r.stdout.match(/\{[^}]*\}/g)?.map((b) => JSON.parse(b));
        assert.deepEqual(bodies, [
          { example: name, protocol: tlsVersion(v), resumed: false },
          { example: name, protocol: tlsVersion(v), resumed: true },
        ]);
        assert.equal(r.hellos, 2);
        assert.equal(r.resumed, 1, "curl saw no certificate on the second handshake");
      });
    }
  });
}

/** One HTTP/2 GET over a new TLS connection offering `session`; the sessions it was given. */
function h2Get(port: number, v: TlsVersion, session?: Buffer) {
  return new Promise<{ body: unknown; reused: boolean; sessions: Buffer[] }>((resolve, reject) => {
    const sessions: Buffer[] = [];
    let socket: tls.TLSSocket | undefined;
    const client = http2.connect(`https://localhost:${port}`, {
      createConnection: () => {
        socket = tls.connect({
          host: "127.0.0.1",
          port,
          servername: "localhost",
          ca: testPki().caCert,
          ALPNProtocols: ["h2"],
          session,
          minVersion: tlsVersion(v),
          maxVersion: tlsVersion(v),
        });
        socket.on("session", (s: Buffer) => sessions.push(s));
        return socket;
      },
    });
    client.once("error", reject);
    const req = client.request({ ":path": "/" });
    let text = "";
    req.setEncoding("utf8").on("data", (d: string) => {
      text += d;
    });
    req.once("error", reject);
    req.once("end", () => {
      const reused = socket!.isSessionReused();
      client.close(() => resolve({ body: JSON.parse(text), reused, sessions }));
    });
  });
}

describe("examples/http2-server.mjs", () => {
  let server: Running;
  let port: number;
  before(async () => {
    port = await freePort();
    server = await startExample("http2-server.mjs", serverEnv(port));
  });
  after(async () => {
    assert.match((await server?.stop()) ?? "", /stopped; cache stats: /);
  });

  for (const v of VERSIONS) {
    test(`Node's HTTP/2 client: the second connection resumes (TLS ${v})`, async () => {
      const first = await h2Get(port, v);
      assert.deepEqual(first.body, { example: "http2", protocol: tlsVersion(v), resumed: false });
      assert.equal(first.reused, false);
      assert.ok(first.sessions.length > 0, "no session from the first connection");
      const second = await h2Get(port, v, first.sessions.at(-1));
      assert.deepEqual(second.body, { example: "http2", protocol: tlsVersion(v), resumed: true });
      assert.equal(second.reused, true);
    });
  }
});

describe("examples/undici-client.mjs", () => {
  for (const v of VERSIONS) {
    test(`against a plain Node https server: the second connection resumes (TLS ${v})`, async () => {
      const pki = testPki();
      const server = https.createServer(
        { key: pki.key, cert: pki.cert, minVersion: tlsVersion(v), maxVersion: tlsVersion(v) },
        (req, res) => res.end(`hello from ${req.socket instanceof tls.TLSSocket ? "tls" : "?"}\n`),
      );
      const conns = trackConnections(server);
      const port = await listenLocal(server);
      try {
        const r = await run(process.execPath, [example("undici-client.mjs"), `https://localhost:${port}/`], {
          cwd: root,
          env: { ...process.env, CA_FILE: pki.caFile },
          timeoutMs: 20_000,
        });
        assert.equal(r.code, 0, r.stderr);
        const lines = r.stdout.trim().split("\n");
        assert.deepEqual(lines, [
          `connection ${tlsVersion(v)} resumed=false`,
          "request 1: status 200 hello from tls",
          `connection ${tlsVersion(v)} resumed=true`,
          "request 2: status 200 hello from tls",
        ]);
      } finally {
        await conns.close();
      }
    });
  }
});

/** GET / over a new TLS connection (HTTP/1.1, Connection: close), offering `session`. */
function tlsGet(port: number, v: TlsVersion, session?: Buffer) {
  return new Promise<{ body: unknown; reused: boolean; sessions: Buffer[] }>((resolve, reject) => {
    const sessions: Buffer[] = [];
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: testPki().caCert,
      session,
      minVersion: tlsVersion(v),
      maxVersion: tlsVersion(v),
    });
    let text = "";
    let reused = false;
    socket.on("session", (s: Buffer) => sessions.push(s));
    socket.once("error", reject);
    socket.once("secureConnect", () => {
      reused = socket.isSessionReused();
      socket.write("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    });
    socket.setEncoding("utf8").on("data", (d: string) => {
      text += d;
    });
    socket.once("close", () => {
      const body = text.slice(text.indexOf("\r\n\r\n") + 4);
      resolve({ body: JSON.parse(body), reused, sessions });
    });
  });
}

describe("examples/redis-fleet-server.mjs", { skip: redisSkipReason() }, () => {
  let redis: RedisServer;
  const fleet: Running[] = [];
  const ports: number[] = [];
  before(async () => {
    redis = await startRedis();
    const key = randomBytes(32).toString("base64");
    for (const name of ["a", "b"]) {
      const port = await freePort();
      ports.push(port);
      fleet.push(
        await startExample("redis-fleet-server.mjs", {
          ...serverEnv(port),
          NAME: name,
          REDIS_URL: redis.url,
          SESSCACHE_STORE_KEYS: key,
        }),
      );
    }
  });
  after(async () => {
    for (const s of fleet) assert.match(await s.stop(), /stopped; store stats: /);
    await redis?.stop();
  });

  for (const v of VERSIONS) {
    test(`a session made on server a resumes on server b (TLS ${v})`, async () => {
      await redis.cli("FLUSHALL");
      const first = await tlsGet(ports[0]!, v);
      assert.deepEqual(first.body, { server: "a", protocol: tlsVersion(v), resumed: false });
      assert.ok(first.sessions.length > 0, "no session from server a");
      // The store write is asynchronous: wait until Redis holds every session a issued.
      const deadline = Date.now() + 10_000;
      while (Number((await redis.cli("DBSIZE")).trim()) < first.sessions.length) {
        assert.ok(Date.now() < deadline, "server a's sessions never reached Redis");
      }
      const second = await tlsGet(ports[1]!, v, first.sessions.at(-1));
      assert.deepEqual(second.body, { server: "b", protocol: tlsVersion(v), resumed: true });
      assert.equal(second.reused, true);
    });
  }
});
