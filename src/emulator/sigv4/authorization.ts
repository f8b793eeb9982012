/**
 * Parsing of the SigV4 `Authorization` header and `X-Amz-Date`, shared by the
 * emulator's Roles Anywhere (SigV4-X509) and STS (SigV4-HMAC) verifiers.
 * Pure functions; they throw {@link AuthorizationFormatError} with a message
 * that names the broken part.
 */

/** The parts of `Authorization: ALG Credential=ID/SCOPE, SignedHeaders=..., Signature=...`. */
export interface ParsedAuthorization {
  algorithm: string;
  /** Everything before the first `/` of `Credential=`: an access key id, or a certificate serial (decimal). */
  credentialId: string;
  /** `YYYYMMDD/region/service/aws4_request`. */
  scope: string;
  scopeDate: string;
  scopeRegion: string;
  scopeService: string;
  scopeTerminator: string;
  /** Lower-case header names, in the order given. */
  signedHeaders: string[];
  /** Lower-case hex. */
  signature: string;
}

/** The header or date is not in SigV4's syntax. */
export class AuthorizationFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AuthorizationFormatError";
  }
}

/**
 * Parses an Authorization header value. Components may be separated by `,`
 * with or without spaces, in any order, each exactly once.
 * @throws AuthorizationFormatError naming the missing or malformed component.
 */
export function parseAuthorization(value: string): ParsedAuthorization {
  const trimmed = value.trim();
  const space = trimmed.indexOf(" ");
  if (space <= 0) throw new AuthorizationFormatError("Authorization header must be 'ALGORITHM Credential=..., SignedHeaders=..., Signature=...'");
  const algorithm = trimmed.slice(0, space);
  const fields = new Map<string, string>();
  for (const part of trimmed.slice(space + 1).split(",")) {
    const p = part.trim();
    if (p === "") continue;
    const eq = p.indexOf("=");
    if (eq <= 0) throw new AuthorizationFormatError(`Authorization header component ${JSON.stringify(p.slice(0, 40))} is not NAME=VALUE`);
    const name = p.slice(0, eq);
    if (fields.has(name)) throw new AuthorizationFormatError(`Authorization header has ${name} twice`);
    fields.set(name, p.slice(eq + 1));
  }
  for (const required of ["Credential", "SignedHeaders", "Signature"]) {
    if (!fields.get(required)) throw new AuthorizationFormatError(`Authorization header lacks ${required}=`);
  }
  const credential = fields.get("Credential") as string;
  const parts = credential.split("/");
  if (parts.length !== 5 || parts.some((p) => p === "")) {
    throw new AuthorizationFormatError("Credential= must be ID/YYYYMMDD/REGION/SERVICE/aws4_request");
  }
  const signedHeaders = (fields.get("SignedHeaders") as string).split(";");
  if (signedHeaders.some((h) => h === "" || h !== h.toLowerCase())) {
    throw new AuthorizationFormatError("SignedHeaders= must list lower-case header names separated by ';'");
  }
  for (let i = 1; i < signedHeaders.length; i++) {
    if (signedHeaders[i - 1] >= signedHeaders[i]) {
      throw new AuthorizationFormatError("SignedHeaders= must be sorted and without duplicates");
    }
  }
  const signature = fields.get("Signature") as string;
  if (!/^[0-9a-f]+$/.test(signature) || signature.length % 2 !== 0) {
    throw new AuthorizationFormatError("Signature= must be lower-case hex");
  }
  return {
    algorithm,
    credentialId: parts[0],
    scope: parts.slice(1).join("/"),
    scopeDate: parts[1],
    scopeRegion: parts[2],
    scopeService: parts[3],
    scopeTerminator: parts[4],
    signedHeaders,
    signature,
  };
}

/**
 * Parses `YYYYMMDDTHHMMSSZ` (SigV4's basic ISO 8601 form, UTC).
 * @throws AuthorizationFormatError when the text is not in that form or not a real date.
 */
export function parseAmzDate(value: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value.trim());
  if (!m) throw new AuthorizationFormatError(`X-Amz-Date ${JSON.stringify(value.slice(0, 40))} is not YYYYMMDDTHHMMSSZ`);
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number);
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) {
    throw new AuthorizationFormatError(`X-Amz-Date ${JSON.stringify(value)} is not a valid date`);
  }
  return date;
}

/** Formats a date as SigV4's `YYYYMMDDTHHMMSSZ`. */
export function formatAmzDate(date: Date): string {
  return date.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}
