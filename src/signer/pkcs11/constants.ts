/**
 * PKCS#11 constants that pkcs11js 2.1.7 does not export, and name lookups for
 * the ones it does (so that errors and listings show `CKR_PIN_INCORRECT`, not 160).
 */
import * as pkcs11js from "pkcs11js";

/** `CKA_PUBLIC_KEY_INFO` (PKCS#11 2.40): DER SubjectPublicKeyInfo on key objects; often empty. */
export const CKA_PUBLIC_KEY_INFO = 0x129;

/** `CK_SLOT_INFO.flags`: a token is in the slot. */
export const CKF_TOKEN_PRESENT = 0x1;

/** Session states (`CK_SESSION_INFO.state`). */
export const CKS_RO_PUBLIC_SESSION = 0;
export const CKS_RO_USER_FUNCTIONS = 1;
export const CKS_RW_PUBLIC_SESSION = 2;
export const CKS_RW_USER_FUNCTIONS = 3;
export const CKS_RW_SO_FUNCTIONS = 4;

/** `CK_UNAVAILABLE_INFORMATION` as pkcs11js reports 32-bit counters. */
export const CK_UNAVAILABLE_32 = 0xffffffff;

const constants = pkcs11js as unknown as Record<string, unknown>;

function reverseTable(prefix: string): Map<number, string> {
  const table = new Map<number, string>();
  for (const [name, value] of Object.entries(constants)) {
    // The first name wins: pkcs11js lists the standard name before vendor aliases.
    if (name.startsWith(prefix) && typeof value === "number" && !table.has(value)) table.set(value, name);
  }
  return table;
}

let ckrNames: Map<number, string> | undefined;
let ckmNames: Map<number, string> | undefined;

/** The `CKR_*` name of a return value, or its hex form when unknown (vendor-defined). */
export function ckrName(code: number): string {
  ckrNames ??= reverseTable("CKR_");
  return ckrNames.get(code) ?? `CKR_0x${code.toString(16).padStart(8, "0")}`;
}

/** The `CKM_*` name of a mechanism, or its hex form. */
export function mechanismName(mechanism: number): string {
  ckmNames ??= reverseTable("CKM_");
  return ckmNames.get(mechanism) ?? `CKM_0x${mechanism.toString(16)}`;
}

/** The numeric value of a `CKM_*`, `CKR_*`, … name, or undefined when pkcs11js does not know it. */
export function constantValue(name: string): number | undefined {
  const v = constants[name];
  return typeof v === "number" ? v : undefined;
}

/** The numeric value of a `CKM_*` name, or undefined when pkcs11js does not know it. */
export const mechanismByName = constantValue;

/** Token flags worth showing to a user, in display order. */
const TOKEN_FLAGS: ReadonlyArray<[number, string]> = [
  [pkcs11js.CKF_TOKEN_INITIALIZED, "token-initialized"],
  [pkcs11js.CKF_LOGIN_REQUIRED, "login-required"],
  [pkcs11js.CKF_USER_PIN_INITIALIZED, "user-pin-initialized"],
  [pkcs11js.CKF_PROTECTED_AUTHENTICATION_PATH, "protected-authentication-path"],
  [pkcs11js.CKF_WRITE_PROTECTED, "write-protected"],
  [pkcs11js.CKF_RNG, "rng"],
  [pkcs11js.CKF_USER_PIN_COUNT_LOW, "user-pin-count-low"],
  [pkcs11js.CKF_USER_PIN_FINAL_TRY, "user-pin-final-try"],
  [pkcs11js.CKF_USER_PIN_LOCKED, "user-pin-locked"],
  [pkcs11js.CKF_USER_PIN_TO_BE_CHANGED, "user-pin-to-be-changed"],
  [pkcs11js.CKF_SO_PIN_LOCKED, "so-pin-locked"],
  [pkcs11js.CKF_ERROR_STATE, "error-state"],
];

/** Names of the token flags set in `flags`. */
export function tokenFlagNames(flags: number): string[] {
  return TOKEN_FLAGS.filter(([bit]) => (flags & bit) !== 0).map(([, name]) => name);
}

/** Summary of the user PIN state from token flags. */
export type PinState = "ok" | "count-low" | "final-try" | "locked" | "to-be-changed" | "not-initialized";

/** The user PIN state that token flags report (the worst one wins). */
export function pinStateOf(flags: number): PinState {
  if (flags & pkcs11js.CKF_USER_PIN_LOCKED) return "locked";
  if (flags & pkcs11js.CKF_USER_PIN_FINAL_TRY) return "final-try";
  if (flags & pkcs11js.CKF_USER_PIN_COUNT_LOW) return "count-low";
  if (flags & pkcs11js.CKF_USER_PIN_TO_BE_CHANGED) return "to-be-changed";
  if (!(flags & pkcs11js.CKF_USER_PIN_INITIALIZED)) return "not-initialized";
  return "ok";
}
