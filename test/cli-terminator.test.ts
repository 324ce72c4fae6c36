// `sesscache serve --backend`: the TLS terminator. startServe() in this process for most tests,
// against plain TCP backends the tests run (an echo, a slow reader, a PROXY v2 parser, an h2c
// server); the CLI spawned for flags, --workers and errors. Peers: Node's tls client, openssl
// s_client, curl --http2.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createH2cServer } from "node:http2";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from "node:tls";
import { decodeProxyV2, encodeProxyV2 } from "../src/cli/proxy-protocol.js";
import { type ServeHandle, type ServeOptions, startServe } from "../src/cli/serve.js";
import { testPki } from "./support/certs.js";
import { assertOneLineError, cli, entry, root } from "./support/cli-run.js";
import { have, run, sClient } from "./support/tls-peers.js";

const tmp = mkdtempSync(join(tmpdir(), "sesscache-term-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const pki = testPki();

const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A plain TCP backend on 127.0.0.1 (half-open sockets); its connections are destroyed at the end. */
async function backend(onConnection: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const open = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    open.add(s);
    s.once("close", () => open.delete(s));
    s.on("error", () => {});
    onConnection(s);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(() => {
    for (const s of open) s.destroy();
    server.close();
  });
  return { server, port: (server.address() as AddressInfo).port };
}

async function terminator(backendPort: number, extra: ServeOptions = {}): Promise<ServeHandle> {
  const h = await startServe({
    listen: "127.0.0.1:0",
    cert: pki.certFile,
    key: pki.keyFile,
    backend: `127.0.0.1:${backendPort}`,
    ...extra,
  });
  cleanups.push(() => h.close());
  return h;
}

function connectTls(
  port: number,
  opts: ConnectionOptions & { allowHalfOpen?: boolean } = {},
): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: "127.0.0.1", port, servername: "localhost", ca: pki.caCert, ...opts });
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}

/** Everything a socket gives until its end (left open for writing: no async iterator, which destroys). */
function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on("data", (d: Buffer) => chunks.push(d));
    s.once("end", () => resolve(Buffer.concat(chunks)));
    s.once("error", reject);
  });
}

/** Reads until `n` bytes arrived (not to the end). */
function readBytes(s: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= n) {
        s.off("data", onData);
        s.off("error", reject);
        s.pause();
        resolve(Buffer.concat(chunks));
      }
    };
    s.on("data", onData);
    s.once("error", reject);
  });
}

const echo = (s: Socket) => s.pipe(s);

