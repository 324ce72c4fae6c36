// tls.connect with the client cache choosing the session to offer and learning the ones issued.
import tls from "node:tls";
import type { ClientSessionCache } from "./client-cache.js";

export type CachedConnectionOptions = tls.ConnectionOptions & {
  /** The cache sessions come from and go to. */
  cache: ClientSessionCache;
};

/**
 * Like tls.connect(options), with sessions from `options.cache` (R21–R23): the session offered is
 * one verified for this exact identity, TLS 1.3 tickets are used once, new and renewed sessions
 * are stored, a failed connection loses its session, and a resumed connection's certificate is
 * checked against the name before any 'secureConnect' listener (`secureConnectListener` too) runs:
 * a mismatch destroys the socket with a ResumedIdentityError and no listener runs, or, with
 * rejectUnauthorized: false, the listeners see `authorized === false` and its `authorizationError`.
 */
export function connect(options: CachedConnectionOptions, secureConnectListener?: () => void): tls.TLSSocket {
  const { cache, ...rest } = options;
  if (!cache) throw new TypeError("connect: options.cache is required");
  const plan = cache.prepare(rest);
  const socket = tls.connect(plan.options, secureConnectListener);
  cache.attach(socket, plan);
  return socket;
}

/**
 * `connect()` that also consults the cache's shared store (`shared: sharedClientSessions(store)`)
 * before connecting, waiting at most the store's look-up deadline. Resolves with the socket as
 * soon as it is created (listen for 'secureConnect' as usual); rejects only if tls.connect throws.
 */
export async function connectAsync(options: CachedConnectionOptions): Promise<tls.TLSSocket> {
  const { cache, ...rest } = options;
  if (!cache) throw new TypeError("connectAsync: options.cache is required");
  const plan = await cache.prepareAsync(rest);
  const socket = tls.connect(plan.options);
  cache.attach(socket, plan);
  return socket;
}
