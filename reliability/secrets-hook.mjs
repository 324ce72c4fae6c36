// Preload for the secrets audit: NODE_OPTIONS="--import /abs/path/reliability/secrets-hook.mjs"
// with SESSCACHE_SECRETS_DIR set. Plain JavaScript so that it loads in every Node process the run
// starts (spawned `serve`, its workers, bench, examples), with or without tsx.
//
// It records, one hex value per line in $SESSCACHE_SECRETS_DIR/secrets-<pid>.txt:
// - every secret of every TLS socket's keylog (client and server side; Node's 'keylog' event gives
//   the NSS key log line: LABEL <client random> <secret>): the TLS 1.2 master secret (CLIENT_RANDOM)
//   and the TLS 1.3 traffic and exporter secrets;
// - the master key (TLS 1.2 master secret, TLS 1.3 resumption PSK) of every session Node hands out:
//   client 'session' events and server 'newSession' events;
// - as "ID", those sessions' ids (not secret, but sesscache never logs them either).
// With SESSCACHE_OUTPUTS_DIR set, it also copies everything the process writes to its stdout and
// stderr to $SESSCACHE_OUTPUTS_DIR/proc-<pid>.txt, headed by its argv: what a spawned `serve` or
// CLI command printed is kept even when the test read it into memory and then threw it away.
// It never changes behaviour: the keylog listener only turns OpenSSL's keylog callback on, and the
// session events are read where Node emits them (no 'session' listener is added, since a listener
// changes what a TLS 1.3 client does with its tickets).
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import tls from "node:tls";

const dir = process.env.SESSCACHE_SECRETS_DIR;
if (dir) {
  const file = join(dir, `secrets-${process.pid}.txt`);
  const seen = new Set();
  const record = (kind, hex) => {
    if (hex.length < 32 || seen.has(hex)) return;
    seen.add(hex);
    try {
      appendFileSync(file, `${kind} ${hex}\n`, { mode: 0o600 });
    } catch {}
  };
  const onKeylog = (line) => {
    const parts = Buffer.from(line).toString("latin1").trim().split(" ");
    if (parts.length === 3 && /^[0-9a-fA-F]+$/.test(parts[2])) record(parts[0], parts[2].toLowerCase());
  };
  const onSessionDer = (der) => {
    try {
      const f = sessionFields(Buffer.from(der));
      if (f === undefined) return;
      record("SESSION_MASTER_KEY", f.masterKey.toString("hex"));
      record("ID", f.id.toString("hex"));
    } catch {}
  };

  const init = tls.TLSSocket.prototype._init;
  tls.TLSSocket.prototype._init = function hookedInit(...args) {
    const r = init.apply(this, args);
    try {
      this.on("keylog", onKeylog);
    } catch {}
    return r;
  };
  const socketEmit = tls.TLSSocket.prototype.emit;
  tls.TLSSocket.prototype.emit = function hookedEmit(event, ...args) {
    if (event === "session" && args[0] instanceof Uint8Array) onSessionDer(args[0]);
    return socketEmit.call(this, event, ...args);
  };
  const serverEmit = tls.Server.prototype.emit;
  tls.Server.prototype.emit = function hookedServerEmit(event, ...args) {
    if (event === "newSession" && args[1] instanceof Uint8Array) onSessionDer(args[1]);
    return serverEmit.call(this, event, ...args);
  };
}

const outputs = process.env.SESSCACHE_OUTPUTS_DIR;
if (outputs) {
  const file = join(outputs, `proc-${process.pid}.txt`);
  try {
    writeFileSync(file, `# argv: ${JSON.stringify(process.argv)}\n`, { mode: 0o600 });
    for (const stream of [process.stdout, process.stderr]) {
      const write = stream.write;
      stream.write = function hookedWrite(chunk, ...rest) {
        try {
          appendFileSync(file, typeof chunk === "string" ? chunk : Buffer.from(chunk));
        } catch {}
        return write.call(this, chunk, ...rest);
      };
    }
  } catch {}
}

/** The id and master key of an SSL_SESSION (its 4th and 5th fields), or undefined. */
function sessionFields(der) {
  let p = 0;
  const tlv = () => {
    const tag = der[p++];
    let len = der[p++];
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + der[p++];
    }
    const start = p;
    return { tag, start, end: start + len };
  };
  const outer = tlv();
  if (outer.tag !== 0x30 || outer.end > der.length) return undefined;
  const fields = [];
  for (let i = 0; i < 5 && p < outer.end; i++) {
    const f = tlv();
    fields.push(f);
    p = f.end;
  }
  if (fields.length < 5 || fields[3].tag !== 0x04 || fields[4].tag !== 0x04) return undefined;
  return {
    id: der.subarray(fields[3].start, fields[3].end),
    masterKey: der.subarray(fields[4].start, fields[4].end),
  };
}
