// The fuzzers (fuzz/) in CI size: each target runs a bounded number of cases from a fixed seed and
// must report no failure. Plus: the seed corpus is what it claims (real hellos that read as
// complete ClientHellos, real sessions that decode), and the loop itself catches and replays a
// failing case (so a green run means the checks ran, not that nothing was checked).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { loadCorpus } from "../fuzz/corpus.js";
import { type FuzzTarget, runTarget } from "../fuzz/harness.js";
import { Rng } from "../fuzz/prng.js";
import { TARGETS } from "../fuzz/targets/index.js";
import { handshakeOf } from "../fuzz/tls-gen.js";
import { ClientHelloReader, type ClientHelloResult } from "../src/server/client-hello.js";
import { parseSession } from "../src/session/index.js";

const SEED = Number(process.env.FUZZ_SEED ?? 20261202);
const CASES: Record<string, number> = {
  "client-hello": 20_000,
  "client-hello-socket": 300,
  session: 10_000,
  sealed: 15_000,
  "cli-args": 20_000,
};

async function runClean(target: FuzzTarget, cases: number): Promise<void> {
  const lines: string[] = [];
  // The 100 ms hang bound of the long runs is too tight for a CI machine under load: 2 s here (a
  // real hang, a loop that never ends, still fails: by this bound or by the test's timeout).
  const maxCaseMs = Math.max(target.maxCaseMs, 2000);
  const report = await runTarget(target, { cases, seed: SEED, maxCaseMs, log: (l) => lines.push(l) });
  assert.equal(report.cases, cases);
  assert.equal(report.failures.length, 0, lines.join("\n"));
}

describe("fuzz targets (CI size, fixed seed)", () => {
  for (const target of TARGETS) {
    const cases = CASES[target.name];
    it(`${target.name}: ${cases} cases, seed ${SEED}, no failure`, { timeout: 120_000 }, async () => {
      assert.ok(cases !== undefined, `no CI size for ${target.name}`);
      await runClean(target, cases);
    });
  }
});

describe("fuzz corpus", () => {
  it("holds complete ClientHellos from every kind of peer, some offering sessions", () => {
    const hellos = loadCorpus("client-hello");
    assert.ok(hellos.length >= 20, `${hellos.length} hellos`);
    let offering = 0;
    for (const h of hellos) {
      const r = new ClientHelloReader().push(h);
      assert.equal(r.kind, "done");
      if (r.kind === "done" && (r.hello.pskIdentities.length > 0 || r.hello.sessionTicketBytes > 0))
        offering++;
    }
    assert.ok(offering >= 5, `${offering} hellos offer a session or ticket`);
  });

  it("holds sessions that decode: TLS 1.2 and 1.3, with tickets and peer certificates", () => {
    const sessions = loadCorpus("session").map((d) => parseSession(d));
    assert.ok(sessions.length >= 20);
    assert.ok(sessions.some((s) => s.protocolVersion === 0x0303));
    assert.ok(sessions.some((s) => s.protocolVersion === 0x0304));
    assert.ok(sessions.some((s) => s.ticket !== undefined));
    assert.ok(sessions.some((s) => s.peerCertificate !== undefined));
  });
});

describe("every split offset", () => {
  const hellos = loadCorpus("client-hello").map(handshakeOf);
  const record = (frag: Uint8Array) =>
    Buffer.concat([Buffer.from([22, 3, 1, frag.length >> 8, frag.length & 0xff]), frag]);
  const fields = (r: ClientHelloResult) => {
    assert.equal(r.kind, "done");
    if (r.kind !== "done") return undefined;
    const h = r.hello;
    const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
    return [
      h.legacyVersion,
      hex(h.legacyId),
      h.pskIdentities.map(hex),
      h.offersTls13,
      h.sessionTicketBytes,
      h.serverName,
    ];
  };

  it("each real hello cut into two records, and into two TCP chunks, at every offset reads the same", () => {
    let splits = 0;
    for (const hs of hellos) {
      const whole = fields(new ClientHelloReader().push(record(hs)));
      const raw = record(hs);
      for (let at = 1; at < hs.length; at++) {
        const two = Buffer.concat([record(hs.subarray(0, at)), record(hs.subarray(at))]);
        const r = new ClientHelloReader().push(two);
        assert.deepEqual(fields(r), whole, `record split at ${at}`);
        assert.equal(r.kind === "done" && r.hello.records, 2);
        const reader = new ClientHelloReader();
        assert.equal(reader.push(raw.subarray(0, at)).kind, "more", `TCP split at ${at}`);
        assert.deepEqual(fields(reader.push(raw.subarray(at))), whole, `TCP split at ${at}`);
        splits += 2;
      }
    }
    assert.ok(splits > 10_000, `${splits} splits`);
  });
});

describe("fuzz harness", () => {
  const broken: FuzzTarget = {
    name: "broken",
    description: "a target whose code under test throws an untyped error on some inputs",
    defaultCases: 1000,
    maxCaseMs: 1000,
    maxHeapGrowth: 64 * 1024 * 1024,
    async setup() {
      return {
        generate: (rng: Rng) => rng.bytes(rng.range(1, 8)),
        check(input) {
          if ((input as Uint8Array)[0] === 0xff) throw new TypeError("boom");
        },
        close: async () => {},
      };
    },
  };

  it("reports the failing case with its index and input hex, and --case replays it", async () => {
    const lines: string[] = [];
    const report = await runTarget(broken, { cases: 5000, seed: 7, log: (l) => lines.push(l) });
    assert.equal(report.failures.length, 1, "stops at the first failure");
    const f = report.failures[0]!;
    assert.match(f.error, /TypeError: boom/);
    assert.match(f.inputHex, /^ff/);
    assert.match(lines.join("\n"), new RegExp(`--seed 7 --case ${f.index}\\b`));
    // Same seed and index, same input: the replay fails the same way.
    const replay = await runTarget(broken, { cases: 0, seed: 7, only: f.index, log: () => {} });
    assert.equal(replay.failures[0]?.inputHex, f.inputHex);
    assert.deepEqual(new Rng(7, f.index).bytes(4), new Rng(7, f.index).bytes(4));
  });

  it("flags a case slower than the target's bound as a hang", async () => {
    const slow: FuzzTarget = {
      ...broken,
      maxCaseMs: 20,
      async setup() {
        return {
          generate: (rng: Rng) => rng.bytes(1),
          check: () => new Promise<void>((resolve) => setTimeout(resolve, 60)),
          close: async () => {},
        };
      },
    };
    const report = await runTarget(slow, { cases: 3, seed: 1, log: () => {} });
    assert.equal(report.failures.length, 1);
    assert.match(report.failures[0]!.error, /a hang/);
  });
});
