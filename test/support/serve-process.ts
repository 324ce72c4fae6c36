// `sesscache serve` as a child process, run from source on 127.0.0.1 port 0 (the port is read from
// its "listening on" line), with its output watched. Tests, chaos scenarios and benchmarks all start
// it through here, so what "started" means, and how it is stopped, is written once.
import { type ChildProcessByStdio, spawn } from "node:child_process";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";

export const root = fileURLToPath(new URL("../..", import.meta.url));
/** Node's arguments that run the CLI from source. */
export const entry = ["--import", "tsx", join(root, "src/cli/main.ts")];

export interface ServeProcessOptions {
  /** --state-dir (omitted: none, for a serve given --cert and --key). */
  stateDir?: string;
  /** Arguments after `serve --listen 127.0.0.1:0 --state-dir DIR`. */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Milliseconds to wait for the listening line (default 60 s: a cold tsx cache compiles first). */
  startTimeoutMs?: number;
  /** Milliseconds between stop()'s SIGTERM and its SIGKILL (default 5 s). */
  killAfterMs?: number;
}

export interface ServeExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** performance.now() at the exit. */
  atMs: number;
}

export interface ServeProcess {
  port: number;
  pid: number;
  child: ChildProcessByStdio<null, Readable, Readable>;
  /** stdout so far. */
  stdout(): string;
  /** The last 20,000 characters of stderr (a long fault may log a lot, rate-limited but still). */
  stderr(): string;
  /** The first match of `re` in stdout, printed already or to come; rejects if serve exits first. */
  waitForOutput(re: RegExp): Promise<RegExpExecArray>;
  /** Resolves with performance.now() when a chunk of stderr matches `re`. */
  waitForLog(re: RegExp): Promise<number>;
  exit: Promise<ServeExit>;
  /** SIGTERM, then SIGKILL after killAfterMs; resolves with the exit code (null: killed by a signal). */
  stop(): Promise<number | null>;
}

/** `sesscache serve --listen 127.0.0.1:0 [--state-dir DIR] ARGS`, resolved once it is listening. */
export async function startServeProcess(o: ServeProcessOptions): Promise<ServeProcess> {
  const child = spawn(
    process.execPath,
    [
      ...entry,
      "serve",
      "--listen",
      "127.0.0.1:0",
      ...(o.stateDir === undefined ? [] : ["--state-dir", o.stateDir]),
      ...(o.args ?? []),
    ],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: o.env ?? process.env },
  );
  const exit = new Promise<ServeExit>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal, atMs: performance.now() })),
  );
  let out = "";
  let err = "";
  const outWaiters: { re: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  const logWaiters: { re: RegExp; resolve: (ms: number) => void }[] = [];
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    out += d;
    for (let i = outWaiters.length - 1; i >= 0; i--) {
      const m = outWaiters[i]!.re.exec(out);
      if (m) outWaiters.splice(i, 1)[0]!.resolve(m);
    }
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    err = (err + d).slice(-20_000);
    for (let i = logWaiters.length - 1; i >= 0; i--) {
      if (logWaiters[i]!.re.test(d)) logWaiters.splice(i, 1)[0]!.resolve(performance.now());
    }
  });
  const waitForOutput = (re: RegExp) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const m = re.exec(out);
      if (m) return resolve(m);
      outWaiters.push({ re, resolve });
      void exit.then(({ code, signal }) =>
        reject(new Error(`serve exited (${code ?? signal}) before printing ${re}: ${err}`)),
      );
    });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), o.killAfterMs ?? 5000);
      await exit;
      clearTimeout(killer);
    }
    return child.exitCode;
  };
  const timeoutMs = o.startTimeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    const listening = await Promise.race([
      waitForOutput(/sesscache serve: listening on https:\/\/\S+:(\d+) /),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`serve did not start in ${timeoutMs} ms: ${err}`)),
          timeoutMs,
        );
      }),
    ]);
    return {
      port: Number(listening[1]),
      pid: child.pid!,
      child,
      stdout: () => out,
      stderr: () => err,
      waitForOutput,
      waitForLog: (re) => new Promise<number>((resolve) => logWaiters.push({ re, resolve })),
      exit,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  } finally {
    clearTimeout(timer);
  }
}
