/**
 * The flags shared by every command that vends credentials, with the names and
 * meanings of aws_signing_helper 1.8, plus ra-agent's own (`--profile`, `--socket`,
 * `--log-level`). Parsing only: no PKCS#11, x509 or HTTP modules are loaded here,
 * because `credential-process --profile` through the agent must start fast.
 */
import { Command, Option } from "commander";
import { usageError } from "../errors";

/** Raw option values as commander returns them. */
export interface CredentialFlags {
  roleArn?: string;
  profileArn?: string;
  trustAnchorArn?: string;
  sessionDuration: number;
  region?: string;
  endpoint?: string;
  verifySsl: boolean;
  withProxy: boolean;
  debug: boolean;
  logLevel?: "error" | "warn" | "info" | "debug";
  certificate?: string;
  privateKey?: string;
  intermediates?: string;
  certSelector?: string;
  systemStoreName?: string;
  useLatestExpiringCertificate?: boolean;
  pkcs11Lib?: string;
  reusePin: boolean;
  allowFinalTry: boolean;
  /** A string, or false for --no-tpm-key-password. */
  tpmKeyPassword?: string | false;
  roleSessionName?: string;
  pkcs8Password?: string;
  timeout: number;
}

function parseInteger(name: string): (value: string) => number {
  return (value: string) => {
    if (!/^\d+$/.test(value)) throw usageError("INVALID_FLAG", `--${name} must be a whole number, got "${value}"`, `write it in ${name === "timeout" ? "milliseconds, e.g. --timeout 10000" : "seconds, e.g. --session-duration 3600"}`);
    return Number(value);
  };
}

/** Adds the key-source flags (certificate, key, module, PIN reuse). */
export function addKeySourceOptions(cmd: Command): Command {
  return cmd
    .option("--certificate <path|uri>", "certificate file (PEM/DER/PKCS#12) or pkcs11: URI of the certificate")
    .option("--private-key <path|uri>", "private key file or pkcs11: URI of the private key")
    .option("--intermediates <path>", "PEM bundle of intermediate CA certificates (sent in X-Amz-X509-Chain, at most 5)")
    .option("--pkcs11-lib <path>", "PKCS#11 module (default: p11-kit-proxy)")
    .option("--reuse-pin", "use the user PIN as the context-specific PIN for always-authenticate keys", false)
    .option("--allow-final-try", "log in even when the token says one more wrong PIN locks it (default: refuse)", false)
    .option("--pkcs8-password <password>", "password of an encrypted PKCS#8 key (visible in ps: prefer RA_AGENT_PKCS8_PASSWORD or RA_AGENT_PKCS8_PASSWORD_FILE)")
    .addOption(new Option("--cert-selector <selector>", "certificate store selector (Windows/macOS stores; not supported by ra-agent)").hideHelp())
    .addOption(new Option("--system-store-name <name>", "Windows system store name (not supported by ra-agent)").hideHelp())
    .addOption(new Option("--use-latest-expiring-certificate", "certificate store option (not supported by ra-agent)").hideHelp())
    .addOption(new Option("--tpm-key-password <password>", "TPM key file password (use a pkcs11: URI through tpm2-pkcs11 instead)").hideHelp())
    .addOption(new Option("--no-tpm-key-password", "TPM key file without password (use a pkcs11: URI through tpm2-pkcs11 instead)").hideHelp())
    .option("--debug", "print debug output to stderr", false)
    .addOption(new Option("--log-level <level>", "log level on stderr").choices(["error", "warn", "info", "debug"]));
}

/** Adds the flags of commands that call CreateSession. */
export function addSessionOptions(cmd: Command): Command {
  return cmd
    .option("--trust-anchor-arn <arn>", "trust anchor to authenticate against")
    .option("--profile-arn <arn>", "Roles Anywhere profile to pull policies from")
    .option("--role-arn <arn>", "target role to assume")
    .option("--session-duration <seconds>", "duration of the session, 900-43200 seconds", parseInteger("session-duration"), 3600)
    .option("--region <region>", "signing region (default: the trust anchor's region)")
    .option("--endpoint <url>", "CreateSession endpoint (default: from the region; http:// only for loopback)")
    .option("--no-verify-ssl", "do not verify the endpoint's TLS certificate (unsafe)")
    .option("--with-proxy", "use HTTPS_PROXY / NO_PROXY for the CreateSession call", false)
    .option("--role-session-name <name>", "role session name (the profile must accept it)")
    .option("--timeout <ms>", "CreateSession timeout in milliseconds", parseInteger("timeout"), 10_000);
}

/**
 * Rejects flags that aws_signing_helper accepts for platforms or key stores ra-agent
 * does not support, with the supported alternative.
 * @throws RaError `UNSUPPORTED_FLAG`
 */
export function rejectUnsupportedFlags(flags: Partial<CredentialFlags> & Record<string, unknown>): void {
  if (flags.certSelector !== undefined || flags.useLatestExpiringCertificate) {
    throw usageError(
      "UNSUPPORTED_FLAG",
      "--cert-selector / --use-latest-expiring-certificate select from the Windows or macOS certificate store, which ra-agent does not read",
      "keep the key in a PKCS#11 token and name it with --certificate pkcs11:... (see `ra-agent list`)",
    );
  }
  if (flags.tpmKeyPassword !== undefined) {
    throw usageError(
      "UNSUPPORTED_FLAG",
      "TPM key files (--tpm-key-password / --no-tpm-key-password) are not supported",
      "use the TPM through tpm2-pkcs11: --pkcs11-lib .../libtpm2_pkcs11.so --certificate 'pkcs11:token=...' (see docs/tpm.md)",
    );
  }
}

/**
 * The PKCS#8 password: from the flag (compatibility), or `RA_AGENT_PKCS8_PASSWORD_FILE`,
 * or `RA_AGENT_PKCS8_PASSWORD`.
 */
export async function resolvePkcs8Password(flag: string | undefined): Promise<string | undefined> {
  if (flag !== undefined) return flag;
  const file = process.env.RA_AGENT_PKCS8_PASSWORD_FILE;
  if (file) {
    const { readSecretFile } = await import("../util/read-secret-file");
    return readSecretFile(file, "RA_AGENT_PKCS8_PASSWORD_FILE");
  }
  return process.env.RA_AGENT_PKCS8_PASSWORD;
}

/** The log level implied by `--debug` / `--log-level`. */
export function logLevelFrom(flags: { debug?: boolean; logLevel?: string }): "error" | "warn" | "info" | "debug" | undefined {
  if (flags.logLevel) return flags.logLevel as "error" | "warn" | "info" | "debug";
  return flags.debug ? "debug" : undefined;
}
