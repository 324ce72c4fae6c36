// The processes `bench/terminator.ts` measures: sesscache serve --backend, hitch, stunnel and a
// plain Node tls.Server as terminators, the Node backend they all forward to, and the CPU time of a
// process tree read from /proc.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { startServeProcess } from "../test/support/serve-process.js";

// ---- CPU time of a process tree ------------------------------------------------------------------

export const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

/** utime + stime (seconds) of `pid` and all its live descendants. */
export function treeCpuSeconds(pid: number): number {
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    parent.set(Number(name), Number(rest[1]));
    ticks.set(Number(name), Number(rest[11]) + Number(rest[12]));
  }
  let total = 0;
  const tree = new Set([pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [p, pp] of parent) {
      if (!tree.has(p) && tree.has(pp)) {
        tree.add(p);
        grew = true;
      }
    }
  }
  for (const p of tree) total += ticks.get(p) ?? 0;
  return total / CLK_TCK;
}

// ---- the servers ----------------------------------------------------------------------------------

export interface Running {
  name: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

export interface Env {
  dir: string;
  certFile: string;
  keyFile: string;
  comboFile: string;
  backendPort: number;
  tls: "1.2" | "1.3";
}

async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function track(child: ChildProcess, name: string): { output: () => string; exited: Promise<unknown> } {
  let out = "";
  child.stdout?.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr?.setEncoding("utf8").on("data", (d: string) => (out += d));
  const exited = once(child, "exit");
  void exited.then(() => {
    if (!stopping.has(child)) process.stderr.write(`bench: ${name} exited early:\n${out}\n`);
  });
  return { output: () => out, exited };
}

const stopping = new Set<ChildProcess>();

async function stopChild(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  stopping.add(child);
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(killer);
}

/** Resolves once a TCP connect to the port succeeds (the server is up). */
async function waitForPort(port: number, child: ChildProcess, output: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`server exited: ${output()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const c = tlsConnect({ port, host: "127.0.0.1", rejectUnauthorized: false });
      c.once("secureConnect", () => {
        c.destroy();
        resolve(true);
      });
      c.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`server on port ${port} never answered: ${output()}`);
}

function sesscache(workers: number) {
  return async (env: Env): Promise<Running> => {
    const serve = await startServeProcess({
      args: [
        "--cert",
        env.certFile,
        "--key",
        env.keyFile,
        "--backend",
        `127.0.0.1:${env.backendPort}`,
        "--workers",
        String(workers),
      ],
    });
    const output = () => serve.stdout() + serve.stderr();
    void serve.exit.then(() => {
      if (!stopping.has(serve.child)) process.stderr.write(`bench: sesscache exited early:\n${output()}\n`);
    });
    await waitForPort(serve.port, serve.child, output);
    return {
      name: workers > 1 ? `sesscache-w${workers}` : "sesscache",
      port: serve.port,
      pid: serve.pid,
      stop: async () => {
        stopping.add(serve.child);
        await serve.stop();
      },
    };
  };
}

function hitch(workers: number) {
  return async (env: Env): Promise<Running> => {
    const port = await freePort();
    const asRoot = process.getuid?.() === 0 ? ["--user=nobody", "--group=nogroup"] : [];
    const child = spawn(
      "hitch",
      [
        `--frontend=[127.0.0.1]:${port}`,
        `--backend=[127.0.0.1]:${env.backendPort}`,
        `--workers=${workers}`,
        `--tls-protos=TLSv1.2 TLSv1.3`,
        "--daemon=off",
        // Hitch refuses to run its workers as root.
        ...asRoot,
        env.comboFile,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const t = track(child, "hitch");
    await waitForPort(port, child, t.output);
    return {
      name: workers > 1 ? `hitch-w${workers}` : "hitch",
      port,
      pid: child.pid!,
      stop: () => stopChild(child, t.exited),
    };
  };
}

async function stunnel(env: Env): Promise<Running> {
  const port = await freePort();
  const conf = join(env.dir, "stunnel.conf");
  writeFileSync(
    conf,
    [
      "foreground = yes",
      "pid =",
      "debug = 3",
      "[bench]",
      `accept = 127.0.0.1:${port}`,
      `connect = 127.0.0.1:${env.backendPort}`,
      `cert = ${env.certFile}`,
      `key = ${env.keyFile}`,
      // Its own session cache on (the default is on too; stated so the comparison is explicit).
      "sessionCacheSize = 20480",
      "sessionCacheTimeout = 300",
      "",
    ].join("\n"),
  );
  const child = spawn("stunnel", [conf], { stdio: ["ignore", "pipe", "pipe"] });
  const t = track(child, "stunnel");
  await waitForPort(port, child, t.output);
  return { name: "stunnel", port, pid: child.pid!, stop: () => stopChild(child, t.exited) };
}

// A reference, not a product: Node's own tls.Server piping to the backend, with OpenSSL's internal
// session cache (what Node does by default) and nothing of sesscache. It shows what any terminator
// in Node costs per connection.
const NODE_TERMINATOR = `
const tls = require("node:tls"), net = require("node:net"), fs = require("node:fs");
const [cert, key, bport] = process.argv.slice(1);
const srv = tls.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key), allowHalfOpen: true });
srv.on("secureConnection", (c) => {
  const u = net.connect({ port: Number(bport), host: "127.0.0.1", allowHalfOpen: true });
  c.pipe(u); u.pipe(c);
  u.on("error", () => c.destroy()); c.on("error", () => u.destroy());
});
srv.listen(0, "127.0.0.1", () => console.log(srv.address().port));
`;

async function nodePlain(env: Env): Promise<Running> {
  const child = spawn(
    process.execPath,
    ["-e", NODE_TERMINATOR, env.certFile, env.keyFile, String(env.backendPort)],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const t = track(child, "node");
  const [line] = (await once(child.stdout!, "data")) as [Buffer];
  const port = Number(line.toString().trim());
  await waitForPort(port, child, t.output);
  return { name: "node-plain", port, pid: child.pid!, stop: () => stopChild(child, t.exited) };
}

export const STARTERS: Record<string, (env: Env) => Promise<Running>> = {
  "node-plain": nodePlain,
  sesscache: sesscache(1),
  "sesscache-w2": sesscache(2),
  hitch: hitch(1),
  "hitch-w2": hitch(2),
  stunnel,
};

// ---- the backend: a Node process writing N bytes when asked, a tiny HTTP answer to GET ------------

const BACKEND = `
const net = require("node:net");
const chunk = Buffer.alloc(256 * 1024, 120);
net.createServer({ allowHalfOpen: true }, (s) => {
  s.on("error", () => {});
  let head = "";
  const onData = async (d) => {
    head += d.toString("latin1");
    const nl = head.indexOf("\\n");
    if (nl < 0) return;
    s.off("data", onData);
    s.resume();
    if (head.startsWith("GET")) return s.end("HTTP/1.0 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n");
    let left = Number(head.slice(0, nl));
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      left -= n;
      if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await new Promise((r) => s.once("drain", r));
    }
    s.end();
  };
  s.on("data", onData);
  s.on("end", () => s.end());
}).listen(0, "127.0.0.1", function () { console.log(this.address().port); });
`;

export async function startBackend(): Promise<{ port: number; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ["-e", BACKEND], { stdio: ["ignore", "pipe", "inherit"] });
  const t = track(child, "backend");
  const [line] = (await once(child.stdout!, "data")) as [Buffer];
  return { port: Number(line.toString().trim()), stop: () => stopChild(child, t.exited) };
}
