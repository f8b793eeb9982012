/**
 * `ra-agent list` against a TPM token (swtpm + tpm2-pkcs11): the token with its
 * quirks, keys generated in the TPM matched to their certificates, the TPM's
 * extra uninitialised slot, and listed URIs that open a signer as they are.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createVerify, X509Certificate } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import type { InventoryJson, TokenJson } from "../../src/cli/format-inventory";
import type { ProvisionedTpm } from "../../scripts/tpm/provision";
import { runCli } from "./cli";
import { startTpmFixture, tpmSkipReason, type TpmFixture } from "./tpm-fixture";

const skip = tpmSkipReason();
let fixture: TpmFixture | undefined;
let tpm: ProvisionedTpm;
let home: string;

before(async () => {
  if (skip) return;
  fixture = await startTpmFixture();
  tpm = fixture.tpm;
  // tpm2-pkcs11 and other modules may create state in HOME when loaded: keep the user's untouched.
  home = await mkdtemp(path.join(os.tmpdir(), "ra-home-"));
});

after(async () => {
  const pkcs11 = await import("../../src/signer/pkcs11").catch(() => undefined);
  await pkcs11?.closeAllPkcs11();
  await fixture?.close();
  if (home) await rm(home, { recursive: true, force: true });
});

function cliEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { ...tpm.env, HOME: home, ...extra };
}

function tpmTokens(doc: InventoryJson): TokenJson[] {
  return doc.modules.flatMap((m) => m.slots.flatMap((s) => (s.token?.initialized ? [s.token] : [])));
}

test("the TPM token: fields, quirks, the extra uninitialised slot; certificates without login", { skip }, async () => {
  const r = await runCli(["list", "--pkcs11-lib", tpm.modulePath, "--json"], cliEnv());
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as InventoryJson;
  const [module] = doc.modules;
  assert.equal(module.library?.manufacturer, "tpm2-software.github.io");
  const [t] = tpmTokens(doc);
  assert.equal(t.label, tpm.token.label);
  assert.deepEqual(t.quirks, ["tpm2-pkcs11"]);
  assert.equal(t.loginRequired, true);
  assert.equal(t.pinState, "ok");
  assert.equal(t.loggedIn, false);
  assert.equal(t.keys.length, 0, "tpm2-pkcs11 private keys are private objects");
  assert.deepEqual(t.certificates.map((c) => c.label).sort(), tpm.keys.map((k) => k.label).sort());
  const uninitialised = module.slots.filter((s) => s.token && !s.token.initialized);
  assert.equal(uninitialised.length, 1, "tpm2-pkcs11 always offers one empty slot for a new token");
});

test("with --login: TPM keys (sensitive, never extractable) matched to their certificates; the listed URIs sign as they are", { skip }, async () => {
  const r = await runCli(["list", "--pkcs11-lib", tpm.modulePath, "--login", "--json"], cliEnv({ RA_AGENT_PIN: tpm.token.pin }));
  assert.equal(r.code, 0, r.stderr);
  const [t] = tpmTokens(JSON.parse(r.stdout) as InventoryJson);
  assert.equal(t.loggedIn, true);
  assert.equal(t.keys.length, tpm.keys.length);
  const uris: Array<{ keyUri: string; certUri: string; pem: string; label: string }> = [];
  for (const want of tpm.keys) {
    const k = t.keys.find((x) => x.label === want.label)!;
    assert.ok(k, `key ${want.label} listed`);
    assert.equal(k.keyType, want.keyType);
    if (want.keyType === "RSA") assert.equal(k.bits, 2048);
    else assert.equal(k.curve, "P-256");
    assert.equal(k.idHex, want.id.toString("hex"));
    assert.equal(k.sensitive, true);
    assert.equal(k.extractable, false);
    assert.equal(k.neverExtractable, true, "generated inside the TPM");
    assert.equal(k.alwaysAuthenticate, false);
    assert.equal(k.certificateUris.length, 1);
    const cert = t.certificates.find((c) => c.uri === k.certificateUris[0])!;
    assert.equal(cert.keyUri, k.uri);
    assert.equal(cert.serialHex, new X509Certificate(want.certificatePem).serialNumber.toLowerCase());
    assert.match(k.uri, /\?module-path=\/.*libtpm2_pkcs11\.so$/, "the URI names the module, so it works without --pkcs11-lib");
    uris.push({ keyUri: k.uri, certUri: cert.uri, pem: want.certificatePem, label: want.label });
  }
  assert.ok(!r.stdout.includes(`"${tpm.token.pin}"`) && !r.stderr.includes(tpm.token.pin));

  // In this process (TPM env set by the fixture), after the listing process has exited.
  const pkcs11 = await import("../../src/signer/pkcs11");
  for (const u of uris) {
    const signer = await pkcs11.openPkcs11Signer({ keyUri: u.keyUri, certificateUri: u.certUri, pin: pkcs11.staticPinProvider(tpm.token.pin) });
    try {
      const message = Buffer.from(`listed TPM key ${u.label}`);
      const sig = await signer.sign(message);
      assert.ok(createVerify("sha256").update(message).verify({ key: new X509Certificate(u.pem).publicKey, dsaEncoding: "der" }, sig));
    } finally {
      await signer.close();
    }
  }
});

test("a wrong PIN with --login: tried once (the TPM counts one failure), a PIN error, exit status 4", { skip }, async () => {
  // Turn dictionary-attack counting on (the fixture provisions with it off) so that the TPM witnesses the tries.
  await tpm.setLockout({ maxTries: 10, recoveryTime: 600, lockoutRecoveryTime: 0 });
  try {
    assert.equal((await tpm.lockoutState()).counter, 0);
    const r = await runCli(["list", "--pkcs11-lib", tpm.modulePath, "--login", "--json"], cliEnv({ RA_AGENT_PIN: "not-the-pin" }));
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /PKCS11_PIN_INCORRECT|refused the PIN/);
    assert.ok(!r.stderr.includes("not-the-pin") && !r.stdout.includes("not-the-pin"));
    assert.equal((await tpm.lockoutState()).counter, 1, "exactly one wrong PIN reached the TPM");
  } finally {
    await tpm.clearLockout();
    await tpm.setLockout({ maxTries: 1000, recoveryTime: 0, lockoutRecoveryTime: 0 });
  }
});

test("without --pkcs11-lib: the TPM token shows under the p11-kit-registered tpm2_pkcs11 module", { skip }, async (t) => {
  const { listP11KitModules } = await import("../../src/signer/pkcs11");
  if (!listP11KitModules().some((m) => /tpm2_pkcs11/.test(m.path))) {
    if (process.env.CI === "true") assert.fail("tpm2-pkcs11 is not registered with p11-kit (/usr/share/p11-kit/modules/tpm2_pkcs11.module from libtpm2-pkcs11-1)");
    t.skip("tpm2-pkcs11 is not registered with p11-kit here");
    return;
  }
  const r = await runCli(["list", "--json", "--tokens-only"], cliEnv());
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as InventoryJson;
  const m = doc.modules.find((x) => /tpm2_pkcs11/.test(x.path));
  assert.ok(m && !m.error, `tpm2_pkcs11 module listed without error: ${m?.error}`);
  assert.equal(m.source, "p11-kit");
  assert.deepEqual(tpmTokens({ version: 1, modules: [m] }).map((x) => x.label), [tpm.token.label]);
});
