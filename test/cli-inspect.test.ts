// `sesscache inspect` as a user runs it, on sessions captured for real: `openssl s_client
// -sess_out` against `openssl s_server` (TLS 1.2 by session id, TLS 1.3 with a ticket) and DER
// sessions from Node's tls module (a client's 'session' event, a server's 'newSession'). Every
// field is checked against what `openssl sess_id -noout -text` prints for the same bytes.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { constants } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { testPki } from "./support/certs.js";
import { buildSessionDer } from "./support/session-der.js";
import { run, sClient } from "./support/tls-peers.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "sesscache-inspect-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const file = (name: string) => join(tmp, name);

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `sesscache inspect ...args` from source; `input` goes to stdin (else stdin is empty). */
function inspect(args: string[], input?: string | Buffer): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(root, "src/cli/main.ts"), "inspect", ...args],
      {
        cwd: root,
        env: { ...process.env, SESSCACHE_DEBUG: "" },
        stdio: ["pipe", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.stdin.on("error", () => {}); // it may exit before reading stdin (a missing file)
    child.stdin.end(input);
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** `openssl sess_id -noout -text` for a saved session. */
async function sessId(path: string, inform: "PEM" | "DER" = "PEM"): Promise<string> {
  const r = await run("openssl", ["sess_id", "-inform", inform, "-in", path, "-noout", "-text"]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

/** The value after "Label:" in sess_id-style text. */
function field(text: string, label: string): string | undefined {
  const esc = label.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`^ {4}${esc}\\s*: ?(.*)$`, "m").exec(text)?.[1];
}

const MASTER_LINE = /^ {4}(Master-Key|Resumption PSK): (.*)$/m;

/** sess_id's text with its secret line taken out, and the secret (upper-case hex). */
function splitSecret(text: string): { rest: string; secret: string } {
  const m = MASTER_LINE.exec(text);
  assert.ok(m, `no master key line in:\n${text}`);
  assert.match(m[2], /^[0-9A-F]{64,96}$/);
  return { rest: text.replace(MASTER_LINE, ""), secret: m[2] };
}

/** The part of inspect's text output that mirrors sess_id: up to and including its last line. */
function sessIdBlock(ours: string, theirs: string): string {
  const lastLine = theirs.trimEnd().split("\n").at(-1)!;
  const end = ours.indexOf(`${lastLine}\n`);
  assert.ok(end >= 0, `inspect's output lacks sess_id's last line "${lastLine}":\n${ours}`);
  return ours.slice(0, end + lastLine.length + 1);
}

function assertOk(r: Result): void {
  assert.equal(r.code, 0, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stderr, "");
}

/** The error contract: exit 2, nothing on stdout, one "sesscache: " line, no stack trace. */
function assertOneLineError(r: Result, pattern: RegExp): void {
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stdout, "");
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], /^sesscache: \S/);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  assert.match(lines[0], pattern);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** `openssl s_server -www` (tickets on), resolved once it prints ACCEPT; retried on a port race. */
async function sServer(): Promise<{ port: number; child: ChildProcess }> {
  const pki = testPki();
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn(
      "openssl",
      ["s_server", "-accept", `127.0.0.1:${port}`, "-cert", pki.certFile, "-key", pki.keyFile, "-www"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    const ready = await new Promise<boolean>((resolve) => {
      child.stdout.setEncoding("utf8").on("data", (d: string) => {
        out += d;
        if (out.includes("ACCEPT")) resolve(true);
      });
      child.once("exit", () => resolve(false));
    });
    if (ready) return { port, child };
    if (attempt >= 2) throw new Error(`openssl s_server did not start: ${out}`);
  }
}

/**
 * One s_client connection saving its session. `-ign_eof` plus an HTTP request: s_client reads
 * until s_server -www closes after its page, so TLS 1.3 tickets (sent before the page) are in.
 */
async function capture(port: number, version: "1.2" | "1.3", out: string): Promise<void> {
  const r = await sClient({
    port,
    version,
    sessOut: out,
    input: "GET / HTTP/1.0\r\n\r\n",
    extra: ["-ign_eof", "-alpn", "h2,http/1.1"],
  });
  assert.equal(r.code, 0, r.stderr);
  // s_client prints its "New," summary again after reading TLS 1.3 tickets.
  assert.ok(r.full >= 1 && r.reused === 0, r.stdout);
}

/** A Node TLS 1.3 client's last session ('session' event), DER, with ALPN "h2" negotiated. */
async function nodeClientSession(): Promise<Buffer> {
  const pki = testPki();
  const server = tls.createServer({ cert: pki.cert, key: pki.key, ALPNProtocols: ["h2"] }, (s) => s.end("x"));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const { port } = server.address() as AddressInfo;
    return await new Promise<Buffer>((resolve, reject) => {
      let last: Buffer | undefined;
      const c = tls.connect({
        port,
        host: "127.0.0.1",
        servername: "localhost",
        ca: pki.caCert,
        ALPNProtocols: ["h2"],
        minVersion: "TLSv1.3",
      });
      c.on("session", (s: Buffer) => (last = s));
      c.on("error", reject);
      c.resume();
      // The server's byte comes after its tickets; 'end' after both.
      c.on("end", () => (last ? resolve(last) : reject(new Error("no session"))));
    });
  } finally {
    server.close();
  }
}

/** A Node TLS 1.2 server's session (newSession), DER, with a session-id context of our choosing. */
async function nodeServerSession(): Promise<Buffer> {
  const pki = testPki();
  const server = tls.createServer({
    cert: pki.cert,
    key: pki.key,
    sessionIdContext: "inspect-test",
    // The server keeps a session (and fires newSession) instead of issuing a ticket.
    secureOptions: constants.SSL_OP_NO_TICKET,
    maxVersion: "TLSv1.2",
  });
  let session: Buffer | undefined;
  server.on("newSession", (_id: Buffer, data: Buffer, done: () => void) => {
    session = data;
    done();
  });
  server.on("secureConnection", (s) => s.end("x"));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve, reject) => {
      const c = tls.connect({ port, host: "127.0.0.1", servername: "localhost", ca: pki.caCert });
      c.on("error", reject);
      c.resume();
      c.on("end", () => resolve());
    });
  } finally {
    server.close();
  }
  assert.ok(session, "the server made a session");
  return session;
}

