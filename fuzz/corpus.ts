// The seed corpus: real inputs captured from real peers by fuzz/capture-corpus.ts, one hex file per
// input under fuzz/corpus/<name>/ (lines of hex; '#' starts a comment line naming its source).
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const CORPUS_DIR = join(dirname(fileURLToPath(import.meta.url)), "corpus");

export function parseHexFile(text: string): Uint8Array {
  const hex = text
    .split("\n")
    .filter((l) => !l.startsWith("#"))
    .join("")
    .replace(/\s+/g, "");
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new Error("corpus file is not hex");
  return new Uint8Array(Buffer.from(hex, "hex"));
}

/** Every input of fuzz/corpus/<name>/, sorted by file name (so runs are reproducible). */
export function loadCorpus(name: string): Uint8Array[] {
  const dir = join(CORPUS_DIR, name);
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith(".hex"));
  } catch {
    return [];
  }
  return files.sort().map((f) => parseHexFile(readFileSync(join(dir, f), "utf8")));
}

/** Hex in 64-character lines, after a comment line naming the source. */
export function formatHexFile(source: string, bytes: Uint8Array): string {
  const hex = Buffer.from(bytes).toString("hex");
  const lines = hex.match(/.{1,64}/g) ?? [];
  return `# ${source}\n${lines.join("\n")}\n`;
}
