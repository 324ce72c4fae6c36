// Captures the seed corpus from real peers on 127.0.0.1 (node --import tsx fuzz/capture-corpus.ts):
// - fuzz/corpus/client-hello/: first flights of OpenSSL s_client (TLS 1.2/1.3, fresh and -sess_in /
//   -reconnect), Node (fresh, with a session, with a ticket), curl, Python's ssl and headless
//   Chromium, recorded by a TCP tap in front of a real Node TLS server (so resumption hellos are
//   real ones offering real sessions).
// - fuzz/corpus/session/: sessions of every kind: Node server sessions (newSession) and client
//   sessions ('session' events) for TLS 1.2 and 1.3, stateful and with tickets, with a client
//   certificate, and OpenSSL client sessions (-sess_out). All made with the throwaway test PKI.
// Files are named by source and content hash, so re-running adds new variants and keeps old ones.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { ClientHelloReader } from "../src/server/client-hello.js";
import { pemToDer } from "../src/session/parse.js";
import { testPki } from "../test/support/certs.js";
import { curl, have, listenLocal, run, sClient } from "../test/support/tls-peers.js";
import { CORPUS_DIR, formatHexFile } from "./corpus.js";

const pki = testPki();
const work = mkdtempSync(join(tmpdir(), "sesscache-corpus-"));
const counts = new Map<string, number>();

function save(dir: string, source: string, bytes: Uint8Array): void {
  const d = join(CORPUS_DIR, dir);
  mkdirSync(d, { recursive: true });
  const hash = createHash("sha256").update(bytes).digest("hex").slice(0, 10);
  const name = `${source.replace(/[^a-z0-9.-]+/gi, "-")}-${hash}.hex`;
  writeFileSync(join(d, name), formatHexFile(source, bytes));
  counts.set(dir, (counts.get(dir) ?? 0) + 1);
}

// ---- the real servers -----------------------------------------------------------------------------

