// An https.Agent whose sessions come from a ClientSessionCache. Node's Agent keeps one session per
// agent key (FIFO, 100 keys, no expiry) through _getSession/_cacheSession/_evictSession, which see
// only the key; createConnection sees the full connection options (after the agent merged its own
// and normalised servername), so that is what is overridden. Node's session methods are left unused.

import https from "node:https";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import { ClientSessionCache } from "./client-cache.js";
import type { IdentityOptions } from "./identity.js";

export type CachedAgentOptions = https.AgentOptions & {
  /** Where sessions come from; default: a new ClientSessionCache for this agent. */
  cache?: ClientSessionCache;
};

export class CachedHttpsAgent extends https.Agent {
  readonly cache: ClientSessionCache;
  readonly #reuse: boolean;

  constructor(options: CachedAgentOptions = {}) {
    const { cache, ...rest } = options;
    // Agent options are merged into every connection's options: keep the cache out of them.
    super(rest);
    this.cache = cache ?? new ClientSessionCache();
    // maxCachedSessions: 0 turns session reuse off, as it does for Node's Agent.
    this.#reuse = options.maxCachedSessions !== 0;
  }

  // Node's Agent accepts a socket returned or one passed to the callback later (createSocket
  // handles both); the later form is used only when a shared store must be asked first.
  override createConnection(
    options: https.RequestOptions,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | undefined {
    const opts = options as IdentityOptions;
    if (!this.#reuse) return tls.connect(opts);
    if (this.cache.sharesSessions && callback) {
      const fail = (err: unknown) =>
        callback(err instanceof Error ? err : new Error(String(err)), undefined as unknown as Duplex);
      this.cache.prepareAsync(opts).then((plan) => {
        let socket: tls.TLSSocket;
        try {
          socket = tls.connect(plan.options);
          this.cache.attach(socket, plan);
        } catch (err) {
          fail(err);
          return;
        }
        callback(null, socket);
      }, fail);
      return undefined;
    }
    const plan = this.cache.prepare(opts);
    const socket = tls.connect(plan.options);
    this.cache.attach(socket, plan);
    return socket;
  }
}

/** An https.Agent (every https.Agent option, plus `cache`) for `https.get(url, { agent })`. */
export function createHttpsAgent(options: CachedAgentOptions = {}): CachedHttpsAgent {
  return new CachedHttpsAgent(options);
}
