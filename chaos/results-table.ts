// Prints the Markdown table of chaos/results/*.json (what `npm run chaos` wrote last), for
// chaos/RESULTS.md: `node --import tsx chaos/results-table.ts [DIR]`.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const dir = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), "results");
const order = [
  "baseline",
  "redis-kill",
  "redis-restart-empty",
  "redis-restart-data",
  "redis-sleep",
  "redis-stop",
  "redis-slow",
  "redis-garbage",
  "redis-cluster-failover",
  "workers-kill",
  "workers-lookup-storm",
  "sigterm",
  "sigterm-workers",
];
const files = readdirSync(dir)
  .filter((f) => f.endsWith(".json"))
  .map((f) => f.slice(0, -5))
  .sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));

interface Phase {
  attempts: number;
  resumed: number;
  slow: number;
  p99Ms: number;
  maxMs: number;
}
const share = (p: Phase) =>
  p.attempts ? `${((p.resumed / p.attempts) * 100).toFixed(1)}% (${p.resumed}/${p.attempts})` : "–";

console.log(
  "| scenario | load held | fault | failed | slow (> deadline + 20 ms): all (before / during / after) | resumed before / during / after | p99 (max) before / during / after | recovery | command |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
for (const name of files) {
  const j = JSON.parse(readFileSync(join(dir, `${name}.json`), "utf8"));
  const r = j.result;
  const ph = r.phases as Record<"before" | "during" | "after", Phase>;
  const extra = j.extra as Record<string, unknown>;
  let failed = String(r.total.failed);
  if (name === "workers-kill") {
    failed = `${extra.failedOtherwise} (+${extra.lostWithWorker} held by the killed worker, ${extra.lostHungUntilClientTimeout} of them hung)`;
  } else if (name.startsWith("sigterm")) {
    failed = `0 before the signal; ${extra.inFlightCutWithError} in flight cut with an error, ${extra.inFlightFinished} finished; exit ${extra.exitCode} in ${Math.round(extra.exitMs as number)} ms`;
  }
  const recovery = name.startsWith("sigterm")
    ? "–"
    : r.recoveryMs === null
      ? "none"
      : `${Math.round(r.recoveryMs)} ms`;
  console.log(
    `| ${name} | ${r.total.handshakes} handshakes at concurrency ${j.options.concurrency}, ${j.setup} | ${r.window.fault} | ${failed} | ${r.total.slow} (${ph.before.slow} / ${ph.during.slow} / ${ph.after.slow}) | ${share(ph.before)} / ${share(ph.during)} / ${share(ph.after)} | ${ph.before.p99Ms} (${ph.before.maxMs}) / ${ph.during.p99Ms} (${ph.during.maxMs}) / ${ph.after.p99Ms} (${ph.after.maxMs}) ms | ${recovery} | \`${j.command}\` |`,
  );
}
