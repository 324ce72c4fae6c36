// `serve --workers 4` (sessions shared through the primary: --store cluster) under load:
// - workers-kill: one worker SIGKILLed mid-load; the primary forks a replacement; the others keep
//   resuming; sessions made before the kill are offered again afterwards and GET /stats on those
//   connections tells which worker resumed them (the replacement has a new id).
// - workers-lookup-storm: on top of the load, a flood of TLS 1.2 ClientHellos offering random
//   session ids (each one a store look-up that misses) at 10× the load's look-up rate.
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import { baseChecks, type HandshakeRecord, runLoad, type Scenario } from "./driver.js";
import { sleep } from "./redis-faults.js";
import { fetchStats, type ServeProcess, startServe, storeSide } from "./serve-process.js";

/**
 * The `serve` workers among the children of `pid` (Linux /proc): cluster.fork() gives them the
 * primary's argv. Other children are not workers: tsx starts esbuild's service process when its
 * transform cache is cold (a fresh clone), and killing that one would test nothing.
 */
export function workerPids(pid: number): number[] {
  return childPids(pid).filter((child) => {
    try {
      const argv = readFileSync(`/proc/${child}/cmdline`, "utf8").split("\0");
      return argv.includes("serve") && !argv.some((a) => a.includes("esbuild"));
    } catch {
      return false; // gone meanwhile
    }
  });
}

/** Pids whose parent is `pid` (Linux /proc). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      // Field 4 (ppid) comes after the parenthesised command name.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(d));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** The --workers ids answering /stats, asked `tries` times (connections go round the workers). */
async function workerStats(port: number, tries: number): Promise<Map<number, Record<string, unknown>>> {
  const seen = new Map<number, Record<string, unknown>>();
  for (let i = 0; i < tries; i++) {
    const s = await fetchStats(port);
    if (s && typeof s.worker === "number") seen.set(s.worker, s);
  }
  return seen;
}

/**
 * Failed handshakes that were on the worker when it died (in flight at the kill, or started before
 * the primary saw the exit: Node's primary may still hand it connections) and the others; hangs
 * (client-side timeouts) among the lost ones apart.
 */
function splitFailures(records: HandshakeRecord[], killAbsMs: number, exitSeenAbsMs: number) {
  let lost = 0;
  let lostHung = 0;
  let other = 0;
  for (const r of records) {
    if (r.ok) continue;
    if (r.startMs <= exitSeenAbsMs && r.endMs >= killAbsMs) {
      lost++;
      if (r.error === "timeout") lostHung++;
    } else other++;
  }
  return { lost, lostHung, other };
}

const workersKill: Scenario = {
  family: "workers",
  describe: "serve --workers 4: one worker SIGKILLed mid-load; the primary replaces it",
  async run(o) {
    const serve = await startServe(["--workers", "4", "--lookup-timeout", String(o.lookupTimeoutMs)]);
    try {
      let killAbs = 0;
      let exitSeenAbs = 0;
      let victim = 0;
      const result = await runLoad({
        ports: [serve.port],
        handshakes: o.handshakes,
        concurrency: o.concurrency,
        lookupTimeoutMs: o.lookupTimeoutMs,
        deadlineMs: o.deadlineMs,
        probeWorker: true,
        async fault(ctx) {
          const before = workerPids(serve.pid);
          if (before.length === 0) throw new Error(`no serve worker among the children of ${serve.pid}`);
          victim = before[0]!;
          const seen = serve.waitForLog(/exited \(SIGKILL\)/);
          killAbs = ctx.now();
          process.kill(victim, "SIGKILL");
          void seen.then((ms) => {
            exitSeenAbs = ms;
          });
          // Over when the replacement (a worker id above 4) answers on the shared port.
          const deadline = Date.now() + 60_000;
          let replacement: number | undefined;
          while (replacement === undefined && Date.now() < deadline) {
            const s = await fetchStats(serve.port);
            if (s && typeof s.worker === "number" && s.worker > 4) replacement = s.worker;
            else await sleep(20);
          }
          return {
            fault: "SIGKILL of one worker; the primary forks another",
            startMs: killAbs,
            endMs: ctx.now(),
            extra: { replacementWorker: replacement, replacedInMs: Math.round(ctx.now() - killAbs) },
          };
        },
      });
      const { lost, lostHung, other } = splitFailures(result.records, killAbs, exitSeenAbs || killAbs);
      const replacement = result.window.extra?.replacementWorker as number | undefined;
      const byNew = replacement !== undefined ? (result.reserve.byWorker[String(replacement)] ?? 0) : 0;
      const checks = {
        ...baseChecks(result),
        // A SIGKILL takes the handshakes on that worker with it; none other may fail.
        noFailed: other === 0,
        noHang: other === 0 && lostHung === 0 && !result.timedOut,
        lostAtMostInFlight: lost <= o.concurrency,
        replaced: replacement !== undefined,
        newWorkerResumesOldSessions: byNew > 0,
      };
      return {
        scenario: "",
        setup: `serve --workers 4 (--store cluster), --lookup-timeout ${o.lookupTimeoutMs}`,
        result,
        extra: {
          lostWithWorker: lost,
          lostHungUntilClientTimeout: lostHung,
          failedOtherwise: other,
          exitSeenAfterMs: exitSeenAbs ? Math.round(exitSeenAbs - killAbs) : null,
          reserveResumedByNewWorker: byNew,
          ...(result.window.extra ?? {}),
        },
        checks,
      };
    } finally {
      await serve.stop();
    }
  },
};

