/**
 * PIN safety on a real token: a wrong PIN costs exactly one C_Login, is
 * remembered and never tried again; no C_Login without a PIN or with a PIN file
 * others can read; the final-try and locked rules.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as pkcs11js from "pkcs11js";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";
import { rejectsWith } from "../support/assert-ra-error";
import type * as P11 from "../../src/signer/pkcs11/index";
import type * as Session from "../../src/signer/pkcs11/session";
import { RaError } from "../../src/errors";
import { checkLoginAllowed, pinStateNote, pinTriesState } from "../../src/signer/pkcs11/login";
import { quirksFor } from "../../src/signer/pkcs11/native-config";
import { describeTokenInfo } from "../../src/signer/pkcs11/token";

let hsm: TestHsm;
let p11: typeof P11;
let session: typeof Session;


describe("login rules on SoftHSM", needsSoftHsm(), () => {
  const token = () => hsm.tokens[0];
  const uri = () => token().keys[0].certificateUri!;
  const loginAttempts = (): number => session.tokenContexts().find((c) => c.slot.token.serial === token().serial)?.loginAttempts ?? 0;

  before(async () => {
    hsm = await provisionTestHsm([{ label: "login", keys: [{ label: "k", keyType: "EC-P256", certificate: "private" }] }]);
    p11 = await import("../../src/signer/pkcs11/index");
    session = await import("../../src/signer/pkcs11/session");
  });
  after(async () => {
    await p11?.closeAllPkcs11();
    hsm?.cleanup();
  });

  test("no PIN anywhere: a clear error and no C_Login", async () => {
    // The default sources minus the terminal prompt (a developer may run the tests on a TTY).
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: uri(), modulePath: hsm.modulePath, pin: p11.envPinProvider() }), "PKCS11_PIN_REQUIRED", (e) => {
      assert.equal(e.kind, "pin");
      assert.match(e.message, /token "login" \(serial [0-9a-f]+, SoftHSM project SoftHSM v2\) needs a PIN/);
    });
    assert.equal(loginAttempts(), 0);
  });

  test("a PIN file readable by others is refused before any C_Login", async () => {
    const file = join(hsm.dir, "pin-0644");
    writeFileSync(file, token().pin);
    chmodSync(file, 0o644);
    process.env.RA_AGENT_PIN_FILE = file;
    try {
      await rejectsWith(p11.openPkcs11Signer({ certificateUri: uri(), modulePath: hsm.modulePath, pin: p11.envPinProvider() }), "PIN_FILE_PERMISSIONS", (e) => {
        assert.match(e.message, /mode 0644/);
        assert.equal(e.hint, `run: chmod 600 ${file}`);
      });
    } finally {
      delete process.env.RA_AGENT_PIN_FILE;
    }
    assert.equal(loginAttempts(), 0);
  });

  test("a wrong PIN: exactly one C_Login, CKR_PIN_INCORRECT named, the PIN never shown, never retried", async () => {
    const wrong = "97531086";
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: uri(), modulePath: hsm.modulePath, pin: p11.staticPinProvider(wrong, "test PIN") }), "PKCS11_PIN_INCORRECT", (e) => {
      assert.equal(e.kind, "pin");
      assert.equal(e.exitCode, 4);
      assert.match(e.message, /C_Login returned CKR_PIN_INCORRECT/);
      assert.match(e.message, /this token does not report how many tries are left/, "SoftHSM's count-low flag is not a counter (quirks.json)");
      assert.equal((e as P11.Pkcs11CallError).pinState, "unknown");
      assert.match(e.hint!, /never retries a wrong PIN/);
      assert.doesNotMatch(e.message + e.hint, new RegExp(wrong));
    });
    assert.equal(loginAttempts(), 1);
    // The same PIN again (from another source, e.g. after an agent refresh): refused without C_Login.
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: `${uri()}?pin-value=${wrong}`, modulePath: hsm.modulePath, pin: p11.uriPinProvider({ pinValue: wrong }) }), "PKCS11_PIN_KNOWN_BAD", (e) => {
      assert.match(e.message, /this PIN \(from URI pin-value\) was already rejected by token "login" .* at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; ra-agent will not try it again/);
      assert.match(e.hint!, /fix the PIN source \(URI pin-value\).*or delete .*rejected-pins\.json/);
      assert.doesNotMatch(e.message + e.hint, new RegExp(wrong));
    });
    assert.equal(loginAttempts(), 1);
    const [m] = await p11.listPkcs11({ modulePaths: [hsm.modulePath], uri: "pkcs11:token=login", tokensOnly: true });
    assert.equal(m.slots[0].token?.pinState, "count-low", "SoftHSM flags the failed login");
  });

  test("a different (right) PIN is tried: one more C_Login, then signing works", async () => {
    const signer = await p11.openPkcs11Signer({ certificateUri: uri(), modulePath: hsm.modulePath, pin: p11.staticPinProvider(token().pin) });
    assert.equal(loginAttempts(), 2);
    await signer.sign(Buffer.from("after the right PIN"));
    assert.equal(signer.status().loggedIn, true);
    await signer.close();
  });

  test("final try and locked: no automatic login; a typed PIN or --allow-final-try may", () => {
    const base = pkcs11js.CKF_TOKEN_INITIALIZED | pkcs11js.CKF_LOGIN_REQUIRED | pkcs11js.CKF_USER_PIN_INITIALIZED;
    const info = (flags: number) => describeTokenInfo({ label: "card", manufacturerID: "OpenSC Project", model: "PKCS#15", serialNumber: "1", flags } as pkcs11js.TokenInfo);
    const quirks = quirksFor({ slotManufacturer: "OpenSC Project" });
    const args = (flags: number, interactive: boolean, allowFinalTryLogin: boolean) => ({
      token: info(flags), tokenName: "card", tokenKey: `k${flags}${interactive}${allowFinalTryLogin}`, tokenRef: { label: "card", serial: "1", module: "/nonexistent/opensc-pkcs11.so" },
      pin: { pin: "123456", source: "RA_AGENT_PIN", interactive }, policy: { allowFinalTryLogin }, quirks, userType: "user" as const,
    });
    const finalTry = base | pkcs11js.CKF_USER_PIN_FINAL_TRY;
    assert.throws(() => checkLoginAllowed(args(finalTry, false, false)), (e: P11.PinRefusedError) => e.code === "PKCS11_PIN_FINAL_TRY" && e.pinState === "final-try" && /one PIN try left/.test(e.message) && /--allow-final-try/.test(e.hint!) && /a good login resets the counter/.test(e.hint!));
    assert.doesNotThrow(() => checkLoginAllowed(args(finalTry, true, false)), "typed at the prompt for this run");
    assert.doesNotThrow(() => checkLoginAllowed(args(finalTry, false, true)), "--allow-final-try");
    const locked = base | pkcs11js.CKF_USER_PIN_LOCKED;
    assert.throws(() => checkLoginAllowed(args(locked, true, true)), (e: P11.PinRefusedError) => e.code === "PKCS11_PIN_LOCKED" && e.pinState === "locked" && /PUK/.test(e.hint!));
    assert.doesNotThrow(() => checkLoginAllowed(args(base | pkcs11js.CKF_USER_PIN_COUNT_LOW, false, false)));
    const note = (flags: number | undefined, q = quirks) => pinStateNote(pinTriesState(flags, q));
    assert.equal(note(base | pkcs11js.CKF_USER_PIN_LOCKED), "the PIN is now locked");
    assert.equal(note(base | pkcs11js.CKF_USER_PIN_FINAL_TRY), "final try: one more wrong PIN locks the token");
    assert.equal(note(base | pkcs11js.CKF_USER_PIN_COUNT_LOW), "few tries left");
    assert.equal(note(base), "the token does not report that few tries are left");
    assert.equal(note(undefined), "this token does not report how many tries are left", "token unreadable after the failure");
    const tpm = quirksFor({ modulePath: "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so" });
    assert.equal(pinTriesState(base, tpm), "unknown", "a TPM's flags never warn");
    assert.equal(pinTriesState(base | pkcs11js.CKF_USER_PIN_COUNT_LOW, quirksFor({ modulePath: "/usr/lib/softhsm/libsofthsm2.so" })), "unknown", "SoftHSM's count-low is no counter");
    assert.equal(tpm.sessionPoolSize, 1, "the TPM signs one at a time");
    assert.throws(() => checkLoginAllowed({ ...args(locked, false, false), quirks: tpm }), (e: RaError) => /tpm2_dictionarylockout --clear-lockout/.test(e.hint!));
    // A TPM's failure counter decays with time or is cleared by its owner: a good login does not reset it.
    assert.throws(() => checkLoginAllowed({ ...args(finalTry, false, false), quirks: tpm }), (e: RaError) => e.code === "PKCS11_PIN_FINAL_TRY" && !/resets the counter/.test(e.hint!) && /TPM2_PT_LOCKOUT_INTERVAL/.test(e.hint!));
  });
});
