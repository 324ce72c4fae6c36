// An undici client whose connections resume TLS sessions: the second request below goes over a new
// connection that offers the session the first one learnt.
//   node examples/undici-client.mjs [url]
// Env: URL (default https://127.0.0.1:8443/), CA_FILE (PEM of the CA to trust; default Node's roots).
import { readFileSync } from "node:fs";
import { ClientSessionCache, undiciConnector } from "sesscache";
import { Agent, request } from "undici";

const url = process.argv[2] ?? process.env.URL ?? "https://127.0.0.1:8443/";
const ca = process.env.CA_FILE ? readFileSync(process.env.CA_FILE) : undefined;

const cache = new ClientSessionCache();
const connect = undiciConnector({ cache, ca });
// Wrapped only to show whether each new connection resumed.
const dispatcher = new Agent({
  connect: (options, callback) =>
    connect(options, (err, socket) => {
      if (socket) console.log(`connection ${socket.getProtocol()} resumed=${socket.isSessionReused()}`);
      callback(err, socket);
    }),
});

for (let i = 1; i <= 2; i++) {
  // reset: true sends "Connection: close", so every request makes a new TLS connection.
  const res = await request(url, { dispatcher, reset: true });
  console.log(`request ${i}: status ${res.statusCode} ${(await res.body.text()).trim()}`);
}
await dispatcher.close();
