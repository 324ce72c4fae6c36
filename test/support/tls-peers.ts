// Real TLS peers no one here wrote, run as child processes: openssl s_client / s_time, curl and
// Python's ssl module. Each helper runs one bounded process (killed at its deadline) and returns
// what it printed plus the counts a resumption test needs. Recipes: shared/notes/test-peers.md.
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import type { Server, Socket } from "node:net";
import tls from "node:tls";

export type TlsVersion = "1.2" | "1.3";

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The process was killed at its deadline. */
  timedOut: boolean;
}

export interface RunOptions {
  /** Written to stdin at once. */
  input?: string;
  /**
   * When to close stdin (s_client exits on EOF): at once (default), after this many ms, or when
   * this promise settles. A TLS 1.3 client must stay up until its tickets arrive.
   */
  stdinEnd?: number | Promise<unknown>;
  /** Kill the process after this many ms (default 20000). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Runs cmd with args; never rejects for a non-zero exit (the caller checks `code`). */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    child.stdin.on("error", () => {
      // The peer may exit before reading its stdin.
    });
    const killer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, opts.timeoutMs ?? 20_000);
    let stdinTimer: NodeJS.Timeout | undefined;
    child.on("error", (err) => {
      clearTimeout(killer);
      if (stdinTimer) clearTimeout(stdinTimer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(killer);
      if (stdinTimer) clearTimeout(stdinTimer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
    if (opts.input !== undefined) child.stdin.write(opts.input);
    const end = () => {
      if (!child.stdin.destroyed) child.stdin.end();
    };
    const when = opts.stdinEnd;
    if (when === undefined) end();
    else if (typeof when === "number") stdinTimer = setTimeout(end, when);
    else when.then(end, end);
  });
}

/** Whether a command can be run here (for skipping a test whose peer is missing). */
export function have(cmd: string, versionArg = "--version"): boolean {
  try {
    const r = spawnSync(cmd, [versionArg], { stdio: "ignore", timeout: 5000 });
    return r.status === 0;
  } catch {
    return false;
  }
}

// ---- Node's own TLS client ----------------------------------------------------------------------

export interface NodeClientOptions {
  port: number;
  host?: string;
  version: TlsVersion;
  /** A session from an earlier connection to offer. */
  session?: Buffer;
  ca?: string;
  servername?: string;
  /**
   * Wait for this many bytes from the server before closing (default 1): a TLS 1.3 server's
   * tickets come before its first data, so the test servers write a byte after the handshake.
   */
  readBytes?: number;
  timeoutMs?: number;
  /** Extra tls.connect options. */
  extra?: tls.ConnectionOptions;
}

export interface NodeClientResult {
  reused: boolean;
  protocol: string | null;
  /** Every session the client was given ('session' events: TLS 1.3 tickets, or the TLS 1.2 session). */
  sessions: Buffer[];
}

/** One tls.connect to the server: whether it resumed, and the sessions it received. */
export function nodeClient(o: NodeClientOptions): Promise<NodeClientResult> {
  const v = o.version === "1.3" ? "TLSv1.3" : "TLSv1.2";
  return new Promise((resolve, reject) => {
    const sessions: Buffer[] = [];
    const sock = tls.connect({
      port: o.port,
      host: o.host ?? "127.0.0.1",
      servername: o.servername ?? "localhost",
      ca: o.ca,
      rejectUnauthorized: o.ca !== undefined,
      session: o.session,
      minVersion: v,
      maxVersion: v,
      ...o.extra,
    });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`nodeClient: no answer within ${o.timeoutMs ?? 10_000} ms`));
    }, o.timeoutMs ?? 10_000);
    sock.on("session", (s: Buffer) => sessions.push(s));
    sock.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.once("secureConnect", () => {
      const reused = sock.isSessionReused();
      const protocol = sock.getProtocol();
      let need = o.readBytes ?? 1;
      const finish = () => {
        sock.end();
        sock.once("close", () => {
          clearTimeout(timer);
          resolve({ reused, protocol, sessions });
        });
      };
      if (need <= 0) return finish();
      sock.on("data", (d: Buffer) => {
        need -= d.length;
        if (need <= 0) {
          sock.removeAllListeners("data");
          sock.resume();
          finish();
        }
      });
    });
  });
}

