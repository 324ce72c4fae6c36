// `sesscache probe` run as a user would (a child process) against real servers on 127.0.0.1: nginx
// with its session cache and tickets on and off, `sesscache serve`, plain Node TLS servers with no
// cache, a closed port, and bad usage.
import assert from "node:assert/strict";
import { constants } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import type { ProbeReport } from "../src/cli/probe.js";
import { testPki } from "./support/certs.js";
import {
  assertOneLineError,
  type CliResult,
  cli,
  pythonTlsSkipReason,
  startPythonTlsServer,
  startServeChild,
} from "./support/cli-run.js";
import { freePort, type Nginx, nginxSkipReason, startNginx } from "./support/nginx.js";
import { listenLocal, trackConnections } from "./support/tls-peers.js";

const pki = testPki();
const tmp = mkdtempSync(join(tmpdir(), "sesscache-probe-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const TIMEOUT = { timeout: 60_000 };
const trust = ["--ca", pki.caFile, "--servername", "localhost"];

async function probeJson(port: number, extra: string[] = []): Promise<{ r: CliResult; report: ProbeReport }> {
  const r = await cli(["probe", `127.0.0.1:${port}`, ...trust, "--json", ...extra]);
  assert.ok(r.code === 0 || r.code === 1, `exit ${r.code}: ${r.stderr}`);
  assert.equal(r.stderr, "", "nothing on stderr when the probe ran");
  return { r, report: JSON.parse(r.stdout) as ProbeReport };
}

describe("probe against nginx", { ...TIMEOUT, skip: nginxSkipReason() }, () => {
  const servers: Nginx[] = [];
  after(() => Promise.all(servers.map((s) => s.stop())));
  const nginx = async (o: {
    sharedCache: boolean;
    tickets: boolean;
    protocols?: string;
    timeout?: string;
  }) => {
    const n = await startNginx({
      certFile: pki.certFile,
      keyFile: pki.keyFile,
      sharedCache: o.sharedCache,
      tickets: o.tickets,
      protocols: o.protocols,
      sessionTimeout: o.timeout,
    });
    servers.push(n);
    return n;
  };

  test("cache on, tickets off: session ids and TLS 1.3 resume, no TLS 1.2 ticket; nginx takes a TLS 1.3 ticket twice", async () => {
    const n = await nginx({ sharedCache: true, tickets: false });
    const { r, report } = await probeJson(n.port, ["--count", "4"]);
    assert.equal(r.code, 0);
    assert.equal(report.target, `127.0.0.1:${n.port}`);
    assert.equal(report.servername, "localhost");
    assert.deepEqual(
      [report.tls12SessionId.resumed, report.tls12SessionId.attempts, report.tls12SessionId.resumedCount],
      [true, 4, 4],
    );
    assert.equal(report.tls12SessionId.protocol, "TLSv1.2");
    // Resumed by id, not by ticket: no ticket was issued.
    assert.equal(report.tls12Ticket.resumed, false);
    assert.equal(report.tls12Ticket.ticketIssued, false);
    assert.match(report.tls12Ticket.note ?? "", /no ticket issued/);
    assert.deepEqual([report.tls13.resumed, report.tls13.resumedCount], [true, 4]);
    assert.equal(report.tls13.protocol, "TLSv1.3");
    assert.equal(report.tls13.ticketAcceptedTwice, true); // shared/notes/test-peers.md
    assert.equal(report.tls13.ticketLifetimeHint, 300); // ssl_session_timeout 5m
  });

  test("cache off, tickets on: TLS 1.2 resumes only by ticket; the lifetime hint follows ssl_session_timeout", async () => {
    const n = await nginx({ sharedCache: false, tickets: true, timeout: "7m" });
    const { r, report } = await probeJson(n.port);
    assert.equal(r.code, 0);
    assert.equal(report.tls12SessionId.resumed, false);
    assert.equal(report.tls12SessionId.resumedCount, 0);
    assert.equal(report.tls12SessionId.attempts, 3);
    assert.deepEqual([report.tls12Ticket.resumed, report.tls12Ticket.resumedCount], [true, 3]);
    assert.equal(report.tls12Ticket.ticketIssued, true);
    assert.equal(report.tls12Ticket.ticketLifetimeHint, 420);
    assert.equal(report.tls12Ticket.timeout, 420);
    assert.equal(report.tls13.resumed, true);
    assert.equal(report.tls13.ticketLifetimeHint, 420);
  });

  test("cache off, tickets off: nothing resumes, exit 1, and the table says so", async () => {
    const n = await nginx({ sharedCache: false, tickets: false });
    const { r, report } = await probeJson(n.port);
    assert.equal(r.code, 1);
    for (const m of ["tls12SessionId", "tls12Ticket", "tls13"] as const) {
      assert.equal(report[m].supported, true, m);
      assert.equal(report[m].resumed, false, m);
      assert.equal(report[m].resumedCount, 0, m);
    }
    // nginx's "none" hands out session ids it never stores.
    assert.match(report.tls12SessionId.note ?? "", /session id not accepted/);
    const human = await cli(["probe", `127.0.0.1:${n.port}`, ...trust]);
    assert.equal(human.code, 1, human.stderr);
    assert.equal(human.stderr, "");
    assert.match(human.stdout, /^method +resumed +attempts/m);
    assert.match(human.stdout, /^TLS 1\.2 session id +no +0\/3/m);
    assert.match(human.stdout, /^resumes: nothing$/m);
  });

  test("TLS 1.3 disabled: reported as unsupported, not an error", async () => {
    const n = await nginx({ sharedCache: true, tickets: false, protocols: "TLSv1.2" });
    const { r, report } = await probeJson(n.port, ["--count", "1"]);
    assert.equal(r.code, 0);
    assert.equal(report.tls13.supported, false);
    assert.equal(report.tls13.resumed, false);
    assert.match(report.tls13.note ?? "", /TLSv1\.3/);
    assert.equal(report.tls12SessionId.resumed, true);
    const human = await cli(["probe", `127.0.0.1:${n.port}`, ...trust, "--count", "1"]);
    assert.match(human.stdout, /^TLS 1\.3 PSK +unsupported/m);
  });

  test("a certificate the client does not trust: exit 2, one line pointing at --ca / --insecure", async () => {
    const n = await nginx({ sharedCache: true, tickets: false });
    const r = await cli(["probe", `127.0.0.1:${n.port}`, "--servername", "localhost"]);
    assertOneLineError(r, /TLS handshake with 127\.0\.0\.1:\d+ failed: .*(--ca FILE|--insecure)/);
    const insecure = await cli(["probe", `127.0.0.1:${n.port}`, "--insecure", "--json", "--count", "1"]);
    assert.equal(insecure.code, 0, insecure.stderr);
    assert.equal(JSON.parse(insecure.stdout).tls12SessionId.resumed, true);
  });
});

describe("probe against sesscache serve", TIMEOUT, () => {
  let serve: Awaited<ReturnType<typeof startServeChild>>;
  before(async () => {
    serve = await startServeChild(join(tmp, "state"));
  });
  after(() => serve?.stop());

  test("session ids and stateful TLS 1.3 resume; a TLS 1.3 ticket resumes once only", async () => {
    const r = await cli(["probe", `127.0.0.1:${serve.port}`, "--insecure", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as ProbeReport;
    assert.equal(report.servername, null, "no SNI for an IP address");
    assert.deepEqual([report.tls12SessionId.resumed, report.tls12SessionId.resumedCount], [true, 3]);
    assert.equal(report.tls12Ticket.ticketIssued, false, "serve runs with tickets off");
    assert.deepEqual([report.tls13.resumed, report.tls13.resumedCount], [true, 3]);
    assert.equal(report.tls13.ticketAcceptedTwice, false, "single-use tickets (R22)");
    assert.equal(report.tls13.ticketLifetimeHint, 7200);
  });
});

describe("probe against plain Node TLS servers (no cache)", TIMEOUT, () => {
  const closers: (() => Promise<void>)[] = [];
  after(() => Promise.all(closers.map((c) => c())));
  const nodeServer = async (options: tls.TlsOptions) => {
    // Like any server waiting for a request: the connection stays until the client closes it.
    const server = tls.createServer({ cert: pki.cert, key: pki.key, ...options }, (s) => s.resume());
    const tracked = trackConnections(server);
    closers.push(tracked.close);
    return listenLocal(server);
  };

  test("Node's defaults: stateless tickets resume, session ids never do", async () => {
    const port = await nodeServer({ sessionTimeout: 300 });
    const { r, report } = await probeJson(port);
    assert.equal(r.code, 0);
    assert.equal(report.tls12SessionId.resumed, false);
    assert.equal(report.tls12SessionId.attempts, 3);
    assert.equal(report.tls12Ticket.resumed, true);
    assert.equal(report.tls12Ticket.ticketLifetimeHint, 300);
    assert.equal(report.tls13.resumed, true);
    assert.equal(report.tls13.ticketAcceptedTwice, true, "stateless tickets can be replayed");
  });

  test("tickets off and no cache: nothing resumes, exit 1", async () => {
    const port = await nodeServer({ secureOptions: constants.SSL_OP_NO_TICKET });
    const { r, report } = await probeJson(port);
    assert.equal(r.code, 1);
    assert.equal(report.tls12SessionId.resumed, false);
    assert.equal(report.tls12Ticket.resumed, false);
    assert.equal(report.tls13.resumed, false);
    assert.equal(report.tls13.supported, true);
  });
});

describe("probe against servers that misbehave", TIMEOUT, () => {
  const stops: (() => Promise<void>)[] = [];
  after(() => Promise.all(stops.map((s) => s())));

  test("a server that resets each connection right after the handshake: the handshakes count, resumption is seen", async () => {
    const secureContext = tls.createSecureContext({ cert: pki.cert, key: pki.key });
    const server = createServer((raw) => {
      raw.on("error", () => {});
      const t = new tls.TLSSocket(raw, { isServer: true, secureContext });
      t.on("error", () => {});
      // Its TLS 1.3 tickets go out, then the connection is reset instead of closed.
      t.on("secure", () => setImmediate(() => raw.resetAndDestroy()));
    });
    stops.push(trackConnections(server).close);
    const port = await listenLocal(server);
    const { r, report } = await probeJson(port);
    assert.equal(r.code, 0);
    for (const m of ["tls12SessionId", "tls12Ticket", "tls13"] as const) {
      assert.equal(report[m].errors, 0, m);
      assert.doesNotMatch(report[m].note ?? "", /failed/, m);
    }
    assert.deepEqual([report.tls12Ticket.resumed, report.tls12Ticket.resumedCount], [true, 3]);
    assert.deepEqual([report.tls13.resumed, report.tls13.resumedCount], [true, 3]);
  });

  test('a TLS 1.3 server that issues no tickets (Python, num_tickets 0): "no ticket issued", nothing offered', {
    skip: pythonTlsSkipReason(),
  }, async () => {
    const py = await startPythonTlsServer(pki.certFile, pki.keyFile, 0);
    stops.push(py.stop);
    const { r, report } = await probeJson(py.port);
    assert.equal(r.code, 1);
    assert.equal(report.tls12SessionId.supported, false);
    assert.equal(report.tls13.supported, true);
    assert.equal(report.tls13.ticketIssued, false);
    assert.equal(report.tls13.attempts, 0, "a TLS 1.3 session without a ticket is not offered");
    assert.equal(report.tls13.note, "no ticket issued");
    assert.equal(report.tls13.ticketAcceptedTwice, null);
    const human = await cli(["probe", `127.0.0.1:${py.port}`, ...trust]);
    assert.equal(human.code, 1, human.stderr);
    assert.match(human.stdout, /^ {2}TLS 1\.3 PSK: no ticket issued$/m);
  });

  test("control characters in --servername are escaped in the report and in errors", async () => {
    const server = tls.createServer({ cert: pki.cert, key: pki.key }, (s) => s.resume());
    stops.push(trackConnections(server).close);
    const port = await listenLocal(server);
    const evil = "ev\x1b]0;owned\x07il\u202e";
    const r = await cli(["probe", `127.0.0.1:${port}`, "--insecure", "--count", "1", "--servername", evil]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^sesscache probe 127\.0\.0\.1:\d+ \(SNI ev\\x1b\]0;owned\\x07il\\u\{202e\}\)$/m);
    assert.doesNotMatch(r.stdout, /[\x00-\x09\x0b-\x1f\x7f\u202e]/);
    // The certificate does not match that name: Node's message repeats it.
    const bad = await cli(["probe", `127.0.0.1:${port}`, "--ca", pki.caFile, "--servername", evil]);
    assertOneLineError(bad, /ev\\x1b\]0;owned\\x07il/);
    assert.doesNotMatch(bad.stderr, /[\x00-\x09\x0b-\x1f\x7f\u202e]/);
  });
});

describe("probe errors and usage", TIMEOUT, () => {
  test("a closed port: exit 2, one line; --debug adds the stack", async () => {
    const port = await freePort();
    const r = await cli(["probe", `127.0.0.1:${port}`]);
    assertOneLineError(r, new RegExp(`cannot connect to 127\\.0\\.0\\.1:${port}: connection refused`));
    const debug = await cli(["probe", `127.0.0.1:${port}`, "--debug"]);
    assert.equal(debug.code, 2);
    assert.match(debug.stderr, /^sesscache: cannot connect/);
    assert.match(debug.stderr, /^\s+at /m, "--debug prints the stack");
  });

  const cases: [string, string[], RegExp][] = [
    ["no host", ["probe"], /missing required argument/],
    ["port out of range", ["probe", "127.0.0.1:70000"], /out of range/],
    ["port not a number", ["probe", "example.com:https"], /not a number/],
    ["bare IPv6 with a port", ["probe", "::1:443:x"], /IPv6|not a number/],
    ["--count 0", ["probe", "127.0.0.1:1", "--count", "0"], /--count/],
    [
      "--insecure with --ca",
      ["probe", "127.0.0.1:1", "--insecure", "--ca", "x.pem"],
      /--insecure.*--ca|--ca.*--insecure/,
    ],
    ["--ca missing", ["probe", "127.0.0.1:1", "--ca", "/nonexistent/ca.pem"], /cannot read --ca file/],
    ["unknown flag", ["probe", "127.0.0.1:1", "--bogus"], /unknown option '--bogus'/],
    // Larger than a timer holds: Node would warn and fire it at once.
    [
      "--timeout too large",
      ["probe", "127.0.0.1:1", "--timeout", "3000000000"],
      /--timeout.*at most 2147483647/,
    ],
  ];
  for (const [name, args, pattern] of cases) {
    test(`usage: ${name}`, async () => assertOneLineError(await cli(args), pattern));
  }

  test("--ca: a PEM certificate that does not decode is refused before connecting", async () => {
    const garbage = join(tmp, "garbage-ca.pem");
    writeFileSync(garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    assertOneLineError(
      await cli(["probe", "127.0.0.1:1", "--ca", garbage]),
      /--ca file .*garbage-ca\.pem: its certificate does not decode \(/,
    );
    const second = join(tmp, "second-bad-ca.pem");
    writeFileSync(second, `${pki.caCert}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`);
    assertOneLineError(
      await cli(["bench", "127.0.0.1:1", "--ca", second]),
      /--ca file .*second-bad-ca\.pem: certificate 2 of 2 does not decode/,
    );
  });

  test("--help: options, exit codes and examples", async () => {
    const r = await cli(["probe", "--help"]);
    assert.equal(r.code, 0);
    for (const flag of ["--servername", "--insecure", "--ca", "--count", "--json"]) {
      assert.ok(r.stdout.includes(flag), flag);
    }
    assert.match(r.stdout, /Exit status: 0 when any method resumes, 1 when none does, 2/);
    assert.match(r.stdout, /Examples:\n {2}sesscache probe /);
    const top = await cli(["--help"]);
    assert.match(top.stdout, /^ {2}probe /m);
    assert.match(top.stdout, /--debug/);
  });
});
