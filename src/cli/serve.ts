// `sesscache serve`: an HTTPS server resuming TLS 1.2 and 1.3 sessions statefully through an
// in-memory SessionCache, with a page and a JSON endpoint showing the cache's counters.
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { Socket } from "node:net";
import { resolve } from "node:path";
import type { TLSSocket } from "node:tls";
import { type Command, Option } from "commander";
import type { SessionCache } from "../engine/index.js";
import type { AttachedSessionCache } from "../server/index.js";
import { parseListen, parseNonNegativeInteger, parseOnOff, urlHost } from "./args.js";
import { CliError, describeError } from "./errors.js";
import { defaultStateDir, ensureLocalCertificate } from "./self-signed.js";

export const DEFAULT_LISTEN = "127.0.0.1:8443";

export interface ServeOptions {
  /** "HOST:PORT", "[::1]:PORT", ":PORT" or "PORT". Default 127.0.0.1:8443; port 0 picks one. */
  listen?: string;
  /** Certificate chain and key files (PEM). Without them a self-signed localhost pair is used. */
  cert?: string;
  key?: string;
  /** Where the self-signed pair lives. Default: $SESSCACHE_STATE_DIR, $XDG_STATE_HOME/sesscache, ~/.local/state/sesscache. */
  stateDir?: string;
  sessionIdContext?: string;
  /** Node's stateless tickets (default false: stateful sessions through the cache). */
  tickets?: boolean;
  mode?: string | number;
  /** Session lifetime in seconds (0 = the default, 7200). */
  timeout?: number;
  /** Sessions held in memory (0 = unlimited). */
  cacheSize?: number;
  /** Diagnostics from the server and the adapter, one line each, no newline (default: none). */
  log?: (message: string) => void;
}

export interface ServeHandle {
  /** https://host:port with the port actually bound. */
  url: string;
  host: string;
  port: number;
  /** The state directory, when the self-signed certificate is used. */
  stateDir: string | undefined;
  certFile: string;
  /** True when this start made a new self-signed certificate. */
  certGenerated: boolean;
  cache: SessionCache;
  server: Server;
  /** The adapter's handle (its own counters, the session-id context in force). */
  attached: AttachedSessionCache;
  /** Stops listening, drops open connections, closes the cache. Idempotent. */
  close(): Promise<void>;
}

