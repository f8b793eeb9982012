/**
 * ARNs of IAM Roles Anywhere trust anchors and profiles, and of IAM roles:
 * parsed and checked before any network call, each failure an `INVALID_ARN`
 * error naming the flag and the expected shape.
 */
import { usageError } from "../errors";

/** The parts of an ARN: `arn:partition:service:region:account:resource`. */
export interface Arn {
  /** The ARN as given. */
  text: string;
  partition: string;
  service: string;
  /** Empty for global services (IAM). */
  region: string;
  accountId: string;
  /** Everything after the account, e.g. `trust-anchor/0a1b…`. */
  resource: string;
  /** `trust-anchor`, `profile`, `role`. */
  resourceType: string;
  /** What follows the resource type, e.g. the trust anchor id or the role's path and name. */
  resourceId: string;
}

const PARTITION = /^aws(-[a-z]+)*$/;
const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;
const ACCOUNT = /^\d{12}$/;
/** Trust anchor and profile ids are UUIDs; any id of letters, digits and dashes is let through to the service. */
const RA_ID = /^[A-Za-z0-9-]+$/;
/** IAM role path and name characters (IAM's documented pattern). */
const ROLE_PATH_AND_NAME = /^([\u0021-\u007E]+\/)*[\w+=,.@-]{1,64}$/;

const SHAPES = {
  "trust-anchor": "arn:aws:rolesanywhere:<region>:<12-digit account>:trust-anchor/<id>",
  profile: "arn:aws:rolesanywhere:<region>:<12-digit account>:profile/<id>",
  role: "arn:aws:iam::<12-digit account>:role/<name>",
} as const;

/** Which ARN the user gave, for messages: the flag name. */
export type ArnFlag = "--trust-anchor-arn" | "--profile-arn" | "--role-arn";

function invalid(flag: ArnFlag, text: string, problem: string, kind: keyof typeof SHAPES): Error {
  return usageError("INVALID_ARN", `${flag} "${text}" is not a valid ARN: ${problem}`, `expected ${SHAPES[kind]}`);
}

/**
 * Splits an ARN into its parts, checking only the general shape.
 * @throws RaError `INVALID_ARN`
 */
export function parseArn(text: string, flag: ArnFlag, kind: keyof typeof SHAPES): Arn {
  if (typeof text !== "string" || text.trim() === "") throw usageError("INVALID_ARN", `${flag} is missing`, `pass ${flag} ${SHAPES[kind]}`);
  if (text !== text.trim()) throw invalid(flag, text, "it has leading or trailing spaces", kind);
  const parts = text.split(":");
  if (parts.length < 6 || parts[0] !== "arn") throw invalid(flag, text, 'it must have six ":"-separated parts starting with "arn"', kind);
  const [, partition, service, region, accountId] = parts;
  const resource = parts.slice(5).join(":");
  if (!PARTITION.test(partition)) throw invalid(flag, text, `unknown partition "${partition}"`, kind);
  if (accountId !== "" && !ACCOUNT.test(accountId)) throw invalid(flag, text, `account "${accountId}" is not 12 digits`, kind);
  const slash = resource.indexOf("/");
  const resourceType = slash < 0 ? resource : resource.slice(0, slash);
  const resourceId = slash < 0 ? "" : resource.slice(slash + 1);
  return { text, partition, service, region, accountId, resource, resourceType, resourceId };
}

function parseRolesAnywhereArn(text: string, flag: ArnFlag, kind: "trust-anchor" | "profile"): Arn {
  const arn = parseArn(text, flag, kind);
  if (arn.service !== "rolesanywhere") throw invalid(flag, text, `service is "${arn.service}", not "rolesanywhere"`, kind);
  if (!REGION.test(arn.region)) throw invalid(flag, text, arn.region === "" ? "the region is missing" : `"${arn.region}" is not a region`, kind);
  if (arn.accountId === "") throw invalid(flag, text, "the account is missing", kind);
  if (arn.resourceType !== kind) {
    const other = arn.resourceType === "trust-anchor" ? "a trust anchor" : arn.resourceType === "profile" ? "a profile" : `a "${arn.resourceType}"`;
    throw invalid(flag, text, `it names ${other}, not a ${kind === "profile" ? "profile" : "trust anchor"}`, kind);
  }
  if (!RA_ID.test(arn.resourceId)) throw invalid(flag, text, arn.resourceId === "" ? "the id is missing" : `"${arn.resourceId}" is not a valid id`, kind);
  return arn;
}

/** @throws RaError `INVALID_ARN` */
export function parseTrustAnchorArn(text: string): Arn {
  return parseRolesAnywhereArn(text, "--trust-anchor-arn", "trust-anchor");
}

/** @throws RaError `INVALID_ARN` */
export function parseProfileArn(text: string): Arn {
  return parseRolesAnywhereArn(text, "--profile-arn", "profile");
}

/** @throws RaError `INVALID_ARN` */
export function parseRoleArn(text: string): Arn {
  const flag = "--role-arn";
  const arn = parseArn(text, flag, "role");
  if (arn.service !== "iam") throw invalid(flag, text, `service is "${arn.service}", not "iam"`, "role");
  if (arn.region !== "") throw invalid(flag, text, "IAM ARNs have no region", "role");
  if (arn.accountId === "") throw invalid(flag, text, "the account is missing", "role");
  if (arn.resourceType !== "role") throw invalid(flag, text, `it names a "${arn.resourceType}", not a role`, "role");
  if (!ROLE_PATH_AND_NAME.test(arn.resourceId)) throw invalid(flag, text, arn.resourceId === "" ? "the role name is missing" : "the role name is not valid", "role");
  return arn;
}

/** The three ARNs of a CreateSession call, parsed. */
export interface SessionArns {
  trustAnchor: Arn;
  profile: Arn;
  role: Arn;
}

/**
 * Parses and cross-checks the three ARNs: like the reference helper, the trust
 * anchor and profile must be in one region; all three in one partition.
 * @throws RaError `INVALID_ARN`, `ARN_REGION_MISMATCH`, `ARN_PARTITION_MISMATCH`
 */
export function parseSessionArns(trustAnchorArn: string, profileArn: string, roleArn: string): SessionArns {
  const trustAnchor = parseTrustAnchorArn(trustAnchorArn);
  const profile = parseProfileArn(profileArn);
  const role = parseRoleArn(roleArn);
  if (trustAnchor.region !== profile.region) {
    throw usageError(
      "ARN_REGION_MISMATCH",
      `the trust anchor is in ${trustAnchor.region} but the profile is in ${profile.region}`,
      "use a trust anchor and a profile of the same region",
    );
  }
  for (const arn of [profile, role]) {
    if (arn.partition !== trustAnchor.partition) {
      throw usageError("ARN_PARTITION_MISMATCH", `${arn.text} is in partition ${arn.partition} but the trust anchor is in ${trustAnchor.partition}`, "use ARNs of one partition");
    }
  }
  return { trustAnchor, profile, role };
}
