// `npm run profile -- <variant|all> [--kind K] [--seconds S] [--rounds R] [--frequency HZ]`: where a server's
// CPU goes per handshake. The server runs in its own process with --perf-basic-prof (so perf can
// name JIT-compiled JavaScript); `perf record -g` samples it while `openssl s_time` drives it, and
// each sample is charged to the innermost frame of its stack that belongs to a known layer:
//   openssl       OpenSSL's code (libssl/libcrypto are linked into the node binary)
//   node tls      Node's TLS machinery: node::crypto::TLSWrap and friends, _tls_wrap.js, net, streams
//   peek          the adapter's ClientHello read and hand-off (src/server/client-hello.ts, hand-off.ts)
//   callbacks     the adapter answering newSession/resumeSession (src/server/*.ts but the peek)
//   engine        the cache and DER decoding (src/engine/, src/session/)
//   sealing       AES-GCM seal/open around the store (src/stores/sealing.ts)
//   store client  the store and its client (src/stores/ but sealing, ioredis, the RESP parser)
//   gc            V8's garbage collector
//   kernel        system calls and TCP on loopback
//   other         V8's runtime and JIT, libc, anything not named above
// Innermost-first is what makes the split honest: when Node runs the whole handshake inside
// `endParser()` because a resumeSession listener exists, the OpenSSL frames under it are still
// OpenSSL's, and JavaScript the adapter runs from inside OpenSSL's callback is still the adapter's.
// µs per handshake = the server's CPU time over the window (getrusage in the server process) times
// the layer's share of samples, divided by the handshakes completed in the window.
// A JavaScript --cpu-prof would mislead here (see issue 13): it shows OpenSSL's work as the self
// time of whatever JavaScript frame called into C++.
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SessionCache } from "../src/engine/index.js";
import { attachSessionCache } from "../src/server/index.js";
import { externalCache, generateSealKey, RedisStore } from "../src/stores/index.js";
import { type RedisServer, startRedis } from "../test/support/redis.js";
import { sTime, type TlsVersion } from "../test/support/tls-peers.js";
import { countOption } from "./args.js";
import {
  VARIANTS as HANDSHAKE_VARIANTS,
  type Variant as HandshakeVariant,
  startServer,
} from "./handshake.js";
import { median } from "./measure.js";
import type { BenchResult, BenchRow } from "./run.js";
import {
  type BenchServer,
  CHILD_ENV,
  type ChildReport,
  pinClientSide,
  ServerChild,
  serveInChild,
} from "./server-child.js";
import { startTlsBenchServer } from "./tls-bench-server.js";

type Variant = HandshakeVariant | "sesscache-redis";
type Kind = "tls12-resumed" | "tls13-resumed" | "tls12-full" | "tls13-full";

const LAYERS = [
  "openssl",
  "node tls",
  "peek",
  "callbacks",
  "engine",
  "sealing",
  "store client",
  "gc",
  "kernel",
  "other",
] as const;
type Layer = (typeof LAYERS)[number];

/** The table `all` makes: each kind with sesscache and the baselines it is measured against. */
const MATRIX: { kind: Kind; variants: Variant[] }[] = [
  { kind: "tls12-resumed", variants: ["sesscache", "sesscache-tls12-only", "map"] },
  { kind: "tls13-resumed", variants: ["sesscache", "node-tickets", "sesscache-redis"] },
  { kind: "tls13-full", variants: ["sesscache", "map", "bare"] },
  { kind: "tls12-full", variants: ["sesscache", "map", "bare"] },
];

// ---- the server child ------------------------------------------------------------------------------

/** sesscache with a sealed Redis store behind it, as `serve --store redis://` wires it. */
async function startRedisServer(redisUrl: string): Promise<BenchServer> {
  const store = new RedisStore({ url: redisUrl, keys: [generateSealKey()] });
  await store.ready(5000);
  let cache: SessionCache | undefined;
  const ext = externalCache(store, { takeTickets: true, onRejected: () => cache?.recordRejected() });
  cache = new SessionCache({ ...ext });
  return startTlsBenchServer({
    stateful: true,
    setup: (server) =>
      attachSessionCache(server, cache, { sessionIdContext: "bench", claimTicket: ext.claim }),
    afterClose: () => store.close(),
  });
}

