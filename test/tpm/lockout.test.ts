/**
 * The TPM's dictionary-attack lockout, as a user meets it through tpm2-pkcs11:
 * every wrong PIN is counted by the TPM itself (the token's PIN flags never
 * warn), so ra-agent must try a wrong PIN exactly once, and a locked TPM
 * (CKR_PIN_LOCKED, even for the right PIN) must be explained: how long it
 * lasts and how to clear it.
 *
 * The TPM's own counter (tpm2_getcap) is the witness of how many tries were made.
 * One TPM for the file; the tests run in order.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createVerify, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isRaError, RaError } from "../../src/errors";
import type { ProvisionedTpm, ProvisionedTpmKey } from "../../scripts/tpm/provision";
import { startTpmFixture, tpmSkipReason, type TpmFixture } from "./tpm-fixture";

const skip = tpmSkipReason();
let fixture: TpmFixture | undefined;
let tpm: ProvisionedTpm;
let ecKey: ProvisionedTpmKey;
let pkcs11: typeof import("../../src/signer/pkcs11");

/** Real lockout settings, with a recovery time long enough not to decay during the test. */
const LOCKOUT = { maxTries: 3, recoveryTime: 900, lockoutRecoveryTime: 0 };

// Rejected PINs are also recorded on disk, per user: this file's records stay in its own directory
// (the TPM token's label and serial are the same in every run, and other runs may be going on).
let stateDir: string | undefined;

before(async () => {
  if (skip) return;
  stateDir = mkdtempSync(join(tmpdir(), "ra-agent-state-"));
  process.env.RA_AGENT_STATE_DIR = stateDir;
  fixture = await startTpmFixture({ keys: ["EC-P256"] });
  tpm = fixture.tpm;
  ecKey = tpm.keys[0];
  await tpm.setLockout(LOCKOUT);
  pkcs11 = await import("../../src/signer/pkcs11");
});

after(async () => {
  if (pkcs11) await pkcs11.closeAllPkcs11();
  await fixture?.close();
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
});

async function openWith(pin: string) {
  return pkcs11.openPkcs11Signer({ keyUri: ecKey.keyUri, certificateUri: ecKey.certificateUri, modulePath: tpm.modulePath, pin: pkcs11.staticPinProvider(pin) });
}

async function rejection(p: Promise<unknown>): Promise<RaError> {
  const e = await p.then(
    () => assert.fail("expected a rejection"),
    (err: unknown) => err,
  );
  assert.ok(isRaError(e), `an RaError, got ${String(e)}`);
  return e;
}

test("a wrong PIN is tried exactly once: CKR_PIN_INCORRECT, and the TPM counted one failure", { skip }, async () => {
  assert.equal((await tpm.lockoutState()).counter, 0);
  const err = await rejection(openWith("wrong-pin-a"));
  assert.equal(err.code, "PKCS11_PIN_INCORRECT");
  assert.equal(err.kind, "pin");
  assert.match(err.describe(), /dictionary-attack/i, "the hint says the TPM counts wrong PINs");
  assert.doesNotMatch(err.describe(), /wrong-pin/, "the PIN is not echoed");
  assert.equal((await tpm.lockoutState()).counter, 1, "exactly one authorisation failure reached the TPM");

  // The same wrong PIN again, in the same process: refused before it reaches the TPM.
  const again = await rejection(openWith("wrong-pin-a"));
  assert.equal(again.code, "PKCS11_PIN_KNOWN_BAD");
  assert.equal((await tpm.lockoutState()).counter, 1, "the known-bad PIN was not sent again");
});

test("a locked TPM refuses even the right PIN with CKR_PIN_LOCKED, explained with how long it lasts and how to clear it", { skip }, async () => {
  // Two more different wrong PINs reach maxTries (3).
  assert.equal((await rejection(openWith("wrong-pin-b"))).code, "PKCS11_PIN_INCORRECT");
  assert.equal((await rejection(openWith("wrong-pin-c"))).code, "PKCS11_PIN_INCORRECT");
  const locked = await tpm.lockoutState();
  assert.equal(locked.counter, LOCKOUT.maxTries);
  assert.equal(locked.inLockout, true);

  const err = await rejection(openWith(tpm.token.pin));
  assert.equal(err.code, "PKCS11_PIN_LOCKED");
  assert.equal(err.kind, "pin");
  const text = err.describe();
  assert.match(text, /tpm2_dictionarylockout --clear-lockout/, "names the command that clears the lockout");
  assert.match(text, /recovery time|lockout interval|seconds|minutes/i, "says the lockout ends by itself after the TPM's recovery time");
  assert.doesNotMatch(text, new RegExp(`\\b${tpm.token.pin}\\b`), "the PIN is not echoed");
  assert.equal((await tpm.lockoutState()).counter, LOCKOUT.maxTries, "a locked TPM counts no further failures");

  // The owner clears the lockout: the right PIN works again, in the same process, without a restart.
  await tpm.clearLockout();
  assert.deepEqual(await tpm.lockoutState(), { ...LOCKOUT, counter: 0, inLockout: false });
  const signer = await openWith(tpm.token.pin);
  try {
    const message = Buffer.from("after the lockout was cleared");
    const signature = await signer.sign(message);
    assert.ok(createVerify("sha256").update(message).verify({ key: new X509Certificate(ecKey.certificatePem).publicKey, dsaEncoding: "der" }, signature));
  } finally {
    await signer.close();
  }
});
