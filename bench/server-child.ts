// Bench servers in their own processes. A parent forks a child per server (ServerChild), pins it to
// the server's core, and the child serves what its module starts (serveInChild), reporting the CPU it
// used and the handshakes it made between the parent's start and stop messages. measure.ts drives them.
import { type ChildProcess, fork, spawnSync } from "node:child_process";
import { once } from "node:events";
import { cpus } from "node:os";

/** The variant a bench child serves. */
export const CHILD_ENV = "SESSCACHE_BENCH_SERVER";

/** A server a bench child runs. */
export interface BenchServer {
  port: number;
  /** Handshakes completed so far (counted on secureConnection). */
  handshakes(): number;
  /** Of those, how many resumed a session (isSessionReused()). */
  resumed(): number;
  close(): Promise<void>;
}

type ToChild = { cmd: "start" } | { cmd: "stop" };
/** What a child reports for the window between start and stop. */
export interface ChildReport {
  cpuMicros: number;
  handshakes: number;
  resumed: number;
}

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
  let re0 = 0;
  process.on("message", (m: ToChild) => {
    if (m.cmd === "start") {
      // Each window starts from a collected heap, so a major GC owed by the previous window (or by the
      // other server's turn in a comparison) is not charged to this one; scavenges still are.
      (globalThis as { gc?: () => void }).gc?.();
      cpu0 = process.cpuUsage();
      hs0 = srv.handshakes();
      re0 = srv.resumed();
      process.send!({ started: true });
    } else if (m.cmd === "stop") {
      const cpu = process.cpuUsage(cpu0); // getrusage: all the process's threads
      const r: ChildReport = {
        cpuMicros: cpu.user + cpu.system,
        handshakes: srv.handshakes() - hs0,
        resumed: srv.resumed() - re0,
      };
      process.send!(r);
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

/**
 * Pins a process and all its threads to `cpu`. Threads made later inherit their creator's mask, and
 * a child is pinned only after it reported its port (V8's and libuv's threads already exist).
 */
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
    try {
      const msg = await reply<{ port?: number }>(proc, `${variant} (${child.module})`);
      if (typeof msg.port !== "number") throw new Error(`bench server ${variant} did not report its port`);
      if (pinning) pin(proc.pid, pinning.server);
      return new ServerChild(proc, msg.port, variant);
    } catch (err) {
      proc.kill();
      throw err;
    }
  }

  async ask<T>(m: ToChild): Promise<T> {
    const answer = reply<T>(this.child, this.variant);
    this.child.send(m);
    return answer;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, "exit");
    if (this.child.connected) this.child.disconnect();
    else this.child.kill();
    await exited;
  }
}

/** The child's next message; an error if it exits first (a server that failed to start, say). */
function reply<T>(proc: ChildProcess, who: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: unknown) => {
      proc.off("exit", onExit);
      resolve(m as T);
    };
    const onExit = (code: number | null, signal: string | null) => {
      proc.off("message", onMessage);
      reject(new Error(`bench server ${who} exited (${signal ?? code}) before answering`));
    };
    proc.once("message", onMessage);
    proc.once("exit", onExit);
  });
}
