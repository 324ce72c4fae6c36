// Rate-limited logging for the adapter: a store outage or a flood of garbage connections must not
// turn into one log line per handshake. Messages never carry session bytes or secrets.

/** At most one line per kind of event per interval; the next line says how many were held back. */
export class RateLimitedLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly sink: ((msg: string) => void) | undefined,
    private readonly intervalMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** `kind` groups messages for the limit; `msg` is only built when it will be written. */
  log(kind: string, msg: string | (() => string)): void {
    const sink = this.sink;
    if (sink === undefined) return;
    const t = this.now();
    const prev = this.last.get(kind);
    if (prev !== undefined && t - prev.at < this.intervalMs) {
      prev.suppressed++;
      return;
    }
    const text = typeof msg === "function" ? msg() : msg;
    const more = prev?.suppressed ? ` (${prev.suppressed} more like this since the last one)` : "";
    if (prev === undefined) this.last.set(kind, { at: t, suppressed: 0 });
    else {
      prev.at = t;
      prev.suppressed = 0;
    }
    try {
      sink(`sesscache: ${text}${more}`);
    } catch {
      // A failing logger must not break a handshake.
    }
  }
}
