/**
 * The emulator's STS endpoint: `GetCallerIdentity` in the query protocol
 * (POST / with a form body, or GET with a query string), authenticated with
 * standard SigV4 (HMAC-SHA256) using credentials the emulator issued.
 * Answers and errors use STS's XML shapes so that real clients (AWS CLI,
 * boto3, the JS SDK) parse them.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { CredentialStore, IssuedSession } from "./credential-store";
import { StsError } from "./service-error";
import { AuthorizationFormatError, parseAmzDate, parseAuthorization, type ParsedAuthorization } from "./sigv4/authorization";
import { CanonicalizationError, canonicalRequest, groupHeaders, parseRawQuery, sha256Hex, splitTarget, stringToSign, type ReceivedRequest } from "./sigv4/canonical";

const STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/";
const STS_SERVICE = "sts";
const HMAC_ALGORITHM = "AWS4-HMAC-SHA256";

/** Escapes text for an XML element. */
export function xmlEscape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c] as string);
}

/** The XML body of an STS error. */
export function stsErrorXml(error: StsError, requestId: string): string {
  return (
    `<ErrorResponse xmlns="${STS_NAMESPACE}">\n` +
    `  <Error>\n    <Type>${error.faultType}</Type>\n    <Code>${xmlEscape(error.code)}</Code>\n    <Message>${xmlEscape(error.message)}</Message>\n  </Error>\n` +
    `  <RequestId>${requestId}</RequestId>\n</ErrorResponse>\n`
  );
}

/** The XML body of a GetCallerIdentity answer. */
export function getCallerIdentityXml(session: IssuedSession, requestId: string): string {
  return (
    `<GetCallerIdentityResponse xmlns="${STS_NAMESPACE}">\n` +
    `  <GetCallerIdentityResult>\n` +
    `    <Arn>${xmlEscape(session.assumedRoleArn)}</Arn>\n` +
    `    <UserId>${xmlEscape(session.assumedRoleId)}</UserId>\n` +
    `    <Account>${session.accountId}</Account>\n` +
    `  </GetCallerIdentityResult>\n` +
    `  <ResponseMetadata>\n    <RequestId>${requestId}</RequestId>\n  </ResponseMetadata>\n` +
    `</GetCallerIdentityResponse>\n`
  );
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac("sha256", key).update(data, "utf8").digest();
}

/** SigV4 signing key: HMAC chain over date, region, service, `aws4_request`. */
export function sigV4SigningKey(secretAccessKey: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac("AWS4" + secretAccessKey, date), region), service), "aws4_request");
}

/** The request's parameters: query string plus a form-encoded body. */
function requestParameters(request: ReceivedRequest, contentType: string | undefined): Map<string, string> {
  const params = new Map<string, string>();
  let pairs: Array<[string, string]>;
  try {
    pairs = parseRawQuery(splitTarget(request.target).rawQuery);
  } catch (e) {
    throw new StsError("MalformedQueryString", (e as Error).message, 400);
  }
  for (const [k, v] of pairs) params.set(k, v);
  if (request.method === "POST" && request.body.length > 0) {
    if (contentType !== undefined && !/^application\/x-www-form-urlencoded\b/i.test(contentType.trim())) {
      throw new StsError("InvalidParameterValue", `Content-Type ${contentType} is not supported; send application/x-www-form-urlencoded`, 400);
    }
    // URLSearchParams: a form body encodes spaces as '+'.
    for (const [k, v] of new URLSearchParams(request.body.toString("utf8"))) params.set(k, v);
  }
  return params;
}

/** What the STS handler needs besides the request. */
export interface StsOptions {
  now: Date;
  maxClockSkewSeconds: number;
}

/** The outcome of a handled STS request. */
export interface StsResult {
  action: string;
  session: IssuedSession;
  xml: string;
}

/**
 * Authenticates a SigV4-HMAC request with the issued credentials.
 * @throws StsError with STS's code: MissingAuthenticationToken, IncompleteSignature,
 *   InvalidClientTokenId, ExpiredToken, SignatureDoesNotMatch.
 */
