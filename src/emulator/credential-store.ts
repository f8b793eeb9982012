/**
 * Temporary credentials the emulator has issued, remembered so that its STS
 * endpoint can authenticate requests signed with them. In memory only.
 */
import { randomBytes } from "node:crypto";
import { base32Id, parseRoleArn, roleIdFor } from "./arn";

/** One issued role session. */
export interface IssuedSession {
  /** `ASIA` + 16 upper-case characters, as STS session keys look. */
  accessKeyId: string;
  /** 40 characters. */
  secretAccessKey: string;
  sessionToken: string;
  issuedAt: Date;
  expiration: Date;
  roleArn: string;
  roleName: string;
  roleSessionName: string;
  accountId: string;
  /** `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`. */
  assumedRoleArn: string;
  /** `AROA…:SESSION`. */
  assumedRoleId: string;
  /** Who asked: the signing certificate's serial (hex) and subject. */
  certificateSerialHex: string;
  certificateSubject: string;
  trustAnchorArn: string;
  profileArn: string;
}

/** What {@link CredentialStore.issue} needs. */
export interface IssueRequest {
  roleArn: string;
  roleSessionName: string;
  durationSeconds: number;
  now: Date;
  certificateSerialHex: string;
  certificateSubject: string;
  trustAnchorArn: string;
  profileArn: string;
}

/** Issued sessions are forgotten this long after they expire (until then STS answers ExpiredToken). */
const FORGET_AFTER_EXPIRY_MS = 12 * 3600_000;

const SECRET_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function randomSecret(length: number): string {
  // 64 symbols: each random byte's low 6 bits pick one without bias.
  return Array.from(randomBytes(length), (b) => SECRET_ALPHABET[b & 63]).join("");
}

/** Issues unique credentials and finds them again by access key id. */
export class CredentialStore {
  private readonly sessions = new Map<string, IssuedSession>();
  private issuedCount = 0;
  private lastPrune = 0;

  /** Number of sessions issued since start (including forgotten ones). */
  get count(): number {
    return this.issuedCount;
  }

  /**
   * Issues credentials for a role session. The role ARN must already be validated.
   * @throws Error when the role ARN does not parse (a caller bug).
   */
  issue(req: IssueRequest): IssuedSession {
    const role = parseRoleArn(req.roleArn);
    if (!role) throw new Error(`not a role ARN: ${req.roleArn}`);
    this.prune(req.now);
    let accessKeyId: string;
    do accessKeyId = "ASIA" + base32Id(randomBytes(16), 16);
    while (this.sessions.has(accessKeyId));
    const issuedAt = new Date(Math.floor(req.now.getTime() / 1000) * 1000);
    const session: IssuedSession = {
      accessKeyId,
      secretAccessKey: randomSecret(40),
      // Opaque, like the real one; long enough that clients handle real-sized tokens.
      sessionToken: randomBytes(300).toString("base64"),
      issuedAt,
      expiration: new Date(issuedAt.getTime() + req.durationSeconds * 1000),
      roleArn: req.roleArn,
      roleName: role.roleName,
      roleSessionName: req.roleSessionName,
      accountId: role.accountId,
      assumedRoleArn: `arn:${role.partition}:sts::${role.accountId}:assumed-role/${role.roleName}/${req.roleSessionName}`,
      assumedRoleId: `${roleIdFor(req.roleArn)}:${req.roleSessionName}`,
      certificateSerialHex: req.certificateSerialHex,
      certificateSubject: req.certificateSubject,
      trustAnchorArn: req.trustAnchorArn,
      profileArn: req.profileArn,
    };
    this.sessions.set(accessKeyId, session);
    this.issuedCount++;
    return session;
  }

  /** The session issued with this access key id, if still remembered. */
  lookup(accessKeyId: string): IssuedSession | undefined {
    return this.sessions.get(accessKeyId);
  }

  /** Every remembered session, oldest first. */
  list(): IssuedSession[] {
    return [...this.sessions.values()];
  }

  private prune(now: Date): void {
    // A full scan at most once a minute keeps issuing O(1) under load.
    if (now.getTime() - this.lastPrune < 60_000) return;
    this.lastPrune = now.getTime();
    for (const [id, s] of this.sessions) {
      if (now.getTime() - s.expiration.getTime() > FORGET_AFTER_EXPIRY_MS) this.sessions.delete(id);
    }
  }
}
