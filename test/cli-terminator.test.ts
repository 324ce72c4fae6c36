// `sesscache serve --backend`, the TLS terminator: the data path. Bytes both ways with bounded
// buffers, half-close, errors and departures on either side, a backend that is down. startServe()
// runs in this process against plain TCP backends the tests run (test/support/terminator.ts);
// cli-terminator-modes.test.ts has PROXY v2, ALPN, resumption and the command itself.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { describe, test } from "node:test";
import type { ServeHandle } from "../src/cli/serve.js";
import { backend, cleanups, connectTls, echo, readAll, readBytes, terminator } from "./support/terminator.js";

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
