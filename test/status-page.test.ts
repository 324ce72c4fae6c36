// `serve`'s live status page: in Debian's chromium (puppeteer-core, headless) the counters move
// without a reload while Node makes resumed TLS 1.2 and 1.3 handshakes, the chart is drawn, the
// console stays clean (the CSP lets the page's own script and style run) and a 375 px phone
// viewport does not scroll sideways. Without chromium the browser test skips, unless
// SESSCACHE_REQUIRE_CHROMIUM=1 (CI). Plus, without a browser: the handshake counters in /stats,
// escaping and the CSP nonce, and /stats summed over `--workers 2`.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import tls from "node:tls";
import { type ServeHandle, startServe } from "../src/cli/serve.js";
import { handleStatusRequest, type TreeStats } from "../src/cli/status-page.js";
import { treeTotals } from "../src/cli/status-tree.js";
import { startServeChild } from "./support/cli-run.js";

// Page-side code (page.evaluate) runs in chromium; the project's types are Node's only.
// biome-ignore lint/suspicious/noExplicitAny: the browser's globals, untyped here
declare const document: any;
// biome-ignore lint/suspicious/noExplicitAny: the browser's globals, untyped here
declare const window: any;

const CHROMIUM = process.env.SESSCACHE_CHROMIUM ?? "/usr/bin/chromium";
const tmp = mkdtempSync(join(tmpdir(), "sesscache-status-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
let dirs = 0;

interface Handshake {
  reused: boolean;
  protocol: string | null;
  session: Buffer | undefined;
}

/**
 * One TLS connection to the server offering `session`; resolves once the connection has a session
 * to resume next time (TLS 1.3: the ticket arrived after the handshake).
 */
function handshake(
  port: number,
  ca: string,
  version: "TLSv1.2" | "TLSv1.3",
  session?: Buffer,
): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    let next: Buffer | undefined;
    let done = false;
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca,
      minVersion: version,
      maxVersion: version,
      session,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${version} handshake timed out`));
    }, 10_000);
    // Ended, not destroyed: in an abbreviated TLS 1.2 handshake the client's Finished comes last,
    // and the server counts the handshake only once it reads it. 'close' comes after the server
    // saw it and closed its side.
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      if (err) {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
        return;
      }
      const result = { reused: socket.isSessionReused(), protocol: socket.getProtocol(), session: next };
      socket.once("close", () => {
        clearTimeout(timer);
        resolve(result);
      });
      socket.end();
    };
    socket.on("session", (s: Buffer) => {
      next = s;
      if (socket.getProtocol() === "TLSv1.3") finish();
    });
    socket.once("secureConnect", () => {
      if (version === "TLSv1.2") {
        next = socket.getSession();
        finish();
      }
    });
    socket.on("error", (err) => finish(err));
  });
}

/** A full handshake then `resumptions` resumed ones, each offering the session of the one before. */
async function resumeChain(port: number, ca: string, version: "TLSv1.2" | "TLSv1.3", resumptions: number) {
  let h = await handshake(port, ca, version);
  assert.equal(h.reused, false);
  for (let i = 0; i < resumptions; i++) {
    assert.ok(h.session, `${version}: a session to offer`);
    h = await handshake(port, ca, version, h.session);
    assert.equal(h.reused, true, `${version} resumption ${i + 1}`);
    assert.equal(h.protocol, version);
  }
}

function getJson(port: number, ca: string, path = "/stats"): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    request({ host: "127.0.0.1", port, path, ca, servername: "localhost", agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => {
        try {
          resolve(JSON.parse(body) as Record<string, unknown>);
        } catch (err) {
          reject(err);
        }
      });
    })
      .on("error", reject)
      .end();
  });
}

async function serveHere(
  t: {
    after(fn: () => Promise<void>): void;
  },
  store?: string,
): Promise<{ s: ServeHandle; ca: string }> {
  const s = await startServe({ listen: "127.0.0.1:0", stateDir: join(tmp, `state-${++dirs}`), store });
  t.after(() => s.close());
  return { s, ca: readFileSync(s.certFile, "utf8") };
}

describe("status page in chromium", { timeout: 60_000 }, () => {
  const missing = existsSync(CHROMIUM) ? undefined : `no chromium at ${CHROMIUM}`;
  const required = process.env.SESSCACHE_REQUIRE_CHROMIUM === "1";
  test("counters move without a reload, the chart is drawn, no console errors, no sideways scroll at 375 px", {
    skip: missing && !required ? `${missing} (apt-get install chromium)` : false,
  }, async (t) => {
    assert.equal(missing, undefined, "SESSCACHE_REQUIRE_CHROMIUM=1 but chromium is missing");
    const { default: puppeteer } = await import("puppeteer-core");
    // With a store, so its cards show too.
    const { s, ca } = await serveHere(t, "memory");
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      acceptInsecureCerts: true,
      args: [
        "--no-sandbox",
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--ignore-certificate-errors",
        "--no-first-run",
        "--no-default-browser-check",
        `--user-data-dir=${join(tmp, `chromium-${++dirs}`)}`,
      ],
    });
    t.after(() => browser.close());
    const page = await browser.newPage();
    await page.setViewport({ width: 375, height: 740, isMobile: true, hasTouch: true, deviceScaleFactor: 1 });
    const errors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console: ${m.text()}`);
    });
    page.on("pageerror", (err) => errors.push(`pageerror: ${(err as Error).message ?? String(err)}`));
    page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
    let navigations = 0;
    page.on("framenavigated", (f) => {
      if (f === page.mainFrame()) navigations++;
    });

    const res = await page.goto(`${s.url}/`, { waitUntil: "load" });
    assert.equal(res?.status(), 200);
    const policy = res?.headers()["content-security-policy"] ?? "";
    assert.match(policy, /script-src 'nonce-[A-Za-z0-9+/=]{20,}'/);
    assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval/);
    // A mark that a reload would wipe.
    await page.evaluate(() => {
      window.loadedOnce = true;
    });
    // The script ran and polls: "live · time".
    // On a timeout, say what the page showed.
    const waitFor = async (what: string, fn: string | (() => boolean | undefined)) => {
      try {
        await page.waitForFunction(fn, { timeout: 10_000 });
      } catch (err) {
        // biome-ignore lint/performance/useDomNodeTextContent: the rendered text, without the script's source
        const shown = await page.evaluate(() => document.body.innerText).catch(() => "?");
        throw new Error(`${what}: ${(err as Error).message}\nerrors: ${errors.join("; ")}\npage:\n${shown}`);
      }
    };
    await waitFor("the script runs and polls", () =>
      document.getElementById("live")?.textContent?.startsWith("live"),
    );

    const resumedOnPage = (version: string) =>
      page.evaluate((v) => {
        for (const row of document.querySelectorAll("#hs tr")) {
          const cells = row.cells;
          if (cells[0]?.textContent === v) return Number(cells[2]?.textContent?.replace(/,/g, ""));
        }
        return -1;
      }, version);
    assert.equal(await resumedOnPage("TLSv1.2"), 0);
    assert.equal(await resumedOnPage("TLSv1.3"), 0);

    await resumeChain(s.port, ca, "TLSv1.2", 3);
    await resumeChain(s.port, ca, "TLSv1.3", 3);
    assert.deepEqual(s.handshakes()["TLSv1.2"], { full: 1, resumed: 3 });
    assert.equal(s.handshakes()["TLSv1.3"]?.resumed, 3);

    // Page-side predicates as text: tsx would wrap named inner functions in a helper the page lacks.
    await waitFor(
      "the resumptions show",
      `(() => {
        const resumed = {};
        for (const row of document.querySelectorAll("#hs tr")) resumed[row.cells[0].textContent] = row.cells[2].textContent;
        return resumed["TLSv1.2"] === "3" && resumed["TLSv1.3"] === "3";
      })()`,
    );
    // The chart: a resumption-rate line with length, and handshake bars.
    await waitFor("the chart is drawn", () => {
      const line = document.getElementById("rate-line");
      return line !== null && (line.getAttribute("d") ?? "") !== "" && line.getTotalLength() > 0;
    });
    const chart = await page.evaluate(() => ({
      line: document.getElementById("rate-line")?.getAttribute("d") ?? "",
      bars: document.getElementById("volume")?.getAttribute("d") ?? "",
      resumed: document.getElementById("c-resumed")?.textContent ?? "",
      hit: document.getElementById("c-hit")?.textContent ?? "",
      hits: document.querySelector('[data-k="hits"]')?.textContent ?? "",
      store: document.getElementById("c-store")?.textContent ?? "",
      storeShown: !document.getElementById("card-store")?.hidden,
    }));
    assert.match(chart.line, /^M[\d.]+ [\d.]+/);
    assert.match(chart.bars, /^M[\d.]+ 115v-/);
    // 6 of the 8 handshakes (plus the page's own) resumed in the last minute.
    assert.match(chart.resumed, /^\d+\.\d %$/);
    assert.ok(Number.parseFloat(chart.resumed) > 50, chart.resumed);
    assert.match(chart.hit, /^\d+\.\d %$/);
    assert.ok(Number(chart.hits) >= 6, `hits on the page: ${chart.hits}`);
    assert.equal(chart.storeShown, true);
    assert.equal(chart.store, "up");

    assert.equal(await page.evaluate(() => window.loadedOnce), true);
    assert.equal(navigations, 1, "one navigation: the figures moved without a reload");

    // Phone width, with every section open: nothing wider than the viewport.
    await page.evaluate(() => {
      for (const d of document.querySelectorAll("details")) d.open = true;
    });
    const widths = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      client: document.documentElement.clientWidth,
      inner: window.innerWidth,
    }));
    assert.equal(widths.inner, 375);
    assert.ok(widths.scroll <= widths.client, `no horizontal overflow: ${JSON.stringify(widths)}`);
    assert.deepEqual(errors, []);
  });
});