const pem12 = file("tls12.pem");
const pem13 = file("tls13.pem");
const derClient = file("node-client.der");
const derServer = file("node-server.der");

before(async () => {
  const { port, child } = await sServer();
  try {
    await Promise.all([capture(port, "1.2", pem12), capture(port, "1.3", pem13)]);
  } finally {
    child.kill();
  }
  writeFileSync(derClient, await nodeClientSession());
  writeFileSync(derServer, await nodeServerSession());
});

const TIMEOUT = { timeout: 60_000 };

describe("sesscache inspect: real sessions, compared with openssl sess_id", TIMEOUT, () => {
  test("TLS 1.2 PEM from a file: sess_id's block line for line, master key hidden", async () => {
    const [ours, theirs] = await Promise.all([inspect([pem12]), sessId(pem12)]);
    assertOk(ours);
    const { rest, secret } = splitSecret(theirs);
    assert.equal(field(ours.stdout, "Master-Key"), "(hidden; --show-secrets prints it)");
    assert.equal(sessIdBlock(ours.stdout, theirs).replace(MASTER_LINE, ""), rest);
    assert.equal(field(ours.stdout, "Protocol"), "TLSv1.2");
    assert.match(field(ours.stdout, "Session-ID") ?? "", /^[0-9A-F]{64}$/);
    assert.ok(!ours.stdout.toUpperCase().includes(secret));
    // What sess_id leaves out: the peer certificate (s_server's leaf) and the negotiated group.
    assert.equal(field(ours.stdout, "Peer certificate"), "CN=localhost");
    assert.match(field(ours.stdout, "Key exchange group") ?? "", /\(0x[0-9A-F]{4}\)$/);
  });

  test("TLS 1.3 PEM from stdin ('-' and no argument): hint, ticket dump and Max Early Data as sess_id", async () => {
    const text = readFileSync(pem13, "utf8");
    const [dash, bare, theirs] = await Promise.all([inspect(["-"], text), inspect([], text), sessId(pem13)]);
    assertOk(dash);
    assertOk(bare);
    assert.equal(bare.stdout, dash.stdout);
    const { rest, secret } = splitSecret(theirs);
    assert.equal(field(dash.stdout, "Resumption PSK"), "(hidden; --show-secrets prints it)");
    assert.equal(sessIdBlock(dash.stdout, theirs).replace(MASTER_LINE, ""), rest);
    for (const label of ["Protocol", "Cipher", "Session-ID", "Session-ID-ctx", "Timeout", "Start Time"]) {
      assert.equal(field(dash.stdout, label), field(theirs, label), label);
    }
    assert.equal(field(dash.stdout, "TLS session ticket lifetime hint"), "7200 (seconds)");
    assert.equal(field(dash.stdout, "Protocol"), "TLSv1.3");
    assert.ok(!dash.stdout.toUpperCase().includes(secret));
  });

  test("--show-secrets: exactly sess_id's text, Master-Key / Resumption PSK included", async () => {
    for (const path of [pem12, pem13]) {
      const [ours, theirs] = await Promise.all([inspect(["--show-secrets", path]), sessId(path)]);
      assertOk(ours);
      assert.equal(sessIdBlock(ours.stdout, theirs), theirs);
      assert.ok(ours.stdout.includes(splitSecret(theirs).secret));
    }
  });

  test("--json: the documented keys, equal to sess_id's fields; masterKey only with --show-secrets", async () => {
    const [plain, secret, theirs] = await Promise.all([
      inspect(["--json", pem13]),
      inspect(["--json", "--show-secrets", pem13]),
      sessId(pem13),
    ]);
    assertOk(plain);
    assertOk(secret);
    const j = JSON.parse(plain.stdout) as Record<string, unknown>;
    for (const key of [
      "protocol",
      "sessionId",
      "sessionIdContext",
      "cipher",
      "time",
      "timeout",
      "ticketLifetimeHint",
      "alpn",
      "hostname",
      "verifyResult",
      "extendedMasterSecret",
      "maxEarlyData",
      "ticketAgeAdd",
      "group",
      "ticketLength",
      "peerCertificate",
    ]) {
      assert.ok(key in j, key);
    }
    assert.equal(j.protocol, "TLSv1.3");
    assert.equal(j.sessionId, field(theirs, "Session-ID")?.toLowerCase());
    assert.equal(j.sessionIdContext, "");
    assert.equal(j.cipher, field(theirs, "Cipher"));
    assert.equal(j.time, Number(field(theirs, "Start Time")));
    assert.equal(`${j.timeout} (sec)`, field(theirs, "Timeout"));
    assert.equal(`${j.ticketLifetimeHint} (seconds)`, field(theirs, "TLS session ticket lifetime hint"));
    assert.equal(`${j.verifyResult} (${j.verifyResultText})`, field(theirs, "Verify return code"));
    assert.equal(j.extendedMasterSecret, field(theirs, "Extended master secret") === "yes");
    assert.equal(`${j.maxEarlyData}`, field(theirs, "Max Early Data"));
    assert.equal(typeof j.ticketAgeAdd, "number");
    assert.equal(typeof j.ticketLength, "number");
    assert.equal((j.peerCertificate as { subject: string }).subject, "CN=localhost");
    assert.equal("masterKey" in j, false);
    const psk = splitSecret(theirs).secret;
    assert.ok(!plain.stdout.toUpperCase().includes(psk));
    const s = JSON.parse(secret.stdout) as Record<string, unknown>;
    assert.equal(s.masterKey, psk.toLowerCase());
    assert.deepEqual(
      { ...s, masterKey: undefined, expired: undefined },
      { ...j, masterKey: undefined, expired: undefined },
    );
  });

  test("DER from a Node client (stdin and file): ALPN, peer certificate and sess_id's fields", async () => {
    const der = readFileSync(derClient);
    const [text, json, theirs] = await Promise.all([
      inspect([], der),
      inspect(["--json", derClient]),
      sessId(derClient, "DER"),
    ]);
    assertOk(text);
    assertOk(json);
    assert.equal(sessIdBlock(text.stdout, theirs).replace(MASTER_LINE, ""), splitSecret(theirs).rest);
    assert.equal(field(text.stdout, "ALPN protocol"), "h2");
    assert.equal(field(text.stdout, "Verify return code"), "0 (ok)");
    const j = JSON.parse(json.stdout) as Record<string, unknown>;
    assert.equal(j.protocol, "TLSv1.3");
    assert.equal(j.alpn, "h2");
    assert.equal(j.verifyResult, 0);
    assert.equal(j.derLength, der.length);
    const peer = j.peerCertificate as { subject: string; issuer: string; subjectAltName: string };
    assert.equal(peer.subject, "CN=localhost");
    assert.equal(peer.issuer, "CN=sesscache test CA");
    assert.match(peer.subjectAltName, /DNS:localhost/);
  });

  test("DER from a Node server: the session-id context and TLS 1.2 session id, as sess_id reads them", async () => {
    const [ours, json, theirs] = await Promise.all([
      inspect([derServer]),
      inspect(["--json", derServer]),
      sessId(derServer, "DER"),
    ]);
    assertOk(ours);
    assertOk(json);
    assert.equal(sessIdBlock(ours.stdout, theirs).replace(MASTER_LINE, ""), splitSecret(theirs).rest);
    const j = JSON.parse(json.stdout) as Record<string, unknown>;
    assert.equal(j.protocol, "TLSv1.2");
    assert.equal(j.sessionIdContext, field(theirs, "Session-ID-ctx")?.toLowerCase());
    assert.equal(j.sessionIdContext === "", false);
    assert.equal(j.sessionId, field(theirs, "Session-ID")?.toLowerCase());
    assert.equal(j.ticketLifetimeHint, null);
    assert.equal(j.peerCertificate, null);
    assert.equal(field(ours.stdout, "Peer certificate"), "None");
  });
});