/** A TLS 1.2 ClientHello offering a random 32-byte session id (a look-up that misses). */
function helloWithRandomId(): Buffer {
  const ext = (type: number, data: Buffer) => {
    const h = Buffer.alloc(4);
    h.writeUInt16BE(type, 0);
    h.writeUInt16BE(data.length, 2);
    return Buffer.concat([h, data]);
  };
  const name = Buffer.from("localhost");
  const sni = Buffer.alloc(5);
  sni.writeUInt16BE(name.length + 3, 0);
  sni.writeUInt8(0, 2);
  sni.writeUInt16BE(name.length, 3);
  const exts = Buffer.concat([
    ext(0x0000, Buffer.concat([sni, name])),
    ext(0x000a, Buffer.from([0, 4, 0, 0x1d, 0, 0x17])),
    ext(0x000b, Buffer.from([1, 0])),
    ext(0x000d, Buffer.from([0, 6, 4, 3, 8, 4, 4, 1])),
  ]);
  const suites = Buffer.from([0, 8, 0xc0, 0x2b, 0xc0, 0x2c, 0xc0, 0x2f, 0xcc, 0xa9]);
  const extLen = Buffer.alloc(2);
  extLen.writeUInt16BE(exts.length);
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    randomBytes(32),
    Buffer.from([32]),
    randomBytes(32),
    suites,
    Buffer.from([1, 0]),
    extLen,
    exts,
  ]);
  const hs = Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body]);
  const rec = Buffer.from([0x16, 3, 1, hs.length >> 8, hs.length & 0xff]);
  return Buffer.concat([rec, hs]);
}

/** Sends hellos at `perSecond` for `ms` (at most `inFlight` open), each closed at the first answer. */
async function flood(port: number, perSecond: number, ms: number, inFlight: number) {
  const counts = { sent: 0, answered: 0, errors: 0 };
  const end = Date.now() + ms;
  let open = 0;
  const start = Date.now();
  while (Date.now() < end) {
    const due = Math.floor(((Date.now() - start) / 1000) * perSecond);
    while (counts.sent < due && open < inFlight) {
      counts.sent++;
      open++;
      const s = net.connect(port, "127.0.0.1");
      let closed = false;
      const close = () => {
        if (closed) return;
        closed = true;
        open--;
        s.destroy();
      };
      s.setTimeout(2000, close);
      s.on("connect", () => s.write(helloWithRandomId()));
      s.once("data", () => {
        counts.answered++;
        close();
      });
      s.on("error", () => {
        counts.errors++;
        close();
      });
      s.on("close", close);
    }
    await sleep(5);
  }
  return counts;
}

const lookupStorm: Scenario = {
  family: "workers",
  describe: "serve --workers 4 (--store cluster): hellos with unknown session ids at 10× the look-up rate",
  async run(o) {
    const serve: ServeProcess = await startServe([
      "--workers",
      "4",
      "--lookup-timeout",
      String(o.lookupTimeoutMs),
    ]);
    try {
      let floodCounts: Awaited<ReturnType<typeof flood>> | undefined;
      let usualRate = 0;
      const t0 = performance.now();
      const result = await runLoad({
        ports: [serve.port],
        handshakes: o.handshakes,
        concurrency: o.concurrency,
        lookupTimeoutMs: o.lookupTimeoutMs,
        deadlineMs: o.deadlineMs,
        async fault(ctx) {
          // Every resumption attempt is at most one look-up: the usual rate, measured so far.
          usualRate = (ctx.done() * 0.5) / ((ctx.now() - t0) / 1000);
          const startMs = ctx.now();
          floodCounts = await flood(serve.port, usualRate * 10, o.faultMs, 2048);
          return {
            fault: `unknown-id hellos at 10× the look-up rate for ${o.faultMs} ms`,
            startMs,
            endMs: ctx.now(),
          };
        },
      });
      const stats = [...(await workerStats(serve.port, 12)).entries()].map(([w, s]) => ({
        worker: w,
        ...storeSide(s),
      }));
      const sent = floodCounts?.sent ?? 0;
      const achieved = sent / (o.faultMs / 1000);
      return {
        scenario: "",
        setup: `serve --workers 4 (--store cluster), --lookup-timeout ${o.lookupTimeoutMs}`,
        result,
        extra: {
          usualLookupsPerSecond: Math.round(usualRate),
          floodHellosPerSecond: Math.round(achieved),
          flood: floodCounts,
          workers: stats,
        },
        checks: { ...baseChecks(result), floodAtTenfold: achieved >= usualRate * 9 },
      };
    } finally {
      await serve.stop();
    }
  },
};

export const workerScenarios: Record<string, Scenario> = {
  "workers-kill": workersKill,
  "workers-lookup-storm": lookupStorm,
};
