/**
 * Failures of a CreateSession call, one {@link ServiceError} each, carrying the
 * service's error code and message (REST-JSON: `X-Amzn-ErrorType` header, or
 * `__type` / `code` and `message` in the body).
 */
import { RaError } from "../errors";

/** Details a service failure carries besides message and hint. */
export interface ServiceErrorDetails {
  /** HTTP status, when a response came back. */
  statusCode?: number;
  /** The service's error code, e.g. `AccessDeniedException`. */
  serviceCode?: string;
  /** The service's message. */
  serviceMessage?: string;
  /** `x-amzn-RequestId`, to quote to AWS support. */
  requestId?: string;
  /** True when trying again may succeed (throttling, 5xx, connection problems). */
  retryable: boolean;
  hint?: string;
  cause?: unknown;
}

/** A CreateSession failure (kind `service`). */
export class ServiceError extends RaError {
  readonly statusCode?: number;
  readonly serviceCode?: string;
  readonly serviceMessage?: string;
  readonly requestId?: string;
  readonly retryable: boolean;

  constructor(code: string, message: string, details: ServiceErrorDetails) {
    super("service", code, message, { hint: details.hint, cause: details.cause });
    this.name = "ServiceError";
    this.statusCode = details.statusCode;
    this.serviceCode = details.serviceCode;
    this.serviceMessage = details.serviceMessage;
    this.requestId = details.requestId;
    this.retryable = details.retryable;
  }
}

/** Hints for the error codes Roles Anywhere returns. */
const HINTS: Record<string, string> = {
  AccessDeniedException:
    "check that the certificate chains to the trust anchor (pass CA certificates with --intermediates), that it is valid and not revoked, that the trust anchor and profile are enabled, and that the role trusts rolesanywhere.amazonaws.com and is in the profile",
  ResourceNotFoundException: "check the trust anchor and profile ARNs and the region (--region / --endpoint)",
  ValidationException: "check the ARNs, --session-duration (900-43200, at most the profile's duration) and --role-session-name",
  ThrottlingException: "CreateSession is limited to about 10 calls per second per account; cache credentials (e.g. `ra-agent serve` or the agent) instead of calling it per request",
  TooManyRequestsException: "CreateSession is limited to about 10 calls per second per account; cache credentials instead of calling it per request",
};

const THROTTLING = new Set(["ThrottlingException", "TooManyRequestsException", "Throttling", "RequestLimitExceeded", "SlowDown"]);

/** Strips the namespace (`…#Code`) and URI suffix (`Code:http://…`) of a REST-JSON error type. */
export function sanitizeErrorCode(raw: string): string {
  let code = raw;
  if (code.includes(":")) code = code.slice(0, code.indexOf(":"));
  if (code.includes("#")) code = code.slice(code.lastIndexOf("#") + 1);
  return code.trim();
}

/** The RaError code for an HTTP failure. */
function codeFor(status: number, serviceCode: string | undefined): string {
  if (status === 429 || (serviceCode && THROTTLING.has(serviceCode))) return "CREATE_SESSION_THROTTLED";
  if (status >= 500) return "CREATE_SESSION_SERVER_ERROR";
  if (status === 403 || status === 401) return "CREATE_SESSION_DENIED";
  if (status === 404) return "CREATE_SESSION_NOT_FOUND";
  if (status === 400) return "CREATE_SESSION_INVALID";
  return "CREATE_SESSION_HTTP_ERROR";
}

/**
 * Builds the error for a non-2xx response.
 * @param headers response headers, names in lower case.
 */
export function errorFromResponse(status: number, headers: Record<string, string | string[] | undefined>, bodyText: string, url: string): ServiceError {
  const header = (name: string): string | undefined => {
    const v = headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  let body: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(bodyText);
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
  } catch {
    // not JSON: a proxy or load balancer page; the status says enough
  }
  const rawCode = header("x-amzn-errortype") ?? (typeof body.__type === "string" ? body.__type : undefined) ?? (typeof body.code === "string" ? body.code : undefined) ?? (typeof body.Code === "string" ? body.Code : undefined);
  const serviceCode = rawCode ? sanitizeErrorCode(rawCode) : undefined;
  const rawMessage = body.message ?? body.Message ?? body.errorMessage;
  const serviceMessage = typeof rawMessage === "string" ? rawMessage : undefined;
  const requestId = header("x-amzn-requestid") ?? header("x-amz-request-id");
  const what = serviceCode ? `${serviceCode} (HTTP ${status})` : `HTTP ${status}`;
  const text = serviceMessage ? `: ${serviceMessage}` : bodyText && !serviceCode ? `: ${bodyText.slice(0, 200).replace(/\s+/g, " ")}` : "";
  const code = codeFor(status, serviceCode);
  const retryable = code === "CREATE_SESSION_THROTTLED" || (status >= 500 && status !== 501);
  const hint = (serviceCode && HINTS[serviceCode]) ?? (status >= 500 ? "the service failed; try again later" : status === 407 ? "the proxy wants authentication: put credentials in HTTPS_PROXY (http://user:pass@proxy:port)" : `check the endpoint ${url}`);
  return new ServiceError(code, `CreateSession failed: ${what}${text}${requestId ? ` (request id ${requestId})` : ""}`, {
    statusCode: status, serviceCode, serviceMessage, requestId, retryable, hint,
  });
}

