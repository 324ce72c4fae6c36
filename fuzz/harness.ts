// The fuzz loop shared by every target: case i of a run with seed S is generated from Rng(S, i)
// alone, checked, timed and, every so often, followed by a memory sample. A failure names the
// target, seed and case index (replay it with `--case I`) and prints the input as hex.
import { performance } from "node:perf_hooks";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Rng, toHex } from "./prng.js";

/** Bytes; argument strings (printed as JSON); or bytes with a note saying what the case does. */
export type FuzzInput = Uint8Array | { text: string[] } | { bytes: Uint8Array; note: string };

/** What a target gives the loop: an input per case, and a check that throws when a case fails. */
export interface FuzzRunner<I extends FuzzInput = FuzzInput> {
  generate(rng: Rng, index: number): I;
  check(input: I, rng: Rng): void | Promise<void>;
  /** Cases in flight at once (socket target); 1 for function targets. */
  concurrency?: number;
  /** Checks after the last case (the socket target: the server still resumes). */
  finish?(): Promise<void>;
  close(): Promise<void>;
}

export interface FuzzTarget {
  name: string;
  description: string;
  defaultCases: number;
  /** A case slower than this (twice in a row) is a hang. */
  maxCaseMs: number;
  /** The most the heap may grow over its size after warm-up (bytes, measured after a GC). */
  maxHeapGrowth: number;
  setup(): Promise<FuzzRunner>;
}

export interface RunOptions {
  cases: number;
  seed: number;
  /** Replay only this case index. */
  only?: number;
  /** Go on after a failure, counting them (default: stop at the first). */
  keepGoing?: boolean;
  /** Overrides the target's per-case bound (CI on a loaded machine: a looser one). */
  maxCaseMs?: number;
  /** Progress lines (to stderr) every this many cases; 0 for none. */
  progressEvery?: number;
  log?: (line: string) => void;
}

export interface Failure {
  index: number;
  error: string;
  inputHex: string;
  inputText?: string[];
  note?: string;
}

export interface RunReport {
  target: string;
  seed: number;
  cases: number;
  failures: Failure[];
  seconds: number;
  slowestCaseMs: number;
  heapStartMB: number;
  heapEndMB: number;
  rssMaxMB: number;
}

export class FuzzFailure extends Error {
  override readonly name = "FuzzFailure";
}

/** Throws a FuzzFailure unless `cond`. */
export function expect(cond: unknown, message: string): asserts cond {
  if (!cond) throw new FuzzFailure(message);
}

let gcFn: (() => void) | undefined;
/** A real GC before each memory sample, so heapUsed measures what is retained, not garbage. */
function gc(): void {
  if (!gcFn) {
    setFlagsFromString("--expose-gc");
    gcFn = runInNewContext("gc") as () => void;
  }
  gcFn();
}

const MB = 1024 * 1024;
const MEMORY_SAMPLES = 20;

function describe(err: unknown): string {
  if (err instanceof Error) {
    const stack = err.stack?.split("\n").slice(0, 6).join("\n") ?? "";
    return `${err.name}: ${err.message}${err instanceof FuzzFailure ? "" : `\n${stack}`}`;
  }
  return String(err);
}

