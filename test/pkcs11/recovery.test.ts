/**
 * Recovery when the token drops our sessions underneath us (as after a card
 * reset or an HSM failover): the signer finds the token again, logs in once with
 * the PIN that worked, finds the key again and retries once, also under
 * concurrency. Simulated with C_CloseAllSessions from a second module handle.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, verify } from "node:crypto";
import * as pkcs11js from "pkcs11js";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";
import type * as P11 from "../../src/signer/pkcs11/index";

let hsm: TestHsm;
let p11: typeof P11;

/** Closes every session of this process on the token, from a separate pkcs11js handle. */
function closeAllSessionsUnderneath(modulePath: string, serial: string): void {
  const other = new pkcs11js.PKCS11();
  other.load(modulePath);
  try {
    other.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (e) {
    if ((e as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw e;
  }
  const slot = other.C_GetSlotList(true).find((s) => other.C_GetTokenInfo(s).serialNumber.trim() === serial);
  assert.ok(slot, "token slot");
  other.C_CloseAllSessions(slot);
  // No C_Finalize: the library is shared with the signer's handle.
}

describe("recovery after the token drops our sessions", needsSoftHsm(), () => {
  const k = () => hsm.tokens[0].keys[0];
  const verifies = (m: Buffer, s: Buffer): boolean => verify("sha256", m, { key: createPublicKey(k().certificatePem), dsaEncoding: "der" }, s);

  before(async () => {
    hsm = await provisionTestHsm([{ label: "recovery", keys: [{ label: "rsa", keyType: "RSA-2048" }] }]);
    p11 = await import("../../src/signer/pkcs11/index");
  });
  after(async () => {
    await p11?.closeAllPkcs11();
    hsm?.cleanup();
  });

  test("a signature after C_CloseAllSessions works, with one re-login", async () => {
    const signer = await p11.openPkcs11Signer({ certificateUri: k().certificateUri, modulePath: hsm.modulePath, pin: p11.staticPinProvider(hsm.tokens[0].pin) });
    const m1 = Buffer.from("before");
    assert.ok(verifies(m1, await signer.sign(m1)));
    assert.equal(signer.status().loginAttempts, 1);

    closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
    const m2 = Buffer.from("after the sessions were closed");
    assert.ok(verifies(m2, await signer.sign(m2)));
    const st = signer.status();
    assert.equal(st.loginAttempts, 2, "exactly one re-login");
    assert.equal(st.recoveries, 1);
    assert.equal(st.present, true);
    assert.equal(st.loggedIn, true);
    await signer.close();
  });

  test("concurrent signatures during recovery: one recovery, one re-login, all signatures good", async () => {
    const signer = await p11.openPkcs11Signer({ certificateUri: k().certificateUri, modulePath: hsm.modulePath, pin: p11.staticPinProvider(hsm.tokens[0].pin) });
    // Fill the pool so that several sessions are lost at once.
    await Promise.all(Array.from({ length: 8 }, (_, i) => signer.sign(Buffer.from(`warm ${i}`))));
    const before = signer.status();
    closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
    const messages = Array.from({ length: 12 }, (_, i) => Buffer.from(`concurrent after reset ${i}`));
    const signatures = await Promise.all(messages.map((m) => signer.sign(m)));
    signatures.forEach((s, i) => assert.ok(verifies(messages[i], s), `signature ${i}`));
    const st = signer.status();
    assert.equal(st.recoveries, before.recoveries + 1, "single-flight recovery");
    assert.equal(st.loginAttempts, before.loginAttempts + 1, "one re-login");
    await signer.close();
  });

  test("lookups recover too: opening a signer and listing certificates after the sessions were closed", async () => {
    const pins = p11.staticPinProvider(hsm.tokens[0].pin);
    const holder = await p11.openPkcs11Signer({ certificateUri: k().certificateUri, modulePath: hsm.modulePath, pin: pins });
    closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
    // The token's idle sessions are stale now; the searches below must not surface CKR_SESSION_HANDLE_INVALID.
    const found = await p11.findCertificates("pkcs11:token=recovery", { modulePath: hsm.modulePath, pin: pins });
    assert.equal(found.length, 1);
    closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
    const second = await p11.openPkcs11Signer({ keyUri: k().keyUri, modulePath: hsm.modulePath, pin: pins });
    const m = Buffer.from("second signer");
    assert.ok(verifies(m, await second.sign(m)));
    assert.ok(verifies(m, await holder.sign(m)));
    await Promise.all([holder.close(), second.close()]);
  });

  test("the PIN source is not asked again on recovery: the PIN that worked is reused", async () => {
    let asked = 0;
    const counting: P11.PinProvider = { getPin: async () => { asked++; return { pin: hsm.tokens[0].pin, source: "counting", interactive: false }; } };
    await p11.closeAllPkcs11(); // a fresh context: the next open logs in
    const signer = await p11.openPkcs11Signer({ certificateUri: k().certificateUri, modulePath: hsm.modulePath, pin: counting });
    assert.equal(asked, 1);
    closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
    await signer.sign(Buffer.from("x"));
    assert.equal(asked, 1);
    await signer.close();
  });
});
