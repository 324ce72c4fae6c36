// The one logger of `sesscache serve` (its workers and their primary): every diagnostic line goes
// through here, as text (the default, the lines serve always wrote) or as one JSON object per line
// (`--log-format json`) with `time` (ISO 8601), `level`, `msg` and structured fields.
//
// Nothing logged may carry session bytes or secrets: callers pass messages and fields made of
// counts, addresses, ids of workers and store statuses, and error messages from code that promises
// the same (the adapter's RateLimitedLog, RedisStoreError). Never pass a session, DER, ticket or key.
import { InvalidArgumentError } from "commander";

export const LOG_FORMATS = ["text", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export type LogLevel = "info" | "warn" | "error";
/** Structured fields: plain values only (no Buffers: they would be bytes). */
export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  readonly format: LogFormat;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /**
   * A line from startServe's `log` option ("sesscache: …" from the adapter and the server,
   * "sesscache serve: store: …"): as is in text; in JSON a `warn` without the prefix, with
   * `source` ("store" when the fields name one, else "adapter") and the given fields.
   */
  adapter(line: string, fields?: LogFields): void;
}

/** Commander's parser for --log-format: a usage error (exit 2) for anything else. */
export function parseLogFormat(value: string): LogFormat {
  if ((LOG_FORMATS as readonly string[]).includes(value)) return value as LogFormat;
  throw new InvalidArgumentError(`expected ${LOG_FORMATS.join(" or ")}`);
}

export interface LoggerOptions {
  format?: LogFormat;
  /** Where lines go, each ending in a newline (default: stderr). */
  write?: (line: string) => void;
  /** Fields on every JSON line, e.g. { worker: 2 } in a worker process. */
  base?: LogFields;
  /** Text-mode prefix of info/warn/error lines (default "sesscache serve: "). */
  prefix?: string;
  now?: () => Date;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? "text";
  const write = options.write ?? ((line: string) => void process.stderr.write(line));
  const prefix = options.prefix ?? "sesscache serve: ";
  const now = options.now ?? (() => new Date());
  const base = options.base ?? {};
  const emit = (level: LogLevel, msg: string, fields: LogFields | undefined, textLine: string) => {
    try {
      if (format === "text") {
        write(`${textLine}\n`);
        return;
      }
      // time, level and msg first, and never overwritten by a field of the same name.
      const record: Record<string, unknown> = { time: now().toISOString(), level, msg };
      for (const [k, v] of Object.entries({ ...base, ...fields })) {
        if (v !== undefined && !(k in record)) record[k] = v;
      }
      write(`${JSON.stringify(record)}\n`);
    } catch {
      // A failing log write (stderr closed) must not stop the server.
    }
  };
  const at = (level: LogLevel) => (msg: string, fields?: LogFields) =>
    emit(level, msg, fields, `${prefix}${msg}`);
  return {
    format,
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    adapter: (line, fields) =>
      emit(
        "warn",
        line.replace(/^sesscache(?: serve)?: /, ""),
        { source: fields?.store === undefined ? "adapter" : "store", ...fields },
        line,
      ),
  };
}
