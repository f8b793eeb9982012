/**
 * The virtual smart card itself, seen through OpenSC with raw PKCS#11 calls: it is a
 * token with a sensitive RSA key that signs, and its PIN counter behaves like a
 * real card's (63Cx → CKR_PIN_INCORRECT, final-try flag, blocked → CKR_PIN_LOCKED,
 * kept across a re-insertion). The ra-agent signer on this card: card-signer.test.ts.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createVerify, X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as pkcs11js from "pkcs11js";
import { cardSkipReason, startCardFixture, type CardFixture } from "./card-fixture";

const skip = cardSkipReason();
const PIN_OK = "472913";
const PIN_BAD = "000000";

let fx: CardFixture;
let p11: pkcs11js.PKCS11;

before(async () => {
  if (skip) return;
  fx = await startCardFixture({ pin: PIN_OK, maxTries: 3 });
  p11 = new pkcs11js.PKCS11();
  p11.load(fx.card.modulePath);
  p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
});

after(async () => {
  if (skip) return;
  try {
    p11?.C_Finalize();
  } finally {
    p11?.close();
    await fx?.close();
  }
});

/** The slot holding the card, found by label (OpenSC slot ids follow readers). */
function cardSlot(): Buffer {
  for (const slot of p11.C_GetSlotList(true)) {
    if (p11.C_GetTokenInfo(slot).label.trim() === fx.card.token.label) return slot;
  }
  throw new Error(`token ${fx.card.token.label} not present`);
}

function tokenFlags(): number {
  return p11.C_GetTokenInfo(cardSlot()).flags;
}

/** C_Login on a fresh session; returns the CKR value (0 = CKR_OK). The session is closed. */
function tryLogin(pin: string): number {
  const session = p11.C_OpenSession(cardSlot(), pkcs11js.CKF_SERIAL_SESSION);
  try {
    p11.C_Login(session, pkcs11js.CKU_USER, pin);
    p11.C_Logout(session);
    return pkcs11js.CKR_OK;
  } catch (e) {
    if (e instanceof pkcs11js.Pkcs11Error) return e.code;
    throw e;
  } finally {
    p11.C_CloseSession(session);
  }
}

test("OpenSC sees the card: label, CAC model, a sensitive RSA-2048 key that signs for its certificate", { skip }, () => {
  const info = p11.C_GetTokenInfo(cardSlot());
  assert.equal(info.label.trim(), fx.card.token.label);
  assert.equal(info.serialNumber.trim(), fx.card.token.serial);
  assert.equal(info.manufacturerID.trim(), "Common Access Card");
  assert.ok(info.flags & pkcs11js.CKF_LOGIN_REQUIRED);

  const session = p11.C_OpenSession(cardSlot(), pkcs11js.CKF_SERIAL_SESSION);
  try {
    p11.C_Login(session, pkcs11js.CKU_USER, PIN_OK);
    p11.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }]);
    const keys = p11.C_FindObjects(session, 10);
    p11.C_FindObjectsFinal(session);
    assert.equal(keys.length, 1);
    const attrs = p11.C_GetAttributeValue(session, keys[0], [
      { type: pkcs11js.CKA_LABEL }, { type: pkcs11js.CKA_ID }, { type: pkcs11js.CKA_SENSITIVE },
      { type: pkcs11js.CKA_EXTRACTABLE }, { type: pkcs11js.CKA_KEY_TYPE },
    ]);
    assert.equal(attrs[0].value!.toString(), "CAC ID Certificate");
    assert.deepEqual(attrs[1].value, Buffer.from([0x00, 0x01]));
    assert.equal((attrs[2].value as Buffer)[0], 1, "sensitive");
    assert.equal((attrs[3].value as Buffer)[0], 0, "not extractable");
    assert.equal((attrs[4].value as Buffer).readUInt32LE(0), pkcs11js.CKK_RSA);

    const message = Buffer.from("GET /sessions card test");
    p11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, keys[0]);
    const signature = p11.C_Sign(session, message, Buffer.alloc(256));
    const cert = new X509Certificate(fx.card.key.certificatePem);
    assert.equal(cert.subject, `CN=${fx.card.token.label}`);
    assert.ok(createVerify("sha256").update(message).verify(cert.publicKey, signature), "signature verifies with the card certificate");
    p11.C_Logout(session);
  } finally {
    p11.C_CloseSession(session);
  }
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 }, "a right PIN costs no try");
  assert.deepEqual(fx.card.pinEvents(), { verified: 1, wrong: 0, refusedBlocked: 0 }, "one C_Login, one VERIFY");
});

