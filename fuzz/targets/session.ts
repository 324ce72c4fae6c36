// Target `session`: the session decoder (src/session). DER and PEM inputs from real sessions
// (fuzz/corpus/session), damaged byte by byte and structure by structure. Only a Session or a
// SessionDecodeError may come out; every accessor of a decoded session works; withTimes on it
// round-trips (or refuses with its documented errors).
import { parseSession, type Session, SessionDecodeError, withTimes } from "../../src/session/index.js";
import { type SslSession, sessionMasterKey } from "../../src/session/parse.js";
import { loadCorpus } from "../corpus.js";
import { derMutate } from "../der-gen.js";
import { expect, type FuzzInput, type FuzzRunner, type FuzzTarget } from "../harness.js";
import { mutate } from "../mutate.js";
import type { Rng } from "../prng.js";

const same = (a: Uint8Array | undefined, b: Uint8Array | undefined) =>
  a === b || (a !== undefined && b !== undefined && Buffer.compare(a, b) === 0);

/** The decode, typed error or session; anything else thrown propagates (a failure). */
export function decodeChecked(input: Uint8Array | string): Session | SessionDecodeError {
  try {
    const s = parseSession(input, { now: 1_700_000_000 });
    void [s.id, s.protocol, s.cipherName, s.expiresAt, s.sessionIdContext, s.peerCertificate, s.verifyResult];
    void [s.hostname, s.ticket, s.ticketLifetimeHint, s.ticketAgeAdd, s.alpn, s.group, s.maxEarlyData];
    void [s.extendedMasterSecret, s.cipherId, String(s), JSON.stringify(s), s.isExpiredAt(0)];
    expect(s.id.length <= 32, `session id of ${s.id.length} bytes accepted`);
    expect(s.sessionIdContext.length <= 32, "session-id context over 32 bytes accepted");
    expect(sessionMasterKey(s as SslSession).length <= 48, "master key over 48 bytes accepted");
    expect(Number.isSafeInteger(s.time) && Number.isSafeInteger(s.expiresAt), "time not a safe integer");
    return s;
  } catch (e) {
    if (!(e instanceof SessionDecodeError)) throw e;
    expect(/^[ -~]+$/.test(e.message) && e.message.length < 160, `unprintable or long message: ${e.message}`);
    return e;
  }
}

function checkWithTimes(s: Session, rng: Rng): void {
  const time = rng.pick([0, 1, 1_700_000_000, 2 ** 32, Number.MAX_SAFE_INTEGER, rng.int(2 ** 31)]);
  const timeout = rng.pick([0, 1, 300, 7200, 2 ** 32 - 1, Number.MAX_SAFE_INTEGER]);
  let t: Session;
  try {
    t = withTimes(s, { time, timeout });
  } catch (e) {
    if (e instanceof SessionDecodeError && e.reason === "too-large") return;
    throw e;
  }
  const u = decodeChecked(t.der);
  expect(!(u instanceof SessionDecodeError), `withTimes wrote DER that does not decode: ${String(u)}`);
  if (time !== 0) expect(u.time === time, `withTimes time ${time} read back as ${u.time}`);
  if (timeout !== 0) expect(u.timeout === timeout, `withTimes timeout ${timeout} read back as ${u.timeout}`);
  expect(
    same(u.id, s.id) && u.protocolVersion === s.protocolVersion && u.cipherId === s.cipherId,
    "withTimes changed the session",
  );
  expect(
    same(sessionMasterKey(u as SslSession), sessionMasterKey(s as SslSession)),
    "withTimes changed the master key",
  );
  expect(
    same(u.sessionIdContext, s.sessionIdContext) && same(u.ticket, s.ticket),
    "withTimes changed a field",
  );
}

const toPem = (der: Uint8Array, rng: Rng): string => {
  const b64 = Buffer.from(der).toString("base64");
  const body = rng.chance(0.8) ? (b64.match(/.{1,64}/g) ?? []).join("\n") : b64;
  return `-----BEGIN SSL SESSION PARAMETERS-----\n${body}\n-----END SSL SESSION PARAMETERS-----\n`;
};

export const sessionTarget: FuzzTarget = {
  name: "session",
  description: "the session decoder (src/session: parseSession, withTimes)",
  defaultCases: 100_000,
  maxCaseMs: 100,
  maxHeapGrowth: 64 * 1024 * 1024,
  async setup(): Promise<FuzzRunner> {
    const corpus = loadCorpus("session");
    if (corpus.length === 0) throw new Error("no session corpus: run fuzz/capture-corpus.ts");
    return {
      generate(rng): FuzzInput {
        const base = rng.pick(corpus);
        const r = rng.int(100);
        let der: Uint8Array;
        if (r < 5) der = base.slice();
        else if (r < 50) der = mutate(base, rng, corpus);
        else der = derMutate(base, rng, corpus);
        if (rng.chance(0.05)) {
          let pem = toPem(der, rng);
          if (rng.chance(0.5)) pem = new TextDecoder().decode(mutate(new TextEncoder().encode(pem), rng));
          return { text: [pem] };
        }
        return der;
      },
      check(input, rng) {
        const s = decodeChecked(input instanceof Uint8Array ? input : (input as { text: string[] }).text[0]!);
        if (!(s instanceof SessionDecodeError)) checkWithTimes(s, rng);
      },
      close: async () => {},
    };
  },
};
