// `npm run reliability -- <suite> [--flag value ...]`: runs one bounded-resources suite at full size
// (or the sizes given), prints its progress and figures, writes them to
// reliability/results/<suite>.json, and exits 1 when a check failed. See reliability/RESULTS.md.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { SuiteResult } from "./support.js";

const suites: Record<
  string,
  (flags: Record<string, number>, log: (l: string) => void) => Promise<SuiteResult>
> = {
  churn: async (f, log) =>
    (await import("./churn.js")).churn({ sessions: f.sessions, cacheSize: f["cache-size"], log }),
  "virtual-day": async (f, log) =>
    (await import("./virtual-day.js")).virtualDay({
      seconds: f.seconds,
      rate: f.rate,
      lookupRate: f["lookup-rate"],
      timeout: f.timeout,
      cacheSize: f["cache-size"],
      seed: f.seed,
      log,
    }),
  "slow-hellos": async (f, log) =>
    (await import("./slow-hellos.js")).slowHellos({
      tricklers: f.tricklers,
      silent: f.silent,
      helloTimeout: f["hello-timeout"],
      seconds: f.seconds,
      mode: f.churn ? "churn" : "hold",
      pin: f.pin === 1,
      log,
    }),
  oversized: async (f, log) => (await import("./oversized.js")).oversized({ burst: f.burst, log }),
};

function parseFlags(args: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < args.length; i++) {
    const m = /^--([a-z-]+)$/.exec(args[i]!);
    if (!m) throw new Error(`bad flag near ${JSON.stringify(args[i])}`);
    // A flag without a number (`--churn`, `--pin`) is a switch: 1.
    if (args[i + 1] === undefined || args[i + 1]!.startsWith("--")) {
      out[m[1]!] = 1;
      continue;
    }
    const v = Number(args[i + 1]);
    if (!Number.isFinite(v)) throw new Error(`bad flag near ${JSON.stringify(args[i])}`);
    out[m[1]!] = v;
    i++;
  }
  return out;
}

async function main() {
  const [name, ...rest] = process.argv.slice(2);
  const suite = name === undefined ? undefined : suites[name];
  if (suite === undefined) {
    console.error(`usage: npm run reliability -- <${Object.keys(suites).join("|")}> [--flag N ...]`);
    process.exit(2);
  }
  let flags: Record<string, number>;
  try {
    flags = parseFlags(rest);
  } catch (err) {
    console.error((err as Error).message);
    process.exit(2);
  }
  let ulimit = "?";
  try {
    ulimit = execFileSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" }).trim();
  } catch {}
  const started = new Date();
  const t0 = performance.now();
  const log = (l: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1)} s] ${l}`);
  log(`${name} ${rest.join(" ")} (node ${process.version}, ${os.cpus().length} cpus, ulimit -n ${ulimit})`);
  const r = await suite(flags, log);
  const seconds = Math.round((performance.now() - t0) / 100) / 10;
  const record = {
    ...r,
    command: `npm run reliability -- ${[name, ...rest].join(" ")}`,
    started: started.toISOString(),
    seconds,
    machine: { node: process.version, cpus: os.cpus().length, cpu: os.cpus()[0]?.model, ulimit },
  };
  console.log(JSON.stringify(record, null, 2));
  const dir = join(dirname(fileURLToPath(import.meta.url)), "results");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.json`), `${JSON.stringify(record, null, 2)}\n`);
  console.log(r.ok ? `${name}: PASS in ${seconds} s` : `${name}: FAIL\n  ${r.failures.join("\n  ")}`);
  process.exit(r.ok ? 0 : 1);
}

await main();