/**
 * Tracks a server's raw connections so a test can end them all: `close()` closes the server and
 * destroys what is still open, resolving once the server is closed.
 */
export function trackConnections(server: Server): { close(): Promise<void>; open(): number } {
  const open = new Set<Socket>();
  server.on("connection", (s: Socket) => {
    open.add(s);
    s.once("close", () => open.delete(s));
  });
  return {
    open: () => open.size,
    close: async () => {
      const closed = once(server, "close");
      server.close();
      for (const s of open) s.destroy();
      await closed;
    },
  };
}

/** Listens on 127.0.0.1 on a free port; resolves with the port. */
export async function listenLocal(server: Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("listenLocal: no TCP address");
  return addr.port;
}

// ---- openssl s_client ---------------------------------------------------------------------------

export interface SClientOptions extends Omit<RunOptions, "input"> {
  port: number;
  host?: string;
  version: TlsVersion;
  /** -sess_out FILE: where to save the session (TLS 1.3: rewritten for each ticket). */
  sessOut?: string;
  /** -sess_in FILE: the session to offer. */
  sessIn?: string;
  /** -reconnect: 1 full connection, then 5 offering its session. */
  reconnect?: boolean;
  /** -no_ticket (TLS 1.2: ask for a session id, not a ticket). Default true for TLS 1.2. */
  noTicket?: boolean;
  /** -CAfile; without it the verify result is just reported, never fatal. */
  caFile?: string;
  servername?: string;
  extra?: string[];
  /** Written after the handshake (e.g. an HTTP request); default none. */
  input?: string;
}

export interface SClientResult extends RunResult {
  /** Lines starting "Reused," (resumed handshakes). */
  reused: number;
  /** Lines starting "New," (full handshakes). */
  full: number;
}

export async function sClient(o: SClientOptions): Promise<SClientResult> {
  const args = [
    "s_client",
    "-connect",
    `${o.host ?? "127.0.0.1"}:${o.port}`,
    `-tls${o.version.replace(".", "_")}`,
  ];
  if (o.noTicket ?? o.version === "1.2") args.push("-no_ticket");
  if (o.sessOut) args.push("-sess_out", o.sessOut);
  if (o.sessIn) args.push("-sess_in", o.sessIn);
  if (o.reconnect) args.push("-reconnect");
  if (o.caFile) args.push("-CAfile", o.caFile);
  if (o.servername) args.push("-servername", o.servername);
  args.push(...(o.extra ?? []));
  const r = await run("openssl", args, {
    input: o.input,
    stdinEnd: o.stdinEnd,
    timeoutMs: o.timeoutMs,
    env: o.env,
    cwd: o.cwd,
  });
  return { ...r, reused: countLines(r.stdout, /^Reused,/), full: countLines(r.stdout, /^New,/) };
}

// ---- openssl s_time -----------------------------------------------------------------------------

export interface STimeOptions {
  port: number;
  host?: string;
  version: TlsVersion;
  /** -reuse: one full handshake, then connections resuming its session. Else -new. */
  reuse: boolean;
  /** -time seconds (default 2). */
  seconds?: number;
  /** -www PATH: request a page on each connection (TLS 1.3 needs it to receive tickets). */
  www?: string;
  timeoutMs?: number;
}

export interface STimeResult extends RunResult {
  /** Connections made in the timed run. */
  connections: number;
  /** Wall-clock seconds s_time reports for them. */
  realSeconds: number;
  /** connections / realSeconds. */
  perSecond: number;
  /** Progress characters: 'r' = resumed, '*' = full handshake. */
  resumed: number;
  fullHandshakes: number;
}

export async function sTime(o: STimeOptions): Promise<STimeResult> {
  const seconds = o.seconds ?? 2;
  const args = [
    "s_time",
    "-connect",
    `${o.host ?? "127.0.0.1"}:${o.port}`,
    `-tls${o.version.replace(".", "_")}`,
    o.reuse ? "-reuse" : "-new",
    "-time",
    String(seconds),
  ];
  if (o.www) args.push("-www", o.www);
  const r = await run("openssl", args, { timeoutMs: o.timeoutMs ?? (seconds + 20) * 1000 });
  // "1234 connections in 2 real seconds, 0 bytes read per connection": the last such line is the
  // timed run (with -reuse the first full connection is not part of it).
  const m = [...r.stdout.matchAll(/(\d+) connections in (\d+(?:\.\d+)?) real seconds/g)].at(-1);
  const connections = m ? Number(m[1]) : 0;
  const realSeconds = m ? Number(m[2]) : 0;
  const progress = r.stdout
    .split("\n")
    .filter((l) => /^[*r]+$/.test(l.trim()))
    .join("");
  return {
    ...r,
    connections,
    realSeconds,
    perSecond: realSeconds > 0 ? connections / realSeconds : 0,
    resumed: count(progress, "r"),
    fullHandshakes: count(progress, "*"),
  };
}

