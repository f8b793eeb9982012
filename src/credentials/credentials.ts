/** Temporary AWS credentials as ra-agent passes them around. */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  /** When the credentials stop working. */
  expiration: Date;
}

/** The JSON a `credential_process` program prints on stdout (Version 1). */
export interface CredentialProcessOutput {
  Version: 1;
  AccessKeyId: string;
  SecretAccessKey: string;
  SessionToken: string;
  Expiration: string;
}

/** Converts credentials to the `credential_process` JSON shape. */
export function toCredentialProcessOutput(c: AwsCredentials): CredentialProcessOutput {
  return {
    Version: 1,
    AccessKeyId: c.accessKeyId,
    SecretAccessKey: c.secretAccessKey,
    SessionToken: c.sessionToken,
    Expiration: c.expiration.toISOString(),
  };
}
