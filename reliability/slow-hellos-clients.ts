// The slow clients of the slow-hellos suite, in their own process: `tricklers` connections that send
// a real ClientHello one byte per second and `silent` ones that send nothing, against 127.0.0.1:port.
// Each connection's lifetime (TCP connect to close) is recorded. While "holding", every closed one
// is replaced, so the population stays at its size; after "stop" the remaining ones are let run
// out and the lifetimes are sent back. With {hold: true} in "start", the population is opened once
// (fast: 40 per 10 ms tick) and never replaced; the lifetimes are sent back once all are closed.
// IPC: {cmd: "start", hello, hold?} / {cmd: "status"} / {cmd: "stop"}.
import net from "node:net";

const port = Number(process.argv[2]);
const tricklers = Number(process.argv[3]);
const silent = Number(process.argv[4]);
/**
 * Most connections opened per 10 ms tick: the population over one helloTimeout (argv[5], ms), so
 * the first ones' deadlines are spread over a whole timeout and the load stays steady afterwards
 * instead of closing and reopening in synchronised waves.
 */
const perTick = Math.max(1, Math.ceil(((tricklers + silent) * 10) / Number(process.argv[5] ?? 1000)));

interface Slow {
  sock: net.Socket;
  trickle: boolean;
  connectedAt: number;
  sent: number;
  group: number;
}

let hello = Buffer.alloc(0);
let holding = false;
/** Hold mode: open the population once, replace nothing. */
let holdOnce = false;
const open = new Set<Slow>();
const lifetimes = { trickle: [] as number[], silent: [] as number[] };
let opened = 0;
let connectErrors = 0;
let socketErrors = 0;
let bytesSent = 0;
let openTrickle = 0;
let openSilent = 0;
let tick = 0;

function openOne(trickle: boolean): void {
  const sock = net.connect({ port, host: "127.0.0.1" });
  const s: Slow = { sock, trickle, connectedAt: 0, sent: 0, group: opened % 10 };
  opened++;
  if (trickle) openTrickle++;
  else openSilent++;
  sock.setNoDelay(true);
  sock.on("connect", () => {
    s.connectedAt = performance.now();
    open.add(s);
  });
  sock.on("error", () => {
    if (s.connectedAt === 0) connectErrors++;
    else socketErrors++;
  });
  sock.on("data", () => {}); // nothing is expected; read so the socket can close
  sock.on("close", () => {
    open.delete(s);
    if (trickle) openTrickle--;
    else openSilent--;
    if (s.connectedAt > 0)
      (trickle ? lifetimes.trickle : lifetimes.silent).push(performance.now() - s.connectedAt);
    if ((!holding || (holdOnce && opened >= tricklers + silent)) && openTrickle + openSilent === 0) finish();
  });
}

/** Opens up to perTick connections per 10 ms tick (nor is the listen backlog flooded). */
function pump(): void {
  let budget = holdOnce ? 40 : perTick;
  if (holdOnce && opened >= tricklers + silent) return;
  while (budget-- > 0 && (openTrickle < tricklers || openSilent < silent) && holding) {
    openOne(openTrickle < tricklers && (openTrickle <= openSilent || openSilent >= silent));
  }
}

let pumpTimer: NodeJS.Timeout | undefined;
let trickleTimer: NodeJS.Timeout | undefined;

let finished = false;
function finish(): void {
  if (finished) return;
  finished = true;
  clearInterval(pumpTimer);
  clearInterval(trickleTimer);
  process.send!({ done: true, lifetimes, opened, connectErrors, socketErrors, bytesSent }, () =>
    process.exit(0),
  );
}

process.on("message", (m: { cmd: string; hello?: string; hold?: boolean; q?: number }) => {
  if (m.cmd === "start") {
    hello = Buffer.from(m.hello!, "base64");
    holdOnce = m.hold === true;
    holding = true;
    pumpTimer = setInterval(pump, 10);
    // Every 100 ms a tenth of the tricklers sends its next byte: one byte per second each.
    trickleTimer = setInterval(() => {
      const g = tick++ % 10;
      for (const s of open) {
        if (!s.trickle || s.group !== g || s.sent >= hello.length) continue;
        s.sock.write(hello.subarray(s.sent, s.sent + 1));
        s.sent++;
        bytesSent++;
      }
    }, 100);
  } else if (m.cmd === "status") {
    process.send!({
      q: m.q,
      open: open.size,
      opened,
      trickle: openTrickle,
      silent: openSilent,
      bytesSent,
      connectErrors,
    });
  } else if (m.cmd === "stop") {
    holding = false;
    if (openTrickle + openSilent === 0) finish();
  }
});
process.on("disconnect", () => process.exit(0));
