// Unit tests for the CLI's building blocks: --listen parsing, the state directory rule, and the
// self-signed certificate (its contents, its reuse, its renewal).
import assert from "node:assert/strict";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parseListen, parseNonNegativeInteger, parseOnOff, urlHost } from "../src/cli/args.js";
import { CliError, describeError } from "../src/cli/errors.js";
import {
  defaultStateDir,
  ensureLocalCertificate,
  makeSelfSignedCertificate,
} from "../src/cli/self-signed.js";

const tmp = mkdtempSync(join(tmpdir(), "sesscache-cli-units-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("parseListen", () => {
  test("accepts HOST:PORT, [IPv6]:PORT, :PORT, PORT and port 0", () => {
    assert.deepEqual(parseListen("127.0.0.1:8443"), { host: "127.0.0.1", port: 8443 });
    assert.deepEqual(parseListen("localhost:0"), { host: "localhost", port: 0 });
    assert.deepEqual(parseListen("[::1]:9000"), { host: "::1", port: 9000 });
    assert.deepEqual(parseListen("[::]:1"), { host: "::", port: 1 });
    assert.deepEqual(parseListen(":443"), { host: "127.0.0.1", port: 443 });
    assert.deepEqual(parseListen("8080"), { host: "127.0.0.1", port: 8080 });
    assert.deepEqual(parseListen("0.0.0.0:65535"), { host: "0.0.0.0", port: 65535 });
  });

  test("rejects missing or bad ports, bare IPv6 and non-IPv6 in brackets", () => {
    for (const bad of [
      "localhost",
      "127.0.0.1:",
      "127.0.0.1:x",
      "127.0.0.1:65536",
      "::1:80",
      "[foo]:80",
      "1.2.3.4:-1",
      "",
    ]) {
      assert.throws(() => parseListen(bad), { code: "commander.invalidArgument" }, bad);
    }
  });

  test("urlHost brackets IPv6 literals only", () => {
    assert.equal(urlHost("::1"), "[::1]");
    assert.equal(urlHost("127.0.0.1"), "127.0.0.1");
    assert.equal(urlHost("localhost"), "localhost");
  });
});

describe("number and switch parsers", () => {
  test("parseNonNegativeInteger takes digits only", () => {
    assert.equal(parseNonNegativeInteger("0"), 0);
    assert.equal(parseNonNegativeInteger("20480"), 20480);
    for (const bad of ["-1", "1.5", "1e3", "", "abc", "99999999999999999999"]) {
      assert.throws(() => parseNonNegativeInteger(bad), { code: "commander.invalidArgument" }, bad);
    }
  });

  test("parseOnOff", () => {
    assert.equal(parseOnOff("on"), true);
    assert.equal(parseOnOff("OFF"), false);
    assert.throws(() => parseOnOff("maybe"), { code: "commander.invalidArgument" });
  });
});

describe("errors", () => {
  test("CliError defaults to exit code 2", () => {
    assert.equal(new CliError("x").exitCode, 2);
  });

  test("describeError gives the short system reason, on one line", () => {
    const err = Object.assign(new Error("listen EADDRINUSE: address already in use 127.0.0.1:1"), {
      code: "EADDRINUSE",
    });
    assert.equal(describeError(err), "address already in use");
    assert.equal(describeError(new Error("a\n  b")), "a b");
  });
});

describe("defaultStateDir", () => {
  test("SESSCACHE_STATE_DIR, then an absolute XDG_STATE_HOME, then ~/.local/state", () => {
    assert.equal(defaultStateDir({ SESSCACHE_STATE_DIR: "/x/y", XDG_STATE_HOME: "/s" }), "/x/y");
    assert.equal(defaultStateDir({ XDG_STATE_HOME: "/s" }), "/s/sesscache");
    // The XDG spec: a relative value is invalid and ignored.
    assert.equal(defaultStateDir({ XDG_STATE_HOME: "rel" }), join(homedir(), ".local/state/sesscache"));
    assert.equal(defaultStateDir({}), join(homedir(), ".local/state/sesscache"));
  });
});

describe("self-signed certificate", () => {
  test("is a P-256 ECDSA certificate for localhost, 127.0.0.1 and ::1, valid now, not a CA", () => {
    const { cert, key } = makeSelfSignedCertificate();
    const x = new X509Certificate(cert);
    assert.equal(x.publicKey.asymmetricKeyType, "ec");
    assert.equal(x.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
    assert.ok(x.verify(x.publicKey), "self-signed signature verifies");
    assert.ok(x.checkPrivateKey(createPrivateKey(key)));
    assert.equal(x.checkHost("localhost"), "localhost");
    assert.equal(x.checkIP("127.0.0.1"), "127.0.0.1");
    assert.equal(x.checkIP("::1"), "::1");
    assert.equal(x.checkHost("example.com"), undefined);
    assert.equal(x.ca, false);
    assert.ok(Date.parse(x.validFrom) < Date.now() && Date.parse(x.validTo) > Date.now() + 300 * 86400_000);
    assert.equal(x.subject, x.issuer);
    assert.match(x.subject, /CN=localhost/);
  });

  test("each certificate gets its own key and serial", () => {
    const a = new X509Certificate(makeSelfSignedCertificate().cert);
    const b = new X509Certificate(makeSelfSignedCertificate().cert);
    assert.notEqual(a.serialNumber, b.serialNumber);
    assert.notEqual(a.fingerprint256, b.fingerprint256);
  });

  test("ensureLocalCertificate makes the pair once, then reuses it", () => {
    const dir = join(tmp, "reuse");
    const first = ensureLocalCertificate(dir);
    assert.equal(first.generated, true);
    assert.equal(first.certFile, join(dir, "tls", "cert.pem"));
    const second = ensureLocalCertificate(dir);
    assert.equal(second.generated, false);
    assert.equal(second.fingerprint256, first.fingerprint256);
    assert.equal(second.key, first.key);
    // No temporary directories left behind.
    assert.deepEqual(readdirSync(dir), ["tls"]);
  });

  test("an expiring certificate is renewed and the old one kept aside", () => {
    const dir = join(tmp, "renew");
    const first = ensureLocalCertificate(dir);
    const inAYear = Date.now() + 365 * 86400_000;
    const renewed = ensureLocalCertificate(dir, inAYear);
    assert.equal(renewed.generated, true);
    assert.notEqual(renewed.fingerprint256, first.fingerprint256);
    assert.ok(readdirSync(dir).some((f) => f.startsWith("tls.old-")));
  });

  test("damaged files are replaced", () => {
    const dir = join(tmp, "damaged");
    mkdirSync(join(dir, "tls"), { recursive: true });
    writeFileSync(join(dir, "tls", "cert.pem"), "garbage");
    writeFileSync(join(dir, "tls", "key.pem"), "garbage");
    const made = ensureLocalCertificate(dir);
    assert.equal(made.generated, true);
    assert.match(readFileSync(made.certFile, "utf8"), /BEGIN CERTIFICATE/);
  });

  test("a key that does not match the certificate is replaced", () => {
    const dir = join(tmp, "mismatch");
    const first = ensureLocalCertificate(dir);
    writeFileSync(first.keyFile, makeSelfSignedCertificate().key);
    const made = ensureLocalCertificate(dir);
    assert.equal(made.generated, true);
    assert.ok(new X509Certificate(made.cert).checkPrivateKey(createPrivateKey(made.key)));
  });

  test("an unusable state directory is a CliError", () => {
    const file = join(tmp, "a-file");
    writeFileSync(file, "");
    assert.throws(() => ensureLocalCertificate(join(file, "sub")), CliError);
  });
});
