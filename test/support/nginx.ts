// nginx as a TLS server no one here wrote: run in the foreground on a free 127.0.0.1 port with
// everything (config, pid, logs, temp paths) in a temp dir. Each response says whether that
// connection resumed: "r TLSv1.3" or ". TLSv1.2".
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface NginxOptions {
  certFile: string;
  keyFile: string;
  /** `ssl_session_cache shared:X:4m` (true) or `none` (false). */
  sharedCache: boolean;
  tickets: boolean;
  /** ssl_session_ticket_key files, in order (the first encrypts; the others only decrypt, and renew). */
  ticketKeyFiles?: string[];
  /** ssl_protocols, default "TLSv1.2 TLSv1.3". */
  protocols?: string;
  /** Listen on this port (to restart a server in place); default a free one. */
  port?: number;
  /** ssl_session_timeout, default "5m". */
  sessionTimeout?: string;
}

export interface Nginx {
  readonly port: number;
  readonly dir: string;
  stop(): Promise<void>;
}

let binary: string | null | undefined;

function findNginx(): string | null {
  if (binary !== undefined) return binary;
  for (const candidate of ["nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx"]) {
    try {
      execFileSync(candidate, ["-v"], { stdio: "ignore" });
      binary = candidate;
      return binary;
    } catch {
      // try the next one
    }
  }
  binary = null;
  return binary;
}

/**
 * Why nginx tests must be skipped, or undefined when they can run. With SESSCACHE_REQUIRE_NGINX=1 a
 * missing nginx is not a reason to skip: the caller runs the test and startNginx fails it.
 */
export function nginxSkipReason(): string | undefined {
  if (findNginx()) return undefined;
  if (process.env.SESSCACHE_REQUIRE_NGINX === "1") return undefined;
  return "nginx not installed (set SESSCACHE_REQUIRE_NGINX=1 to make this a failure)";
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function config(dir: string, port: number, o: NginxOptions): string {
  const keys = (o.ticketKeyFiles ?? []).map((f) => `    ssl_session_ticket_key ${f};\n`).join("");
  return `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log notice;
events { worker_connections 128; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${o.certFile};
    ssl_certificate_key ${o.keyFile};
    ssl_protocols ${o.protocols ?? "TLSv1.2 TLSv1.3"};
    ssl_session_cache ${o.sharedCache ? `shared:sesscache${port}:4m` : "none"};
    ssl_session_tickets ${o.tickets ? "on" : "off"};
    ssl_session_timeout ${o.sessionTimeout ?? "5m"};
${keys}    location / {
      default_type text/plain;
      return 200 "$ssl_session_reused $ssl_protocol\\n";
    }
  }
}
`;
}

/** Resolves once the port accepts a TCP connection; bounded, fails early if nginx exits. */
async function waitListening(child: ChildProcess, port: number, log: () => string): Promise<void> {
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });
  for (let attempt = 0; attempt < 200; attempt++) {
    if (exited) throw new Error(`nginx exited at start:\n${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    // Nothing to wait on: nginx signals readiness only by accepting connections.
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nginx did not listen on ${port}:\n${log()}`);
}

export async function startNginx(options: NginxOptions): Promise<Nginx> {
  const bin = findNginx();
  if (!bin) throw new Error("nginx is required (SESSCACHE_REQUIRE_NGINX=1) but not installed");
  const dir = mkdtempSync(join(tmpdir(), "sesscache-nginx-"));
  const port = options.port ?? (await freePort());
  writeFileSync(join(dir, "nginx.conf"), config(dir, port, options));
  writeFileSync(join(dir, "error.log"), "");
  const child = spawn(bin, ["-e", join(dir, "error.log"), "-p", dir, "-c", join(dir, "nginx.conf")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const log = () => `${stderr}${readFileSync(join(dir, "error.log"), "utf8")}`;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  try {
    await waitListening(child, port, log);
  } catch (err) {
    child.kill("SIGKILL");
    await exited;
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    dir,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM"); // fast shutdown of master and workers
        const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
