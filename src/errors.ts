/**
 * Errors that ra-agent raises on purpose. Each names the problem and the fix;
 * the CLI maps {@link RaError.exitCode} to the process exit status. Library code
 * throws these and never exits the process.
 */

/** Broad classes of failure, used by the CLI to choose an exit code. */
export type ErrorKind =
  /** Bad flags, config, URI, ARN or file content supplied by the user. */
  | "usage"
  /** The PKCS#11 module, slot, token or object could not be used. */
  | "token"
  /** PIN problems: wrong, locked, final try. Never retried automatically. */
  | "pin"
  /** The Roles Anywhere / STS endpoint refused or could not be reached. */
  | "service"
  /** The agent socket or daemon. */
  | "agent"
  /** Anything else: a bug. */
  | "internal";

const EXIT_CODES: Record<ErrorKind, number> = {
  usage: 2,
  token: 3,
  pin: 4,
  service: 5,
  agent: 6,
  internal: 1,
};

/** Base class of every deliberate ra-agent error. */
export class RaError extends Error {
  /** Stable machine-readable code, e.g. `PKCS11_PIN_INCORRECT`, `INVALID_ARN`. */
  readonly code: string;
  /** Which class of failure this is. */
  readonly kind: ErrorKind;
  /** What the user can do about it; shown after the message. */
  readonly hint?: string;

  constructor(kind: ErrorKind, code: string, message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RaError";
    this.kind = kind;
    this.code = code;
    this.hint = options?.hint;
  }

  /** Process exit status the CLI uses for this error. */
  get exitCode(): number {
    return EXIT_CODES[this.kind];
  }

  /** Message, hint and code, as shown to a user (the code is stable, for scripts and searches). */
  describe(): string {
    return `${this.message}${this.hint ? `\n  hint: ${this.hint}` : ""}\n  code: ${this.code}`;
  }
}

/** Convenience constructor for bad user input. */
export function usageError(code: string, message: string, hint?: string, cause?: unknown): RaError {
  return new RaError("usage", code, message, { hint, cause });
}

/** True when `e` is an {@link RaError}, optionally with the given code. */
export function isRaError(e: unknown, code?: string): e is RaError {
  return e instanceof RaError && (code === undefined || e.code === code);
}
