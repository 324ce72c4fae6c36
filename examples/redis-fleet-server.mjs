// One server of a fleet sharing TLS sessions through Redis: a session made on one server resumes
// on every other (TLS 1.2 session ids, TLS 1.3 tickets, each ticket resumes once in the fleet).
//   export SESSCACHE_STORE_KEYS=$(openssl rand -base64 32)   # the same key on every server
//   NAME=a PORT=8443 node examples/redis-fleet-server.mjs & NAME=b PORT=8444 node examples/redis-fleet-server.mjs
// Env: REDIS_URL (default redis://127.0.0.1:6379), NAME, PORT, HOST, TLS_CERT / TLS_KEY as the others.
import { readFileSync } from "node:fs";
import https from "node:https";
import {
  attachSessionCache,
  externalCache,
  RedisStore,
  SessionCache,
  statefulServerOptions,
} from "sesscache";

const name = process.env.NAME ?? "a";
const port = Number(process.argv[2] ?? process.env.PORT ?? 8443);
const host = process.env.HOST ?? "127.0.0.1";
const cert = readFileSync(process.env.TLS_CERT ?? "cert.pem");
const key = readFileSync(process.env.TLS_KEY ?? "key.pem");
const keys = (process.env.SESSCACHE_STORE_KEYS ?? "").split(",").filter(Boolean);
if (keys.length === 0)
  throw new Error("set SESSCACHE_STORE_KEYS (openssl rand -base64 32), the same on every server");

const store = new RedisStore({ url: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", keys });
const ext = externalCache(store);
// The session-id context defaults to a hash of the certificate: the same on every server of the fleet.
const cache = new SessionCache({ timeout: 3600, ...ext });

const server = https.createServer({ key, cert, ...statefulServerOptions({ cert }) }, (req, res) => {
  const body = { server: name, protocol: req.socket.getProtocol(), resumed: req.socket.isSessionReused() };
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify(body));
});
const handle = attachSessionCache(server, cache, { claimTicket: ext.claim });

server.listen(port, host, () => console.log(`listening on https://${host}:${port} (server ${name})`));

const stop = () => {
  handle.detach();
  server.closeAllConnections();
  server.close(async () => {
    cache.close();
    await store.close(); // the Redis connection would keep the process alive
    console.log(`stopped; store stats: ${JSON.stringify(ext.stats())}`);
  });
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
