// Bench servers in their own processes, and how one is measured. A parent forks a child per server
// (ServerChild), the child serves what its module starts (serveInChild) and reports the CPU it used
// and the handshakes it made between the parent's start and stop messages.
//
// Measuring: on a 2-core VM two servers driven at once by two clients differ by up to 1.5x from
// each other when they are the same server (the old method's noise floor). So a measurement here is
// one server at a time, pinned to CPU 0, driven by one `openssl s_time` pinned to CPU 1: nothing
// else competes for either core, and the same server measured twice agrees within a few percent.
import { type ChildProcess, fork, spawnSync } from "node:child_process";
import { once } from "node:events";
import { cpus } from "node:os";
import { sTime, type TlsVersion } from "../test/support/tls-peers.js";

/** The variant a bench child serves. */
export const CHILD_ENV = "SESSCACHE_BENCH_SERVER";

/** A server a bench child runs. */
export interface BenchServer {
  port: number;
  handshakes(): number;
  close(): Promise<void>;
}

type ToChild = { cmd: "start" } | { cmd: "stop" };
type FromChild = { port: number } | { cpuMicros: number; handshakes: number };

/**
 * Child mode: serve what `start` gives, report the CPU used and handshakes done between the parent's
 * start and stop messages.
 */
export async function serveInChild(start: () => Promise<BenchServer>): Promise<void> {
  // tsx turns source maps on; a deployed server (dist/) runs without them, and with them every
  // Error whose stack Node reads (one ECONNRESET per s_time connection) costs a source-map walk.
  process.setSourceMapsEnabled(false);
  const srv = await start();
  let cpu0 = process.cpuUsage();
  let hs0 = 0;
  process.on("message", (m: ToChild) => {
    if (m.cmd === "start") {
      (globalThis as { gc?: () => void }).gc?.();
      cpu0 = process.cpuUsage();
      hs0 = srv.handshakes();
      process.send!({ started: true });
    } else if (m.cmd === "stop") {
      const cpu = process.cpuUsage(cpu0);
      process.send!({ cpuMicros: cpu.user + cpu.system, handshakes: srv.handshakes() - hs0 });
    }
  });
  process.on("disconnect", () => {
    srv.close().finally(() => process.exit(0));
  });
  process.send!({ port: srv.port });
}

/** CPU pinning, when the machine has two cores or more and `taskset` (util-linux). */
export const pinning: { server: string; client: string } | null =
  cpus().length >= 2 && spawnSync("taskset", ["-V"], { stdio: "ignore" }).status === 0
    ? { server: "0", client: "1" }
    : null;

/** Pins a process and all its threads (V8's and libuv's too) to `cpu`. */
function pin(pid: number | undefined, cpu: string): void {
  if (pid === undefined) return;
  const r = spawnSync("taskset", ["-a", "-cp", cpu, String(pid)], { stdio: "ignore" });
  if (r.status !== 0) throw new Error(`taskset could not pin process ${pid} to CPU ${cpu}`);
}

/** Pins this process to the client's CPU: the s_time clients it spawns inherit that. */
export function pinClientSide(): void {
  if (pinning) pin(process.pid, pinning.client);
}

