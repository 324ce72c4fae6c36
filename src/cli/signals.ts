/**
 * SIGINT/SIGTERM: log, run `close`, exit 0. A second signal while closing exits 1 at once (the user
 * wants out now). Once closed, a 2 s unref'd timer only guards against a leaked handle.
 */
export function stopOnSignals(
  close: () => Promise<unknown>,
  log: (msg: string, fields?: { signal: string }) => void,
  what = "",
): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    log(`${signal}: shutting down${what}`, { signal });
    void close().then(() => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      process.exitCode = 0;
      setTimeout(() => process.exit(0), 2000).unref();
    });
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