describe("serve --backend: forwarding", { timeout: 120_000 }, () => {
  test("bytes go both ways through an echo backend; the TLS port serves no status page", async () => {
    const b = await backend(echo);
    const h = await terminator(b.port);
    assert.equal(h.terminator !== undefined, true);
    const c = await connectTls(h.port);
    c.write("GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n");
    const back = await readBytes(c, 39);
    assert.equal(back.toString(), "GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n");
    c.end();
    await once(c, "close");
    assert.equal(h.terminator!.stats().connections, 1);
  });

  test("client to backend: 8 MiB to a slow reader, bounded buffers on the way, every byte arrives", async () => {
    const total = 8 * 1024 * 1024;
    // The backend reads a chunk, then pauses a little: it drains far slower than the client writes.
    const b = await backend((s) => {
      const hash = createHash("sha256");
      let got = 0;
      s.on("data", (d: Buffer) => {
        hash.update(d);
        got += d.length;
        sample();
        s.pause();
        setTimeout(() => s.resume(), 2);
      });
      s.on("end", () => s.end(`${got} ${hash.digest("hex")}`));
    });
    const h = await terminator(b.port);
    let maxUpstream = 0;
    let maxClientSide = 0;
    const sample = () => {
      for (const { client, upstream } of h.terminator!.connections()) {
        maxUpstream = Math.max(maxUpstream, upstream.writableLength);
        maxClientSide = Math.max(maxClientSide, client.readableLength);
      }
    };
    const c = await connectTls(h.port, { allowHalfOpen: true });
    const payload = Buffer.alloc(total);
    for (let i = 0; i < total; i += 4) payload.writeUInt32LE(i, i);
    const reply = readAll(c);
    for (let off = 0; off < total; off += 256 * 1024) {
      if (!c.write(payload.subarray(off, off + 256 * 1024))) await once(c, "drain");
      sample();
    }
    c.end();
    const answer = (await reply).toString();
    assert.equal(answer, `${total} ${createHash("sha256").update(payload).digest("hex")}`);
    // Without back-pressure the terminator would hold most of the 8 MiB for the slow backend.
    assert.ok(maxUpstream <= 1024 * 1024, `upstream writableLength peaked at ${maxUpstream}`);
    assert.ok(maxClientSide <= 1024 * 1024, `client-side readableLength peaked at ${maxClientSide}`);
  });

  test("backend to client: 8 MiB to a slow-reading client, bounded buffers, every byte arrives", async () => {
    const total = 8 * 1024 * 1024;
    const payload = Buffer.alloc(total);
    for (let i = 0; i < total; i += 4) payload.writeUInt32LE(i ^ 0x5a5a5a5a, i);
    let h: ServeHandle | undefined;
    let maxClientSide = 0;
    let maxUpstreamIn = 0;
    const sample = () => {
      for (const { client, upstream } of h?.terminator?.connections() ?? []) {
        maxClientSide = Math.max(maxClientSide, client.writableLength);
        maxUpstreamIn = Math.max(maxUpstreamIn, upstream.readableLength);
      }
    };
    const b = await backend((s) => {
      void (async () => {
        for (let off = 0; off < total; off += 256 * 1024) {
          if (!s.write(payload.subarray(off, off + 256 * 1024))) await once(s, "drain");
          sample();
        }
        s.end();
      })();
    });
    h = await terminator(b.port);
    const c = await connectTls(h.port);
    const hash = createHash("sha256");
    let got = 0;
    c.on("data", (d: Buffer) => {
      hash.update(d);
      got += d.length;
      sample();
      c.pause();
      setTimeout(() => c.resume(), 2);
    });
    await once(c, "end");
    c.end();
    assert.equal(got, total);
    assert.equal(hash.digest("hex"), createHash("sha256").update(payload).digest("hex"));
    assert.ok(maxClientSide <= 1024 * 1024, `TLS socket writableLength peaked at ${maxClientSide}`);
    assert.ok(maxUpstreamIn <= 1024 * 1024, `upstream readableLength peaked at ${maxUpstreamIn}`);
  });

  test("half-close: the client ends, the backend sees its end and still answers", async () => {
    const b = await backend((s) => {
      const chunks: Buffer[] = [];
      s.on("data", (d: Buffer) => chunks.push(d));
      s.on("end", () => s.end(`got ${Buffer.concat(chunks).toString()} then your end`));
    });
    const h = await terminator(b.port);
    for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
      const c = await connectTls(h.port, { allowHalfOpen: true, minVersion: version, maxVersion: version });
      const reply = readAll(c);
      c.end("request");
      assert.equal((await reply).toString(), "got request then your end", version);
    }
  });

  test("half-close: the backend ends, the client sees the end and can still send", async () => {
    const received: Promise<string>[] = [];
    const b = await backend((s) => {
      s.end("greeting, and that is all from me");
      received.push(readAll(s).then((d) => d.toString()));
    });
    const h = await terminator(b.port);
    for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
      const c = await connectTls(h.port, { allowHalfOpen: true, minVersion: version, maxVersion: version });
      const got = await readAll(c);
      assert.equal(got.toString(), "greeting, and that is all from me");
      // The read side ended; the write side is still open and reaches the backend.
      c.end("still talking after your end");
      await once(c, "close");
      assert.equal(await received.at(-1), "still talking after your end", version);
    }
  });

  test("an error on the backend side destroys the client side", async () => {
    const b = await backend((s) => {
      s.once("data", () => s.resetAndDestroy());
    });
    const h = await terminator(b.port);
    const c = await connectTls(h.port);
    c.on("error", () => {});
    c.write("x");
    await once(c, "close");
    // The pair is gone on the server too.
    while (h.terminator!.stats().active > 0) await new Promise((r) => setImmediate(r));
    assert.equal(h.terminator!.stats().backendErrors, 1);
  });

  test("a client that goes away destroys its backend connection", async () => {
    let upstream: Socket | undefined;
    const b = await backend((s) => {
      upstream = s;
      s.write("hello");
    });
    const h = await terminator(b.port);
    // The TCP socket under the TLS one, so the client can reset it (a vanished client, not a FIN).
    const { connect } = await import("node:net");
    const raw = connect(h.port, "127.0.0.1");
    await once(raw, "connect");
    const c = await connectTls(h.port, { socket: raw });
    c.on("error", () => {});
    raw.on("error", () => {});
    await readBytes(c, 5);
    assert.ok(upstream);
    let backendError: NodeJS.ErrnoException | undefined;
    upstream.on("error", (err) => (backendError = err));
    const closed = new Promise((r) => upstream!.once("close", r));
    raw.resetAndDestroy();
    // The backend gets a reset (not a FIN it could take for a complete request), and closes.
    await closed;
    assert.equal(backendError?.code, "ECONNRESET");
    while (h.terminator!.connections().length > 0) await new Promise((r) => setImmediate(r));
  });
});

