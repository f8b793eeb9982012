/**
 * Test helper: drops a token's sessions underneath the code under test. Kept apart
 * from softhsm.ts because it loads pkcs11js, which some tests check the main
 * thread never loads.
 */
import assert from "node:assert/strict";
import * as pkcs11js from "pkcs11js";

/**
 * Closes every session of this process on the token, from a separate pkcs11js
 * handle (SoftHSM's state is per process, whichever thread loaded it): what a card
 * reset or an HSM failover does to our sessions.
 */
export function closeAllSessionsUnderneath(modulePath: string, serial: string): void {
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
