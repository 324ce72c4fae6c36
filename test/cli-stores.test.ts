// `sesscache serve --store ... / --workers N` against real parts: redis-server (and a 3-node Redis
// Cluster) started by the harness, `serve` run as child processes, openssl s_client / s_time and
// Node's tls client as peers.
import assert from "node:assert/strict";
import { type ChildProcessByStdio, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { generateSealKey, SEALED_V1 } from "../src/stores/index.js";
import { type TestPki, testPki } from "./support/certs.js";
import {
  type RedisCluster,
  type RedisServer,
  redisSkipReason,
  redisTlsSkipReason,
  startRedis,
  startRedisCluster,
} from "./support/redis.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "sesscache-stores-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

type Child = ChildProcessByStdio<null, Readable, Readable>;

interface Running {
  child: Child;
  line: string;
  port: number;
  stdout: () => string;
  stderr: () => string;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<Child>();
after(() => {
  for (const c of running) c.kill("SIGKILL");
});

function spawnServe(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(root, "src/cli/main.ts"), "serve", "--listen", "127.0.0.1:0", ...args],
    { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  running.add(child);
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  void exited.then(() => running.delete(child));
  let stderr = "";
  let stdout = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

/** Starts `sesscache serve` from source and waits for its startup line. */
async function serve(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Running> {
  const s = spawnServe(args, env);
  const line = await new Promise<string>((resolve, reject) => {
    const check = () => {
      const nl = s.stdout().indexOf("\n");
      if (nl >= 0) {
        s.child.stdout.off("data", check);
        resolve(s.stdout().slice(0, nl));
      }
    };
    s.child.stdout.on("data", check);
    void s.exited.then(([code]) =>
      reject(new Error(`serve exited (${code}) before listening: ${s.stderr()}`)),
    );
  });
  const m = /^sesscache serve: listening on https:\/\/127\.0\.0\.1:(\d+) \((?:state|cert): .+\)$/.exec(line);
  assert.ok(m, `startup line: ${line}`);
  return {
    child: s.child,
    line,
    port: Number(m[1]),
    stdout: s.stdout,
    stderr: s.stderr,
    async stop(signal = "SIGTERM") {
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill(signal);
      const killer = setTimeout(() => s.child.kill("SIGKILL"), 8000);
      const [code, sig] = await s.exited;
      clearTimeout(killer);
      return { code, signal: sig };
    },
  };
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command. With `untilStdout`, stdin stays open until stdout matches it (or 5 s pass), so
 * s_client waits for the TLS 1.3 tickets that arrive after the handshake.
 */
function run(cmd: string, args: string[], untilStdout?: RegExp): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let timer: NodeJS.Timeout | undefined;
    const endInput = () => {
      clearTimeout(timer);
      if (!child.stdin.writableEnded) child.stdin.end();
    };
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      if (untilStdout?.test(stdout)) endInput();
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.stdin.on("error", () => {});
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    if (untilStdout) timer = setTimeout(endInput, 5000);
    else child.stdin.end();
  });
}

const V13_TICKETS =
  /Post-Handshake New Session Ticket arrived:[\s\S]*Post-Handshake New Session Ticket arrived:/;

function sClient(port: number, pki: TestPki, extra: string[], untilStdout?: RegExp): Promise<RunResult> {
  return run(
    "openssl",
    [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-servername",
      "localhost",
      "-CAfile",
      pki.caFile,
      "-verify_return_error",
      ...extra,
    ],
    untilStdout,
  );
}

function outcome(r: RunResult): "New" | "Reused" {
  assert.equal(r.code, 0, r.stderr);
  const m = /^(New|Reused), TLSv1\.[23]/m.exec(r.stdout);
  assert.ok(m, `s_client said neither New nor Reused:\n${r.stdout}`);
  return m[1] as "New" | "Reused";
}

function getStats(port: number, ca: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port, path: "/stats", ca, servername: "localhost", agent: false },
      (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.on("end", () => resolve(JSON.parse(body)));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** One TLS 1.2 connection with a request; resolves with whether it resumed and its session. */
async function tls12(
  port: number,
  ca: string,
  session?: Buffer,
): Promise<{ resumed: boolean; session: Buffer | undefined }> {
  const socket = tlsConnect({
    host: "127.0.0.1",
    port,
    ca,
    servername: "localhost",
    minVersion: "TLSv1.2",
    maxVersion: "TLSv1.2",
    session,
  });
  let got: Buffer | undefined;
  socket.on("session", (s: Buffer) => (got = s));
  const timer = setTimeout(() => socket.destroy(new Error("handshake took over 10 s")), 10_000);
  try {
    await once(socket, "secureConnect");
    const resumed = socket.isSessionReused();
    socket.end("GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    socket.resume();
    await once(socket, "close");
    return { resumed, session: got ?? socket.getSession() };
  } finally {
    clearTimeout(timer);
  }
}

const bounded = async <T>(what: string, ms: number, step: () => Promise<T | undefined>): Promise<T> => {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await step();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

/**
 * `openssl s_time -reuse`: 'r' marks a resumed connection, '*' a full handshake. TLS 1.3 reads a
 * page each time (-www /) so that the new ticket arrives: each connection offers the last ticket.
 */
async function sTimeReuse(
  port: number,
  seconds: number,
  version: "1.2" | "1.3" = "1.2",
): Promise<{ reused: number; full: number; out: string }> {
  const r = await run("openssl", [
    "s_time",
    "-connect",
    `127.0.0.1:${port}`,
    version === "1.2" ? "-tls1_2" : "-tls1_3",
    "-reuse",
    "-time",
    String(seconds),
    ...(version === "1.3" ? ["-www", "/"] : []),
  ]);
  assert.equal(r.code, 0, r.stderr);
  const phase = r.stdout.split("Now timing with session id reuse.")[1] ?? "";
  // After the "starting" line (whose own 'r' must not count), up to the summary.
  const progress = (phase.split("starting\n")[1] ?? "").split(/\d+ connections in/)[0] ?? "";
  const reused = (progress.match(/r/g) ?? []).length;
  const full = (progress.match(/\*/g) ?? []).length;
  const summary = /(\d+) connections in [\d.]+s/.exec(phase);
  assert.ok(summary, `s_time output:\n${r.stdout}`);
  // The progress characters are one per connection: they must add up to s_time's own count.
  assert.equal(reused + full, Number(summary[1]), `progress vs summary:\n${r.stdout}`);
  return { reused, full, out: r.stdout };
}

const TIMEOUT = { timeout: 180_000 };
const skipRedis = redisSkipReason();
const skipRedisTls = redisTlsSkipReason();

describe("serve --store: flags", TIMEOUT, () => {
  test("a Redis store without --store-key or --store-plaintext: exit 2, one line", async () => {
    const s = spawnServe(["--store", "redis://127.0.0.1:1"], { SESSCACHE_STORE_KEYS: "" });
    const [code] = await s.exited;
    assert.equal(code, 2);
    const lines = s.stderr().trim().split("\n");
    assert.equal(lines.length, 1, s.stderr());
    assert.match(lines[0]!, /^sesscache: .*--store-key.*--store-plaintext/);
    assert.equal(s.stdout(), "");
  });

  test("bad keys, keys with --store-plaintext, --store cluster without workers, bad --store: exit 2", async () => {
    const key = generateSealKey();
    for (const [args, re] of [
      [["--store", "redis://127.0.0.1:1", "--store-key", "c2hvcnQ="], /not the base64 of 32 bytes/],
      [["--store", "redis://127.0.0.1:1", "--store-key", key, "--store-plaintext"], /not both/],
      [["--store", "cluster"], /--workers/],
      [["--store", "mongodb://x"], /invalid --store/],
      [["--store-key", key], /--store-key needs --store/],
      [["--store", "memory", "--lookup-timeout", "0"], /positive integer/],
    ] as const) {
      const s = spawnServe([...args], { SESSCACHE_STORE_KEYS: "" });
      const [code] = await s.exited;
      assert.equal(code, 2, `${args.join(" ")}: ${s.stderr()}`);
      assert.equal(s.stderr().trim().split("\n").length, 1, s.stderr());
      assert.match(s.stderr(), re);
    }
  });

  test("--store-tls-*: without a rediss store, missing or non-PEM files, a key that does not fit: exit 2, one line", async () => {
    const pki = testPki();
    const key = generateSealKey();
    const notPem = join(tmp, "not-pem.txt");
    writeFileSync(notPem, "just text\n");
    const missing = join(tmp, "missing.pem");
    const rediss = ["--store", "rediss://127.0.0.1:1", "--store-key", key];
    for (const [args, re] of [
      [
        ["--store-tls-ca", pki.caFile],
        /^sesscache: --store-tls-ca needs a TLS Redis store: --store rediss:\/\//,
      ],
      [["--store", "memory", "--store-tls-ca", pki.caFile], /--store-tls-ca needs a TLS Redis store/],
      [["--workers", "2", "--store-tls-ca", pki.caFile], /--store-tls-ca needs a TLS Redis store/],
      [
        ["--store", "redis://127.0.0.1:1", "--store-key", key, "--store-tls-ca", pki.caFile],
        /--store-tls-ca needs TLS to Redis: --store rediss:\/\/\.\.\. rather than redis:\/\//,
      ],
      [
        ["--store", "redis-cluster://127.0.0.1:1", "--store-key", key, "--store-tls-cert", pki.certFile],
        /--store-tls-cert needs TLS to Redis: --store rediss-cluster:\/\//,
      ],
      [
        [...rediss, "--store-tls-ca", missing],
        /cannot read --store-tls-ca file .*missing\.pem: no such file/,
      ],
      [[...rediss, "--store-tls-ca", notPem], /--store-tls-ca file .*not-pem\.txt is not PEM/],
      [
        [...rediss, "--store-tls-cert", pki.certFile],
        /--store-tls-cert and --store-tls-key must be given together/,
      ],
      [
        [...rediss, "--store-tls-key", pki.keyFile],
        /--store-tls-cert and --store-tls-key must be given together/,
      ],
      [
        [...rediss, "--store-tls-cert", notPem, "--store-tls-key", pki.keyFile],
        /--store-tls-cert file .*not-pem\.txt is not PEM/,
      ],
      [
        [...rediss, "--store-tls-cert", pki.certFile, "--store-tls-key", pki.certFile],
        /--store-tls-key file .* is not a PEM private key/,
      ],
      [
        [...rediss, "--store-tls-cert", pki.certFile, "--store-tls-key", join(pki.dir, "ca.key")],
        /--store-tls-key .*ca\.key does not fit --store-tls-cert .*leaf\.pem/,
      ],
    ] as const) {
      const s = spawnServe([...args], { SESSCACHE_STORE_KEYS: "" });
      const [code] = await s.exited;
      assert.equal(code, 2, `${args.join(" ")}: ${s.stderr()}`);
      assert.equal(s.stderr().trim().split("\n").length, 1, s.stderr());
      assert.match(s.stderr(), re);
      assert.equal(s.stdout(), "");
    }
  });

  test("--store memory shows in /stats, without keys", async (t) => {
    const pki = testPki();
    const s = await serve(["--cert", pki.certFile, "--key", pki.keyFile, "--store", "memory"]);
    t.after(() => s.stop());
    const st = (await getStats(s.port, pki.caCert)) as { store: Record<string, unknown> };
    assert.equal(st.store.kind, "memory");
    assert.equal(typeof st.store.gets, "number");
    assert.equal(typeof (st.store.external as Record<string, unknown>).lookups, "number");
    assert.equal((await s.stop()).code, 0);
  });
});

describe("serve --store redis://", { ...TIMEOUT, skip: skipRedis }, () => {
  let redis: RedisServer;
  let pki: TestPki;
  const key = generateSealKey();
  const oldKey = generateSealKey();
  const fleet = (ctx = "fleet-a", extra: string[] = []) =>
    serve([
      "--cert",
      pki.certFile,
      "--key",
      pki.keyFile,
      "--session-id-context",
      ctx,
      "--store",
      redis.url,
      ...extra,
    ]);

  before(async () => {
    redis = await startRedis();
    pki = testPki();
  });
  after(() => redis?.stop());

  test("TLS 1.2 and 1.3 sessions made on A resume on B; a ticket once; another context never; sealed at rest", async (t) => {
    // A gets its keys from the environment, B from flags with an old key for rotation.
    const a = await serve(
      ["--cert", pki.certFile, "--key", pki.keyFile, "--session-id-context", "fleet-a", "--store", redis.url],
      { SESSCACHE_STORE_KEYS: `${key},${oldKey}` },
    );
    t.after(() => a.stop());
    const b = await fleet("fleet-a", ["--store-key", key, "--store-key", oldKey]);
    t.after(() => b.stop());
    const c = await fleet("fleet-c", ["--store-key", key]);
    t.after(() => c.stop());

    // TLS 1.2, session ids, no tickets.
    const s12 = join(tmp, "s12.pem");
    assert.equal(outcome(await sClient(a.port, pki, ["-tls1_2", "-no_ticket", "-sess_out", s12])), "New");
    assert.equal(outcome(await sClient(b.port, pki, ["-tls1_2", "-no_ticket", "-sess_in", s12])), "Reused");
    // Another session-id context on the same Redis: refused.
    assert.equal(outcome(await sClient(c.port, pki, ["-tls1_2", "-no_ticket", "-sess_in", s12])), "New");

    // TLS 1.3 stateful tickets: wait for both tickets, then resume on B; the ticket is single-use.
    const s13 = join(tmp, "s13.pem");
    assert.equal(outcome(await sClient(a.port, pki, ["-tls1_3", "-sess_out", s13], V13_TICKETS)), "New");
    assert.equal(outcome(await sClient(b.port, pki, ["-tls1_3", "-sess_in", s13])), "Reused");
    assert.equal(outcome(await sClient(b.port, pki, ["-tls1_3", "-sess_in", s13])), "New");
    // Not even on A, which issued it and still holds a copy: the store hands a ticket over once.
    assert.equal(outcome(await sClient(a.port, pki, ["-tls1_3", "-sess_in", s13])), "New");
    // A ticket used on its own issuer first is then gone for the fleet.
    const t13 = join(tmp, "t13.pem");
    assert.equal(outcome(await sClient(a.port, pki, ["-tls1_3", "-sess_out", t13], V13_TICKETS)), "New");
    assert.equal(outcome(await sClient(a.port, pki, ["-tls1_3", "-sess_in", t13])), "Reused");
    assert.equal(outcome(await sClient(b.port, pki, ["-tls1_3", "-sess_in", t13])), "New");

    const stB = (await getStats(b.port, pki.caCert)) as { store: Record<string, number | object> };
    assert.equal(stB.store.kind, "redis");
    assert.equal(stB.store.sealed, true);
    assert.ok((stB.store.external as { found: number }).found >= 2);
    const text = JSON.stringify(stB);
    assert.equal(text.includes(key), false, "no key in /stats");
    assert.equal(text.includes(oldKey), false, "no key in /stats");

    // Values in Redis: sealed (format marker), and the TLS 1.2 master secret nowhere in them.
    const dump = await run("openssl", ["sess_id", "-in", s12, "-noout", "-text"]);
    assert.equal(dump.code, 0, dump.stderr);
    const mk = /Master-Key:\s*([0-9A-Fa-f]+)/.exec(dump.stdout);
    assert.ok(mk && mk[1]!.length >= 64, dump.stdout);
    const master = Buffer.from(mk[1]!, "hex");
    const client = new Redis(redis.port, redis.host, { lazyConnect: true });
    t.after(() => client.disconnect());
    await client.connect();
    const keys = await client.keys("*");
    assert.ok(keys.length >= 2, `keys in Redis: ${keys.length}`);
    for (const k of keys) {
      const v = await client.getBuffer(k);
      assert.ok(v && v.length > 0, k);
      assert.equal(v[0], SEALED_V1, `sealed value under ${k}`);
      assert.equal(v.includes(master), false, `master key in clear under ${k}`);
      assert.equal(v.includes(master.subarray(0, 16)), false, `master key prefix in clear under ${k}`);
    }

    for (const s of [a, b, c]) assert.equal((await s.stop()).code, 0, s.stderr());
  });

  test("--store-plaintext stores unsealed values on purpose, and they still resume", async (t) => {
    const a = await fleet("fleet-p", ["--store-plaintext"]);
    t.after(() => a.stop());
    const b = await fleet("fleet-p", ["--store-plaintext"]);
    t.after(() => b.stop());
    const first = await tls12(a.port, pki.caCert);
    assert.equal(first.resumed, false);
    assert.equal((await tls12(b.port, pki.caCert, first.session)).resumed, true);
    const st = (await getStats(b.port, pki.caCert)) as { store: { sealed: boolean } };
    assert.equal(st.store.sealed, false);
  });

  test("tampered and moved values are refused: counted as rejected, the handshake is a full one", async (t) => {
    const a = await fleet("fleet-t", ["--store-key", key]);
    t.after(() => a.stop());
    const b = await fleet("fleet-t", ["--store-key", key]);
    t.after(() => b.stop());
    const client = new Redis(redis.port, redis.host, { lazyConnect: true });
    t.after(() => client.disconnect());
    await client.connect();
    const ctxHex = Buffer.from("fleet-t").toString("hex");
    const newKey = async (before: Set<string>) =>
      bounded("the new session in Redis", 10_000, async () =>
        (await client.keys(`*:0303:${ctxHex}:*`)).find((k) => !before.has(k)),
      );

    // Tampered: one bit of the ciphertext flipped.
    const seen = new Set(await client.keys("*"));
    const one = await tls12(a.port, pki.caCert);
    const k1 = await newKey(seen);
    seen.add(k1);
    const v1 = (await client.getBuffer(k1))!;
    v1[v1.length - 20]! ^= 1;
    await client.set(k1, v1, "PX", 60_000);

    // Moved: another session's value filed under the first one's key is bound to its own id.
    const two = await tls12(a.port, pki.caCert);
    const k2 = await newKey(seen);
    const v2 = (await client.getBuffer(k2))!;
    const three = await tls12(a.port, pki.caCert);
    const k3 = await newKey(new Set([...seen, k2]));
    await client.set(k3, v2, "PX", 60_000);

    assert.equal((await tls12(b.port, pki.caCert, one.session)).resumed, false);
    assert.equal((await tls12(b.port, pki.caCert, three.session)).resumed, false);
    assert.equal(
      (await tls12(b.port, pki.caCert, two.session)).resumed,
      true,
      "the intact one still resumes",
    );
    const st = (await getStats(b.port, pki.caCert)) as {
      rejected: number;
      store: { external: { rejected: number } };
    };
    assert.equal(st.store.external.rejected, 2);
    assert.ok(st.rejected >= 2, `cache rejected: ${st.rejected}`);
  });

  test("rediss:// (TLS to Redis, CA from NODE_EXTRA_CA_CERTS)", { skip: skipRedisTls }, async (t) => {
    const secure = await startRedis({
      tls: { certFile: pki.certFile, keyFile: pki.keyFile, caFile: pki.caFile },
    });
    t.after(() => secure.stop());
    const url = secure.tlsUrl!.replace("127.0.0.1", "localhost");
    const args = ["--cert", pki.certFile, "--key", pki.keyFile, "--session-id-context", "fleet-tls"];
    const env = { NODE_EXTRA_CA_CERTS: pki.caFile };
    const a = await serve([...args, "--store", url, "--store-key", key], env);
    t.after(() => a.stop());
    const b = await serve([...args, "--store", url, "--store-key", key], env);
    t.after(() => b.stop());
    const first = await tls12(a.port, pki.caCert);
    await bounded("resumption across servers through rediss://", 10_000, async () => {
      const again = await tls12(a.port, pki.caCert);
      return (await tls12(b.port, pki.caCert, again.session)).resumed ? true : undefined;
    });
    assert.equal((await tls12(b.port, pki.caCert, first.session)).resumed, true);
    assert.doesNotMatch(a.stderr() + b.stderr(), /store:/, "no connection errors");
  });

  test("Redis made slow (DEBUG SLEEP): a look-up waits no longer than --lookup-timeout, then a full handshake", async (t) => {
    const a = await fleet("fleet-s", ["--store-key", key, "--lookup-timeout", "50"]);
    t.after(() => a.stop());
    const b = await fleet("fleet-s", ["--store-key", key, "--lookup-timeout", "50"]);
    t.after(() => b.stop());
    const client = new Redis(redis.port, redis.host, { lazyConnect: true, commandTimeout: 200 });
    const sleeper = new Redis(redis.port, redis.host, { lazyConnect: true });
    t.after(() => {
      client.disconnect();
      sleeper.disconnect();
    });
    await Promise.all([client.connect(), sleeper.connect()]);
    const keysBefore = await client.dbsize();
    const first = await tls12(a.port, pki.caCert);
    // The background write has landed: the session is there to be looked up.
    await bounded("the session reaches Redis", 10_000, async () =>
      (await client.dbsize()) > keysBefore ? true : undefined,
    );
    const sleeping = sleeper.call("DEBUG", "SLEEP", "3");
    // Redis is asleep once a PING times out.
    await bounded("Redis asleep", 10_000, () =>
      client.ping().then(
        () => undefined,
        () => true,
      ),
    );
    const started = performance.now();
    const second = await tls12(b.port, pki.caCert, first.session);
    const took = performance.now() - started;
    assert.equal(second.resumed, false, "a late answer is a miss");
    assert.ok(took < 1500, `the handshake took ${Math.round(took)} ms while Redis slept 3 s`);
    await sleeping;
    const st = (await getStats(b.port, pki.caCert)) as { store: { external: { timeouts: number } } };
    assert.ok(st.store.external.timeouts >= 1, JSON.stringify(st.store));
    // Awake again: the next look-up finds sessions.
    const third = await tls12(a.port, pki.caCert);
    await bounded("resumption after the sleep", 10_000, async () =>
      (await tls12(b.port, pki.caCert, third.session)).resumed ? true : undefined,
    );
  });

  test("--workers 2 with --store redis: a session made on the workers resumes on a single server", async (t) => {
    const w = await fleet("fleet-w", ["--store-key", key, "--workers", "2"]);
    t.after(() => w.stop());
    const single = await fleet("fleet-w", ["--store-key", key]);
    t.after(() => single.stop());
    const st = (await getStats(w.port, pki.caCert)) as { store: { kind: string } };
    assert.equal(st.store.kind, "redis");
    const first = await tls12(w.port, pki.caCert);
    assert.equal((await tls12(single.port, pki.caCert, first.session)).resumed, true);
    const back = await tls12(single.port, pki.caCert);
    assert.equal((await tls12(w.port, pki.caCert, back.session)).resumed, true);
    assert.equal((await w.stop()).code, 0, w.stderr());
  });

  test("--workers 2 with --store redis: every TLS 1.3 ticket resumes on the other worker", async (t) => {
    // Round-robin gives each connection to the other worker: every resumption offers a ticket the
    // other process issued a moment before. Its SET leaves before the ticket does, so Redis always
    // has it when the GETDEL comes (a generous look-up deadline keeps a loaded machine out of it).
    const w = await fleet("fleet-w13", ["--store-key", key, "--workers", "2", "--lookup-timeout", "2000"]);
    t.after(() => w.stop());
    const { reused, full, out } = await sTimeReuse(w.port, 3, "1.3");
    t.diagnostic(`--workers 2, TLS 1.3: ${reused}/${reused + full} reuse attempts resumed`);
    assert.ok(reused + full >= 50, `only ${reused + full} connections:\n${out}`);
    assert.equal(full, 0, `full handshakes among ${reused + full} reuse attempts`);
    assert.equal((await w.stop()).code, 0, w.stderr());
  });

  test("Redis killed mid-stream: zero failed handshakes; resumption returns after a restart", async (t) => {
    const a = await fleet("fleet-k", ["--store-key", key]);
    t.after(() => a.stop());
    const b = await fleet("fleet-k", ["--store-key", key]);
    t.after(() => b.stop());
    let failures = 0;
    let resumedBefore = 0;
    let handshakes = 0;
    const errors: string[] = [];
    for (let i = 0; i < 40; i++) {
      if (i === 10) await redis.kill();
      try {
        // A new session on A, offered to B: B's look-up goes to the store (up or down).
        const first = await tls12(a.port, pki.caCert);
        handshakes++;
        const second = await tls12(b.port, pki.caCert, first.session);
        handshakes++;
        if (i < 10 && second.resumed) resumedBefore++;
      } catch (err) {
        failures++;
        errors.push((err as Error).message);
      }
    }
    assert.equal(failures, 0, errors.join("; "));
    assert.equal(handshakes, 80);
    assert.ok(resumedBefore >= 9, `resumed across servers before the kill: ${resumedBefore}/10`);

    await redis.restart();
    const tries = await bounded("resumption across servers after the restart", 30_000, async () => {
      const first = await tls12(a.port, pki.caCert);
      const second = await tls12(b.port, pki.caCert, first.session);
      return second.resumed ? true : undefined;
    });
    assert.equal(tries, true);
    const st = (await getStats(b.port, pki.caCert)) as { store: { errors: number } };
    assert.ok(st.store.errors >= 1, "the outage was counted");
    assert.equal((await a.stop()).code, 0, a.stderr());
    assert.equal((await b.stop()).code, 0, b.stderr());
  });
});

describe("serve --store rediss:// with --store-tls-ca, --store-tls-cert, --store-tls-key", {
  ...TIMEOUT,
  skip: skipRedisTls,
}, () => {
  let secure: RedisServer;
  let mutual: RedisServer;
  let pki: TestPki;
  const key = generateSealKey();
  // Trust comes from the flags alone: nothing inherited from the test's environment.
  const noExtraCa = { NODE_EXTRA_CA_CERTS: undefined };
  const tlsServe = (url: string, ctx: string, extra: string[] = []) =>
    serve(
      [
        "--cert",
        pki.certFile,
        "--key",
        pki.keyFile,
        "--session-id-context",
        ctx,
        "--store",
        url,
        "--store-key",
        key,
        ...extra,
      ],
      noExtraCa,
    );

  before(async () => {
    pki = testPki();
    const files = { certFile: pki.certFile, keyFile: pki.keyFile, caFile: pki.caFile };
    secure = await startRedis({ tls: files });
    mutual = await startRedis({ tls: { ...files, authClients: true } });
  });
  after(async () => {
    await secure?.stop();
    await mutual?.stop();
  });

  test("--store-tls-ca: two servers share a TLS 1.2 session through rediss://", async (t) => {
    const a = await tlsServe(secure.tlsUrl!, "fleet-tls-ca", ["--store-tls-ca", pki.caFile]);
    t.after(() => a.stop());
    const b = await tlsServe(secure.tlsUrl!, "fleet-tls-ca", ["--store-tls-ca", pki.caFile]);
    t.after(() => b.stop());
    const first = await tls12(a.port, pki.caCert);
    assert.equal(first.resumed, false);
    // The session reaches Redis in the background: B may look before it lands, never after.
    await bounded("resumption on B of a session made on A", 10_000, async () =>
      (await tls12(b.port, pki.caCert, first.session)).resumed ? true : undefined,
    );
    const back = await tls12(b.port, pki.caCert);
    await bounded("resumption on A of a session made on B", 10_000, async () =>
      (await tls12(a.port, pki.caCert, back.session)).resumed ? true : undefined,
    );
    const st = (await getStats(b.port, pki.caCert)) as {
      store: { kind: string; target: string; errors: number; external: { found: number } };
    };
    assert.equal(st.store.kind, "redis");
    assert.equal(st.store.target, secure.tlsUrl);
    assert.equal(st.store.errors, 0);
    assert.ok(st.store.external.found >= 1);
    assert.doesNotMatch(a.stderr() + b.stderr(), /store:/, "no connection errors");
    assert.equal((await a.stop()).code, 0, a.stderr());
    assert.equal((await b.stop()).code, 0, b.stderr());
  });

  test("without --store-tls-ca the store connection fails: handshakes still succeed, as full ones", async (t) => {
    const a = await tlsServe(secure.tlsUrl!, "fleet-tls-none");
    t.after(() => a.stop());
    const b = await tlsServe(secure.tlsUrl!, "fleet-tls-none");
    t.after(() => b.stop());
    for (let i = 0; i < 3; i++) {
      const first = await tls12(a.port, pki.caCert);
      assert.equal(first.resumed, false);
      assert.equal((await tls12(b.port, pki.caCert, first.session)).resumed, false, "nothing is shared");
      // Each server still resumes its own sessions from memory.
      assert.equal((await tls12(a.port, pki.caCert, first.session)).resumed, true);
    }
    for (const s of [a, b]) {
      assert.match(s.stderr(), /sesscache serve: store: connection: .*certificate/, s.stderr());
      assert.match(s.stderr(), /Redis not reachable yet/, s.stderr());
    }
    const st = (await getStats(b.port, pki.caCert)) as { store: { external: { found: number } } };
    assert.equal(st.store.external.found, 0);
  });

  test("mutual TLS: --store-tls-cert/--store-tls-key reach every --workers worker; without them Redis refuses", async (t) => {
    const flags = [
      "--store-tls-ca",
      pki.caFile,
      "--store-tls-cert",
      pki.certFile,
      "--store-tls-key",
      pki.keyFile,
    ];
    const w = await tlsServe(mutual.tlsUrl!, "fleet-mtls", [...flags, "--workers", "2"]);
    t.after(() => w.stop());
    const single = await tlsServe(mutual.tlsUrl!, "fleet-mtls", flags);
    t.after(() => single.stop());
    // Several sessions each way, so both workers look up and write through their own connection.
    const workersSeen = new Set<number>();
    for (let i = 0; i < 6; i++) {
      const made = await tls12(w.port, pki.caCert);
      await bounded(`session ${i} from the workers resumes on the single server`, 10_000, async () =>
        (await tls12(single.port, pki.caCert, made.session)).resumed ? true : undefined,
      );
      const back = await tls12(single.port, pki.caCert);
      await bounded(`session ${i} from the single server resumes on the workers`, 10_000, async () =>
        (await tls12(w.port, pki.caCert, back.session)).resumed ? true : undefined,
      );
    }
    // Round robin hands /stats to each worker in turn: both connected, neither saw an error.
    await bounded("/stats from both workers", 10_000, async () => {
      const st = (await getStats(w.port, pki.caCert)) as { worker: number; store: { errors: number } };
      assert.equal(st.store.errors, 0, `worker ${st.worker}`);
      workersSeen.add(st.worker);
      return workersSeen.size === 2 ? true : undefined;
    });
    assert.doesNotMatch(w.stderr() + single.stderr(), /store:/, "no connection errors");
    assert.equal((await w.stop()).code, 0, w.stderr());

    // The CA alone is not enough for a Redis that asks for a client certificate.
    const anonymous = await tlsServe(mutual.tlsUrl!, "fleet-mtls", ["--store-tls-ca", pki.caFile]);
    t.after(() => anonymous.stop());
    const made = await tls12(single.port, pki.caCert);
    await bounded("the session reaches Redis", 10_000, async () =>
      (await tls12(single.port, pki.caCert, made.session)).resumed ? true : undefined,
    );
    assert.equal((await tls12(anonymous.port, pki.caCert, made.session)).resumed, false);
    assert.match(anonymous.stderr(), /sesscache serve: store: /, anonymous.stderr());
  });
});

describe("serve --store rediss-cluster:// with --store-tls-ca", { ...TIMEOUT, skip: skipRedisTls }, () => {
  let cluster: RedisCluster;
  let pki: TestPki;
  before(async () => {
    pki = testPki();
    cluster = await startRedisCluster(3, 30_000, {
      certFile: pki.certFile,
      keyFile: pki.keyFile,
      caFile: pki.caFile,
    });
  });
  after(() => cluster?.stop());

  test("two servers share TLS 1.2 sessions through a 3-node Redis Cluster over TLS", async (t) => {
    const args = [
      "--cert",
      pki.certFile,
      "--key",
      pki.keyFile,
      "--session-id-context",
      "fleet-rcs",
      // One seed: the other nodes are found through it and reached with the same TLS options.
      "--store",
      `rediss-cluster://${cluster.tlsSeeds![0]}`,
      "--store-key",
      generateSealKey(),
      "--store-tls-ca",
      pki.caFile,
    ];
    const a = await serve(args, { NODE_EXTRA_CA_CERTS: undefined });
    t.after(() => a.stop());
    const b = await serve(args, { NODE_EXTRA_CA_CERTS: undefined });
    t.after(() => b.stop());
    for (let i = 0; i < 6; i++) {
      const first = await tls12(a.port, pki.caCert);
      assert.equal(first.resumed, false);
      await bounded(`session ${i} resumes on B`, 10_000, async () =>
        (await tls12(b.port, pki.caCert, first.session)).resumed ? true : undefined,
      );
    }
    // The sessions are spread over the nodes: every node was written to over TLS.
    const sizes = await Promise.all(cluster.nodes.map(async (n) => Number((await n.cli("dbsize")).trim())));
    assert.ok(sizes.filter((n) => n > 0).length >= 2, `sessions on more than one node: ${sizes.join(",")}`);
    const st = (await getStats(b.port, pki.caCert)) as { store: { kind: string; errors: number } };
    assert.equal(st.store.kind, "redis-cluster");
    assert.equal(st.store.errors, 0);
    assert.doesNotMatch(a.stderr() + b.stderr(), /store:/, "no connection errors");
    assert.equal((await a.stop()).code, 0, a.stderr());
    assert.equal((await b.stop()).code, 0, b.stderr());
  });
});

describe("serve --workers", TIMEOUT, () => {
  for (const workers of [2, 4]) {
    test(`--workers ${workers}: one startup line, >= 99% of s_time -reuse attempts resumed, SIGTERM exits 0`, async (t) => {
      const pki = testPki();
      const s = await serve(["--cert", pki.certFile, "--key", pki.keyFile, "--workers", String(workers)]);
      try {
        const st = (await getStats(s.port, pki.caCert)) as { store: { kind: string }; worker: number };
        assert.equal(st.store.kind, "cluster");
        assert.equal(typeof st.worker, "number");
        const { reused, full } = await sTimeReuse(s.port, 3);
        const ratio = reused / (reused + full);
        t.diagnostic(
          `--workers ${workers}: ${reused}/${reused + full} reuse attempts resumed (${(100 * ratio).toFixed(2)}%)`,
        );
        assert.ok(reused + full >= 50, `only ${reused + full} connections`);
        assert.ok(ratio >= 0.99, `resumed ${reused} of ${reused + full}`);
        // s_time offers one session throughout: a stricter count offers each new session once, on
        // the next connection, which round-robin scheduling gives to another worker.
        let fresh = 0;
        const pairs = 100;
        for (let i = 0; i < pairs; i++) {
          const first = await tls12(s.port, pki.caCert);
          if ((await tls12(s.port, pki.caCert, first.session)).resumed) fresh++;
        }
        t.diagnostic(`--workers ${workers}: ${fresh}/${pairs} new sessions resumed on the next connection`);
        assert.ok(fresh >= 99, `resumed ${fresh} of ${pairs} new sessions`);
      } finally {
        const { code, signal } = await s.stop();
        assert.equal(code, 0, s.stderr());
        assert.equal(signal, null);
      }
      assert.equal(s.stdout().trim().split("\n").length, 1, `stdout:\n${s.stdout()}`);
      assert.match(s.stderr(), /SIGTERM: shutting down/);
    });
  }
});

describe("serve --store redis-cluster://", { ...TIMEOUT, skip: skipRedis }, () => {
  let cluster: RedisCluster;
  before(async () => {
    cluster = await startRedisCluster();
  });
  after(() => cluster?.stop());

  test("two servers share TLS 1.2 sessions through a 3-node Redis Cluster", async (t) => {
    const pki = testPki();
    const key = generateSealKey();
    const args = [
      "--cert",
      pki.certFile,
      "--key",
      pki.keyFile,
      "--session-id-context",
      "fleet-rc",
      "--store",
      `redis-cluster://${cluster.seeds.join(",")}`,
      "--store-key",
      key,
    ];
    const a = await serve(args);
    t.after(() => a.stop());
    const b = await serve(args);
    t.after(() => b.stop());
    // Several sessions, so more than one node holds one.
    for (let i = 0; i < 5; i++) {
      const first = await tls12(a.port, pki.caCert);
      assert.equal(first.resumed, false);
      assert.equal((await tls12(b.port, pki.caCert, first.session)).resumed, true, `session ${i}`);
    }
    const st = (await getStats(b.port, pki.caCert)) as { store: { kind: string } };
    assert.equal(st.store.kind, "redis-cluster");
    assert.equal((await a.stop()).code, 0, a.stderr());
    assert.equal((await b.stop()).code, 0, b.stderr());
  });
});
