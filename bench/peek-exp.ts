import { once } from "node:events";
import net, { type AddressInfo, type Socket } from "node:net";
import tls from "node:tls";
import { testPki } from "../test/support/certs.js";
import { CHILD_ENV, serveInChild } from "./server-child.js";

const RESPONSE = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
const variant = process.env[CHILD_ENV]!;
// find net's private symbols for the user-buffer read mode
const probe = new net.Socket({ onread: { buffer: Buffer.alloc(1), callback: () => {} } } as never);
const syms = Object.getOwnPropertySymbols(probe);
const kBuffer = syms.find((s) => s.description === "kBuffer")!;
const kBufferCb = syms.find((s) => s.description === "kBufferCb")!;
const kBufferGen = syms.find((s) => s.description === "kBufferGen")!;
probe.destroy();
await serveInChild(async () => {
  const pki = testPki();
  let handshakes = 0;
  const server = tls.createServer({ key: pki.key, cert: pki.cert, sessionIdContext: "x" }, (s) => {
    handshakes++;
    s.on("error", () => {});
    s.once("data", () => s.end(RESPONSE));
  });
  const map = new Map<string, Buffer>();
  server.on("newSession", (id: Buffer, der: Buffer, done: () => void) => {
    map.set(id.toString("hex"), der);
    done();
  });
  server.on("resumeSession", (id: Buffer, cb: (e: Error | null, s: Buffer | null) => void) =>
    cb(null, map.get(id.toString("hex")) ?? null),
  );
  const tlsListener = server.listeners("connection")[0] as (s: Socket) => void;
  if (variant === "flow") {
    server.removeAllListeners("connection");
    server.on("connection", (socket: Socket) => {
      const onData = (chunk: Buffer) => {
        socket.removeListener("data", onData);
        socket.pause();
        socket.unshift(chunk);
        tlsListener.call(server, socket);
      };
      socket.on("data", onData);
    });
  } else if (variant === "userbuf") {
    const buf = Buffer.allocUnsafe(17 * 1024);
    server.removeAllListeners("connection");
    server.on("connection", (socket: Socket) => {
      const s = socket as unknown as Record<symbol, unknown> & {
        _handle: { useUserBuffer(b: Buffer): void };
      };
      s[kBuffer] = buf;
      s[kBufferGen] = null;
      s[kBufferCb] = (n: number) => {
        const chunk = Buffer.from(buf.subarray(0, n));
        s[kBuffer] = undefined;
        s[kBufferCb] = undefined;
        // stop reading into our buffer: hand the bytes to Node
        socket.pause();
        socket.unshift(chunk);
        tlsListener.call(server, socket);
        return true;
      };
      s._handle.useUserBuffer(buf);
    });
  }
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as AddressInfo).port,
    handshakes: () => handshakes,
    close: async () => {
      server.close();
    },
  };
});