describe("serve --backend: a backend that is down", { timeout: 120_000 }, () => {
  test("refused: each client is closed promptly, the outage is logged once", async () => {
    // A port nothing listens on.
    const probe = createServer();
    probe.listen(0, "127.0.0.1");
    await once(probe, "listening");
    const deadPort = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const lines: string[] = [];
    const h = await terminator(deadPort, { log: (m) => lines.push(m) });
    for (let i = 0; i < 3; i++) {
      const c = await connectTls(h.port);
      c.on("error", () => {});
      c.write("anyone there?");
      await once(c, "close");
    }
    const about = lines.filter((l) => l.includes(`127.0.0.1:${deadPort}`));
    assert.equal(about.length, 1, about.join("\n"));
    assert.match(about[0]!, /unavailable: .*(refused|ECONNREFUSED)/i);
    assert.equal(h.terminator!.stats().backendErrors, 3);
    // Back up on the same port: one line says so, with the count in between.
    const up = createServer((s) => s.end("back"));
    up.listen(deadPort, "127.0.0.1");
    await once(up, "listening");
    cleanups.push(() => up.close());
    const c = await connectTls(h.port);
    assert.equal((await readAll(c)).toString(), "back");
    assert.ok(
      lines.some((l) => /reachable again \(3 connections failed\)/.test(l)),
      lines.join("\n"),
    );
  });

  test("a backend that never accepts: the connect timeout closes the client", async () => {
    // A listening socket whose backlog is full stops completing handshakes: fill a backlog of 1.
    const { spawn } = await import("node:child_process");
    // Python's listen(0) with nobody accepting; connections beyond the backlog hang in SYN_SENT.
    const py = spawn(
      "python3",
      [
        "-c",
        "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)",
      ],
      { stdio: ["ignore", "pipe", "ignore"] },
    );
    cleanups.push(() => py.kill("SIGKILL"));
    const [portLine] = (await once(py.stdout, "data")) as [Buffer];
    const port = Number(portLine.toString().trim());
    const fillers: Socket[] = [];
    const { connect } = await import("node:net");
    for (let i = 0; i < 4; i++) {
      const f = connect(port, "127.0.0.1");
      f.on("error", () => {});
      fillers.push(f);
    }
    cleanups.push(() => {
      for (const f of fillers) f.destroy();
    });
    const lines: string[] = [];
    const h = await terminator(port, { connectTimeout: 300, log: (m) => lines.push(m) });
    const c = await connectTls(h.port);
    c.on("error", () => {});
    await once(c, "close");
    assert.ok(
      lines.some((l) => /unavailable: connect timed out/.test(l)),
      `expected a timeout line, got:\n${lines.join("\n")}`,
    );
  });
});