const serverSessions = new Map<string, Buffer>();
function sessionServer(options: tls.TlsOptions, label: string): tls.Server {
  const server = tls.createServer({ key: pki.key, cert: pki.cert, ...options }, (s) => {
    s.on("error", () => {});
    s.on("data", () => {});
    s.end("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
  });
  server.on("newSession", (id: Buffer, data: Buffer, cb: () => void) => {
    serverSessions.set(id.toString("hex"), data);
    save("session", `node-server-${label}`, data);
    cb();
  });
  server.on("resumeSession", (id: Buffer, cb: (err: Error | null, data: Buffer | null) => void) => {
    cb(null, serverSessions.get(id.toString("hex")) ?? null);
  });
  server.on("tlsClientError", () => {});
  return server;
}

const NO_TICKET = tls.DEFAULT_MIN_VERSION && (await import("node:crypto")).constants.SSL_OP_NO_TICKET;
const stateful = sessionServer({ secureOptions: NO_TICKET, sessionIdContext: "corpus" }, "stateful");
const tickets = sessionServer({ sessionIdContext: "corpus" }, "tickets");
const clientAuth = sessionServer(
  {
    secureOptions: NO_TICKET,
    sessionIdContext: "corpus-mtls",
    requestCert: true,
    ca: pki.caCert,
    rejectUnauthorized: true,
  },
  "client-cert",
);
const statefulPort = await listenLocal(stateful);
const ticketsPort = await listenLocal(tickets);
const clientAuthPort = await listenLocal(clientAuth);

// ---- the tap: records each connection's first flight, forwards everything ----------------------

let label = "unknown";
const tap = net.createServer((c) => {
  const source = label;
  const up = net.connect(tapTarget, "127.0.0.1");
  const reader = new ClientHelloReader();
  const chunks: Buffer[] = [];
  let capturing = true;
  c.on("data", (d: Buffer) => {
    if (capturing) {
      chunks.push(d);
      const r = reader.push(d);
      if (r.kind !== "more") {
        capturing = false;
        const all = Buffer.concat(chunks);
        save("client-hello", source, all.subarray(0, r.kind === "done" ? r.hello.length : all.length));
      }
    }
    up.write(d);
  });
  up.pipe(c);
  const end = () => {
    c.destroy();
    up.destroy();
  };
  c.on("error", end).on("close", end);
  up.on("error", end).on("close", end);
});
let tapTarget = statefulPort;
const tapPort = await listenLocal(tap);

async function through(target: number, source: string, f: () => Promise<unknown>): Promise<void> {
  tapTarget = target;
  label = source;
  try {
    await f();
  } catch (err) {
    process.stderr.write(`capture: ${source}: ${(err as Error).message}\n`);
  }
}

// ---- Node clients ---------------------------------------------------------------------------------

function nodeConnect(
  port: number,
  version: "1.2" | "1.3",
  session?: Buffer,
  extra: tls.ConnectionOptions = {},
): Promise<Buffer[]> {
  const v = version === "1.3" ? "TLSv1.3" : "TLSv1.2";
  return new Promise((resolve, reject) => {
    const sessions: Buffer[] = [];
    const s = tls.connect({
      port,
      host: "127.0.0.1",
      servername: "localhost",
      ca: pki.caCert,
      session,
      minVersion: v,
      maxVersion: v,
      ...extra,
    });
    s.on("session", (d: Buffer) => sessions.push(d));
    s.on("error", reject);
    s.on("secureConnect", () => s.write("GET / HTTP/1.1\r\n\r\n"));
    s.on("data", () => {});
    s.on("close", () => resolve(sessions));
    s.setTimeout(5000, () => s.destroy(new Error("timeout")));
  });
}

for (const version of ["1.2", "1.3"] as const) {
  for (const [port, kind] of [
    [statefulPort, "stateful"],
    [ticketsPort, "tickets"],
  ] as const) {
    await through(port, `node-${version}-${kind}-fresh`, async () => {
      const sessions = await nodeConnect(tapPort, version);
      for (const s of sessions) save("session", `node-client-${version}-${kind}`, s);
      label = `node-${version}-${kind}-resume`;
      if (sessions.length > 0) await nodeConnect(tapPort, version, sessions.at(-1));
    });
  }
  await through(clientAuthPort, `node-${version}-client-cert`, async () => {
    const sessions = await nodeConnect(tapPort, version, undefined, { key: pki.key, cert: pki.cert });
    for (const s of sessions) save("session", `node-client-${version}-client-cert`, s);
  });
  await through(statefulPort, `node-${version}-alpn-sni`, () =>
    nodeConnect(tapPort, version, undefined, {
      ALPNProtocols: ["h2", "http/1.1"],
      servername: "www.example.test",
      rejectUnauthorized: false,
    }),
  );
}

// ---- OpenSSL s_client -----------------------------------------------------------------------------

for (const version of ["1.2", "1.3"] as const) {
  for (const [port, kind, noTicket] of [
    [statefulPort, "stateful", true],
    [ticketsPort, "tickets", false],
  ] as const) {
    const sess = join(work, `s_client-${version}-${kind}.pem`);
    await through(port, `openssl-${version}-${kind}-fresh`, () =>
      sClient({
        port: tapPort,
        version,
        sessOut: sess,
        noTicket,
        caFile: pki.caFile,
        servername: "localhost",
        input: "GET / HTTP/1.1\r\n\r\n",
        stdinEnd: 1500,
      }),
    );
    try {
      save("session", `openssl-client-${version}-${kind}`, pemToDer(readFileSync(sess, "utf8")));
    } catch {
      process.stderr.write(`capture: no s_client session for ${version} ${kind}\n`);
    }
    await through(port, `openssl-${version}-${kind}-sess_in`, () =>
      sClient({
        port: tapPort,
        version,
        sessIn: sess,
        noTicket,
        caFile: pki.caFile,
        servername: "localhost",
        input: "GET / HTTP/1.1\r\n\r\n",
        stdinEnd: 1000,
      }),
    );
  }
}

// ---- curl, Python, Chromium -----------------------------------------------------------------------

if (have("curl")) {
  for (const version of ["1.2", "1.3"] as const) {
    const url = `https://127.0.0.1:${tapPort}/`;
    await through(statefulPort, `curl-${version}`, () => curl({ version, urls: [url, url] }));
  }
}

const PY = `
import socket, ssl, sys
port, version = int(sys.argv[1]), sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = v
ctx.maximum_version = v
session = None
for i in range(2):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET / HTTP/1.1\\r\\n\\r\\n")
            try:
                s.recv(100)
            except Exception:
                pass
            session = s.session
`;
for (const version of ["1.2", "1.3"] as const) {
  await through(ticketsPort, `python-${version}`, () =>
    run("python3", ["-c", PY, String(tapPort), version], { timeoutMs: 15_000 }),
  );
}

const chromium = ["chromium", "chromium-browser", "google-chrome"].find((c) => have(c));
if (chromium) {
  await through(statefulPort, "chromium", async () => {
    const before = counts.get("client-hello") ?? 0;
    const child = spawn(
      chromium,
      [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--ignore-certificate-errors",
        `--user-data-dir=${join(work, "chromium")}`,
        "--dump-dom",
        `https://127.0.0.1:${tapPort}/`,
      ],
      { stdio: "ignore" },
    );
    const exited = new Promise((r) => child.once("exit", r));
    const deadline = Date.now() + 30_000;
    // Chromium has no "hello sent" event we can hear: poll the capture count until it moves.
    while ((counts.get("client-hello") ?? 0) === before && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill("SIGKILL");
    await exited;
  });
} else process.stderr.write("capture: no chromium found, skipped\n");

tap.close();
for (const s of [stateful, tickets, clientAuth]) s.close();
process.stdout.write(`captured: ${[...counts].map(([d, n]) => `${d} ${n}`).join(", ")}\n`);
process.exit(0);
