/**
 * `POST /sessions` (CreateSession): authenticate the SigV4-X509 request, check
 * the certificate against the trust anchor, the role against the profile, and
 * issue temporary credentials in the service's response shape.
 */
import type { CertificateInfo } from "../x509/certificate";
import { isRolesAnywhereArn, parseRoleArn, rolesAnywhereArn, stableUuid } from "./arn";
import { validateCertificatePath } from "./certificate-path";
import type { ResolvedEmulatorConfig } from "./config";
import type { CredentialStore, IssuedSession } from "./credential-store";
import { accessDenied, notFound, validation } from "./service-error";
import { CanonicalizationError, parseRawQuery, splitTarget, type ReceivedRequest } from "./sigv4/canonical";
import { verifySigV4X509Request } from "./sigv4x509-verifier";

/** Default session duration when the request gives none. */
export const DEFAULT_SESSION_DURATION_SECONDS = 3600;
/** Valid role session names, as STS defines them. */
const ROLE_SESSION_NAME_RE = /^[\w+=,.@-]{2,64}$/;

/** The 201 response body of CreateSession. */
export interface CreateSessionResponse {
  credentialSet: Array<{
    assumedRoleUser: { arn: string; assumedRoleId: string };
    credentials: { accessKeyId: string; expiration: string; secretAccessKey: string; sessionToken: string };
    packedPolicySize: number;
    roleArn: string;
    sourceIdentity: string;
  }>;
  subjectArn: string;
}

/** The parameters of a CreateSession request, from the query string and/or the JSON body. */
export interface CreateSessionParameters {
  trustAnchorArn: string;
  profileArn: string;
  roleArn: string;
  durationSeconds?: number;
  roleSessionName?: string;
}

const ARN_PARAMETERS = ["trustAnchorArn", "profileArn", "roleArn"] as const;

/**
 * Reads the CreateSession parameters. ARNs may be in the query string or the
 * JSON body (the service accepts both); if both are given they must agree.
 * @throws RolesAnywhereError `ValidationException` naming the bad parameter.
 */
export function parseCreateSessionParameters(request: ReceivedRequest): CreateSessionParameters {
  let query: Array<[string, string]>;
  try {
    query = parseRawQuery(splitTarget(request.target).rawQuery);
  } catch (e) {
    if (e instanceof CanonicalizationError) throw validation("query", e.message);
    throw e;
  }
  let body: Record<string, unknown> = {};
  if (request.body.length > 0) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(request.body.toString("utf8"));
    } catch {
      throw validation("body-json", "The request body is not valid JSON");
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw validation("body-json", "The request body must be a JSON object");
    body = parsed as Record<string, unknown>;
  }

  const values: Partial<Record<(typeof ARN_PARAMETERS)[number], string>> = {};
  for (const name of ARN_PARAMETERS) {
    const fromQuery = query.filter(([k]) => k === name).map(([, v]) => v);
    if (fromQuery.length > 1) throw validation("parameter-duplicate", `Query parameter ${name} was given ${fromQuery.length} times`);
    const fromBody = body[name];
    if (fromBody !== undefined && typeof fromBody !== "string") throw validation("parameter-type", `${name} in the body must be a string`);
    if (fromQuery.length === 1 && fromBody !== undefined && fromQuery[0] !== fromBody) {
      throw validation("parameter-conflict", `${name} differs between the query string and the body`);
    }
    const value = fromQuery[0] ?? fromBody;
    if (value === undefined || value === "") throw validation("parameter-missing", `${name} is required (query string or JSON body)`);
    values[name] = value;
  }
  if (!isRolesAnywhereArn(values.trustAnchorArn!, "trust-anchor")) {
    throw validation("trust-anchor-arn", `trustAnchorArn ${JSON.stringify(values.trustAnchorArn)} is not a trust anchor ARN (arn:aws:rolesanywhere:REGION:ACCOUNT:trust-anchor/UUID)`);
  }
  if (!isRolesAnywhereArn(values.profileArn!, "profile")) {
    throw validation("profile-arn", `profileArn ${JSON.stringify(values.profileArn)} is not a profile ARN (arn:aws:rolesanywhere:REGION:ACCOUNT:profile/UUID)`);
  }
  if (!parseRoleArn(values.roleArn!)) {
    throw validation("role-arn", `roleArn ${JSON.stringify(values.roleArn)} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)`);
  }

  let durationSeconds: number | undefined;
  if (body.durationSeconds !== undefined && body.durationSeconds !== null) {
    const d = body.durationSeconds;
    if (typeof d !== "number" || !Number.isInteger(d) || d < 900 || d > 43200) {
      throw validation("duration", `durationSeconds must be an integer from 900 to 43200, got ${JSON.stringify(d)}`);
    }
    durationSeconds = d;
  }
  let roleSessionName: string | undefined;
  if (body.roleSessionName !== undefined && body.roleSessionName !== null) {
    if (typeof body.roleSessionName !== "string" || !ROLE_SESSION_NAME_RE.test(body.roleSessionName)) {
      throw validation("role-session-name-format", "roleSessionName must be 2-64 characters of letters, digits and _+=,.@-");
    }
    roleSessionName = body.roleSessionName;
  }
  if (body.instanceProperties !== undefined && body.instanceProperties !== null) {
    const p = body.instanceProperties;
    if (typeof p !== "object" || Array.isArray(p) || Object.values(p as object).some((v) => typeof v !== "string")) {
      throw validation("instance-properties", "instanceProperties must be an object of string values");
    }
  }
  return { trustAnchorArn: values.trustAnchorArn!, profileArn: values.profileArn!, roleArn: values.roleArn!, durationSeconds, roleSessionName };
}