// This file is also the profiled server's child process (bench/handshake.ts's child protocol).
if (process.argv[1] === fileURLToPath(import.meta.url) && process.env[CHILD_ENV]) {
  const variant = process.env[CHILD_ENV] as Variant;
  await serveInChild(() =>
    variant === "sesscache-redis"
      ? startRedisServer(process.env.SESSCACHE_PROFILE_REDIS ?? "")
      : startServer(variant),
  );
}

// ---- attributing samples ---------------------------------------------------------------------------

// OpenSSL's symbols, as linked into the node binary (its public API and its internal families).
const OPENSSL =
  /^(?:SSL_|ssl_|ssl3_|tls1?3?_|dtls|statem_|ossl_|OSSL_|OPENSSL_|CRYPTO_|EVP_|evp_|BN_|bn_|BIO_|bio_|EC_|ec_|ecp_|ECDSA|ecdsa|ECDH|ecdh|X509|x509|ASN1|asn1|d2i_|i2d_|RSA|rsa_|DH_|dh_|HMAC|hmac|HKDF|kdf_|SHA\d|sha\d|sha256|sha512|aes|AES|aesni|gcm|GCM|ChaCha|chacha|Poly1305|poly1305|x25519|X25519|x448|curve25519|fe51?_|ge_|RAND_|rand_|drbg|ERR_|err_|OBJ_|PEM_|pem_|PKCS|lh_|OPENSSL_sk|sk_|md_|pkey_|cipher_|mac_|digest_|keccak|KECCAK|SHA3|ossl|engine_|ENGINE_|CONF_|conf_|UI_|async_|ASYNC_|PROV_|prov_|der_|DER_|WPACKET|PACKET|SRP|ct_|CT_|OCSP|ocsp|tls_construct|tls_process|ssl_)/;

function jsLayer(sym: string): Layer | undefined {
  if (sym.includes("/src/server/client-hello.") || sym.includes("/src/server/hand-off.")) return "peek";
  if (sym.includes("/src/server/")) return "callbacks";
  if (sym.includes("/src/engine/") || sym.includes("/src/session/")) return "engine";
  if (sym.includes("/src/stores/sealing.")) return "sealing";
  if (
    sym.includes("/src/stores/") ||
    sym.includes("/node_modules/ioredis/") ||
    sym.includes("redis-parser")
  ) {
    return "store client";
  }
  if (
    / node:(?:_tls|tls|net|stream|events|internal\/(?:tls|stream|net|streams|js_stream|timers))/.test(sym)
  ) {
    return "node tls";
  }
  if (sym.includes(" node:")) return "node tls";
  return undefined;
}

/** The layer one frame belongs to, or undefined when the frame says nothing (walk outward). */
function frameLayer(sym: string, dso: string): Layer | undefined {
  if (dso.includes("kernel.kallsyms")) return "kernel";
  if (sym.startsWith("JS:") || sym.startsWith("LazyCompile:") || sym.startsWith("Function:")) {
    return jsLayer(sym);
  }
  if (OPENSSL.test(sym)) return "openssl";
  if (
    sym.startsWith("node::crypto::") ||
    sym.startsWith("node::StreamBase") ||
    sym.startsWith("node::LibuvStream")
  ) {
    return "node tls";
  }
  if (sym.startsWith("uv_") || sym.startsWith("uv__")) return "node tls";
  if (
    /v8::internal::(?:Heap|Scavenger|MarkCompact|MinorMarkCompact|Sweeper|ConcurrentMarking|GC|IncrementalMarking|MemoryAllocator|PagedSpace|Evacuat)/.test(
      sym,
    )
  ) {
    return "gc";
  }
  return undefined;
}

