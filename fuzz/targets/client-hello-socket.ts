// Target `client-hello-socket`: the ClientHello reader through a live server. A real tls.Server
// with the adapter attached (attachSessionCache) listens on 127.0.0.1; each case opens a raw TCP
// connection (no delay) and writes a first flight (real hellos, mutated or not, and generated ones,
// already cut into TLS records at varied offsets) in TCP pieces cut at varied offsets, each piece
// written only once the previous one has been flushed to the kernel and the event loop has turned.
// Then it half-closes, or stays silent. Checks: nothing is thrown in the process, each connection
// is closed by the server within its deadline (helloTimeout for incomplete hellos, the server's
// handshakeTimeout for complete ones, plus a margin for a busy machine), and after the last case
// no connection or pending hello is left and a Node TLS client still resumes (TLS 1.2 and 1.3).
import { once } from "node:events";
import net from "node:net";
import tls from "node:tls";
import { SessionCache } from "../../src/engine/index.js";
import { attachSessionCache, statefulServerOptions } from "../../src/server/index.js";
import { testPki } from "../../test/support/certs.js";
import { listenLocal, nodeClient, trackConnections } from "../../test/support/tls-peers.js";
import { loadCorpus } from "../corpus.js";
import { expect, FuzzFailure, type FuzzRunner, type FuzzTarget } from "../harness.js";
import type { Rng } from "../prng.js";
import { handshakeOf, helloInput } from "../tls-gen.js";

export const HELLO_TIMEOUT_MS = 250;
export const HANDSHAKE_TIMEOUT_MS = 500;
/** Slack for a machine shared with other work: timers fire late, sockets close late. */
const MARGIN_MS = 2500;
const DEADLINE_MS = Math.max(HELLO_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS) + 100 + MARGIN_MS;

function pieces(input: Uint8Array, rng: Rng): Uint8Array[] {
  const cuts = new Set<number>();
  const r = rng.int(10);
  if (r === 0)
    for (let i = 1; i < Math.min(input.length, 60); i++) cuts.add(i); // byte by byte at first
  else if (r < 4) cuts.add(rng.int(input.length + 1));
  else if (r < 8) for (let i = rng.range(1, 8); i > 0; i--) cuts.add(rng.int(input.length + 1));
  const sorted = [...cuts].filter((c) => c > 0 && c < input.length).sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...sorted, input.length]) {
    out.push(input.subarray(prev, c));
    prev = c;
  }
  return out.filter((p) => p.length > 0);
}

/** Resolves once `sock` closes; rejects after `ms`. */
function closedWithin(sock: net.Socket, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (sock.closed) return resolve();
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new FuzzFailure(`the server left the connection open for more than ${ms} ms`));
    }, ms);
    sock.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  // No event says "the adapter's gauges went back to zero": poll them, bounded.
  while (!pred()) {
    if (Date.now() > end) throw new FuzzFailure(`not settled within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const clientHelloSocketTarget: FuzzTarget = {
  name: "client-hello-socket",
  description: "the ClientHello reader through a live tls.Server with attachSessionCache",
  defaultCases: 3000,
  maxCaseMs: DEADLINE_MS + 1000,
  maxHeapGrowth: 128 * 1024 * 1024,
  async setup(): Promise<FuzzRunner> {
    const pki = testPki();
    const corpus = loadCorpus("client-hello");
    const messages = corpus.map(handshakeOf);
    const errors: unknown[] = [];
    const onError = (err: unknown) => errors.push(err);
    process.on("uncaughtException", onError);
    process.on("unhandledRejection", onError);

    const server = tls.createServer(
      { key: pki.key, cert: pki.cert, ...statefulServerOptions(), handshakeTimeout: HANDSHAKE_TIMEOUT_MS },
      (s) => {
        s.on("error", () => {});
        s.on("data", () => {});
        s.write("x");
      },
    );
    // A plain tls.Server does not close a socket whose handshake timed out (Node 20 only emits
    // tlsClientError; https.Server destroys it): found by this target, see fuzz/README.md. Close it
    // as https.Server does, so the deadline below measures the adapter, not that Node gap.
    server.on("tlsClientError", (_err, socket) => socket.destroy());
    const cache = new SessionCache();
    const handle = attachSessionCache(server, cache, { helloTimeout: HELLO_TIMEOUT_MS, log: () => {} });
    const tracker = trackConnections(server);
    const port = await listenLocal(server);

    const resumes = async (): Promise<void> => {
      for (const version of ["1.2", "1.3"] as const) {
        const first = await nodeClient({ port, version, ca: pki.caCert });
        expect(first.sessions.length > 0, `TLS ${version}: no session issued`);
        const second = await nodeClient({ port, version, ca: pki.caCert, session: first.sessions.at(-1) });
        expect(second.reused, `TLS ${version}: a Node client did not resume`);
      }
    };
    await resumes(); // the same check before fuzzing, so a failure after it means something

    return {
      concurrency: 16,
      generate: (rng) => helloInput(rng, corpus, messages),
      async check(input, rng) {
        const bytes = input as Uint8Array;
        const sock = net.connect({ port, host: "127.0.0.1", noDelay: true });
        sock.on("error", () => {}); // resets and EPIPE are answers too
        sock.on("data", () => {});
        const closed = closedWithin(sock, DEADLINE_MS);
        await Promise.race([once(sock, "connect"), closed]);
        for (const piece of pieces(bytes, rng)) {
          if (sock.destroyed || !sock.writable) break;
          // The piece is in the kernel before the next is written (setNoDelay: its own segment).
          await new Promise<void>((resolve) => sock.write(piece, () => resolve()));
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
        if (rng.chance(0.7) && !sock.destroyed) sock.end();
        await closed;
        if (errors.length > 0) throw errors.shift();
      },
      async finish() {
        await until(() => tracker.open() === 0, 10_000, `${tracker.open()} server connections still open`);
        await until(() => handle.stats().pendingHellos === 0, 5000, "pendingHellos back to 0");
        await resumes();
        if (errors.length > 0) throw errors.shift();
      },
      async close() {
        await tracker.close();
        process.off("uncaughtException", onError);
        process.off("unhandledRejection", onError);
      },
    };
  },
};
