/**
 * ra-agent's PKCS#11 signer on the virtual smart card, through OpenSC: it signs,
 * and it is careful with the card's PIN retry counter (one wrong PIN costs exactly
 * one try and is never retried; no automatic login at the final try; a blocked card
 * is reported as such), and it survives the card being pulled out and put back.
 * The counter is read from the card itself (the bridge's state file and log).
 */
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createVerify, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RaError } from "../../src/errors";
import type { Pkcs11Signer } from "../../src/signer/pkcs11/index";
import { cardSkipReason, startCardFixture, type CardFixture } from "./card-fixture";

const skip = cardSkipReason();
const PIN_OK = "583920";
const PIN_BAD = "000000";
const PIN_BAD_2 = "111111";

let fx: CardFixture;
// Loaded after the fixture has pointed libpcsclite at the card's pcscd.
let p11: typeof import("../../src/signer/pkcs11/index");
// Rejected PINs are also recorded on disk, per user: this file's records stay in its own directory
// (the card's label and serial are the same in every run, and other runs may be going on).
let stateDir: string;

before(async () => {
  if (skip) return;
  stateDir = mkdtempSync(join(tmpdir(), "ra-agent-state-"));
  process.env.RA_AGENT_STATE_DIR = stateDir;
  fx = await startCardFixture({ pin: PIN_OK, maxTries: 3 });
  p11 = await import("../../src/signer/pkcs11/index");
});

after(async () => {
  if (skip) return;
  await p11?.closeAllPkcs11();
  await fx?.close();
  rmSync(stateDir, { recursive: true, force: true });
});

// Each test starts from a fresh login state: closing the signers logs out, and the
// process-wide list of refused PINs is cleared (it is what keeps a bad PIN from being
// retried, which one test checks on purpose).
afterEach(async () => {
  if (skip) return;
  await p11.closeAllPkcs11();
  p11.badPins.clear();
});

function open(pin: string, extra: { allowFinalTryLogin?: boolean } = {}): Promise<Pkcs11Signer> {
  return p11.openPkcs11Signer({
    modulePath: fx.card.modulePath,
    certificateUri: fx.card.key.certificateUri,
    keyUri: fx.card.key.keyUri,
    pin: p11.staticPinProvider(pin, "test PIN"),
    ...extra,
  });
}

