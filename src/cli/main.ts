// The `sesscache` command line. Each command lives in its own module exporting
// `register(program)`; adding one is a new file and one line in COMMANDS.
import { readFileSync, realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Command, CommanderError } from "commander";
import { register as bench } from "./bench.js";
import { CliError, describeError, oneLine } from "./errors.js";
import { register as inspect } from "./inspect.js";
import { register as probe } from "./probe.js";
import { register as serve } from "./serve-command.js";

const COMMANDS: ReadonlyArray<(program: Command) => void> = [serve, probe, inspect, bench];

/** The package version; package.json is two levels up from both src/cli and dist/cli. */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

export function createProgram(): Command {
  const program = new Command("sesscache")
    .description("OpenSSL's TLS session cache for Node.js")
    .version(version(), "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .option("--debug", "print a stack trace with unexpected errors (also: SESSCACHE_DEBUG=1)")
    // Errors come back to main() as exceptions so the exit code and message format are ours.
    .exitOverride()
    .configureOutput({
      outputError: (str, write) => write(`sesscache: ${oneLine(str.replace(/^error: /, ""))}\n`),
    })
    .showSuggestionAfterError(true);
  // Commands made by program.command() inherit the settings above.
  for (const register of COMMANDS) register(program);
  return program;
}

/**
 * Runs the CLI and returns the exit code for the process: 0, 2 for usage and environment errors
 * (one line on stderr), 1 for unexpected errors. Long-running commands (serve) resolve once
 * started and keep the process alive themselves.
 */
export async function main(argv: readonly string[] = process.argv): Promise<number> {
  // `sesscache --help | head -3`: a reader that went away is not an error worth a stack trace.
  if (!process.stdout.listeners("error").includes(ignoreEpipe)) process.stdout.on("error", ignoreEpipe);
  const program = createProgram();
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Already printed through outputError (or help/version was shown).
      return err.exitCode === 0 ? 0 : 2;
    }
    const debug = Boolean(process.env.SESSCACHE_DEBUG) || program.opts().debug === true;
    if (err instanceof CliError) {
      // An empty message: the command already said everything (a check that says no, exit 1).
      if (err.message) process.stderr.write(`sesscache: ${oneLine(err.message)}\n`);
      const cause = err.cause instanceof Error ? err.cause.stack : undefined;
      if (debug && cause) process.stderr.write(`${cause}\n`);
      return err.exitCode;
    }
    const detail =
      debug && err instanceof Error && err.stack
        ? `\n${err.stack}`
        : " (--debug or SESSCACHE_DEBUG=1 for a stack trace)";
    process.stderr.write(`sesscache: unexpected error: ${describeError(err)}${detail}\n`);
    return 1;
  }
}

function ignoreEpipe(err: NodeJS.ErrnoException): void {
  if (err.code !== "EPIPE")
    process.stderr.write(`sesscache: cannot write to stdout: ${describeError(err)}\n`);
}

function isEntryPoint(): boolean {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

// Run directly (`node --import tsx src/cli/main.ts`); bin/sesscache.js imports and calls main().
if (isEntryPoint()) process.exitCode = await main();
