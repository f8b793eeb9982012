/**
 * Server-side verification of a SigV4-X509 signed `CreateSession` request:
 * the Authorization header, the date, the scope, the signed headers, and the
 * signature made with the private key of the certificate in `X-Amz-X509`.
 * Certificate trust (the path to a trust anchor) is checked separately, in
 * `certificate-path.ts`.
 *
 * The emulator's own implementation (see `sigv4/canonical.ts` for why it
 * shares nothing with the client-side signer). No I/O: the clock comes in as
 * `now`.
 */
import { verify as verifySignature } from "node:crypto";
import { parseCertificate, type CertificateInfo } from "../x509/certificate";
import { accessDenied, validation } from "./service-error";
import { AuthorizationFormatError, parseAmzDate, parseAuthorization, type ParsedAuthorization } from "./sigv4/authorization";
import { CanonicalizationError, canonicalRequest, groupHeaders, sha256Hex, stringToSign, type ReceivedRequest } from "./sigv4/canonical";

/** SigV4-X509 algorithm names and the key type each needs. */
export const X509_ALGORITHMS: Record<string, "RSA" | "EC"> = {
  "AWS4-X509-RSA-SHA256": "RSA",
  "AWS4-X509-ECDSA-SHA256": "EC",
};

/** EC curves Roles Anywhere accepts. */
export const ACCEPTED_CURVES = new Set(["P-256", "P-384"]);

/** The service name in the credential scope. */
export const ROLES_ANYWHERE_SERVICE = "rolesanywhere";

/** At most this many certificates in `X-Amz-X509-Chain`. */
export const MAX_CHAIN_CERTIFICATES = 5;

/** What the verifier needs besides the request. */
export interface X509VerifyOptions {
  /** The emulator's clock. */
  now: Date;
  /** Region expected in the credential scope. */
  region: string;
  /** Allowed distance between `X-Amz-Date` and `now`. */
  maxClockSkewSeconds: number;
}

/** A request whose SigV4-X509 signature checked out. */
export interface VerifiedX509Request {
  algorithm: string;
  authorization: ParsedAuthorization;
  signedAt: Date;
  /** The end-entity certificate from `X-Amz-X509`. */
  leaf: CertificateInfo;
  /** Certificates from `X-Amz-X509-Chain`, in the order sent. */
  chain: CertificateInfo[];
  canonicalRequest: string;
  stringToSign: string;
}

