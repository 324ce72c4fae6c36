// Command-line options of the benchmarks: `--name value`, checked, so a typo fails loudly instead of
// running something other than what was asked.

/** The value after `name`, or undefined when `name` is absent. */
export function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  if (v === undefined || v.startsWith("--")) throw new Error(`${name} needs a value`);
  return v;
}

/** A positive integer option (`dflt` when absent). */
export function countOption(args: string[], name: string, dflt: number): number {
  const s = option(args, name);
  const v = s === undefined ? dflt : Number(s);
  if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`${name} must be a positive integer, got ${s}`);
  return v;
}

/** An option whose value must be one of `choices` (`dflt` when absent). */
export function choiceOption<T extends string>(
  args: string[],
  name: string,
  choices: readonly T[],
  dflt: T,
): T {
  const s = option(args, name) ?? dflt;
  if (!choices.includes(s as T)) throw new Error(`${name} must be one of ${choices.join(", ")}, got ${s}`);
  return s as T;
}
