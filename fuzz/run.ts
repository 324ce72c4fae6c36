// npm run fuzz -- <target> [--cases N] [--seed S] [--case I] [--keep-going] [--json]
// Runs one fuzz target; exit 0 when every case passed, 1 on a failure, 2 on bad usage.
import { type FuzzTarget, runTarget } from "./harness.js";
import { TARGETS } from "./targets/index.js";

function usage(): string {
  const names = TARGETS.map(
    (t) => `  ${t.name.padEnd(22)}${t.description} (default ${t.defaultCases} cases)`,
  );
  return [
    "usage: npm run fuzz -- <target> [--cases N] [--seed S] [--case I] [--keep-going] [--json]",
    "targets:",
    ...names,
  ].join("\n");
}

function intArg(v: string | undefined, flag: string): number {
  if (v === undefined || !/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) {
    throw new Error(`${flag} needs a non-negative integer`);
  }
  return Number(v);
}

async function main(argv: string[]): Promise<number> {
  let target: FuzzTarget | undefined;
  let cases: number | undefined;
  let seed = Date.now() % 2 ** 31;
  let only: number | undefined;
  let keepGoing = false;
  let json = false;
  try {
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i]!;
      if (a === "--cases") cases = intArg(argv[++i], a);
      else if (a === "--seed") seed = intArg(argv[++i], a);
      else if (a === "--case") only = intArg(argv[++i], a);
      else if (a === "--keep-going") keepGoing = true;
      else if (a === "--json") json = true;
      else if (a === "--help" || a === "-h") {
        process.stdout.write(`${usage()}\n`);
        return 0;
      } else if (!a.startsWith("-") && target === undefined) {
        target = TARGETS.find((t) => t.name === a);
        if (!target) throw new Error(`unknown target '${a}'`);
      } else throw new Error(`unexpected argument '${a}'`);
    }
    if (!target) throw new Error("which target?");
  } catch (err) {
    process.stderr.write(`fuzz: ${(err as Error).message}\n${usage()}\n`);
    return 2;
  }
  const n = cases ?? target.defaultCases;
  process.stderr.write(
    `fuzz ${target.name}: ${only === undefined ? `${n} cases` : `case ${only}`}, seed ${seed}\n`,
  );
  const report = await runTarget(target, {
    cases: n,
    seed,
    only,
    keepGoing,
    progressEvery: Math.max(10_000, Math.floor(n / 10)),
  });
  const summary =
    `${report.target}: ${report.cases} cases, seed ${report.seed}, ${report.failures.length} failures, ` +
    `${report.seconds.toFixed(1)} s, slowest case ${report.slowestCaseMs.toFixed(1)} ms, ` +
    `heap ${report.heapStartMB.toFixed(1)} -> ${report.heapEndMB.toFixed(1)} MB, max RSS ${report.rssMaxMB.toFixed(0)} MB`;
  process.stdout.write(
    json ? `${JSON.stringify({ ...report, failures: report.failures.length })}\n` : `${summary}\n`,
  );
  return report.failures.length === 0 ? 0 : 1;
}

process.exitCode = await main(process.argv.slice(2));
