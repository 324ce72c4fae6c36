// Sequential HTTPS requests on fresh connections (keep-alive off) to a local server: Node's own
// https.Agent (one session per host, TLS 1.3 tickets reused) vs sesscache's createHttpsAgent
// (tickets single-use), with session reuse off as the full-handshake baseline. TLS 1.2 and 1.3.
// Against a Node 20 server, which issues no new ticket on a resumed TLS 1.3 connection, single-use
// tickets mean a full handshake every third connection; nginx issues one per resumption, so it is
// measured too when installed.
//
// With redis-server installed, a fourth agent keeps its sessions in a RedisStore
// (sharedClientSessions): what sharing with other processes costs a sequential client.
//
//   npm run bench -- client [--requests N] [--no-nginx] [--no-redis]
import https from "node:https";
import type { AddressInfo } from "node:net";
import type tls from "node:tls";
import { ClientSessionCache, createHttpsAgent } from "../src/client/index.js";
import { RedisStore, sharedClientSessions } from "../src/stores/index.js";
import { testPki } from "../test/support/certs.js";
import { type Nginx, nginxSkipReason, startNginx } from "../test/support/nginx.js";
import { type RedisServer, redisSkipReason, startRedis } from "../test/support/redis.js";
import type { BenchResult, BenchRow } from "./run.js";

type Version = "TLSv1.2" | "TLSv1.3";
const ROUNDS = 5;

function get(agent: https.Agent, url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { agent }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          body += d;
        });
        res.on("end", () => resolve(body));
        res.on("error", reject);
      })
      .on("error", reject);
  });
}

interface Tally {
  requests: number;
  resumed: number;
  seconds: number;
  /** CPU time of this process (client and server both), less sensitive than wall time to load. */
  cpuMicros: number;
}

async function batch(agent: https.Agent, url: string, n: number, t: Tally): Promise<void> {
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) if ((await get(agent, url)).startsWith("r")) t.resumed++;
  const c = process.cpuUsage(c0);
  t.seconds += Number(process.hrtime.bigint() - t0) / 1e9;
  t.cpuMicros += c.user + c.system;
  t.requests += n;
}

export default async function bench(args: string[]): Promise<BenchResult> {
  const at = args.indexOf("--requests");
  const n = at === -1 ? 1000 : Number(args[at + 1]);
  const pki = testPki();
  const server = https.createServer({ key: pki.key, cert: pki.cert }, (req, res) => {
    const s = req.socket as tls.TLSSocket;
    res.end(`${s.isSessionReused() ? "r" : "."} ${s.getProtocol()}\n`);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const targets: { name: string; port: number }[] = [
    { name: "node https", port: (server.address() as AddressInfo).port },
  ];
  let nginx: Nginx | undefined;
  if (!args.includes("--no-nginx") && nginxSkipReason() === undefined) {
    nginx = await startNginx({
      certFile: pki.certFile,
      keyFile: pki.keyFile,
      sharedCache: true,
      tickets: false,
    });
    targets.push({ name: "nginx (shared cache)", port: nginx.port });
  }

  let redis: RedisServer | undefined;
  let store: RedisStore | undefined;
  if (!args.includes("--no-redis") && redisSkipReason() === undefined) {
    redis = await startRedis();
    store = new RedisStore({ url: redis.url, keys: [Buffer.alloc(32, 7)] });
    await store.ready();
  }

  const rows: BenchRow[] = [];
  try {
    for (const target of targets) {
      for (const v of ["TLSv1.2", "TLSv1.3"] as Version[]) {
        const url = `https://localhost:${target.port}/`;
        const common = { ca: pki.caCert, maxVersion: v, keepAlive: false };
        const agents: [string, https.Agent][] = [
          ["no reuse (full handshakes)", new https.Agent({ ...common, maxCachedSessions: 0 })],
          ["node https.Agent", new https.Agent(common)],
          ["sesscache createHttpsAgent", createHttpsAgent({ ...common, cache: new ClientSessionCache() })],
        ];
        if (store) {
          const cache = new ClientSessionCache({ shared: sharedClientSessions(store) });
          agents.push(["sesscache + RedisStore (shared)", createHttpsAgent({ ...common, cache })]);
        }
        // Interleaved rounds, so load from elsewhere on the machine spreads over all three.
        const tallies = agents.map(() => ({ requests: 0, resumed: 0, seconds: 0, cpuMicros: 0 }));
        for (const [, agent] of agents) for (let i = 0; i < 20; i++) await get(agent, url); // warm-up
        for (let round = 0; round < ROUNDS; round++) {
          for (const [i, [, agent]] of agents.entries())
            await batch(agent, url, Math.ceil(n / ROUNDS), tallies[i]!);
        }
        for (const [i, [name, agent]] of agents.entries()) {
          agent.destroy();
          const t = tallies[i]!;
          rows.push({
            server: target.name,
            tls: v,
            agent: name,
            requests: t.requests,
            "req/s": Math.round(t.requests / t.seconds),
            "cpu ms/req": t.cpuMicros / 1000 / t.requests,
            resumed: `${((t.resumed / t.requests) * 100).toFixed(1)}%`,
          });
        }
      }
    }
  } finally {
    server.close();
    await nginx?.stop();
    await store?.close();
    await redis?.stop();
  }
  return {
    title: `Sequential HTTPS GETs on fresh connections (keep-alive off), ${n} per row, one process`,
    rows,
    notes: [
      "Node's https.Agent offers its newest TLS 1.3 ticket again and again (RFC 8446 C.4: clients SHOULD NOT);",
      "sesscache offers each ticket once. A Node 20 server issues no ticket on a resumed TLS 1.3 connection,",
      "so with single use every third connection is a full handshake there; nginx issues one per resumption.",
      "cpu ms/req is this process's CPU (the Node client, and the Node server in the node https rows).",
      "The shared row keeps TLS 1.3 tickets only in Redis (GETDEL per connection) and TLS 1.2 sessions locally too.",
    ],
  };
}
