// Target `cli-args`: the CLI's argument parsers (src/cli/args.ts, probe/bench targets, the log
// format, serve's --store flags, the engine's parseMode). Inputs are strings built from the pieces
// these parsers look for (digits, colons, brackets, IPv6, URLs, base64 keys, mode names) plus
// hostile text (control characters, unicode, huge numbers). Checks: a refusal is a CliError,
// commander's InvalidArgumentError or a SessionCacheModeError; an accepted value is in range; no
// error message repeats a Redis password.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidArgumentError } from "commander";
import { parseListen, parseNonNegativeInteger, parseOnOff } from "../../src/cli/args.js";
import { CliError } from "../../src/cli/errors.js";
import { parseLogFormat } from "../../src/cli/logger.js";
import { parsePositive, parseTimeout } from "../../src/cli/probe.js";
import { parseStoreConfig, type StoreFlags } from "../../src/cli/serve-store.js";
import { parseTarget } from "../../src/cli/tls-handshake.js";
import { parseMode, SessionCacheModeError } from "../../src/engine/mode.js";
import { testPki } from "../../test/support/certs.js";
import { expect, type FuzzInput, type FuzzRunner, type FuzzTarget } from "../harness.js";
import type { Rng } from "../prng.js";

const SECRET = "pw-SECRET-9f3";

const PIECES = [
  "127.0.0.1",
  "::1",
  "[::1]",
  "[",
  "]",
  ":",
  "::",
  "0",
  "1",
  "65535",
  "65536",
  "443",
  "8443",
  "99999999999999999999",
  "9007199254740993",
  "-1",
  "+1",
  "0x10",
  "1e3",
  " ",
  "\t",
  "\n",
  "\u0000",
  "\u00e9",
  "\u{1F600}",
  "\u202e",
  "localhost",
  "example.com",
  "fe80::1%eth0",
  "[fe80::1]",
  "on",
  "off",
  "yes",
  "no",
  "true",
  "false",
  "TRUE",
  "text",
  "json",
  "server",
  "client",
  "both",
  "off",
  "no_auto_clear",
  "SSL_SESS_CACHE_",
  "no-internal",
  "update_time",
  ",",
  "|",
  "+",
  "0x7fffffff",
  "0x80000000",
  "redis://",
  "rediss://",
  "redis-cluster://",
  "rediss-cluster://",
  "memory",
  "cluster",
  `user:${SECRET}@`,
  `:${SECRET}@`,
  "%",
  "%zz",
  "/0",
  "?x=1",
  "#",
  "@",
  "h:0",
  "h:70000",
  "a,b",
  ",,",
  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
  "-_-_",
  "=",
];

function text(rng: Rng): string {
  const r = rng.int(10);
  if (r === 0)
    return String.fromCharCode(...Array.from({ length: rng.smallLen(64) }, () => rng.int(0x10000)));
  if (r === 1) return "9".repeat(rng.range(1, 400));
  if (r === 2) return "a".repeat(rng.range(1, 70_000)); // long input
  const n = rng.range(0, 6);
  let s = "";
  for (let i = 0; i < n; i++) s += rng.pick(PIECES);
  return s;
}

type Parser = (args: string[], rng: Rng) => void;

const isTypedError = (e: unknown) =>
  e instanceof CliError || e instanceof InvalidArgumentError || e instanceof SessionCacheModeError;

const PARSERS: Record<string, Parser> = {
  parseListen([v]) {
    const a = parseListen(v!);
    expect(Number.isInteger(a.port) && a.port >= 0 && a.port <= 65535, `port ${a.port}`);
    expect(a.host.length > 0, "empty host");
  },
  parseTarget([v]) {
    const t = parseTarget(v!);
    expect(Number.isInteger(t.port) && t.port >= 1 && t.port <= 65535, `port ${t.port}`);
    expect(t.host.length > 0, "empty host");
  },
  parseNonNegativeInteger([v]) {
    const n = parseNonNegativeInteger(v!);
    expect(Number.isSafeInteger(n) && n >= 0, `${n}`);
  },
  parsePositive([v]) {
    const n = parsePositive(v!);
    expect(Number.isSafeInteger(n) && n >= 1, `${n}`);
  },
  parseTimeout([v]) {
    const n = parseTimeout(v!);
    expect(Number.isSafeInteger(n) && n >= 1 && n <= 2 ** 31 - 1, `${n}`);
  },
  parseOnOff([v]) {
    expect(typeof parseOnOff(v!) === "boolean", "not a boolean");
  },
  parseLogFormat([v]) {
    const f = parseLogFormat(v!);
    expect(f === "text" || f === "json", f);
  },
  parseMode([v], rng) {
    const input = rng.chance(0.2) ? rng.pick([Number(v), -1, 2 ** 31, 0.5, Number.NaN, Infinity, 3]) : v!;
    const m = parseMode(input);
    expect(Number.isInteger(m) && m >= 0 && m <= 0x7fffffff, `${m}`);
  },
};

