// Target `client-hello`: the ClientHello reader as a function. Each case is a first flight (a real
// hello, mutated or not, or a generated one, cut into records); it is fed whole and again in random
// chunks. Checks: no "internal" result (the reader's last-resort guard caught an exception), the
// same answer however the bytes are chunked, a final answer kept once given, and sane fields.
import {
  ClientHelloReader,
  type ClientHelloResult,
  MAX_BUFFERED_BYTES,
} from "../../src/server/client-hello.js";
import { loadCorpus } from "../corpus.js";
import { expect, type FuzzRunner, type FuzzTarget } from "../harness.js";
import type { Rng } from "../prng.js";
import { handshakeOf, helloInput } from "../tls-gen.js";

function feed(input: Uint8Array, cuts: number[]): { result: ClientHelloResult; received: number } {
  const reader = new ClientHelloReader();
  let result: ClientHelloResult = { kind: "more" };
  let prev = 0;
  for (const c of [...cuts, input.length]) {
    if (c < prev) continue;
    result = reader.push(input.subarray(prev, c));
    prev = c;
    if (result.kind !== "more") {
      // Once final, it stays final whatever else comes.
      const again = reader.push(input.subarray(c));
      expect(again === result, "a final answer changed after more bytes");
      break;
    }
  }
  return { result, received: reader.received };
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;

function describeResult(r: ClientHelloResult): string {
  if (r.kind !== "done") return r.kind === "unknown" ? `unknown(${r.reason})` : "more";
  const h = r.hello;
  return `done(v=${h.legacyVersion} id=${h.legacyId.length} psk=${h.pskIdentities.length} tls13=${h.offersTls13} ticket=${h.hasSessionTicket}/${h.sessionTicketBytes} sni=${JSON.stringify(h.serverName)} records=${h.records} length=${h.length})`;
}

function sameResult(a: ClientHelloResult, b: ClientHelloResult): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === "unknown" && b.kind === "unknown") return a.reason === b.reason;
  if (a.kind === "done" && b.kind === "done") {
    const x = a.hello;
    const y = b.hello;
    return (
      x.legacyVersion === y.legacyVersion &&
      same(x.legacyId, y.legacyId) &&
      x.pskIdentities.length === y.pskIdentities.length &&
      x.pskIdentities.every((id, i) => same(id, y.pskIdentities[i]!)) &&
      x.offersTls13 === y.offersTls13 &&
      x.hasSessionTicket === y.hasSessionTicket &&
      x.sessionTicketBytes === y.sessionTicketBytes &&
      x.serverName === y.serverName &&
      x.records === y.records &&
      x.length === y.length
    );
  }
  return true;
}

export function checkHelloResult(r: ClientHelloResult, inputLength: number): void {
  expect(
    !(r.kind === "unknown" && r.reason === "internal"),
    "the reader's guard caught an exception (internal)",
  );
  if (r.kind !== "done") return;
  const h = r.hello;
  expect(h.legacyId.length <= 32, `legacy_session_id of ${h.legacyId.length} bytes accepted`);
  expect(
    h.length >= 5 + 4 + 35 && h.length <= Math.min(inputLength, MAX_BUFFERED_BYTES),
    `length ${h.length}`,
  );
  // Each record costs at least 6 raw bytes (header and one byte of fragment).
  expect(h.records >= 1 && h.records * 6 <= h.length, `records ${h.records} in ${h.length} bytes`);
  expect(
    h.serverName === undefined || (h.serverName.length >= 1 && h.serverName.length <= 255),
    "server name length",
  );
  expect(
    h.pskIdentities.every((id) => id.length >= 1),
    "empty PSK identity",
  );
  expect(!h.hasSessionTicket || h.sessionTicketBytes >= 0, "ticket bytes");
}

function randomCuts(rng: Rng, length: number): number[] {
  const r = rng.int(10);
  if (r === 0) {
    // Byte by byte, as far as the reader can buffer (past that its answer is final).
    return Array.from({ length: Math.min(length - 1, MAX_BUFFERED_BYTES + 1) }, (_, i) => i + 1);
  }
  const n = r < 5 ? rng.range(1, 3) : rng.range(1, 40);
  const cuts = Array.from({ length: n }, () => rng.int(length + 1));
  return cuts.sort((a, b) => a - b);
}

export const clientHelloTarget: FuzzTarget = {
  name: "client-hello",
  description: "the ClientHello reader (src/server/client-hello.ts) as a function",
  defaultCases: 100_000,
  maxCaseMs: 100,
  maxHeapGrowth: 64 * 1024 * 1024,
  async setup(): Promise<FuzzRunner> {
    const corpus = loadCorpus("client-hello");
    const messages = corpus.map(handshakeOf);
    return {
      generate: (rng) => helloInput(rng, corpus, messages),
      check(input, rng) {
        const bytes = input as Uint8Array;
        const whole = feed(bytes, []);
        checkHelloResult(whole.result, bytes.length);
        const cuts = randomCuts(rng, bytes.length);
        const split = feed(bytes, cuts);
        checkHelloResult(split.result, bytes.length);
        expect(
          sameResult(whole.result, split.result),
          `whole: ${describeResult(whole.result)}, in ${cuts.length + 1} chunks: ${describeResult(split.result)}`,
        );
      },
      close: async () => {},
    };
  },
};
