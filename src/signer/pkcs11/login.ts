/**
 * Login rules that keep tokens from locking:
 * - a PIN the token refused is remembered and not tried again: in this process
 *   (as an HMAC under a per-process key, {@link badPins}) and across processes of
 *   this user (rejected-pins.ts), until a different PIN logs in;
 * - no login when the token reports the user PIN locked;
 * - no automatic login at the token's final try: only with a PIN typed at the
 *   prompt for this run, or with {@link LoginPolicy.allowFinalTryLogin};
 * - one C_Login per attempt, never a retry loop;
 * - after a refused PIN, the token's PIN state (final try, locked, few tries left)
 *   is read at once and reported.
 */
import { createHmac, randomBytes } from "node:crypto";
import * as pkcs11js from "pkcs11js";
import { pinStateOf } from "./constants";
import { hasCkr, Pkcs11CallError, pinLockedHint, PinRefusedError, PinTriesState, toRaError } from "./errors";
import type { Quirks } from "./native-config";
import type { PinResult } from "./pin";
import { clearRejectedPins, findRejectedPin, recordRejectedPin, RejectedPinToken } from "./rejected-pins";
import type { TokenDescription } from "./token";

/** Caller's choices about logging in. */
export interface LoginPolicy {
  /**
   * Log in even when the token reports `CKF_USER_PIN_FINAL_TRY` with a PIN that was
   * not typed at the prompt (CLI `--allow-final-try`). A wrong PIN then locks the token.
   */
  allowFinalTryLogin?: boolean;
}

/** The token a login is for. */
export interface LoginTarget {
  /** `token "label" (serial …)`, for messages. */
  tokenName: string;
  /** In-process identity (module, manufacturer, model, serial, label). */
  tokenKey: string;
  /** The token as the cross-process rejected-PIN records name it (label, serial, module path). */
  tokenRef: RejectedPinToken;
  quirks: Quirks;
  /** Fresh `CK_TOKEN_INFO.flags` (C_GetTokenInfo), undefined when the token cannot be read. */
  freshFlags?: () => number | undefined;
}

const processKey = randomBytes(32);

/** PINs refused by tokens in this process, keyed by token identity. */
export class BadPinRegistry {
  /** Mark → when the token refused it. */
  private readonly marks = new Map<string, Date>();

  private mark(tokenKey: string, pin: string): string {
    return createHmac("sha256", processKey).update(tokenKey).update("\u0000").update(pin).digest("hex");
  }

  /** Remembers that the token refused this PIN. */
  add(tokenKey: string, pin: string, at = new Date()): void {
    this.marks.set(this.mark(tokenKey, pin), at);
  }

  /** True when the token refused this PIN before. */
  has(tokenKey: string, pin: string): boolean {
    return this.marks.has(this.mark(tokenKey, pin));
  }

  /** When the token refused this PIN, or undefined. */
  refusedAt(tokenKey: string, pin: string): Date | undefined {
    return this.marks.get(this.mark(tokenKey, pin));
  }

  /** Forgets every mark (tests). */
  clear(): void {
    this.marks.clear();
  }
}

/** The process-wide registry of refused PINs. */
export const badPins = new BadPinRegistry();

/**
 * The PIN state that token flags report, as far as this token's flags can be
 * trusted: SoftHSM sets "count low" after any failure and TPMs never warn
 * (`pinFlagsReliable` in quirks.json), so their "ok" and "count low" mean `unknown`.
 */
export function pinTriesState(flags: number | undefined, quirks: Quirks): PinTriesState {
  if (flags === undefined) return "unknown";
  const state = pinStateOf(flags);
  if ((state === "ok" || state === "count-low") && !quirks.pinFlagsReliable) return "unknown";
  return state;
}

/** The words for a PIN state, after a wrong PIN. */
export function pinStateNote(state: PinTriesState): string {
  switch (state) {
    case "locked":
      return "the PIN is now locked";
    case "final-try":
      return "final try: one more wrong PIN locks the token";
    case "count-low":
      return "few tries left";
    case "ok":
      return "the token does not report that few tries are left";
    case "to-be-changed":
      return "the token wants the PIN changed";
    case "not-initialized":
      return "the token reports no user PIN set";
    default:
      return "this token does not report how many tries are left";
  }
}

function knownBadError(opts: { tokenName: string; pin: PinResult; at: Date; file?: string; state: PinTriesState }): PinRefusedError {
  const when = opts.at.toISOString().replace(/\.\d{3}Z$/, "Z");
  return new PinRefusedError(
    "PKCS11_PIN_KNOWN_BAD",
    `this PIN (from ${opts.pin.source}) was already rejected by ${opts.tokenName} at ${when}; ra-agent will not try it again (tokens lock after a few wrong PINs)`,
    opts.state,
    {
      hint: opts.file
        ? `fix the PIN source (${opts.pin.source}); the record clears by itself when the PIN changes (a different PIN that logs in clears it), or delete ${opts.file}`
        : `fix the PIN source (${opts.pin.source}); ra-agent tries again only with a different PIN`,
    },
  );
}