export function authenticateStsRequest(request: ReceivedRequest, store: CredentialStore, options: StsOptions): IssuedSession {
  const grouped = groupHeaders(request.headers);
  const authValues = grouped.get("authorization");
  if (!authValues) throw new StsError("MissingAuthenticationToken", "Request is missing Authentication Token", 403);
  if (authValues.length > 1) throw new StsError("IncompleteSignature", "The Authorization header was sent more than once", 400);
  let auth: ParsedAuthorization;
  try {
    auth = parseAuthorization(authValues[0]);
  } catch (e) {
    if (e instanceof AuthorizationFormatError) throw new StsError("IncompleteSignature", e.message, 400);
    throw e;
  }
  if (auth.algorithm !== HMAC_ALGORITHM) throw new StsError("IncompleteSignature", `Unsupported AWS 'algorithm': '${auth.algorithm}'`, 400);

  const dateValue = grouped.get("x-amz-date")?.[0];
  if (dateValue === undefined) throw new StsError("IncompleteSignature", "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header; send X-Amz-Date", 400);
  let signedAt: Date;
  try {
    signedAt = parseAmzDate(dateValue);
  } catch (e) {
    throw new StsError("IncompleteSignature", (e as Error).message, 400);
  }

  const session = store.lookup(auth.credentialId);
  if (!session) throw new StsError("InvalidClientTokenId", "The security token included in the request is invalid.", 403);
  const token = grouped.get("x-amz-security-token")?.[0] ?? requestParameters(request, grouped.get("content-type")?.[0]).get("X-Amz-Security-Token");
  if (token === undefined || token.trim() !== session.sessionToken) {
    throw new StsError("InvalidClientTokenId", "The security token included in the request is invalid.", 403);
  }
  if (options.now.getTime() >= session.expiration.getTime()) {
    throw new StsError("ExpiredToken", "The security token included in the request is expired", 403);
  }

  if (Math.abs(options.now.getTime() - signedAt.getTime()) > options.maxClockSkewSeconds * 1000) {
    throw new StsError("SignatureDoesNotMatch", `Signature expired: ${dateValue.trim()} is now earlier or later than the allowed ${options.maxClockSkewSeconds / 60} minutes from ${options.now.toISOString()}`, 403);
  }
  if (auth.scopeDate !== dateValue.trim().slice(0, 8)) {
    throw new StsError("SignatureDoesNotMatch", `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${auth.scopeDate}' != '${dateValue.trim().slice(0, 8)}'`, 403);
  }
  if (auth.scopeService !== STS_SERVICE) throw new StsError("SignatureDoesNotMatch", `Credential should be scoped to correct service: '${STS_SERVICE}'.`, 403);
  if (auth.scopeTerminator !== "aws4_request") throw new StsError("SignatureDoesNotMatch", "Credential should be scoped with a valid terminator: 'aws4_request'", 403);
  for (const name of ["host", "x-amz-date"]) {
    if (!auth.signedHeaders.includes(name)) throw new StsError("SignatureDoesNotMatch", `'${name}' must be a 'SignedHeader' in the AWS Authorization.`, 403);
  }

  let canonical: string;
  try {
    canonical = canonicalRequest(request, auth.signedHeaders, sha256Hex(request.body));
  } catch (e) {
    if (e instanceof CanonicalizationError) throw new StsError("SignatureDoesNotMatch", e.message, 403);
    throw e;
  }
  const toSign = stringToSign(HMAC_ALGORITHM, dateValue.trim(), auth.scope, canonical);
  const expected = createHmac("sha256", sigV4SigningKey(session.secretAccessKey, auth.scopeDate, auth.scopeRegion, auth.scopeService)).update(toSign, "utf8").digest();
  const given = Buffer.from(auth.signature, "hex");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new StsError(
      "SignatureDoesNotMatch",
      "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
      403,
    );
  }
  return session;
}

/**
 * Handles one STS request.
 * @throws StsError for an unsupported action or a failed authentication.
 */
export function handleStsRequest(request: ReceivedRequest, store: CredentialStore, options: StsOptions, requestId: string): StsResult {
  const grouped = groupHeaders(request.headers);
  const params = requestParameters(request, grouped.get("content-type")?.[0]);
  const action = params.get("Action");
  if (!action) throw new StsError("MissingAction", "Missing Action", 400);
  if (action !== "GetCallerIdentity") {
    throw new StsError("InvalidAction", `Could not find operation ${action} for version ${params.get("Version") ?? "(none)"}; this endpoint implements GetCallerIdentity`, 400);
  }
  const session = authenticateStsRequest(request, store, options);
  return { action, session, xml: getCallerIdentityXml(session, requestId) };
}
