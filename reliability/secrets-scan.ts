// The scanner of the secrets audit: searches text outputs (a test run's TAP output, log files, temp
// files) for any secret the hook (secrets-hook.mjs) recorded, as hex (either case), base64 or
// base64url at any byte alignment, inside longer runs too. It reports where (file, line, the test
// the line belongs to) and what kind, never the value.
//
// Matching: each secret is indexed by fingerprints of its first 20 bytes: 40 lower-case hex digits,
// and 24 base64 characters for each of the three alignments it can have inside a longer base64 text
// (base64url is folded into base64). Every run of 24+ base64/hex characters in the outputs is slid
// over once, so the cost is linear in the outputs whatever the number of secrets.
//
// Kinds: everything the keylog gives and SESSION_MASTER_KEY are secrets (a match fails the audit);
// ID (session ids) are reported apart and do not fail it (`inspect` prints them by design).
//
// Exclusions (outputs a test explicitly asked for): see EXCLUSIONS; each says why.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

export interface Secret {
  kind: string;
  bytes: Buffer;
}

export interface Match {
  file: string;
  line: number;
  /** The test (TAP subtest) the line belongs to, when the file is TAP output. */
  test?: string;
  kind: string;
  encoding: "hex" | "base64";
  /** Why it does not count, when an exclusion applies. */
  excluded?: string;
}

/**
 * Outputs that hold secrets because a test asked for them. `path` is matched against the file's
 * path relative to the scanned directory; `header` (optional) against its first line (the hook's
 * argv line of a process output); `inside` (optional) limits it to matches within such a block.
 */
