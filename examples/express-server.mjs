// An express 5 app on https.createServer whose TLS sessions resume (TLS 1.2 and 1.3).
//   node examples/express-server.mjs [port]
// Env: PORT (default 8443), HOST (127.0.0.1), TLS_CERT / TLS_KEY (PEM files, default cert.pem / key.pem).
import { readFileSync } from "node:fs";
import https from "node:https";
import express from "express";
import { attachSessionCache, SessionCache, statefulServerOptions } from "sesscache";

const port = Number(process.argv[2] ?? process.env.PORT ?? 8443);
const host = process.env.HOST ?? "127.0.0.1";
const cert = readFileSync(process.env.TLS_CERT ?? "cert.pem");
const key = readFileSync(process.env.TLS_KEY ?? "key.pem");

const app = express();
app.get("/", (req, res) => {
  res.json({ example: "express", protocol: req.socket.getProtocol(), resumed: req.socket.isSessionReused() });
});

const cache = new SessionCache({ timeout: 3600, cacheSize: 10_000 });
const server = https.createServer({ key, cert, ...statefulServerOptions({ cert }) }, app);
const handle = attachSessionCache(server, cache);

server.listen(port, host, () => console.log(`listening on https://${host}:${port}`));

const stop = () => {
  handle.detach();
  server.close(() => console.log(`stopped; cache stats: ${JSON.stringify(cache.stats())}`));
  server.closeAllConnections();
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
