// The `sesscache` command as a process: --version, --help, and the error contract (one line on
// stderr starting "sesscache: ", exit code 2, never a stack trace).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { testPki } from "./support/certs.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
const tmp = mkdtempSync(join(tmpdir(), "sesscache-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI from source (no build needed) to completion. */
function cli(args: string[], entry = ["--import", "tsx", join(root, "src/cli/main.ts")]): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...entry, ...args], {
      cwd: root,
      env: { ...process.env, SESSCACHE_STATE_DIR: join(tmp, "state") },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** The error contract: exit 2, nothing on stdout, exactly one "sesscache: " line, no stack. */
function assertUsageError(r: Result, pattern?: RegExp): void {
  assert.equal(r.code, 2, `exit code, stderr: ${r.stderr}`);
  assert.equal(r.stdout, "");
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0]!, /^sesscache: \S/);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  if (pattern) assert.match(lines[0]!, pattern);
}

const TIMEOUT = { timeout: 180_000 };

describe("sesscache --version / --help", TIMEOUT, () => {
  test("--version prints package.json's version", async () => {
    const r = await cli(["--version"]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), pkg.version);
  });

  test("--help lists serve and exits 0", async () => {
    const r = await cli(["--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Usage: sesscache/);
    assert.match(r.stdout, /^\s+serve\b/m);
  });

  test("serve --help lists every flag", async () => {
    const r = await cli(["serve", "--help"]);
    assert.equal(r.code, 0);
    for (const flag of [
      "--listen",
      "--cert",
      "--key",
      "--state-dir",
      "--session-id-context",
      "--tickets",
      "--mode",
      "--timeout",
      "--cache-size",
    ]) {
      assert.ok(r.stdout.includes(flag), flag);
    }
  });

  test("no command: help on stderr, exit 2", async () => {
    const r = await cli([]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Usage: sesscache/);
  });

  test("bin/sesscache.js --version runs the build in dist/", {
    skip: existsSync(join(root, "dist/cli/main.js")) ? false : "dist/cli/main.js not built (npm run build)",
  }, async () => {
    const r = await cli(["--version"], [join(root, "bin/sesscache.js")]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), pkg.version);
  });
});

describe("usage errors: one line, exit 2, no stack", TIMEOUT, () => {
  const cases: [string, string[], RegExp][] = [
    ["unknown flag", ["serve", "--bogus"], /unknown option '--bogus'/],
    [
      "misspelt flag gets a suggestion on the same line",
      ["serve", "--lisen", "1"],
      /Did you mean --listen\?/,
    ],
    ["unknown command", ["bogus"], /unknown command 'bogus'/],
    ["an argument serve does not take", ["serve", "extra"], /too many arguments/],
    ["--tickets neither on nor off", ["serve", "--tickets", "maybe"], /--tickets.*'maybe'/],
    ["--listen without a port", ["serve", "--listen", "localhost"], /--listen.*HOST:PORT/],
    ["--listen with a port out of range", ["serve", "--listen", "127.0.0.1:70000"], /out of range/],
    ["--listen with a bare IPv6 address", ["serve", "--listen", "::1:8443"], /brackets/],
    ["--timeout negative", ["serve", "--timeout", "-1"], /--timeout/],
    ["--cache-size not a number", ["serve", "--cache-size", "lots"], /--cache-size/],
    ["--listen missing its value", ["serve", "--listen"], /argument missing/],
    [
      "--mode with an unknown name",
      ["serve", "--listen", "127.0.0.1:0", "--mode", "server,bogus"],
      /--mode.*bogus/,
    ],
    [
      "--session-id-context over 32 bytes",
      ["serve", "--listen", "127.0.0.1:0", "--session-id-context", "x".repeat(33)],
      /--session-id-context/,
    ],
    ["--cert without --key", ["serve", "--listen", "127.0.0.1:0", "--cert", "x.pem"], /--cert and --key/],
  ];
  for (const [name, args, pattern] of cases) {
    test(name, async () => assertUsageError(await cli(args), pattern));
  }
});

describe("environment errors: one line, exit 2, no stack", TIMEOUT, () => {
  test("unreadable certificate file", async () => {
    const missing = join(tmp, "missing-cert.pem");
    const r = await cli(["serve", "--listen", "127.0.0.1:0", "--cert", missing, "--key", missing]);
    assertUsageError(r, /cannot read certificate file .*missing-cert\.pem: no such file or directory/);
  });

  test("certificate file that is not PEM", async () => {
    const junk = join(tmp, "junk.pem");
    writeFileSync(junk, "not a certificate\n");
    const r = await cli(["serve", "--listen", "127.0.0.1:0", "--cert", junk, "--key", junk]);
    assertUsageError(r, /not PEM/);
  });

  test("key that does not match the certificate", async () => {
    const pki = testPki();
    const otherKey = join(pki.dir, "ca.key");
    const r = await cli(["serve", "--listen", "127.0.0.1:0", "--cert", pki.certFile, "--key", otherKey]);
    assertUsageError(r, /invalid certificate or key/);
  });

  describe("busy port", () => {
    let blocker: Server;
    let port: number;
    before(async () => {
      blocker = createServer();
      await new Promise<void>((ok) => blocker.listen(0, "127.0.0.1", ok));
      port = (blocker.address() as { port: number }).port;
    });
    after(() => blocker.close());

    test("exits 2 saying the address is in use", async () => {
      const r = await cli(["serve", "--listen", `127.0.0.1:${port}`, "--state-dir", join(tmp, "busy")]);
      assertUsageError(r, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: address already in use`));
    });
  });

  test("state directory that cannot be created", async () => {
    const file = join(tmp, "plain-file");
    writeFileSync(file, "");
    const r = await cli(["serve", "--listen", "127.0.0.1:0", "--state-dir", join(file, "state")]);
    assertUsageError(r, /state directory/);
  });
});