export const EXCLUSIONS: { path: RegExp; header?: RegExp; inside?: [string, string]; why: string }[] = [
  {
    path: /(^|\/)proc-\d+\.txt$/,
    header: /"--show-secrets"/,
    why: "the output of a command run with --show-secrets (inspect prints the master key when asked)",
  },
  {
    path: /(^|\/)proc-\d+\.txt$/,
    header: /\/sesscache-client-shared-[^"/]+\/child\.mts"/,
    why: "client-shared.test.ts's own child script prints its session's DER as hex for the test to check",
  },
  {
    path: /./,
    inside: ["-----BEGIN SSL SESSION PARAMETERS-----", "-----END SSL SESSION PARAMETERS-----"],
    why: "a PEM session file (openssl -sess_out, inspect's input): the session itself, master key included",
  },
];

const FP_BYTES = 20;
const HEX_FP = FP_BYTES * 2;
const B64_FP = 24;
/** Characters of the base64 of (k zero bytes + secret) that still depend on the zero bytes. */
const B64_SKIP = [0, 2, 3];

export function loadSecrets(dir: string): Secret[] {
  const out: Secret[] = [];
  const seen = new Set<string>();
  for (const f of readdirSync(dir)) {
    if (!f.startsWith("secrets-")) continue;
    for (const line of readFileSync(join(dir, f), "latin1").split("\n")) {
      const [kind, hex] = line.split(" ");
      if (!kind || !hex || seen.has(hex) || hex.length < FP_BYTES * 2 + 8) continue;
      seen.add(hex);
      out.push({ kind, bytes: Buffer.from(hex, "hex") });
    }
  }
  return out;
}

const fold = (s: string) => s.replace(/-/g, "+").replace(/_/g, "/");

export class SecretIndex {
  private readonly hex = new Map<string, number>();
  private readonly b64 = new Map<string, number>();
  constructor(readonly secrets: Secret[]) {
    secrets.forEach((s, i) => {
      this.hex.set(s.bytes.subarray(0, FP_BYTES).toString("hex"), i);
      for (let k = 0; k < 3; k++) {
        const enc = Buffer.concat([Buffer.alloc(k), s.bytes]).toString("base64");
        this.b64.set(enc.slice(B64_SKIP[k]!, B64_SKIP[k]! + B64_FP), i);
      }
    });
  }

  /** Every secret found in `text`, with the offset where its encoding starts. */
  *find(text: string): Generator<{ index: number; offset: number; encoding: "hex" | "base64" }> {
    const run = /[A-Za-z0-9+/_-]{24,}/g;
    for (let m = run.exec(text); m !== null; m = run.exec(text)) {
      const token = m[0];
      const lower = token.toLowerCase();
      const folded = fold(token);
      for (let i = 0; i + B64_FP <= token.length; i++) {
        if (i + HEX_FP <= token.length) {
          const h = this.hex.get(lower.slice(i, i + HEX_FP));
          if (h !== undefined) yield { index: h, offset: m.index + i, encoding: "hex" };
        }
        const b = this.b64.get(folded.slice(i, i + B64_FP));
        if (b !== undefined) yield { index: b, offset: m.index + i, encoding: "base64" };
      }
    }
  }
}

function insideBlock(text: string, offset: number, [begin, end]: [string, string]): boolean {
  const b = text.lastIndexOf(begin, offset);
  if (b < 0) return false;
  const e = text.indexOf(end, b);
  return e > offset;
}

/** Scans one file's text; TAP output gets each match attributed to the subtest it is under. */
export function scanText(index: SecretIndex, file: string, text: string): Match[] {
  const out: Match[] = [];
  if (text.length === 0) return out;
  const lineStarts: number[] = [0];
  for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) lineStarts.push(i + 1);
  const lineOf = (offset: number) => {
    let lo = 0;
    let hi = lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (lineStarts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  const subtest = /^\s*# Subtest: (.*)$/gm;
  const subtests: { offset: number; name: string }[] = [];
  for (let m = subtest.exec(text); m !== null; m = subtest.exec(text))
    subtests.push({ offset: m.index, name: m[1]! });
  const seen = new Set<string>();
  for (const f of index.find(text)) {
    const s = index.secrets[f.index]!;
    const line = lineOf(f.offset) + 1;
    const key = `${line}:${f.index}`;
    if (seen.has(key)) continue;
    seen.add(key);
    let test: string | undefined;
    for (let i = subtests.length - 1; i >= 0; i--) {
      if (subtests[i]!.offset < f.offset) {
        test = subtests[i]!.name;
        break;
      }
    }
    const ex = EXCLUSIONS.find(
      (x) =>
        x.path.test(file) &&
        (x.header === undefined || x.header.test(text.slice(0, text.indexOf("\n")))) &&
        (x.inside === undefined || insideBlock(text, f.offset, x.inside)),
    );
    out.push({ file, line, test, kind: s.kind, encoding: f.encoding, excluded: ex?.why });
  }
  return out;
}

/** Every regular file under `root` (or `root` itself), at most 64 MiB each. */
export function filesUnder(root: string, skip: (path: string) => boolean = () => false): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    if (skip(p)) return;
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(p);
    } catch {
      return;
    }
    if (st.isDirectory()) {
      let names: string[] = [];
      try {
        names = readdirSync(p);
      } catch {}
      for (const n of names) walk(join(p, n));
    } else if (st.isFile() && st.size <= 64 * 1024 * 1024) out.push(p);
  };
  walk(root);
  return out;
}

export interface ScanReport {
  secrets: number;
  files: number;
  bytes: number;
  /** Matches of secrets that count (not excluded, not ids): the audit fails when any. */
  leaks: Match[];
  excluded: Match[];
  ids: Match[];
}

export function scan(secretsDir: string, targets: string[], base = "/"): ScanReport {
  const secrets = loadSecrets(secretsDir);
  const index = new SecretIndex(secrets);
  const report: ScanReport = {
    secrets: secrets.length,
    files: 0,
    bytes: 0,
    leaks: [],
    excluded: [],
    ids: [],
  };
  for (const t of targets) {
    for (const file of filesUnder(t, (p) => p === secretsDir)) {
      const text = readFileSync(file, "latin1");
      report.files++;
      report.bytes += text.length;
      for (const m of scanText(index, relative(base, file) || file, text)) {
        if (m.kind === "ID") report.ids.push(m);
        else if (m.excluded !== undefined) report.excluded.push(m);
        else report.leaks.push(m);
      }
    }
  }
  return report;
}

/** One line per match: where and what kind, never the value. */
export function describe(m: Match): string {
  return `${m.file}:${m.line}${m.test ? ` (test: ${m.test})` : ""}: ${m.kind} as ${m.encoding}${m.excluded ? ` — excluded: ${m.excluded}` : ""}`;
}
