// `sesscache serve --metrics HOST:PORT`: a Prometheus endpoint (GET /metrics) over plain HTTP.
// One process: the metrics read its cache, adapter and store at scrape time (src/metrics.ts).
// --workers N: the primary serves the endpoint; at each scrape it asks every worker for a snapshot
// over the cluster IPC channel and sums them, so one endpoint covers the whole process tree.
import cluster from "node:cluster";
import { createServer, type Server } from "node:http";
import type { Socket } from "node:net";
import type { Registry } from "prom-client";
import type { SessionCacheMetricsSnapshot } from "../metrics.js";
import { parseListen, urlHost } from "./args.js";
import { CliError, describeError } from "./errors.js";

/** The tag of the primary's snapshot requests and the workers' replies. */
export const METRICS_TAG = "sesscacheServeMetrics";

interface MetricsRequest {
  [METRICS_TAG]: "request";
  id: number;
}

interface MetricsReply {
  [METRICS_TAG]: "reply";
  id: number;
  snapshot: SessionCacheMetricsSnapshot;
}

function tagged(m: unknown, kind: "request" | "reply"): boolean {
  return typeof m === "object" && m !== null && (m as Record<string, unknown>)[METRICS_TAG] === kind;
}

export interface MetricsEndpoint {
  /** http://host:port/metrics with the port actually bound. */
  url: string;
  close(): Promise<void>;
}

/** Serves `registry` on GET /metrics at `address` ("HOST:PORT"); other paths answer 404. */
export async function startMetricsEndpoint(address: string, registry: Registry): Promise<MetricsEndpoint> {
  let listen: { host: string; port: number };
  try {
    listen = parseListen(address);
  } catch (err) {
    throw new CliError(`invalid --metrics '${address}': ${describeError(err)}`);
  }
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const reply = (status: number, type: string, body: string) => {
      res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
      res.end(body);
    };
    if (path !== "/metrics") return reply(404, "text/plain; charset=utf-8", "not found\n");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      return reply(405, "text/plain; charset=utf-8", "method not allowed\n");
    }
    registry.metrics().then(
      (text) => reply(200, registry.contentType, text),
      (err) => reply(500, "text/plain; charset=utf-8", `${describeError(err)}\n`),
    );
  });
  const sockets = new Set<Socket>();
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  try {
    await new Promise<void>((ok, fail) => {
      server.once("error", fail);
      server.listen({ host: listen.host, port: listen.port }, () => {
        server.off("error", fail);
        ok();
      });
    });
  } catch (err) {
    const busy =
      (err as NodeJS.ErrnoException).code === "EADDRINUSE" ? " (--metrics HOST:0 picks a free port)" : "";
    throw new CliError(
      `cannot listen on ${urlHost(listen.host)}:${listen.port} for --metrics: ${describeError(err)}${busy}`,
      { cause: err },
    );
  }
  server.on("error", () => {});
  const bound = server.address();
  const port = typeof bound === "object" && bound ? bound.port : listen.port;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost(listen.host)}:${port}/metrics`,
    close() {
      closing ??= new Promise<void>((done) => {
        server.close(() => done());
        for (const s of sockets) s.destroy();
      });
      return closing;
    },
  };
}

/** In a worker: answers the primary's snapshot requests with `read()`. */
export function answerMetricsRequests(read: () => SessionCacheMetricsSnapshot): void {
  process.on("message", (m: unknown) => {
    if (!tagged(m, "request") || !process.send) return;
    const reply: MetricsReply = { [METRICS_TAG]: "reply", id: (m as MetricsRequest).id, snapshot: read() };
    // With a callback, a primary gone meanwhile is not an 'error' event.
    process.send(reply, undefined, undefined, () => {});
  });
}

let nextId = 0;

/**
 * In the primary: every live worker's snapshot. Workers that do not answer within `timeoutMs`
 * (starting, stopping) are left out of this scrape.
 */
export function askWorkers(timeoutMs = 1000): Promise<SessionCacheMetricsSnapshot[]> {
  const workers = Object.values(cluster.workers ?? {}).filter((w) => w?.isConnected());
  if (workers.length === 0) return Promise.resolve([]);
  const id = ++nextId;
  return new Promise((resolve) => {
    const got = new Map<number, SessionCacheMetricsSnapshot>();
    const finish = () => {
      clearTimeout(timer);
      cluster.off("message", onMessage);
      resolve([...got.values()]);
    };
    const onMessage = (w: { id: number }, m: unknown) => {
      if (!tagged(m, "reply") || (m as MetricsReply).id !== id) return;
      got.set(w.id, (m as MetricsReply).snapshot);
      if (got.size === workers.length) finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    cluster.on("message", onMessage);
    const request: MetricsRequest = { [METRICS_TAG]: "request", id };
    for (const w of workers) {
      try {
        // With a callback, a worker exiting meanwhile (EPIPE) is not an 'error' event that would
        // stop the primary: the timeout ends the wait.
        w!.send(request, undefined, undefined, () => {});
      } catch {
        // Gone meanwhile: the timeout ends the wait.
      }
    }
  });
}
