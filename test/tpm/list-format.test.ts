/**
 * `ra-agent list` presentation, on plain data: the human listing (tables and
 * the exact URI of every object), the JSON document, and filtering by a URI's
 * object attributes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { ModuleListing, TokenListing } from "../../src/signer/pkcs11/enumerate";
import { filterInventoryObjects, formatInventory, inventoryToJson, table, type ListedModule } from "../../src/cli/format-inventory";

const TOKEN_URI = "pkcs11:token=ra-agent;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;serial=1a2b3c4d";
const K1 = `${TOKEN_URI};object=rsa;id=%01;type=private`;
const K2 = `${TOKEN_URI};object=ec;id=%02;type=private`;
const C1 = `${TOKEN_URI};object=rsa;id=%01;type=cert`;
const C2 = `${TOKEN_URI};object=old;id=%03;type=cert`;

function token(over: Partial<TokenListing> = {}): TokenListing {
  return {
    uri: TOKEN_URI, label: "ra-agent", manufacturer: "SoftHSM project", model: "SoftHSM v2", serial: "1a2b3c4d",
    flags: ["rng", "login-required", "user-pin-initialized", "token-initialized"], pinState: "ok", loginRequired: true, initialized: true,
    quirks: ["softhsm2"], loggedIn: true,
    keys: [
      { uri: K1, label: "rsa", idHex: "01", keyType: "RSA", bits: 2048, sensitive: true, extractable: false, neverExtractable: true, alwaysAuthenticate: false, canSign: true, certificateUris: [C1] },
      { uri: K2, label: "ec", idHex: "02", keyType: "EC", curve: "P-256", bits: 256, sensitive: true, extractable: false, alwaysAuthenticate: true, certificateUris: [] },
    ],
    certificates: [
      { uri: C1, label: "rsa", idHex: "01", der: Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]), subject: "CN=leaf", issuer: "CN=demo CA", serialHex: "7b", notBefore: "2025-01-01T00:00:00.000Z", notAfter: "2030-01-01T00:00:00.000Z", keyUri: K1 },
      { uri: C2, label: "old", idHex: "03", der: Buffer.from([0x30, 0x00]), subject: "CN=old", issuer: "CN=demo CA", serialHex: "01", notBefore: "2020-01-01T00:00:00.000Z", notAfter: "2021-01-01T00:00:00.000Z" },
    ],
    ...over,
  };
}

function modules(t: TokenListing = token()): ListedModule[] {
  return [
    { path: "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so", name: "p11-kit-proxy", source: "default", isProxy: true, slots: [], note: "the default module" },
    {
      path: "/usr/lib/softhsm/libsofthsm2.so", name: "softhsm2", source: "p11-kit", isProxy: false,
      library: { manufacturer: "SoftHSM", description: "Implementation of PKCS11", version: "2.6", cryptokiVersion: "2.40" },
      slots: [
        { slotId: "123", description: "SoftHSM slot ID 0x7b", manufacturer: "SoftHSM project", tokenPresent: true, token: t },
        { slotId: "124", description: "SoftHSM slot ID 0x7c", manufacturer: "SoftHSM project", tokenPresent: true, token: { ...token(), initialized: false, uri: "", label: "" } },
      ],
    },
    { path: "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so", name: "tpm2_pkcs11", source: "p11-kit", isProxy: false, error: "C_Initialize returned CKR_GENERAL_ERROR", slots: [] },
  ];
}

test("table pads every column but the last", () => {
  assert.equal(table(["A", "BB"], [["xxx", "y"], ["z", ""]], "  "), "  A    BB\n  xxx  y\n  z\n");
});

test("the human listing shows modules, slots, token fields, key and certificate tables, and every exact URI", () => {
  const out = formatInventory(modules(), { now: new Date("2026-06-01T00:00:00Z") });
  assert.match(out, /^Module p11-kit-proxy {2}\/usr\/lib\/x86_64-linux-gnu\/p11-kit-proxy\.so {2}\[p11-kit proxy\]\n {2}note: the default module\n/);
  assert.match(out, /Module softhsm2 {2}\/usr\/lib\/softhsm\/libsofthsm2\.so {2}\[p11-kit\]\n {2}library: SoftHSM "Implementation of PKCS11" 2\.6 \(Cryptoki 2\.40\)\n/);
  assert.match(out, /Slot 123 "SoftHSM slot ID 0x7b": token "ra-agent"\n/);
  assert.match(out, /Slot 124 "SoftHSM slot ID 0x7c": token not initialised\n/);
  assert.match(out, / {4}serial {8}1a2b3c4d\n/);
  assert.match(out, / {4}PIN {11}ok, login required, logged in for this listing\n/);
  assert.match(out, / {4}quirks {8}softhsm2\n/);
  assert.match(out, new RegExp(` {4}uri {11}${TOKEN_URI.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\n`));
  // Key table: type, size, label, id, sensitive, extractable, always-authenticate, its certificate.
  assert.match(out, /#\s+TYPE\s+SIZE\s+LABEL\s+ID\s+SENSITIVE\s+EXTRACTABLE\s+ALWAYS-AUTH\s+CERTIFICATE\n/);
  // Sorted by label: the token's own order varies between runs.
  assert.match(out, /k1\s+EC\s+P-256\s+ec\s+02\s+yes\s+no\s+yes\s+none on token\n/);
  assert.match(out, /k2\s+RSA\s+2048\s+rsa\s+01\s+yes\s+no\s+no\s+c1\n/);
  // Certificate table: subject, issuer, serial, validity (expired flagged), its key.
  assert.match(out, /c1\s+CN=leaf\s+CN=demo CA\s+7b\s+2025-01-01\s+2030-01-01\s+k2\n/);
  assert.match(out, /c2\s+CN=old\s+CN=demo CA\s+01\s+2020-01-01\s+2021-01-01 \(expired\)\s+none\n/);
  for (const [n, uri] of [["k1", K2], ["k2", K1], ["c1", C1], ["c2", C2]]) assert.ok(out.includes(`  ${n}  ${uri}\n`), `URI line for ${n}`);
  assert.match(out, /Module tpm2_pkcs11 .*\n {2}error: C_Initialize returned CKR_GENERAL_ERROR\n {2}hint: tpm2-pkcs11 could not reach a TPM.*TPM2_PKCS11_TCTI/);
});

test("without login, the listing says private objects are hidden", () => {
  const out = formatInventory(modules(token({ loggedIn: false, keys: [] })));
  assert.match(out, /Keys: 0 \(private objects hidden: add --login\)\n/);
});

test("with objects not listed (--tokens-only), no key or certificate section", () => {
  const m = modules();
  m[1].objectsListed = false;
  const out = formatInventory(m);
  assert.doesNotMatch(out, /Keys:|Certificates:|URIs:/);
  assert.match(out, /uri {11}pkcs11:token=ra-agent/);
});

test("JSON: versioned, DER as base64, module hints, nothing dropped", () => {
  const doc = inventoryToJson(modules());
  assert.equal(doc.version, 1);
  const t = doc.modules[1].slots[0].token!;
  assert.equal(t.certificates[0].derBase64, "MAMCAQE=");
  assert.equal((t.certificates[0] as unknown as { der?: unknown }).der, undefined);
  assert.deepEqual(t.keys.map((k) => k.uri), [K2, K1], "keys in label order");
  assert.deepEqual(t.keys[1].certificateUris, [C1]);
  assert.equal(t.certificates[0].keyUri, K1);
  assert.match(doc.modules[2].hint ?? "", /TPM2_PKCS11_TCTI/);
  assert.equal(doc.modules[0].note, "the default module");
  // Round-trips through JSON text.
  assert.deepEqual(JSON.parse(JSON.stringify(doc)), doc);
});

test("a URI's object=, id= and type= narrow the keys and certificates shown", () => {
  const tokenOf = (ms: ModuleListing[]) => ms[1].slots[0].token!;
  let t = tokenOf(filterInventoryObjects(modules(), { object: "rsa" }));
  assert.deepEqual([t.keys.map((k) => k.label), t.certificates.map((c) => c.label)], [["rsa"], ["rsa"]]);
  t = tokenOf(filterInventoryObjects(modules(), { id: Buffer.from([2]) }));
  assert.deepEqual([t.keys.map((k) => k.label), t.certificates.length], [["ec"], 0]);
  t = tokenOf(filterInventoryObjects(modules(), { type: "cert" }));
  assert.deepEqual([t.keys.length, t.certificates.length], [0, 2]);
  t = tokenOf(filterInventoryObjects(modules(), { type: "private", object: "ec" }));
  assert.deepEqual([t.keys.map((k) => k.label), t.certificates.length], [["ec"], 0]);
  assert.equal(filterInventoryObjects(modules(), {}).length, 3);
});
