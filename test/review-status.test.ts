// Security review of the status page and /stats (status-page.ts, serve.ts, serve-store.ts): what a
// visitor of the public TLS port can read. Real servers on 127.0.0.1.
import assert from "node:assert/strict";
import { get } from "node:https";
import { after, describe, test } from "node:test";
import { startServe } from "../src/cli/serve.js";
import { testPki } from "./support/certs.js";

const pki = testPki();
const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function fetchText(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: "127.0.0.1", port, path, servername: "localhost", ca: pki.caCert }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve(body));
      res.on("error", reject);
    }).on("error", reject);
  });
}

describe("review: /stats and the page show no store password", { timeout: 60_000 }, () => {
  test("a password with an unencoded '/' (base64 makes them) is refused, never shown as the target", async () => {
    const secret = "S3cr3tPw+x";
    // The URL parser ends the authority at the '/': host "default", port 123, the rest of the
    // password and the real host in the path, all of which /stats showed as the store's target.
    const store = `redis://default:123/${secret}@127.0.0.1:6379`;
    let handle: Awaited<ReturnType<typeof startServe>> | undefined;
    try {
      handle = await startServe({
        listen: "127.0.0.1:0",
        cert: pki.certFile,
        key: pki.keyFile,
        store,
        storeKeys: [Buffer.alloc(32, 7).toString("base64")],
        storeReadyTimeout: 200,
      });
    } catch (err) {
      assert.match((err as Error).message, /invalid --store/);
      assert.ok(!(err as Error).message.includes(secret), "the error echoes the password");
      return;
    }
    const h = handle;
    cleanups.push(() => h.close());
    for (const path of ["/stats", "/"]) {
      const body = await fetchText(h.port, path);
      assert.ok(!body.includes(secret), `${path} shows the password`);
    }
  });
});

describe("review: a redis-cluster:// password holding ','", () => {
  test("stays whole: every seed carries it, and the target shown holds none of it", async () => {
    const { describeTarget, parseStoreConfig } = await import("../src/cli/serve-store.js");
    const config = parseStoreConfig({
      store: "redis-cluster://default:xq,zzpw@127.0.0.1:7000,127.0.0.1:7001",
      storePlaintext: true,
    });
    assert.equal(config?.kind, "redis-cluster");
    const seeds = config?.seeds ?? [];
    // Split on every "," this made three seeds: "redis://default:xq" was refused or shown.
    assert.equal(seeds.length, 2);
    for (const s of seeds) {
      const u = new URL(s);
      assert.equal(u.username, "default");
      assert.equal(decodeURIComponent(u.password), "xq,zzpw");
    }
    const target = describeTarget(config!) ?? "";
    assert.equal(target, "redis://127.0.0.1:7000,redis://127.0.0.1:7001");
    assert.ok(!target.includes("xq") && !target.includes("zzpw") && !target.includes("default"));
  });
});
