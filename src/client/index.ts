// The client side (spec §8): a session chooser for tls.connect, https.Agent and undici.

export type { ClientSessionEntry, ClientSessionPersistence, SharedClientSessions } from "../engine/store.js";
export {
  type ClientConnectPlan,
  ClientSessionCache,
  type ClientSessionCacheOptions,
  MAX_SESSION_LIFETIME,
  ResumedIdentityError,
} from "./client-cache.js";
export { type CachedConnectionOptions, connect, connectAsync } from "./connect.js";
export { type CachedAgentOptions, CachedHttpsAgent, createHttpsAgent } from "./https-agent.js";
export { type ClientIdentity, clientIdentity, type IdentityOptions } from "./identity.js";
export {
  type UndiciConnectCallback,
  type UndiciConnectOptions,
  type UndiciConnector,
  type UndiciConnectorOptions,
  undiciConnector,
} from "./undici.js";