/** Samples per layer from `perf script` text: each sample's stack, innermost frame first. */
export function attribute(perfScript: string): { counts: Record<Layer, number>; top: Map<string, number> } {
  const counts = Object.fromEntries(LAYERS.map((l) => [l, 0])) as Record<Layer, number>;
  // "layer  frame" -> samples: the frame that decided each sample, for the lines behind a figure.
  const top = new Map<string, number>();
  for (const block of perfScript.split("\n\n")) {
    const lines = block.split("\n").filter((l) => l.startsWith("\t") || l.startsWith(" "));
    if (lines.length === 0) continue;
    let layer: Layer | undefined;
    let frame = "";
    for (const line of lines) {
      // "\t    7f00deadbeef symbol+0x12 (dso)"
      const m = /^\s*[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)\s*$/.exec(line);
      if (!m) continue;
      frame ||= m[1];
      layer = frameLayer(m[1], m[2]);
      if (layer) {
        frame = m[1];
        break;
      }
    }
    counts[layer ?? "other"]++;
    const key = `${layer ?? "other"}  ${frame.replace(/^(JS|LazyCompile|Function):[*~^]?/, "").replace(/file:\/\/\/\S*?\/(src|node_modules)\//, "$1/")}`;
    top.set(key, (top.get(key) ?? 0) + 1);
  }
  return { counts, top };
}

// ---- driving one variant ---------------------------------------------------------------------------

interface Profile {
  variant: Variant;
  kind: Kind;
  handshakes: number;
  cpuMicros: number;
  samples: Record<Layer, number>;
  /** The frames that decided the most samples, "layer  frame" with samples. */
  top: [string, number][];
}

