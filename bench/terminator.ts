// `npm run bench -- terminator [flags]`: sesscache serve --backend beside hitch and stunnel, on the
// same certificate, key and backend, in one alternating run (round-robin over the servers, the
// starting server rotating each round). Per server and round: full handshakes/s (openssl s_time
// -new), resumed handshakes/s (s_time -reuse) and bytes/s through the proxy (a Node TLS client
// downloading --mib MiB that the backend writes). The main figure is per server CPU-second (utime +
// stime of the server's whole process tree from /proc, read before and after), since client and
// server share the machine's cores; wall-clock rates are secondary.
//
// TLS 1.2 resumption is by session id for everyone: s_time runs with an OpenSSL config that turns
// session tickets off in the client (Options = -SessionTicket), so each server answers from its own
// stateful cache (sesscache's SessionCache, hitch's and stunnel's OpenSSL internal cache, stunnel
// with sessionCacheSize set). With --tls 1.3 resumption is by each server's TLS 1.3 tickets.
// Every s_time connection fetches "/" from the backend through the proxy. "node-plain" is a
// reference: Node's tls.Server piping to the backend, without sesscache.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import type { Bench, BenchRow } from "./run.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

const USAGE = `usage: npm run bench -- terminator [--rounds N] [--seconds S] [--mib M] [--tls 1.2|1.3]
       [--clients N] [--servers sesscache,sesscache-w2,hitch,stunnel,node-plain,hitch-w2] [--quick]
  --rounds   rounds over all servers (default 5)
  --seconds  seconds per s_time measurement (default 3)
  --mib      MiB per transfer (default 64)
  --tls      protocol (default 1.2: session-id resumption)
  --clients  s_time processes at once per measurement (default 1; more shows what --workers buys)
  --quick    1 round, 1 s, 8 MiB (a smoke test)`;

interface Flags {
  rounds: number;
  seconds: number;
  mib: number;
  tls: "1.2" | "1.3";
  servers: string[];
  clients: number;
}

function parseFlags(args: string[]): Flags {
  const f: Flags = {
    rounds: 5,
    seconds: 3,
    mib: 64,
    tls: "1.2",
    clients: 1,
    servers: ["sesscache", "sesscache-w2", "hitch", "stunnel", "node-plain"],
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const v = () => {
      const x = args[++i];
      if (x === undefined) throw new Error(`${a} needs a value\n${USAGE}`);
      return x;
    };
    const int = () => {
      const n = Number(v());
      if (!Number.isInteger(n) || n <= 0) throw new Error(`${a} must be a positive integer\n${USAGE}`);
      return n;
    };
    if (a === "--rounds") f.rounds = int();
    else if (a === "--seconds") f.seconds = int();
    else if (a === "--mib") f.mib = int();
    else if (a === "--clients") f.clients = int();
    else if (a === "--tls") {
      const t = v();
      if (t !== "1.2" && t !== "1.3") throw new Error(`--tls must be 1.2 or 1.3\n${USAGE}`);
      f.tls = t;
    } else if (a === "--servers") f.servers = v().split(",");
    else if (a === "--quick") Object.assign(f, { rounds: 1, seconds: 1, mib: 8 });
    else throw new Error(`unknown flag ${a}\n${USAGE}`);
  }
  for (const s of f.servers) if (!(s in STARTERS)) throw new Error(`unknown server ${s}\n${USAGE}`);
  return f;
}

// ---- CPU time of a process tree ------------------------------------------------------------------

const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

