/**
 * A {@link ProfileConfig} built from aws_signing_helper-style command-line flags,
 * for the standalone `serve` and `update` commands (the agent reads profiles
 * from its config file instead).
 */
import { usageError } from "../errors";
import type { ProfileConfig } from "./config";

/** The credential flags `serve` and `update` share with `credential-process`. */
export interface CredentialSourceFlags {
  certificate?: string;
  privateKey?: string;
  intermediates?: string;
  pkcs11Lib?: string;
  reusePin?: boolean;
  pkcs8Password?: string;
  trustAnchorArn?: string;
  profileArn?: string;
  roleArn?: string;
  region?: string;
  endpoint?: string;
  sessionDuration?: number;
  roleSessionName?: string;
  verifySsl?: boolean;
  withProxy?: boolean;
  timeout?: number;
}

/**
 * @throws RaError `MISSING_FLAG` naming the first missing required flag.
 */
export function profileFromFlags(name: string, f: CredentialSourceFlags, interactivePin: boolean): ProfileConfig {
  const required: [keyof CredentialSourceFlags, string][] = [
    ["trustAnchorArn", "--trust-anchor-arn"],
    ["profileArn", "--profile-arn"],
    ["roleArn", "--role-arn"],
  ];
  for (const [key, flag] of required) {
    if (!f[key]) throw usageError("MISSING_FLAG", `${flag} is required`, `pass ${flag} ARN`);
  }
  if (!f.certificate && !f.privateKey) {
    throw usageError("MISSING_KEY_SOURCE", "no certificate or private key given", "pass --certificate (a file or a pkcs11: URI) and, for file keys, --private-key");
  }
  return {
    name,
    certificate: f.certificate,
    privateKey: f.privateKey,
    intermediates: f.intermediates,
    pkcs11Lib: f.pkcs11Lib,
    reusePin: f.reusePin ?? false,
    pkcs8Password: f.pkcs8Password,
    trustAnchorArn: f.trustAnchorArn!,
    profileArn: f.profileArn!,
    roleArn: f.roleArn!,
    region: f.region,
    endpoint: f.endpoint,
    durationSeconds: f.sessionDuration ?? 3600,
    roleSessionName: f.roleSessionName,
    verifySsl: f.verifySsl ?? true,
    withProxy: f.withProxy ?? false,
    allowSigning: false,
    keepWarm: false,
    timeoutMs: f.timeout ?? 10_000,
    interactivePin,
  };
}