async function profileOne(
  variant: Variant,
  kind: Kind,
  seconds: number,
  frequency: number,
  redisUrl: string | undefined,
): Promise<Profile> {
  const version: TlsVersion = kind.startsWith("tls12") ? "1.2" : "1.3";
  const reuse = kind.endsWith("resumed");
  const server = await ServerChild.start(variant, {
    module: fileURLToPath(import.meta.url),
    env: { SESSCACHE_PROFILE_REDIS: redisUrl ?? "" },
    execArgv: ["--perf-basic-prof"],
  });
  const dir = mkdtempSync(join(tmpdir(), "sesscache-profile-"));
  try {
    // Warm-up: JIT, first allocations, the store's connection.
    await sTime({ port: server.port, version, reuse, seconds: 1, www: "/" });
    const data = join(dir, "perf.data");
    const perf = spawn(
      "perf",
      ["record", "-q", "-F", String(frequency), "-g", "-p", String(server.child.pid), "-o", data],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let perfErr = "";
    perf.stderr?.on("data", (b: Buffer) => {
      perfErr += b.toString();
    });
    await server.ask({ cmd: "start" });
    const r = await sTime({ port: server.port, version, reuse, seconds, www: "/" });
    const usage = await server.ask<ChildReport>({ cmd: "stop" });
    const perfDone = once(perf, "exit");
    perf.kill("SIGINT");
    await perfDone;
    if (r.connections === 0) throw new Error(`s_time made no connection:\n${r.stdout}\n${r.stderr}`);
    // Counted by the server: s_time -reuse makes one full handshake first.
    if (reuse ? usage.resumed < usage.handshakes - 1 : usage.resumed > 0) {
      throw new Error(`${variant} ${kind}: ${usage.resumed} of ${usage.handshakes} handshakes resumed`);
    }
    const script = spawnSync("perf", ["script", "-i", data, "-F", "ip,sym,dso"], {
      maxBuffer: 1 << 30,
      encoding: "utf8",
    });
    if (script.status !== 0) throw new Error(`perf script failed: ${script.stderr}\n${perfErr}`);
    const { counts, top } = attribute(script.stdout);
    const ranked = [...top].sort((a, b) => b[1] - a[1]).slice(0, 40);
    return { variant, kind, ...usage, samples: counts, top: ranked };
  } finally {
    await server.stop();
    if (!process.env.SESSCACHE_PROFILE_KEEP) rmSync(dir, { recursive: true, force: true });
    else process.stderr.write(`kept ${dir}\n`);
  }
}

function perHandshake(p: Profile): Record<Layer, number> & { total: number } {
  const n = Object.values(p.samples).reduce((a, b) => a + b, 0) || 1;
  const total = p.cpuMicros / Math.max(1, p.handshakes);
  const out = { total } as Record<Layer, number> & { total: number };
  for (const l of LAYERS) out[l] = (total * p.samples[l]) / n;
  return out;
}

const VARIANTS: Variant[] = [...HANDSHAKE_VARIANTS, "sesscache-redis"];
const KINDS: Kind[] = ["tls12-resumed", "tls13-resumed", "tls12-full", "tls13-full"];

export default async function profile(args: string[]): Promise<BenchResult> {
  const target = args[0];
  const usage =
    `usage: npm run profile -- <${VARIANTS.join("|")}|all> [--kind ${KINDS.join("|")}] ` +
    "[--seconds S] [--rounds R] [--frequency HZ]";
  if (!target || !(target === "all" || VARIANTS.includes(target as Variant))) throw new Error(usage);
  if (spawnSync("perf", ["--version"], { stdio: "ignore" }).status !== 0) {
    throw new Error("the profile needs Linux perf (apt-get install linux-perf)");
  }
  const seconds = countOption(args, "--seconds", 5);
  pinClientSide(); // s_time and perf on one core, the server alone on the other
  const frequency = countOption(args, "--frequency", 1999);
  const ki = args.indexOf("--kind");
  const kind = ki >= 0 ? (args[ki + 1] as Kind) : undefined;
  if (kind !== undefined && !KINDS.includes(kind)) throw new Error(usage);
  const runs: { kind: Kind; variant: Variant }[] =
    target === "all"
      ? MATRIX.flatMap((m) => m.variants.map((variant) => ({ kind: m.kind, variant })))
      : (kind ? [kind] : KINDS).map((k) => ({ kind: k, variant: target as Variant }));
  let redis: RedisServer | undefined;
  if (runs.some((r) => r.variant === "sesscache-redis")) redis = await startRedis();
  const rounds = countOption(args, "--rounds", 1);
  const profiles: Profile[] = [];
  try {
    // Rounds go through every variant in turn, so a burst of load elsewhere weighs on all alike.
    for (let round = 1; round <= rounds; round++) {
      for (const r of round % 2 ? runs : [...runs].reverse()) {
        process.stderr.write(
          `round ${round}/${rounds}: profiling ${r.variant} ${r.kind} for ${seconds} s...\n`,
        );
        profiles.push(await profileOne(r.variant, r.kind, seconds, frequency, redis?.url));
      }
    }
  } finally {
    await redis?.stop();
  }
  // Per variant and kind: the median over rounds of each figure.
  const rows: BenchRow[] = runs.map((r) => {
    const mine = profiles.filter((p) => p.variant === r.variant && p.kind === r.kind).map(perHandshake);
    const row: BenchRow = {
      kind: r.kind,
      variant: r.variant,
      "µs/handshake": Number(median(mine.map((u) => u.total)).toFixed(0)),
    };
    if (rounds > 1) {
      const totals = mine.map((u) => u.total).sort((a, b) => a - b);
      row.spread = `${totals[0].toFixed(0)}-${totals[totals.length - 1].toFixed(0)}`;
    }
    for (const l of LAYERS) row[l] = Number(median(mine.map((u) => u[l])).toFixed(0));
    return row;
  });
  return {
    title: "Server CPU per handshake by layer, µs (perf samples, innermost known frame)",
    rows,
    notes: [
      `median of ${rounds} round(s), alternating order; ${seconds} s per variant after a 1 s warm-up, openssl s_time -www / (one connection at a time), ` +
        `perf record -F ${frequency} -g on the server process only`,
      "µs/handshake = server CPU time (getrusage) / handshakes; each layer's share is its share of samples",
      "layers: see the header of bench/profile.ts; 'other' is V8's runtime and JIT, libc and unnamed frames",
    ],
    extra: { profiles },
  };
}
