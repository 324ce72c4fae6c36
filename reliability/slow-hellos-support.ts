// Shared parts of the slow-hellos suite (both modes): the child processes, IPC request/reply, a real
// ClientHello to trickle, and the normal clients' resumption loop.
import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import { dirname, join } from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const HOST = "127.0.0.1";

export function child(file: string, args: string[], niceness = 0, cpu?: number): ChildProcess {
  const node = [process.execPath, "--import", "tsx", join(here, file), ...args];
  // Optional pinning (taskset) to one CPU, so the three processes do not take each other's core.
  if (cpu !== undefined) node.unshift("taskset", "-c", String(cpu));
  const stdio: StdioOptions = ["ignore", "inherit", "inherit", "ipc"];
  // The slow clients stand for machines elsewhere: their own CPU is not the server's cost, so they
  // run at a lower priority than the server and the normal clients on this shared machine.
  return niceness > 0
    ? spawn("nice", ["-n", String(niceness), ...node], { stdio })
    : spawn(node[0]!, node.slice(1), { stdio });
}

let asked = 0;
/** One request/reply over IPC, matched by a sequence number (a sampler may be asking meanwhile). */
// biome-ignore lint/suspicious/noExplicitAny: IPC replies are plain JSON
export function ask(p: ChildProcess, msg: object): Promise<any> {
  const q = ++asked;
  return new Promise((resolve) => {
    const on = (m: { q?: number }) => {
      if (m.q !== q) return;
      p.off("message", on);
      resolve(m);
    };
    p.on("message", on);
    p.send({ ...msg, q });
  });
}

/** The first flight of a real Node client (TLS 1.2 and 1.3 offered), read by a plain TCP server. */
export async function captureHello(): Promise<Buffer> {
  const srv = net.createServer();
  srv.listen(0, HOST);
  await once(srv, "listening");
  const got = new Promise<Buffer>((resolve) =>
    srv.once("connection", (s) =>
      s.once("data", (d: Buffer) => {
        resolve(d);
        s.destroy();
      }),
    ),
  );
  const c = tls.connect({
    port: (srv.address() as net.AddressInfo).port,
    host: HOST,
    servername: "localhost",
  });
  c.on("error", () => {});
  const hello = await got;
  c.destroy();
  srv.close();
  return hello;
}

export interface LoopResult {
  resumed: number;
  full: number;
  failed: number;
  seconds: number;
}

/** `concurrency` loops of sequential handshakes, each offering the session (ticket) it got last. */
export async function resumeLoop(
  port: number,
  ca: string,
  seconds: number,
  concurrency: number,
): Promise<LoopResult> {
  const r: LoopResult = { resumed: 0, full: 0, failed: 0, seconds };
  const end = performance.now() + seconds * 1000;
  const one = (version: "TLSv1.2" | "TLSv1.3", session: Buffer | undefined) =>
    new Promise<{ reused: boolean; session: Buffer | undefined }>((resolve, reject) => {
      let latest: Buffer | undefined;
      const s = tls.connect({
        port,
        host: HOST,
        servername: "localhost",
        ca,
        session,
        minVersion: version,
        maxVersion: version,
      });
      const timer = setTimeout(() => s.destroy(new Error("timeout")), 10_000);
      let reused = false;
      s.on("session", (b: Buffer) => (latest = b));
      s.once("secureConnect", () => (reused = s.isSessionReused()));
      s.on("data", () => {});
      s.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      s.once("close", () => {
        clearTimeout(timer);
        resolve({ reused, session: latest ?? (reused ? session : undefined) });
      });
    });
  const worker = async (i: number) => {
    const version = i % 2 === 0 ? "TLSv1.2" : "TLSv1.3";
    let session: Buffer | undefined;
    while (performance.now() < end) {
      try {
        const x = await one(version, session);
        if (x.reused) r.resumed++;
        else r.full++;
        session = x.session;
      } catch {
        r.failed++;
        session = undefined;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, i) => worker(i)));
  return r;
}
