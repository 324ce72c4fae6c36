// The Redis proxy in a process of its own (forked by startRedisProxyProcess): in the load driver's
// process its latency would be the driver's event-loop lag under 64 TLS clients, not the fault's.
// Commands over IPC: { latency }, { mode }, { count }; it answers { port } once listening and
// { garbageReplies } to { count }.
import { type ProxyMode, startRedisProxy } from "./redis-faults.js";

const upstream = Number(process.argv[2]);
const proxy = await startRedisProxy(upstream);
process.on("message", (m: { latency?: number; mode?: ProxyMode; count?: boolean }) => {
  if (m.latency !== undefined) proxy.setLatency(m.latency);
  if (m.mode !== undefined) proxy.setMode(m.mode);
  process.send?.({ ack: true, garbageReplies: proxy.garbageReplies });
});
// The driver going away ends the proxy.
process.on("disconnect", () => process.exit(0));
process.send?.({ port: proxy.port });