/** Control characters other than the newline: none may reach the terminal raw. */
const CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]/;

describe("sesscache inspect: untrusted bytes inside a session", TIMEOUT, () => {
  test("DER whose fields hold a PEM BEGIN line is read as DER", async () => {
    const pemBlock = `-----BEGIN SSL SESSION PARAMETERS-----\n!!\n-----END SSL SESSION PARAMETERS-----`;
    const cases: [string, Uint8Array][] = [
      [
        "begin-hostname.der",
        buildSessionDer({ time: 1700000000, timeout: 300, hostname: "-----BEGIN X-----" }),
      ],
      [
        "begin-ticket.der",
        buildSessionDer({ time: 1700000000, timeout: 300, ticket: Buffer.from(pemBlock) }),
      ],
    ];
    for (const [name, der] of cases) writeFileSync(file(name), der);
    const [hostname, ticket, stdin] = await Promise.all([
      inspect(["--json", file(cases[0]![0])]),
      inspect([file(cases[1]![0])]),
      inspect(["-"], Buffer.from(cases[0]![1])),
    ]);
    for (const r of [hostname, ticket, stdin]) assertOk(r);
    assert.equal((JSON.parse(hostname.stdout) as { hostname: string }).hostname, "-----BEGIN X-----");
    assert.equal(field(ticket.stdout, "Ticket length"), `${pemBlock.length} bytes`);
    assert.equal(field(stdin.stdout, "Hostname (SNI)"), "-----BEGIN X-----");
  });

  test("control characters in the session's strings are escaped in the text output (JSON keeps them)", async () => {
    const hostname = "example.com\n    Verify return code: 0 (ok)\x1b]0;owned\x07\x1b[2K";
    const alpn = "h2\r    Master-Key: DEADBEEF";
    const der = buildSessionDer({
      time: 1700000000,
      timeout: 300,
      hostname,
      alpn,
      pskIdentity: "id\x9b31m",
      pskIdentityHint: "hint\u202egnp.exe",
      srpUsername: "user\x00",
    });
    writeFileSync(file("evil.der"), der);
    const [text, json] = await Promise.all([
      inspect([file("evil.der")]),
      inspect(["--json", file("evil.der")]),
    ]);
    assertOk(text);
    assertOk(json);
    assert.doesNotMatch(text.stdout, CONTROL);
    assert.equal(
      field(text.stdout, "Hostname (SNI)"),
      "example.com\\x0a    Verify return code: 0 (ok)\\x1b]0;owned\\x07\\x1b[2K",
    );
    assert.equal(field(text.stdout, "ALPN protocol"), "h2\\x0d    Master-Key: DEADBEEF");
    assert.equal(field(text.stdout, "PSK identity"), "id\\x9b31m");
    assert.equal(field(text.stdout, "PSK identity hint"), "hint\\u{202e}gnp.exe");
    assert.equal(field(text.stdout, "SRP username"), "user\\x00");
    // No line of ours is forged: one "Verify return code", one key line.
    assert.equal(text.stdout.match(/^ {4}Verify return code/gm)?.length, 1);
    assert.equal(text.stdout.match(/^ {4}Master-Key/gm)?.length, 1);
    const j = JSON.parse(json.stdout) as { hostname: string; alpn: string };
    assert.deepEqual([j.hostname, j.alpn], [hostname, alpn]);
  });

  test("errors escape what they repeat from the input: a PEM label, a file name", async () => {
    writeFileSync(
      file("label.pem"),
      "-----BEGIN \x1b[31mEVIL\x07-----\nAAAA\n-----END \x1b[31mEVIL\x07-----\n",
    );
    const oddName = file("odd\x1b[2Kname.txt");
    writeFileSync(oddName, "hello\n");
    const [label, name, missing] = await Promise.all([
      inspect([file("label.pem")]),
      inspect([oddName]),
      inspect([file("gone\x1b]0;x\x07.der")]),
    ]);
    assertOneLineError(label, /PEM block is "\\x1b\[31mEVIL\\x07", expected "SSL SESSION PARAMETERS"/);
    assertOneLineError(name, /odd\\x1b\[2Kname\.txt: not a TLS session: neither DER/);
    assertOneLineError(missing, /cannot read .*gone\\x1b\]0;x\\x07\.der: no such file or directory$/);
    for (const r of [label, name, missing]) assert.doesNotMatch(r.stderr, CONTROL);
  });
});

