// The chaos load driver: keeps `concurrency` TLS handshakes in flight against one or more `sesscache
// serve` processes (half of them resumptions, TLS 1.2 and 1.3 mixed), runs one fault at a planned
// moment, and counts per phase (before / during / after the fault window): failed handshakes,
// handshakes slower than the look-up deadline + 20 ms, resumption attempts and resumptions, and the
// time from the fault's end to the first resumed handshake.
//
// A resumption is always offered to another server than the one that issued the session (with
// several servers), so it can only resume through the shared store; TLS 1.3 tickets are single-use
// (the new ticket replaces the one spent), a TLS 1.2 session is resumed once; the newest session is
// offered first. At the fault's start a reserve of sessions is put aside; once the fault is over and a
// resumption shows the store is back, they are offered again ("reserve"): did sessions made before
// the fault survive it?
import tls from "node:tls";

export type Phase = "before" | "during" | "after";
type Version = "TLSv1.2" | "TLSv1.3";

interface Saved {
  session: Buffer;
  version: Version;
  server: number;
  bornMs: number;
}

export interface HandshakeRecord {
  startMs: number;
  endMs: number;
  attempt: boolean;
  resumed: boolean;
  ok: boolean;
  error?: string;
  reserve: boolean;
  /** When the offered session was issued. */
  sessionBornMs?: number;
  /** The worker that answered GET /stats on this connection (probeWorker). */
  worker?: number;
}

export interface FaultWindow {
  /** What happened, for the report. */
  fault: string;
  startMs: number;
  endMs: number;
  /** Anything the fault measured (failover time, exit code...). */
  extra?: Record<string, unknown>;
}

export interface LoadOptions {
  ports: number[];
  handshakes: number;
  concurrency: number;
  /** Share of handshakes that offer a session (default 0.5). */
  resumeShare?: number;
  /** Start the fault once this share of handshakes is done (default 0.35). */
  faultAt?: number;
  /** Runs the fault; resolves with its window once it is over (restarted, failed over...). */
  fault: (ctx: FaultContext) => Promise<FaultWindow>;
  /** Handshakes after the fault at least (default 25% of `handshakes`). */
  minAfter?: number;
  /** After the fault, the load goes on until a resumption succeeds, at most this long. Default 15 s. */
  recoveryWaitMs?: number;
  /** A handshake not done by then is a failure (a hang), ms. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** The whole run's bound, ms; then no new handshakes start. Default 10 minutes. */
  deadlineMs?: number;
  /** Sessions put aside at the fault's start and offered after it. Default 64. */
  reserve?: number;
  lookupTimeoutMs: number;
  /** Stop starting handshakes once a connection is refused (the server is stopping). */
  stopOnRefused?: boolean;
  /** On reserve connections, GET /stats to learn which --workers worker resumed it. */
  probeWorker?: boolean;
}

export interface FaultContext {
  now(): number;
  /** Handshakes done so far. */
  done(): number;
  /** Resolves once `n` more handshakes are done (or the run ends). */
  afterHandshakes(n: number): Promise<void>;
}