// ---- curl -----------------------------------------------------------------------------------------

export interface CurlOptions {
  urls: string[];
  version: TlsVersion;
  caFile?: string;
  /** Skip verification (-k) when no caFile is given (default true then). */
  insecure?: boolean;
  extra?: string[];
  timeoutMs?: number;
}

export interface CurlResult extends RunResult {
  /** ClientHellos curl sent (one per TLS connection). */
  hellos: number;
  /** Certificate messages received: a resumed handshake has none. */
  certificates: number;
  /** hellos - certificates. */
  resumed: number;
}

/** One curl invocation fetching every URL (it reuses the TLS session for later connections). */
export async function curl(o: CurlOptions): Promise<CurlResult> {
  const args = ["-sS", "-v", "--no-keepalive", "-H", "Connection: close"];
  if (o.version === "1.3") args.push("--tlsv1.3");
  else args.push("--tlsv1.2", "--tls-max", "1.2");
  if (o.caFile) args.push("--cacert", o.caFile);
  else if (o.insecure ?? true) args.push("-k");
  args.push(...(o.extra ?? []), ...o.urls);
  const r = await run("curl", args, { timeoutMs: o.timeoutMs ?? 20_000 });
  const hellos = countLines(r.stderr, /\(OUT\), TLS handshake, Client hello \(1\)/);
  const certificates = countLines(r.stderr, /\(IN\), TLS handshake, Certificate \(11\)/);
  return { ...r, hellos, certificates, resumed: hellos - certificates };
}

// ---- Python's ssl -------------------------------------------------------------------------------

export interface PythonOptions {
  port: number;
  host?: string;
  version: TlsVersion;
  /** Connections in a row, each offering the session of the previous one (default 2). */
  connections?: number;
  caFile?: string;
  servername?: string;
  /** Sent after each handshake (e.g. an HTTP request), so the read that waits for tickets ends early. */
  send?: string;
  timeoutMs?: number;
}

const PY_CLIENT = `
import socket, ssl, sys, json
host, port, version, n, cafile, sni, send = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
if cafile:
    ctx.load_verify_locations(cafile)
else:
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = v
ctx.maximum_version = v
if version == "1.2":
    ctx.options |= ssl.OP_NO_TICKET
session = None
out = []
for i in range(n):
    with socket.create_connection((host, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni, session=session) as s:
            s.settimeout(0.5)
            if send:
                s.sendall(send.encode())
            try:
                s.recv(1)  # TLS 1.3 tickets arrive after the handshake
            except Exception:
                pass
            out.append(s.session_reused)
            session = s.session
print(json.dumps(out))
`;

/** Python's ssl client, `connections` in a row offering the previous session: which resumed. */
export async function pythonResumption(o: PythonOptions): Promise<{ reused: boolean[]; result: RunResult }> {
  const args = [
    "-c",
    PY_CLIENT,
    o.host ?? "127.0.0.1",
    String(o.port),
    o.version,
    String(o.connections ?? 2),
    o.caFile ?? "",
    o.servername ?? "localhost",
    o.send ?? "",
  ];
  const result = await run("python3", args, { timeoutMs: o.timeoutMs ?? 20_000 });
  let reused: boolean[] = [];
  try {
    reused = JSON.parse(result.stdout.trim().split("\n").at(-1) ?? "[]");
  } catch {
    reused = [];
  }
  return { reused, result };
}

function countLines(text: string, re: RegExp): number {
  let n = 0;
  for (const line of text.split("\n")) if (re.test(line.trim())) n++;
  return n;
}

function count(s: string, ch: string): number {
  let n = 0;
  for (const c of s) if (c === ch) n++;
  return n;
}
