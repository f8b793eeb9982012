/**
 * `ra-agent list` against real SoftHSM tokens (provisioned by softhsm/provision.ts
 * with the quirk fixtures): every token with its fields and URI, keys and
 * certificates matched to each other, what login reveals, and URIs that can be
 * pasted as they are to open a signer.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createVerify, X509Certificate } from "node:crypto";
import { FIXTURE_TOKENS } from "../../softhsm/provision";
import { parsePkcs11Uri } from "../../src/uri/pkcs11-uri";
import type { InventoryJson, TokenJson } from "../../src/cli/format-inventory";
import { needsSoftHsm, provisionTestHsm, type TestHsm } from "../support/softhsm";
import { runCli } from "./cli";

const { skip } = needsSoftHsm();
let hsm: TestHsm;
let env: Record<string, string>;

before(async () => {
  if (skip) return;
  hsm = await provisionTestHsm(FIXTURE_TOKENS);
  env = { SOFTHSM2_CONF: hsm.softhsmConf };
});

after(async () => {
  if (!hsm) return;
  const { closeAllPkcs11 } = await import("../../src/signer/pkcs11");
  await closeAllPkcs11();
  hsm.cleanup();
});

function provisioned(label: string, index = 0) {
  const t = hsm.tokens.filter((x) => x.label === label)[index];
  assert.ok(t, `provisioned token ${label}`);
  return t;
}

async function listJson(args: string[], extraEnv: Record<string, string> = {}): Promise<InventoryJson> {
  const r = await runCli(["list", "--pkcs11-lib", hsm.modulePath, "--json", ...args], { ...env, ...extraEnv });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as InventoryJson;
}

function tokensOf(doc: InventoryJson): TokenJson[] {
  return doc.modules.flatMap((m) => m.slots.flatMap((s) => (s.token && s.token.initialized ? [s.token] : [])));
}

function tokenBySerial(doc: InventoryJson, serial: string): TokenJson {
  const t = tokensOf(doc).find((x) => x.serial === serial);
  assert.ok(t, `token with serial ${serial} listed`);
  return t;
}

test("without login: every token with its fields and exact URI; public certificates; private keys hidden", { skip }, async () => {
  const doc = await listJson([]);
  assert.equal(doc.modules.length, 1);
  assert.equal(doc.modules[0].library?.manufacturer, "SoftHSM");
  const tokens = tokensOf(doc);
  assert.deepEqual(tokens.map((t) => t.label).sort(), ["quirks", "ra-agent", "twin", "twin"]);
  // The two tokens labelled "twin" get distinct URIs through their serials.
  const twins = tokens.filter((t) => t.label === "twin");
  assert.notEqual(twins[0].uri, twins[1].uri);
  for (const t of twins) assert.equal(parsePkcs11Uri(t.uri).serial, t.serial);

  const ra = tokenBySerial(doc, provisioned("ra-agent").serial);
  assert.equal(ra.manufacturer, "SoftHSM project");
  assert.equal(ra.model, "SoftHSM v2");
  assert.equal(ra.pinState, "ok");
  assert.equal(ra.loginRequired, true);
  assert.ok(ra.flags.includes("login-required") && ra.flags.includes("token-initialized"));
  assert.deepEqual(ra.quirks, ["softhsm2"]);
  assert.equal(ra.loggedIn, false);
  assert.equal(ra.keys.length, 0, "SoftHSM's private keys are private objects");
  assert.deepEqual(ra.certificates.map((c) => c.label).sort(), ["ec-p256", "ec-p384", "rsa-2048"]);

  // A private key with CKA_PRIVATE false is visible without login.
  const quirks = tokenBySerial(doc, provisioned("quirks").serial);
  assert.deepEqual(quirks.keys.map((k) => k.label), ["no-login"]);
  assert.ok(!quirks.certificates.some((c) => c.label === "private-cert"), "a private certificate needs login");
});

test("with --login: keys with type, size, id, label, sensitivity and their certificates, each with an exact URI that opens a signer", { skip }, async () => {
  const tok = provisioned("ra-agent");
  const doc = await listJson(["--login", `pkcs11:token=ra-agent?pin-source=file:${tok.pinFile}`]);
  const t = tokenBySerial(doc, tok.serial);
  assert.equal(t.loggedIn, true);
  assert.equal(tokensOf(doc).length, 1, "the URI narrows the listing to one token");
  const expected: Record<string, [string, number | undefined, string | undefined]> = { "rsa-2048": ["RSA", 2048, undefined], "ec-p256": ["EC", 256, "P-256"], "ec-p384": ["EC", 384, "P-384"] };
  assert.deepEqual(t.keys.map((k) => k.label).sort(), Object.keys(expected).sort());

  const pkcs11 = await import("../../src/signer/pkcs11");
  for (const k of t.keys) {
    const want = tok.keys.find((x) => x.label === k.label)!;
    const [type, bits, curve] = expected[k.label];
    assert.equal(k.keyType, type);
    if (type === "RSA") assert.equal(k.bits, bits);
    else assert.equal(k.curve, curve);
    assert.equal(k.idHex, want.idHex);
    assert.equal(k.sensitive, true);
    assert.equal(k.extractable, false);
    assert.equal(k.alwaysAuthenticate, false);
    const parsed = parsePkcs11Uri(k.uri);
    assert.deepEqual([parsed.token, parsed.serial, parsed.object, parsed.type, parsed.id?.toString("hex")], ["ra-agent", tok.serial, k.label, "private", want.idHex]);

    // Its certificate: matched both ways, with subject, issuer, serial and validity.
    assert.equal(k.certificateUris.length, 1);
    const cert = t.certificates.find((c) => c.uri === k.certificateUris[0])!;
    assert.equal(cert.keyUri, k.uri);
    const x = new X509Certificate(want.certificatePem);
    assert.equal(cert.subject, x.subject.split("\n").join(", "));
    assert.equal(cert.issuer, x.issuer.split("\n").join(", "));
    assert.equal(cert.serialHex, x.serialNumber.toLowerCase());
    assert.equal(cert.notAfter, new Date(x.validTo).toISOString());
    assert.equal(cert.notBefore, new Date(x.validFrom).toISOString());
    assert.equal(Buffer.from(cert.derBase64, "base64").toString("base64"), x.raw.toString("base64"));

    // Paste the listed URIs as they are: they open a signer whose signature verifies.
    const signer = await pkcs11.openPkcs11Signer({ keyUri: k.uri, certificateUri: cert.uri, pin: pkcs11.staticPinProvider(tok.pin) });
    try {
      const message = Buffer.from(`listed ${k.label}`);
      const sig = await signer.sign(message);
      assert.ok(createVerify("sha256").update(message).verify({ key: x.publicKey, dsaEncoding: "der" }, sig), `${k.label} signs`);
    } finally {
      await signer.close();
    }
  }
});

test("with --login on the quirks token: always-authenticate, key without certificate, key without public-key object, two certificates for one key, expired certificate", { skip }, async () => {
  const tok = provisioned("quirks");
  const t = tokenBySerial(await listJson(["--login", `pkcs11:serial=${tok.serial}?pin-source=file:${tok.pinFile}`]), tok.serial);
  const key = (label: string) => {
    const k = t.keys.find((x) => x.label === label);
    assert.ok(k, `key ${label} listed`);
    return k;
  };
  assert.equal(key("always-auth").alwaysAuthenticate, true);
  assert.deepEqual(key("no-cert").certificateUris, [], "no certificate on the token for this key");
  const noPub = key("no-pubkey-ec");
  assert.deepEqual([noPub.keyType, noPub.curve], ["EC", "P-256"], "type and curve come from the private key itself");
  assert.equal(noPub.certificateUris.length, 1, "matched to its certificate without a public-key object");
  const two = key("two-certs");
  assert.equal(two.certificateUris.length, 2, "both certificates with the key's public key are listed");
  assert.deepEqual(two.certificateUris.map((u) => parsePkcs11Uri(u).object).sort(), ["two-certs", "two-certs-attestation"]);
  assert.ok(t.certificates.some((c) => c.label === "private-cert"), "the private certificate shows after login");
  const expired = t.certificates.find((c) => c.label === "expired")!;
  assert.ok(new Date(expired.notAfter!) < new Date());
});

test("the human listing: tables and one URI line per object, the same URIs as --json", { skip }, async () => {
  const tok = provisioned("ra-agent");
  const filter = `pkcs11:token=ra-agent?pin-source=file:${tok.pinFile}`;
  const text = await runCli(["list", "--pkcs11-lib", hsm.modulePath, "--login", filter], env);
  assert.equal(text.code, 0, text.stderr);
  const doc = await listJson(["--login", filter]);
  const t = tokenBySerial(doc, tok.serial);
  assert.match(text.stdout, /#\s+TYPE\s+SIZE\s+LABEL\s+ID\s+SENSITIVE\s+EXTRACTABLE\s+ALWAYS-AUTH\s+CERTIFICATE/);
  assert.match(text.stdout, /#\s+SUBJECT\s+ISSUER\s+SERIAL\s+NOT BEFORE\s+NOT AFTER\s+KEY/);
  // One "kN  URI" / "cN  URI" line per object (the token may return objects in another order on each run).
  const uriLines = (prefix: string) => [...text.stdout.matchAll(new RegExp(`^ +${prefix}\\d+  (pkcs11:\\S+)$`, "gm"))].map((m) => m[1]).sort();
  assert.deepEqual(uriLines("k"), t.keys.map((k) => k.uri).sort());
  assert.deepEqual(uriLines("c"), t.certificates.map((c) => c.uri).sort());
  assert.ok(!text.stdout.includes(tok.pin) && !text.stderr.includes(tok.pin), "the PIN is never printed");
});

test("a URI with object= lists that key's objects only; --tokens-only lists no objects", { skip }, async () => {
  const tok = provisioned("ra-agent");
  const t = tokenBySerial(await listJson(["--login", `pkcs11:token=ra-agent;object=ec-p256?pin-source=file:${tok.pinFile}`]), tok.serial);
  assert.deepEqual([t.keys.map((k) => k.label), t.certificates.map((c) => c.label)], [["ec-p256"], ["ec-p256"]]);
  const only = await listJson(["--tokens-only"]);
  assert.equal(only.modules[0].objectsListed, false);
  assert.ok(tokensOf(only).every((x) => x.keys.length === 0 && x.certificates.length === 0));
});

test("a module that cannot be loaded: reported in the listing, and a non-zero exit when it was the only one asked for", { skip }, async () => {
  const r = await runCli(["list", "--pkcs11-lib", "/nonexistent/libnothing.so", "--json"], env);
  assert.equal(r.code, 3, "exit status of token errors");
  const doc = JSON.parse(r.stdout) as InventoryJson;
  assert.match(doc.modules[0].error ?? "", /cannot load PKCS#11 module \/nonexistent\/libnothing\.so/);
  assert.match(r.stderr, /no module given with --pkcs11-lib could be used/);
});

test("without --pkcs11-lib: every module registered with p11-kit (and known ones installed), each token under the module that serves it", { skip }, async (t) => {
  const { listP11KitModules } = await import("../../src/signer/pkcs11");
  const { realpathSync } = await import("node:fs");
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  const registered = listP11KitModules();
  if (!registered.some((m) => real(m.path) === real(hsm.modulePath))) {
    // The Debian softhsm2 package registers it; a machine without that module file cannot show it here.
    if (process.env.CI === "true") assert.fail("SoftHSM is not registered with p11-kit (/usr/share/p11-kit/modules/softhsm2.module)");
    t.skip("SoftHSM is not registered with p11-kit on this machine");
    return;
  }
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  // A fresh HOME: modules such as tpm2-pkcs11 create state there when they are loaded without their configuration.
  const home = mkdtempSync(join(tmpdir(), "ra-home-"));
  try {
    const r = await runCli(["list", "--json"], { ...env, HOME: home });
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as InventoryJson;
    const proxy = doc.modules.find((m) => m.isProxy);
    assert.ok(proxy, "p11-kit-proxy is shown");
    assert.equal(proxy.slots.length, 0, "but not opened: its tokens are those of the modules listed");
    for (const m of registered) assert.ok(doc.modules.some((x) => real(x.path) === real(m.path)), `registered module ${m.name} is listed`);
    const soft = doc.modules.filter((m) => real(m.path) === real(hsm.modulePath));
    assert.equal(soft.length, 1, "each module once");
    assert.equal(soft[0].source, "p11-kit");
    assert.ok(tokensOf({ version: 1, modules: soft }).some((x) => x.serial === provisioned("ra-agent").serial));
    for (const m of doc.modules.filter((x) => registered.some((reg) => real(reg.path) === real(x.path) && reg.skippedByProxy))) {
      assert.equal(m.objectsListed, false, `${m.name}: trust modules are listed without their objects`);
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