/** A bench server in its own process: `module` run with `env` must call serveInChild. */
export class ServerChild {
  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly variant: string,
  ) {}

  static async start(
    variant: string,
    child: { module: string; env?: NodeJS.ProcessEnv; execArgv?: string[] },
  ): Promise<ServerChild> {
    const proc = fork(child.module, [], {
      execArgv: ["--import", "tsx", "--expose-gc", ...(child.execArgv ?? [])],
      env: { ...process.env, [CHILD_ENV]: variant, ...child.env },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const [msg] = (await once(proc, "message")) as [FromChild];
    if (!("port" in msg)) throw new Error("bench server child did not report its port");
    if (pinning) pin(proc.pid, pinning.server);
    return new ServerChild(proc, msg.port, variant);
  }

  async ask<T>(m: ToChild): Promise<T> {
    const reply = once(this.child, "message");
    this.child.send(m);
    return (await reply)[0] as T;
  }

  async stop(): Promise<void> {
    const exited = once(this.child, "exit");
    this.child.disconnect();
    await exited;
  }
}

export interface Load {
  version: TlsVersion;
  /** Resumed (s_time -reuse) or full (-new) handshakes. */
  reuse: boolean;
  seconds: number;
}

export interface Measurement {
  /** Server CPU microseconds per handshake. */
  cpuMicros: number;
  handshakes: number;
  /** Connections per wall-clock second that s_time saw. */
  wall: number;
}

/** Drives one server alone for `load.seconds` and measures its CPU per handshake. */
export async function measure(srv: ServerChild, load: Load): Promise<Measurement> {
  await srv.ask({ cmd: "start" });
  const r = await sTime({
    port: srv.port,
    version: load.version,
    reuse: load.reuse,
    seconds: load.seconds,
    www: "/",
  });
  const s = await srv.ask<{ cpuMicros: number; handshakes: number }>({ cmd: "stop" });
  if (r.connections === 0 || s.handshakes === 0) {
    throw new Error(`s_time made no connection to ${srv.variant}:\n${r.stdout}\n${r.stderr}`);
  }
  // A resumption benchmark that did not resume would measure the wrong thing.
  if (load.reuse && r.fullHandshakes > 1) {
    throw new Error(`${srv.variant}: ${r.fullHandshakes} full handshakes in a resumption run`);
  }
  if (!load.reuse && r.resumed > 0) throw new Error(`${srv.variant}: resumed in a full-handshake run`);
  return { cpuMicros: s.cpuMicros / s.handshakes, handshakes: s.handshakes, wall: r.perSecond };
}

export interface PairedResult {
  /** Per round: baseline CPU per handshake over ours (> 1: ours is cheaper), the processes averaged. */
  ratios: number[];
  ours: number[];
  base: number[];
}

/**
 * Rounds of one server at a time: `procs` processes of each side, started and measured in a balanced
 * order (a, b, b, a, ...; reversed every other round), because a Node process can be a few percent
 * faster or slower than another running the same code (layout, hash seeds) for its whole life.
 */
export async function pairedRounds(
  start: (side: "ours" | "base") => Promise<ServerChild>,
  load: Load,
  o: { rounds: number; procs: number; log?: (line: string) => void },
): Promise<PairedResult> {
  const order: ("ours" | "base")[] = [];
  for (let i = 0; i < o.procs; i++)
    order.push(...(i % 2 ? (["base", "ours"] as const) : (["ours", "base"] as const)));
  const children: ServerChild[] = [];
  try {
    for (const side of order) children.push(await start(side));
    for (const c of children) await measure(c, { ...load, seconds: 1 }); // warm-up: JIT, first allocations
    const out: PairedResult = { ratios: [], ours: [], base: [] };
    for (let r = 0; r < o.rounds; r++) {
      const idx = children.map((_, i) => i);
      if (r % 2) idx.reverse();
      const cost = new Map<ServerChild, number>();
      for (const i of idx) cost.set(children[i], (await measure(children[i], load)).cpuMicros);
      const mean = (side: "ours" | "base") => {
        const xs = children.filter((_, i) => order[i] === side).map((c) => cost.get(c)!);
        return xs.reduce((a, b) => a + b, 0) / xs.length;
      };
      const [ours, base] = [mean("ours"), mean("base")];
      out.ours.push(ours);
      out.base.push(base);
      out.ratios.push(base / ours);
      o.log?.(
        `round ${r + 1}/${o.rounds}: ${ours.toFixed(0)} vs ${base.toFixed(0)} µs, ratio ${(base / ours).toFixed(3)}`,
      );
    }
    return out;
  } finally {
    await Promise.all(children.map((c) => c.stop()));
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** "min–max" of a list, to 2 decimals. */
export function spread(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  return `${s[0].toFixed(2)}-${s[s.length - 1].toFixed(2)}`;
}
