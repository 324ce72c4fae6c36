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
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import type { Bench, BenchRow } from "./run.js";
import {
  CLK_TCK,
  type Env,
  type Running,
  STARTERS,
  startBackend,
  treeCpuSeconds,
} from "./terminator-servers.js";

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
  /** A smoke test: its Markdown goes to a -quick file, never over a real run's. */
  quick: boolean;
}

function parseFlags(args: string[]): Flags {
  const f: Flags = {
    rounds: 5,
    seconds: 3,
    mib: 64,
    tls: "1.2",
    clients: 1,
    quick: false,
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
    else if (a === "--quick") Object.assign(f, { rounds: 1, seconds: 1, mib: 8, quick: true });
    else throw new Error(`unknown flag ${a}\n${USAGE}`);
  }
  for (const s of f.servers) if (!(s in STARTERS)) throw new Error(`unknown server ${s}\n${USAGE}`);
  return f;
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
  const suffix = `${flags.clients > 1 ? `-c${flags.clients}` : ""}${flags.quick ? "-quick" : ""}`;
  writeFileSync(join(root, "bench", "results", `terminator-tls${flags.tls}${suffix}.md`), md);
}

export default bench;
