// `sesscache serve --metrics`: the Prometheus endpoint moves with real TLS 1.2 and 1.3 handshakes,
// one endpoint covers --workers, bad addresses are usage errors; and registerSessionCacheMetrics on
// a fresh prom-client Registry.
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { get as httpGet } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { Registry } from "prom-client";
import {
  type AttachedSessionCacheStats,
  externalCache,
  MemoryStore,
  registerSessionCacheMetrics,
  SessionCache,
} from "../src/index.js";
import { cli } from "./support/cli-run.js";
import { type ServeProcess, startServeProcess } from "./support/serve-process.js";

const tmp = mkdtempSync(join(tmpdir(), "sesscache-metrics-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const TIMEOUT = { timeout: 60_000 };

const running = new Set<ServeProcess>();
after(() => {
  for (const c of running) c.child.kill("SIGKILL");
});

let dirs = 0;

interface Running {
  port: number;
  metricsUrl: string;
  ca: string;
  stop(): Promise<number | null>;
}

/** Starts `serve --metrics 127.0.0.1:0` and waits for its listening and metrics lines. */
async function serve(args: string[] = []): Promise<Running> {
  const stateDir = join(tmp, `state-${++dirs}`);
  const child = await startServeProcess({ stateDir, args: ["--metrics", "127.0.0.1:0", ...args] });
  running.add(child);
  void child.exit.then(() => running.delete(child));
  const [first, second] = (await child.waitForOutput(/^(.*)\n(.*)\n/))!.slice(1);
  assert.match(first!, /^sesscache serve: listening on https:\/\/127\.0\.0\.1:\d+ /, "startup line");
  const mm = /^sesscache serve: metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics)$/.exec(second!);
  assert.ok(mm, `metrics line: ${second}`);
  return {
    port: child.port,
    metricsUrl: mm[1]!,
    ca: readFileSync(join(stateDir, "tls", "cert.pem"), "utf8"),
    stop: child.stop,
  };
}

function fetchText(url: string): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    httpGet(url, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, type: res.headers["content-type"], body }));
    }).on("error", reject);
  });
}

