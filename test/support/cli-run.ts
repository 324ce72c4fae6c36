// Runs the `sesscache` command from source as a user would (a child process), and starts
// `sesscache serve` on a free port for tests that need a server with the cache.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = fileURLToPath(new URL("../..", import.meta.url));
export const entry = ["--import", "tsx", join(root, "src/cli/main.ts")];

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `sesscache ARGS` to completion (killed after timeoutMs). */
export function cli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliResult> {
  return runProcess(process.execPath, [...entry, ...args], opts);
}

export function runProcess(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: root,
      env: { ...process.env, ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const killer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("error", (err) => {
      clearTimeout(killer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The error contract: exit 2, nothing on stdout, exactly one "sesscache: " line, no stack. */
export function assertOneLineError(r: CliResult, pattern?: RegExp): void {
  assert.equal(r.code, 2, `exit code, stderr: ${r.stderr}`);
  assert.equal(r.stdout, "");
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0]!, /^sesscache: \S/);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  if (pattern) assert.match(lines[0]!, pattern);
}

export interface ServeChild {
  port: number;
  stop(): Promise<void>;
}

/** `sesscache serve --listen 127.0.0.1:0 ARGS`, resolved once it prints its startup line. */
export async function startServeChild(stateDir: string, args: string[] = []): Promise<ServeChild> {
  const child = spawn(
    process.execPath,
    [...entry, "serve", "--listen", "127.0.0.1:0", "--state-dir", stateDir, ...args],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  );
  const exited = once(child, "exit");
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  let stdout = "";
  child.stdout.setEncoding("utf8");
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (d: string) => {
      stdout += d;
      const nl = stdout.indexOf("\n");
      if (nl >= 0) resolve(stdout.slice(0, nl));
    });
    exited.then(() => reject(new Error(`serve exited before listening: ${stderr}`)));
  });
  const m = /listening on https:\/\/127\.0\.0\.1:(\d+) /.exec(line);
  assert.ok(m, `startup line: ${line}`);
  return {
    port: Number(m[1]),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(killer);
    },
  };
}
