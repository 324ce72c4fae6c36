// The secrets audit's hook and scanner (reliability/secrets-hook.mjs, secrets-scan.ts), CI-sized: the
// hook, loaded here and (through NODE_OPTIONS) in a spawned `serve --metrics`, records the secrets of
// real TLS 1.2 and 1.3 handshakes, resumed ones included, on both sides; the scan of everything that
// run printed (serve's own stdout/stderr, /stats, /metrics) finds none of them; a planted leak (hex
// upper-case, base64url inside a longer blob) is found and named without its value; a PEM session
// file is excluded as asked for. The full audit (`npm run secrets-audit`) runs the whole suite.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { get as httpGet } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import tls from "node:tls";
import { fileURLToPath, pathToFileURL } from "node:url";
import { describe as describeMatch, loadSecrets, scan } from "../reliability/secrets-scan.js";
import { startServeProcess } from "./support/serve-process.js";

const dir = mkdtempSync(join(tmpdir(), "sesscache-secrets-"));
const secretsDir = join(dir, "secrets");
const outputs = join(dir, "outputs");
mkdirSync(secretsDir);
mkdirSync(outputs);
after(() => rmSync(dir, { recursive: true, force: true }));
const hook = fileURLToPath(new URL("../reliability/secrets-hook.mjs", import.meta.url));

function fetchText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    httpGet(url, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}

/** GET /stats over TLS, offering `session`: the body, whether it resumed, the last session given. */
function getStats(port: number, ca: string, version: "TLSv1.2" | "TLSv1.3", session?: Buffer) {
  return new Promise<{ body: string; reused: boolean; session: Buffer | undefined }>((resolve, reject) => {
    let latest: Buffer | undefined;
    let body = "";
    let reused = false;
    const s = tls.connect({
      port,
      host: "127.0.0.1",
      ca,
      servername: "localhost",
      session,
      minVersion: version,
      maxVersion: version,
    });
    s.on("session", (b: Buffer) => (latest = b));
    s.once("secureConnect", () => {
      reused = s.isSessionReused();
      s.write("GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    });
    s.setEncoding("utf8").on("data", (d: string) => (body += d));
    s.once("error", reject);
    s.once("close", () => resolve({ body, reused, session: latest }));
  });
}

test("hook + scanner: a real serve run leaks nothing, a planted leak is found", {
  timeout: 60_000,
}, async () => {
  process.env.SESSCACHE_SECRETS_DIR = secretsDir;
  process.env.SESSCACHE_OUTPUTS_DIR = outputs;
  // This process (the clients). A module instance of its own (the query), so that under the full
  // audit, whose NODE_OPTIONS loaded the hook already with the audit's directories, this one still
  // records into the test's.
  await import(`${pathToFileURL(hook).href}?test`);
  const stateDir = join(dir, "state");
  const serve = await startServeProcess({
    stateDir,
    args: ["--metrics", "127.0.0.1:0"],
    env: { ...process.env, NODE_OPTIONS: `--import ${hook}` },
  });
  try {
    const port = serve.port;
    const metricsUrl = (await serve.waitForOutput(/metrics on (http:\S+)/))[1]!;
    const ca = readFileSync(join(stateDir, "tls", "cert.pem"), "utf8");
    let resumed = 0;
    for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
      let session: Buffer | undefined;
      for (let i = 0; i < 3; i++) {
        const r = await getStats(port, ca, version, session);
        assert.match(r.body, /^HTTP\/1\.1 200/);
        writeFileSync(join(outputs, `stats-${version}-${i}.txt`), r.body);
        if (r.reused) resumed++;
        session = r.session ?? session;
      }
    }
    assert.ok(resumed >= 4, `resumed ${resumed} of 6`);
    writeFileSync(join(outputs, "metrics.txt"), await fetchText(metricsUrl));
  } finally {
    await serve.stop();
  }

  // Recorded: by this process and by serve, keylog secrets and session master keys of both versions.
  const files = readdirSync(secretsDir);
  assert.ok(files.length >= 2, `secrets recorded by ${files.length} process(es)`);
  const secrets = loadSecrets(secretsDir);
  const kinds = new Set(secrets.map((s) => s.kind));
  for (const k of ["CLIENT_RANDOM", "SERVER_TRAFFIC_SECRET_0", "SESSION_MASTER_KEY", "ID"]) {
    assert.ok(kinds.has(k), `recorded ${k}`);
  }
  assert.ok(
    readdirSync(outputs).some((f) => f.startsWith("proc-")),
    "serve's output copied",
  );

  const clean = scan(secretsDir, [outputs], dir);
  assert.ok(clean.files >= 8 && clean.bytes > 1000, `scanned ${clean.files} files`);
  assert.deepEqual(clean.leaks.map(describeMatch), []);

  // Planted: a master secret in upper-case hex inside a log line, a PSK as base64url at an odd
  // offset inside a longer blob, and a master key inside a PEM session block (excluded).
  const master = secrets.find((s) => s.kind === "CLIENT_RANDOM")!;
  const psk = secrets.filter((s) => s.kind === "SESSION_MASTER_KEY").at(-1)!;
  const leak = join(dir, "planted");
  mkdirSync(leak);
  writeFileSync(
    join(leak, "app.log"),
    `ok\nerror: handshake failed key=${master.bytes.toString("hex").toUpperCase()}!\n`,
  );
  const blob = Buffer.concat([Buffer.from([7]), psk.bytes, Buffer.alloc(5)]).toString("base64url");
  writeFileSync(join(leak, "dump.json"), `{"a":1,\n"blob":"${blob}"}\n`);
  const pem = `-----BEGIN SSL SESSION PARAMETERS-----\n${Buffer.concat([Buffer.alloc(4), master.bytes]).toString("base64")}\n-----END SSL SESSION PARAMETERS-----\n`;
  writeFileSync(join(leak, "sess.pem"), pem);
  const found = scan(secretsDir, [leak], dir);
  const lines = found.leaks.map(describeMatch).sort();
  assert.deepEqual(lines, [
    "planted/app.log:2: CLIENT_RANDOM as hex",
    `planted/dump.json:2: SESSION_MASTER_KEY as base64`,
  ]);
  assert.equal(found.excluded.length, 1);
  assert.match(
    describeMatch(found.excluded[0]!),
    /^planted\/sess\.pem:2: CLIENT_RANDOM as base64 — excluded: a PEM session/,
  );
  // The report never carries a value.
  const text = JSON.stringify(found);
  for (const s of [master, psk]) {
    assert.ok(
      !text.includes(s.bytes.toString("hex")) && !text.includes(s.bytes.toString("base64").slice(0, 24)),
    );
  }
});