describe("status page without a browser", { timeout: 60_000 }, () => {
  test("/stats counts handshakes by version, full and resumed", async (t) => {
    const { s, ca } = await serveHere(t);
    await resumeChain(s.port, ca, "TLSv1.2", 2);
    await resumeChain(s.port, ca, "TLSv1.3", 1);
    const st = await getJson(s.port, ca);
    const hs = st.handshakes as Record<string, { full: number; resumed: number }>;
    assert.deepEqual(hs["TLSv1.2"], { full: 1, resumed: 2 });
    // The /stats request's own connection is a full TLS 1.3 handshake, counted before it is answered.
    assert.deepEqual(hs["TLSv1.3"], { full: 2, resumed: 1 });
    assert.equal(st.scope, "process");
    assert.deepEqual(s.handshakes(), hs);
    // The fields the page reads beside them.
    for (const k of ["hits", "misses", "number", "cacheSize", "uptime"])
      assert.equal(typeof st[k], "number", k);
  });

  test("everything on the page is escaped; the CSP nonce matches the page's only script and style", async () => {
    const evil = `</script><script>alert(1)</script><img src=x onerror=alert(2)>&"'`;
    const info = () => ({
      hits: 1,
      misses: 2,
      number: 3,
      modeName: evil,
      cacheSize: evil,
      timeout: 5,
      uptime: 1,
      handshakes: { [evil]: { full: 1, resumed: 2 } },
      store: { kind: evil, target: evil, up: 1 },
    });
    const { body, headers } = await callHandler("/", info);
    assert.equal(body.includes("<script>alert"), false);
    assert.equal(body.includes("<img"), false);
    assert.match(body, /&#60;\/script&#62;&#60;script&#62;alert\(1\)/);
    // The initial figures for the script: "<" escaped inside JSON, so the element cannot end early.
    assert.match(body, /\\u003c\/script>\\u003cscript>alert\(1\)/);
    const nonce = /script-src 'nonce-([^']+)'/.exec(String(headers["content-security-policy"]))?.[1];
    assert.ok(nonce && nonce.length >= 20);
    assert.deepEqual(
      [...body.matchAll(/<script nonce="([^"]+)">/g)].map((m) => m[1]),
      [nonce],
    );
    assert.deepEqual(
      [...body.matchAll(/<style nonce="([^"]+)">/g)].map((m) => m[1]),
      [nonce],
    );
    assert.equal((body.match(/<script/g) ?? []).length, 2, "the nonce'd script and the JSON data block");
    assert.match(body, /<script id="initial" type="application\/json">/);
    assert.match(body, /<meta name="viewport" content="width=device-width, initial-scale=1">/);
    // A second response gets another nonce.
    const again = await callHandler("/", info);
    assert.notEqual(/nonce-([^']+)'/.exec(String(again.headers["content-security-policy"]))?.[1], nonce);
  });

  test("a worker's /stats carries the tree's totals and says which worker answered", async () => {
    const tree: TreeStats = treeTotals(
      [
        {
          cache: stats({ hits: 2, misses: 1, number: 4 }),
          handshakes: { "TLSv1.3": { full: 1, resumed: 2 }, "TLSv1.2": { full: 0, resumed: 1 } },
        },
        {
          cache: stats({ hits: 3, misses: 0, number: 1 }),
          handshakes: { "TLSv1.3": { full: 2, resumed: 5 }, "TLSv1.2": { full: 1, resumed: 0 } },
        },
      ],
      2,
    );
    assert.equal(tree.workers, 2);
    assert.equal(tree.hits, 5);
    assert.equal(tree.number, 5);
    assert.deepEqual(tree.handshakes, {
      "TLSv1.3": { full: 3, resumed: 7 },
      "TLSv1.2": { full: 1, resumed: 1 },
    });
    const info = () => ({ hits: 2, worker: 7 });
    const stats1 = JSON.parse((await callHandler("/stats", info, async () => tree)).body);
    assert.equal(stats1.scope, "tree");
    assert.equal(stats1.worker, 7);
    assert.equal(stats1.hits, 2, "this worker's own figures stay at the top level");
    assert.equal(stats1.tree.hits, 5);
    const page = (await callHandler("/", info, async () => tree)).body;
    assert.match(page, /All 2 workers; this answer from worker 7\./);
    const alone = JSON.parse((await callHandler("/stats", info, async () => undefined)).body);
    assert.equal(alone.scope, "worker");
    assert.equal(alone.tree, undefined);
    assert.match(
      (await callHandler("/", info, async () => undefined)).body,
      /Worker 7 only: .*this worker&#39;s/,
    );
  });

  test("serve --workers 2: /stats sums both workers' handshakes", async (t) => {
    const stateDir = join(tmp, `state-${++dirs}`);
    const child = await startServeChild(stateDir, ["--workers", "2"]);
    t.after(() => child.stop());
    const ca = readFileSync(join(stateDir, "tls", "cert.pem"), "utf8");
    // Round-robin spreads connections over the workers; eight full handshakes reach both.
    for (let i = 0; i < 8; i++) await handshake(child.port, ca, "TLSv1.2");
    const workers = new Set<number>();
    let st: Record<string, unknown> = {};
    for (let i = 0; i < 20 && workers.size < 2; i++) {
      st = await getJson(child.port, ca);
      assert.equal(st.scope, "tree", JSON.stringify(st));
      workers.add(st.worker as number);
      const tree = st.tree as TreeStats;
      assert.equal(tree.workers, 2);
      assert.equal(tree.expected, 2);
      assert.equal(tree.handshakes["TLSv1.2"]?.full, 8);
      // The /stats requests are TLS 1.3 handshakes the tree counts (an answer may be 250 ms old).
      assert.ok((tree.handshakes["TLSv1.3"]?.full ?? 0) >= 1);
      const own = (st.handshakes as TreeStats["handshakes"])["TLSv1.2"]!.full;
      assert.ok(own < 8, `worker ${st.worker} alone made ${own} of the 8`);
    }
    assert.equal(workers.size, 2, "both workers answered, each with the tree's totals");
  });
});

function stats(part: Record<string, number>) {
  const zero = {
    number: 0,
    connect: 0,
    connectGood: 0,
    connectRenegotiate: 0,
    accept: 0,
    acceptGood: 0,
    acceptRenegotiate: 0,
    hits: 0,
    cbHits: 0,
    misses: 0,
    timeouts: 0,
    cacheFull: 0,
    rejected: 0,
  };
  return { ...zero, ...part };
}

/** handleStatusRequest with a stand-in request and response (no socket). */
function callHandler(
  path: string,
  info: () => Record<string, unknown>,
  tree?: () => Promise<TreeStats | undefined>,
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve) => {
    const headers: Record<string, unknown> = {};
    const req = {
      url: path,
      method: "GET",
      socket: {
        isSessionReused: () => false,
        getProtocol: () => "TLSv1.3",
        getCipher: () => ({ name: "<c>" }),
      },
    } as unknown as IncomingMessage;
    let status = 0;
    const res = {
      setHeader: (k: string, v: unknown) => {
        headers[k.toLowerCase()] = v;
      },
      writeHead: (s: number, h: Record<string, unknown>) => {
        status = s;
        for (const [k, v] of Object.entries(h)) headers[k.toLowerCase()] = v;
      },
      end: (body: string) => resolve({ status, headers, body }),
    } as unknown as ServerResponse;
    handleStatusRequest(req, res, info, tree ? { tree } : {});
  });
}