/** Starts the server. Problems the user can fix are thrown as CliError. */
export async function startServe(options: ServeOptions = {}): Promise<ServeHandle> {
  // Loaded here rather than at the top so `sesscache --help/--version` stay instant.
  const [{ SessionCache, formatMode, parseMode }, { attachSessionCache, statefulServerOptions }] =
    await Promise.all([import("../engine/index.js"), import("../server/index.js")]);
  const log = options.log ?? (() => {});
  let listen: { host: string; port: number };
  try {
    listen = parseListen(options.listen ?? DEFAULT_LISTEN);
  } catch (err) {
    throw new CliError(`invalid --listen '${options.listen}': ${describeError(err)}`);
  }
  const tickets = options.tickets ?? false;

  let mode: number | undefined;
  if (options.mode !== undefined) {
    try {
      mode = parseMode(options.mode);
    } catch (err) {
      throw new CliError(`invalid --mode: ${describeError(err)}`);
    }
  }
  if (options.sessionIdContext !== undefined) {
    const n = Buffer.byteLength(options.sessionIdContext, "utf8");
    // OpenSSL's SSL_MAX_SID_CTX_LENGTH (R19); Node would otherwise fail later, less clearly.
    if (n === 0 || n > 32) throw new CliError(`--session-id-context must be 1 to 32 bytes, got ${n}`);
  }

  let cert: string;
  let key: string;
  let certFile: string;
  let stateDir: string | undefined;
  let certGenerated = false;
  if (options.cert !== undefined || options.key !== undefined) {
    if (options.cert === undefined || options.key === undefined) {
      throw new CliError("--cert and --key must be given together");
    }
    certFile = resolve(options.cert);
    cert = readPemFile(certFile, "certificate");
    key = readPemFile(resolve(options.key), "key");
  } else {
    stateDir = resolve(options.stateDir ?? defaultStateDir());
    const local = ensureLocalCertificate(stateDir);
    ({ cert, key, certFile } = local);
    certGenerated = local.generated;
  }

  let cache: SessionCache;
  try {
    cache = new SessionCache({ mode, timeout: options.timeout, cacheSize: options.cacheSize });
  } catch (err) {
    throw new CliError(`invalid cache settings: ${describeError(err)}`);
  }
  const timeout = cache.getTimeout();

  let sessionIdContext: string;
  try {
    sessionIdContext = options.sessionIdContext ?? defaultSessionIdContext(cert);
  } catch (err) {
    cache.close();
    throw new CliError(`invalid certificate file ${certFile}: ${describeError(err)}`);
  }

  let server: Server;
  try {
    server = createServer({
      ...statefulServerOptions({ tickets, sessionIdContext }),
      cert,
      key,
      // Ticket lifetime hints and Node's own tickets follow the cache's lifetime. Node takes int32.
      sessionTimeout: Math.min(timeout, 0x7fffffff),
    });
  } catch (err) {
    cache.close();
    throw new CliError(`invalid certificate or key: ${describeError(err)}`);
  }
  // Idle connections stay open until the client closes: TLS 1.3 tickets arrive after the
  // handshake, and a client that keeps its connection must never find it cut under it.
  server.keepAliveTimeout = 0;

  let attached: AttachedSessionCache;
  try {
    attached = attachSessionCache(server, cache, { tickets, sessionIdContext, log });
  } catch (err) {
    cache.close();
    throw new CliError(`cannot attach the session cache: ${describeError(err)}`);
  }

  // Every raw socket, including those still in the handshake, so close() is prompt.
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  const startedAt = performance.now();
  const info = () => ({
    ...cache.stats(),
    mode: cache.getMode(),
    modeName: formatMode(cache.getMode()),
    cacheSize: cache.getCacheSize(),
    timeout: cache.getTimeout(),
    tickets,
    sessionIdContext,
    uptime: Math.round(performance.now() - startedAt) / 1000,
    // The adapter's own counters: hellos read, PSKs offered, tickets consumed, look-up timeouts...
    adapter: attached.stats(),
  });
  server.on("request", (req: IncomingMessage, res: ServerResponse) => handle(req, res, info));

  try {
    await new Promise<void>((ok, fail) => {
      const onError = (err: Error) => {
        server.off("listening", onListening);
        fail(err);
      };
      const onListening = () => {
        server.off("error", onError);
        ok();
      };
      server.once("error", onError);
      server.once("listening", onListening);
      server.listen({ host: listen.host, port: listen.port });
    });
  } catch (err) {
    attached.detach();
    cache.close();
    const busy =
      (err as NodeJS.ErrnoException).code === "EADDRINUSE" ? " (--listen HOST:0 picks a free port)" : "";
    throw new CliError(
      `cannot listen on ${urlHost(listen.host)}:${listen.port}: ${describeError(err)}${busy}`,
      { cause: err },
    );
  }
  server.on("error", (err) => log(`sesscache: server error: ${describeError(err)}`));

  const address = server.address();
  const port = typeof address === "object" && address ? address.port : listen.port;

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= new Promise<void>((done) => {
      server.close(() => {
        attached.detach();
        cache.close();
        done();
      });
      server.closeAllConnections();
      for (const socket of sockets) socket.destroy();
    });
    return closing;
  };

  return {
    url: `https://${urlHost(listen.host)}:${port}`,
    host: listen.host,
    port,
    stateDir,
    certFile,
    certGenerated,
    cache,
    server,
    attached,
    close,
  };
}

/** Commander's parser for --listen: checks the value now (a usage error), startServe parses it again. */
function validListen(value: string): string {
  parseListen(value);
  return value;
}

/**
 * attachSessionCache's own default (a hash of the leaf certificate, as nginx does), computed here so
 * the server is created with it and attach need not rebuild the secure context.
 */
function defaultSessionIdContext(certPem: string): string {
  const leaf = new X509Certificate(certPem).raw;
  return createHash("sha256").update("sesscache sid_ctx v1\0").update(leaf).digest("hex").slice(0, 32);
}

function readPemFile(file: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(`cannot read ${what} file ${file}: ${describeError(err)}`, { cause: err });
  }
  if (!text.includes("-----BEGIN ")) throw new CliError(`${what} file ${file} is not PEM`);
  return text;
}

type Info = () => Record<string, unknown>;

function handle(req: IncomingMessage, res: ServerResponse, info: Info): void {
  const path = (req.url ?? "/").split("?")[0];
  const socket = req.socket as TLSSocket;
  const connection = {
    resumed: socket.isSessionReused(),
    protocol: socket.getProtocol(),
    cipher: socket.getCipher()?.name ?? null,
  };
  if (path !== "/" && path !== "/stats") {
    send(res, 404, "text/plain; charset=utf-8", "not found\n");
  } else if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    send(res, 405, "text/plain; charset=utf-8", "method not allowed\n");
  } else if (path === "/stats") {
    send(res, 200, "application/json", `${JSON.stringify({ ...info(), connection }, null, 2)}\n`);
  } else {
    send(res, 200, "text/html; charset=utf-8", page(info(), connection));
  }
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, {
    "Content-Type": type,
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
  });
  res.end(body);
}

const COUNTERS = [
  "number",
  "accept",
  "acceptGood",
  "acceptRenegotiate",
  "hits",
  "cbHits",
  "misses",
  "timeouts",
  "cacheFull",
  "connect",
  "connectGood",
  "connectRenegotiate",
] as const;