/** The samples of a /metrics text, by name (with labels, as written). */
async function scrape(url: string): Promise<Map<string, number>> {
  const r = await fetchText(url);
  assert.equal(r.status, 200);
  assert.match(r.type ?? "", /^text\/plain; version=0\.0\.4/);
  const samples = new Map<string, number>();
  for (const line of r.body.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/**
 * One HTTPS request (GET /stats) over a fresh TLS connection offering `session`: whether it
 * resumed, the last session the server handed over, and the worker that answered.
 */
function handshake(
  port: number,
  ca: string,
  version: "1.2" | "1.3",
  session?: Buffer,
): Promise<{ reused: boolean; session: Buffer | undefined; worker: number | undefined }> {
  const v = version === "1.3" ? "TLSv1.3" : "TLSv1.2";
  return new Promise((resolve, reject) => {
    let last: Buffer | undefined;
    let reused = false;
    let body = "";
    const sock = tlsConnect({
      port,
      host: "127.0.0.1",
      servername: "localhost",
      ca,
      session,
      minVersion: v,
      maxVersion: v,
    });
    sock.on("session", (s: Buffer) => (last = s));
    sock.once("error", reject);
    sock.once("secureConnect", () => {
      reused = sock.isSessionReused();
      sock.write("GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    });
    sock.setEncoding("utf8").on("data", (d: string) => (body += d));
    sock.once("close", () => {
      const json = body.slice(body.indexOf("\r\n\r\n") + 4);
      let worker: number | undefined;
      try {
        worker = (JSON.parse(json) as { worker?: number }).worker;
      } catch {
        // The body is only read for --workers.
      }
      resolve({ reused, session: last, worker });
    });
  });
}

describe("serve --metrics", TIMEOUT, () => {
  test("OpenSSL's counters move with full and resumed TLS 1.2 and 1.3 handshakes; other paths 404", async () => {
    const s = await serve();
    try {
      const before = await scrape(s.metricsUrl);
      for (const name of [
        "sesscache_hits_total",
        "sesscache_cb_hits_total",
        "sesscache_misses_total",
        "sesscache_timeouts_total",
        "sesscache_cache_full_total",
        "sesscache_accept_total",
        "sesscache_accept_good_total",
        "sesscache_connect_total",
        "sesscache_rejected_total",
        "sesscache_sessions",
        "sesscache_adapter_lookups_total",
        "sesscache_adapter_tickets_consumed_total",
        "sesscache_adapter_pending_hellos",
      ]) {
        assert.equal(before.get(name), 0, name);
      }
      // No store: no store metrics.
      assert.equal(before.has("sesscache_store_up"), false);

      let handshakes = 0;
      let resumed = 0;
      for (const version of ["1.2", "1.3"] as const) {
        let session = (await handshake(s.port, s.ca, version)).session;
        handshakes++;
        assert.ok(session, `TLS ${version}: a session`);
        for (let i = 0; i < 3; i++) {
          const r = await handshake(s.port, s.ca, version, session);
          handshakes++;
          assert.ok(r.reused, `TLS ${version}: resumed #${i + 1}`);
          resumed++;
          // TLS 1.2 reuses its session; a TLS 1.3 ticket resumes once, the next one comes along.
          if (version === "1.3") session = r.session;
        }
      }
      const m = await scrape(s.metricsUrl);
      const delta = (name: string) => m.get(name)! - before.get(name)!;
      assert.equal(delta("sesscache_hits_total"), resumed);
      assert.equal(delta("sesscache_accept_total"), handshakes);
      assert.equal(delta("sesscache_accept_good_total"), handshakes);
      assert.equal(delta("sesscache_adapter_connections_total"), handshakes);
      // The TLS 1.3 tickets were consumed on resumption (R22).
      assert.equal(delta("sesscache_adapter_tickets_consumed_total"), 3);
      assert.ok(m.get("sesscache_sessions")! >= 1);

      const other = await fetchText(s.metricsUrl.replace(/\/metrics$/, "/"));
      assert.equal(other.status, 404);
      assert.equal((await fetchText(s.metricsUrl.replace(/\/metrics$/, "/stats"))).status, 404);
    } finally {
      assert.equal(await s.stop(), 0);
    }
  });

  test("--store memory: store_up, store counters and the look-up latency histogram", async () => {
    const s = await serve(["--store", "memory", "--store-plaintext"]);
    try {
      const first = await handshake(s.port, s.ca, "1.2");
      assert.ok((await handshake(s.port, s.ca, "1.2", first.session)).reused);
      const m = await scrape(s.metricsUrl);
      assert.equal(m.get("sesscache_store_up"), 1);
      assert.ok(m.get("sesscache_store_sets_total")! >= 1);
      assert.ok(m.get("sesscache_external_stored_total")! >= 1);
      const lookups = m.get("sesscache_external_lookups_total")!;
      assert.equal(m.get("sesscache_store_lookup_seconds_count"), lookups);
      assert.equal(m.get('sesscache_store_lookup_seconds_bucket{le="+Inf"}'), lookups);
      assert.ok(m.has('sesscache_store_lookup_seconds_bucket{le="0.001"}'));
    } finally {
      assert.equal(await s.stop(), 0);
    }
  });

  test("--workers 2: one endpoint whose totals cover both workers", async () => {
    const s = await serve(["--workers", "2"]);
    try {
      const workers = new Set<number>();
      let handshakes = 0;
      let resumed = 0;
      // Until both workers have answered (connections spread over them), and at least 8.
      while (handshakes < 8 || workers.size < 2) {
        assert.ok(handshakes < 200, "both workers answered");
        const full = await handshake(s.port, s.ca, "1.2");
        handshakes++;
        if (full.worker !== undefined) workers.add(full.worker);
        const again = await handshake(s.port, s.ca, "1.2", full.session);
        handshakes++;
        if (again.reused) resumed++;
        if (again.worker !== undefined) workers.add(again.worker);
      }
      const m = await scrape(s.metricsUrl);
      assert.equal(m.get("sesscache_accept_total"), handshakes);
      assert.equal(m.get("sesscache_accept_good_total"), handshakes);
      assert.equal(m.get("sesscache_hits_total"), resumed);
      assert.ok(resumed > 0);
      assert.equal(m.get("sesscache_adapter_connections_total"), handshakes);
      // --workers shares sessions through the primary (--store cluster): its health is there too.
      assert.equal(m.get("sesscache_store_up"), 1);
    } finally {
      assert.equal(await s.stop(), 0);
    }
  });

  test("bad or busy --metrics address: one line, exit 2", async () => {
    const busy = createServer();
    busy.listen(0, "127.0.0.1");
    await once(busy, "listening");
    const busyPort = (busy.address() as { port: number }).port;
    try {
      for (const [value, pattern, extra] of [
        ["nope", /--metrics/, []],
        ["127.0.0.1:99999", /--metrics/, []],
        [`127.0.0.1:${busyPort}`, /cannot listen on 127\.0\.0\.1:\d+ for --metrics/, []],
        [`127.0.0.1:${busyPort}`, /cannot listen on 127\.0\.0\.1:\d+ for --metrics/, ["--workers", "2"]],
      ] as const) {
        const { code, stderr } = await cli([
          "serve",
          "--listen",
          "127.0.0.1:0",
          "--state-dir",
          join(tmp, "bad"),
          "--metrics",
          value,
          ...extra,
        ]);
        assert.equal(code, 2, `${value}: ${stderr}`);
        const lines = stderr
          .trim()
          .split("\n")
          .filter((l) => !l.includes("made a self-signed certificate"));
        assert.equal(lines.length, 1, stderr);
        assert.match(lines[0]!, pattern);
      }
    } finally {
      busy.close();
    }
  });
});

describe("registerSessionCacheMetrics", () => {
  test("on a fresh prom-client Registry: lazy counters, gauges, store health and latency", async () => {
    const registry = new Registry();
    const cache = new SessionCache();
    const store = new MemoryStore();
    const external = externalCache(store);
    let connections = 0;
    const adapter = {
      stats: () => ({ connections, pendingHellos: 2 }) as unknown as AttachedSessionCacheStats,
    };
    registerSessionCacheMetrics(registry, { cache, adapter, store, external });
    const text0 = await registry.metrics();
    assert.match(text0, /^# TYPE sesscache_hits_total counter\nsesscache_hits_total 0$/m);
    assert.match(text0, /^# TYPE sesscache_sessions gauge\nsesscache_sessions 0$/m);
    assert.match(text0, /^sesscache_store_up 1$/m);
    assert.match(text0, /^sesscache_store_lookup_seconds_count 0$/m);

    connections = 5;
    await external.getSession(new Uint8Array(32).fill(1), 0x0303, new Uint8Array(0));
    const json = await registry.getMetricsAsJSON();
    const value = (name: string) => json.find((m) => m.name === name)?.values[0]?.value;
    assert.equal(value("sesscache_adapter_connections_total"), 5);
    assert.equal(value("sesscache_adapter_pending_hellos"), 2);
    assert.equal(value("sesscache_external_lookups_total"), 1);
    const text1 = await registry.metrics();
    assert.match(text1, /^sesscache_store_lookup_seconds_count 1$/m);
    assert.match(text1, /^sesscache_store_lookup_seconds_bucket\{le="\+Inf"\} 1$/m);
    assert.match(text1, /^# TYPE sesscache_store_lookup_seconds histogram$/m);
    cache.close();
    await store.close();
  });
});
