// `sesscache serve --workers N`: the node:cluster primary. It forks N workers running the same
// `serve` (they share the listening socket; with port 0 the first listen picks the port and every
// worker gets the same one), holds the cluster store's map when the workers use it, prints the
// startup line once all workers listen, and on SIGINT/SIGTERM stops them all and exits 0.
// Workers parse the same command line, but settings that must be identical everywhere and read
// only once (the store's config with its --store-tls-* PEM text) they ask of the primary over IPC
// (workerSettings), not through argv or the environment.
import cluster, { type Worker } from "node:cluster";
import { CliError } from "./errors.js";
import type { LogFields } from "./logger.js";
import { stopOnSignals } from "./signals.js";

/** The message a serve worker sends its primary once it listens. */
export const LISTENING_TAG = "sesscacheServeListening";

export interface ListeningMessage {
  [LISTENING_TAG]: true;
  url: string;
  port: number;
  /** "state: DIR" or "cert: FILE", as in the startup line. */
  where: string;
}

export function isListeningMessage(m: unknown): m is ListeningMessage {
  return typeof m === "object" && m !== null && (m as Record<string, unknown>)[LISTENING_TAG] === true;
}

/** A worker's request for the primary's settings, and the reply (`settings` null for none). */
export const SETTINGS_TAG = "sesscacheServeSettings";

interface SettingsReply {
  [SETTINGS_TAG]: "reply";
  settings: unknown;
}

function isSettingsRequest(m: unknown): boolean {
  return typeof m === "object" && m !== null && (m as Record<string, unknown>)[SETTINGS_TAG] === "request";
}

function isSettingsReply(m: unknown): m is SettingsReply {
  return typeof m === "object" && m !== null && (m as Record<string, unknown>)[SETTINGS_TAG] === "reply";
}

/**
 * In a worker: the settings its primary was started with (PrimaryOptions.settings), asked for over
 * the IPC channel. Rejects with a CliError when no primary answers within `timeoutMs`.
 */
export function workerSettings<T>(timeoutMs = 10_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onMessage = (m: unknown) => {
      if (!isSettingsReply(m)) return;
      finish();
      resolve((m.settings ?? undefined) as T);
    };
    const timer = setTimeout(() => {
      finish();
      reject(new CliError(`no settings from the primary process within ${timeoutMs} ms`));
    }, timeoutMs);
    const finish = () => {
      clearTimeout(timer);
      process.off("message", onMessage);
    };
    if (!process.send) {
      finish();
      reject(new CliError("not a worker: no primary process to ask for settings"));
      return;
    }
    // Listening before asking: the reply cannot arrive unheard.
    process.on("message", onMessage);
    process.send({ [SETTINGS_TAG]: "request" });
  });
}

export interface PrimaryOptions {
  workers: number;
  /** The workers use the cluster store: hold its map here. */
  clusterStore: boolean;
  /** Handed to every worker that asks (workerSettings), replacements too. Must survive JSON. */
  settings?: unknown;
  log: (message: string, fields?: LogFields) => void;
}

/**
 * Forks the workers and resolves with the first one's URL and "where" once all listen. Rejects with
 * a CliError (after stopping the others) when a worker exits before listening.
 */
export async function runPrimary(options: PrimaryOptions): Promise<ListeningMessage> {
  const { startClusterStorePrimary } = await import("../stores/index.js");
  const storePrimary = options.clusterStore ? startClusterStorePrimary() : undefined;
  const onSettingsRequest = (w: Worker, msg: unknown) => {
    if (!isSettingsRequest(msg)) return;
    const reply: SettingsReply = { [SETTINGS_TAG]: "reply", settings: options.settings ?? null };
    if (w.isConnected()) w.send(reply);
  };
  cluster.on("message", onSettingsRequest);
  const workers = new Set<Worker>();
  let stopping = false;
  let started = false;

  const fork = () => {
    const w = cluster.fork();
    workers.add(w);
    w.once("exit", (code, signal) => {
      workers.delete(w);
      if (stopping || !started) return;
      // A worker crashed while serving: replace it, the others carry on.
      options.log(`worker ${w.id} exited (${signal ?? code}); starting another`, {
        worker: w.id,
        exit: signal ?? code,
      });
      fork();
    });
    return w;
  };

  const stopAll = (): Promise<void> => {
    stopping = true;
    const exits = [...workers].map(
      (w) =>
        new Promise<void>((resolve) => {
          if (w.isDead()) return resolve();
          w.once("exit", () => resolve());
          w.process.kill("SIGTERM");
        }),
    );
    const killer = setTimeout(() => {
      for (const w of workers) w.process.kill("SIGKILL");
    }, 5000);
    return Promise.all(exits).then(() => {
      clearTimeout(killer);
      cluster.off("message", onSettingsRequest);
      storePrimary?.close();
    });
  };

  const first = await new Promise<ListeningMessage>((resolve, reject) => {
    const listening: ListeningMessage[] = [];
    const onMessage = (_w: Worker, msg: unknown) => {
      if (!isListeningMessage(msg)) return;
      listening.push(msg);
      if (listening.length === options.workers) {
        cluster.off("message", onMessage);
        cluster.off("exit", onEarlyExit);
        started = true;
        resolve(listening[0]!);
      }
    };
    const onEarlyExit = (_w: Worker, code: number | null) => {
      cluster.off("message", onMessage);
      cluster.off("exit", onEarlyExit);
      // The worker said why on stderr.
      const exitCode = code && code > 0 ? code : 1;
      void stopAll().then(() =>
        reject(new CliError(`a worker exited (${code}) before listening`, { exitCode })),
      );
    };
    cluster.on("message", onMessage);
    cluster.on("exit", onEarlyExit);
    for (let i = 0; i < options.workers; i++) fork();
  });

  stopOnSignals(stopAll, options.log, ` ${workers.size} workers`);
  return first;
}
