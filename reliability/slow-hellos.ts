// slow-hellos, churn mode (`--churn`; the hold mode is slow-hellos-hold.ts): a server with the adapter (its own process) holds `tricklers` clients sending their
// ClientHello one byte per second and `silent` ones sending nothing (another process; each closed
// one is replaced while the load is held), while normal clients in this process keep resuming
// (TLS 1.2 and 1.3, `concurrency` sequential loops). Checks: every slow connection is closed by
// helloTimeout (its lifetime, accept to close on the server, within [helloTimeout, helloTimeout +
// sweep period + 1 s of slack]; the server's helloTimeouts count them all), nothing is left pending
// afterwards, the server's RSS under load stays within baseline + memoryBound and comes back to
// baseline + 16 MiB once the slow clients are gone (baseline and after: after a full GC), and the
// resumption rate under load is ≥ 90 % of the same loop's rate measured unloaded first.
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { helloSweepPeriod } from "../src/server/hand-off.js";
import { testPki } from "../test/support/certs.js";
import { slowHellosHold } from "./slow-hellos-hold.js";
import { ask, captureHello, child, resumeLoop } from "./slow-hellos-support.js";
import { check, MiB, mib, percentile, type SuiteResult } from "./support.js";

export interface SlowHellosOptions {
  tricklers?: number;
  silent?: number;
  /** The adapter's helloTimeout, ms (default 3000). */
  helloTimeout?: number;
  /** Length of each measured window (unloaded, then loaded), seconds (default 10). */
  seconds?: number;
  /** Normal resuming client loops (default 4: two TLS 1.2, two TLS 1.3). */
  concurrency?: number;
  /** Least loaded / unloaded resumption rate (default 0.9). */
  minRateRatio?: number;
  /** Slack past helloTimeout + sweep period before a close counts as late, ms (default 1000). */
  lateSlackMs?: number;
  /** Most the server's RSS may rise over its unloaded baseline under load (default 128 MiB). */
  memoryBoundMiB?: number;
  log?: (line: string) => void;
  /**
   * "hold" (default, slow-hellos-hold.ts): all slow connections opened first and held, unreplaced,
   * through the windows. "churn": each closed one replaced at once, i.e. a connect flood of about
   * population / helloTimeout new connections per second.
   */
  mode?: "hold" | "churn";
  /** Pin (taskset) the server to CPU 0, the slow and the normal clients to CPU 1. */
  pin?: boolean;
}

