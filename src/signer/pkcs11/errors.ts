/**
 * Turns pkcs11js errors into {@link RaError}s that name the CKR code, the
 * operation, the token and what to do. Branches on the numeric CKR value
 * (`Pkcs11Error.code`), never on message text.
 */
import * as pkcs11js from "pkcs11js";
import { ErrorKind, RaError } from "../../errors";
import { ckrName, PinState } from "./constants";
import type { Quirks } from "./native-config";

/**
 * What a PIN error knows about the token's user PIN after the event: the state its
 * flags report (`count-low`, `final-try`, `locked`, …), or `unknown` when the token
 * could not be read or its flags do not count tries (SoftHSM, TPMs: quirks.json).
 */
export type PinTriesState = PinState | "unknown";

/** An {@link RaError} raised by a PKCS#11 call, carrying its CKR value. */
export class Pkcs11CallError extends RaError {
  /** Numeric CKR value. */
  readonly ckr: number;
  /** `CKR_*` name. */
  readonly ckrName: string;
  /** The C_* function that failed. */
  readonly operation: string;
  /** For PIN errors (`CKR_PIN_INCORRECT`, `CKR_PIN_LOCKED`): the PIN state read right after. */
  readonly pinState?: PinTriesState;

  constructor(kind: ErrorKind, code: string, message: string, ckr: number, operation: string, options?: { hint?: string; cause?: unknown; pinState?: PinTriesState }) {
    super(kind, code, message, options);
    this.ckr = ckr;
    this.ckrName = ckrName(ckr);
    this.operation = operation;
    this.pinState = options?.pinState;
  }
}

/**
 * A login ra-agent refused before calling C_Login (`PKCS11_PIN_LOCKED`,
 * `PKCS11_PIN_FINAL_TRY`, `PKCS11_PIN_KNOWN_BAD`), with the token's PIN state.
 */
export class PinRefusedError extends RaError {
  readonly pinState: PinTriesState;

  constructor(code: string, message: string, pinState: PinTriesState, options: { hint: string; cause?: unknown }) {
    super("pin", code, message, options);
    this.pinState = pinState;
  }
}

/** The CKR value of a pkcs11js error (or of a {@link Pkcs11CallError}), else undefined. */
export function ckrOf(e: unknown): number | undefined {
  let code: number | undefined;
  if (e instanceof Pkcs11CallError) code = e.ckr;
  else if (e instanceof pkcs11js.Pkcs11Error) code = e.code;
  // pkcs11js may hand back errors from another copy of the module: accept the shape.
  else if (e instanceof Error && e.name === "Pkcs11Error" && typeof (e as { code?: unknown }).code === "number") code = (e as unknown as { code: number }).code;
  // pkcs11js defaults `code` to 0 (CKR_OK) when its message carries none: that is no CKR at all.
  return code === pkcs11js.CKR_OK ? undefined : code;
}

/** True when `e` is a PKCS#11 error with one of the given CKR values. */
export function hasCkr(e: unknown, ...codes: number[]): boolean {
  const c = ckrOf(e);
  return c !== undefined && codes.includes(c);
}

/** Where a PKCS#11 error happened, to word the message. */
export interface Pkcs11ErrorContext {
  /** The C_* function, e.g. `C_Login`. */
  operation: string;
  /** Human description of the token, e.g. `token "ra-agent" (serial 1a2b...)`. */
  token?: string;
  /** The object concerned, e.g. the key URI. */
  object?: string;
  /** Quirks of the token (or, before any token is known, of the module), for specific advice. */
  quirks?: Quirks;
  /** Advice from `modules.json` (`cannotLoad`) for failures of C_Initialize / C_GetSlotList. */
  moduleHint?: string;
}

/** The generic or token-specific advice for a locked user PIN. */
export function pinLockedHint(q: Quirks | undefined): string {
  return q?.pinLockedHint ?? "unblock the user PIN with the security officer PIN or PUK, using the token vendor's tool";
}

interface Advice {
  kind: ErrorKind;
  code: string;
  what: string;
  hint: string;
}