describe("serve --backend --proxy-protocol and --alpn", { timeout: 120_000 }, () => {
  /** A backend that reads the PROXY v2 header, answers with it as JSON and closes. */
  const proxyParser = (s: Socket) => {
    let buf = Buffer.alloc(0);
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const hdr = decodeProxyV2(buf);
      if (!hdr) return;
      s.removeAllListeners("data");
      s.end(
        JSON.stringify({
          ...hdr,
          tlvs: Object.fromEntries([...hdr.tlvs].map(([k, v]) => [k, v.toString()])),
          rest: buf.subarray(hdr.length).toString(),
        }),
      );
    });
  };

  test("the header carries the client's and the local address, ALPN and SNI, before the payload", async () => {
    const b = await backend(proxyParser);
    const h = await terminator(b.port, { proxyProtocol: true, alpn: "h2,http/1.1" });
    const c = await connectTls(h.port, { ALPNProtocols: ["h2"] });
    assert.equal(c.alpnProtocol, "h2");
    c.write("payload");
    const got = JSON.parse((await readAll(c)).toString());
    assert.equal(got.command, "PROXY");
    assert.equal(got.family, "INET");
    assert.equal(got.sourceAddress, "127.0.0.1");
    assert.equal(got.sourcePort, c.localPort);
    assert.equal(got.destAddress, "127.0.0.1");
    assert.equal(got.destPort, h.port);
    assert.equal(got.tlvs["1"], "h2");
    assert.equal(got.tlvs["2"], "localhost");
    assert.equal(got.rest, "payload");
  });

  test("IPv6 listener: a TCP6 header", async (t) => {
    const b = await backend(proxyParser);
    let h: ServeHandle;
    try {
      h = await startServe({
        listen: "[::1]:0",
        cert: pki.certFile,
        key: pki.keyFile,
        backend: `127.0.0.1:${b.port}`,
        proxyProtocol: true,
      });
    } catch (err) {
      t.skip(`no IPv6 loopback here: ${String(err)}`);
      return;
    }
    cleanups.push(() => h.close());
    const c = await connectTls(h.port, { host: "::1", ca: undefined, rejectUnauthorized: false });
    c.write("six");
    const got = JSON.parse((await readAll(c)).toString());
    assert.equal(got.family, "INET6");
    assert.equal(got.sourceAddress, "0:0:0:0:0:0:0:1");
    assert.equal(got.destAddress, "0:0:0:0:0:0:0:1");
    assert.equal(got.sourcePort, c.localPort);
    assert.equal(got.destPort, h.port);
    assert.equal(got.tlvs["1"], undefined, "no ALPN negotiated, no ALPN TLV");
  });

  test("encoding: mixed families map IPv4 into IPv6; no addresses makes a LOCAL header", () => {
    const mixed = decodeProxyV2(
      encodeProxyV2({ sourceAddress: "192.0.2.7", sourcePort: 1, destAddress: "2001:db8::1", destPort: 443 }),
    );
    assert.equal(mixed?.family, "INET6");
    assert.equal(mixed?.sourceAddress, "0:0:0:0:0:ffff:c000:207");
    assert.equal(mixed?.destAddress, "2001:db8:0:0:0:0:0:1");
    const mapped = decodeProxyV2(
      encodeProxyV2({
        sourceAddress: "::ffff:10.1.2.3",
        sourcePort: 5,
        destAddress: "::ffff:10.0.0.1",
        destPort: 6,
      }),
    );
    assert.equal(mapped?.family, "INET");
    assert.equal(mapped?.sourceAddress, "10.1.2.3");
    const local = encodeProxyV2({
      sourceAddress: undefined,
      sourcePort: undefined,
      destAddress: undefined,
      destPort: undefined,
    });
    assert.equal(local.length, 16);
    assert.equal(local[12], 0x20);
  });

  test("curl --http2 negotiates h2 through the terminator to an h2c backend", {
    skip: !have("curl"),
  }, async () => {
    const h2c = createH2cServer((req, res) => res.end(`h2 backend saw ${req.httpVersion} ${req.url}\n`));
    h2c.listen(0, "127.0.0.1");
    await once(h2c, "listening");
    cleanups.push(() => h2c.close());
    const h = await terminator((h2c.address() as AddressInfo).port, { alpn: "h2" });
    const r = await run("curl", [
      "-sS",
      "--http2",
      "--resolve",
      `localhost:${h.port}:127.0.0.1`,
      "--cacert",
      pki.caFile,
      "-w",
      "%{http_version}",
      `https://localhost:${h.port}/hello`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "h2 backend saw 2.0 /hello\n2");
  });
});

describe("serve --backend: resumption through the terminator", { timeout: 120_000 }, () => {
  /** One connection: sends a byte, waits for the echo (TLS 1.3 tickets come before it), closes. */
  async function once_(port: number, version: "TLSv1.2" | "TLSv1.3", session?: Buffer) {
    const sessions: Buffer[] = [];
    const c = tlsConnect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: pki.caCert,
      session,
      minVersion: version,
      maxVersion: version,
    });
    c.on("session", (s: Buffer) => sessions.push(s));
    await once(c, "secureConnect");
    c.write("x");
    await readBytes(c, 1);
    const reused = c.isSessionReused();
    c.end();
    await once(c, "close");
    return { reused, session: sessions.at(-1) };
  }

  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`Node client, ${version}: full, then resumed through the cache`, async () => {
      const b = await backend(echo);
      const h = await terminator(b.port);
      const first = await once_(h.port, version);
      assert.equal(first.reused, false);
      assert.ok(first.session);
      let session = first.session;
      for (let i = 0; i < 3; i++) {
        const next = await once_(h.port, version, session);
        assert.equal(next.reused, true, `connection ${i + 2}`);
        session = next.session ?? session;
      }
      assert.ok(h.cache.stats().hits >= 3);
    });
  }

  test("openssl s_client -sess_out/-sess_in, TLS 1.2 and 1.3", async () => {
    const b = await backend(echo);
    const h = await terminator(b.port);
    for (const version of ["1.2", "1.3"] as const) {
      const sess = join(tmp, `s-${version}.pem`);
      const first = await sClient({ port: h.port, version, sessOut: sess, input: "ping\n", stdinEnd: 1000 });
      assert.equal(first.full, 1, first.stdout);
      assert.match(first.stdout, /ping/);
      const second = await sClient({ port: h.port, version, sessIn: sess, input: "pong\n", stdinEnd: 1000 });
      assert.equal(second.reused, 1, `TLS ${version}: ${second.stdout}`);
      assert.match(second.stdout, /pong/);
    }
  });
});

