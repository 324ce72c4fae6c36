// Security review of `serve --backend` (terminator.ts, proxy-protocol.ts): attacks a client can
// make on the PROXY v2 header and on the forwarding, each against real sockets on 127.0.0.1.
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { Duplex } from "node:stream";
import { describe, test } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { decodeProxyV2, encodeProxyV2 } from "../src/cli/proxy-protocol.js";
import { cleanups, pki, terminator } from "./support/terminator.js";

/** A backend that records everything each connection sends until it closes (end or reset). */
async function recordingBackend(
  opts: { endOnEnd?: boolean } = {},
): Promise<{ port: number; received: Promise<Buffer>[] }> {
  const received: Promise<Buffer>[] = [];
  const open = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    open.add(s);
    const chunks: Buffer[] = [];
    s.on("data", (d: Buffer) => chunks.push(d));
    // Answers a clean end with its own, so a normal connection closes both ways.
    if (opts.endOnEnd !== false) s.once("end", () => s.end());
    received.push(
      new Promise((resolve) => {
        s.once("close", () => {
          open.delete(s);
          resolve(Buffer.concat(chunks));
        });
      }),
    );
    s.on("error", () => {});
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(() => {
    for (const s of open) s.destroy();
    server.close();
  });
  return { port: (server.address() as AddressInfo).port, received };
}

/**
 * A TLS 1.3 client whose Finished, first application bytes and a TCP reset reach the server
 * together: its TLS records go through a relay that sends the ClientHello at once and holds the
 * rest until `payload` is written, then writes them all and resets the connection.
 */
async function finishedDataReset(port: number, payload: string): Promise<void> {
  const raw = netConnect({ host: "127.0.0.1", port });
  await once(raw, "connect");
  raw.on("error", () => {});
  const held: Buffer[] = [];
  let writes = 0;
  const relay = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      // The first write is the ClientHello; everything after it waits.
      if (writes++ === 0) raw.write(chunk);
      else held.push(chunk);
      cb();
    },
  });
  raw.on("data", (d) => relay.push(d));
  const c = tlsConnect({ socket: relay, servername: "localhost", ca: pki.caCert, minVersion: "TLSv1.3" });
  c.on("error", () => {});
  await once(c, "secureConnect");
  c.write(payload);
  // Let the TLS layer hand the encrypted payload to the relay.
  await new Promise((r) => setImmediate(r));
  raw.write(Buffer.concat(held));
  raw.resetAndDestroy();
  await once(raw, "close");
  c.destroy();
}

describe("review: serve --backend --proxy-protocol", { timeout: 60_000 }, () => {
  test("a client that resets right after its Finished gets no LOCAL header in front of its bytes", async () => {
    const b = await recordingBackend();
    const h = await terminator(b.port, { proxyProtocol: true });
    // The client runs in this process: its Finished, payload and reset all reach the kernel before
    // the server reads any of them, so the server asks for the peer's address after the reset.
    for (let i = 0; i < 3; i++) {
      // Registered after the terminator's listener: it runs once that one has decided.
      const secured = once(h.server, "secureConnection");
      await finishedDataReset(h.port, `GET /admin HTTP/1.0\r\nX-Try: ${i}\r\n\r\n`);
      await secured;
    }
    // Before the fix each went to the backend behind a LOCAL header ("use the connection's own
    // addresses": the terminator's) followed by the client's request.
    assert.equal(h.terminator!.stats().connections, 0);
    // A normal client still gets through, behind a PROXY header naming it.
    const c = tlsConnect({ host: "127.0.0.1", port: h.port, servername: "localhost", ca: pki.caCert });
    await once(c, "secureConnect");
    const clientPort = c.localPort;
    c.end("hello");
    await once(c, "end");
    c.destroy();
    assert.equal(b.received.length, 1);
    const bytes = await b.received[0]!;
    const hdr = decodeProxyV2(bytes);
    assert.ok(hdr);
    assert.equal(hdr.command, "PROXY");
    assert.equal(hdr.sourcePort, clientPort);
    assert.equal(bytes.subarray(hdr.length).toString(), "hello");
  });
});

describe("review: serve --backend, a client reset before its handshake is read", { timeout: 60_000 }, () => {
  test("holds no backend connection open (Node reads that reset as a clean end)", async () => {
    // A backend that, like many, keeps its half open after the client's end until it is closed.
    const b = await recordingBackend({ endOnEnd: false });
    const h = await terminator(b.port);
    for (let i = 0; i < 3; i++) {
      const secured = once(h.server, "secureConnection");
      await finishedDataReset(h.port, `GET / HTTP/1.0\r\nX-Try: ${i}\r\n\r\n`);
      await secured;
    }
    // Before the fix each such client was forwarded, seen as a half-close, and the pair stayed open
    // until the backend closed: fds held for a client that keeps nothing itself.
    assert.equal(h.terminator!.stats().connections, 0);
    assert.equal(h.terminator!.connections().length, 0);
  });
});

describe("review: a client's own PROXY header", { timeout: 60_000 }, () => {
  test("a header the client sends first arrives after ours, as payload", async () => {
    const b = await recordingBackend();
    const h = await terminator(b.port, { proxyProtocol: true });
    const forged = encodeProxyV2({
      sourceAddress: "10.9.8.7",
      sourcePort: 1,
      destAddress: "10.0.0.1",
      destPort: 443,
    });
    const c = tlsConnect({ host: "127.0.0.1", port: h.port, servername: "localhost", ca: pki.caCert });
    // Queued before the handshake completes, so it is the first application data the server reads.
    c.write(forged);
    await once(c, "secureConnect");
    const clientPort = c.localPort;
    c.end();
    await once(c, "end");
    c.destroy();
    const bytes = await b.received[0]!;
    const ours = decodeProxyV2(bytes);
    assert.ok(ours);
    assert.equal(ours.sourceAddress, "127.0.0.1");
    assert.equal(ours.sourcePort, clientPort);
    assert.deepEqual(bytes.subarray(ours.length), forged);
  });
});

describe("review: PROXY v2 TLVs", { timeout: 60_000 }, () => {
  test("SNI and ALPN TLVs carry the bytes the client sent: long values, bytes over 0x7f, CR LF", async () => {
    const b = await recordingBackend();
    const alpn = `\u00e9${"p".repeat(253)}`; // 255 bytes in UTF-8
    const h = await terminator(b.port, { proxyProtocol: true, alpn: [alpn, "h2"] });
    const sni = `${"\u00e9".repeat(120)}a\r\nb`; // 244 bytes in UTF-8
    const c = tlsConnect({
      host: "127.0.0.1",
      port: h.port,
      servername: sni,
      ca: pki.caCert,
      checkServerIdentity: () => undefined,
      ALPNProtocols: [alpn],
    });
    await once(c, "secureConnect");
    c.end("payload");
    await once(c, "end");
    c.destroy();
    const bytes = await b.received[0]!;
    const hdr = decodeProxyV2(bytes);
    assert.ok(hdr);
    assert.deepEqual(hdr.tlvs.get(0x01), Buffer.from(alpn, "utf8"));
    assert.deepEqual(hdr.tlvs.get(0x02), Buffer.from(sni, "utf8"));
    assert.equal(bytes.subarray(hdr.length).toString(), "payload");
  });
});