function page(
  data: Record<string, unknown>,
  conn: { resumed: boolean; protocol: string | null; cipher: string | null },
): string {
  const rows = COUNTERS.map((k) => `<tr><th>${k}</th><td>${esc(data[k])}</td></tr>`).join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sesscache serve</title>
<style>body{font:15px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}th,td{padding:2px 12px;text-align:left}td{font-family:monospace}</style>
</head><body>
<h1>sesscache serve</h1>
<p>This connection: <b>${conn.resumed ? "resumed" : "full handshake"}</b>, ${esc(conn.protocol)}, ${esc(conn.cipher)}.</p>
<h2>Session cache</h2>
<p>mode ${esc(data.modeName)}, size ${esc(data.cacheSize)}, timeout ${esc(data.timeout)} s, tickets ${data.tickets ? "on" : "off"}, up ${esc(data.uptime)} s. <a href="/stats">JSON</a></p>
<table>
${rows}
</table>
</body></html>
`;
}

function esc(v: unknown): string {
  return String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Registers `sesscache serve` on the program. */
export function register(program: Command): void {
  program
    .command("serve")
    .summary("run an HTTPS server that resumes TLS sessions through a sesscache cache")
    .description(
      "Run an HTTPS server (HTTP/1.1) whose TLS 1.2 and 1.3 sessions resume statefully through an " +
        "in-memory sesscache SessionCache. GET / shows the cache's counters, GET /stats gives them as JSON. " +
        "Without --cert/--key it uses a self-signed certificate for localhost, made once and kept in the " +
        "state directory. Stops cleanly on SIGINT/SIGTERM.",
    )
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  sesscache serve\n" +
        "  sesscache serve --listen [::1]:0 --timeout 300 --cache-size 1000\n" +
        "  curl --cacert ~/.local/state/sesscache/tls/cert.pem https://localhost:8443/stats https://localhost:8443/stats\n" +
        "  openssl s_client -connect 127.0.0.1:8443 -tls1_2 -sess_out s.pem; " +
        "openssl s_client -connect 127.0.0.1:8443 -tls1_2 -sess_in s.pem",
    )
    .option(
      "--listen <host:port>",
      "address to listen on; [::1]:port for IPv6, port 0 picks one",
      validListen,
      DEFAULT_LISTEN,
    )
    .option("--cert <file>", "certificate chain, PEM (default: the self-signed localhost certificate)")
    .option("--key <file>", "private key for --cert, PEM")
    .option(
      "--state-dir <dir>",
      "where the self-signed certificate is kept (default: $SESSCACHE_STATE_DIR, " +
        "$XDG_STATE_HOME/sesscache or ~/.local/state/sesscache)",
    )
    .option(
      "--session-id-context <str>",
      "session-id context, 1-32 bytes (default: derived from the certificate)",
    )
    .addOption(
      new Option("--tickets <on|off>", "Node's stateless session tickets instead of stateful sessions")
        .argParser(parseOnOff)
        .default(false, "off"),
    )
    .option("--mode <list>", "cache mode, e.g. server,no_auto_clear or 0x82 (default: server)")
    .option("--timeout <seconds>", "session lifetime; 0 = default (default: 7200)", parseNonNegativeInteger)
    .option(
      "--cache-size <n>",
      "sessions kept in memory; 0 = unlimited (default: 20480)",
      parseNonNegativeInteger,
    )
    .action(async (opts: CommandOptions) => {
      const log = (msg: string) => process.stderr.write(`sesscache serve: ${msg}\n`);
      // The adapter's lines already start with "sesscache: ".
      const handle = await startServe({ ...opts, log: (msg) => process.stderr.write(`${msg}\n`) });
      if (handle.certGenerated) {
        log(`made a self-signed certificate for localhost: ${handle.certFile}`);
      }
      stopOnSignals(handle, log);
      const where = handle.stateDir !== undefined ? `state: ${handle.stateDir}` : `cert: ${handle.certFile}`;
      // Tests and scripts read the port from this line: keep its shape.
      process.stdout.write(`sesscache serve: listening on ${handle.url} (${where})\n`);
    });
}

interface CommandOptions {
  listen: string;
  cert?: string;
  key?: string;
  stateDir?: string;
  sessionIdContext?: string;
  tickets: boolean;
  mode?: string;
  timeout?: number;
  cacheSize?: number;
}

function stopOnSignals(handle: ServeHandle, log: (msg: string) => void): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      // A second signal while closing: the user wants out now.
      process.exit(1);
    }
    stopping = true;
    log(`${signal}: shutting down`);
    void handle.close().then(() => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      process.exitCode = 0;
      // Normally nothing is left and the process ends at once; this only guards against a leak.
      setTimeout(() => process.exit(0), 2000).unref();
    });
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
