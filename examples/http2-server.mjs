// An HTTP/2 server (http2.createSecureServer) whose TLS sessions resume (TLS 1.2 and 1.3).
//   node examples/http2-server.mjs [port]
// Env: PORT (default 8443), HOST (127.0.0.1), TLS_CERT / TLS_KEY (PEM files, default cert.pem / key.pem).
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { attachSessionCache, SessionCache, statefulServerOptions } from "sesscache";

const port = Number(process.argv[2] ?? process.env.PORT ?? 8443);
const host = process.env.HOST ?? "127.0.0.1";
const cert = readFileSync(process.env.TLS_CERT ?? "cert.pem");
const key = readFileSync(process.env.TLS_KEY ?? "key.pem");

const server = http2.createSecureServer({ key, cert, ...statefulServerOptions({ cert }) });
const cache = new SessionCache({ timeout: 3600, cacheSize: 10_000 });
const handle = attachSessionCache(server, cache);

server.on("stream", (stream) => {
  const socket = stream.session.socket; // the TLS socket under this HTTP/2 session
  const body = { example: "http2", protocol: socket.getProtocol(), resumed: socket.isSessionReused() };
  stream.respond({ ":status": 200, "content-type": "application/json" });
  stream.end(JSON.stringify(body));
});

const sessions = new Set();
server.on("session", (session) => {
  sessions.add(session);
  session.once("close", () => sessions.delete(session));
});

server.listen(port, host, () => console.log(`listening on https://${host}:${port}`));

const stop = () => {
  handle.detach();
  for (const session of sessions) session.close();
  server.close(() => console.log(`stopped; cache stats: ${JSON.stringify(cache.stats())}`));
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
