// `npm run secrets-audit [-- test/a.test.ts ...]` (or `-- --scan-only <audit dir>`): runs the test suite (every test/**/*.test.ts, or
// the files given) under the secrets hook, then scans what the run produced for any secret recorded.
// - NODE_OPTIONS="--import reliability/secrets-hook.mjs" reaches every Node process the tests start.
// - SESSCACHE_SECRETS_DIR: the hook's records (never scanned, never printed).
// - SESSCACHE_OUTPUTS_DIR: every Node process's own stdout/stderr (serve, its workers, the CLI).
// - TMPDIR: a fresh directory, so every temp file and state dir the tests write is scanned, as long
//   as the test has not removed it by the time it ends.
// - The run's own stdout/stderr (TAP: every test's logs, failures and thrown errors), teed to a file.
// Prints only where a secret was found and of what kind; writes the report (no values) to
// <audit dir>/report.json. Exit 1 when a secret leaked (or nothing was recorded), else 0.
import { spawn } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, filesUnder, scan } from "./secrets-scan.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const hook = fileURLToPath(new URL("./secrets-hook.mjs", import.meta.url));

async function run(
  given: string[],
): Promise<{ dir: string; files: number; code: number; runSeconds: number }> {
  const files =
    given.length > 0
      ? given
      : filesUnder(join(root, "test"))
          .filter((f) => f.endsWith(".test.ts"))
          .sort();
  const dir = mkdtempSync("/tmp/sesscache-audit-");
  const secrets = join(dir, "secrets");
  const outputs = join(dir, "outputs");
  const tmp = join(dir, "tmp");
  for (const d of [secrets, outputs, tmp]) mkdirSync(d, { mode: 0o700 });
  const tee = createWriteStream(join(outputs, "test-run.txt"));
  const t0 = performance.now();
  console.log(`secrets-audit: ${files.length} test files, outputs in ${dir}`);
  const child = spawn(
    "nice",
    ["-n", "5", process.execPath, "--import", "tsx", "--test", "--test-concurrency=1", ...files],
    {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${hook}`.trim(),
        SESSCACHE_SECRETS_DIR: secrets,
        SESSCACHE_OUTPUTS_DIR: outputs,
        TMPDIR: tmp,
      },
    },
  );
  for (const s of [child.stdout, child.stderr]) {
    s.on("data", (d: Buffer) => {
      tee.write(d);
      process.stdout.write(d);
    });
  }
  const code: number = await new Promise((resolve) => child.on("close", (c) => resolve(c ?? 1)));
  await new Promise((r) => tee.end(r));
  return { dir, files: files.length, code, runSeconds: Math.round((performance.now() - t0) / 1000) };
}

async function main() {
  const args = process.argv.slice(2);
  // --scan-only DIR: scan an earlier (or interrupted) run's directory again.
  const { dir, files, code, runSeconds } =
    args[0] === "--scan-only" ? { dir: args[1]!, files: 0, code: -1, runSeconds: 0 } : await run(args);
  const secrets = join(dir, "secrets");
  const outputs = join(dir, "outputs");
  const tmp = join(dir, "tmp");
  const report = scan(secrets, [outputs, tmp], dir);
  const summary = {
    testFiles: files,
    testExitCode: code,
    runSeconds,
    secretsRecorded: report.secrets,
    filesScanned: report.files,
    bytesScanned: report.bytes,
    leaks: report.leaks.map(describe),
    excluded: report.excluded.map(describe),
    idMatches: report.ids.map(describe),
  };
  writeFileSync(join(dir, "report.json"), `${JSON.stringify(summary, null, 2)}\n`);
  console.log(
    `\nsecrets-audit: ${report.secrets} secrets recorded; ${report.files} files (${Math.round(report.bytes / 1024)} KiB) scanned; ` +
      `tests exited ${code} after ${runSeconds} s`,
  );
  console.log(`excluded (asked for by the test): ${report.excluded.length}`);
  for (const m of report.excluded.slice(0, 20)) console.log(`  ${describe(m)}`);
  console.log(`session ids found (not secret, reported only): ${report.ids.length}`);
  for (const m of report.ids.slice(0, 20)) console.log(`  ${describe(m)}`);
  if (report.secrets === 0) {
    console.log("secrets-audit: FAIL: the hook recorded nothing (is it loaded?)");
    process.exit(1);
  }
  if (report.leaks.length > 0) {
    console.log(`secrets-audit: FAIL: ${report.leaks.length} secret(s) found:`);
    for (const m of report.leaks) console.log(`  ${describe(m)}`);
    process.exit(1);
  }
  console.log(`secrets-audit: PASS (report: ${join(dir, "report.json")})`);
}

await main();
