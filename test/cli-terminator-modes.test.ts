// `sesscache serve --backend`, the TLS terminator: --proxy-protocol and --alpn (a PROXY v2 parser and
// an h2c server as backends), resumption through it (openssl s_client), and the command: --workers,
// --help, errors. Peers: Node's tls client, openssl s_client, curl --http2. The data path is in
// cli-terminator.test.ts.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer as createH2cServer } from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import { describe, test } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { decodeProxyV2, encodeProxyV2 } from "../src/cli/proxy-protocol.js";
import type { ServeHandle } from "../src/cli/serve.js";
import { assertOneLineError, cli, entry, root } from "./support/cli-run.js";
import {
  backend,
  cleanups,
  connectTls,
  echo,
  pki,
  readAll,
  readBytes,
  terminator,
  tmp,
} from "./support/terminator.js";
import { have, run, sClient } from "./support/tls-peers.js";

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
      h = await terminator(b.port, { listen: "[::1]:0", proxyProtocol: true });
    } catch (err) {
      t.skip(`no IPv6 loopback here: ${String(err)}`);
      return;
    }
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
