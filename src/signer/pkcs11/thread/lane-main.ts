/**
 * Entry point of a signing lane thread (see ../lane-grant): a worker that signs
 * with sessions the PKCS#11 thread lent it, so that a quick key signs on two
 * cores under concurrent load.
 *
 * It calls C_SignInit and C_Sign only. It loads the module file (the same
 * library instance the PKCS#11 thread initialised) but never calls C_Initialize,
 * C_Finalize, C_Login or C_OpenSession. Anything unexpected (a revoked grant, any
 * PKCS#11 error, a first signature that does not verify) hands the request back
 * to the main thread, which has the PKCS#11 thread make it with all its rules on
 * recovery, PINs and verification. A grant that bounced once is not used again.
 */
import { KeyObject, createPublicKey, verify as verifySignature } from "node:crypto";
import { parentPort } from "node:worker_threads";
import * as pkcs11js from "pkcs11js";
import { ckrOf } from "../errors";
import { LANE_BUSY, LANE_VALID } from "../lane-control";
import type { LaneGrantDescription } from "../lane-grant";
import { planWith, SignMechanism } from "../mechanisms";
import { finishSignature } from "../sign-operation";
import { bytesFromWire, bytesToWire, LaneReply, LaneRequest, MessageBatch, Outbox, unbatch } from "./messages";

const port = parentPort;
if (!port) throw new Error("lane-main.ts runs only as a worker thread");

interface Lane {
  api: pkcs11js.PKCS11;
  session: Buffer;
  key: Buffer;
  mechanism: SignMechanism;
  words: Int32Array;
  publicKey: KeyObject;
  keyInfo: { ecFieldBytes?: number; uri: string };
  verified: boolean;
  /** Bounced once: every later request goes back to the PKCS#11 thread. */
  dead: boolean;
}

/** The module files loaded here, by path (loaded once, never initialised here). */
const modules = new Map<string, pkcs11js.PKCS11>();
const lanes = new Map<number, Lane>();
/** C_Sign's output buffer: signing here is synchronous and the result is copied out. */
const output = Buffer.alloc(1024);

function moduleAt(path: string): pkcs11js.PKCS11 {
  let api = modules.get(path);
  if (!api) {
    api = new pkcs11js.PKCS11();
    api.load(path);
    modules.set(path, api);
  }
  return api;
}

function attach(d: LaneGrantDescription): void {
  lanes.set(d.grant, {
    api: moduleAt(d.modulePath),
    session: Buffer.from(d.session),
    key: Buffer.from(d.key),
    mechanism: d.mechanism,
    words: new Int32Array(d.control),
    publicKey: createPublicKey({ key: Buffer.from(d.publicKey), format: "der", type: "spki" }),
    keyInfo: { ecFieldBytes: d.ecFieldBytes, uri: d.keyUri },
    verified: false,
    dead: false,
  });
}

/** The signature, or why the request goes back to the PKCS#11 thread. */
function sign(lane: Lane, message: Buffer): Buffer | string {
  const words = lane.words;
  Atomics.store(words, LANE_BUSY, 1);
  try {
    // Checked after announcing the signature: see the handshake in ../lane-grant.
    if (Atomics.load(words, LANE_VALID) !== 1) return "the grant was revoked";
    const plan = planWith(lane.mechanism, message);
    lane.api.C_SignInit(lane.session, { mechanism: plan.mechanism }, lane.key);
    const raw = lane.api.C_Sign(lane.session, plan.input, output);
    return finishSignature(raw, plan, lane.keyInfo);
  } catch (e) {
    // An operation may be left active on the session: the lane is not used again, and the owner closes it.
    const ckr = ckrOf(e);
    return ckr === undefined ? (e as Error).message : `CKR 0x${ckr.toString(16)}`;
  } finally {
    Atomics.store(words, LANE_BUSY, 0);
    Atomics.notify(words, LANE_BUSY);
  }
}

const replies = new Outbox<LaneReply>((m) => port.postMessage(m));

function handle(msg: LaneRequest): void {
  switch (msg.op) {
    case "attach":
      attach(msg.description);
      return;
    case "detach":
      lanes.delete(msg.grant);
      return;
    case "exit":
      // Ends this thread only; the requests still queued were already handed back.
      process.exit(0);
    case "sign": {
      const lane = lanes.get(msg.grant);
      const bounce = (why: string) => {
        if (lane) lane.dead = true;
        replies.push({ op: "reply", id: msg.id, ok: false, bounced: why });
      };
      if (!lane || lane.dead) return bounce(lane ? "the lane failed before" : "no such grant");
      const message = bytesFromWire(msg.message);
      const result = sign(lane, message);
      if (typeof result === "string") return bounce(result);
      // As the PKCS#11 thread does for an EC key after each lookup: the first signature is verified in full.
      if (!lane.verified) {
        if (!verifySignature(lane.mechanism.digest.replace("SHA", "sha"), message, { key: lane.publicKey, dsaEncoding: "der" }, result)) return bounce("the first signature did not verify");
        lane.verified = true;
      }
      replies.push({ op: "reply", id: msg.id, ok: true, value: bytesToWire(result) });
      return;
    }
  }
}

port.on("message", (received: LaneRequest | MessageBatch<LaneRequest>) => {
  for (const msg of unbatch(received)) handle(msg);
});
