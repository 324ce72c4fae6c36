// Benchmark harness: `npm run bench -- <name> [args...]` runs bench/<name>.ts, prints its table and
// writes the JSON to bench/results/<name>.json (latest) and <name>-<timestamp>.json.
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export interface BenchRow {
  [column: string]: string | number | boolean | null;
}
export interface BenchResult {
  title: string;
  rows: BenchRow[];
  /** Lines printed under the table: targets, met or not, caveats. */
  notes?: string[];
  /** Anything else worth keeping in the JSON. */
  extra?: unknown;
}
export type Bench = (args: string[]) => Promise<BenchResult>;

export function formatTable(rows: BenchRow[]): string {
  if (rows.length === 0) return "(no rows)";
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: unknown) =>
    typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 3 : 1)) : String(v ?? "");
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => `| ${vals.map((v, i) => v.padEnd(widths[i])).join(" | ")} |`;
  return [
    line(cols),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map((r) => line(cols.map((c) => cell(r[c])))),
  ].join("\n");
}

async function main() {
  const [name, ...args] = process.argv.slice(2);
  const here = dirname(fileURLToPath(import.meta.url));
  if (!name || !/^[a-z0-9-]+$/.test(name)) {
    console.error("usage: npm run bench -- <name> [args]   (a file bench/<name>.ts)");
    process.exit(2);
  }
  const mod = (await import(pathToFileURL(join(here, `${name}.ts`)).href)) as { default: Bench };
  const started = new Date();
  const result = await mod.default(args);
  console.log(`\n${result.title}\n`);
  console.log(formatTable(result.rows));
  for (const n of result.notes ?? []) console.log(n);
  const out = {
    name,
    date: started.toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    args,
    ...result,
  };
  const dir = join(here, "results");
  mkdirSync(dir, { recursive: true });
  const json = `${JSON.stringify(out, null, 2)}\n`;
  writeFileSync(join(dir, `${name}.json`), json);
  writeFileSync(join(dir, `${name}-${started.toISOString().replace(/[:.]/g, "-")}.json`), json);
  console.log(`\nwrote bench/results/${name}.json`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
