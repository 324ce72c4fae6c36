// slow-hellos, hold mode (the default): the whole slow population (`tricklers` sending a real
// ClientHello one byte per second, `silent` sending nothing) is opened first, the runner waits until
// the server has accepted all of it (the server's count, over IPC), and it is held, unreplaced,
// through the windows: a slow-only window (server CPU per trickled byte) and the loaded window of
// the normal clients; helloTimeout (default 20 s) covers both. The normal clients' rate is measured
// unloaded before and after (after: once every slow connection is closed) to bound drift. Checks:
// the population held through the loaded window, every slow connection closed by helloTimeout
// (server-side lifetimes within [helloTimeout, helloTimeout + sweep period + slack], helloTimeouts =
// population), 0 pending, RSS bounded, the settled heap back to baseline, and loaded ≥ minRateRatio × the mean of the
// two unloaded rates.
import type { ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { helloSweepPeriod } from "../src/server/hand-off.js";
import { testPki } from "../test/support/certs.js";
import type { SlowHellosOptions } from "./slow-hellos.js";
import { ask, captureHello, child, type LoopResult, resumeLoop } from "./slow-hellos-support.js";
import { check, MiB, mib, percentile, type SuiteResult } from "./support.js";

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
const perS = (r: LoopResult) => Math.round(r.resumed / r.seconds);

export async function slowHellosHold(o: SlowHellosOptions = {}): Promise<SuiteResult> {
  const tricklers = o.tricklers ?? 2000;
  const silent = o.silent ?? 2000;
  const total = tricklers + silent;
  const helloTimeout = o.helloTimeout ?? 20_000;
  const seconds = o.seconds ?? 10;
  /** The slow-only window (server CPU per trickled byte), within the same held population. */
  const slowOnly = Math.min(3, seconds);
  const concurrency = o.concurrency ?? 4;
  const memoryBound = (o.memoryBoundMiB ?? 128) * MiB;
  const minRatio = o.minRateRatio ?? 0.9;
  const slack = o.lateSlackMs ?? 1000;
  const log = o.log ?? (() => {});
  const failures: string[] = [];
  if (helloTimeout < (slowOnly + seconds + 3) * 1000)
    failures.push(`helloTimeout ${helloTimeout} ms does not cover the ${slowOnly} + ${seconds} s windows`);
  // Pinning: the server alone on CPU 0; this process (normal clients) and the slow clients on CPU 1.
  if (o.pin) execFileSync("taskset", ["-apc", "1", String(process.pid)], { stdio: "ignore" });
  const pki = testPki();
  const hello = await captureHello();
  const server = child(
    "slow-hellos-server.ts",
    [String(helloTimeout), pki.certFile, pki.keyFile],
    0,
    o.pin ? 0 : undefined,
  );
  let clients: ChildProcess | undefined;
  try {
    const { port } = (await once(server, "message"))[0] as { port: number };
    await resumeLoop(port, pki.caCert, 1, concurrency); // warm up (JIT, first sessions)
    const c0 = await ask(server, { cmd: "stats" });
    const before = await resumeLoop(port, pki.caCert, seconds, concurrency);
    const base = await ask(server, { cmd: "stats", gc: true });
    log(`unloaded (before): ${perS(before)} resumed/s; server rss ${mib(base.rss)} MiB`);

    clients = child(
      "slow-hellos-clients.ts",
      [String(port), String(tricklers), String(silent), String(helloTimeout)],
      10,
      o.pin ? 1 : undefined,
    );
    const finished = new Promise<{
      lifetimes: { trickle: number[]; silent: number[] };
      opened: number;
      connectErrors: number;
      bytesSent: number;
    }>((resolve) =>
      clients!.on("message", (m: { done?: boolean }) => {
        if (m.done) resolve(m as never);
      }),
    );
    const rampStart = performance.now();
    clients.send({ cmd: "start", hello: hello.toString("base64"), hold: true });
    const up = await Promise.race([
      ask(server, { cmd: "await-open", n: total }),
      wait(30_000).then(() => undefined),
    ]);
    const rampMs = Math.round(performance.now() - rampStart);
    if (up === undefined) {
      failures.push(`the server had not accepted all ${total} slow connections in 30 s`);
      return { suite: "slow-hellos", ok: false, failures, figures: { mode: "hold" } };
    }
    log(`all ${total} slow connections accepted in ${rampMs} ms`);

    // Slow clients only: the server's cost of holding the population and reading the trickle.
    const s0 = await ask(server, { cmd: "stats" });
    await wait(slowOnly * 1000);
    const s1 = await ask(server, { cmd: "stats" });
    const slowBytes = s1.bytesRead - s0.bytesRead;
    const slowCpu = s1.cpu - s0.cpu;

    const rss: number[] = [];
    const openEach: number[] = [];
    const sampler = setInterval(async () => {
      const st = await ask(server, { cmd: "stats" });
      rss.push(st.rss);
      openEach.push(st.open);
    }, 1000);
    const l0 = await ask(server, { cmd: "stats" });
    const loaded = await resumeLoop(port, pki.caCert, seconds, concurrency);
    clearInterval(sampler);
    const atEnd = await ask(server, { cmd: "stats" });
    rss.push(atEnd.rss);
    const heldMin = Math.min(...openEach, atEnd.open);
    log(`loaded: ${perS(loaded)} resumed/s; server rss ${mib(atEnd.rss)} MiB, ≥ ${heldMin} open`);

    const out = await Promise.race([finished, wait(helloTimeout + 10_000).then(() => undefined)]);
    if (out === undefined) {
      failures.push("slow connections still open helloTimeout + 10 s after the window");
      return { suite: "slow-hellos", ok: false, failures, figures: { mode: "hold" } };
    }
    const c1 = await ask(server, { cmd: "stats" });
    const afterLoop = await resumeLoop(port, pki.caCert, seconds, concurrency);
    const c2 = await ask(server, { cmd: "stats" });
    const after = await ask(server, { cmd: "stats", gc: true });
    log(`unloaded (after): ${perS(afterLoop)} resumed/s`);

    const seen = ((await ask(server, { cmd: "lifetimes" })).lifetimes as number[]).sort((a, b) => a - b);
    const all = [...out.lifetimes.trickle, ...out.lifetimes.silent].sort((a, b) => a - b);
    const period = helloSweepPeriod(helloTimeout);
    const lo = helloTimeout - 20; // timers and clocks of two processes: a few ms either way
    const hi = helloTimeout + period + slack;
    const early = seen.filter((t) => t < lo).length;
    const late = seen.filter((t) => t > hi).length;
    const timeouts = after.adapter.helloTimeouts - base.adapter.helloTimeouts;
    const peak = Math.max(...rss);
    const unloadedMean = (before.resumed + afterLoop.resumed) / 2;
    const ratio = loaded.resumed / Math.max(1, unloadedMean);
    check(failures, heldMin >= total, `the population fell to ${heldMin} of ${total} in the loaded window`);
    check(failures, out.opened === total, `${out.opened} slow connections opened, not ${total}`);
    check(failures, out.connectErrors === 0, `${out.connectErrors} slow connections failed to connect`);
    check(failures, seen.length === total, `server saw ${seen.length} slow closes, not ${total}`);
    check(failures, early === 0, `${early} slow connections closed before helloTimeout`);
    check(failures, late === 0, `${late} slow connections outlived helloTimeout + period + ${slack} ms`);
    check(failures, timeouts === total, `server helloTimeouts ${timeouts} != ${total}`);
    check(failures, after.adapter.pendingHellos === 0, `${after.adapter.pendingHellos} hellos pending after`);
    check(failures, peak - base.rss <= memoryBound, `server RSS rose ${mib(peak - base.rss)} MiB under load`);
    // Nothing kept per connection: the settled JS heap comes back to its baseline. (RSS is reported,
    // not checked here: 4000 sockets held at once raise the allocator's high-water mark, which
    // glibc need not give back to the OS.)
    check(
      failures,
      after.heap <= base.heap + 8 * MiB,
      `server heap after the load ${mib(after.heap)} MiB, over baseline ${mib(base.heap)} + 8 MiB`,
    );
    check(failures, loaded.resumed > 0, "no resumption under load");
    check(failures, ratio >= minRatio, `loaded rate ${(ratio * 100).toFixed(1)} % of the unloaded mean`);
    const failed = before.failed + loaded.failed + afterLoop.failed;
    check(failures, failed === 0, `${failed} normal handshakes failed`);
    const full = Math.max(before.full, loaded.full, afterLoop.full);
    check(failures, full <= concurrency, `normal clients not resuming: ${full} full handshakes in a window`);
    const ms = (us: number, s: number) => Math.round(us / 1000 / s);
    return {
      suite: "slow-hellos",
      ok: failures.length === 0,
      failures,
      figures: {
        mode: "hold",
        pinned: o.pin ? "server CPU 0; slow clients (nice 10) and normal clients CPU 1" : "no",
        tricklers,
        silent,
        helloTimeoutMs: helloTimeout,
        sweepPeriodMs: period,
        helloBytes: hello.length,
        windowSeconds: seconds,
        rampMs,
        heldOpenMinInLoadedWindow: heldMin,
        serverOpenEachSecond: openEach.join(" "),
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
        unloadedBefore: { resumedPerSecond: perS(before), ...before },
        loaded: { resumedPerSecond: perS(loaded), ...loaded },
        unloadedAfter: { resumedPerSecond: perS(afterLoop), ...afterLoop },
        rateRatio: Math.round(ratio * 1000) / 1000,
        ratioToBefore: Math.round((loaded.resumed / Math.max(1, before.resumed)) * 1000) / 1000,
        ratioToAfter: Math.round((loaded.resumed / Math.max(1, afterLoop.resumed)) * 1000) / 1000,
        serverCpu: {
          unloadedBeforeMsPerSecond: ms(base.cpu - c0.cpu, seconds),
          slowOnlyMsPerSecond: ms(slowCpu, slowOnly),
          loadedMsPerSecond: ms(atEnd.cpu - l0.cpu, seconds),
          unloadedAfterMsPerSecond: ms(c2.cpu - c1.cpu, seconds),
          slowOnlyBytesReadPerSecond: Math.round(slowBytes / slowOnly),
          microsecondsPerTrickledByte: Math.round((slowCpu / Math.max(1, slowBytes)) * 10) / 10,
        },
        serverRssMiB: {
          baseline: mib(base.rss),
          peakUnderLoad: mib(peak),
          afterSettled: mib(after.rss),
          bound: mib(base.rss + memoryBound),
        },
        serverHeapMiB: {
          baseline: mib(base.heap),
          afterSettled: mib(after.heap),
          bound: mib(base.heap + 8 * MiB),
        },
        pendingHellosAfter: after.adapter.pendingHellos,
      },
    };
  } finally {
    clients?.kill();
    server.kill();
  }
}
