/**
 * Signs a request with SigV4-X509: the one async step of the signing core; the
 * only "I/O" is the {@link Signer}, which may be a token.
 */
import { RaError, usageError } from "../errors";
import type { Signer } from "../signer/signer";
import { parseCertificate } from "../x509/certificate";
import { canonicalRequest, sha256Hex, signedHeaders, type HttpRequest } from "./canonical";
import { authorizationHeader, credentialScope, formatAmzDate, ROLES_ANYWHERE_SERVICE, stringToSign } from "./string-to-sign";

/** Roles Anywhere reads at most this many certificates from `X-Amz-X509-Chain`. */
export const MAX_CHAIN_CERTIFICATES = 5;

/** Options of {@link signRequest}. */
export interface SignRequestOptions {
  /** Signing region, e.g. `us-east-1`. */
  region: string;
  /** Signing service; `rolesanywhere` by default. */
  service?: string;
  /** Signing time; now by default. */
  now?: Date;
}

/** What went into the signature, for `--debug` output and tests. Holds no secret. */
export interface SigningDetails {
  amzDate: string;
  scope: string;
  canonicalRequest: string;
  stringToSign: string;
  signedHeaders: string;
  /** Lower-case hex. */
  signature: string;
}

/** A signed request: the input with the signing headers and Authorization added. */
export interface SignedRequest extends HttpRequest {
  method: string;
  headers: Record<string, string>;
  signing: SigningDetails;
}

/** Base64 of a DER certificate, as X-Amz-X509 carries it. */
export function certificateHeaderValue(der: Uint8Array): string {
  return Buffer.from(der).toString("base64");
}

/**
 * X-Amz-X509-Chain: comma-joined base64 DER, leaf-side first.
 * @throws RaError `TOO_MANY_INTERMEDIATES` beyond {@link MAX_CHAIN_CERTIFICATES}.
 */
export function chainHeaderValue(chain: readonly Uint8Array[]): string {
  if (chain.length > MAX_CHAIN_CERTIFICATES) {
    throw usageError(
      "TOO_MANY_INTERMEDIATES",
      `${chain.length} intermediate certificates given; Roles Anywhere accepts at most ${MAX_CHAIN_CERTIFICATES}`,
      "keep only the CA certificates between the end-entity certificate and the trust anchor in --intermediates (not the root)",
    );
  }
  return chain.map(certificateHeaderValue).join(",");
}

/** Copies `headers` without any whose name equals one of `names` (case-insensitive). */
function withoutHeaders(headers: Readonly<Record<string, string>> | undefined, names: readonly string[]): Record<string, string> {
  const drop = new Set(names.map((n) => n.toLowerCase()));
  return Object.fromEntries(Object.entries(headers ?? {}).filter(([k]) => !drop.has(k.toLowerCase())));
}

/**
 * Adds `Host`, `X-Amz-Date`, `X-Amz-X509`, `X-Amz-X509-Chain` (when the signer has
 * intermediates), `Content-Type` (`application/json` unless given) and
 * `Authorization` to `request`, signing every header except Authorization,
 * User-Agent and X-Amzn-Trace-Id. The input is not modified.
 *
 * @throws RaError `TOO_MANY_INTERMEDIATES`, `INVALID_REGION`, `INVALID_CERTIFICATE`,
 *   and whatever the signer throws (token removed, PIN problems).
 */
export async function signRequest(request: HttpRequest, signer: Signer, options: SignRequestOptions): Promise<SignedRequest> {
  const now = options.now ?? new Date();
  const amzDate = formatAmzDate(now);
  const scope = credentialScope(amzDate, options.region, options.service ?? ROLES_ANYWHERE_SERVICE);
  const certificate = parseCertificate(signer.certificate);

  const headers = withoutHeaders(request.headers, ["authorization", "host", "x-amz-date", "x-amz-x509", "x-amz-x509-chain"]);
  headers["Host"] = request.host;
  headers["X-Amz-Date"] = amzDate;
  headers["X-Amz-X509"] = certificateHeaderValue(signer.certificate);
  if (signer.chain.length > 0) headers["X-Amz-X509-Chain"] = chainHeaderValue(signer.chain);
  if (!Object.keys(headers).some((k) => k.toLowerCase() === "content-type")) headers["Content-Type"] = "application/json";

  const unsigned: HttpRequest = { ...request, method: request.method.toUpperCase(), headers };
  const creq = canonicalRequest(unsigned);
  const sts = stringToSign(signer.algorithm, amzDate, scope, sha256Hex(creq));
  let signatureBytes: Buffer;
  try {
    signatureBytes = await signer.sign(Buffer.from(sts, "utf8"), "SHA256");
  } catch (e) {
    if (e instanceof RaError) throw e;
    throw new RaError("internal", "SIGN_FAILED", `signing the request failed: ${(e as Error).message}`, { cause: e });
  }
  const signature = signatureBytes.toString("hex");
  const signed = signedHeaders(headers);
  return {
    ...unsigned,
    headers: { ...headers, Authorization: authorizationHeader(signer.algorithm, certificate.serialDecimal, scope, signed, signature) },
    signing: { amzDate, scope, canonicalRequest: creq, stringToSign: sts, signedHeaders: signed, signature },
  };
}