function commonName(cert: CertificateInfo): string | undefined {
  return cert.x509.subject.split("\n").find((line) => line.startsWith("CN="));
}

/** The outcome of a successful CreateSession. */
export interface CreateSessionResult {
  response: CreateSessionResponse;
  session: IssuedSession;
}

/**
 * Handles a CreateSession request end to end.
 * @throws RolesAnywhereError with the service's error type and a message naming the failed rule.
 */
export async function handleCreateSession(
  request: ReceivedRequest,
  config: ResolvedEmulatorConfig,
  store: CredentialStore,
  now: Date,
): Promise<CreateSessionResult> {
  const verified = verifySigV4X509Request(request, { now, region: config.region, maxClockSkewSeconds: config.maxClockSkewSeconds });
  const params = parseCreateSessionParameters(request);

  const anchor = config.trustAnchors.find((t) => t.arn === params.trustAnchorArn);
  if (!anchor) throw notFound("trust-anchor-unknown", `Trust anchor ${params.trustAnchorArn} does not exist`);
  if (!anchor.enabled) throw accessDenied("trust-anchor-disabled", `Trust anchor ${anchor.arn} (${anchor.name}) is disabled`);
  await validateCertificatePath({ leaf: verified.leaf, chain: verified.chain, anchors: anchor.certificates, crls: anchor.crls, now });

  const profile = config.profiles.find((p) => p.arn === params.profileArn);
  if (!profile) throw notFound("profile-unknown", `Profile ${params.profileArn} does not exist`);
  if (!profile.enabled) throw accessDenied("profile-disabled", `Profile ${profile.arn} (${profile.name}) is disabled`);
  if (!profile.roleArns.includes(params.roleArn)) {
    throw accessDenied("role-not-in-profile", `Role ${params.roleArn} is not one of the roles of profile ${profile.name} (${profile.roleArns.join(", ")})`);
  }
  if (params.roleSessionName !== undefined && !profile.acceptRoleSessionName) {
    throw accessDenied("role-session-name-not-accepted", `Profile ${profile.name} does not accept a roleSessionName (acceptRoleSessionName is false)`);
  }
  const durationSeconds = Math.min(params.durationSeconds ?? DEFAULT_SESSION_DURATION_SECONDS, profile.durationSeconds);

  const leaf = verified.leaf;
  const session = store.issue({
    roleArn: params.roleArn,
    // The service names the session after the certificate serial unless the profile lets the caller choose.
    roleSessionName: params.roleSessionName ?? leaf.serialHex,
    durationSeconds,
    now,
    certificateSerialHex: leaf.serialHex,
    certificateSubject: leaf.subject,
    trustAnchorArn: anchor.arn,
    profileArn: profile.arn,
  });
  const subjectId = stableUuid(`subject|${config.accountId}|${config.region}|${leaf.x509.subject}`);
  const response: CreateSessionResponse = {
    credentialSet: [
      {
        assumedRoleUser: { arn: session.assumedRoleArn, assumedRoleId: session.assumedRoleId },
        credentials: {
          accessKeyId: session.accessKeyId,
          expiration: session.expiration.toISOString().replace(/\.\d{3}Z$/, "Z"),
          secretAccessKey: session.secretAccessKey,
          sessionToken: session.sessionToken,
        },
        packedPolicySize: 0,
        roleArn: session.roleArn,
        sourceIdentity: commonName(leaf) ?? leaf.subject,
      },
    ],
    subjectArn: rolesAnywhereArn(config.partition, config.region, config.accountId, "subject", subjectId),
  };
  return { response, session };
}
