// `sesscache serve` against real peers: Node's https and tls clients, openssl s_client and curl.
// The server runs as a child process (as users run it) except for the startServe() tests.
import assert from "node:assert/strict";
import { type ChildProcessByStdio, spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { after, describe, test } from "node:test";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import { startServe } from "../src/cli/serve.js";
import { testPki } from "./support/certs.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "sesscache-serve-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

type Child = ChildProcessByStdio<null, Readable, Readable>;

interface Running {
  child: Child;
  line: string;
  url: string;
  port: number;
  stateDir: string;
  ca: string;
  stderr: () => string;
  /** Sends the signal and resolves with how the process ended. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<Child>();
after(() => {
  for (const c of running) c.kill("SIGKILL");
});

let dirs = 0;
const newStateDir = () => join(tmp, `state-${++dirs}`);

/** Starts `sesscache serve` from source and waits for its startup line. */
async function serve(args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Running> {
  const hasStateDir = args.includes("--state-dir") || "SESSCACHE_STATE_DIR" in env;
  const stateDir = hasStateDir ? "" : newStateDir();
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(root, "src/cli/main.ts"),
      "serve",
      "--listen",
      "127.0.0.1:0",
      ...(hasStateDir ? [] : ["--state-dir", stateDir]),
      ...args,
    ],
    { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  running.add(child);
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  exited.then(() => running.delete(child));
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  let stdout = "";
  child.stdout.setEncoding("utf8");
  const line = await new Promise<string>((resolve, reject) => {
    const onData = (d: string) => {
      stdout += d;
      const nl = stdout.indexOf("\n");
      if (nl >= 0) {
        child.stdout.off("data", onData);
        resolve(stdout.slice(0, nl));
      }
    };
    child.stdout.on("data", onData);
    exited.then(([code]) => reject(new Error(`serve exited (${code}) before listening: ${stderr}`)));
  });
  const m = /^sesscache serve: listening on (https:\/\/127\.0\.0\.1:(\d+)) \((?:state|cert): (.+)\)$/.exec(
    line,
  );
  assert.ok(m, `startup line: ${line}`);
  const dir = m[3]!;
  return {
    child,
    line,
    url: m[1]!,
    port: Number(m[2]),
    stateDir: dir,
    ca: line.includes("(state: ") ? readFileSync(join(dir, "tls", "cert.pem"), "utf8") : "",
    stderr: () => stderr,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      // A server whose event loop is stuck never handles the signal: don't let it hang the suite
      // (the exit then reports SIGKILL, which the shutdown tests catch).
      const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
      const [code, sig] = await exited;
      clearTimeout(killer);
      return { code, signal: sig };
    },
  };
}

interface Response {
  status: number;
  type: string | undefined;
  body: string;
  socket: TLSSocket;
}

/** One request on a fresh connection, verifying the server against `ca`. */
function get(port: number, path: string, ca: string, servername = "localhost"): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, ca, servername, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () =>
        resolve({
          status: res.statusCode!,
          type: res.headers["content-type"],
          body,
          socket: res.socket as TLSSocket,
        }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

async function stats(port: number, ca: string): Promise<Record<string, unknown> & { hits: number }> {
  const r = await get(port, "/stats", ca);
  assert.equal(r.status, 200);
  return JSON.parse(r.body);
}

function run(
  cmd: string,
  args: string[],
  input = "",
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

const COUNTERS = [
  "number",
  "connect",
  "connectGood",
  "connectRenegotiate",
  "accept",
  "acceptGood",
  "acceptRenegotiate",
  "hits",
  "cbHits",
  "misses",
  "timeouts",
  "cacheFull",
  "rejected",
];

// Generous, but a wedged server must fail the test rather than hang the run.
const TIMEOUT = { timeout: 180_000 };

describe("sesscache serve", TIMEOUT, () => {
  test("starts with a generated certificate and answers /stats, / and 404", async (t) => {
    const s = await serve();
    t.after(() => s.stop());
    assert.match(s.ca, /BEGIN CERTIFICATE/);
    const st = await stats(s.port, s.ca);
    for (const k of COUNTERS) assert.equal(typeof st[k], "number", k);
    assert.equal(st.mode, 2);
    assert.equal(st.modeName, "server");
    assert.equal(st.cacheSize, 20480);
    assert.equal(st.timeout, 7200);
    assert.equal(st.tickets, false);
    assert.equal(typeof st.uptime, "number");
    assert.deepEqual(Object.keys(st.connection as object).sort(), ["cipher", "protocol", "resumed"]);

    const page = await get(s.port, "/", s.ca);
    assert.equal(page.status, 200);
    assert.match(page.type ?? "", /^text\/html/);
    for (const k of COUNTERS) assert.match(page.body, new RegExp(`<th>${k}</th>`), k);
    assert.match(page.body, /full handshake|resumed/);

    assert.equal((await get(s.port, "/nope", s.ca)).status, 404);
    // The only diagnostic of a default start: the certificate was made. In particular the adapter
    // found the server created as it wants it (no secure-context rebuild).
    assert.deepEqual(s.stderr().trim().split("\n"), [
      `sesscache serve: made a self-signed certificate for localhost: ${join(s.stateDir, "tls", "cert.pem")}`,
    ]);
    assert.match(st.sessionIdContext as string, /^[0-9a-f]{32}$/);
  });

  test("the certificate is made once and reused by the next start", async () => {
    const stateDir = newStateDir();
    const a = await serve(["--state-dir", stateDir]);
    const fpA = (await get(a.port, "/stats", a.ca)).socket.getPeerCertificate().fingerprint256;
    assert.equal((await a.stop()).code, 0);
    const b = await serve(["--state-dir", stateDir]);
    try {
      const fpB = (await get(b.port, "/stats", b.ca)).socket.getPeerCertificate().fingerprint256;
      assert.equal(fpB, fpA);
      assert.equal(new X509Certificate(b.ca).fingerprint256, fpA);
      assert.doesNotMatch(b.stderr(), /made a self-signed certificate/);
    } finally {
      await b.stop();
    }
  });

  test("SESSCACHE_STATE_DIR chooses the state directory and the startup line shows it", async () => {
    const stateDir = newStateDir();
    const s = await serve([], { SESSCACHE_STATE_DIR: stateDir });
    try {
      assert.equal(s.stateDir, stateDir);
      assert.ok(s.ca);
    } finally {
      await s.stop();
    }
  });

  test("--cert/--key serve the given certificate; the line names the file", async () => {
    const pki = testPki();
    const s = await serve(["--cert", pki.certFile, "--key", pki.keyFile]);
    try {
      assert.match(s.line, /\(cert: .*leaf\.pem\)$/);
      const r = await get(s.port, "/stats", pki.caCert);
      assert.equal(r.status, 200);
    } finally {
      await s.stop();
    }
  });

  test("flags reach the cache: --mode, --timeout, --cache-size, --tickets", async () => {
    const s = await serve([
      "--mode",
      "server,no_auto_clear",
      "--timeout",
      "300",
      "--cache-size",
      "10",
      "--tickets",
      "on",
    ]);
    try {
      const st = await stats(s.port, s.ca);
      assert.equal(st.mode, 0x82);
      assert.equal(st.modeName, "server|no_auto_clear");
      assert.equal(st.timeout, 300);
      assert.equal(st.cacheSize, 10);
      assert.equal(st.tickets, true);
    } finally {
      await s.stop();
    }
  });

  test("--session-id-context is the context sessions carry, and TLS 1.2 still resumes", async (t) => {
    const s = await serve(["--session-id-context", "shop-1"]);
    t.after(() => s.stop());
    assert.equal((await stats(s.port, s.ca)).sessionIdContext, "shop-1");
    const first = await tlsRequest(s.port, s.ca, undefined, "TLSv1.2");
    assert.equal(first.resumed, false);
    const second = await tlsRequest(s.port, s.ca, first.session, "TLSv1.2");
    assert.equal(second.resumed, true);
  });

  describe("resumption", () => {
    test("openssl s_client TLS 1.2 without tickets: New, then Reused; hits >= 1", async (t) => {
      const s = await serve();
      t.after(() => s.stop());
      const caFile = join(s.stateDir, "tls", "cert.pem");
      const sess = join(s.stateDir, "s_client.sess");
      const base = ["s_client", "-connect", `127.0.0.1:${s.port}`, "-servername", "localhost", "-tls1_2"];
      const common = [...base, "-no_ticket", "-CAfile", caFile, "-verify_return_error"];
      const first = await run("openssl", [...common, "-sess_out", sess]);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stdout, /^New, TLSv1\.2/m);
      const second = await run("openssl", [...common, "-sess_in", sess]);
      assert.equal(second.code, 0, second.stderr);
      assert.match(second.stdout, /^Reused, TLSv1\.2/m);
      const st = await stats(s.port, s.ca);
      assert.ok(st.hits >= 1, `hits ${st.hits}`);
    });

    for (const [protocol, flags] of [
      ["TLSv1.2", ["--tlsv1.2", "--tls-max", "1.2"]],
      ["TLSv1.3", ["--tlsv1.3"]],
    ] as const) {
      test(`curl with two URLs resumes the second handshake (${protocol})`, async (t) => {
        const s = await serve();
        t.after(() => s.stop());
        const before = await stats(s.port, s.ca);
        const url = `${s.url}/stats`;
        const sep = "\n--sesscache-test--\n";
        // Connection: close makes curl open a second connection, offering the session it got.
        const r = await run("curl", [
          "-sS",
          "--noproxy",
          "*",
          "--cacert",
          join(s.stateDir, "tls", "cert.pem"),
          ...flags,
          "-H",
          "Connection: close",
          "-w",
          sep,
          url.replace("127.0.0.1", "localhost"),
          url.replace("127.0.0.1", "localhost"),
        ]);
        assert.equal(r.code, 0, r.stderr);
        const [one, two] = r.stdout.split(sep).map((b) => JSON.parse(b || "null"));
        assert.equal(one.connection.protocol, protocol);
        assert.equal(one.connection.resumed, false);
        assert.equal(two.connection.protocol, protocol);
        assert.equal(two.connection.resumed, true, "second handshake resumed");
        assert.equal(two.hits, before.hits + 1);
      });
    }

    test("Node's TLS 1.3 client resumes with a stateful ticket", async (t) => {
      const s = await serve();
      t.after(() => s.stop());
      const first = await tlsRequest(s.port, s.ca);
      assert.equal(first.resumed, false);
      assert.ok(first.session, "a ticket arrived");
      const second = await tlsRequest(s.port, s.ca, first.session);
      assert.equal(second.resumed, true);
      assert.equal(second.protocol, "TLSv1.3");
    });
  });

  describe("shutdown", () => {
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      test(`${signal} with idle and half-open connections exits 0 promptly`, async () => {
        const s = await serve();
        // An idle keep-alive connection after a request, and a TCP connection that never says hello.
        const idle = tlsConnect({ host: "127.0.0.1", port: s.port, ca: s.ca, servername: "localhost" });
        await once(idle, "secureConnect");
        idle.write("GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n");
        await once(idle, "data");
        idle.on("error", () => {});
        const silent = netConnect(s.port, "127.0.0.1");
        silent.on("error", () => {});
        await once(silent, "connect");
        const started = Date.now();
        const { code, signal: sig } = await s.stop(signal);
        assert.equal(code, 0, s.stderr());
        assert.equal(sig, null);
        assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
        assert.match(s.stderr(), new RegExp(`${signal}: shutting down`));
        idle.destroy();
        silent.destroy();
      });
    }
  });
});

/** A TLS connection that sends a request and waits for the response, collecting the ticket. */
async function tlsRequest(
  port: number,
  ca: string,
  session?: Buffer,
  version: "TLSv1.2" | "TLSv1.3" = "TLSv1.3",
): Promise<{ resumed: boolean; protocol: string | null; session: Buffer | undefined }> {
  const socket = tlsConnect({
    host: "127.0.0.1",
    port,
    ca,
    servername: "localhost",
    minVersion: version,
    maxVersion: version,
    session,
  });
  let ticket: Buffer | undefined;
  socket.on("session", (s: Buffer) => (ticket ??= s));
  await once(socket, "secureConnect");
  const resumed = socket.isSessionReused();
  const protocol = socket.getProtocol();
  socket.end("GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  socket.resume();
  await once(socket, "close");
  return { resumed, protocol, session: ticket };
}

describe("startServe()", TIMEOUT, () => {
  test("starts in-process, reports url and port, close() is prompt and idempotent", async () => {
    const h = await startServe({ listen: "127.0.0.1:0", stateDir: newStateDir() });
    try {
      assert.equal(h.url, `https://127.0.0.1:${h.port}`);
      assert.ok(h.port > 0);
      const ca = readFileSync(h.certFile, "utf8");
      const st = await stats(h.port, ca);
      assert.equal(st.connection && typeof st.connection, "object");
      // The same cache object the server counts in.
      assert.ok(h.cache.stats().acceptGood >= 1);
    } finally {
      await Promise.all([h.close(), h.close()]);
    }
    assert.equal(h.server.listening, false);
  });

  test("IPv6 [::1]:0 when the host has it", async (t) => {
    let h: Awaited<ReturnType<typeof startServe>>;
    try {
      h = await startServe({ listen: "[::1]:0", stateDir: newStateDir() });
    } catch (err) {
      t.skip(`no IPv6 loopback: ${(err as Error).message}`);
      return;
    }
    try {
      assert.equal(h.url, `https://[::1]:${h.port}`);
      const ca = readFileSync(h.certFile, "utf8");
      const r = await new Promise<number>((resolve, reject) => {
        request({ host: "::1", port: h.port, path: "/stats", ca, agent: false }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        })
          .on("error", reject)
          .end();
      });
      assert.equal(r, 200);
    } finally {
      await h.close();
    }
  });
});
