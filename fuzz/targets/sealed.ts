// Target `sealed`: the sealed-value opener (src/stores/sealing.ts + checked.ts: decrypt, parse,
// match). Real sessions (fuzz/corpus/session) are sealed under their store key, then damaged,
// opened under another key, sealed under another sealing key, or replaced by hostile values.
// Checks: a refusal is a StoreValueError and nothing else; a value is accepted only when it is
// exactly what was sealed for that key (sealing), or, in plaintext mode, when the session it holds
// is the one the key names; fetchStoredSession turns every refusal into a miss (undefined).
// Sealing draws a random nonce: a case replays the same damage, not the same ciphertext bytes.
import type { StoreKey } from "../../src/engine/store.js";
import { parseSession, type Session } from "../../src/session/index.js";
import { fetchStoredSession, openStoredSession, serverStoreKey } from "../../src/stores/checked.js";
import { StoreValueError } from "../../src/stores/errors.js";
import { MAX_STORED_VALUE_BYTES, Sealer, storeKeyBytes } from "../../src/stores/sealing.js";
import type { SealingSessionStore } from "../../src/stores/types.js";
import { loadCorpus } from "../corpus.js";
import { expect, type FuzzInput, type FuzzRunner, type FuzzTarget } from "../harness.js";
import { concat, mutate } from "../mutate.js";
import type { Rng } from "../prng.js";

const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;

// Throwaway keys for this fuzzer only (never used anywhere else).
const KEY_A = new Uint8Array(32).fill(0xa5);
const KEY_B = new Uint8Array(32).fill(0x5b);

interface SealedCase {
  bytes: Uint8Array;
  note: string;
  openKey: StoreKey;
  opener: "sealed" | "other" | "both" | "plaintext";
  /** The key the value was made for, and the session in it. */
  sealedKey: StoreKey;
  session: Session;
  /** The untouched value: the only one a sealing opener may accept. */
  original: Uint8Array;
  viaFetch: boolean;
}

interface Entry {
  session: Session;
  server: StoreKey;
  client: StoreKey;
}

function otherKey(k: StoreKey, rng: Rng): StoreKey {
  for (;;) {
    const r = rng.int(6);
    let o: StoreKey;
    if (r === 0) o = { ...k, namespace: k.namespace === "server" ? "client" : "server" };
    else if (r === 1) o = { ...k, protocolVersion: rng.pick([0x0303, 0x0304, 0x0302, 0xfefd, 0]) };
    else if (r === 2) {
      const id = k.id.slice();
      id[rng.int(id.length)]! ^= 1 << rng.int(8);
      o = { ...k, id };
    } else if (r === 3)
      o = {
        ...k,
        id: rng.chance(0.5) ? k.id.subarray(0, Math.max(1, k.id.length - 1)) : rng.bytes(rng.range(1, 32)),
      };
    else if (r === 4) {
      const context =
        k.context.length > 0 && rng.chance(0.5)
          ? k.context.subarray(1)
          : concat(k.context, Uint8Array.from([rng.int(256)])).subarray(0, 32);
      o = { ...k, context };
    } else o = { ...k, context: rng.bytes(rng.int(33)) };
    if (!same(storeKeyBytes(o), storeKeyBytes(k))) return o;
  }
}

/** The session `key` names: what plaintext mode may accept for it. */
function matches(key: StoreKey, s: Session): boolean {
  if (key.namespace === "client")
    return s.id.length > 0 && (s.protocolVersion === 0x0304) === (key.protocolVersion === 0x0304);
  return (
    same(s.id, key.id) && s.protocolVersion === key.protocolVersion && same(s.sessionIdContext, key.context)
  );
}

