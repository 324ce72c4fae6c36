// `npm run bench -- peek [--rounds N] [--seconds S] [--procs P] [--version 1.2|1.3]`: what reading the ClientHello
// in JavaScript and handing the socket to Node's TLS layer afterwards costs, whatever does the
// reading. Every server here is the stateful `Map` server of Node's documentation; they differ only
// in how a connection reaches Node's TLS layer:
//   bare      Node's own connection listener (TLS reads the socket in C++ from its first byte)
//   flowing   one 'data' event, pause, unshift, then Node's listener (what hand-off.ts does)
//   paused    'readable' and read() instead, then unshift (no 'data' event, no pause)
//   user-buf  the socket reads into one preallocated buffer (net's `onread` mode, set through its
//             private symbols) instead of a fresh 64 KiB one per read, then unshift
// None of them parses the hello: the cost measured is the hand-off's alone. Resumed TLS 1.2 by default
// (the cheapest handshake, so the hand-off's share is largest). Measured as server-child.ts says.
import net, { type Socket } from "node:net";
import type tls from "node:tls";
import { fileURLToPath } from "node:url";
import { choiceOption, countOption } from "./args.js";
import { median, pairedRounds, spread } from "./measure.js";
import type { BenchResult, BenchRow } from "./run.js";
import {
  type BenchServer,
  CHILD_ENV,
  pinClientSide,
  pinning,
  ServerChild,
  serveInChild,
} from "./server-child.js";
import { startTlsBenchServer, useMapCache } from "./tls-bench-server.js";

const HAND_OFFS = ["flowing", "paused", "user-buf"] as const;
type Variant = "bare" | (typeof HAND_OFFS)[number];

function startServer(variant: Variant): Promise<BenchServer> {
  return startTlsBenchServer({ stateful: true, setup: (server) => setUp(server, variant) });
}

function setUp(server: tls.Server, variant: Variant): void {
  useMapCache(server);
  if (variant === "bare") return;
  const tlsListener = server.listeners("connection")[0] as (this: tls.Server, s: Socket) => void;
  server.removeAllListeners("connection");
  const handOff = (socket: Socket, bytes: Buffer) => {
    socket.unshift(bytes);
    tlsListener.call(server, socket);
  };
  if (variant === "flowing") {
    server.on("connection", (socket: Socket) => {
      socket.once("data", (chunk: Buffer) => {
        socket.pause();
        handOff(socket, chunk);
      });
    });
  } else if (variant === "paused") {
    server.on("connection", (socket: Socket) => {
      const onReadable = () => {
        const chunk = socket.read() as Buffer | null;
        if (chunk === null) return;
        socket.removeListener("readable", onReadable);
        handOff(socket, chunk);
      };
      socket.on("readable", onReadable);
    });
  } else {
    // net keeps the `onread` option under private symbols; a probe socket shows which.
    const probe = new net.Socket({
      onread: { buffer: Buffer.alloc(1), callback: () => {} },
    } as unknown as net.SocketConstructorOpts);
    const sym = (d: string) => Object.getOwnPropertySymbols(probe).find((s) => s.description === d);
    const [kBuffer, kBufferCb, kBufferGen] = [sym("kBuffer"), sym("kBufferCb"), sym("kBufferGen")];
    probe.destroy();
    if (!kBuffer || !kBufferCb || !kBufferGen)
      throw new Error("this Node keeps net's onread state elsewhere");
    const buf = Buffer.allocUnsafe(17 * 1024);
    server.on("connection", (socket: Socket) => {
      const s = socket as unknown as Record<symbol, unknown> & {
        _handle: { useUserBuffer(b: Buffer): void };
      };
      s[kBuffer] = buf;
      s[kBufferGen] = null;
      s[kBufferCb] = (n: number) => {
        s[kBuffer] = undefined;
        s[kBufferCb] = undefined;
        socket.pause();
        handOff(socket, Buffer.from(buf.subarray(0, n)));
      };
      s._handle.useUserBuffer(buf);
    });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.env[CHILD_ENV]) {
  await serveInChild(() => startServer(process.env[CHILD_ENV] as Variant));
}

export default async function peek(args: string[]): Promise<BenchResult> {
  const rounds = countOption(args, "--rounds", 7);
  const seconds = countOption(args, "--seconds", 1);
  const procs = countOption(args, "--procs", 4);
  const version = choiceOption(args, "--version", ["1.2", "1.3"] as const, "1.2");
  pinClientSide();
  const module = fileURLToPath(import.meta.url);
  const rows: BenchRow[] = [];
  for (const v of HAND_OFFS) {
    const r = await pairedRounds(
      (side) => ServerChild.start(side === "ours" ? v : "bare", { module }),
      { version, reuse: true, seconds },
      { rounds, procs, log: (l) => process.stderr.write(`${v}: ${l}\n`) },
    );
    rows.push({
      "hand-off": v,
      µs: Math.round(median(r.ours)),
      "bare µs": Math.round(median(r.base)),
      "extra µs": Math.round(median(r.ours.map((x, i) => x - r.base[i]))),
      "speed vs bare": Number(median(r.ratios).toFixed(3)),
      spread: spread(r.ratios),
      "process spread": spread(r.perProcess),
    });
  }
  return {
    title: `What handing a socket to Node's TLS layer after reading its first bytes costs (TLS ${version} resumed)`,
    rows,
    notes: [
      "µs = server CPU per handshake (median over rounds); extra µs = median over rounds of the difference; " +
        "speed vs bare = median over rounds of bare µs / µs",
      `${rounds} rounds of ${seconds} s, ${procs} processes per server` +
        (pinning ? `, servers on CPU ${pinning.server}, s_time on CPU ${pinning.client}` : ", not pinned"),
    ],
  };
}
