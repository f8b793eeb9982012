/**
 * Signing with keys generated inside a (software) TPM, through tpm2-pkcs11 and
 * ra-agent's PKCS#11 signer: RSA and EC signatures verified with node:crypto
 * against the certificates stored on the token, the event loop turning while
 * the TPM works, and the fault path: swtpm stopped under an open signer, then
 * restarted.
 *
 * One TPM for the whole file (tpm2-pkcs11 binds to one TCTI per process); the
 * tests run in order and share it.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createVerify, X509Certificate } from "node:crypto";
import { isRaError } from "../../src/errors";
import type { Pkcs11Signer } from "../../src/signer/pkcs11";
import type { ProvisionedTpm, ProvisionedTpmKey } from "../../scripts/tpm/provision";
import { startTpmFixture, tpmSkipReason, type TpmFixture } from "./tpm-fixture";

const skip = tpmSkipReason();
let fixture: TpmFixture | undefined;
let tpm: ProvisionedTpm;
let pkcs11: typeof import("../../src/signer/pkcs11");

before(async () => {
  if (skip) return;
  fixture = await startTpmFixture();
  tpm = fixture.tpm;
  // Loaded only after the fixture set TPM2_PKCS11_TCTI / TPM2_PKCS11_STORE.
  pkcs11 = await import("../../src/signer/pkcs11");
});

after(async () => {
  if (pkcs11) await pkcs11.closeAllPkcs11();
  await fixture?.close();
});

function key(type: "RSA" | "EC"): ProvisionedTpmKey {
  const k = tpm.keys.find((x) => x.keyType === type);
  assert.ok(k, `the fixture has a ${type} key`);
  return k;
}

async function open(k: ProvisionedTpmKey, pin = tpm.token.pin): Promise<Pkcs11Signer> {
  return pkcs11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: tpm.modulePath, pin: pkcs11.staticPinProvider(pin) });
}

function verifies(k: ProvisionedTpmKey, message: Buffer, signature: Buffer): boolean {
  return createVerify("sha256").update(message).verify({ key: new X509Certificate(k.certificatePem).publicKey, dsaEncoding: "der" }, signature);
}

const signers: Pkcs11Signer[] = [];
after(async () => {
  for (const s of signers) await s.close();
});

test("the provisioned certificates are issued by the demo CA for keys that stay in the TPM", { skip }, () => {
  const ca = new X509Certificate(tpm.caPem);
  assert.equal(tpm.keys.length, 2);
  for (const k of tpm.keys) {
    const cert = new X509Certificate(k.certificatePem);
    assert.ok(cert.verify(ca.publicKey), `${k.label} certificate is signed by the CA`);
    assert.equal(cert.publicKey.asymmetricKeyType, k.keyType === "RSA" ? "rsa" : "ec");
    assert.match(k.keyUri, /^pkcs11:token=ra-agent-tpm;object=[a-z0-9-]+;id=[%0-9A-F]+;type=private$/);
  }
  assert.equal(new X509Certificate(key("RSA").certificatePem).publicKey.asymmetricKeyDetails?.modulusLength, 2048);
  assert.equal(new X509Certificate(key("EC").certificatePem).publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
});

for (const type of ["RSA", "EC"] as const) {
  test(`signs with the TPM's ${type} key; node:crypto verifies it against the token's certificate`, { skip }, async () => {
    const k = key(type);
    const signer = await open(k);
    signers.push(signer);
    assert.equal(signer.keyType, type);
    assert.equal(signer.algorithm, type === "RSA" ? "AWS4-X509-RSA-SHA256" : "AWS4-X509-ECDSA-SHA256");
    assert.equal(signer.hardwareBacked, true, "TPM keys are sensitive and not extractable");
    assert.deepEqual(Buffer.from(signer.certificate), k.certificateDer, "the certificate came from the token");
    const message = Buffer.from(`AWS4-X509-${type}-SHA256\n20250101T000000Z\n20250101/us-east-1/rolesanywhere/aws4_request\n${"ab".repeat(32)}`);
    for (const digest of ["SHA256", "SHA384", "SHA512"] as const) {
      const signature = await signer.sign(message, digest);
      const hash = digest.toLowerCase().replace("sha", "sha");
      const ok = createVerify(hash).update(message).verify({ key: new X509Certificate(k.certificatePem).publicKey, dsaEncoding: "der" }, signature);
      assert.ok(ok, `${type} ${digest} signature verifies`);
    }
    if (type === "RSA") assert.equal((await signer.sign(message)).length, 256);
  });
}

test("both keys on the token share one login", { skip }, () => {
  assert.equal(signers.length, 2);
  const status = signers.map((s) => s.status());
  assert.equal(status[0].loginAttempts, 1);
  assert.equal(status[1].loginAttempts, 1, "login is per token, shared by every signer on it");
  assert.deepEqual(status[0].token.quirks, ["tpm2-pkcs11"]);
});

test("the event loop keeps turning while the TPM signs", { skip }, async (t) => {
  // A TPM signature takes milliseconds of device time; done synchronously it would
  // freeze the loop for the whole batch. Count timer ticks during 20 signatures:
  // with the signature on libuv's pool the timer fires between (and during) them.
  const signer = signers[1] ?? (await open(key("EC")));
  let ticks = 0;
  let last = performance.now();
  let longestGap = 0;
  const timer = setInterval(() => {
    ticks++;
    const now = performance.now();
    longestGap = Math.max(longestGap, now - last);
    last = now;
  }, 1);
  const t0 = performance.now();
  try {
    for (let i = 0; i < 20; i++) await signer.sign(Buffer.from(`message ${i}`));
  } finally {
    clearInterval(timer);
  }
  // For the record only (no timing assertions): how long the loop was held at most.
  t.diagnostic(`20 TPM signatures in ${Math.round(performance.now() - t0)} ms; ${ticks} timer ticks; longest gap between ticks ${longestGap.toFixed(1)} ms`);
  assert.ok(ticks >= 10, `timer ticked ${ticks} times during 20 TPM signatures (expected at least 10)`);
});

test("swtpm stopped under an open signer: signing fails fast and clearly; restarted: it recovers with one login", { skip }, async (t) => {
  const k = key("EC");
  const signer = signers.find((s) => s.keyType === "EC")!;
  const message = Buffer.from("before the TPM goes away");
  assert.ok(verifies(k, message, await signer.sign(message)));
  const before = signer.status();

  await tpm.stop();
  const t0 = performance.now();
  const err = await signer.sign(Buffer.from("while the TPM is away")).then(
    () => assert.fail("signing must fail while swtpm is stopped"),
    (e: unknown) => e,
  );
  const failedAfterMs = Math.round(performance.now() - t0);
  t.diagnostic(`failed after ${failedAfterMs} ms: ${(err as Error).message}`);
  assert.ok(isRaError(err), `an RaError, got ${String(err)}`);
  assert.equal(err.kind, "token", `kind token, got ${err.kind} (${err.code})`);
  // A hang would be caught by the test runner's timeout; speed is not asserted here.
  assert.doesNotMatch(err.message + (err.hint ?? ""), new RegExp(tpm.token.pin), "no PIN in the error");

  await tpm.start();
  const recovered = await signer.sign(message);
  assert.ok(verifies(k, message, recovered), "the signature after the restart verifies");
  const afterStatus = signer.status();
  assert.equal(afterStatus.loginAttempts, before.loginAttempts + 1, "exactly one new login after the TPM came back");
  assert.ok(afterStatus.recoveries > before.recoveries);
  // The other signer on the token works too, without another login.
  const rsa = signers.find((s) => s.keyType === "RSA")!;
  assert.ok(verifies(key("RSA"), message, await rsa.sign(message)));
  assert.equal(rsa.status().loginAttempts, afterStatus.loginAttempts);
});
