/**
 * The TPM on the PKCS#11 thread, as the agent uses it: every tpm2-pkcs11 call
 * (module load, search, C_Login, C_SignInit, C_Sign) runs on one worker thread,
 * so the main thread never loads pkcs11js and its event loop keeps turning while
 * the TPM works. PINs are asked on the main thread; errors come back with their codes.
 *
 * Its own file (own process, own swtpm): tpm2-pkcs11 binds to one TCTI per process,
 * and a process must not use a module both on the main thread and on the thread.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createVerify, X509Certificate } from "node:crypto";
import { isRaError } from "../../src/errors";
import type { PinProvider, PinRequest } from "../../src/signer/pkcs11/pin";
import type { Pkcs11Thread, ThreadedPkcs11Signer } from "../../src/signer/pkcs11/thread/pkcs11-thread";
import type { ProvisionedTpm, ProvisionedTpmKey } from "../../scripts/tpm/provision";
import { startTpmFixture, tpmSkipReason, type TpmFixture } from "./tpm-fixture";

const skip = tpmSkipReason();
let fixture: TpmFixture | undefined;
let tpm: ProvisionedTpm;
let thread: Pkcs11Thread;
const pinRequests: PinRequest[] = [];

before(async () => {
  if (skip) return;
  fixture = await startTpmFixture();
  tpm = fixture.tpm;
  // Created after the fixture set TPM2_PKCS11_TCTI / TPM2_PKCS11_STORE (the thread shares the environment).
  thread = new (await import("../../src/signer/pkcs11/thread/pkcs11-thread")).Pkcs11Thread();
});

after(async () => {
  await thread?.close();
  await fixture?.close();
});

function key(type: "RSA" | "EC"): ProvisionedTpmKey {
  const k = tpm.keys.find((x) => x.keyType === type);
  assert.ok(k, `the fixture has a ${type} key`);
  return k;
}

function pins(pin: string): PinProvider {
  return {
    getPin: async (request) => {
      pinRequests.push(request);
      return { pin, source: "test", interactive: false };
    },
  };
}

function verifies(k: ProvisionedTpmKey, message: Buffer, signature: Buffer): boolean {
  return createVerify("sha256").update(message).verify({ key: new X509Certificate(k.certificatePem).publicKey, dsaEncoding: "der" }, signature);
}

function loadedOnMainThread(fragment: string): string[] {
  return Object.keys(require.cache).filter((p) => p.includes(fragment));
}

const signers: ThreadedPkcs11Signer[] = [];

test("RSA and EC keys sign on the thread; one PIN request and one login for the token", { skip }, async () => {
  for (const type of ["RSA", "EC"] as const) {
    const k = key(type);
    const signer = await thread.openSigner({ certificateUri: k.certificateUri, modulePath: tpm.modulePath, pin: pins(tpm.token.pin) });
    signers.push(signer);
    assert.equal(signer.keyType, type);
    assert.equal(signer.hardwareBacked, true);
    assert.deepEqual(Buffer.from(signer.certificate), k.certificateDer);
    assert.match(signer.keyUri, /^pkcs11:token=ra-agent-tpm;/);
    const message = Buffer.from(`AWS4-X509-${type}-SHA256\n20250101T000000Z\n20250101/us-east-1/rolesanywhere/aws4_request\n${"cd".repeat(32)}`);
    assert.ok(verifies(k, message, await signer.sign(message)), `${type} signature from the thread verifies`);
  }
  assert.equal(pinRequests.length, 1, "the PIN was asked once, on the main thread, for both keys");
  assert.equal(pinRequests[0].kind, "user");
  const status = await signers[1].status();
  assert.equal(status.loginAttempts, 1, "one C_Login for the token");
  assert.deepEqual(status.token.quirks, ["tpm2-pkcs11"]);
  assert.equal(status.sessions.max, 1, "the TPM signs one at a time (quirks.json)");
});

test("the main thread never loads pkcs11js or the PKCS#11 module code", { skip }, () => {
  assert.deepEqual(loadedOnMainThread("/node_modules/pkcs11js/"), []);
  for (const file of ["/signer/pkcs11/module.js", "/signer/pkcs11/session.js", "/signer/pkcs11/signer.js"]) {
    assert.deepEqual(loadedOnMainThread(file), [], `${file} is loaded only on the thread`);
  }
});

test("the event loop keeps turning during concurrent TPM signatures", { skip }, async (t) => {
  const k = key("EC");
  const signer = signers[1];
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
  let signatures: Buffer[];
  try {
    signatures = await Promise.all(Array.from({ length: 20 }, (_, i) => signer.sign(Buffer.from(`message ${i}`))));
  } finally {
    clearInterval(timer);
  }
  // For the record only (no timing assertions): the longest the loop was held.
  t.diagnostic(`20 concurrent TPM signatures in ${Math.round(performance.now() - t0)} ms; ${ticks} timer ticks; longest gap ${longestGap.toFixed(1)} ms`);
  signatures.forEach((s, i) => assert.ok(verifies(k, Buffer.from(`message ${i}`), s), `signature ${i} verifies`));
  assert.ok(ticks >= 10, `timer ticked ${ticks} times during 20 TPM signatures (expected at least 10)`);
});

test("errors cross the thread with their codes; a fresh look at the token shows it present", { skip }, async () => {
  await assert.rejects(
    thread.openSigner({ certificateUri: "pkcs11:token=ra-agent-tpm;object=no-such-cert;type=cert", modulePath: tpm.modulePath, pin: pins(tpm.token.pin) }),
    (e: unknown) => isRaError(e, "PKCS11_CERTIFICATE_NOT_FOUND") && e.kind === "token" && /no-such-cert|certificate/.test(e.message) && !!e.hint,
  );
  await assert.rejects(signers[0].sign(Buffer.from("x"), "MD5" as never), (e: unknown) => isRaError(e, "UNSUPPORTED_DIGEST") && e.kind === "usage");
  const probed = await signers[0].probe();
  assert.equal(probed.present, true);
  assert.equal(probed.loggedIn, true);
});

test("closed signers and a closed thread refuse work with clear errors", { skip }, async () => {
  const extra = await thread.openSigner({ certificateUri: key("RSA").certificateUri, modulePath: tpm.modulePath, pin: pins(tpm.token.pin) });
  await extra.close();
  await assert.rejects(extra.sign(Buffer.from("after close")), (e: unknown) => isRaError(e, "SIGNER_CLOSED"));
  // The other signers still work: closing one signer keeps the token's login.
  assert.ok(verifies(key("RSA"), Buffer.from("still"), await signers[0].sign(Buffer.from("still"))));
  await thread.close();
  await assert.rejects(signers[0].sign(Buffer.from("after thread close")), (e: unknown) => isRaError(e, "PKCS11_THREAD_CLOSED"));
});