export const sealedTarget: FuzzTarget = {
  name: "sealed",
  description: "the sealed-value opener (src/stores/sealing.ts, checked.ts: decrypt + parse + match)",
  defaultCases: 100_000,
  maxCaseMs: 100,
  maxHeapGrowth: 64 * 1024 * 1024,
  async setup(): Promise<FuzzRunner> {
    const sealers = {
      sealed: new Sealer({ keys: [KEY_A] }),
      other: new Sealer({ keys: [KEY_B] }),
      both: new Sealer({ keys: [KEY_B, KEY_A] }),
      plaintext: new Sealer({ plaintext: true }),
    };
    const entries: Entry[] = [];
    for (const der of loadCorpus("session")) {
      const session = parseSession(der);
      if (session.id.length === 0) continue;
      entries.push({
        session,
        server: serverStoreKey(session),
        client: {
          namespace: "client",
          protocolVersion: session.protocolVersion,
          context: new Uint8Array(32).fill(7),
          id: Uint8Array.from([1]),
        },
      });
    }
    if (entries.length === 0) throw new Error("no session corpus: run fuzz/capture-corpus.ts");
    const pool = entries.map((e) => e.session.der);

    return {
      generate(rng): FuzzInput {
        const e = rng.pick(entries);
        const sealedKey = rng.chance(0.7) ? e.server : e.client;
        const by = rng.pick(["sealed", "sealed", "other", "plaintext"] as const);
        const original = sealers[by].seal(sealedKey, e.session.der);
        let bytes = original;
        let openKey = sealedKey;
        let opener: SealedCase["opener"] = by === "plaintext" ? "plaintext" : "sealed";
        const notes = [`sealed by ${by} under ${sealedKey.namespace} key`];
        const r = rng.int(10);
        if (r < 5) {
          bytes = mutate(original, rng, pool);
          notes.push("value damaged");
        } else if (r < 7) {
          openKey = otherKey(sealedKey, rng);
          notes.push("opened under another key");
        } else if (r < 8) {
          opener = rng.pick(["sealed", "other", "both", "plaintext"] as const);
          notes.push(`opened by ${opener}`);
        } else if (r < 9) {
          // Hostile values with our markers, and values past the size bound.
          const marker = rng.pick([0xa1, 0x50, 0x51, 0x30, 0x00]);
          const body = rng.chance(0.5) ? rng.bytes(rng.smallLen(200)) : rng.pick(pool);
          bytes = rng.chance(0.1)
            ? new Uint8Array(MAX_STORED_VALUE_BYTES + rng.range(1, 100)).fill(marker)
            : concat(Uint8Array.from([marker]), body);
          notes.push(`forged value, marker 0x${bytes[0]?.toString(16)}`);
        } else {
          bytes = mutate(original, rng, pool);
          openKey = otherKey(sealedKey, rng);
          notes.push("value damaged and opened under another key");
        }
        const c: SealedCase = {
          bytes,
          note: notes.join(", "),
          openKey,
          opener,
          sealedKey,
          session: e.session,
          original,
          viaFetch: rng.chance(0.1),
        };
        return c;
      },
      async check(input) {
        const c = input as unknown as SealedCase;
        const sealer = sealers[c.opener];
        let got: Session | undefined;
        if (c.viaFetch) {
          const store = {
            sealer,
            get: async () => c.bytes,
            take: async () => c.bytes,
          } as unknown as SealingSessionStore;
          got = await fetchStoredSession(store, c.openKey, {
            onRejected: (err) => expect(err instanceof StoreValueError, "onRejected got another error"),
          });
        } else {
          try {
            got = openStoredSession(c.openKey, c.bytes, sealer);
          } catch (err) {
            if (!(err instanceof StoreValueError)) throw err;
            expect(
              /^[ -~]+$/.test(err.message) && err.message.length < 200,
              `unprintable or long message: ${err.message}`,
            );
            return;
          }
        }
        if (got === undefined) return;
        // Accepted: it must be the session the key names, and (sealing) exactly the value sealed for it.
        expect(matches(c.openKey, got), "accepted a session that the key does not name");
        if (!sealer.plaintext) {
          expect(same(c.bytes, c.original), "a sealing opener accepted a value other than the one sealed");
          expect(
            same(storeKeyBytes(c.openKey), storeKeyBytes(c.sealedKey)),
            "a sealed value opened under another key",
          );
          expect(same(got.der, c.session.der), "opened to a different session");
        } else if (c.openKey.namespace === "client") {
          const k = storeKeyBytes(c.openKey);
          expect(
            c.bytes[0] === 0x51 && same(c.bytes.subarray(2, 2 + k.length), k),
            "a client value not bound to its key accepted",
          );
        }
      },
      close: async () => {},
    };
  },
};
