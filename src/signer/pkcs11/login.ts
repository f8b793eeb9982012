/**
 * Login rules that keep tokens from locking:
 * - a PIN the token refused is remembered (as an HMAC, never in clear) and not
 *   tried again in this process until a different PIN is supplied;
 * - no login when the token reports the user PIN locked;
 * - no automatic login at the token's final try: only with a PIN typed at the
 *   prompt for this run, or with {@link LoginPolicy.allowFinalTryLogin};
 * - one C_Login per attempt, never a retry loop.
 */
import { createHmac, randomBytes } from "node:crypto";
import * as pkcs11js from "pkcs11js";
import { RaError } from "../../errors";
import { hasCkr, Pkcs11CallError, toRaError } from "./errors";
import type { Quirks } from "./native-config";
import type { PinResult } from "./pin";
import type { TokenDescription } from "./token";

/** Caller's choices about logging in. */
export interface LoginPolicy {
  /**
   * Log in even when the token reports `CKF_USER_PIN_FINAL_TRY` with a PIN that was
   * not typed at the prompt (CLI `--allow-final-try`). A wrong PIN then locks the token.
   */
  allowFinalTryLogin?: boolean;
}

const processKey = randomBytes(32);

/** PINs refused by tokens in this process, keyed by token identity. */
export class BadPinRegistry {
  private readonly marks = new Set<string>();

  private mark(tokenKey: string, pin: string): string {
    return createHmac("sha256", processKey).update(tokenKey).update("\u0000").update(pin).digest("hex");
  }

  /** Remembers that the token refused this PIN. */
  add(tokenKey: string, pin: string): void {
    this.marks.add(this.mark(tokenKey, pin));
  }

  /** True when the token refused this PIN before. */
  has(tokenKey: string, pin: string): boolean {
    return this.marks.has(this.mark(tokenKey, pin));
  }

  /** Forgets every mark (tests). */
  clear(): void {
    this.marks.clear();
  }
}

/** The process-wide registry of refused PINs. */
export const badPins = new BadPinRegistry();

/**
 * Refuses a login that could lock the token, before any C_Login.
 * @throws RaError `PKCS11_PIN_LOCKED`, `PKCS11_PIN_KNOWN_BAD`, `PKCS11_PIN_FINAL_TRY` (kind `pin`)
 */
export function checkLoginAllowed(opts: { token: TokenDescription; tokenName: string; tokenKey: string; pin: PinResult; policy: LoginPolicy; quirks: Quirks; userType: "user" | "context-specific" }): void {
  const { token, tokenName, pin } = opts;
  if (token.flags & pkcs11js.CKF_USER_PIN_LOCKED) {
    throw new RaError("pin", "PKCS11_PIN_LOCKED", `the user PIN of ${tokenName} is locked; not logging in`, {
      hint: opts.quirks.pinLockedHint ?? "unblock the user PIN with the security officer PIN or PUK, using the token vendor's tool",
    });
  }
  if (badPins.has(opts.tokenKey, pin.pin)) {
    throw new RaError("pin", "PKCS11_PIN_KNOWN_BAD", `the PIN from ${pin.source} was already refused by ${tokenName}; not trying it again (tokens lock after a few wrong PINs)`, {
      hint: "correct the PIN source; the agent tries again only when the PIN changes",
    });
  }
  if (token.flags & pkcs11js.CKF_USER_PIN_FINAL_TRY && !pin.interactive && !opts.policy.allowFinalTryLogin) {
    throw new RaError("pin", "PKCS11_PIN_FINAL_TRY", `${tokenName} reports one PIN try left before it locks; not logging in automatically with the PIN from ${pin.source}`, {
      hint: "make sure the PIN is right, then run once interactively (type it at the prompt) or pass --allow-final-try; a good login resets the counter",
    });
  }
}

/**
 * One C_Login. `CKR_USER_ALREADY_LOGGED_IN` counts as success (login state is per
 * token, shared by sessions). A refused PIN is added to {@link badPins}.
 * @throws RaError `PKCS11_PIN_INCORRECT` and the other C_Login errors, naming the CKR
 */
export function login(
  api: pkcs11js.PKCS11,
  session: Buffer,
  userType: "user" | "context-specific",
  pin: string | undefined,
  ctx: { tokenName: string; tokenKey: string; quirks: Quirks; freshFlags?: () => number | undefined },
): void {
  const type = userType === "user" ? pkcs11js.CKU_USER : pkcs11js.CKU_CONTEXT_SPECIFIC;
  try {
    api.C_Login(session, type, pin);
  } catch (e) {
    if (userType === "user" && hasCkr(e, pkcs11js.CKR_USER_ALREADY_LOGGED_IN)) return;
    if (pin !== undefined && hasCkr(e, pkcs11js.CKR_PIN_INCORRECT, pkcs11js.CKR_PIN_INVALID, pkcs11js.CKR_PIN_LEN_RANGE)) badPins.add(ctx.tokenKey, pin);
    const err = toRaError(e, { operation: userType === "user" ? "C_Login" : "C_Login(CKU_CONTEXT_SPECIFIC)", token: ctx.tokenName, quirks: ctx.quirks });
    if (err instanceof Pkcs11CallError && err.ckr === pkcs11js.CKR_PIN_INCORRECT) {
      throw new Pkcs11CallError(err.kind, err.code, `${err.message}; ${triesLeftNote(ctx.freshFlags?.(), ctx.quirks)}`, err.ckr, err.operation, { hint: err.hint, cause: e });
    }
    throw err;
  }
}

/** What the token says about the tries left after a wrong PIN (PKCS#11 reports flags, not a count). */
export function triesLeftNote(flags: number | undefined, quirks: Quirks): string {
  if (flags !== undefined) {
    if (flags & pkcs11js.CKF_USER_PIN_LOCKED) return "the token now reports the user PIN LOCKED";
    if (flags & pkcs11js.CKF_USER_PIN_FINAL_TRY) return "the token now reports ONE try left before the PIN locks";
    if (flags & pkcs11js.CKF_USER_PIN_COUNT_LOW && quirks.pinFlagsReliable) return "the token reports that few tries are left";
  }
  return quirks.pinFlagsReliable ? "the token reports more than a few tries left" : "this token does not report how many tries are left";
}