/** Awaits a rejection and returns the RaError. */
async function raError(p: Promise<unknown>): Promise<RaError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RaError, `expected an RaError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected a rejection");
}

function verifies(signer: Pkcs11Signer, message: Buffer, signature: Buffer): boolean {
  const cert = new X509Certificate(Buffer.from(signer.certificate));
  return createVerify("sha256").update(message).verify(cert.publicKey, signature);
}

test("the signer signs with the card key; the signature verifies with the card certificate; one login", { skip }, async () => {
  const before = fx.card.pinEvents();
  const signer = await open(PIN_OK);
  assert.equal(signer.keyType, "RSA");
  assert.equal(signer.algorithm, "AWS4-X509-RSA-SHA256");
  assert.equal(signer.hardwareBacked, true);
  assert.deepEqual(Buffer.from(signer.certificate), Buffer.from(new X509Certificate(fx.card.key.certificatePem).raw));
  for (const text of ["first", "second", "third"]) {
    const message = Buffer.from(`AWS4-X509-RSA-SHA256\n20250101T000000Z\n${text}`);
    assert.ok(verifies(signer, message, await signer.sign(message)));
  }
  assert.equal(fx.card.pinEvents().verified - before.verified, 1, "logged in once for three signatures");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });
});

test("a wrong PIN spends exactly one try, says what is left, and is never tried again", { skip }, async () => {
  const before = fx.card.pinEvents();
  const first = await raError(open(PIN_BAD));
  assert.equal(first.code, "PKCS11_PIN_INCORRECT");
  assert.equal(first.kind, "pin");
  assert.match(first.message, /CKR_PIN_INCORRECT/);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 }, "exactly one try spent");

  // The same PIN again, in the same process: refused before any C_Login.
  const again = await raError(open(PIN_BAD));
  assert.equal(again.code, "PKCS11_PIN_KNOWN_BAD");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 }, "no try spent on a PIN already refused");

  // Another wrong PIN: the card is now at its final try, and the error says so.
  const second = await raError(open(PIN_BAD_2));
  assert.equal(second.code, "PKCS11_PIN_INCORRECT");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 1 });
  assert.match(second.describe(), /one (PIN )?try left|final (PIN )?try|1 try left/i, second.describe());
  assert.equal(fx.card.pinEvents().wrong - before.wrong, 2, "two VERIFYs with a PIN, one per distinct wrong PIN");
});

test("after the card was pulled out and put back, a refused PIN stays refused and a new signer opens", { skip }, async () => {
  await fx.card.stopBridge();
  await fx.card.startBridge({ resetPinCounter: true });
  const first = await open(PIN_OK);
  const m1 = Buffer.from("before removal");
  assert.ok(verifies(first, m1, await first.sign(m1)));
  await first.close(); // the last signer on the token: logs out, so the next open must log in
  assert.equal((await raError(open(PIN_BAD))).code, "PKCS11_PIN_INCORRECT");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 });
  const before = fx.card.pinEvents();

  await fx.card.stopBridge();
  await fx.card.startBridge();
  const refused = await raError(open(PIN_BAD));
  assert.equal(refused.code, "PKCS11_PIN_KNOWN_BAD", refused.describe());
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 }, "no try spent after re-insertion");

  const second = await open(PIN_OK);
  const m2 = Buffer.from("after re-insertion");
  assert.ok(verifies(second, m2, await second.sign(m2)));
  assert.equal(fx.card.pinEvents().wrong, before.wrong, "the bad PIN never reached the card again");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });
});

test("at the card's final try the signer does not log in on its own and the counter is unchanged", { skip }, async () => {
  await fx.card.stopBridge();
  await fx.card.startBridge({ triesLeft: 1 });
  const before = fx.card.pinEvents();

  const refused = await raError(open(PIN_OK));
  assert.equal(refused.code, "PKCS11_PIN_FINAL_TRY");
  assert.equal(refused.kind, "pin");
  assert.match(refused.describe(), /final|one (PIN )?try left/i);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 1 }, "counter unchanged");
  assert.deepEqual(fx.card.pinEvents(), before, "no VERIFY with a PIN reached the card");

  // Explicitly allowed (--allow-final-try), the right PIN logs in and resets the counter.
  const signer = await open(PIN_OK, { allowFinalTryLogin: true });
  const message = Buffer.from("final try allowed");
  assert.ok(verifies(signer, message, await signer.sign(message)));
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });
});

test("a blocked card gives a clear CKR_PIN_LOCKED error, without sending the PIN", { skip }, async () => {
  await fx.card.stopBridge();
  await fx.card.startBridge({ triesLeft: 0 });
  const before = fx.card.pinEvents();
  try {
    const locked = await raError(open(PIN_OK));
    assert.equal(locked.code, "PKCS11_PIN_LOCKED");
    assert.equal(locked.kind, "pin");
    assert.match(locked.message, /locked/i);
    assert.match(locked.hint ?? "", /PUK|unblock/i);
    assert.deepEqual(fx.card.pinEvents(), before, "the PIN was not sent to a blocked card");
    assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 0 });
  } finally {
    await fx.card.stopBridge();
    await fx.card.startBridge({ resetPinCounter: true });
  }
});

test("card pulled out: signing fails with a clear error; card back: one login and signing works again", { skip }, async () => {
  const signer = await open(PIN_OK);
  const message = Buffer.from("before removal");
  assert.ok(verifies(signer, message, await signer.sign(message)));
  const loginsBefore = fx.card.pinEvents().verified;

  await fx.card.stopBridge();
  const gone = await raError(signer.sign(Buffer.from("card out")));
  assert.equal(gone.kind, "token");
  assert.equal(gone.code, "PKCS11_TOKEN_NOT_PRESENT", gone.describe());
  assert.match(gone.describe(), /not present/);
  // Asking again while the card is out fails the same way and spends nothing.
  assert.equal((await raError(signer.sign(Buffer.from("still out")))).code, "PKCS11_TOKEN_NOT_PRESENT");

  await fx.card.startBridge();
  for (const text of ["after reinsertion 1", "after reinsertion 2"]) {
    const m = Buffer.from(text);
    assert.ok(verifies(signer, m, await signer.sign(m)));
  }
  assert.equal(fx.card.pinEvents().verified - loginsBefore, 1, "logged in exactly once after the card came back");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });
});
