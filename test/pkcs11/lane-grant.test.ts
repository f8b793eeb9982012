/**
 * The handshake that keeps a signing lane off sessions the PKCS#11 thread takes
 * back (see src/signer/pkcs11/lane-grant.ts), on a real SoftHSM session: a
 * revocation waits while another thread is inside a signature, and closes the
 * session only after it; a lane checking afterwards sees the grant revoked.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey } from "node:crypto";
import { Worker } from "node:worker_threads";
import * as pkcs11js from "pkcs11js";
import { LANE_BUSY, LANE_VALID, laneGrant, openLaneGrant, revokeLaneGrants } from "../../src/signer/pkcs11/lane-grant";
import { closeAllPkcs11 } from "../../src/signer/pkcs11/index";
import { chooseMechanism } from "../../src/signer/pkcs11/mechanisms";
import { SignLane } from "../../src/signer/pkcs11/thread/sign-lane";
import { loadModule, Pkcs11Module } from "../../src/signer/pkcs11/module";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";

/** A thread that marks the grant busy, says so, stays "inside a signature" for `ms`, then clears the mark. */
function busyFor(control: SharedArrayBuffer, ms: number): Promise<Worker> {
  const worker = new Worker(
    `const { workerData, parentPort } = require("node:worker_threads");
     const words = new Int32Array(workerData.control);
     Atomics.store(words, ${LANE_BUSY}, 1);
     parentPort.postMessage("busy");
     Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.ms);
     parentPort.postMessage(Atomics.load(words, ${LANE_VALID}));
     Atomics.store(words, ${LANE_BUSY}, 0);
     Atomics.notify(words, ${LANE_BUSY});`,
    { eval: true, workerData: { control, ms } },
  );
  return new Promise((resolve) => worker.once("message", () => resolve(worker)));
}

describe("lane grants on SoftHSM", needsSoftHsm(), () => {
  let hsm: TestHsm;
  let module: Pkcs11Module;
  let slot: Buffer;

  before(async () => {
    hsm = await provisionTestHsm([{ label: "lanes", keys: [{ label: "ec", keyType: "EC-P256" }] }]);
    module = loadModule(hsm.modulePath);
    slot = module.api.C_GetSlotList(true).find((s) => module.api.C_GetTokenInfo(s).label.trim() === "lanes")!;
  });
  after(async () => {
    await closeAllPkcs11();
    hsm?.cleanup();
  });

  test("a revocation waits for a signature under way, then closes the lent session", async () => {
    const grant = openLaneGrant(module, {}, slot);
    const words = new Int32Array(grant.control);
    assert.equal(Atomics.load(words, LANE_VALID), 1);
    const worker = await busyFor(grant.control, 300);
    const seenInside = new Promise<number>((resolve) => worker.once("message", resolve));
    const started = Date.now();
    grant.revoke();
    const waited = Date.now() - started;
    assert.ok(waited >= 150, `the revocation waited for the signature to end (${waited} ms)`);
    assert.equal(await seenInside, 0, "the grant was already marked revoked while the signature was under way");
    assert.equal(Atomics.load(words, LANE_BUSY), 0);
    assert.throws(() => module.api.C_GetSessionInfo(grant.session), (e: unknown) => (e as { code?: number }).code === pkcs11js.CKR_SESSION_HANDLE_INVALID, "the session is closed");
    assert.equal(laneGrant(grant.id), undefined);
    await worker.terminate();
  });

  test("a lane thread that is gone, even in the middle of a signature, no longer holds up a revocation; a detached grant is invalid", async () => {
    const grant = openLaneGrant(module, {}, slot);
    const words = new Int32Array(grant.control);
    const lane = new SignLane();
    const publicKey = createPublicKey(hsm.tokens[0].keys[0].certificatePem!).export({ type: "spki", format: "der" });
    const describe = (g: typeof grant) => ({
      grant: g.id,
      modulePath: hsm.modulePath,
      session: g.session,
      key: Buffer.alloc(8),
      mechanism: chooseMechanism("EC", "SHA256", undefined),
      ecFieldBytes: 32,
      publicKey,
      keyUri: "pkcs11:token=lanes;object=ec",
      control: g.control,
    });
    const key = lane.attach(describe(grant), () => undefined);
    assert.ok(lane.running);
    // As if the thread had died inside C_Sign (a crash skips its `finally`): busy stays set.
    Atomics.store(words, LANE_BUSY, 1);
    lane.close();
    const deadline = Date.now() + 5000;
    while (Atomics.load(words, LANE_BUSY) === 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(Atomics.load(words, LANE_BUSY), 0, "the main thread cleared the busy word when the thread exited");
    assert.equal(Atomics.load(words, LANE_VALID), 0);
    const started = Date.now();
    grant.revoke();
    assert.ok(Date.now() - started < 1000, "the revocation did not wait");
    assert.equal(lane.inFlight(key), 0);

    const other = openLaneGrant(module, {}, slot);
    const otherKey = lane.attach(describe(other), () => undefined);
    lane.detach(otherKey);
    assert.equal(Atomics.load(new Int32Array(other.control), LANE_VALID), 0, "requests still queued for a detached grant will not sign");
    other.revoke();
  });

  test("revoking by owner takes back that owner's grants only; an idle grant is revoked at once", () => {
    const mine = {};
    const a = openLaneGrant(module, mine, slot);
    const b = openLaneGrant(module, {}, slot);
    const started = Date.now();
    revokeLaneGrants({ owner: mine });
    assert.ok(Date.now() - started < 100, "nothing to wait for");
    assert.equal(Atomics.load(new Int32Array(a.control), LANE_VALID), 0);
    assert.equal(Atomics.load(new Int32Array(b.control), LANE_VALID), 1);
    assert.ok(module.api.C_GetSessionInfo(b.session), "the other grant's session is open");
    revokeLaneGrants({ module });
    assert.equal(Atomics.load(new Int32Array(b.control), LANE_VALID), 0);
  });
});