test("each wrong PIN spends exactly one try; the final try shows in the token flags; a right PIN resets", { skip }, () => {
  assert.equal(tryLogin(PIN_BAD), pkcs11js.CKR_PIN_INCORRECT);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 });
  assert.equal(tokenFlags() & pkcs11js.CKF_USER_PIN_FINAL_TRY, 0, "two tries left is not the final try");

  assert.equal(tryLogin(PIN_BAD), pkcs11js.CKR_PIN_INCORRECT);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 1 });
  assert.ok(tokenFlags() & pkcs11js.CKF_USER_PIN_FINAL_TRY, "CKF_USER_PIN_FINAL_TRY with one try left");
  // Reading the flags asks the card (VERIFY without data): that costs nothing.
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 1 });

  assert.equal(tryLogin(PIN_OK), pkcs11js.CKR_OK);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });
  assert.equal(tokenFlags() & (pkcs11js.CKF_USER_PIN_FINAL_TRY | pkcs11js.CKF_USER_PIN_LOCKED), 0);
  assert.deepEqual(fx.card.pinEvents(), { verified: 2, wrong: 2, refusedBlocked: 0 });
});

test("a blocked card refuses even the right PIN with CKR_PIN_LOCKED, also after re-insertion, until reset", { skip }, async () => {
  for (let left = 2; left >= 0; left--) {
    assert.equal(tryLogin(PIN_BAD), pkcs11js.CKR_PIN_INCORRECT);
    assert.equal(fx.card.readPinCounter().triesLeft, left);
  }
  assert.ok(tokenFlags() & pkcs11js.CKF_USER_PIN_LOCKED, "CKF_USER_PIN_LOCKED");
  assert.equal(tryLogin(PIN_OK), pkcs11js.CKR_PIN_LOCKED);
  assert.equal(fx.card.readPinCounter().triesLeft, 0);

  await fx.card.stopBridge();
  assert.ok(!p11.C_GetSlotList(true).some((s) => p11.C_GetTokenInfo(s).label.trim() === fx.card.token.label), "card removed");
  await fx.card.startBridge();
  assert.equal(tryLogin(PIN_OK), pkcs11js.CKR_PIN_LOCKED, "the counter survives a bridge restart");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 0 });

  assert.equal(fx.card.pinEvents().refusedBlocked, 2, "a blocked card does not check the PIN");

  await fx.card.stopBridge();
  await fx.card.startBridge({ triesLeft: 1 });
  assert.ok(tokenFlags() & pkcs11js.CKF_USER_PIN_FINAL_TRY, "counter set to the final try");
  await fx.card.stopBridge();
  await fx.card.startBridge({ resetPinCounter: true });
  assert.equal(tryLogin(PIN_OK), pkcs11js.CKR_OK);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });
});

test("the bridge keeps its counter across restarts, refuses an unreadable counter file, exits 0 on SIGTERM", { skip }, async () => {
  const bridge = path.join(fx.card.dir, "bin", "vcard-bridge");
  const dir = await mkdtemp(path.join(os.tmpdir(), "ra-card-bridge-"));
  try {
    const state = path.join(dir, "pin-state.json");
    const runBridge = (extra: string[], stopAfterMs?: number) => new Promise<{ code: number | null; stderr: string }>((resolve) => {
      // Port 1 on loopback: nothing listens, so the bridge waits for vpcd until stopped.
      const child = spawn(bridge, ["--nssdb", path.join(fx.card.dir, "nssdb"), "--nickname", "ra-agent-card",
        "--pin-state", state, "--port", "1", "--max-tries", "5", ...extra], { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
      if (stopAfterMs !== undefined) setTimeout(() => child.kill("SIGTERM"), stopAfterMs);
      child.on("exit", (code) => resolve({ code, stderr }));
    });

    const first = await runBridge([], 300);
    assert.equal(first.code, 0, `clean exit on SIGTERM: ${first.stderr}`);
    assert.deepEqual(JSON.parse(await readFile(state, "utf8")), { maxTries: 5, triesLeft: 5 });

    await writeFile(state, "{\"maxTries\":5,\"triesLeft\":2}\n");
    await runBridge([], 300);
    assert.deepEqual(JSON.parse(await readFile(state, "utf8")), { maxTries: 5, triesLeft: 2 }, "a restart keeps the counter");

    await writeFile(state, "garbage");
    const refused = await runBridge([]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /cannot read PIN state .*--reset-pin-counter/);

    const reset = await runBridge(["--reset-pin-counter"], 300);
    assert.equal(reset.code, 0);
    assert.deepEqual(JSON.parse(await readFile(state, "utf8")), { maxTries: 5, triesLeft: 5 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
