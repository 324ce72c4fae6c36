// Session cache modes (spec §1, R1): OpenSSL's SSL_SESS_CACHE_* bits, and the names users and the
// CLI may write instead of numbers ("server,no_auto_clear", "SSL_SESS_CACHE_BOTH", "0x302").

/** OpenSSL's SSL_SESS_CACHE_* bit values (spec §1). */
export const SessionCacheMode = {
  OFF: 0x000,
  CLIENT: 0x001,
  SERVER: 0x002,
  BOTH: 0x003,
  NO_AUTO_CLEAR: 0x080,
  NO_INTERNAL_LOOKUP: 0x100,
  NO_INTERNAL_STORE: 0x200,
  NO_INTERNAL: 0x300,
  UPDATE_TIME: 0x400,
} as const;

/** A mode as a number (0x302) or names: "server,no_auto_clear", "SSL_SESS_CACHE_BOTH", "0x302". */
export type SessionCacheModeInput = number | string;

const NAMES = new Map<string, number>(
  Object.entries(SessionCacheMode).map(([name, value]) => [name.toLowerCase(), value]),
);

/** Thrown for a mode that is neither a non-negative integer nor a list of known names. */
export class SessionCacheModeError extends RangeError {
  override readonly name = "SessionCacheModeError";
  /** The offending part of the input, as written. */
  readonly part: string;
  constructor(message: string, part: string) {
    super(message);
    this.part = part;
  }
}

function parsePart(part: string, whole: string): number {
  let n: number | undefined;
  if (/^0x[0-9a-f]+$/i.test(part)) n = Number.parseInt(part.slice(2), 16);
  else if (/^[0-9]+$/.test(part)) n = Number.parseInt(part, 10);
  if (n !== undefined) {
    if (n > 0x7fffffff) throw new SessionCacheModeError(`session cache mode out of range: "${part}"`, part);
    return n;
  }
  const key = part
    .toLowerCase()
    .replace(/-/g, "_")
    .replace(/^ssl_sess_cache_/, "");
  const value = NAMES.get(key);
  if (value === undefined) {
    throw new SessionCacheModeError(
      `unknown session cache mode "${part}"${part === whole ? "" : ` in "${whole}"`} (expected a number or ` +
        `${[...NAMES.keys()].join(", ")}, optionally prefixed SSL_SESS_CACHE_, joined by "," or "|")`,
      part,
    );
  }
  return value;
}

/**
 * Turns a mode input into its number. Numbers are taken as they are (R1: unknown bits are kept,
 * as OpenSSL stores the mode unchecked); they must be integers in 0..0x7fffffff.
 */
export function parseMode(mode: SessionCacheModeInput): number {
  if (typeof mode === "number") {
    // Kept to 31 bits so the bit tests everywhere else stay plain int32 operations.
    if (!Number.isInteger(mode) || mode < 0 || mode > 0x7fffffff) {
      throw new SessionCacheModeError(
        `session cache mode must be an integer in 0..0x7fffffff, got ${mode}`,
        String(mode),
      );
    }
    return mode;
  }
  if (typeof mode !== "string") {
    throw new SessionCacheModeError(`session cache mode must be a number or a string`, String(mode));
  }
  const parts = mode.split(/[,|+\s]+/).filter((p) => p !== "");
  if (parts.length === 0) throw new SessionCacheModeError(`empty session cache mode "${mode}"`, mode);
  let value = 0;
  for (const part of parts) value |= parsePart(part, mode);
  return value;
}

/** "server|no_auto_clear", "both|no_internal", "off"; unknown bits as hex ("server|0x1000"). */
export function formatMode(mode: number): string {
  const out: string[] = [];
  let rest = mode;
  const take = (name: string, bits: number) => {
    if ((rest & bits) === bits) {
      out.push(name);
      rest &= ~bits;
    }
  };
  take("both", SessionCacheMode.BOTH);
  take("client", SessionCacheMode.CLIENT);
  take("server", SessionCacheMode.SERVER);
  take("no_auto_clear", SessionCacheMode.NO_AUTO_CLEAR);
  take("no_internal", SessionCacheMode.NO_INTERNAL);
  take("no_internal_lookup", SessionCacheMode.NO_INTERNAL_LOOKUP);
  take("no_internal_store", SessionCacheMode.NO_INTERNAL_STORE);
  take("update_time", SessionCacheMode.UPDATE_TIME);
  if (rest !== 0) out.push(`0x${rest.toString(16)}`);
  if ((mode & SessionCacheMode.BOTH) === 0) out.unshift("off");
  return out.join("|");
}
