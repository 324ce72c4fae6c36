/**
 * An error the CLI reports as one line on stderr (`sesscache: <message>`) with exit code 2 and no
 * stack trace: bad usage or an environment problem the user can fix (files, ports, names).
 * Anything else reaching the top level is a bug and is reported as such.
 */
export class CliError extends Error {
  override readonly name = "CliError";
  readonly exitCode: number;

  constructor(message: string, options?: { cause?: unknown; exitCode?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.exitCode = options?.exitCode ?? 2;
  }
}

/** The short, human part of a system error: "address already in use" rather than a stack. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    const known = code ? ERRNO_TEXT[code] : undefined;
    if (known) return known;
    // OpenSSL errors carry the useful part in `reason` ("key values mismatch").
    const reason = (err as { reason?: unknown }).reason;
    if (typeof reason === "string" && reason) return reason;
    return oneLine(err.message);
  }
  return oneLine(String(err));
}

export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ").trim();
}

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory",
  ENOTDIR: "not a directory",
  EADDRINUSE: "address already in use",
  EADDRNOTAVAIL: "address not available on this machine",
  ENOTFOUND: "host name not found",
  EAI_AGAIN: "host name lookup failed (temporary)",
  EROFS: "read-only file system",
  ENOSPC: "no space left on device",
};

/**
 * Ends a command with an exit code and nothing on stderr: the command already printed its answer
 * (a check that says no exits 1).
 */
export class QuietExit extends CliError {
  constructor(exitCode: number) {
    super("", { exitCode });
  }
}
