// SIGTERM to `serve` under load (one process, and --workers 4): handshakes in flight finish or fail
// with an error (never hang), new connections are refused, and serve exits 0 within its bound.
import { baseChecks, runLoad, type Scenario } from "./driver.js";
import { startServe } from "./serve-process.js";

function sigterm(workers: number): Scenario {
  return {
    family: "sigterm",
    describe: `SIGTERM to serve${workers > 1 ? ` --workers ${workers}` : ""} under load: clean stop, exit 0`,
    async run(o) {
      const serve = await startServe([
        ...(workers > 1 ? ["--workers", String(workers)] : []),
        "--lookup-timeout",
        String(o.lookupTimeoutMs),
      ]);
      try {
        let sigtermAbs = Infinity;
        let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
        const result = await runLoad({
          ports: [serve.port],
          handshakes: o.handshakes,
          concurrency: o.concurrency,
          lookupTimeoutMs: o.lookupTimeoutMs,
          deadlineMs: o.deadlineMs,
          faultAt: 0.5,
          stopOnRefused: true,
          reserve: 0,
          async fault(ctx) {
            const startMs = ctx.now();
            sigtermAbs = startMs;
            serve.child.kill("SIGTERM");
            const bound = new Promise<undefined>((r) => setTimeout(r, 15_000, undefined));
            const e = await Promise.race([serve.exit, bound]);
            exit = e;
            return {
              fault: "SIGTERM",
              startMs,
              endMs: e?.atMs ?? ctx.now(),
              extra: { exitCode: e?.code ?? null, exitSignal: e?.signal ?? null },
            };
          },
        });
        const base = baseChecks(result);
        const exitMs = result.window.endMs - result.window.startMs;
        // The handshakes cut by the stop (still in flight at SIGTERM) failed with an error, none hung.
        const stopAbs = sigtermAbs;
        const failedBefore = result.records.filter((r) => !r.ok && r.endMs < stopAbs).length;
        const cut = result.records.filter((r) => !r.ok && r.endMs >= stopAbs).length;
        const finishedAfter = result.records.filter((r) => r.ok && r.endMs >= stopAbs).length;
        return {
          scenario: "",
          setup: `serve${workers > 1 ? ` --workers ${workers}` : ""} (no store), --lookup-timeout ${o.lookupTimeoutMs}`,
          result,
          extra: {
            ...(result.window.extra ?? {}),
            exitMs,
            inFlightFinished: finishedAfter,
            inFlightCutWithError: cut,
          },
          checks: {
            noFailedBeforeStop: failedBefore === 0,
            noHang: base.noHang,
            exit0: exit?.code === 0,
            exitWithin5s: exitMs < 5000,
          },
        };
      } finally {
        await serve.stop();
      }
    },
  };
}

export const sigtermScenarios: Record<string, Scenario> = {
  sigterm: sigterm(1),
  "sigterm-workers": sigterm(4),
};