describe("serve --backend: the command", { timeout: 120_000 }, () => {
  test("--workers 2: sessions resume across the workers (TLS 1.2 ids, TLS 1.3 tickets)", async () => {
    const b = await backend(echo);
    const state = join(tmp, "state-workers");
    const { spawn } = await import("node:child_process");
    const child = spawn(
      process.execPath,
      [...entry, "serve", "--listen", "127.0.0.1:0", "--state-dir", state, "--workers", "2"].concat([
        "--backend",
        `127.0.0.1:${b.port}`,
        "--proxy-protocol",
      ]),
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
    );
    const exited = once(child, "exit");
    cleanups.push(() => child.kill("SIGKILL"));
    let out = "";
    child.stdout.setEncoding("utf8");
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: string) => {
        out += d;
        if (/forwarding to/.test(out)) resolve();
      });
      void exited.then(() => reject(new Error(`serve exited: ${out}`)));
    });
    assert.match(out, /forwarding to 127\.0\.0\.1:\d+ \(PROXY v2\)/);
    const port = Number(/listening on https:\/\/127\.0\.0\.1:(\d+) /.exec(out)![1]);
    const caFile = join(state, "tls", "cert.pem");
    for (const version of ["1.2", "1.3"] as const) {
      const sess = join(tmp, `w-${version}.pem`);
      // The PROXY header comes back through the echo ahead of what s_client sent.
      const first = await sClient({ port, version, sessOut: sess, caFile, input: "a\n", stdinEnd: 1000 });
      assert.equal(first.full, 1, first.stdout);
      // Round-robin over two workers: six connections land on both; each must resume.
      let reused = 0;
      for (let i = 0; i < 6; i++) {
        const r = await sClient({
          port,
          version,
          sessIn: sess,
          sessOut: sess,
          caFile,
          input: "b\n",
          stdinEnd: 800,
        });
        reused += r.reused;
      }
      assert.equal(reused, 6, `TLS ${version}`);
    }
    child.kill("SIGTERM");
    const [code] = await exited;
    assert.equal(code, 0);
  });

  test("--help explains terminator mode", async () => {
    const r = await cli(["serve", "--help"]);
    assert.equal(r.code, 0);
    for (const flag of ["--backend", "--proxy-protocol", "--alpn", "--connect-timeout"]) {
      assert.ok(r.stdout.includes(flag), flag);
    }
    assert.match(r.stdout, /no status page/);
    assert.match(r.stdout, /sesscache serve .*--backend 127\.0\.0\.1:8080/);
  });

  const bad: [string, string[], RegExp][] = [
    ["a backend without a port", ["--backend", "localhost"], /--backend.*HOST:PORT/],
    ["backend port 0", ["--backend", "127.0.0.1:0"], /port must not be 0/],
    ["--alpn without --backend", ["--alpn", "h2"], /--alpn only make sense with --backend/],
    ["--proxy-protocol without --backend", ["--proxy-protocol"], /--proxy-protocol/],
    ["an empty ALPN name", ["--backend", "127.0.0.1:1", "--alpn", "h2,,x"], /invalid --alpn/],
    ["--connect-timeout 0", ["--backend", "127.0.0.1:1", "--connect-timeout", "0"], /--connect-timeout/],
  ];
  for (const [what, args, pattern] of bad) {
    test(`one-line error, exit 2: ${what}`, async () => {
      const r = await cli([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        join(tmp, "state-bad"),
        ...args,
      ]);
      assertOneLineError(r, pattern);
    });
  }
  test("one-line error with --workers 2 too", async () => {
    const r = await cli([
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--state-dir",
      join(tmp, "state-bad"),
      "--workers",
      "2",
      "--alpn",
      "h2",
    ]);
    assertOneLineError(r, /--alpn only make sense with --backend/);
  });
});
