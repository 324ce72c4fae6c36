// The TLS server every handshake benchmark serves: one small page per connection, counting its
// handshakes and resumptions. A variant adds its listeners or adapter in `setup`.
import { once } from "node:events";
import type { AddressInfo, Socket } from "node:net";
import tls from "node:tls";
import { statefulServerOptions } from "../src/server/index.js";
import { testPki } from "../test/support/certs.js";
import type { BenchServer } from "./server-child.js";

const RESPONSE = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";

export interface TlsBenchServerOptions {
  /** Stateful sessions (no tickets: SSL_OP_NO_TICKET, session-id context "bench"). */
  stateful: boolean;
  maxVersion?: tls.SecureVersion;
  /** What the variant adds: listeners, an adapter, a different connection listener. */
  setup?(server: tls.Server): void;
  /** Runs once the server has closed (a store to close, say). */
  afterClose?(): Promise<void>;
}

export async function startTlsBenchServer(o: TlsBenchServerOptions): Promise<BenchServer> {
  const pki = testPki();
  let handshakes = 0;
  let resumed = 0;
  const server = tls.createServer(
    {
      key: pki.key,
      cert: pki.cert,
      ...(o.stateful ? statefulServerOptions({ sessionIdContext: "bench" }) : {}),
      ...(o.maxVersion ? { maxVersion: o.maxVersion } : {}),
    },
    (s) => {
      handshakes++;
      if (s.isSessionReused()) resumed++;
      s.on("error", () => {});
      s.once("data", () => s.end(RESPONSE));
    },
  );
  o.setup?.(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const open = new Set<Socket>();
  server.on("connection", (c: Socket) => {
    open.add(c);
    c.once("close", () => open.delete(c));
  });
  return {
    port: (server.address() as AddressInfo).port,
    handshakes: () => handshakes,
    resumed: () => resumed,
    close: async () => {
      const closed = once(server, "close");
      server.close();
      for (const c of open) c.destroy();
      await closed;
      await o.afterClose?.();
    },
  };
}

/** The stateful cache of Node's documentation: a Map on newSession/resumeSession. */
export function useMapCache(server: tls.Server): void {
  const map = new Map<string, Buffer>();
  server.on("newSession", (id: Buffer, der: Buffer, done: () => void) => {
    map.set(id.toString("hex"), der);
    done();
  });
  server.on("resumeSession", (id: Buffer, cb: (e: Error | null, s: Buffer | null) => void) => {
    cb(null, map.get(id.toString("hex")) ?? null);
  });
}