describe("sesscache inspect: garbage in is one line on stderr, exit 2", TIMEOUT, () => {
  test("files: not a session, empty, truncated, wrong PEM label, a directory, missing", async () => {
    const pem = readFileSync(pem12, "utf8");
    const der = readFileSync(derServer);
    const pki = testPki();
    const cases: [string, string | Buffer, RegExp][] = [
      ["text.txt", "hello, world\n", /text\.txt: not a TLS session: neither DER .* nor PEM/],
      ["empty", "", /empty: not a TLS session: empty input/],
      ["cut.pem", pem.slice(0, pem.length / 2), /cut\.pem: not a TLS session: PEM block has no END line/],
      [
        "cut.der",
        der.subarray(0, der.length - 20),
        /cut\.der: not a TLS session: DER: input ends inside an element/,
      ],
      [
        "cert.pem",
        pki.cert,
        /cert\.pem: not a TLS session: PEM block is "CERTIFICATE", expected "SSL SESSION PARAMETERS"/,
      ],
      [
        "cert.der",
        Buffer.from(pki.cert.replace(/-----[^-]+-----|\s/g, ""), "base64"),
        /cert\.der: not a TLS session: DER: /,
      ],
    ];
    for (const [name, content] of cases) writeFileSync(file(name), content);
    const results = await Promise.all([
      ...cases.map(([name]) => inspect([file(name)])),
      inspect([tmp]),
      inspect([file("no-such-file")]),
    ]);
    for (const [i, [, , pattern]] of cases.entries()) assertOneLineError(results[i], pattern);
    const [dir, missing] = results.slice(cases.length);
    assertOneLineError(dir, /cannot read .*: is a directory$/);
    assertOneLineError(missing, /cannot read .*no-such-file: no such file or directory$/);
  });

  test("stdin: empty, garbage, a truncated session; errors never show the session's bytes", async () => {
    const der = readFileSync(derServer);
    const secret = splitSecret(await sessId(derServer, "DER")).secret;
    const [empty, garbage, cut] = await Promise.all([
      inspect(["-"]),
      inspect([], Buffer.from([0xde, 0xad, 0xbe, 0xef])),
      inspect(["--json", "--show-secrets", "-"], der.subarray(0, 100)),
    ]);
    assertOneLineError(empty, /^sesscache: stdin: not a TLS session: empty input/);
    assertOneLineError(garbage, /^sesscache: stdin: not a TLS session: neither DER/);
    assertOneLineError(cut, /^sesscache: stdin: not a TLS session: DER: input ends inside an element/);
    assert.ok(!cut.stderr.toUpperCase().includes(secret.slice(0, 16)));
    assert.doesNotMatch(cut.stderr, /[0-9a-f]{16}/i);
  });

  test("--help shows examples; a second file is a usage error", async () => {
    const [help, two] = await Promise.all([inspect(["--help"]), inspect([pem12, pem13])]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: sesscache inspect/);
    assert.match(help.stdout, /Examples:\n {2}openssl s_client .* -sess_out s\.pem/);
    assert.match(help.stdout, /--show-secrets/);
    assertOneLineError(two, /too many arguments/);
  });
});