/**
 * Refuses a login that could lock the token, before any C_Login: the token reports the
 * PIN locked; the PIN was rejected before (in this process, or recorded by any
 * ra-agent process of this user); the token is at its final try and the PIN was not
 * typed for this run.
 * @throws PinRefusedError (kind `pin`) `PKCS11_PIN_LOCKED`, `PKCS11_PIN_KNOWN_BAD`, `PKCS11_PIN_FINAL_TRY`
 * @remarks TPMs never report a final try; their hint (quirks.json `finalTryHint`) does
 *   not promise that a good login resets the counter, since a TPM's does not.
 */
export function checkLoginAllowed(opts: { token: TokenDescription; pin: PinResult; policy: LoginPolicy; userType: "user" | "context-specific" } & Omit<LoginTarget, "freshFlags">): void {
  const { token, tokenName, pin, quirks } = opts;
  const state = pinTriesState(token.flags, quirks);
  if (token.flags & pkcs11js.CKF_USER_PIN_LOCKED) {
    throw new PinRefusedError("PKCS11_PIN_LOCKED", `the user PIN of ${tokenName} is locked; not logging in`, "locked", { hint: pinLockedHint(quirks) });
  }
  const recorded = findRejectedPin(opts.tokenRef, pin.pin);
  if (recorded) throw knownBadError({ tokenName, pin, at: recorded.at, file: recorded.file, state });
  const refusedAt = badPins.refusedAt(opts.tokenKey, pin.pin);
  if (refusedAt) throw knownBadError({ tokenName, pin, at: refusedAt, state });
  if (token.flags & pkcs11js.CKF_USER_PIN_FINAL_TRY && !pin.interactive && !opts.policy.allowFinalTryLogin) {
    throw new PinRefusedError("PKCS11_PIN_FINAL_TRY", `${tokenName} reports one PIN try left before it locks; not logging in automatically with the PIN from ${pin.source}`, "final-try", {
      hint: quirks.finalTryHint ?? "make sure the PIN is right, then run once interactively (type it at the prompt) or pass --allow-final-try; a good login resets the counter",
    });
  }
}

/**
 * One C_Login. `CKR_USER_ALREADY_LOGGED_IN` counts as success (login state is per
 * token, shared by sessions). A refused PIN is added to {@link badPins} and to the
 * cross-process records; a user login with a PIN clears the token's records.
 * After `CKR_PIN_INCORRECT` the token's flags are read again (C_GetTokenInfo) and
 * the PIN state goes into the message and `pinState`.
 * @throws Pkcs11CallError `PKCS11_PIN_INCORRECT` (with `pinState`), `PKCS11_PIN_LOCKED`
 *   and the other C_Login errors, naming the CKR
 */
export function login(api: pkcs11js.PKCS11, session: Buffer, userType: "user" | "context-specific", pin: string | undefined, ctx: LoginTarget): void {
  const type = userType === "user" ? pkcs11js.CKU_USER : pkcs11js.CKU_CONTEXT_SPECIFIC;
  try {
    api.C_Login(session, type, pin);
  } catch (e) {
    if (userType === "user" && hasCkr(e, pkcs11js.CKR_USER_ALREADY_LOGGED_IN)) return;
    if (pin !== undefined && hasCkr(e, pkcs11js.CKR_PIN_INCORRECT, pkcs11js.CKR_PIN_INVALID, pkcs11js.CKR_PIN_LEN_RANGE)) {
      badPins.add(ctx.tokenKey, pin);
      recordRejectedPin(ctx.tokenRef, pin);
    }
    const err = toRaError(e, { operation: userType === "user" ? "C_Login" : "C_Login(CKU_CONTEXT_SPECIFIC)", token: ctx.tokenName, quirks: ctx.quirks });
    if (err instanceof Pkcs11CallError && err.ckr === pkcs11js.CKR_PIN_INCORRECT) {
      const state = pinTriesState(ctx.freshFlags?.(), ctx.quirks);
      const hint = state === "locked" ? `${err.hint}. The PIN is locked now: ${pinLockedHint(ctx.quirks)}` : err.hint;
      throw new Pkcs11CallError(err.kind, err.code, `${err.message}; ${pinStateNote(state)}`, err.ckr, err.operation, { hint, cause: e, pinState: state });
    }
    if (err instanceof Pkcs11CallError && err.ckr === pkcs11js.CKR_PIN_LOCKED) {
      throw new Pkcs11CallError(err.kind, err.code, err.message, err.ckr, err.operation, { hint: err.hint, cause: e, pinState: "locked" });
    }
    throw err;
  }
  if (userType === "user" && pin !== undefined) clearRejectedPins(ctx.tokenRef);
}