/**
 * Node's codes for TLS failures: its own (ERR_TLS_*, ERR_SSL_*, ERR_OSSL_*) and
 * OpenSSL's verification results (CERT_HAS_EXPIRED, UNABLE_TO_VERIFY_LEAF_SIGNATURE, ...).
 */
const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|ERR_OSSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|HOSTNAME_MISMATCH$|INVALID_CA$|PATH_LENGTH_EXCEEDED$)/;

/** Connection-level failures after which a new attempt on a new socket may succeed. */
const RETRYABLE_CONNECTION_CODES = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED"]);

function errnoCode(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; cur && depth < 4; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/**
 * The error's message for people: OpenSSL's `write EPROTO 80AC…:error:0A00042E:SSL
 * routines:ssl3_read_bytes:tlsv1 alert protocol version:../deps/…` shortened to
 * its reason. For display only: the mapping above goes by `code`.
 */
function describe(e: unknown): string {
  const message = (e as Error)?.message ?? String(e);
  const openssl = /:error:[0-9A-Fa-f]+:[^:]*:[^:]*:([^:]+)/.exec(message);
  return (openssl ? openssl[1] : message).replace(/\s+/g, " ").trim();
}

/**
 * Builds the error for a request that got no complete HTTP response, from the
 * `code` node puts on it (never from its message).
 * @param timedOut true when the caller's own deadline ended the request (a
 *   transport `RequestTimeoutError`, code `ETIMEDOUT`, counts as such too).
 */
export function errorFromNetworkFailure(e: unknown, url: URL, timedOut: boolean, timeoutMs: number): ServiceError {
  const where = url.origin;
  const code = errnoCode(e);
  const detail = describe(e);
  if (timedOut || code === "ETIMEDOUT") {
    return new ServiceError("SERVICE_TIMEOUT", `CreateSession to ${where} timed out after ${timeoutMs} ms`, {
      retryable: true, cause: e, hint: "check network access to the endpoint (firewall, --with-proxy and HTTPS_PROXY), or raise --timeout",
    });
  }
  if (code === "ECONNREFUSED") {
    return new ServiceError("SERVICE_UNREACHABLE", `connection to ${where} refused`, {
      retryable: true, cause: e, hint: "check --endpoint / --region; for the local emulator, check that it is running on that port",
    });
  }
  if (code === "ENOTFOUND" || code === "EAI_AGAIN" || code === "EAI_NONAME" || code === "EAI_NODATA") {
    return new ServiceError("SERVICE_UNREACHABLE", `cannot resolve host ${url.hostname}`, {
      retryable: code === "EAI_AGAIN", cause: e, hint: "check DNS, --region and --endpoint; behind a proxy use --with-proxy with HTTPS_PROXY",
    });
  }
  // EPROTO on an https: URL is OpenSSL failing the handshake (no common TLS version, a plain-HTTP server).
  if (code && (TLS_CODES.test(code) || (code === "EPROTO" && url.protocol === "https:"))) {
    return new ServiceError("SERVICE_TLS_ERROR", `TLS connection to ${where} failed: ${code}: ${detail}`, {
      retryable: false, cause: e,
      hint: "if the endpoint uses a private CA, point AWS_CA_BUNDLE at its PEM bundle; TLS 1.2 or newer is required (--no-verify-ssl skips verification: for tests only)",
    });
  }
  return new ServiceError("SERVICE_CONNECTION_ERROR", `CreateSession to ${where} failed: ${code ? code + ": " : ""}${detail}`, {
    retryable: code !== undefined && RETRYABLE_CONNECTION_CODES.has(code), cause: e,
    hint: "check network access to the endpoint; behind a proxy use --with-proxy with HTTPS_PROXY",
  });
}
