/**
 * Validation of the only strings the agent signs on request: SigV4-X509 strings
 * to sign of a Roles Anywhere CreateSession, exactly
 * `ALGORITHM\nYYYYMMDDTHHMMSSZ\nYYYYMMDD/REGION/rolesanywhere/aws4_request\n<64 lowercase hex>`.
 * Anything else (arbitrary bytes, other services, other dates) is refused, so that
 * socket access cannot turn the token into a general-purpose signing oracle.
 */
import { RaError } from "../errors";
import type { SigV4X509Algorithm } from "../signer/signer";

/** The parts of a valid string to sign. */
export interface ParsedStringToSign {
  algorithm: SigV4X509Algorithm;
  /** Request time from line 2. */
  date: Date;
  region: string;
  /** Hex SHA-256 of the canonical request. */
  canonicalRequestHash: string;
}

const SHAPE = /^(AWS4-X509-(?:RSA|ECDSA)-SHA256)\n(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z\n(\d{8})\/([a-z0-9-]{1,32})\/rolesanywhere\/aws4_request\n([0-9a-f]{64})$/;

/** How far the request time may be from the agent's clock (the service allows 5 minutes). */
export const MAX_SKEW_MS = 5 * 60_000;

function refuse(message: string): RaError {
  return new RaError("usage", "AGENT_INVALID_STRING_TO_SIGN", message, {
    hint: "send a SigV4-X509 string to sign: ALGORITHM\\nYYYYMMDDTHHMMSSZ\\nYYYYMMDD/REGION/rolesanywhere/aws4_request\\n<sha256 hex>",
  });
}

/**
 * Parses and checks a string to sign.
 * @param expected - the algorithm of the profile's key; another one is refused.
 * @param now - the agent's time; a request time more than {@link MAX_SKEW_MS} away is refused.
 * @throws RaError `AGENT_INVALID_STRING_TO_SIGN` naming the rule that failed.
 */
export function parseStringToSign(text: string, expected: SigV4X509Algorithm, now: number): ParsedStringToSign {
  const m = SHAPE.exec(text);
  if (!m) throw refuse("the string to sign is not a SigV4-X509 Roles Anywhere string to sign");
  const [, algorithm, y, mo, d, h, mi, s, scopeDate, region, hash] = m;
  if (algorithm !== expected) throw refuse(`the algorithm ${algorithm} does not match the profile's key (${expected})`);
  const date = new Date(Date.UTC(+y, +mo - 1, +d, +h, +mi, +s));
  if (Number.isNaN(date.getTime()) || date.getUTCDate() !== +d || date.getUTCMonth() !== +mo - 1 || date.getUTCHours() !== +h || date.getUTCMinutes() !== +mi || date.getUTCSeconds() !== +s) {
    throw refuse("the request date is not a valid date");
  }
  if (scopeDate !== `${y}${mo}${d}`) throw refuse("the credential scope date differs from the request date");
  if (Math.abs(date.getTime() - now) > MAX_SKEW_MS) throw refuse("the request date is more than 5 minutes away from the agent's clock");
  return { algorithm: algorithm as SigV4X509Algorithm, date, region, canonicalRequestHash: hash };
}
