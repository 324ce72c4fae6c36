// A client cache persisted to one local file, so short-lived processes (CLI tools, jobs, serverless
// functions) resume across runs. Sessions hold master secrets, so the file is sealed as one value
// with the stores' Sealer: AES-256-GCM, a key id and a fresh random nonce on every write, keys
// given as a list for rotation (the first seals, all open). Writes go to a temporary file in the
// same directory, are flushed, then renamed over the old one: a reader sees the old file or the
// new one, never half of one. Mode 0600.
import { randomBytes } from "node:crypto";
import { open, readFile, rename, unlink } from "node:fs/promises";
import type { ClientSessionEntry, ClientSessionPersistence, StoreKey } from "../engine/store.js";
import { StoreValueError } from "./errors.js";
import { createSealer, type Sealer, type SealerOptions } from "./sealing.js";

export type FileSessionStoreOptions = SealerOptions & {
  /** The file; its directory must exist and be writable (the temporary file goes next to it). */
  path: string;
};

const FORMAT = 1;
/** A cache of 1024 sessions of ≤ 10 KiB is ~14 MiB as base64 JSON; anything far larger is not ours. */
const MAX_FILE_BYTES = 64 * 1024 * 1024;
// The whole file is one sealed value; this key is its associated data, so a value sealed for a
// shared store cannot be passed off as a file (or the reverse).
const FILE_KEY: StoreKey = {
  namespace: "client",
  protocolVersion: 0,
  context: new TextEncoder().encode("sesscache/client-file"),
  id: new TextEncoder().encode("entries/v1"),
};

interface FileBody {
  v: number;
  entries: [string, string][];
}

export class FileSessionStore implements ClientSessionPersistence {
  readonly path: string;
  readonly #sealer: Sealer;
  /**
   * Why the last load() found nothing usable in an existing file (wrong key, tampered, not ours),
   * or undefined. Such a file loads as empty: the next save() replaces it.
   */
  lastLoadError: StoreValueError | undefined;

  constructor(options: FileSessionStoreOptions) {
    if (typeof options?.path !== "string" || options.path === "") {
      throw new TypeError("FileSessionStore: path is required");
    }
    this.path = options.path;
    this.#sealer = createSealer(options);
  }

  async load(): Promise<ClientSessionEntry[]> {
    this.lastLoadError = undefined;
    let raw: Buffer;
    try {
      raw = await readFile(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    try {
      if (raw.length > MAX_FILE_BYTES) throw new StoreValueError("bad-format", "file too large");
      const plain = this.#sealer.open(FILE_KEY, raw, MAX_FILE_BYTES);
      const body = JSON.parse(
        Buffer.from(plain.buffer, plain.byteOffset, plain.length).toString("utf8"),
      ) as FileBody;
      if (body?.v !== FORMAT || !Array.isArray(body.entries)) {
        throw new StoreValueError("bad-format", "not a sesscache client session file");
      }
      const out: ClientSessionEntry[] = [];
      for (const e of body.entries) {
        if (Array.isArray(e) && typeof e[0] === "string" && typeof e[1] === "string") {
          const der = Buffer.from(e[1], "base64");
          out.push({ identity: e[0], session: new Uint8Array(der.buffer, der.byteOffset, der.length) });
        }
      }
      return out;
    } catch (err) {
      // Never the bytes in the message: only why.
      this.lastLoadError =
        err instanceof StoreValueError ? err : new StoreValueError("bad-format", "unreadable session file");
      return [];
    }
  }

  async save(entries: readonly ClientSessionEntry[]): Promise<void> {
    const body: FileBody = {
      v: FORMAT,
      entries: entries.map((e) => [
        e.identity,
        Buffer.from(e.session.buffer, e.session.byteOffset, e.session.byteLength).toString("base64"),
      ]),
    };
    const plain = Buffer.from(JSON.stringify(body), "utf8");
    const sealed = this.#sealer.seal(FILE_KEY, plain, MAX_FILE_BYTES);
    plain.fill(0);
    const tmp = `${this.path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
    const fh = await open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(sealed);
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      throw err;
    }
    await fh.close();
    try {
      await rename(tmp, this.path);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }
}
