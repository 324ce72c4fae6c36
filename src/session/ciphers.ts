// IANA names of the suites a Node 20 / OpenSSL 3 peer negotiates by default: the five TLS 1.3
// suites and the non-PSK, non-SRP TLS 1.2 suites in OpenSSL's DEFAULT list. Checked against
// `openssl ciphers -V -stdname` in test/session.test.ts. Anything else reads as undefined rather
// than carrying a registry of hundreds of legacy suites.
// Each entry: [IANA name, OpenSSL name (what `openssl sess_id -text` and s_client print)].
const NAMES = new Map<number, readonly [string, string]>([
  [0x1301, ["TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"]],
  [0x1302, ["TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"]],
  [0x1303, ["TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]],
  [0x1304, ["TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_SHA256"]],
  [0x1305, ["TLS_AES_128_CCM_8_SHA256", "TLS_AES_128_CCM_8_SHA256"]],
  [0xc02b, ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"]],
  [0xc02c, ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"]],
  [0xc02f, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"]],
  [0xc030, ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"]],
  [0x009e, ["TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "DHE-RSA-AES128-GCM-SHA256"]],
  [0x009f, ["TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "DHE-RSA-AES256-GCM-SHA384"]],
  [0xcca8, ["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"]],
  [0xcca9, ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"]],
  [0xccaa, ["TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "DHE-RSA-CHACHA20-POLY1305"]],
  [0xc023, ["TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256"]],
  [0xc024, ["TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "ECDHE-ECDSA-AES256-SHA384"]],
  [0xc027, ["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"]],
  [0xc028, ["TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", "ECDHE-RSA-AES256-SHA384"]],
  [0x0067, ["TLS_DHE_RSA_WITH_AES_128_CBC_SHA256", "DHE-RSA-AES128-SHA256"]],
  [0x006b, ["TLS_DHE_RSA_WITH_AES_256_CBC_SHA256", "DHE-RSA-AES256-SHA256"]],
  [0xc009, ["TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA"]],
  [0xc00a, ["TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA"]],
  [0xc013, ["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"]],
  [0xc014, ["TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"]],
  [0x0033, ["TLS_DHE_RSA_WITH_AES_128_CBC_SHA", "DHE-RSA-AES128-SHA"]],
  [0x0039, ["TLS_DHE_RSA_WITH_AES_256_CBC_SHA", "DHE-RSA-AES256-SHA"]],
  [0x009c, ["TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"]],
  [0x009d, ["TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"]],
  [0x003c, ["TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"]],
  [0x003d, ["TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256"]],
  [0x002f, ["TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"]],
  [0x0035, ["TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"]],
]);

/** IANA name of a two-byte cipher suite id (e.g. 0x1301), or undefined when not in the table. */
export function cipherName(id: number): string | undefined {
  return NAMES.get(id)?.[0];
}

/** OpenSSL's own name of a suite (e.g. "ECDHE-RSA-AES128-GCM-SHA256"), or undefined when not in the table. */
export function opensslCipherName(id: number): string | undefined {
  return NAMES.get(id)?.[1];
}

/** Every (id, name) pair known to cipherName, for tests and documentation. */
export function knownCiphers(): Map<number, string> {
  return new Map([...NAMES].map(([id, [iana]]) => [id, iana]));
}
