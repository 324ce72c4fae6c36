// Test certificates made once per process with the openssl CLI: a CA and a leaf for
// localhost/127.0.0.1 signed by it, plus a second, unrelated CA (for "other trust" tests).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestPki {
  dir: string;
  caCert: string; // PEM
  cert: string; // leaf PEM, CN=localhost, SAN localhost, 127.0.0.1
  key: string;
  otherCaCert: string;
  certFile: string;
  keyFile: string;
  caFile: string;
}

let cached: TestPki | undefined;

function ossl(dir: string, ...args: string[]) {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

export function testPki(): TestPki {
  if (cached) return cached;
  const dir = mkdtempSync(join(tmpdir(), "sesscache-pki-"));
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  ossl(
    dir,
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=sesscache test CA",
  );
  ossl(
    dir,
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca2.key",
    "-out",
    "ca2.pem",
    "-days",
    "2",
    "-subj",
    "/CN=other CA",
  );
  ossl(dir, "req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost");
  writeFileSync(join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  ossl(
    dir,
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "leaf.pem",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  );
  const r = (f: string) => readFileSync(join(dir, f), "utf8");
  cached = {
    dir,
    caCert: r("ca.pem"),
    cert: r("leaf.pem"),
    key: r("leaf.key"),
    otherCaCert: r("ca2.pem"),
    certFile: join(dir, "leaf.pem"),
    keyFile: join(dir, "leaf.key"),
    caFile: join(dir, "ca.pem"),
  };
  return cached;
}

export interface VhostPki {
  /** Leaves for the virtual hosts a.test and b.test, signed by the test CA. */
  a: { cert: string; key: string };
  b: { cert: string; key: string };
  /** A client certificate signed by the test CA (caCert) and one signed by the other CA. */
  client: { cert: string; key: string };
  otherClient: { cert: string; key: string };
}

let vhostCached: VhostPki | undefined;

/** Virtual-host and client certificates, made once per process beside testPki()'s CAs. */
export function vhostPki(): VhostPki {
  if (vhostCached) return vhostCached;
  const { dir } = testPki();
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const leaf = (name: string, ca: string, ext: string) => {
    ossl(dir, "req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
    writeFileSync(join(dir, `${name}.cnf`), `${ext}\n`);
    ossl(
      dir,
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.pem`,
      "-CAkey",
      `${ca}.key`,
      "-CAcreateserial",
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-extfile",
      `${name}.cnf`,
    );
    return {
      cert: readFileSync(join(dir, `${name}.pem`), "utf8"),
      key: readFileSync(join(dir, `${name}.key`), "utf8"),
    };
  };
  vhostCached = {
    a: leaf("a.test", "ca", "subjectAltName=DNS:a.test"),
    b: leaf("b.test", "ca", "subjectAltName=DNS:b.test"),
    client: leaf("client", "ca", "extendedKeyUsage=clientAuth"),
    otherClient: leaf("other-client", "ca2", "extendedKeyUsage=clientAuth"),
  };
  return vhostCached;
}
