// Argument parsers shared by the commands. They throw commander's InvalidArgumentError so that a bad
// value is reported like any other usage error: one line, exit code 2.
import { isIP } from "node:net";
import { InvalidArgumentError } from "commander";

export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * "HOST:PORT", "[IPv6]:PORT", ":PORT" or "PORT" (the last two on `defaultHost`). Port 0 asks the
 * system for a free port.
 */
export function parseListen(value: string, defaultHost = "127.0.0.1"): ListenAddress {
  const v = value.trim();
  let host: string;
  let portText: string;
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(v);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2]!;
    if (isIP(host) !== 6) throw new InvalidArgumentError(`'${host}' in brackets is not an IPv6 address`);
  } else if (/^\d+$/.test(v)) {
    host = defaultHost;
    portText = v;
  } else {
    const colon = v.lastIndexOf(":");
    if (colon < 0) throw new InvalidArgumentError("expected HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443");
    host = v.slice(0, colon) || defaultHost;
    portText = v.slice(colon + 1);
    if (host.includes(":")) {
      throw new InvalidArgumentError("put an IPv6 address in brackets, e.g. [::1]:8443");
    }
  }
  if (!/^\d+$/.test(portText)) throw new InvalidArgumentError(`port '${portText}' is not a number`);
  const port = Number(portText);
  if (port > 65535) throw new InvalidArgumentError(`port ${port} is out of range (0-65535)`);
  return { host, port };
}

/** `https://host:port/` host part: IPv6 literals need brackets. */
export function urlHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

export function parseNonNegativeInteger(value: string): number {
  const v = value.trim();
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError("expected a non-negative integer");
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError("number too large");
  return n;
}

export function parseOnOff(value: string): boolean {
  switch (value.trim().toLowerCase()) {
    case "on":
    case "yes":
    case "true":
    case "1":
      return true;
    case "off":
    case "no":
    case "false":
    case "0":
      return false;
    default:
      throw new InvalidArgumentError("expected on or off");
  }
}
