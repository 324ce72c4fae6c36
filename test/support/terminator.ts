// The terminator tests' kit (test/cli-terminator*.test.ts): plain TCP backends on 127.0.0.1, a
// terminator (startServe with --backend) in the test's process, and socket helpers. What they make
// is closed after the importing file's tests.
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from "node:tls";
import { type ServeHandle, type ServeOptions, startServe } from "../../src/cli/serve.js";
import { testPki } from "./certs.js";

export const tmp = mkdtempSync(join(tmpdir(), "sesscache-term-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
export const pki = testPki();

/** Run after the file's tests, last registered first. */
export const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A plain TCP backend on 127.0.0.1 (half-open sockets); its connections are destroyed at the end. */
export async function backend(onConnection: (s: Socket) => void): Promise<{ server: Server; port: number }> {
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

export async function terminator(backendPort: number, extra: ServeOptions = {}): Promise<ServeHandle> {
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

export function connectTls(
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
export function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on("data", (d: Buffer) => chunks.push(d));
    s.once("end", () => resolve(Buffer.concat(chunks)));
    s.once("error", reject);
  });
}

/** Reads until `n` bytes arrived (not to the end). */
export function readBytes(s: Socket, n: number): Promise<Buffer> {
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

export const echo = (s: Socket) => s.pipe(s);
