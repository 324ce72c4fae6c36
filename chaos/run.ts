// `npm run chaos -- <scenario> [--handshakes N] [--concurrency C] [--lookup-timeout MS]
// [--fault-ms MS] [--latency-ms MS] [--deadline-s S] [--verbose]`: runs one fault-under-load scenario
// (or `all`), prints a table and writes chaos/results/<scenario>.json. Exit 1 when a goal is missed.
// Every run is bounded (--deadline-s) and kills what it started on exit, on errors and on SIGINT.
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Scenario, ScenarioOptions, ScenarioReport } from "./driver.js";
import { clusterScenarios } from "./scenarios-cluster.js";
import { redisScenarios } from "./scenarios-redis.js";
import { sigtermScenarios } from "./scenarios-sigterm.js";
import { workerScenarios } from "./scenarios-workers.js";

export const scenarios: Record<string, Scenario> = {
  ...redisScenarios,
  ...clusterScenarios,
  ...workerScenarios,
  ...sigtermScenarios,
};

export const defaults: ScenarioOptions = {
  handshakes: 20_000,
  concurrency: 64,
  lookupTimeoutMs: 50,
  faultMs: 3000,
  latencyMs: 100,
  deadlineMs: 600_000,
  verbose: false,
};

/** Runs one scenario with `o`, names its report. */
export async function runScenario(name: string, o: ScenarioOptions): Promise<ScenarioReport> {
  const s = scenarios[name];
  if (!s) throw new Error(`unknown scenario ${name}`);
  const report = await s.run(o);
  report.scenario = name;
  return report;
}

function usage(): never {
  console.error(
    "usage: npm run chaos -- <scenario|all> [--handshakes N] [--concurrency C] [--lookup-timeout MS]\n" +
      "       [--fault-ms MS] [--latency-ms MS] [--deadline-s S] [--verbose]\nscenarios:\n" +
      Object.entries(scenarios)
        .map(([n, s]) => `  ${n.padEnd(22)} ${s.describe}`)
        .join("\n"),
  );
  process.exit(2);
}

function parseArgs(argv: string[]): { names: string[]; o: ScenarioOptions } {
  const [name, ...rest] = argv;
  if (!name || !(name === "all" || name in scenarios)) usage();
  const o = { ...defaults };
  const num = (v: string | undefined) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) usage();
    return n;
  };
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i];
    if (flag === "--verbose") {
      o.verbose = true;
      continue;
    }
    const v = rest[++i];
    if (flag === "--handshakes") o.handshakes = num(v);
    else if (flag === "--concurrency") o.concurrency = num(v);
    else if (flag === "--lookup-timeout") o.lookupTimeoutMs = num(v);
    else if (flag === "--fault-ms") o.faultMs = num(v);
    else if (flag === "--latency-ms") o.latencyMs = num(v);
    else if (flag === "--deadline-s") o.deadlineMs = num(v) * 1000;
    else usage();
  }
  return { names: name === "all" ? Object.keys(scenarios) : [name], o };
}

const pct = (x: number | null) => (x === null ? "-" : `${(x * 100).toFixed(1)}%`);

export function formatReport(r: ScenarioReport): string {
  const res = r.result;
  const rows = (["before", "during", "after"] as const).map((p) => {
    const c = res.phases[p];
    return [
      p,
      c.handshakes,
      c.failed,
      c.slow,
      `${c.resumed}/${c.attempts}`,
      pct(c.resumedShare),
      c.p50Ms,
      c.p99Ms,
      c.maxMs,
    ];
  });
  const head = ["phase", "handshakes", "failed", "slow", "resumed", "share", "p50 ms", "p99 ms", "max ms"];
  const all = [head, ...rows].map((row) => row.map(String));
  const widths = head.map((_, i) => Math.max(...all.map((row) => row[i]!.length)));
  const line = (row: string[]) => `| ${row.map((v, i) => v.padEnd(widths[i]!)).join(" | ")} |`;
  const failedChecks = Object.entries(r.checks).filter(([, ok]) => !ok);
  return [
    `${r.scenario}: ${r.setup}`,
    `fault: ${res.window.fault} (window ${res.window.startMs}–${res.window.endMs} ms)`,
    line(head),
    line(widths.map((w) => "-".repeat(w))),
    ...all.slice(1).map(line),
    `total ${res.total.handshakes} handshakes in ${res.total.elapsedMs} ms; failed ${res.total.failed}; ` +
      `slow ${res.total.slow}; recovery ${res.recoveryMs === null ? "none" : `${res.recoveryMs} ms`}; ` +
      `reserve resumed ${res.reserve.resumed}/${res.reserve.offered}; ` +
      `after, sessions made after the fault: ${res.phases.after.freshResumed}/${res.phases.after.freshAttempts}` +
      (res.timedOut ? "; stopped at --deadline-s" : "") +
      (res.total.refused ? `; refused ${res.total.refused}` : ""),
    Object.keys(res.errors).length ? `errors: ${JSON.stringify(res.errors)}` : "errors: none",
    Object.keys(r.extra).length ? `extra: ${JSON.stringify(r.extra)}` : "",
    failedChecks.length ? `goals missed: ${failedChecks.map(([k]) => k).join(", ")}` : "goals: all met",
  ]
    .filter((l) => l !== "")
    .join("\n");
}

async function main() {
  const { names, o } = parseArgs(process.argv.slice(2));
  const here = dirname(fileURLToPath(import.meta.url));
  const dir = join(here, "results");
  mkdirSync(dir, { recursive: true });
  process.once("SIGINT", () => {
    console.error("chaos: interrupted");
    process.exit(130); // the exit hooks kill every child
  });
  const hard = setTimeout(
    () => {
      console.error("chaos: deadline passed, stopping");
      process.exit(3);
    },
    o.deadlineMs * names.length + 120_000,
  );
  hard.unref();
  let missed = false;
  for (const name of names) {
    const report = await runScenario(name, o);
    console.log(`${formatReport(report)}\n`);
    const { records: _r, ...result } = report.result;
    const json = {
      ...report,
      result,
      options: o,
      command: `npm run chaos -- ${process.argv.slice(2).join(" ").replace("all", name)}`,
      machine: { cpus: os.cpus().length, load: os.loadavg(), node: process.version },
      at: new Date().toISOString(),
    };
    writeFileSync(join(dir, `${name}.json`), `${JSON.stringify(json, null, 2)}\n`);
    if (Object.values(report.checks).some((ok) => !ok)) missed = true;
  }
  process.exit(missed ? 1 : 0);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err) => {
    console.error(err);
    process.exit(2);
  });
}