function advice(ckr: number, ctx: Pkcs11ErrorContext): Advice {
  const q = ctx.quirks;
  switch (ckr) {
    case pkcs11js.CKR_PIN_INCORRECT:
      return {
        kind: "pin", code: "PKCS11_PIN_INCORRECT", what: "the token refused the PIN",
        hint: `ra-agent never retries a wrong PIN (tokens lock), and no ra-agent process of this user will try this one again. Fix the PIN source (pin-source in the URI, RA_AGENT_PIN_FILE, RA_AGENT_PIN or the prompt) and run again${q?.pinIncorrectHint ? "; " + q.pinIncorrectHint : ""}`,
      };
    case pkcs11js.CKR_PIN_LOCKED:
      return { kind: "pin", code: "PKCS11_PIN_LOCKED", what: "the user PIN is locked", hint: pinLockedHint(q) };
    case pkcs11js.CKR_PIN_EXPIRED:
      return { kind: "pin", code: "PKCS11_PIN_EXPIRED", what: "the user PIN has expired", hint: "set a new user PIN with the token's tool (e.g. `pkcs11-tool --change-pin`), then run again" };
    case pkcs11js.CKR_PIN_INVALID:
    case pkcs11js.CKR_PIN_LEN_RANGE:
      return { kind: "pin", code: "PKCS11_PIN_INVALID", what: "the PIN has characters or a length the token does not accept", hint: "check the PIN source: a stray newline or space in a PIN file, or the wrong file" };
    case pkcs11js.CKR_USER_PIN_NOT_INITIALIZED:
      return { kind: "pin", code: "PKCS11_PIN_NOT_INITIALIZED", what: "the token has no user PIN yet", hint: "initialise the user PIN with the token's tool (e.g. `softhsm2-util --init-token` or `pkcs11-tool --init-pin`)" };
    case pkcs11js.CKR_TOKEN_NOT_PRESENT:
    case pkcs11js.CKR_DEVICE_REMOVED:
      return { kind: "token", code: "PKCS11_TOKEN_NOT_PRESENT", what: "the token is not present", hint: "insert the card or key, or check the connection to the HSM or TPM, then run again" };
    case pkcs11js.CKR_TOKEN_NOT_RECOGNIZED:
      return { kind: "token", code: "PKCS11_TOKEN_NOT_RECOGNIZED", what: "the module does not recognise the token in the slot", hint: "check that the right PKCS#11 module is used (--pkcs11-lib or module-path)" };
    case pkcs11js.CKR_SESSION_HANDLE_INVALID:
    case pkcs11js.CKR_SESSION_CLOSED:
      return { kind: "token", code: "PKCS11_SESSION_LOST", what: "the session with the token was closed", hint: "the token was reset or removed; run again (the agent reconnects by itself)" };
    case pkcs11js.CKR_USER_NOT_LOGGED_IN:
      return { kind: "pin", code: "PKCS11_NOT_LOGGED_IN", what: "the token requires a login for this operation", hint: "give a PIN (pin-source in the URI, RA_AGENT_PIN_FILE, RA_AGENT_PIN, or run interactively)" };
    case pkcs11js.CKR_KEY_FUNCTION_NOT_PERMITTED:
      return { kind: "token", code: "PKCS11_KEY_CANNOT_SIGN", what: "the key is not allowed to sign (CKA_SIGN is false)", hint: "use a key generated with signing usage (e.g. `pkcs11-tool --keypairgen --usage-sign`)" };
    case pkcs11js.CKR_KEY_HANDLE_INVALID:
    case pkcs11js.CKR_OBJECT_HANDLE_INVALID:
      return { kind: "token", code: "PKCS11_OBJECT_GONE", what: "the key object is no longer valid", hint: "the token was reset or the key deleted; run again" };
    case pkcs11js.CKR_KEY_TYPE_INCONSISTENT:
    case pkcs11js.CKR_MECHANISM_INVALID:
    case pkcs11js.CKR_MECHANISM_PARAM_INVALID:
      return { kind: "token", code: "PKCS11_MECHANISM_UNSUPPORTED", what: "the token cannot sign with this key and mechanism", hint: "use an RSA or EC (P-256, P-384) key; run with --debug to see the mechanism" };
    case pkcs11js.CKR_DATA_LEN_RANGE:
    case pkcs11js.CKR_DATA_INVALID:
      return { kind: "token", code: "PKCS11_DATA_REJECTED", what: "the token rejected the data to sign", hint: "use a larger key or another --digest; run with --debug for details" };
    case pkcs11js.CKR_DEVICE_ERROR:
    case pkcs11js.CKR_DEVICE_MEMORY:
    case pkcs11js.CKR_GENERAL_ERROR:
    case pkcs11js.CKR_FUNCTION_FAILED:
      return { kind: "token", code: "PKCS11_DEVICE_ERROR", what: "the token failed", hint: q?.deviceErrorHint ?? ctx.moduleHint ?? "check the device (card reader, HSM connection, TPM daemon) and its logs, then run again" };
    case pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED:
      return { kind: "internal", code: "PKCS11_NOT_INITIALIZED", what: "the module was used before C_Initialize", hint: "this is a bug in ra-agent: please report it with --debug output" };
    case pkcs11js.CKR_SLOT_ID_INVALID:
      return { kind: "token", code: "PKCS11_SLOT_GONE", what: "the slot disappeared", hint: "the token was removed or re-initialised; select tokens by serial or label, not slot-id" };
    default:
      return { kind: "token", code: "PKCS11_ERROR", what: "the PKCS#11 call failed", hint: ctx.moduleHint ?? "run with --debug for details; see the token vendor's documentation for this CKR code" };
  }
}

