// The hand-off (spec §9.1–9.4): takes each connection from the server before Node's TLS layer, reads
// its ClientHello (bounded in bytes and time), tells the resumption side what it offered, and gives
// the socket to Node with the bytes put back, under the secure context of the virtual host its SNI
// selects (R24).
//
// Every handshake passes through here, so nothing below allocates a closure per connection or adds
// a property to Node's sockets (which would give them a second shape and slow Node's own socket
// code): the socket listeners are made once per server and find their state in a Map, and one sweep
// timer per server (running only while something waits) enforces the hello deadline.
import type { Socket } from "node:net";
import type tls from "node:tls";
import type { SessionCache } from "../engine/session-cache.js";
import { type ClientHelloInfo, ClientHelloReader, type ClientHelloResult } from "./client-hello.js";
import type { RateLimitedLog } from "./log.js";
import type { AttachedSessionCacheStats } from "./resumption.js";
import { Ticker } from "./ticker.js";
import type { TlsServerInternals, VirtualHosts } from "./vhosts.js";

export type ConnectionListener = (this: tls.Server, socket: Socket) => void;

/** What the hand-off tells about each hello it read (the resumption side). */
export interface HelloSink {
  noteHello(h: ClientHelloInfo, binding: string, routed: boolean, tls13: boolean): void;
}

/** A connection whose first flight is being read. */
class Peek {
  readonly reader = new ClientHelloReader();
  first: Buffer | undefined = undefined;
  rest: Buffer[] | undefined = undefined;
  constructor(
    readonly socket: Socket,
    /** Sweep tick at which it times out. */
    readonly expires: number,
  ) {}
}

export class HelloHandOff {
  /** The server can negotiate TLS 1.3 (else only hellos of servers with virtual hosts are read). */
  peekHellos: boolean;
  /** Connections being read, oldest first (all share one deadline, so also by expiry). */
  private readonly peeking = new Map<Socket, Peek>();
  // Socket listeners, shared by all connections of this server (`this` is the socket).
  private readonly onPeekData: (this: Socket, chunk: Buffer) => void;
  private readonly onPeekGone: (this: Socket) => void;
  /** The hello deadline is counted in its ticks. */
  private readonly ticker: Ticker;
  private readonly helloTicks: number;

  constructor(
    private readonly srv: TlsServerInternals,
    private readonly cache: SessionCache,
    private readonly tlsListener: ConnectionListener | undefined,
    private readonly log: RateLimitedLog,
    private readonly vhosts: VirtualHosts,
    private readonly st: AttachedSessionCacheStats,
    private readonly hellos: HelloSink,
    private readonly helloTimeout: number,
    peekHellos: boolean,
  ) {
    this.peekHellos = peekHellos;
    // A silent connection is closed between helloTimeout and helloTimeout + period after it came.
    this.ticker = new Ticker(helloSweepPeriod(helloTimeout), this.sweep);
    this.helloTicks = Math.ceil(helloTimeout / this.ticker.period) + 1;
    const peeking = this.peeking;
    const self = this;
    this.onPeekData = function onPeekData(this: Socket, chunk: Buffer) {
      const p = peeking.get(this);
      if (p !== undefined) self.peekData(p, chunk);
    };
    this.onPeekGone = function onPeekGone(this: Socket) {
      const p = peeking.get(this);
      if (p !== undefined) self.peekGone(p);
    };
  }

  readonly onConnection = (socket: Socket): void => {
    this.st.connections++;
    try {
      this.cache.handshakeStarted("server");
    } catch (err) {
      this.log.log("counter", () => `handshakeStarted failed: ${(err as Error)?.message}`);
    }
    // Reading the ClientHello is only needed when TLS 1.3 can be negotiated or the server has
    // virtual hosts (the SNI picks the session-id context): else TLS 1.2 resumption needs nothing
    // but Node's own resumeSession.
    const routes = this.vhosts.routes();
    if (
      (!this.peekHellos && !routes) ||
      this.tlsListener === undefined ||
      this.srv.pauseOnConnect ||
      socket.destroyed
    ) {
      // A host that cannot be told gets a context no session is made or resumed under.
      this.handOff(socket, routes ? this.vhosts.unbound : undefined);
      return;
    }
    this.peeking.set(socket, new Peek(socket, this.ticker.tick + this.helloTicks));
    socket.on("data", this.onPeekData);
    // 'close' follows 'end' unless the server allows half-open sockets; the deadline covers those.
    socket.on("close", this.onPeekGone);
    socket.on("error", this.onPeekGone);
    this.ticker.start();
  };

