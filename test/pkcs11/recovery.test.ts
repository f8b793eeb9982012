/**
 * Recovery when the token drops our sessions underneath us (as after a card
 * reset or an HSM failover): the signer finds the token again, logs in once with
 * the PIN that worked, finds the key again and retries once, also under
 * concurrency. Simulated with C_CloseAllSessions from a second module handle.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, verify } from "node:crypto";
import { Writable } from "node:stream";
import winston from "winston";
import * as pkcs11js from "pkcs11js";
import { closeAllSessionsUnderneath } from "../support/close-sessions";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";
import { RaError } from "../../src/errors";
import { logger } from "../../src/log/logger";
import type * as P11 from "../../src/signer/pkcs11/index";

let hsm: TestHsm;
let p11: typeof P11;

/** Runs `fn` and returns what the process-wide logger wrote meanwhile. */
async function captureLog(fn: () => Promise<void>): Promise<string> {
  let text = "";
  const stream = new Writable({
    write(chunk, _enc, done) {
      text += String(chunk);
      done();
    },
  });
  const transport = new winston.transports.Stream({ stream });
  logger.add(transport);
  try {
    await fn();
  } finally {
    logger.remove(transport);
  }
  return text;
}

/** Awaits a rejection and checks it is an RaError (never a raw pkcs11js error). */
async function raError(p: Promise<unknown>): Promise<RaError> {
  const e = await p.then(() => assert.fail("expected a rejection"), (err: unknown) => err);
  assert.ok(e instanceof RaError, `an RaError, got ${(e as Error)?.name}: ${String(e)}`);
  return e;
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

  test("the recovery warning names the real error (CKR_SESSION_HANDLE_INVALID), never CKR_OK", async () => {
    const signer = await p11.openPkcs11Signer({ certificateUri: k().certificateUri, modulePath: hsm.modulePath, pin: p11.staticPinProvider(hsm.tokens[0].pin) });
    await signer.sign(Buffer.from("warm"));
    closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
    const log = await captureLog(async () => {
      await signer.sign(Buffer.from("after reset"));
    });
    assert.match(log, /lost the token session; finding the token again and retrying once .*"error":"CKR_SESSION_HANDLE_INVALID"/);
    assert.doesNotMatch(log, /CKR_OK/);
    await signer.close();
  });

  test("a raw pkcs11js error caught by an outer wrapper still names the C_* call and the CKR; logs never say CKR_OK for other errors", async () => {
    const { toRaError, describeError, errorLogFields } = await import("../../src/signer/pkcs11/errors");
    const api = p11.loadModule(hsm.modulePath).api;
    let raw: unknown;
    try {
      api.C_FindObjectsInit(Buffer.alloc(8, 0x7f), []); // no such session
    } catch (e) {
      raw = e;
    }
    assert.ok(raw instanceof pkcs11js.Pkcs11Error);
    const err = toRaError(raw, { operation: "opening the PKCS#11 key" });
    assert.equal(err.code, "PKCS11_SESSION_LOST");
    assert.match(err.message, /C_FindObjectsInit \(opening the PKCS#11 key\) returned CKR_SESSION_HANDLE_INVALID/);
    assert.deepEqual(errorLogFields(raw), { error: "CKR_SESSION_HANDLE_INVALID" });
    // Not PKCS#11 errors: their own code or name, never CKR_OK (pkcs11js's default code 0).
    assert.deepEqual(describeError(new pkcs11js.Pkcs11Error("module not loaded")), { code: "Pkcs11Error", message: "module not loaded" });
    assert.deepEqual(errorLogFields(Object.assign(new Error("open failed"), { code: "ENOENT" })), { error: "ENOENT", detail: "open failed" });
    assert.deepEqual(errorLogFields(new TypeError("bad argument")), { error: "TypeError", detail: "bad argument" });
  });

  test("after a failed open (wrong PIN) and a token reset, the next open works; no raw Pkcs11Error escapes", async () => {
    await p11.closeAllPkcs11();
    // Like a smart card pulled out and put back: the context of the failed open keeps a session that is now dead.
    const bad = p11.staticPinProvider("00000000", "test PIN");
    assert.equal((await raError(p11.openPkcs11Signer({ certificateUri: k().certificateUri, modulePath: hsm.modulePath, pin: bad }))).code, "PKCS11_PIN_INCORRECT");
    closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
    assert.equal((await raError(p11.openPkcs11Signer({ certificateUri: k().certificateUri, modulePath: hsm.modulePath, pin: bad }))).code, "PKCS11_PIN_KNOWN_BAD");
    closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
    let asked = 0;
    const good: P11.PinProvider = { getPin: async () => { asked++; return { pin: hsm.tokens[0].pin, source: "test PIN", interactive: false }; } };
    // By key URI: the first thing done on the dead session is the login.
    const signer = await p11.openPkcs11Signer({ keyUri: k().keyUri, modulePath: hsm.modulePath, pin: good });
    assert.equal(asked, 1, "the dead session was noticed before the PIN was asked for");
    const m = Buffer.from("after the reset");
    assert.ok(verifies(m, await signer.sign(m)));
    // Enumeration with a login on a token whose sessions died underneath.
    closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
    const [listed] = await p11.listPkcs11({ modulePaths: [hsm.modulePath], uri: "pkcs11:token=recovery", login: true, pin: good });
    const t = listed.slots.find((s) => s.token?.label === "recovery")?.token;
    assert.equal(t?.objectsError, undefined);
    assert.equal(t?.keys.length, 1);
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
