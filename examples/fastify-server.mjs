// A fastify server whose TLS sessions resume (TLS 1.2 session ids, TLS 1.3 stateful tickets).
//   node examples/fastify-server.mjs [port]
// Env: PORT (default 8443), HOST (127.0.0.1), TLS_CERT / TLS_KEY (PEM files, default cert.pem / key.pem).
import { readFileSync } from "node:fs";
import Fastify from "fastify";
import { attachSessionCache, SessionCache, statefulServerOptions } from "sesscache";

const port = Number(process.argv[2] ?? process.env.PORT ?? 8443);
const host = process.env.HOST ?? "127.0.0.1";
const cert = readFileSync(process.env.TLS_CERT ?? "cert.pem");
const key = readFileSync(process.env.TLS_KEY ?? "key.pem");

const app = Fastify({ https: { key, cert, ...statefulServerOptions({ cert }) } });
const cache = new SessionCache({ timeout: 3600, cacheSize: 10_000 });
// fastify creates its https.Server at once: attach before listening.
const handle = attachSessionCache(app.server, cache);

app.get("/", async (request) => {
  const socket = request.raw.socket;
  return { example: "fastify", protocol: socket.getProtocol(), resumed: socket.isSessionReused() };
});

await app.listen({ port, host });
console.log(`listening on https://${host}:${port}`);

const stop = async () => {
  handle.detach();
  await app.close();
  console.log(`stopped; cache stats: ${JSON.stringify(cache.stats())}`);
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
