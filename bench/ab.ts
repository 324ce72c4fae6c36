// `npm run bench -- ab --base REF [--variant V] [--version 1.2|1.3] [--full] [--rounds N]
// [--seconds S] [--procs P]`: one change measured alone. The same bench server variant (handshake.ts)
// from this working tree ("after") and from git REF ("before", checked out in a temporary worktree
// sharing this node_modules) is measured in one alternating run, one server at a time on a pinned
// core (server-child.ts). The ratio is before's CPU per handshake over after's: above 1, the change
// made handshakes cheaper.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TlsVersion } from "../test/support/tls-peers.js";
import type { BenchResult } from "./run.js";
import { median, pairedRounds, pinClientSide, pinning, ServerChild, spread } from "./server-child.js";

function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  if (v === undefined || v.startsWith("--")) throw new Error(`${name} needs a value`);
  return v;
}

function count(args: string[], name: string, dflt: number): number {
  const s = option(args, name);
  const v = s === undefined ? dflt : Number(s);
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${name} must be a positive integer`);
  return v;
}

export default async function ab(args: string[]): Promise<BenchResult> {
  const base = option(args, "--base");
  if (base === undefined)
    throw new Error("usage: npm run bench -- ab --base GIT-REF [--variant V] [--version 1.2|1.3] [--full]");
  const variant = option(args, "--variant") ?? "sesscache";
  const version = (option(args, "--version") ?? "1.3") as TlsVersion;
  if (version !== "1.2" && version !== "1.3") throw new Error("--version is 1.2 or 1.3");
  const reuse = !args.includes("--full");
  const rounds = count(args, "--rounds", 7);
  const seconds = count(args, "--seconds", 1);
  const procs = count(args, "--procs", 4);
  const repo = dirname(dirname(fileURLToPath(import.meta.url)));
  const commit = execFileSync("git", ["-C", repo, "rev-parse", "--verify", `${base}^{commit}`], {
    encoding: "utf8",
  }).trim();
  const tree = join(mkdtempSync(join(tmpdir(), "sesscache-ab-")), "before");
  execFileSync("git", ["-C", repo, "worktree", "add", "--detach", "-q", tree, commit]);
  try {
    symlinkSync(join(repo, "node_modules"), join(tree, "node_modules"));
    const beforeModule = join(tree, "bench", "handshake.ts");
    if (!existsSync(beforeModule)) throw new Error(`${base} has no bench/handshake.ts`);
    pinClientSide();
    const r = await pairedRounds(
      (side) =>
        ServerChild.start(variant, {
          module: side === "ours" ? join(repo, "bench", "handshake.ts") : beforeModule,
        }),
      { version, reuse, seconds },
      { rounds, procs, log: (l) => process.stderr.write(`${l}\n`) },
    );
    const ratio = median(r.ratios);
    return {
      title: `Before/after: ${variant}, TLS ${version} ${reuse ? "resumed" : "full"}, ${base} (${commit.slice(0, 10)}) vs this tree`,
      rows: [
        {
          "before µs": Math.round(median(r.base)),
          "after µs": Math.round(median(r.ours)),
          "before/after": Number(ratio.toFixed(3)),
          spread: spread(r.ratios),
        },
      ],
      notes: [
        "µs = server CPU per handshake, median over rounds; before/after > 1: the change made handshakes cheaper",
        `${rounds} rounds of ${seconds} s, ${procs} processes per side` +
          (pinning ? `, servers on CPU ${pinning.server}, s_time on CPU ${pinning.client}` : ", not pinned"),
      ],
      extra: { base, commit, variant, version, reuse, samples: r },
    };
  } finally {
    execFileSync("git", ["-C", repo, "worktree", "remove", "--force", tree]);
    rmSync(dirname(tree), { recursive: true, force: true });
  }
}