/**
 * Maps any error thrown by a pkcs11js call to an {@link RaError}. RaErrors pass
 * through unchanged; a `Pkcs11Error` becomes a {@link Pkcs11CallError} naming the
 * CKR code; anything else (library load failure, bad argument) becomes a `token`
 * or `internal` error.
 */
export function toRaError(e: unknown, ctx: Pkcs11ErrorContext): RaError {
  if (e instanceof RaError) return e;
  const ckr = ckrOf(e);
  const where = [ctx.token, ctx.object].filter(Boolean).join(", ");
  if (ckr !== undefined) {
    const a = advice(ckr, ctx);
    // A raw error caught by an outer wrapper ("opening the PKCS#11 key") still names the C_* call that failed.
    const method = (e as { method?: unknown }).method;
    const call = ctx.operation.startsWith("C_") || typeof method !== "string" || !method.startsWith("C_") ? ctx.operation : `${method} (${ctx.operation})`;
    return new Pkcs11CallError(a.kind, a.code, `${a.what}: ${call} returned ${ckrName(ckr)}${where ? ` (${where})` : ""}`, ckr, call, { hint: a.hint, cause: e });
  }
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof TypeError) {
    return new RaError("internal", "PKCS11_BAD_CALL", `${ctx.operation} was called wrongly: ${message}`, { hint: "this is a bug in ra-agent: please report it with --debug output", cause: e });
  }
  return new RaError("token", "PKCS11_ERROR", `${ctx.operation} failed${where ? ` (${where})` : ""}: ${message}`, { hint: "run with --debug for details", cause: e });
}

/**
 * A short code and message for logs: the `CKR_*` name of a PKCS#11 error, the code
 * of an {@link RaError}, else the error's own code or name. Never `CKR_OK` for an
 * error that did not come from a PKCS#11 call.
 */
export function describeError(e: unknown): { code: string; message: string } {
  const ckr = ckrOf(e);
  if (ckr !== undefined) return { code: ckrName(ckr), message: e instanceof Error ? e.message : String(e) };
  if (e instanceof RaError) return { code: e.code, message: e.message };
  if (e instanceof Error) {
    const own = (e as { code?: unknown }).code;
    return { code: typeof own === "string" ? own : e.name, message: e.message };
  }
  return { code: "unknown", message: String(e) };
}

/** {@link describeError} as log fields: `error` (the code) and `detail` when the message adds to it. */
export function errorLogFields(e: unknown): { error: string; detail?: string } {
  const { code, message } = describeError(e);
  return message && message !== code ? { error: code, detail: message } : { error: code };
}
