/**
 * ARNs and identifiers in the formats the real services use, so that clients
 * which parse them (the reference helper checks that the trust anchor and
 * profile regions match) behave as they do against AWS.
 */
import { createHash } from "node:crypto";

/** The parts of an ARN: `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`. */
export interface ParsedArn {
  partition: string;
  service: string;
  region: string;
  accountId: string;
  resource: string;
}

/** AWS partitions, as they appear in ARNs. */
export const PARTITIONS = ["aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "aws-iso-e", "aws-iso-f", "aws-eusc"];

const ARN_RE = /^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):([a-z0-9-]+):([a-z0-9-]*):(\d{12}|):(.+)$/;

/** Parses an ARN, or returns undefined when `text` is not one. */
export function parseArn(text: string): ParsedArn | undefined {
  const m = ARN_RE.exec(text);
  if (!m) return undefined;
  return { partition: m[1], service: m[2], region: m[3], accountId: m[4], resource: m[5] };
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** True when `arn` is a Roles Anywhere ARN of the given resource type with a UUID id. */
export function isRolesAnywhereArn(arn: string, resourceType: "trust-anchor" | "profile" | "subject" | "crl"): boolean {
  const p = parseArn(arn);
  if (!p || p.service !== "rolesanywhere" || p.region === "" || p.accountId === "") return false;
  const slash = p.resource.indexOf("/");
  return slash > 0 && p.resource.slice(0, slash) === resourceType && UUID_RE.test(p.resource.slice(slash + 1));
}

/** An IAM role ARN `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`, parsed; undefined when `arn` is not one. */
export function parseRoleArn(arn: string): { partition: string; accountId: string; roleName: string } | undefined {
  const p = parseArn(arn);
  if (!p || p.service !== "iam" || p.region !== "" || p.accountId === "") return undefined;
  const m = /^role\/(?:[\x21-\x7e]*\/)?([\w+=,.@-]{1,64})$/.exec(p.resource);
  return m ? { partition: p.partition, accountId: p.accountId, roleName: m[1] } : undefined;
}

/** A UUID-shaped id derived from `seed`, so that ARNs stay the same across restarts for the same set-up. */
export function stableUuid(seed: string): string {
  const h = createHash("sha256").update(seed).digest();
  h[6] = (h[6] & 0x0f) | 0x40; // version 4 layout
  h[8] = (h[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = h.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** `arn:PARTITION:rolesanywhere:REGION:ACCOUNT:TYPE/UUID`. */
export function rolesAnywhereArn(partition: string, region: string, accountId: string, resourceType: string, id: string): string {
  return `arn:${partition}:rolesanywhere:${region}:${accountId}:${resourceType}/${id}`;
}

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** Upper-case base32 text of `length` characters drawn from `bytes`, as AWS key and role ids look. */
export function base32Id(bytes: Uint8Array, length: number): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5 && out.length < length) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (out.length < length) throw new Error("not enough bytes for the id");
  return out;
}

/** The stable role id (`AROA` + 17 characters) the emulator reports for a role ARN. */
export function roleIdFor(roleArn: string): string {
  return "AROA" + base32Id(createHash("sha256").update(roleArn).digest(), 17);
}
