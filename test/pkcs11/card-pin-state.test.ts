/**
 * After a wrong PIN, the token's PIN state is read at once (C_GetTokenInfo) and
 * reported in the message and in the error's `pinState`: on the virtual smart card
 * (through OpenSC), the only token here with a real retry counter. OpenSC reports
 * the final try and the lock for this card, not "few tries left".
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { RaError } from "../../src/errors";
import type * as P11 from "../../src/signer/pkcs11/index";
import { cardSkipReason, startCardFixture, type CardFixture } from "../card/card-fixture";

const skip = cardSkipReason();
const PIN_OK = "583920";

let fx: CardFixture;
let p11: typeof P11;

before(async () => {
  if (skip) return;
  fx = await startCardFixture({ pin: PIN_OK, maxTries: 3 });
  // Loaded after the fixture pointed libpcsclite at the card's pcscd.
  p11 = await import("../../src/signer/pkcs11/index");
});

after(async () => {
  if (skip) return;
  await p11?.closeAllPkcs11();
  await fx?.close();
});

function open(pin: string, allowFinalTryLogin = false): Promise<P11.Pkcs11Signer> {
  return p11.openPkcs11Signer({
    modulePath: fx.card.modulePath,
    certificateUri: fx.card.key.certificateUri,
    keyUri: fx.card.key.keyUri,
    pin: p11.staticPinProvider(pin, "test PIN"),
    allowFinalTryLogin,
  });
}

async function rejection(p: Promise<unknown>): Promise<RaError & { pinState?: string }> {
  const e = await p.then(() => assert.fail("expected a rejection"), (err: unknown) => err);
  assert.ok(e instanceof RaError, `an RaError, got ${String(e)}`);
  return e;
}

test("each wrong PIN reports the card's PIN state: no warning, then final try, then locked", { skip }, async () => {
  const first = await rejection(open("000001"));
  assert.equal(first.code, "PKCS11_PIN_INCORRECT");
  assert.equal(first.pinState, "ok");
  assert.match(first.message, /CKR_PIN_INCORRECT .*; the token does not report that few tries are left$/);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 });

  const second = await rejection(open("000002"));
  assert.equal(second.code, "PKCS11_PIN_INCORRECT");
  assert.equal(second.pinState, "final-try");
  assert.match(second.message, /; final try: one more wrong PIN locks the token$/);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 1 });

  // At the final try no automatic login, even with the right PIN; the refusal carries the state too.
  const refused = await rejection(open(PIN_OK));
  assert.equal(refused.code, "PKCS11_PIN_FINAL_TRY");
  assert.equal(refused.pinState, "final-try");
  assert.match(refused.hint ?? "", /a good login resets the counter/, "true for a card");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 1 });

  // Allowed explicitly, a third wrong PIN locks the card: the error says so and how to unblock it.
  const third = await rejection(open("000003", true));
  assert.equal(third.code, "PKCS11_PIN_INCORRECT");
  assert.equal(third.pinState, "locked");
  assert.match(third.message, /; the PIN is now locked$/);
  assert.match(third.hint ?? "", /The PIN is locked now: .*PUK/);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 0 });

  const locked = await rejection(open(PIN_OK, true));
  assert.equal(locked.code, "PKCS11_PIN_LOCKED");
  assert.equal(locked.pinState, "locked");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 0 }, "no PIN sent to a locked card");
});
