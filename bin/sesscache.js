#!/usr/bin/env node
// The installed `sesscache` command: a thin launcher for the compiled CLI in dist/ (npm install
// builds it through the "prepare" script).
const entry = new URL("../dist/cli/main.js", import.meta.url);
let cli;
try {
  cli = await import(entry.href);
} catch (err) {
  // Only a missing build gets the friendly message; anything else is a real failure.
  if (err?.code === "ERR_MODULE_NOT_FOUND" && String(err.message).includes(entry.pathname)) {
    process.stderr.write(
      `sesscache: not built: ${entry.pathname} is missing (run "npm run build" in the package directory)\n`,
    );
    process.exit(2);
  }
  throw err;
}
process.exitCode = await cli.main(process.argv);
