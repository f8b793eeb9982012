/**
 * A thread that stops while a PIN source is slow: the PIN answered afterwards must
 * not reach the next thread (whose request numbers start again) and be used for
 * another login. Its own file: a fresh process and thread, so the numbers collide.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, verify } from "node:crypto";
import { RaError } from "../../src/errors";
import type { PinProvider } from "../../src/signer/pkcs11/pin";
import type { Pkcs11Thread } from "../../src/signer/pkcs11/thread/pkcs11-thread";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";

describe("PKCS#11 thread restart with a PIN request pending", needsSoftHsm(), () => {
  let hsm: TestHsm;
  let thread: Pkcs11Thread;

  before(async () => {
    hsm = await provisionTestHsm([{ label: "restart", keys: [{ label: "ec", keyType: "EC-P256" }] }]);
    thread = new (await import("../../src/signer/pkcs11/thread/pkcs11-thread")).Pkcs11Thread();
  });
  after(async () => {
    await thread?.close();
    hsm?.cleanup();
  });

  test("a PIN answered after its thread stopped never reaches the next thread", async () => {
    const k = hsm.tokens[0].keys[0]; // not logged in yet, so opening asks for a PIN
    let answerOld: (pin: string) => void = () => undefined;
    const slow: PinProvider = { getPin: () => new Promise((resolve) => (answerOld = (pin) => resolve({ pin, source: "slow test provider", interactive: false }))) };
    const pendingOpen = thread.openSigner({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: slow });
    await new Promise((r) => setTimeout(r, 300)); // the old thread is now waiting for that PIN
    await thread.terminateForTest();
    await assert.rejects(pendingOpen, (e: unknown) => e instanceof RaError && e.code === "PKCS11_THREAD_STOPPED");
    const right: PinProvider = {
      getPin: async () => {
        // The old thread's answer, a wrong PIN, arrives while the new thread waits for its own.
        answerOld("00000000");
        await new Promise((r) => setTimeout(r, 100));
        return { pin: hsm.tokens[0].pin, source: "test provider", interactive: false };
      },
    };
    const signer = await thread.openSigner({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: right });
    const message = Buffer.from("after the stray answer");
    assert.ok(verify("sha256", message, { key: createPublicKey(k.certificatePem!), dsaEncoding: "der" }, await signer.sign(message)));
    assert.equal((await signer.status()).loginAttempts, 1, "one login, with the right PIN");
  });

});