  /**
   * Gives the socket to Node's TLS layer under `binding` (undefined: the server's own context). Node
   * reads `server._sharedCreds` synchronously while it builds the TLSSocket, so the virtual host's
   * context is put there just for that call.
   */
  private handOff(socket: Socket, binding: string | undefined): void {
    if (this.tlsListener === undefined) return; // Node's own listener is still in place
    const srv = this.srv;
    const own = srv._sharedCreds;
    try {
      const ctx = binding === undefined ? undefined : this.vhosts.contextFor(binding);
      if (ctx !== undefined) srv._sharedCreds = ctx as unknown as TlsServerInternals["_sharedCreds"];
      this.tlsListener.call(srv, socket);
    } catch (err) {
      this.log.log("handoff", () => `Node's TLS layer refused a connection: ${(err as Error)?.message}`);
      socket.destroy();
    } finally {
      srv._sharedCreds = own;
    }
  }

  private endPeek(p: Peek): void {
    const s = p.socket;
    s.removeListener("data", this.onPeekData);
    s.removeListener("close", this.onPeekGone);
    s.removeListener("error", this.onPeekGone);
    this.peeking.delete(s);
  }

  peekData(p: Peek, chunk: Buffer): void {
    if (p.first === undefined) p.first = chunk;
    else if (p.rest === undefined) p.rest = [chunk];
    else p.rest.push(chunk);
    const r: ClientHelloResult = p.reader.push(chunk);
    if (r.kind === "more") return;
    this.endPeek(p);
    const s = p.socket;
    // §9.2: stop the flow before putting the bytes back, or Node's TLS layer never sees them.
    s.pause();
    const bytes = p.rest === undefined ? p.first : Buffer.concat([p.first, ...p.rest]);
    const routes = this.vhosts.routes();
    if (r.kind !== "done") {
      this.st.helloNotUnderstood++;
      this.release(s, bytes, routes ? this.vhosts.unbound : undefined);
      return;
    }
    this.st.hellosRead++;
    const h = r.hello;
    if (h.records > 1) this.st.fragmentedHellos++;
    if (!routes) {
      this.accept(s, bytes, h, this.vhosts.defaultBinding, false);
      return;
    }
    // The SNI picks the virtual host, maybe through the application's SNICallback (asynchronous):
    // meanwhile an error on the paused socket must not go unhandled.
    s.on("error", ignoreError);
    this.vhosts.resolve(h.serverName, (binding) => {
      s.removeListener("error", ignoreError);
      if (s.destroyed) {
        this.st.helloAborted++;
        return;
      }
      this.accept(s, bytes, h, binding, true);
    });
  }

  private accept(s: Socket, bytes: Buffer, h: ClientHelloInfo, binding: string, routed: boolean): void {
    this.hellos.noteHello(h, binding, routed, this.peekHellos);
    this.release(s, bytes, binding === this.vhosts.defaultBinding ? undefined : binding);
  }

  private release(s: Socket, bytes: Buffer, binding: string | undefined): void {
    s.unshift(bytes);
    this.handOff(s, binding);
  }

  peekGone(p: Peek): void {
    this.endPeek(p);
    this.st.helloAborted++;
    p.socket.destroy();
  }

  private readonly sweep = (t: number): boolean => {
    for (const p of this.peeking.values()) {
      if (p.expires > t) break;
      this.endPeek(p);
      this.st.helloTimeouts++;
      this.log.log("hello-timeout", `no ClientHello within ${this.helloTimeout} ms: connection closed`);
      p.socket.destroy();
      // What Node emits when its own handshake timer fires, so operators' handlers see these too.
      if (this.srv.listenerCount("tlsClientError") > 0) {
        const err = Object.assign(
          new Error(`TLS handshake timeout: no ClientHello within ${this.helloTimeout} ms`),
          {
            code: "ERR_TLS_HANDSHAKE_TIMEOUT",
          },
        );
        try {
          this.srv.emit("tlsClientError", err, p.socket);
        } catch (e) {
          this.log.log("listener", () => `a tlsClientError listener threw: ${(e as Error)?.message}`);
        }
      }
    }
    return this.peeking.size > 0;
  };
}

/** The sweep period for a hello deadline (also how stale a remembered hello may get). */
export function helloSweepPeriod(helloTimeout: number): number {
  return Math.min(1000, Math.max(5, helloTimeout / 4));
}

function ignoreError(): void {}
