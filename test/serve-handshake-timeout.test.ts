// Found by `npm run fuzz -- client-hello-socket`: a client that sends a complete ClientHello and
// then goes silent. Node's handshake timer fires, but a plain tls.Server only emits tlsClientError
// and leaves the socket open (https.Server destroys it), so `serve --backend` (a tls.Server) held
// such connections forever. Both serve modes must close it once the handshake timeout passes.
import assert from "node:assert/strict";
import { once } from "node:events";
import { connect, createServer, type Socket } from "node:net";
import { after, describe, it } from "node:test";
import { loadCorpus } from "../fuzz/corpus.js";
import { type ServeHandle, startServe } from "../src/cli/serve.js";
import { testPki } from "./support/certs.js";

const pki = testPki();
const HANDSHAKE_TIMEOUT_MS = 300;
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Node reads the server's handshake timeout per connection from a private symbol. */
function setHandshakeTimeout(handle: ServeHandle, ms: number): void {
  const sym = Object.getOwnPropertySymbols(handle.server).find((s) => s.description === "handshake-timeout");
  assert.ok(sym, "Node keeps handshakeTimeout under Symbol(handshake-timeout)");
  (handle.server as unknown as Record<symbol, number>)[sym] = ms;
}

/** Sends a real ClientHello, then nothing: resolves with how long the server kept the connection. */
async function helloThenSilence(port: number, limitMs: number): Promise<number | "open"> {
  const hello = loadCorpus("client-hello").find((h) => h.length < 400)!;
  const sock = connect({ port, host: "127.0.0.1" });
  sock.on("error", () => {});
  sock.on("data", () => {}); // the ServerHello flight
  await once(sock, "connect");
  const t = Date.now();
  sock.write(hello);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      sock.destroy();
      resolve("open");
    }, limitMs);
    sock.once("close", () => {
      clearTimeout(timer);
      resolve(Date.now() - t);
    });
  });
}

describe("serve: a client silent after its ClientHello is closed at the handshake timeout", () => {
  for (const mode of ["https", "terminator"] as const) {
    it(mode, async () => {
      let backendPort: number | undefined;
      if (mode === "terminator") {
        const open = new Set<Socket>();
        const backend = createServer((s) => {
          open.add(s);
          s.on("error", () => {});
          s.once("close", () => open.delete(s));
        });
        backend.listen(0, "127.0.0.1");
        await once(backend, "listening");
        backendPort = (backend.address() as { port: number }).port;
        cleanups.push(async () => {
          for (const s of open) s.destroy();
          backend.close();
        });
      }
      const handle = await startServe({
        listen: "127.0.0.1:0",
        cert: pki.certFile,
        key: pki.keyFile,
        log: () => {},
        backend: backendPort === undefined ? undefined : `127.0.0.1:${backendPort}`,
      });
      cleanups.push(() => handle.close());
      setHandshakeTimeout(handle, HANDSHAKE_TIMEOUT_MS);
      // Generous bound for a busy machine; before the fix the terminator kept it open for good.
      const held = await helloThenSilence(handle.port, 10_000);
      assert.notEqual(held, "open", `${mode}: connection still open after 10 s`);
      assert.ok((held as number) >= HANDSHAKE_TIMEOUT_MS - 50, `${mode}: closed after ${held} ms`);
    });
  }
});