export async function slowHellos(o: SlowHellosOptions = {}): Promise<SuiteResult> {
  if ((o.mode ?? "hold") === "hold") return slowHellosHold(o);
  const tricklers = o.tricklers ?? 2000;
  const silent = o.silent ?? 2000;
  const helloTimeout = o.helloTimeout ?? 3000;
  const seconds = o.seconds ?? 10;
  const concurrency = o.concurrency ?? 4;
  const memoryBound = (o.memoryBoundMiB ?? 128) * MiB;
  const minRatio = o.minRateRatio ?? 0.9;
  const slack = o.lateSlackMs ?? 1000;
  const log = o.log ?? (() => {});
  const failures: string[] = [];
  const pki = testPki();
  const hello = await captureHello();
  const server = child("slow-hellos-server.ts", [String(helloTimeout), pki.certFile, pki.keyFile]);
  let clients: ChildProcess | undefined;
  try {
    const { port } = (await once(server, "message"))[0] as { port: number };
    // Warm up (JIT, first sessions), then the unloaded rate.
    await resumeLoop(port, pki.caCert, 1, concurrency);
    const cpuBefore = await ask(server, { cmd: "stats" });
    const unloaded = await resumeLoop(port, pki.caCert, seconds, concurrency);
    const base = await ask(server, { cmd: "stats", gc: true });
    const cpuUnloaded = base.cpu - cpuBefore.cpu;
    log(`unloaded: ${unloaded.resumed} resumed in ${seconds} s; server rss ${mib(base.rss)} MiB`);

    clients = child(
      "slow-hellos-clients.ts",
      [String(port), String(tricklers), String(silent), String(helloTimeout)],
      10,
    );
    const finished = new Promise<{
      lifetimes: { trickle: number[]; silent: number[] };
      opened: number;
      connectErrors: number;
      socketErrors: number;
      bytesSent: number;
    }>((resolve) =>
      clients!.on("message", (m: { done?: boolean }) => {
        if (m.done) resolve(m as never);
      }),
    );
    clients.send({ cmd: "start", hello: hello.toString("base64") });
    // Ramp: wait until the whole population is connected (bounded).
    const rampStart = performance.now();
    for (;;) {
      const st = await ask(clients, { cmd: "status" });
      if (st.open >= (tricklers + silent) * 0.95) break;
      if (performance.now() - rampStart > 30_000 + helloTimeout) {
        failures.push(`population reached only ${st.open} of ${tricklers + silent} in 30 s`);
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    log(`population up after ${((performance.now() - rampStart) / 1000).toFixed(1)} s`);
    const cpuLoadStart = (await ask(server, { cmd: "stats" })).cpu;
    const samples: number[] = [];
    /** Connections open on the server, each second of the loaded window (the population held). */
    const openSamples: number[] = [];
    const sampler = setInterval(async () => {
      const st = await ask(server, { cmd: "stats" });
      samples.push(st.rss);
      openSamples.push(st.open);
    }, 1000);
    const loaded = await resumeLoop(port, pki.caCert, seconds, concurrency);
    clearInterval(sampler);
    const atEnd = await ask(server, { cmd: "stats" });
    const cpuLoaded = atEnd.cpu - cpuLoadStart;
    samples.push(atEnd.rss);
    log(
      `loaded: ${loaded.resumed} resumed in ${seconds} s; server rss ${mib(atEnd.rss)} MiB, ${atEnd.open} open`,
    );
    // The server's cost of the slow clients alone: a window with them and no normal clients.
    const only0 = await ask(server, { cmd: "stats" });
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const only1 = await ask(server, { cmd: "stats" });
    const slowOnlyConns = only1.adapter.connections - only0.adapter.connections;
    const perSlow = (only1.cpu - only0.cpu) / Math.max(1, slowOnlyConns);
    clients.send({ cmd: "stop" });
    const out = await Promise.race([
      finished,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), helloTimeout + 10_000)),
    ]);
    const after = await ask(server, { cmd: "stats", gc: true });
    if (out === undefined) {
      failures.push("slow connections still open helloTimeout + 10 s after the load stopped");
      return { suite: "slow-hellos", ok: false, failures, figures: {} };
    }
    const all = [...out.lifetimes.trickle, ...out.lifetimes.silent].sort((a, b) => a - b);
    // The server's view (accept to close) is what helloTimeout governs; the clients' view also
    // counts their own event-loop delay in seeing the connect, so it is reported, not checked.
    const seen = ((await ask(server, { cmd: "lifetimes" })).lifetimes as number[]).sort((a, b) => a - b);
    const period = helloSweepPeriod(helloTimeout);
    const lo = helloTimeout - 20; // timers and clocks of two processes: a few ms either way
    const hi = helloTimeout + period + slack;
    const early = seen.filter((t) => t < lo).length;
    const late = seen.filter((t) => t > hi).length;
    const peak = Math.max(...samples);
    const ratio = loaded.resumed / Math.max(1, unloaded.resumed);
    check(failures, early === 0, `${early} slow connections closed before helloTimeout`);
    check(failures, late === 0, `${late} slow connections outlived helloTimeout + period + ${slack} ms`);
    check(failures, out.connectErrors === 0, `${out.connectErrors} slow connections failed to connect`);
    const timeouts = after.adapter.helloTimeouts - base.adapter.helloTimeouts;
    check(
      failures,
      timeouts === all.length,
      `server helloTimeouts ${timeouts} != slow connections closed ${all.length}`,
    );
    check(
      failures,
      after.adapter.pendingHellos === 0,
      `${after.adapter.pendingHellos} hellos still pending after`,
    );
    check(failures, peak - base.rss <= memoryBound, `server RSS rose ${mib(peak - base.rss)} MiB under load`);
    check(
      failures,
      after.rss <= base.rss + 16 * MiB,
      `server RSS after the load ${mib(after.rss)} MiB, over baseline ${mib(base.rss)} + 16 MiB`,
    );
    check(failures, loaded.resumed > 0, "no resumption under load");
    check(
      failures,
      ratio >= minRatio,
      `resumption rate under load ${(ratio * 100).toFixed(1)} % of unloaded`,
    );
    check(
      failures,
      loaded.failed === 0 && unloaded.failed === 0,
      `normal handshakes failed: ${unloaded.failed} + ${loaded.failed}`,
    );
    check(
      failures,
      loaded.full <= concurrency && unloaded.full <= concurrency,
      `normal clients not resuming: ${unloaded.full} + ${loaded.full} full`,
    );
    return {
      suite: "slow-hellos",
      ok: failures.length === 0,
      failures,
      figures: {
        mode: "churn",
        tricklers,
        silent,
        helloTimeoutMs: helloTimeout,
        sweepPeriodMs: period,
        helloBytes: hello.length,
        windowSeconds: seconds,
        slowConnectionsOpened: out.opened,
        slowConnectionsClosed: all.length,
        trickleBytesSent: out.bytesSent,
        serverHelloTimeouts: timeouts,
        serverLifetimeMs: {
          min: Math.round(seen[0] ?? 0),
          p50: Math.round(percentile(seen, 50)),
          p99: Math.round(percentile(seen, 99)),
          max: Math.round(seen.at(-1) ?? 0),
          allowed: `${lo}..${hi}`,
        },
        clientLifetimeMs: {
          min: Math.round(all[0] ?? 0),
          p50: Math.round(percentile(all, 50)),
          p99: Math.round(percentile(all, 99)),
          max: Math.round(all.at(-1) ?? 0),
        },
        unloaded: { resumedPerSecond: Math.round(unloaded.resumed / seconds), ...unloaded },
        loaded: { resumedPerSecond: Math.round(loaded.resumed / seconds), ...loaded },
        rateRatio: Math.round(ratio * 1000) / 1000,
        serverCpu: {
          unloadedMsPerSecond: Math.round(cpuUnloaded / 1000 / seconds),
          loadedMsPerSecond: Math.round(cpuLoaded / 1000 / seconds),
          slowOnlyMsPerSecond: Math.round((only1.cpu - only0.cpu) / 1000 / seconds),
          slowOnlyConnectionsAccepted: slowOnlyConns,
          microsecondsPerSlowConnection: Math.round(perSlow),
        },
        serverRssMiB: {
          baseline: mib(base.rss),
          peakUnderLoad: mib(peak),
          endOfWindow: mib(atEnd.rss),
          afterSettled: mib(after.rss),
          afterBound: mib(base.rss + 16 * MiB),
          bound: mib(base.rss + memoryBound),
        },
        serverOpenConnectionsAtEnd: atEnd.open,
        serverOpenConnectionsEachSecond: openSamples.join(" "),
        pendingHellosAfter: after.adapter.pendingHellos,
      },
    };
  } finally {
    clients?.kill();
    server.kill();
  }
}