export async function runTarget(target: FuzzTarget, o: RunOptions): Promise<RunReport> {
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const runner = await target.setup();
  const failures: Failure[] = [];
  const start = performance.now();
  let slowest = 0;
  let heapBase = 0;
  let heapEnd = 0;
  let rssMax = 0;
  const first = o.only ?? 0;
  const last = o.only === undefined ? o.cases : o.only + 1;
  const total = last - first;
  const sampleEvery = Math.max(1, Math.floor(total / MEMORY_SAMPLES));
  // The heap size after the first sample (code compiled, caches warm) is the baseline.
  const warmAt = first + Math.min(sampleEvery, Math.max(1, Math.floor(total / 10)));

  const bound = o.maxCaseMs ?? target.maxCaseMs;
  const one = async (index: number): Promise<void> => {
    const rng = new Rng(o.seed, index);
    const input = runner.generate(rng, index);
    const checkRng = new Rng(o.seed ^ 0x5eed, index);
    let ms = 0;
    try {
      let t = performance.now();
      await runner.check(input, checkRng);
      ms = performance.now() - t;
      if (ms > bound) {
        // Once more: a GC pause or a busy machine is not a hang, a case that is slow twice is.
        t = performance.now();
        await runner.check(input, new Rng(o.seed ^ 0x5eed, index));
        ms = Math.min(ms, performance.now() - t);
        if (ms > bound) {
          throw new FuzzFailure(`case took ${ms.toFixed(1)} ms twice, over ${bound} ms: a hang`);
        }
      }
    } catch (err) {
      const bytes =
        input instanceof Uint8Array
          ? input
          : "bytes" in input
            ? input.bytes
            : new TextEncoder().encode(JSON.stringify(input.text));
      const f: Failure = { index, error: describe(err), inputHex: toHex(bytes) };
      if ("text" in input) f.inputText = input.text;
      if ("note" in input) f.note = input.note;
      failures.push(f);
      log(
        `FAIL ${target.name} seed=${o.seed} case=${index} (replay: npm run fuzz -- ${target.name} ` +
          `--seed ${o.seed} --case ${index})\n  ${f.error.replace(/\n/g, "\n  ")}\n` +
          (f.inputText ? `  input (JSON): ${JSON.stringify(f.inputText)}\n` : "") +
          (f.note ? `  case: ${f.note}\n` : "") +
          `  input (${bytes.length} bytes, hex): ${f.inputHex}`,
      );
    }
    if (ms > slowest) slowest = ms;
  };

  const sample = (index: number): void => {
    gc();
    const m = process.memoryUsage();
    rssMax = Math.max(rssMax, m.rss);
    heapEnd = m.heapUsed;
    if (index >= warmAt && heapBase === 0) heapBase = m.heapUsed;
    if (heapBase > 0 && m.heapUsed - heapBase > target.maxHeapGrowth) {
      throw new FuzzFailure(
        `heap grew from ${(heapBase / MB).toFixed(1)} MB to ${(m.heapUsed / MB).toFixed(1)} MB by case ` +
          `${index}, more than ${(target.maxHeapGrowth / MB).toFixed(0)} MB: a leak`,
      );
    }
  };

  const concurrency = runner.concurrency ?? 1;
  try {
    let next = first;
    let done = 0;
    const stop = () => failures.length > 0 && !o.keepGoing;
    // Cases run in batches of sampleEvery; memory is sampled between batches, when none is in flight.
    while (next < last && !stop()) {
      const batchEnd = Math.min(last, next + sampleEvery);
      const worker = async () => {
        while (next < batchEnd && !stop()) {
          await one(next++);
          done++;
          if (o.progressEvery && done % o.progressEvery === 0) {
            const s = (performance.now() - start) / 1000;
            log(`${target.name}: ${done}/${total} cases, ${failures.length} failures, ${s.toFixed(0)} s`);
          }
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
      sample(next - 1);
    }
    if (!stop() && runner.finish) {
      try {
        await runner.finish();
      } catch (err) {
        failures.push({ index: -1, error: `after the last case: ${describe(err)}`, inputHex: "" });
        log(`FAIL ${target.name} seed=${o.seed} after the last case: ${describe(err)}`);
      }
    }
  } catch (err) {
    failures.push({ index: -1, error: describe(err), inputHex: "" });
    log(`FAIL ${target.name} seed=${o.seed}: ${describe(err)}`);
  } finally {
    await runner.close();
  }
  return {
    target: target.name,
    seed: o.seed,
    cases: total,
    failures,
    seconds: (performance.now() - start) / 1000,
    slowestCaseMs: slowest,
    heapStartMB: heapBase / MB,
    heapEndMB: heapEnd / MB,
    rssMaxMB: rssMax / MB,
  };
}