export const cliArgsTarget: FuzzTarget = {
  name: "cli-args",
  description: "the CLI argument parsers (src/cli: args, probe, logger, serve-store; parseMode)",
  defaultCases: 100_000,
  maxCaseMs: 100,
  maxHeapGrowth: 64 * 1024 * 1024,
  async setup(): Promise<FuzzRunner> {
    // Files for --store-tls-*: real PEM, garbage, a missing path, an encrypted key header.
    const pki = testPki();
    const dir = mkdtempSync(join(tmpdir(), "sesscache-fuzz-cli-"));
    const garbage = join(dir, "garbage.pem");
    writeFileSync(garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    const encrypted = join(dir, "enc.key");
    writeFileSync(
      encrypted,
      "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    const files = [pki.caFile, pki.certFile, pki.keyFile, garbage, encrypted, join(dir, "missing.pem"), dir];
    const names = [...Object.keys(PARSERS), "parseStoreConfig"];
    return {
      generate(rng): FuzzInput {
        const name = rng.pick(names);
        if (name !== "parseStoreConfig") return { text: [name, text(rng)] };
        // parseStoreConfig: [name, store, keys (comma list), flags (p: plaintext, c: clustered), ca, cert, key, env keys]
        const maybe = (p: number, f: () => string) => (rng.chance(p) ? f() : "\u0001");
        return {
          text: [
            name,
            maybe(0.9, () =>
              rng.chance(0.5)
                ? `${rng.pick(["redis://", "rediss://", "redis-cluster://", "rediss-cluster://", ""])}${text(rng)}`
                : text(rng),
            ),
            maybe(0.5, () =>
              Array.from({ length: rng.range(1, 3) }, () =>
                rng.chance(0.6) ? Buffer.from(rng.bytes(32)).toString("base64") : text(rng),
              ).join(","),
            ),
            `${rng.chance(0.3) ? "p" : ""}${rng.chance(0.3) ? "c" : ""}`,
            maybe(0.15, () => rng.pick(files)),
            maybe(0.15, () => rng.pick(files)),
            maybe(0.15, () => rng.pick(files)),
            maybe(0.3, () => text(rng)),
          ],
        };
      },
      check(input, rng) {
        const [name, ...args] = (input as { text: string[] }).text;
        try {
          if (name === "parseStoreConfig") {
            const [store, keys, flags, ca, cert, key, envKeys] = args.map((a) =>
              a === "\u0001" ? undefined : a,
            );
            const f: StoreFlags = {
              store,
              storeKey: keys?.split(","),
              storePlaintext: flags?.includes("p"),
              clustered: flags?.includes("c"),
              storeTlsCa: ca,
              storeTlsCert: cert,
              storeTlsKey: key,
            };
            const c = parseStoreConfig(f, envKeys === undefined ? {} : { SESSCACHE_STORE_KEYS: envKeys });
            if (c) {
              expect(
                c.plaintext !== c.keys.length > 0 || c.kind === "memory" || c.kind === "cluster",
                "plaintext with keys",
              );
              expect(c.kind !== "redis" || typeof c.url === "string", "redis without a URL");
            }
          } else PARSERS[name!]!(args, rng);
        } catch (e) {
          if (!isTypedError(e)) throw e;
          // --store may hold a password: serve's errors never echo it (other parsers echo their input).
          if (name === "parseStoreConfig") {
            expect(!(e as Error).message.includes(SECRET), "an error message repeats the Redis password");
          }
        }
      },
      close: async () => {},
    };
  },
};
