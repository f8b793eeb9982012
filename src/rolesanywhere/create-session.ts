/**
 * The IAM Roles Anywhere CreateSession client: builds the request as the
 * reference helper does (the three ARNs in the query string, durationSeconds and
 * roleSessionName in the JSON body), signs it with SigV4-X509, sends it over
 * node:https (TLS 1.2+, see {@link HttpTransport}), and turns every failure into
 * one {@link ServiceError}.
 */
import type { AwsCredentials } from "../credentials/credentials";
import { usageError } from "../errors";
import { logger } from "../log/logger";
import type { Signer } from "../signer/signer";
import { canonicalQueryString, type HttpRequest } from "../sigv4x509/canonical";
import { signRequest } from "../sigv4x509/sign-request";
import { assertCertificateCurrent } from "../x509/validity";
import { parseSessionArns } from "./arn";
import { resolveEndpoint, resolveRegion } from "./endpoint";
import { HttpTransport, ResponseTooLargeError, type HttpResponse } from "./http-transport";
import type { ProxySettings } from "./proxy";
import { errorFromNetworkFailure, errorFromResponse, ServiceError } from "./service-error";

/** Session duration bounds of CreateSession, in seconds. */
export const MIN_SESSION_DURATION = 900;
export const MAX_SESSION_DURATION = 43200;
/** The reference helper's `--session-duration` default. */
export const DEFAULT_SESSION_DURATION = 3600;
/** Per-attempt timeout when none is given. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Attempts per call, as the AWS SDKs' standard retry mode. */
export const DEFAULT_MAX_ATTEMPTS = 3;

/** Transport settings, fixed for the life of a {@link CreateSessionClient}. */
export interface CreateSessionClientOptions {
  /** Skip TLS certificate verification (`--no-verify-ssl`). Unsafe; logged as a warning. */
  noVerifySsl?: boolean;
  /** Use HTTP_PROXY / HTTPS_PROXY / NO_PROXY (`--with-proxy`); without it no proxy is used. */
  withProxy?: boolean;
  /** Proxy settings that override the environment (tests, config files). */
  proxy?: ProxySettings;
  /**
   * PEM file of the CAs to trust instead of Node's bundled ones; `AWS_CA_BUNDLE`
   * when absent (as the AWS SDKs and the reference helper do).
   */
  caBundlePath?: string;
  /** PEM CA certificates, instead of `caBundlePath`. */
  ca?: string | Buffer;
  /** Timeout of one attempt (connect to last body byte), ms; 10 s by default. */
  timeoutMs?: number;
  /** User-Agent header (not signed). */
  userAgent?: string;
  /** Attempts per call when the failure is retryable (throttling, 5xx, connection); 3 by default. */
  maxAttempts?: number;
  /** Base of the full-jitter exponential backoff, ms; 200 by default. */
  retryBaseDelayMs?: number;
}

/** One CreateSession call. */
export interface CreateSessionParams {
  signer: Signer;
  trustAnchorArn: string;
  profileArn: string;
  roleArn: string;
  /** Signing region and endpoint region; the trust anchor's region by default. */
  region?: string;
  /** Endpoint override (`--endpoint`); http only for loopback. */
  endpoint?: string;
  useFips?: boolean;
  useDualStack?: boolean;
  /** 900-43200 s; 3600 by default (the reference's default). */
  durationSeconds?: number;
  /** `--role-session-name`; the profile must accept custom names. */
  roleSessionName?: string;
  /** Clock, for tests; `new Date()` by default. */
  now?: () => Date;
}

/** The 201 body of CreateSession. */
export interface CreateSessionResponse {
  credentialSet: Array<{
    assumedRoleUser?: { arn?: string; assumedRoleId?: string };
    credentials: { accessKeyId: string; secretAccessKey: string; sessionToken: string; expiration: string };
    packedPolicySize?: number;
    roleArn?: string;
    sourceIdentity?: string;
  }>;
  subjectArn?: string;
  enrollmentId?: string;
}

/** What a successful call yields. `raw` holds the secret key too: never log it. */
export interface CreateSessionResult {
  credentials: AwsCredentials;
  raw: CreateSessionResponse;
}

/**
 * @throws RaError `INVALID_SESSION_DURATION` outside 900-43200 or not a whole number.
 */
export function validateDurationSeconds(value: number): number {
  if (!Number.isInteger(value) || value < MIN_SESSION_DURATION || value > MAX_SESSION_DURATION) {
    throw usageError(
      "INVALID_SESSION_DURATION",
      `--session-duration ${value} is not a whole number of seconds between ${MIN_SESSION_DURATION} and ${MAX_SESSION_DURATION}`,
      "pass --session-duration between 900 (15 minutes) and 43200 (12 hours); the profile may allow less",
    );
  }
  return value;
}

/**
 * @throws RaError `INVALID_ROLE_SESSION_NAME` unless 2-64 characters of `[A-Za-z0-9_+=,.@-]` (STS's rule).
 */
