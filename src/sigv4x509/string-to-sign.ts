/** The SigV4 string to sign and its credential scope. Pure functions. */
import { usageError } from "../errors";

/** The signing service name of IAM Roles Anywhere. */
export const ROLES_ANYWHERE_SERVICE = "rolesanywhere";

/**
 * `YYYYMMDDTHHMMSSZ` (the X-Amz-Date format) in UTC.
 * @throws RaError `INVALID_DATE` for an invalid Date.
 */
export function formatAmzDate(date: Date): string {
  if (Number.isNaN(date.getTime())) throw usageError("INVALID_DATE", "the signing date is not a valid date");
  return date.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/** `YYYYMMDD` for a Date or an `X-Amz-Date` string. */
export function shortDate(date: Date | string): string {
  return (typeof date === "string" ? date : formatAmzDate(date)).slice(0, 8);
}

const SCOPE_PART = /^[a-z0-9-]+$/;

/**
 * The credential scope: `YYYYMMDD/region/service/aws4_request`.
 * @throws RaError `INVALID_REGION` when region or service is empty or holds characters a scope cannot carry.
 */
export function credentialScope(date: Date | string, region: string, service: string = ROLES_ANYWHERE_SERVICE): string {
  if (!SCOPE_PART.test(region)) {
    throw usageError("INVALID_REGION", `"${region}" is not a valid AWS region name`, "pass a region such as us-east-1 (--region), or leave it out to use the trust anchor's region");
  }
  if (!SCOPE_PART.test(service)) throw usageError("INVALID_SERVICE", `"${service}" is not a valid signing service name`);
  return `${shortDate(date)}/${region}/${service}/aws4_request`;
}

/**
 * The string to sign: `algorithm \n amzDate \n scope \n hex(SHA256(canonical request))`.
 */
export function stringToSign(algorithm: string, amzDate: string, scope: string, canonicalRequestHash: string): string {
  return [algorithm, amzDate, scope, canonicalRequestHash].join("\n");
}

/**
 * The Authorization header value of SigV4-X509:
 * `ALG Credential=<serial in decimal>/<scope>, SignedHeaders=<list>, Signature=<hex>`.
 */
export function authorizationHeader(algorithm: string, serialDecimal: string, scope: string, signedHeaderList: string, signatureHex: string): string {
  return `${algorithm} Credential=${serialDecimal}/${scope}, SignedHeaders=${signedHeaderList}, Signature=${signatureHex}`;
}