/** The single value of a header, or undefined; a header sent twice is refused. */
function singleHeader(grouped: Map<string, string[]>, name: string, displayName: string): string | undefined {
  const values = grouped.get(name);
  if (!values) return undefined;
  if (values.length > 1) throw validation("duplicate-header", `${displayName} header was sent ${values.length} times; send it once`);
  return values[0];
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function decodeCertificate(b64: string, what: string): CertificateInfo {
  const text = b64.trim();
  if (text === "" || !BASE64_RE.test(text)) throw validation("certificate-base64", `${what} is not standard base64 of a DER certificate`);
  try {
    return parseCertificate(Buffer.from(text, "base64"));
  } catch (e) {
    throw validation("certificate-der", `${what} is not a usable X.509 certificate: ${(e as Error).message}`);
  }
}

/**
 * Verifies the SigV4-X509 authentication of a received request.
 * @throws RolesAnywhereError `AccessDeniedException` for a failed check,
 *   `ValidationException` for malformed headers; the message names the rule.
 */
export function verifySigV4X509Request(request: ReceivedRequest, options: X509VerifyOptions): VerifiedX509Request {
  const grouped = groupHeaders(request.headers);

  const authorizationValue = singleHeader(grouped, "authorization", "Authorization");
  if (authorizationValue === undefined) throw accessDenied("authorization-missing", "Missing Authorization header: the request must be signed with SigV4-X509");
  let auth: ParsedAuthorization;
  try {
    auth = parseAuthorization(authorizationValue);
  } catch (e) {
    if (e instanceof AuthorizationFormatError) throw accessDenied("authorization-format", `Malformed Authorization header: ${e.message}`);
    throw e;
  }

  const keyTypeForAlgorithm = X509_ALGORITHMS[auth.algorithm];
  if (!keyTypeForAlgorithm) {
    throw accessDenied("algorithm-unsupported", `Unsupported signing algorithm ${JSON.stringify(auth.algorithm)}: expected AWS4-X509-RSA-SHA256 or AWS4-X509-ECDSA-SHA256`);
  }

  const amzDateValue = singleHeader(grouped, "x-amz-date", "X-Amz-Date");
  if (amzDateValue === undefined) throw accessDenied("date-missing", "Missing X-Amz-Date header");
  let signedAt: Date;
  try {
    signedAt = parseAmzDate(amzDateValue);
  } catch (e) {
    throw accessDenied("date-format", (e as Error).message);
  }
  const skewMs = Math.abs(options.now.getTime() - signedAt.getTime());
  if (skewMs > options.maxClockSkewSeconds * 1000) {
    throw accessDenied("date-skew", `Signature expired or not yet valid: X-Amz-Date ${amzDateValue.trim()} is more than ${options.maxClockSkewSeconds / 60} minutes from the server time ${options.now.toISOString()}`);
  }

  if (auth.scopeDate !== amzDateValue.trim().slice(0, 8)) {
    throw accessDenied("scope-date", `Credential scope date ${auth.scopeDate} does not match X-Amz-Date ${amzDateValue.trim()}`);
  }
  if (auth.scopeRegion !== options.region) {
    throw accessDenied("scope-region", `Credential scope region ${auth.scopeRegion} is not this endpoint's region ${options.region}`);
  }
  if (auth.scopeService !== ROLES_ANYWHERE_SERVICE) {
    throw accessDenied("scope-service", `Credential scope service ${auth.scopeService} must be ${ROLES_ANYWHERE_SERVICE}`);
  }
  if (auth.scopeTerminator !== "aws4_request") {
    throw accessDenied("scope-terminator", `Credential scope must end with aws4_request, not ${auth.scopeTerminator}`);
  }

  const certValue = singleHeader(grouped, "x-amz-x509", "X-Amz-X509");
  if (certValue === undefined) throw accessDenied("certificate-missing", "Missing X-Amz-X509 header (the base64 DER signing certificate)");
  const leaf = decodeCertificate(certValue, "X-Amz-X509");

  const chainValue = singleHeader(grouped, "x-amz-x509-chain", "X-Amz-X509-Chain");
  const chain: CertificateInfo[] = [];
  if (chainValue !== undefined) {
    const parts = chainValue.split(",").map((s) => s.trim());
    if (parts.length > MAX_CHAIN_CERTIFICATES) {
      throw validation("chain-length", `X-Amz-X509-Chain holds ${parts.length} certificates; at most ${MAX_CHAIN_CERTIFICATES} are allowed`);
    }
    parts.forEach((p, i) => chain.push(decodeCertificate(p, `X-Amz-X509-Chain certificate ${i + 1}`)));
  }

  if (leaf.keyType !== keyTypeForAlgorithm) {
    throw accessDenied("algorithm-key-mismatch", `Signing algorithm ${auth.algorithm} does not match the certificate's ${leaf.keyType} key`);
  }
  if (leaf.keyType === "EC" && !ACCEPTED_CURVES.has(leaf.keyDetail)) {
    throw accessDenied("curve-unsupported", `The certificate's EC curve ${leaf.keyDetail} is not supported: use P-256 or P-384`);
  }

  if (!/^\d+$/.test(auth.credentialId) || BigInt(auth.credentialId) !== BigInt(leaf.serialDecimal)) {
    throw accessDenied("serial-mismatch", `Credential= serial ${JSON.stringify(auth.credentialId)} is not the certificate's serial number in decimal (${leaf.serialDecimal})`);
  }

  const required = ["host", "x-amz-date", "x-amz-x509", ...(chainValue !== undefined ? ["x-amz-x509-chain"] : [])];
  for (const name of required) {
    if (!auth.signedHeaders.includes(name)) throw accessDenied("signed-headers", `Header ${name} must be among the SignedHeaders`);
  }

  const payloadHash = sha256Hex(request.body);
  const declaredHash = singleHeader(grouped, "x-amz-content-sha256", "X-Amz-Content-Sha256");
  if (declaredHash !== undefined && declaredHash.trim() !== payloadHash) {
    throw accessDenied("payload-hash", "X-Amz-Content-Sha256 does not match the SHA-256 of the body received");
  }

  let canonical: string;
  try {
    canonical = canonicalRequest(request, auth.signedHeaders, payloadHash);
  } catch (e) {
    if (e instanceof CanonicalizationError) throw accessDenied("canonical-request", e.message);
    throw e;
  }
  const toSign = stringToSign(auth.algorithm, amzDateValue.trim(), auth.scope, canonical);
  let ok: boolean;
  try {
    ok = verifySignature("sha256", Buffer.from(toSign, "utf8"), leaf.publicKey, Buffer.from(auth.signature, "hex"));
  } catch {
    ok = false; // a signature that is not even well-formed DER/RSA length
  }
  if (!ok) {
    throw accessDenied(
      "signature",
      `The request signature does not verify with the certificate's public key. The canonical request the server computed:\n${canonical}\nString to sign:\n${toSign}`,
    );
  }
  return { algorithm: auth.algorithm, authorization: auth, signedAt, leaf, chain, canonicalRequest: canonical, stringToSign: toSign };
}
