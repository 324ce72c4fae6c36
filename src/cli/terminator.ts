// `serve --backend HOST:PORT`: each TLS connection's decrypted bytes go to a plain TCP service and
// its answers come back, so sesscache stands where hitch or stunnel stand. One backend connection
// per client connection; back-pressure through pipe() both ways (a slow side pauses the other, so
// at most a high-water mark is buffered per direction), half-close passed on both ways, and an
// error on either side destroys the other.
import { connect, type Socket } from "node:net";
import type { TLSSocket, Server as TlsServer } from "node:tls";
import { parseListen } from "./args.js";
import { describeError } from "./errors.js";
import type { LogFields } from "./logger.js";
import { encodeProxyV2 } from "./proxy-protocol.js";

export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

export interface BackendAddress {
  host: string;
  port: number;
}

export interface TerminatorOptions {
  backend: BackendAddress;
  /** Send a PROXY protocol v2 header (with ALPN and SNI TLVs) before any payload. */
  proxyProtocol?: boolean;
  /** Milliseconds to wait for the backend to accept (default 5000). */
  connectTimeout?: number;
  log?: (message: string, fields?: LogFields) => void;
}

export interface TerminatorStats {
  /** TLS connections handed to the backend. */
  connections: number;
  /** Of those, still open. */
  active: number;
  /** Backend connections that failed (refused, unreachable, timed out) or broke with an error. */
  backendErrors: number;
  /** Payload bytes written to the backend (PROXY header included) and read from it, over closed connections. */
  bytesToBackend: number;
  bytesFromBackend: number;
}

export interface Terminator {
  stats(): TerminatorStats;
  /** The open connection pairs (for diagnostics and tests: their buffers show back-pressure at work). */
  connections(): { client: TLSSocket; upstream: Socket }[];
  /** Destroys every open backend connection (the server's close drops the client sides). */
  close(): void;
}

/** "HOST:PORT" or "[IPv6]:PORT" of the backend; the port must not be 0. Throws InvalidArgumentError. */
export function parseBackend(value: string): BackendAddress {
  const a = parseListen(value);
  if (a.port === 0) throw new Error("the backend's port must not be 0");
  return a;
}

/** Forwards every secure connection of `server` to the backend. */
export function attachTerminator(server: TlsServer, options: TerminatorOptions): Terminator {
  const { backend } = options;
  const connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const log = options.log ?? (() => {});
  const where = `${backend.host.includes(":") ? `[${backend.host}]` : backend.host}:${backend.port}`;
  const stats: TerminatorStats = {
    connections: 0,
    active: 0,
    backendErrors: 0,
    bytesToBackend: 0,
    bytesFromBackend: 0,
  };
  const open = new Map<Socket, TLSSocket>();
  // Logged once per outage, not once per connection: the first failure says why, the next success
  // says how many failed in between.
  let down = false;
  let failedWhileDown = 0;

  const onSecure = (client: TLSSocket) => {
    // A client that reset right after its Finished is gone before we look (getpeername fails). Node
    // reads such a reset as a clean end once a ticket write failed unseen: forwarded, it would be a
    // half-close holding its backend connection until the backend closes. Drop it.
    if (client.remoteAddress === undefined) {
      client.destroy();
      return;
    }
    let header: Buffer | undefined;
    if (options.proxyProtocol) {
      header = encodeProxyV2(
        {
          sourceAddress: client.remoteAddress,
          sourcePort: client.remotePort,
          destAddress: client.localAddress,
          destPort: client.localPort,
        },
        {
          alpn: client.alpnProtocol,
          authority: (client as TLSSocket & { servername?: string }).servername,
        },
      );
      // A LOCAL header (no usable address) would tell the backend the bytes are ours: drop it.
      if ((header[12]! & 0x0f) !== 1) {
        client.destroy();
        return;
      }
    }
    stats.connections++;
    stats.active++;
    const upstream = connect({ host: backend.host, port: backend.port, allowHalfOpen: true });
    open.set(upstream, client);
    let connected = false;
    upstream.setNoDelay(true);
    upstream.setTimeout(connectTimeout, () => {
      if (!connected) upstream.destroy(Object.assign(new Error("connect timed out"), { code: "ETIMEDOUT" }));
    });
    upstream.once("connect", () => {
      connected = true;
      upstream.setTimeout(0);
      if (down) {
        down = false;
        log(`sesscache serve: backend ${where} reachable again (${failedWhileDown} connections failed)`, {
          backend: where,
          failed: failedWhileDown,
        });
        failedWhileDown = 0;
      }
    });
    // Written first, so nothing the client sends can precede it; a connecting socket holds it.
    if (header) upstream.write(header);
    // pipe() pauses the source when the destination's write() returns false and resumes on 'drain',
    // and ends the destination when the source ends: a client FIN becomes the backend's, and the
    // backend's FIN becomes the client's close_notify + FIN. Both sockets are allowHalfOpen, so the
    // other direction keeps flowing.
    client.pipe(upstream);
    upstream.pipe(client);

    let failed = false;
    upstream.on("error", (err: NodeJS.ErrnoException) => {
      failed = true;
      stats.backendErrors++;
      if (!connected) {
        failedWhileDown++;
        if (!down) {
          down = true;
          log(`sesscache serve: backend ${where} unavailable: ${describeError(err)}`, {
            backend: where,
            code: err.code,
          });
        }
      }
      client.destroy();
    });
    // The client's errors (resets, bad records) are its own business; the backend just goes too,
    // with a reset, so it does not mistake an aborted stream for a complete one (a FIN).
    const abortUpstream = () => {
      if (!upstream.destroyed) upstream.resetAndDestroy();
    };
    client.on("error", abortUpstream);
    // A side that closes without a clean end in both directions takes the other with it; a side
    // that closed cleanly has passed its FIN on already, and the other finishes flushing by itself.
    client.once("close", () => {
      if (!(client.readableEnded && client.writableFinished)) abortUpstream();
    });
    upstream.once("close", () => {
      open.delete(upstream);
      stats.active--;
      stats.bytesToBackend += upstream.bytesWritten;
      stats.bytesFromBackend += upstream.bytesRead;
      if (failed || !(upstream.readableEnded && upstream.writableFinished)) client.destroy();
    });
  };
  server.on("secureConnection", onSecure);

  return {
    stats: () => ({ ...stats }),
    connections: () => [...open].map(([upstream, client]) => ({ client, upstream })),
    close() {
      server.off("secureConnection", onSecure);
      for (const s of open.keys()) s.destroy();
    },
  };
}