/** utime + stime (seconds) of `pid` and all its live descendants. */
function treeCpuSeconds(pid: number): number {
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

interface Running {
  name: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

interface Env {
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
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(root, "src/cli/main.ts"),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        env.certFile,
        "--key",
        env.keyFile,
        "--backend",
        `127.0.0.1:${env.backendPort}`,
        "--workers",
        String(workers),
      ],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
    );
    const t = track(child, "sesscache");
    const port = await new Promise<number>((resolve, reject) => {
      const onData = () => {
        const m = /listening on https:\/\/127\.0\.0\.1:(\d+) /.exec(t.output());
        if (m) {
          child.stdout?.off("data", onData);
          resolve(Number(m[1]));
        }
      };
      child.stdout?.on("data", onData);
      void t.exited.then(() => reject(new Error(`sesscache exited: ${t.output()}`)));
    });
    await waitForPort(port, child, t.output);
    return {
      name: workers > 1 ? `sesscache-w${workers}` : "sesscache",
      port,
      pid: child.pid!,
      stop: () => stopChild(child, t.exited),
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

const STARTERS: Record<string, (env: Env) => Promise<Running>> = {
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

async function startBackend(): Promise<{ port: number; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ["-e", BACKEND], { stdio: ["ignore", "pipe", "inherit"] });
  const t = track(child, "backend");
  const [line] = (await once(child.stdout!, "data")) as [Buffer];
  return { port: Number(line.toString().trim()), stop: () => stopChild(child, t.exited) };
}

// ---- the clients -----------------------------------------------------------------------------------

interface Sample {
  count: number;
  wall: number;
  cpu: number;
  /** Of s_time -reuse's connections, the fraction that resumed (its progress line: r or *). */
  resumedFraction?: number;
  /** s_time processes that stopped before their summary (a failed connection). */
  failures?: number;
}

async function sTime(
  env: Env,
  server: Running,
  mode: "-new" | "-reuse",
  seconds: number,
  clients: number,
): Promise<Sample> {
  const args = ["s_time", "-connect", `127.0.0.1:${server.port}`, mode, "-time", String(seconds)];
  args.push(env.tls === "1.2" ? "-tls1_2" : "-tls1_3");
  // Each connection fetches "/" through the proxy (the backend answers a small HTTP/1.0 response):
  // a handshake plus one round trip to the backend, and a clean close. (Without it stunnel drops
  // most sessions from its cache, and TLS 1.3 clients get no tickets.)
  args.push("-www", "/");
  const cpu0 = treeCpuSeconds(server.pid);
  const t0 = performance.now();
  // --clients N: N s_time processes at once (each one sequential), counts summed.
  const outs = await Promise.all(
    Array.from({ length: clients }, async () => {
      const child = spawn("openssl", args, {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, OPENSSL_CONF: join(env.dir, "no-ticket.cnf") },
      });
      let out = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
      child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
      await once(child, "exit");
      return out;
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const cpu = treeCpuSeconds(server.pid) - cpu0;
  let count = 0;
  let failures = 0;
  let r = 0;
  let full = 0;
  for (const out of outs) {
    // The progress line: r for each resumed connection, * for each full one.
    const progress = out.split("\n").find((l) => /^[r*]+$/.test(l.trim())) ?? "";
    const pr = [...progress].filter((c) => c === "r").length;
    const pf = [...progress].filter((c) => c === "*").length;
    r += pr;
    full += pf;
    const m = /(\d+) connections in [\d.]+s;/.exec(out);
    if (m) count += Number(m[1]);
    else {
      // s_time gave up (a connection failed): count what it did, and say why.
      count += pr + pf;
      failures++;
      const why = out.split("\n").filter((l) => l.trim() && !/^[r*]+$/.test(l.trim()));
      process.stderr.write(
        `bench: s_time against ${server.name} stopped early: ${why.slice(-3).join(" | ")}\n`,
      );
    }
  }
  const sample: Sample = { count, wall, cpu, ...(failures ? { failures } : {}) };
  if (mode === "-reuse") sample.resumedFraction = r + full > 0 ? r / (r + full) : 0;
  return sample;
}

/** One TLS connection through the proxy downloading `bytes` from the backend. */
async function transfer(server: Running, bytes: number): Promise<Sample> {
  const cpu0 = treeCpuSeconds(server.pid);
  const t0 = performance.now();
  const got = await new Promise<number>((resolve, reject) => {
    let n = 0;
    const c = tlsConnect({ port: server.port, host: "127.0.0.1", rejectUnauthorized: false }, () => {
      c.write(`${bytes}\n`);
    });
    c.on("data", (d: Buffer) => (n += d.length));
    c.once("end", () => {
      c.end();
      resolve(n);
    });
    c.once("error", reject);
  });
  const wall = (performance.now() - t0) / 1000;
  const cpu = treeCpuSeconds(server.pid) - cpu0;
  if (got !== bytes) throw new Error(`${server.name}: received ${got} of ${bytes} bytes`);
  return { count: bytes, wall, cpu };
}

// ---- statistics -------------------------------------------------------------------------------------

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const spread = (xs: number[], digits = 0) =>
  `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;

// ---- the run ---------------------------------------------------------------------------------------------

const bench: Bench = async (args) => {
  let flags: Flags;
  try {
    flags = parseFlags(args);
  } catch (err) {
    console.error((err as Error).message);
    process.exit(2);
  }
  const tools = flags.servers
    .filter((s) => s.startsWith("hitch") || s === "stunnel")
    .map((s) => s.split("-")[0]!);
  for (const cmd of ["openssl", ...tools]) {
    if (spawnSync("sh", ["-c", `command -v ${cmd}`]).status !== 0) {
      console.error(`bench terminator: ${cmd} is not installed (apt-get install -y hitch stunnel4)`);
      process.exit(2);
    }
  }
  const dir = mkdtempSync(join(tmpdir(), "sesscache-bench-term-"));
  const certFile = join(dir, "cert.pem");
  const keyFile = join(dir, "key.pem");
  // One EC P-256 certificate and key for every server.
  spawnSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      certFile,
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
    ],
    { stdio: "ignore" },
  );
  const comboFile = join(dir, "combo.pem");
  writeFileSync(comboFile, readFileSync(certFile, "utf8") + readFileSync(keyFile, "utf8"));
  // Hitch drops to nobody; its files must stay readable.
  spawnSync("chmod", ["-R", "a+rX", dir]);
  writeFileSync(
    join(dir, "no-ticket.cnf"),
    "openssl_conf = c\n[c]\nssl_conf = s\n[s]\nsystem_default = d\n[d]\nOptions = -SessionTicket\n",
  );

  const backend = await startBackend();
  const env: Env = { dir, certFile, keyFile, comboFile, backendPort: backend.port, tls: flags.tls };
  const servers: Running[] = [];
  const results = new Map<string, { full: Sample[]; resumed: Sample[]; bytes: Sample[] }>();
  try {
    for (const name of flags.servers) {
      servers.push(await STARTERS[name]!(env));
      results.set(name, { full: [], resumed: [], bytes: [] });
    }
    const bytes = flags.mib * 1024 * 1024;
    for (let round = 0; round < flags.rounds; round++) {
      const order = servers.map((_, i) => servers[(i + round) % servers.length]!);
      for (const s of order) {
        const r = results.get(s.name)!;
        r.full.push(await sTime(env, s, "-new", flags.seconds, flags.clients));
        r.resumed.push(await sTime(env, s, "-reuse", flags.seconds, flags.clients));
        r.bytes.push(await transfer(s, bytes));
        const last = r.resumed.at(-1)!;
        process.stderr.write(
          `round ${round + 1}/${flags.rounds} ${s.name}: full ${(r.full.at(-1)!.count / r.full.at(-1)!.cpu).toFixed(0)}/cpu-s, ` +
            `resumed ${(last.count / last.cpu).toFixed(0)}/cpu-s (${(100 * (last.resumedFraction ?? 0)).toFixed(0)}% r), ` +
            `${(bytes / 1048576 / r.bytes.at(-1)!.wall).toFixed(0)} MiB/s\n`,
        );
      }
    }
  } finally {
    for (const s of servers) await s.stop();
    await backend.stop();
    rmSync(dir, { recursive: true, force: true });
  }

  const perCpu = (xs: Sample[]) => xs.map((x) => x.count / Math.max(x.cpu, 1 / CLK_TCK));
  const perWall = (xs: Sample[]) => xs.map((x) => x.count / x.wall);
  const mib = (xs: number[]) => xs.map((x) => x / 1048576);
  const rows: BenchRow[] = [];
  const summary: Record<string, Record<string, number>> = {};
  for (const [name, r] of results) {
    const fullCpu = perCpu(r.full);
    const resCpu = perCpu(r.resumed);
    const bytesWall = mib(perWall(r.bytes));
    const bytesCpu = mib(perCpu(r.bytes));
    summary[name] = {
      fullPerCpuSecond: median(fullCpu),
      fullPerSecond: median(perWall(r.full)),
      resumedPerCpuSecond: median(resCpu),
      resumedPerSecond: median(perWall(r.resumed)),
      mibPerSecond: median(bytesWall),
      mibPerCpuSecond: median(bytesCpu),
      resumedFraction: Math.min(...r.resumed.map((x) => x.resumedFraction ?? 0)),
    };
    rows.push({
      server: name,
      "full/cpu-s": median(fullCpu),
      "full/cpu-s range": spread(fullCpu),
      "full/s": median(perWall(r.full)),
      "resumed/cpu-s": median(resCpu),
      "resumed/cpu-s range": spread(resCpu),
      "resumed/s": median(perWall(r.resumed)),
      "resumed %": Math.round(100 * summary[name]!.resumedFraction!),
      "MiB/s": median(bytesWall),
      "MiB/s range": spread(bytesWall),
      "MiB/cpu-s": median(bytesCpu),
      "s_time stops": [...r.full, ...r.resumed].reduce((n, x) => n + (x.failures ?? 0), 0),
    });
  }
  const notes: string[] = [
    `TLS ${flags.tls}, ${flags.tls === "1.2" ? "session-id resumption (client tickets off)" : "TLS 1.3 tickets"}; ` +
      `${flags.rounds} rounds × ${flags.seconds} s per s_time measurement (${flags.clients} client process${flags.clients > 1 ? "es" : ""} at once), ${flags.mib} MiB per transfer; ` +
      "medians over rounds, range = min–max; cpu-s = the server's process tree utime+stime.",
  ];
  const ratio = (a: string, b: string, k: string) =>
    summary[a] && summary[b] ? summary[a]![k]! / summary[b]![k]! : undefined;
  const extra: Record<string, number | undefined> = {
    resumedPerCpuVsHitch: ratio("sesscache", "hitch", "resumedPerCpuSecond"),
    resumedWallVsHitch: ratio("sesscache", "hitch", "resumedPerSecond"),
    fullPerCpuVsHitch: ratio("sesscache", "hitch", "fullPerCpuSecond"),
    resumedPerCpuVsStunnel: ratio("sesscache", "stunnel", "resumedPerCpuSecond"),
    bytesPerCpuVsHitch: ratio("sesscache", "hitch", "mibPerCpuSecond"),
    workers2ResumedWall: ratio("sesscache-w2", "sesscache", "resumedPerSecond"),
    workers2FullWall: ratio("sesscache-w2", "sesscache", "fullPerSecond"),
    workers2ResumedPerCpu: ratio("sesscache-w2", "sesscache", "resumedPerCpuSecond"),
  };
  const r = extra.resumedPerCpuVsHitch;
  if (r !== undefined) {
    notes.push(
      `resumed handshakes per server CPU-second, sesscache / hitch (one worker each): ${r.toFixed(2)}× ` +
        `(target ≥ 0.70×: ${r >= 0.7 ? "met" : "NOT met"}); wall-clock ${extra.resumedWallVsHitch?.toFixed(2)}×`,
    );
  }
  if (extra.workers2ResumedWall !== undefined) {
    notes.push(
      `--workers 2 vs 1 (wall-clock, ${flags.clients} s_time client${flags.clients > 1 ? "s" : ""}): resumed ${extra.workers2ResumedWall.toFixed(2)}×, ` +
        `full ${extra.workers2FullWall?.toFixed(2)}×`,
    );
  }
  writeMarkdown(rows, notes, flags);
  return {
    title: `Terminators: sesscache serve --backend vs hitch vs stunnel (TLS ${flags.tls})`,
    rows,
    notes,
    extra: { flags, summary, ratios: extra, raw: Object.fromEntries(results) },
  };
};

function writeMarkdown(rows: BenchRow[], notes: string[], flags: Flags): void {
  const cols = Object.keys(rows[0] ?? {});
  const cell = (v: unknown) =>
    typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(1)) : String(v);
  const md = [
    `# Terminator benchmark (TLS ${flags.tls})`,
    "",
    `Command: \`npm run bench -- terminator --rounds ${flags.rounds} --seconds ${flags.seconds} --mib ${flags.mib} --tls ${flags.tls} --clients ${flags.clients} --servers ${flags.servers.join(",")}\``,
    `Date: ${new Date().toISOString()}`,
    "",
    `| ${cols.join(" | ")} |`,
    `| ${cols.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${cols.map((c) => cell(r[c])).join(" | ")} |`),
    "",
    ...notes.map((n) => `- ${n}`),
    "",
  ].join("\n");
  const suffix = flags.clients > 1 ? `-c${flags.clients}` : "";
  writeFileSync(join(root, "bench", "results", `terminator-tls${flags.tls}${suffix}.md`), md);
}

export default bench;