export interface PhaseCounts {
  handshakes: number;
  failed: number;
  slow: number;
  attempts: number;
  resumed: number;
  resumedShare: number | null;
  /** Resumption attempts with sessions issued after the fault's end, and how many resumed. */
  freshAttempts: number;
  freshResumed: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface LoadResult {
  window: FaultWindow;
  phases: Record<Phase, PhaseCounts>;
  total: { handshakes: number; failed: number; slow: number; refused: number; elapsedMs: number };
  reserve: { offered: number; resumed: number; byWorker: Record<string, number> };
  recoveryMs: number | null;
  errors: Record<string, number>;
  timedOut: boolean;
  records: HandshakeRecord[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs the load with its fault; never throws for a failed handshake (it is counted). */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const resumeShare = o.resumeShare ?? 0.5;
  const faultAtCount = Math.floor(o.handshakes * (o.faultAt ?? 0.35));
  const minAfter = o.minAfter ?? Math.floor(o.handshakes * 0.25);
  const hsTimeout = o.handshakeTimeoutMs ?? 10_000;
  const recoveryWaitMs = o.recoveryWaitMs ?? 15_000;
  const reserveSize = o.reserve ?? 64;
  const t0 = performance.now();
  const deadline = t0 + (o.deadlineMs ?? 600_000);
  const pool: Saved[] = [];
  const maxPool = Math.max(64, o.concurrency * 4);
  let reserve: Saved[] = [];
  const reserveStats = { offered: 0, resumed: 0, byWorker: {} as Record<string, number> };
  const records: HandshakeRecord[] = [];
  let window: FaultWindow | undefined;
  let faultStarted = false;
  let faultDone = false;
  let faultPromise: Promise<FaultWindow> | undefined;
  let afterCount = 0;
  // A handshake that started after the window resumed: the store is reachable again.
  let recovered = false;
  let refused = 0;
  let stopIssuing = false;
  let seq = 0;
  const waiters: { at: number; resolve: () => void }[] = [];
  const ctx: FaultContext = {
    now: () => performance.now(),
    done: () => records.length,
    afterHandshakes: (n) =>
      new Promise<void>((resolve) => waiters.push({ at: records.length + n, resolve: () => resolve() })),
  };
  const remember = (s: Saved) => {
    pool.push(s);
    if (pool.length > maxPool) pool.shift();
  };

  const one = (): Promise<void> => {
    const i = seq++;
    const version: Version = i % 2 === 0 ? "TLSv1.2" : "TLSv1.3";
    let saved: Saved | undefined;
    let fromReserve = false;
    // The reserve waits for the store to be back (or for a share of the after phase, so it drains
    // when it never comes back): it measures whether sessions survived, not the reconnection.
    const reserveOpen = recovered || afterCount >= minAfter / 2;
    if (faultDone && reserveOpen && reserve.length > 0 && i % 2 === 0) {
      saved = reserve.shift();
      fromReserve = true;
    } else if (Math.random() < resumeShare) {
      // Newest first, of this version: after a fault the first sessions offered are those issued
      // since, so the recovery time is the store's, not the time to use up sessions issued while
      // it was down (the reserve covers sessions issued before the fault).
      let idx = pool.length - 1;
      while (idx >= 0 && pool[idx]!.version !== version) idx--;
      if (idx >= 0) saved = pool.splice(idx, 1)[0];
    }
    const useVersion = saved?.version ?? version;
    // With several servers, offer the session to another one than its issuer.
    const server =
      saved && o.ports.length > 1
        ? (saved.server + 1 + Math.floor(Math.random() * (o.ports.length - 1))) % o.ports.length
        : Math.floor(Math.random() * o.ports.length);
    const rec: HandshakeRecord = {
      startMs: performance.now(),
      endMs: 0,
      attempt: saved !== undefined,
      resumed: false,
      ok: false,
      reserve: fromReserve,
      sessionBornMs: saved?.bornMs,
    };
    return new Promise<void>((resolve) => {
      let settled = false;
      const sock = tls.connect({
        host: "127.0.0.1",
        port: o.ports[server]!,
        servername: "localhost",
        rejectUnauthorized: false,
        minVersion: useVersion,
        maxVersion: useVersion,
        session: saved?.session,
      });
      const finish = (ok: boolean, error?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        rec.endMs = performance.now();
        rec.ok = ok;
        if (error) rec.error = error;
        records.push(rec);
        if (rec.resumed && window && rec.startMs >= window.endMs) recovered = true;
        if (fromReserve) {
          reserveStats.offered++;
          if (rec.resumed) reserveStats.resumed++;
        }
        if (rec.worker !== undefined && rec.resumed) {
          const w = String(rec.worker);
          reserveStats.byWorker[w] = (reserveStats.byWorker[w] ?? 0) + 1;
        }
        for (let w = waiters.length - 1; w >= 0; w--) {
          if (records.length >= waiters[w]!.at) waiters.splice(w, 1)[0]!.resolve();
        }
        resolve();
      };
      const timer = setTimeout(() => {
        finish(false, "timeout");
        sock.destroy();
      }, hsTimeout);
      sock.once("error", (err: NodeJS.ErrnoException) => {
        if (err.code === "ECONNREFUSED" && o.stopOnRefused) {
          refused++;
          stopIssuing = true;
          settled = true;
          clearTimeout(timer);
          resolve();
          return;
        }
        finish(false, err.code ?? err.message);
      });
      sock.once("secureConnect", () => {
        rec.resumed = sock.isSessionReused();
        if (fromReserve && o.probeWorker) {
          // Which worker resumed it: GET /stats on this connection, then the record is done.
          let body = "";
          sock.setEncoding("utf8");
          sock.on("data", (d: string) => {
            body += d;
          });
          sock.once("end", () => {
            const m = /"worker":\s*(\d+)/.exec(body);
            if (m) rec.worker = Number(m[1]);
            finish(true);
          });
          sock.write("GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
          return;
        }
        finish(true);
        if (useVersion === "TLSv1.2") {
          const s = sock.getSession();
          // A resumed TLS 1.2 session was used once: a new full handshake brings the next one.
          if (s && !rec.resumed)
            remember({ session: s, version: useVersion, server, bornMs: performance.now() });
          sock.end();
          return;
        }
        // TLS 1.3: the ticket comes after the handshake; wait for it (bounded), then close.
        const t = setTimeout(() => sock.destroy(), 2000);
        sock.once("session", (s: Buffer) => {
          clearTimeout(t);
          remember({ session: s, version: useVersion, server, bornMs: performance.now() });
          sock.end();
        });
      });
      sock.on("close", () => {
        if (!settled) finish(false, "closed before handshake");
      });
    });
  };

  const worker = async () => {
    for (;;) {
      if (stopIssuing || performance.now() > deadline) return;
      const done = records.length;
      if (!faultStarted && done >= faultAtCount) {
        faultStarted = true;
        reserve = pool.splice(0, Math.min(reserveSize, Math.floor(pool.length / 2)));
        faultPromise = o.fault(ctx).then((w) => {
          window = w;
          faultDone = true;
          afterCount = 0;
          return w;
        });
      }
      if (
        faultStarted &&
        faultDone &&
        seq >= o.handshakes &&
        afterCount >= minAfter &&
        reserve.length === 0 &&
        // Load goes on until resumption is back, for at most recoveryWaitMs after the fault.
        (recovered || performance.now() - (window?.endMs ?? 0) > recoveryWaitMs)
      ) {
        return;
      }
      if (faultDone) afterCount++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  let timedOut = performance.now() > deadline;
  if (!faultDone) {
    // Load ended first (refused, deadline): let the fault finish, bounded.
    const w = await Promise.race([faultPromise, sleep(30_000).then(() => undefined)]);
    if (!w) timedOut = true;
  }
  for (const w of waiters) w.resolve();
  const win = window ?? { fault: "fault did not finish", startMs: Infinity, endMs: Infinity };
  return summarize(records, win, o.lookupTimeoutMs, t0, refused, reserveStats, timedOut);
}

function summarize(
  records: HandshakeRecord[],
  window: FaultWindow,
  lookupTimeoutMs: number,
  t0: number,
  refused: number,
  reserve: LoadResult["reserve"],
  timedOut: boolean,
): LoadResult {
  const slowMs = lookupTimeoutMs + 20;
  const phaseOf = (r: HandshakeRecord): Phase =>
    r.startMs < window.startMs ? "before" : r.startMs < window.endMs ? "during" : "after";
  const by: Record<Phase, HandshakeRecord[]> = { before: [], during: [], after: [] };
  const errors: Record<string, number> = {};
  for (const r of records) {
    by[phaseOf(r)].push(r);
    if (!r.ok) errors[r.error ?? "?"] = (errors[r.error ?? "?"] ?? 0) + 1;
  }
  const counts = (rs: HandshakeRecord[]): PhaseCounts => {
    const ms = rs.filter((r) => r.ok).map((r) => r.endMs - r.startMs);
    ms.sort((a, b) => a - b);
    const q = (p: number) => (ms.length ? ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]! : 0);
    const attempts = rs.filter((r) => r.attempt).length;
    const resumed = rs.filter((r) => r.resumed).length;
    const fresh = rs.filter((r) => r.attempt && (r.sessionBornMs ?? -1) >= window.endMs);
    return {
      handshakes: rs.length,
      failed: rs.filter((r) => !r.ok).length,
      slow: ms.filter((m) => m > slowMs).length,
      attempts,
      resumed,
      resumedShare: attempts ? resumed / attempts : null,
      freshAttempts: fresh.length,
      freshResumed: fresh.filter((r) => r.resumed).length,
      p50Ms: round(q(0.5)),
      p99Ms: round(q(0.99)),
      maxMs: round(ms.length ? ms[ms.length - 1]! : 0),
    };
  };
  const firstResumedAfter = records
    .filter((r) => r.resumed && r.startMs >= window.endMs)
    .reduce((m, r) => Math.min(m, r.endMs), Infinity);
  const phases = { before: counts(by.before), during: counts(by.during), after: counts(by.after) };
  const end = records.reduce((m, r) => Math.max(m, r.endMs), t0);
  return {
    window: { ...window, startMs: round(window.startMs - t0), endMs: round(window.endMs - t0) },
    phases,
    total: {
      handshakes: records.length,
      failed: phases.before.failed + phases.during.failed + phases.after.failed,
      slow: phases.before.slow + phases.during.slow + phases.after.slow,
      refused,
      elapsedMs: round(end - t0),
    },
    reserve,
    recoveryMs: Number.isFinite(firstResumedAfter) ? round(firstResumedAfter - window.endMs) : null,
    errors,
    timedOut,
    records,
  };
}

const round = (x: number) => Math.round(x * 10) / 10;

export interface ScenarioOptions {
  handshakes: number;
  concurrency: number;
  lookupTimeoutMs: number;
  /** How long a timed fault lasts (down, paused, slow, garbage, flood), ms. */
  faultMs: number;
  /** Latency added by the slow proxy, ms each way. */
  latencyMs: number;
  /** The whole run's bound, ms. */
  deadlineMs: number;
  /** Extra serve processes' log tail printed on failure. */
  verbose: boolean;
}

export interface ScenarioReport {
  scenario: string;
  /** How the load was held: servers, workers, store. */
  setup: string;
  result: LoadResult;
  /** Scenario-specific figures (failover time, exit code, look-up rate...). */
  extra: Record<string, unknown>;
  /** Goals that hold or not, by name. */
  checks: Record<string, boolean>;
}

export interface Scenario {
  family: string;
  describe: string;
  run(o: ScenarioOptions): Promise<ScenarioReport>;
}

/** A fresh sealing key, base64 of 32 bytes. */
export function storeKey(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");
}

/** The goals every scenario is held to. */
export function baseChecks(r: LoadResult): Record<string, boolean> {
  return {
    noFailed: r.total.failed === 0,
    noSlow: r.total.slow === 0,
    recovered: r.recoveryMs !== null,
    noHang: !("timeout" in r.errors),
    withinDeadline: !r.timedOut,
  };
}
