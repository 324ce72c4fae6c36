// Runs the `sesscache` command from source as a user would (a child process), and starts
// `sesscache serve` on a free port for tests that need a server with the cache; plus servers that
// misbehave on purpose (a front resetting chosen connections, a TLS 1.3 server issuing no tickets).
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { entry, root, startServeProcess } from "./serve-process.js";

export { entry, root };

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
  const serve = await startServeProcess({ stateDir, args });
  return {
    port: serve.port,
    async stop() {
      await serve.stop();
    },
  };
}

export interface TestServer {
  port: number;
  stop(): Promise<void>;
}

/**
 * A front for `server` (a tls.Server) on 127.0.0.1: TCP connections are numbered in the order they
 * arrive (from 1); those in `reset` are reset at once, the others handed to `server`.
 */
export async function resettingFront(server: Server, reset: ReadonlySet<number>): Promise<TestServer> {
  let n = 0;
  const open = new Set<Socket>();
  const front = createServer((socket) => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
    socket.on("error", () => {});
    if (reset.has(++n)) socket.resetAndDestroy();
    else server.emit("connection", socket);
  });
  front.listen(0, "127.0.0.1");
  await once(front, "listening");
  return {
    port: (front.address() as AddressInfo).port,
    async stop() {
      const closed = once(front, "close");
      front.close();
      for (const s of open) s.destroy();
      await closed;
    },
  };
}

// A TLS 1.3 server in Python's ssl module (a peer no one here wrote), with `num_tickets` tickets
// per connection (0: none); each connection stays until the client closes it.
const PYTHON_SERVER = `
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.num_tickets = int(sys.argv[3])
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
def serve(c):
    try:
        with ctx.wrap_socket(c, server_side=True) as t:
            while t.recv(4096):
                pass
    except Exception:
        pass
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

/** Why the Python server cannot run here, or undefined. */
export function pythonTlsSkipReason(): string | undefined {
  const r = spawnSync(
    "python3",
    ["-c", "import ssl; ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).num_tickets = 0"],
    {
      stdio: "ignore",
      timeout: 10_000,
    },
  );
  return r.status === 0 ? undefined : "python3 with ssl num_tickets (3.8+) not available";
}

export async function startPythonTlsServer(
  certFile: string,
  keyFile: string,
  numTickets: number,
): Promise<TestServer> {
  const child = spawn("python3", ["-c", PYTHON_SERVER, certFile, keyFile, String(numTickets)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = once(child, "exit");
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  let stdout = "";
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      if (stdout.includes("\n")) resolve(Number(stdout.trim()));
    });
    exited.then(() => reject(new Error(`python server exited: ${stderr}`)));
  });
  return {
    port,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await exited;
    },
  };
}
