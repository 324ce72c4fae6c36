// Persistence across processes: two short-lived child processes share one encrypted file; the
// second resumes the session the first saved (TLS 1.2 and 1.3), and one with another key does not.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { fileURLToPath, pathToFileURL } from "node:url";
import { testPki } from "./support/certs.js";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const pki = testPki();

// The child: load the file, make one connection, save, print what happened.
const CHILD = `
import { ClientSessionCache, connect } from ${JSON.stringify(pathToFileURL(join(repo, "src/client/index.ts")).href)};
import { FileSessionStore } from ${JSON.stringify(pathToFileURL(join(repo, "src/stores/file-store.ts")).href)};
const { PORT, FILE, KEY, CA, MAXV } = process.env;
const cache = new ClientSessionCache({ persistence: new FileSessionStore({ path: FILE, keys: [KEY] }) });
const loaded = await cache.load();
const reused = await new Promise((resolve, reject) => {
  const s = connect({ cache, host: "127.0.0.1", port: Number(PORT), servername: "localhost", ca: CA, maxVersion: MAXV });
  let r = false;
  s.once("secureConnect", () => { r = s.isSessionReused(); });
  s.resume();
  s.once("error", reject);
  s.once("close", () => resolve(r));
});
await cache.save();
process.stdout.write(JSON.stringify({ loaded, reused, saved: cache.entries().length }));
`;

interface ChildResult {
  loaded: number;
  reused: boolean;
  saved: number;
}

function runChild(script: string, env: Record<string, string>): Promise<ChildResult> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      process.execPath,
      ["--import", "tsx", script],
      { cwd: repo, env: { ...process.env, ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`child failed: ${err.message}\n${stderr}`));
        else resolvePromise(JSON.parse(stdout) as ChildResult);
      },
    );
  });
}

describe("persistence across processes (FileSessionStore)", () => {
  let dir: string;
  let script: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "sesscache-persist-"));
    script = join(dir, "child.mts");
    writeFileSync(script, CHILD);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const v of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`${v}: the second run resumes the first run's session; another key does not`, async () => {
      const server = tls.createServer({ key: pki.key, cert: pki.cert, maxVersion: v }, (s) => {
        s.on("error", () => {});
        s.end("hi\n");
      });
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      try {
        const key = randomBytes(32).toString("base64");
        const env = {
          PORT: String((server.address() as net.AddressInfo).port),
          FILE: join(dir, `sessions-${v}.bin`),
          KEY: key,
          CA: pki.caCert,
          MAXV: v,
        };
        const first = await runChild(script, env);
        assert.deepEqual(first, { loaded: 0, reused: false, saved: v === "TLSv1.3" ? 2 : 1 });
        const second = await runChild(script, env);
        assert.equal(second.loaded, first.saved);
        assert.equal(second.reused, true);
        // TLS 1.3: the ticket used is gone from the file (single use across runs too).
        if (v === "TLSv1.3") assert.equal(second.saved, 1);
        const wrongKey = await runChild(script, { ...env, KEY: randomBytes(32).toString("base64") });
        assert.deepEqual({ loaded: wrongKey.loaded, reused: wrongKey.reused }, { loaded: 0, reused: false });
      } finally {
        server.close();
      }
    });
  }
});
