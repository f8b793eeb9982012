/**
 * The error shapes of the two emulated services. Handlers throw these; the
 * HTTP layer turns them into the wire format each service uses.
 */

/** Roles Anywhere (REST-JSON) error types and the HTTP status each carries. */
export const ROLES_ANYWHERE_ERROR_STATUS = {
  AccessDeniedException: 403,
  ValidationException: 400,
  ResourceNotFoundException: 404,
  /** No operation at this method and path. */
  UnknownOperationException: 404,
  /** A bug in the emulator; never expected. */
  InternalServerException: 500,
} as const;

/** A Roles Anywhere error type. */
export type RolesAnywhereErrorType = keyof typeof ROLES_ANYWHERE_ERROR_STATUS;

/**
 * A Roles Anywhere error: sent as `X-Amzn-ErrorType: <type>` and the JSON body
 * `{"message": "..."}`. `rule` is a stable identifier of the check that failed
 * (for logs and tests); the message says the same in words.
 */
export class RolesAnywhereError extends Error {
  readonly type: RolesAnywhereErrorType;
  readonly rule: string;
  /** HTTP status; the type's usual status unless overridden (413 for a body that is too large). */
  readonly status: number;

  constructor(type: RolesAnywhereErrorType, rule: string, message: string, status?: number) {
    super(message);
    this.name = "RolesAnywhereError";
    this.type = type;
    this.rule = rule;
    this.status = status ?? ROLES_ANYWHERE_ERROR_STATUS[type];
  }
}

/** `403 AccessDeniedException`. */
export function accessDenied(rule: string, message: string): RolesAnywhereError {
  return new RolesAnywhereError("AccessDeniedException", rule, message);
}

/** `400 ValidationException`. */
export function validation(rule: string, message: string): RolesAnywhereError {
  return new RolesAnywhereError("ValidationException", rule, message);
}

/** `404 ResourceNotFoundException`. */
export function notFound(rule: string, message: string): RolesAnywhereError {
  return new RolesAnywhereError("ResourceNotFoundException", rule, message);
}

/**
 * An STS (query protocol) error: sent as XML
 * `ErrorResponse/Error/{Type,Code,Message}` plus `RequestId`.
 */
export class StsError extends Error {
  readonly code: string;
  readonly status: number;
  /** `Sender` for client faults, `Receiver` for server faults. */
  readonly faultType: "Sender" | "Receiver";

  constructor(code: string, message: string, status = 403, faultType: "Sender" | "Receiver" = "Sender") {
    super(message);
    this.name = "StsError";
    this.code = code;
    this.status = status;
    this.faultType = faultType;
  }
}
