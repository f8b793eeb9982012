/**
 * Signing lanes, the owner's side. A quick key (SoftHSM P-256: C_SignInit and
 * C_Sign take ~80 µs together) signs at the speed of the one thread that calls
 * C_Sign, while the token could sign on several sessions at once. Under
 * concurrent load the PKCS#11 thread (the owner of every login, recovery and
 * C_Finalize) lends a *lane thread* one extra session and the key's handle: a
 * {@link LaneGrant}. The lane thread only calls C_SignInit and C_Sign on it; it
 * never logs in, recovers or finalises, and hands anything unusual back to the
 * owner (see ./thread/lane-main.ts).
 *
 * Safety rests on two shared words per grant: `valid`, cleared by the owner, and
 * `busy`, set by the lane around each signature. The lane sets `busy`, then
 * checks `valid`; the owner clears `valid`, then waits while `busy` is set. With
 * sequentially consistent atomics one of them always sees the other, so the owner
 * never closes the session, drops the login or finalises the module while a lane
 * signature is under way, and a lane never starts one on a session or key handle
 * that may have been reused.
 */
import * as pkcs11js from "pkcs11js";
import { logger } from "../../log/logger";
import type { SignMechanism } from "./mechanisms";
import type { Pkcs11Module } from "./module";

import { LANE_BUSY, LANE_VALID } from "./lane-control";

export { LANE_BUSY, LANE_VALID };

/** A revocation that waits this long for a lane signature logs a warning (and again after as long), ms. */
const REVOKE_WARN_MS = 2000;

/** What a lane thread needs to sign with a lent session: plain data that crosses postMessage. */
export interface LaneGrantDescription {
  grant: number;
  /** The module file; the lane loads it without initialising it (the owner did). */
  modulePath: string;
  session: Uint8Array;
  key: Uint8Array;
  mechanism: SignMechanism;
  /** EC keys: bytes of r (and of s). */
  ecFieldBytes?: number;
  /** The certificate's public key (SPKI DER): the lane verifies its first signature. */
  publicKey: Uint8Array;
  keyUri: string;
  /** Two Int32 words, {@link LANE_VALID} and {@link LANE_BUSY}. */
  control: SharedArrayBuffer;
}

let nextGrant = 1;
const grants = new Map<number, LaneGrant>();

/** One session lent to a lane thread. */
export class LaneGrant {
  readonly id = nextGrant++;
  readonly control = new SharedArrayBuffer(8);
  private readonly words = new Int32Array(this.control);
  private revoked = false;

  /**
   * @param owner who the grant belongs to (a token context): {@link revokeLaneGrants} selects by it
   */
  constructor(
    readonly module: Pkcs11Module,
    readonly owner: object,
    readonly session: Buffer,
  ) {
    Atomics.store(this.words, LANE_VALID, 1);
    grants.set(this.id, this);
  }

  /**
   * Takes the session back: no lane signature starts on it from now on, one under
   * way is waited for, and the session is closed (unless the module is about to be
   * finalised, which closes it anyway). Idempotent.
   */
  revoke(closeSession = true): void {
    if (this.revoked) return;
    this.revoked = true;
    grants.delete(this.id);
    Atomics.store(this.words, LANE_VALID, 0);
    // No deadline: closing the session or finalising the module under a C_Sign of
    // another thread is undefined behaviour. A lane thread that dies has its busy
    // word cleared by the main thread (./thread/sign-lane.ts).
    while (Atomics.load(this.words, LANE_BUSY) === 1) {
      if (Atomics.wait(this.words, LANE_BUSY, 1, REVOKE_WARN_MS) === "timed-out") {
        logger.warn("waiting for a signature on a signing lane to end before taking its session back", { grant: this.id });
      }
    }
    if (!closeSession) return;
    try {
      this.module.api.C_CloseSession(this.session);
    } catch (e) {
      logger.debug("C_CloseSession of a lane session failed (already closed?)", { error: (e as Error).message });
    }
  }
}

/**
 * Opens the session of a new grant.
 * @throws pkcs11js errors from C_OpenSession
 */
export function openLaneGrant(module: Pkcs11Module, owner: object, slot: Buffer): LaneGrant {
  const session = module.api.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  return new LaneGrant(module, owner, session);
}

/** True once the grant was taken back. */
export function isRevoked(grant: LaneGrant): boolean {
  return !grants.has(grant.id);
}

/**
 * The module handed out `session` for a new session: a grant that still names that
 * number lost its session underneath us (the token dropped it), and must neither
 * be used nor closed, since the number now belongs to the new session.
 */
export function forgetLaneSession(session: Buffer): void {
  for (const g of [...grants.values()]) if (g.session.equals(session)) g.revoke(false);
}

/** The live grant with this number, if any. */
export function laneGrant(id: number): LaneGrant | undefined {
  return grants.get(id);
}

/**
 * Revokes every grant lent by `owner`, or on `module`: called before anything that
 * ends sessions or makes handles stale (dropping a token's sessions, C_Finalize).
 */
export function revokeLaneGrants(by: { owner?: object; module?: Pkcs11Module }, closeSessions = true): void {
  for (const g of [...grants.values()]) {
    if ((by.owner && g.owner === by.owner) || (by.module && g.module === by.module)) g.revoke(closeSessions);
  }
}
