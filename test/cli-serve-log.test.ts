// `sesscache serve --log-format`: the logger's two formats, and a real serve run in JSON through
// TLS 1.2 and 1.3 handshakes with a store that is down (errors logged), whose stderr must be one
// JSON object per line and hold nothing of the sessions the client received.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import { createLogger } from "../src/cli/logger.js";
import { parseSession, sessionMasterKey } from "../src/session/parse.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "sesscache-serve-log-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("createLogger", () => {
  test("text: the prefixed message as before; adapter lines as they come", () => {
    const lines: string[] = [];
    const log = createLogger({ write: (l) => lines.push(l) });
    log.info("SIGTERM: shutting down", { signal: "SIGTERM" });
    log.adapter("sesscache: session look-up failed: down");
    assert.deepEqual(lines, [
      "sesscache serve: SIGTERM: shutting down\n",
      "sesscache: session look-up failed: down\n",
    ]);
  });

  test("json: time, level, msg first, then base and fields; none overwritten", () => {
    const lines: string[] = [];
    const log = createLogger({
      format: "json",
      write: (l) => lines.push(l),
      base: { worker: 2 },
      now: () => new Date(0),
    });
    log.warn("worker 3 exited (1)", { exit: 1, msg: "spoof", level: "x", skipped: undefined });
    log.adapter("sesscache serve: store: Redis not reachable yet (connecting)", { status: "connecting" });
    assert.deepEqual(
      lines.map((l) => JSON.parse(l)),
      [
        { time: "1970-01-01T00:00:00.000Z", level: "warn", msg: "worker 3 exited (1)", worker: 2, exit: 1 },
        {
          time: "1970-01-01T00:00:00.000Z",
          level: "warn",
          msg: "store: Redis not reachable yet (connecting)",
          worker: 2,
          source: "adapter",
          status: "connecting",
        },
      ],
    );
    assert.ok(lines.every((l) => l.endsWith("}\n") && !l.slice(0, -1).includes("\n")));
  });
});

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = netServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const { port } = s.address() as { port: number };
  s.close();
  await once(s, "close");
  return port;
}

function spawnServe(args: string[]) {
  return spawn(process.execPath, ["--import", "tsx", join(root, "src/cli/main.ts"), "serve", ...args], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** One handshake and request; resolves with the session the client received, if any. */
async function handshake(
  port: number,
  ca: string,
  version: "TLSv1.2" | "TLSv1.3",
  session?: Buffer,
): Promise<{ session: Buffer | undefined; resumed: boolean }> {
  const socket = tlsConnect({
    host: "127.0.0.1",
    port,
    ca,
    servername: "localhost",
    minVersion: version,
    maxVersion: version,
    session,
  });
  let got: Buffer | undefined;
  socket.on("session", (s: Buffer) => (got ??= s));
  await once(socket, "secureConnect");
  const resumed = socket.isSessionReused();
  socket.end("GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  socket.resume();
  await once(socket, "close");
  return { session: got ?? socket.getSession(), resumed };
}

describe("sesscache serve --log-format", { timeout: 60_000 }, () => {
  test("a bad value is a one-line usage error, exit 2", async () => {
    const child = spawnServe(["--log-format", "xml"]);
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const [code] = await once(child, "exit");
    assert.equal(code, 2);
    assert.match(stderr, /^sesscache: .*--log-format.*'xml'.*text or json\n$/);
  });

  test("json: every stderr line is a JSON object without session ids, keys or bytes", async () => {
    const stateDir = join(tmp, "state");
    const child = spawnServe([
      "--listen",
      "127.0.0.1:0",
      "--state-dir",
      stateDir,
      "--log-format",
      "json",
      // A Redis that is not there: the store's errors are logged, handshakes go on.
      "--store",
      `redis://127.0.0.1:${await closedPort()}`,
      "--store-plaintext",
    ]);
    const exited = once(child, "exit");
    try {
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      let stdout = "";
      child.stdout.setEncoding("utf8");
      const line = await new Promise<string>((resolve, reject) => {
        child.stdout.on("data", (d: string) => {
          stdout += d;
          if (stdout.includes("\n")) resolve(stdout.slice(0, stdout.indexOf("\n")));
        });
        void exited.then(([code]) => reject(new Error(`serve exited (${code}): ${stderr}`)));
      });
      const port = Number(/:(\d+) \(/.exec(line)?.[1]);
      assert.ok(port > 0, line);
      const ca = readFileSync(join(stateDir, "tls", "cert.pem"), "utf8");

      const secrets: string[] = [];
      for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
        const first = await handshake(port, ca, version);
        assert.ok(first.session, `${version}: a session`);
        const second = await handshake(port, ca, version, first.session);
        // TLS 1.2 resumes from the local cache; a TLS 1.3 ticket must be claimed in the store, down.
        if (version === "TLSv1.2") assert.equal(second.resumed, true, "TLS 1.2 resumes");
        for (const der of [first.session, second.session]) {
          if (!der) continue;
          const s = parseSession(der);
          const key = sessionMasterKey(s);
          assert.ok(key.length >= 32, `${version}: a master key or PSK`);
          secrets.push(Buffer.from(key).toString("hex"), Buffer.from(key).toString("base64"));
          if (s.id.length > 0) secrets.push(Buffer.from(s.id).toString("hex"));
          if (s.ticket?.length) secrets.push(Buffer.from(s.ticket).toString("hex"));
          secrets.push(der.toString("hex"), der.toString("base64"));
        }
      }

      child.kill("SIGTERM");
      const [code] = await exited;
      assert.equal(code, 0, stderr);

      const lines = stderr.split("\n");
      assert.equal(lines.pop(), "", "ends with a newline");
      const records = lines.map((l) => {
        const r = JSON.parse(l) as Record<string, unknown>;
        assert.equal(typeof r.msg, "string", l);
        assert.ok(["info", "warn", "error"].includes(r.level as string), l);
        assert.equal(new Date(r.time as string).toISOString(), r.time, l);
        return r;
      });
      for (const secret of secrets) {
        const lower = stderr.toLowerCase();
        assert.ok(!lower.includes(secret.toLowerCase()), `stderr holds session material: ${secret}`);
      }
      assert.ok(
        records.some((r) => r.msg === "listening" && r.port === port),
        stderr,
      );
      assert.ok(
        records.some((r) => r.store === "redis" && r.level === "warn"),
        `a store problem, with its store field: ${stderr}`,
      );
      assert.ok(
        records.some((r) => r.signal === "SIGTERM"),
        stderr,
      );
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  });
});
