// The status page's figures for a whole `serve --workers N` tree. A page is served by whichever
// worker took the connection; that worker asks the primary, which collects every worker's metrics
// snapshot over the same IPC the --metrics endpoint uses (askWorkers / answerMetricsRequests),
// sums them and answers. Workers add their handshake counts to the snapshot they send.
import cluster, { type Worker } from "node:cluster";
import { type SessionCacheMetricsSnapshot, sumSnapshots } from "../metrics.js";
import { askWorkers } from "./metrics.js";
import type { HandshakeCounts, TreeStats } from "./status-page.js";

export const STATUS_TAG = "sesscacheServeStatus";

/** What a worker answers the primary's snapshot requests with. */
export type WorkerSnapshot = SessionCacheMetricsSnapshot & { handshakes?: HandshakeCounts };

interface StatusRequest {
  [STATUS_TAG]: "request";
  id: number;
}

interface StatusReply {
  [STATUS_TAG]: "reply";
  id: number;
  tree: TreeStats;
}

function tagged(m: unknown, kind: "request" | "reply"): boolean {
  return typeof m === "object" && m !== null && (m as Record<string, unknown>)[STATUS_TAG] === kind;
}

/** Sums worker snapshots into the shape of a single process's /stats counters. */
export function treeTotals(snapshots: readonly WorkerSnapshot[], expected: number): TreeStats {
  const sum = sumSnapshots(snapshots);
  const handshakes: HandshakeCounts = {};
  for (const s of snapshots) {
    for (const [version, c] of Object.entries(s.handshakes ?? {})) {
      const t = handshakes[version] ?? { full: 0, resumed: 0 };
      handshakes[version] = t;
      t.full += c.full;
      t.resumed += c.resumed;
    }
  }
  const store = sum.store;
  return {
    workers: snapshots.length,
    expected,
    ...sum.cache,
    handshakes,
    ...(sum.adapter ? { adapter: sum.adapter } : {}),
    ...(store
      ? {
          store: {
            up: store.up,
            ...store.stats,
            ...(store.external ? { external: store.external } : {}),
            ...(store.latency ? { latency: store.latency } : {}),
          },
        }
      : {}),
  };
}

/**
 * In the primary: answers the workers' requests for the tree's totals. Requests arriving while a
 * collection is under way share it. Returns a function that stops answering.
 */
export function answerTreeRequests(expected: number, timeoutMs = 800): () => void {
  let pending: Promise<TreeStats> | undefined;
  const collect = () => {
    pending ??= askWorkers(timeoutMs)
      .then((snaps) => treeTotals(snaps as WorkerSnapshot[], expected))
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };
  const onMessage = (w: Worker, m: unknown) => {
    if (!tagged(m, "request")) return;
    const id = (m as StatusRequest).id;
    void collect().then((tree) => {
      const reply: StatusReply = { [STATUS_TAG]: "reply", id, tree };
      // With a callback, a worker gone meanwhile (EPIPE) is not an 'error' event that would stop
      // the primary; the worker's wait times out.
      if (w.isConnected()) w.send(reply, undefined, undefined, () => {});
    });
  };
  cluster.on("message", onMessage);
  return () => cluster.off("message", onMessage);
}

let nextId = 0;
/** The last answer and when it came: requests within FRESH_MS share it (a busy page costs no IPC). */
let last: { at: number; tree: Promise<TreeStats | undefined> } | undefined;
const FRESH_MS = 250;

/**
 * In a worker: the tree's totals from the primary, at most FRESH_MS old, or undefined when it does
 * not answer in time.
 */
export function askTreeTotals(timeoutMs = 1500): Promise<TreeStats | undefined> {
  const now = performance.now();
  if (last && now - last.at < FRESH_MS) return last.tree;
  const tree = askPrimary(timeoutMs);
  last = { at: now, tree };
  return tree;
}

function askPrimary(timeoutMs: number): Promise<TreeStats | undefined> {
  if (!process.send || !process.connected) return Promise.resolve(undefined);
  const id = ++nextId;
  return new Promise((resolve) => {
    const finish = (tree: TreeStats | undefined) => {
      clearTimeout(timer);
      process.off("message", onMessage);
      resolve(tree);
    };
    const onMessage = (m: unknown) => {
      if (tagged(m, "reply") && (m as StatusReply).id === id) finish((m as StatusReply).tree);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    process.on("message", onMessage);
    const request: StatusRequest = { [STATUS_TAG]: "request", id };
    try {
      process.send?.(request, undefined, undefined, (err: Error | null) => {
        if (err) finish(undefined);
      });
    } catch {
      finish(undefined);
    }
  });
}
