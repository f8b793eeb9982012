/**
 * The PKCS#11 backend: the only code in ra-agent that calls `C_*` functions.
 * Load it lazily (`await import("./pkcs11/index")`): it loads the pkcs11js addon.
 *
 * Process-wide state: each module file is loaded and initialised once, and each
 * token has one session pool and one login, shared by every signer on it. Call
 * {@link closeAllPkcs11} before exiting to close sessions and finalise modules.
 */
import { logger } from "../../log/logger";
import { loadedModules } from "./module";
import { tokenContexts } from "./session";

export { openPkcs11Signer, Pkcs11Signer } from "./signer";
export type { Pkcs11SignerOptions, Pkcs11SignerStatus, Pkcs11TokenInfo } from "./signer";
export { findCertificates, listPkcs11, moduleCandidates } from "./enumerate";
export type { FoundCertificate, ListOptions, ModuleListing, SlotListing, TokenListing, KeyListing, CertificateListing } from "./enumerate";
export { chainPinProviders, defaultPinProvider, envPinProvider, staticPinProvider, ttyPinProvider, uriPinProvider, readPinFile, PIN_ENV, PIN_FILE_ENV } from "./pin";
export type { PinProvider, PinRequest, PinResult } from "./pin";
export { badPins } from "./login";
export type { LoginPolicy } from "./login";
export { resolveModule, loadModule } from "./module";
export { listP11KitModules } from "./p11-kit";
export { Pkcs11CallError, PinRefusedError } from "./errors";
export type { PinTriesState } from "./errors";
export { STATE_DIR_ENV, stateDir, rejectedPinsPath } from "./rejected-pins";

/**
 * Closes every token's sessions (which logs them out) and finalises every module
 * loaded in this process. Signers opened before are unusable afterwards. Idempotent.
 */
export async function closeAllPkcs11(): Promise<void> {
  for (const ctx of tokenContexts()) {
    try {
      ctx.close();
    } catch (e) {
      logger.debug("closing a token context failed", { tokenName: ctx.name, error: (e as Error).message });
    }
  }
  for (const m of loadedModules()) m.close();
}
