// `npm run bench -- ab --base REF [--variant V] [--version 1.2|1.3] [--full] [--rounds N]
// [--seconds S] [--procs P]`: one change measured alone. The same bench server variant (handshake.ts)
// runs on this working tree's src/ ("after") and on git REF's src/ ("before", checked out in a
// temporary worktree sharing this node_modules, with this tree's bench harness copied in so only
// src/ differs), in one alternating run, one server at a time on a pinned core (measure.ts). The
// ratio is before's CPU per handshake over after's: above 1, the change made handshakes cheaper.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { choiceOption, countOption, option } from "./args.js";
import { VARIANTS } from "./handshake.js";
import { median, pairedRounds, spread } from "./measure.js";
import type { BenchResult } from "./run.js";
import { pinClientSide, pinning, ServerChild } from "./server-child.js";

/** The bench files the "before" tree gets from this one (the server and how it is measured). */
const HARNESS = ["handshake.ts", "tls-bench-server.ts", "server-child.ts", "measure.ts", "args.ts", "run.ts"];

const USAGE = "usage: npm run bench -- ab --base GIT-REF [--variant V] [--version 1.2|1.3] [--full]";

export default async function ab(args: string[]): Promise<BenchResult> {
  const base = option(args, "--base");
  if (base === undefined) throw new Error(USAGE);
  const variant = choiceOption(args, "--variant", VARIANTS, "sesscache");
  const version = choiceOption(args, "--version", ["1.2", "1.3"] as const, "1.3");
  const reuse = !args.includes("--full");
  const rounds = countOption(args, "--rounds", 7);
  const seconds = countOption(args, "--seconds", 1);
  const procs = countOption(args, "--procs", 4);
  const bench = dirname(fileURLToPath(import.meta.url));
  const repo = dirname(bench);
  const git = (...a: string[]) => execFileSync("git", ["-C", repo, ...a], { encoding: "utf8" }).trim();
  const commit = git("rev-parse", "--verify", `${base}^{commit}`);
  const after = {
    head: git("rev-parse", "HEAD"),
    changed: git("status", "--porcelain", "--", "src").split("\n").filter(Boolean),
  };

  const dir = mkdtempSync(join(tmpdir(), "sesscache-ab-"));
  const tree = join(dir, "before");
  let registered = false;
  const cleanUp = () => {
    try {
      if (registered) git("worktree", "remove", "--force", tree);
    } catch {
      // pruned below
    }
    rmSync(dir, { recursive: true, force: true });
    if (registered) git("worktree", "prune");
    registered = false;
  };
  const onSignal = () => {
    cleanUp();
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  try {
    git("worktree", "add", "--detach", "-q", tree, commit);
    registered = true;
    symlinkSync(join(repo, "node_modules"), join(tree, "node_modules"));
    for (const f of HARNESS) copyFileSync(join(bench, f), join(tree, "bench", f));
    pinClientSide();
    const r = await pairedRounds(
      (side) =>
        ServerChild.start(variant, {
          module: join(side === "ours" ? bench : join(tree, "bench"), "handshake.ts"),
        }),
      { version, reuse, seconds },
      { rounds, procs, log: (l) => process.stderr.write(`${l}\n`) },
    );
    return {
      title: `Before/after: ${variant}, TLS ${version} ${reuse ? "resumed" : "full"}, src/ of ${base} (${commit.slice(0, 10)}) vs this tree`,
      rows: [
        {
          "before µs": Math.round(median(r.base)),
          "after µs": Math.round(median(r.ours)),
          "before/after": Number(median(r.ratios).toFixed(3)),
          spread: spread(r.ratios),
          "process spread": spread(r.perProcess),
        },
      ],
      notes: [
        "µs = server CPU per handshake, each side's median over rounds; before/after = median over rounds of the " +
          "ratio (> 1: the change made handshakes cheaper); spread = min-max of the rounds; process spread = " +
          "min-max over the after side's processes",
        `${rounds} rounds of ${seconds} s, ${procs} processes per side` +
          (pinning ? `, servers on CPU ${pinning.server}, s_time on CPU ${pinning.client}` : ", not pinned"),
        `after = HEAD ${after.head.slice(0, 10)}${after.changed.length ? ` with ${after.changed.length} changed file(s) in src/` : ""}`,
      ],
      extra: { base, commit, after, variant, version, reuse, samples: r },
    };
  } finally {
    process.off("SIGINT", onSignal);
    cleanUp();
  }
}
