// `sesscache bench` run as a user would (a child process): short --count runs against nginx and
// `sesscache serve` on 127.0.0.1, a server that resumes nothing (exit 1), a closed port, bad usage,
// and the progress line (on a terminal only: under `script`, never when piped or with --json).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import type { BenchReport } from "../src/cli/bench.js";
import { testPki } from "./support/certs.js";
import {
  assertOneLineError,
  cli,
  entry,
  pythonTlsSkipReason,
  resettingFront,
  runProcess,
  startPythonTlsServer,
  startServeChild,
} from "./support/cli-run.js";
import { freePort, type Nginx, nginxSkipReason, startNginx } from "./support/nginx.js";
import { have, listenLocal, trackConnections } from "./support/tls-peers.js";

const pki = testPki();
const tmp = mkdtempSync(join(tmpdir(), "sesscache-bench-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const TIMEOUT = { timeout: 60_000 };
const trust = ["--ca", pki.caFile, "--servername", "localhost"];

function assertSane(report: BenchReport, count: number): void {
  for (const phase of [report.full, report.resumed]) {
    assert.equal(phase.handshakes + phase.errors, count);
    assert.equal(phase.attempts, count);
    assert.ok(phase.handshakeSeconds > 0 && phase.handshakeSeconds <= phase.seconds);
    assert.ok(phase.handshakesPerSecond > 0, `rate ${phase.handshakesPerSecond}`);
    assert.ok(phase.latencyMs, "latencies");
    assert.ok(phase.latencyMs.p50 > 0 && phase.latencyMs.p50 <= phase.latencyMs.p99);
    assert.ok(phase.latencyMs.p99 <= phase.latencyMs.max);
  }
  assert.equal(report.full.resumed, 0, "no session offered in the full phase");
  assert.ok(report.resumed.resumedRatio >= 0 && report.resumed.resumedRatio <= 1);
}

describe("bench against nginx", { ...TIMEOUT, skip: nginxSkipReason() }, () => {
  let resuming: Nginx;
  let none: Nginx;
  before(async () => {
    const common = { certFile: pki.certFile, keyFile: pki.keyFile };
    resuming = await startNginx({ ...common, sharedCache: true, tickets: false });
    none = await startNginx({ ...common, sharedCache: false, tickets: false });
  });
  after(() => Promise.all([resuming?.stop(), none?.stop()]));

  for (const version of ["1.2", "1.3"]) {
    test(`TLS ${version}: --count 150 --json resumes >= 99%`, async () => {
      const r = await cli([
        "bench",
        `127.0.0.1:${resuming.port}`,
        ...trust,
        `--tls${version}`,
        "--count",
        "150",
        "--json",
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "", "no progress display with --json");
      const report = JSON.parse(r.stdout) as BenchReport;
      assert.equal(report.protocol, `TLSv${version}`);
      assert.equal(report.count, 150);
      assertSane(report, 150);
      assert.ok(report.resumed.resumedRatio >= 0.99, `resumedRatio ${report.resumed.resumedRatio}`);
    });
  }

  test("a server that resumes nothing: ratio 0, exit 1, the report still printed", async () => {
    const r = await cli(["bench", `127.0.0.1:${none.port}`, ...trust, "--count", "20", "--json"]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr, "");
    const report = JSON.parse(r.stdout) as BenchReport;
    assertSane(report, 20);
    assert.equal(report.resumed.resumedRatio, 0);
    assert.equal(report.resumed.resumed, 0);
  });

  test("the human table, and no progress line when piped", async () => {
    const r = await cli([
      "bench",
      `127.0.0.1:${resuming.port}`,
      ...trust,
      "--count",
      "30",
      "--concurrency",
      "3",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "", "piped: no progress display");
    assert.match(
      r.stdout,
      /^sesscache bench 127\.0\.0\.1:\d+, TLSv1\.3, concurrency 3, 30 handshakes each$/m,
    );
    assert.match(r.stdout, /^full +\d+\.\d +\d+\.\d\d +\d+\.\d\d +0\/30 +0$/m);
    assert.match(r.stdout, /^resumed +\d+\.\d +\d+\.\d\d +\d+\.\d\d +30\/30 \(100\.0%\) +0$/m);
  });

  test("a progress line on a terminal (script gives the command a pty), none there with --json", {
    skip: have("script", "--version") ? undefined : "script (util-linux) not installed",
  }, async () => {
    const command = (extra: string) =>
      [
        process.execPath,
        ...entry,
        "bench",
        `127.0.0.1:${resuming.port}`,
        ...trust,
        "--duration",
        "0.4",
        extra,
      ]
        .map((a) => `'${a}'`)
        .join(" ");
    const tty = await runProcess("script", ["-qec", command("--tls1.2"), "/dev/null"]);
    assert.equal(tty.code, 0, tty.stdout + tty.stderr);
    assert.match(tty.stdout, /\r\x1b\[Kfull: \d+ handshakes, \d+\/s, \d\.\d s left/);
    assert.match(tty.stdout, /\r\x1b\[Kresumed: \d+ handshakes/);
    assert.match(tty.stdout, /^resumed +\d/m, "the report follows");
    const json = await runProcess("script", ["-qec", command("--json"), "/dev/null"]);
    assert.equal(json.code, 0, json.stdout);
    assert.doesNotMatch(json.stdout, /handshakes, \d+\/s/);
    assert.ok(JSON.parse(json.stdout.replace(/\r/g, "")).resumed.handshakesPerSecond > 0);
  });
});

describe("bench against sesscache serve", TIMEOUT, () => {
  let serve: Awaited<ReturnType<typeof startServeChild>>;
  before(async () => {
    serve = await startServeChild(join(tmp, "state"));
  });
  after(() => serve?.stop());

  test("TLS 1.3, concurrency 2: each single-use ticket's successor is used, >= 99% resume", async () => {
    const r = await cli([
      "bench",
      `127.0.0.1:${serve.port}`,
      "--insecure",
      "--tls1.3",
      "--count",
      "100",
      "--concurrency",
      "2",
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as BenchReport;
    assert.equal(report.concurrency, 2);
    assertSane(report, 100);
    assert.ok(report.resumed.resumedRatio >= 0.99, `resumedRatio ${report.resumed.resumedRatio}`);
  });
});

describe("bench: the rates count handshakes, not the wait for TLS 1.3 tickets", TIMEOUT, () => {
  const stops: (() => Promise<void>)[] = [];
  after(() => Promise.all(stops.map((s) => s())));

  test("a plain Node server that keeps the connection open (no ticket on a resumed TLS 1.3 handshake)", async () => {
    // Like any server waiting for a request: the connection stays until the client closes it.
    const server = tls.createServer({ cert: pki.cert, key: pki.key }, (s) => s.resume());
    stops.push(trackConnections(server).close);
    const port = await listenLocal(server);
    const started = performance.now();
    const r = await cli(["bench", `127.0.0.1:${port}`, ...trust, "--tls1.3", "--count", "20", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as BenchReport;
    // A handshake on this machine takes milliseconds; waiting for a ticket that never comes took
    // a second per connection.
    assert.ok(report.resumed.handshakesPerSecond > 50, `resumed ${report.resumed.handshakesPerSecond}/s`);
    assert.ok(report.full.handshakesPerSecond > 50, `full ${report.full.handshakesPerSecond}/s`);
    assert.ok(report.resumed.latencyMs!.p99 < 500, `p99 ${report.resumed.latencyMs!.p99}`);
    assert.ok(performance.now() - started < 15_000, "20 resumed connections do not take 20 s");
    assertSane(report, 20);
    assert.equal(report.resumed.resumedRatio, 1);
  });

  test("a TLS 1.3 server that issues no tickets (Python, num_tickets 0): full rate is handshakes, nothing resumes", {
    skip: pythonTlsSkipReason(),
  }, async () => {
    const py = await startPythonTlsServer(pki.certFile, pki.keyFile, 0);
    stops.push(py.stop);
    const r = await cli(["bench", `127.0.0.1:${py.port}`, ...trust, "--count", "10", "--json"]);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout) as BenchReport;
    assert.equal(report.protocol, "TLSv1.3");
    assert.ok(report.full.handshakesPerSecond > 50, `full ${report.full.handshakesPerSecond}/s`);
    assert.ok(report.resumed.handshakesPerSecond > 50, `resumed ${report.resumed.handshakesPerSecond}/s`);
    assertSane(report, 10);
    assert.equal(report.resumed.resumed, 0);
  });
});

describe("bench: failed connections are counted", TIMEOUT, () => {
  const stops: (() => Promise<void>)[] = [];
  after(() => Promise.all(stops.map((s) => s())));
  /** A Node TLS server behind a front that resets the TCP connections numbered in `reset`. */
  const resetting = async (reset: number[]) => {
    const server = tls.createServer({ cert: pki.cert, key: pki.key }, (s) => s.resume());
    stops.push(trackConnections(server).close);
    const front = await resettingFront(server, new Set(reset));
    stops.push(front.stop);
    return front.port;
  };

  test("one connection failing while the starting sessions are gathered is counted, not fatal", async () => {
    // --count 4 --concurrency 2: connection 1 checks the server, 2-5 are the full phase, 6 and 7
    // gather a session for each worker (6 is reset), then the resumed phase.
    const port = await resetting([6]);
    const r = await cli([
      "bench",
      `127.0.0.1:${port}`,
      ...trust,
      "--tls1.3",
      "--count",
      "4",
      "--concurrency",
      "2",
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as BenchReport;
    assertSane(report, 4);
    assert.equal(report.setupErrors, 1);
    // The worker without a session borrowed the other's (Node's tickets resume more than once).
    assert.equal(report.resumed.resumedRatio, 1);
    const human = await cli([
      "bench",
      `127.0.0.1:${await resetting([6])}`,
      ...trust,
      "--tls1.3",
      "--count",
      "4",
      "--concurrency",
      "2",
    ]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^1 of 2 connections failed while gathering the first sessions$/m);
  });

  test("resumedRatio is resumed / attempts: a failed resumption attempt did not resume", async () => {
    // --count 4: connection 1 checks the server, 2-5 are the full phase, 6 gathers the session,
    // 7-10 are the resumption attempts; 7 and 9 are reset.
    const port = await resetting([7, 9]);
    const r = await cli(["bench", `127.0.0.1:${port}`, ...trust, "--tls1.3", "--count", "4", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as BenchReport;
    assert.equal(report.resumed.resumedRatio, 0.5);
    assertSane(report, 4);
    assert.deepEqual(
      [report.resumed.attempts, report.resumed.handshakes, report.resumed.errors, report.resumed.resumed],
      [4, 2, 2, 2],
    );
    assert.equal(report.setupErrors, 0);
    const human = await cli([
      "bench",
      `127.0.0.1:${await resetting([7, 9])}`,
      ...trust,
      "--tls1.3",
      "--count",
      "4",
    ]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^resumed +\d+\.\d +\d+\.\d\d +\d+\.\d\d +2\/4 \(50\.0%\) +2$/m);
  });
});

describe("bench errors and usage", TIMEOUT, () => {
  test("a closed port: exit 2, one line", async () => {
    const port = await freePort();
    assertOneLineError(
      await cli(["bench", `127.0.0.1:${port}`, "--count", "5"]),
      new RegExp(`cannot connect to 127\\.0\\.0\\.1:${port}: connection refused`),
    );
  });

  const cases: [string, string[], RegExp][] = [
    ["no host", ["bench"], /missing required argument/],
    [
      "--duration with --count",
      ["bench", "127.0.0.1:1", "--duration", "1", "--count", "5"],
      /cannot be used with/,
    ],
    ["--tls1.2 with --tls1.3", ["bench", "127.0.0.1:1", "--tls1.2", "--tls1.3"], /cannot be used with/],
    ["--duration 0", ["bench", "127.0.0.1:1", "--duration", "0"], /--duration/],
    ["--concurrency not a number", ["bench", "127.0.0.1:1", "--concurrency", "many"], /--concurrency/],
    ["port out of range", ["bench", "127.0.0.1:0"], /out of range/],
    // Larger than a timer holds: Node would warn and fire it at once.
    [
      "--timeout too large",
      ["bench", "127.0.0.1:1", "--timeout", "3000000000"],
      /--timeout.*at most 2147483647/,
    ],
  ];
  for (const [name, args, pattern] of cases) {
    test(`usage: ${name}`, async () => assertOneLineError(await cli(args), pattern));
  }

  test("--help: options, exit codes and examples", async () => {
    const r = await cli(["bench", "--help"]);
    assert.equal(r.code, 0);
    for (const flag of [
      "--duration",
      "--count",
      "--concurrency",
      "--tls1.2",
      "--tls1.3",
      "--insecure",
      "--ca",
      "--servername",
      "--json",
    ]) {
      assert.ok(r.stdout.includes(flag), flag);
    }
    assert.match(r.stdout, /Exit status: 0 when the run completed, 1 when no resumption attempt resumed, 2/);
    // How the rates are counted: the wait for TLS 1.3 tickets is not a handshake's time.
    assert.match(r.stdout, /handshakes\/s = handshakes \/\s+handshakeSeconds/);
    assert.match(r.stdout, /Examples:\n {2}sesscache bench /);
  });
});