export function validateRoleSessionName(value: string): string {
  if (!/^[\w+=,.@-]{2,64}$/.test(value)) {
    throw usageError(
      "INVALID_ROLE_SESSION_NAME",
      `--role-session-name "${value}" must be 2-64 characters of letters, digits and _+=,.@-`,
      "choose a name such as host-01; the profile must also accept custom role session names",
    );
  }
  return value;
}

function joinPath(basePath: string, suffix: string): string {
  return basePath.replace(/\/+$/, "") + suffix;
}

function badResponse(message: string, statusCode: number, requestId: string | undefined): ServiceError {
  return new ServiceError("CREATE_SESSION_BAD_RESPONSE", `CreateSession returned an unexpected answer: ${message}${requestId ? ` (request id ${requestId})` : ""}`, {
    statusCode, requestId, retryable: false, hint: "check that --endpoint points at IAM Roles Anywhere (not a proxy or another service)",
  });
}

/**
 * Parses a 2xx CreateSession body.
 * @throws ServiceError `CREATE_SESSION_BAD_RESPONSE`, `CREATE_SESSION_NO_CREDENTIALS`
 */
export function parseCreateSessionResponse(bodyText: string, statusCode = 201, requestId?: string): CreateSessionResult {
  let raw: unknown;
  try {
    raw = JSON.parse(bodyText);
  } catch {
    throw badResponse("the body is not JSON", statusCode, requestId);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw badResponse("the body is not a JSON object", statusCode, requestId);
  const set = (raw as { credentialSet?: unknown }).credentialSet;
  if (set !== undefined && !Array.isArray(set)) throw badResponse("credentialSet is not a list", statusCode, requestId);
  if (!set || set.length === 0) {
    throw new ServiceError("CREATE_SESSION_NO_CREDENTIALS", "CreateSession returned no credentials (empty credentialSet)", {
      statusCode, requestId, retryable: false, hint: "check that the role is in the profile and trusts rolesanywhere.amazonaws.com",
    });
  }
  const c = (set[0] as { credentials?: Record<string, unknown> } | null)?.credentials;
  if (!c || typeof c !== "object") throw badResponse("credentialSet[0].credentials is missing", statusCode, requestId);
  for (const field of ["accessKeyId", "secretAccessKey", "sessionToken", "expiration"]) {
    if (typeof c[field] !== "string" || c[field] === "") throw badResponse(`credentials.${field} is missing`, statusCode, requestId);
  }
  const expiration = new Date(c.expiration as string);
  if (Number.isNaN(expiration.getTime())) throw badResponse(`credentials.expiration "${String(c.expiration)}" is not a date`, statusCode, requestId);
  return {
    credentials: {
      accessKeyId: c.accessKeyId as string,
      secretAccessKey: c.secretAccessKey as string,
      sessionToken: c.sessionToken as string,
      expiration,
    },
    raw: raw as CreateSessionResponse,
  };
}

function defaultUserAgent(): string {
  return `ra-agent (node ${process.version}; ${process.platform}; ${process.arch})`;
}

/**
 * A CreateSession client that keeps one transport (keep-alive agent, TLS
 * settings, proxy) for all its calls: the agent holds one for its lifetime.
 * Call {@link close} when done so that idle sockets do not keep the process alive.
 */
export class CreateSessionClient {
  readonly #options: CreateSessionClientOptions;
  #transport: Promise<HttpTransport> | undefined;
  #closed = false;

  /** @throws RaError `INVALID_TIMEOUT` unless `timeoutMs` is a positive whole number. */
  constructor(options: CreateSessionClientOptions = {}) {
    this.#options = { ...options };
    if (options.timeoutMs !== undefined && (!Number.isInteger(options.timeoutMs) || options.timeoutMs <= 0)) {
      throw usageError("INVALID_TIMEOUT", `timeout ${options.timeoutMs} ms is not a positive whole number`, "pass --timeout in milliseconds, e.g. 10000");
    }
  }

  get #timeoutMs(): number {
    return this.#options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  #getTransport(): Promise<HttpTransport> {
    if (this.#closed) return Promise.reject(usageError("CLIENT_CLOSED", "the CreateSession client was closed"));
    const pending = (this.#transport ??= HttpTransport.create(this.#options));
    // A failed setup (unreadable CA bundle, bad proxy URL) is reported on every call, not cached.
    pending.catch(() => {
      if (this.#transport === pending) this.#transport = undefined;
    });
    return pending;
  }

  /**
   * Calls CreateSession. Inputs are validated (ARNs, duration, role session name,
   * endpoint, certificate dates) before the signer is used or anything is sent.
   * Retryable failures are tried again, re-signed each time, up to `maxAttempts`.
   *
   * @throws RaError (kind `usage`) `INVALID_ARN`, `ARN_REGION_MISMATCH`, `INVALID_SESSION_DURATION`,
   *   `INVALID_ROLE_SESSION_NAME`, `INVALID_ENDPOINT`, `INSECURE_ENDPOINT`, `UNKNOWN_REGION`,
   *   `CERTIFICATE_EXPIRED`, `CERTIFICATE_NOT_YET_VALID`, `TOO_MANY_INTERMEDIATES`;
   *   {@link ServiceError} (kind `service`) `CREATE_SESSION_DENIED` / `_NOT_FOUND` / `_INVALID` /
   *   `_THROTTLED` / `_SERVER_ERROR` / `_HTTP_ERROR` / `_BAD_RESPONSE` / `_NO_CREDENTIALS`,
   *   `SERVICE_UNREACHABLE`, `SERVICE_TIMEOUT`, `SERVICE_TLS_ERROR`, `SERVICE_CONNECTION_ERROR`;
   *   RaError `CLIENT_CLOSED` after {@link close}; `UNREADABLE_FILE` / `INVALID_CA_BUNDLE` (CA bundle),
   *   `INVALID_PROXY` (with `withProxy`); and whatever the signer throws.
   */
  async createSession(params: CreateSessionParams): Promise<CreateSessionResult> {
    const arns = parseSessionArns(params.trustAnchorArn, params.profileArn, params.roleArn);
    const region = resolveRegion(params.region, arns.trustAnchor.region);
    const base = resolveEndpoint({ region, endpoint: params.endpoint, useFips: params.useFips, useDualStack: params.useDualStack });
    const durationSeconds = validateDurationSeconds(params.durationSeconds ?? DEFAULT_SESSION_DURATION);
    if (params.roleSessionName !== undefined) validateRoleSessionName(params.roleSessionName);
    const now = params.now ?? (() => new Date());
    assertCertificateCurrent(params.signer.certificate, now());

    const path = joinPath(base.pathname, "/sessions");
    const query: Array<[string, string]> = [
      ["profileArn", params.profileArn],
      ["roleArn", params.roleArn],
      ["trustAnchorArn", params.trustAnchorArn],
    ];
    const body = JSON.stringify({ durationSeconds, ...(params.roleSessionName !== undefined ? { roleSessionName: params.roleSessionName } : {}) });
    const unsigned: HttpRequest = {
      method: "POST",
      host: base.host,
      path,
      query,
      headers: { "Content-Type": "application/json", "User-Agent": this.#options.userAgent ?? defaultUserAgent() },
      body,
    };
    const url = new URL(`${base.protocol}//${base.host}${path}?${canonicalQueryString(query)}`);
    const transport = await this.#getTransport();
    const maxAttempts = Math.max(1, this.#options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);

    for (let attempt = 1; ; attempt++) {
      const signed = await signRequest(unsigned, params.signer, { region, now: now() });
      logger.debug("CreateSession request", { url: url.href, attempt, signedHeaders: signed.signing.signedHeaders, canonicalRequest: signed.signing.canonicalRequest });
      try {
        return await this.#send(transport, url, signed.headers, body);
      } catch (e) {
        const retry = e instanceof ServiceError && e.retryable && attempt < maxAttempts;
        if (!retry) {
          if (e instanceof ServiceError && attempt > 1) logger.debug(`CreateSession gave up after ${attempt} attempts`);
          throw e;
        }
        const cap = Math.min(5000, (this.#options.retryBaseDelayMs ?? 200) * 2 ** (attempt - 1));
        const delay = Math.floor(Math.random() * cap);
        logger.debug(`CreateSession attempt ${attempt} failed (${(e as ServiceError).code}); retrying in ${delay} ms`);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  async #send(transport: HttpTransport, url: URL, headers: Record<string, string>, body: string): Promise<CreateSessionResult> {
    const timeoutMs = this.#timeoutMs;
    let response: HttpResponse;
    try {
      response = await transport.post(url, headers, body, timeoutMs);
    } catch (e) {
      if (e instanceof ResponseTooLargeError) throw badResponse(e.message, e.statusCode, undefined);
      throw errorFromNetworkFailure(e, url, false, timeoutMs);
    }
    const requestIdHeader = response.headers["x-amzn-requestid"];
    const requestId = Array.isArray(requestIdHeader) ? requestIdHeader[0] : requestIdHeader;
    logger.debug("CreateSession response", { status: response.statusCode, requestId });
    if (response.statusCode < 200 || response.statusCode > 299) {
      throw errorFromResponse(response.statusCode, response.headers, response.body, url.origin);
    }
    return parseCreateSessionResponse(response.body, response.statusCode, requestId);
  }

  /** Closes every connection. Idempotent; later calls fail with `CLIENT_CLOSED`. */
  async close(): Promise<void> {
    this.#closed = true;
    const pending = this.#transport;
    this.#transport = undefined;
    if (pending) (await pending.catch(() => undefined))?.close();
  }
}

/**
 * One CreateSession call with a client of its own, closed afterwards: what
 * `credential-process` needs.
 * @throws as {@link CreateSessionClient.createSession}.
 */
export async function createSession(options: CreateSessionClientOptions & CreateSessionParams): Promise<CreateSessionResult> {
  const client = new CreateSessionClient(options);
  try {
    return await client.createSession(options);
  } finally {
    await client.close();
  }
}
