import type { Command } from "commander";
import { RaError, usageError } from "../../errors";
import { addKeySourceOptions, addSessionOptions, logLevelFrom, rejectUnsupportedFlags, resolvePkcs8Password, type CredentialFlags } from "../credential-options";

interface CredentialProcessFlags extends CredentialFlags {
  profile?: string;
  socket?: string;
  agent: boolean;
}

/**
 * `ra-agent credential-process`: prints `credential_process` JSON on stdout.
 * With `--profile NAME` it asks the running agent (fast path: loads no PKCS#11,
 * x509 or HTTP-client modules); otherwise, or when no agent runs and key flags
 * were given, it signs CreateSession directly.
 */
export function registerCredentialProcess(program: Command): void {
  const cmd = program
    .command("credential-process")
    .description("print temporary credentials in the credential_process JSON format")
    .option("--profile <name>", "get the credentials of this profile from the running ra-agent agent")
    .option("--socket <path>", "agent socket (default: $RA_AGENT_SOCKET, then $XDG_RUNTIME_DIR/ra-agent/agent.sock)")
    .option("--no-agent", "never ask the agent; sign directly with the given key");
  addSessionOptions(addKeySourceOptions(cmd));
  cmd.action(async (flags: CredentialProcessFlags) => {
    const hasKeySource = Boolean(flags.certificate || flags.privateKey);
    if (flags.profile && flags.agent) {
      const { fetchCredentialsFromAgent } = await import("../../agent/client");
      const output = await fetchCredentialsFromAgent({ socketPath: flags.socket, profile: flags.profile });
      if (output) {
        process.stdout.write(JSON.stringify(output) + "\n");
        return;
      }
      if (!hasKeySource) {
        const { defaultSocketPath } = await import("../../agent/client");
        throw new RaError(
          "agent",
          "AGENT_NOT_RUNNING",
          `no ra-agent agent is listening on ${flags.socket ?? defaultSocketPath()} for profile "${flags.profile}"`,
          { hint: "start it (`ra-agent agent --config FILE`, or `systemctl --user start ra-agent`), or also pass --certificate/--trust-anchor-arn/... to sign directly when it is down" },
        );
      }
    }
    const output = await credentialsDirect(flags);
    process.stdout.write(JSON.stringify(output) + "\n");
  });
}

async function credentialsDirect(flags: CredentialProcessFlags) {
  rejectUnsupportedFlags(flags as unknown as Record<string, unknown>);
  const level = logLevelFrom(flags);
  const { configureLogger } = await import("../../log/logger");
  if (level) configureLogger({ level });
  const missing = (["trustAnchorArn", "profileArn", "roleArn"] as const).filter((k) => !flags[k]);
  if (missing.length) {
    const names = missing.map((k) => "--" + k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()));
    throw usageError("MISSING_FLAG", `missing ${names.join(", ")}`, "credential-process needs --trust-anchor-arn, --profile-arn and --role-arn (or --profile NAME with a running agent)");
  }
  const { obtainCredentials } = await import("../../rolesanywhere/obtain-credentials");
  const { toCredentialProcessOutput } = await import("../../credentials/credentials");
  const credentials = await obtainCredentials(
    {
      certificate: flags.certificate,
      privateKey: flags.privateKey,
      intermediates: flags.intermediates,
      pkcs11Lib: flags.pkcs11Lib,
      pkcs8Password: await resolvePkcs8Password(flags.pkcs8Password),
      reusePin: flags.reusePin,
      allowFinalTryLogin: flags.allowFinalTry,
    },
    {
      trustAnchorArn: flags.trustAnchorArn!,
      profileArn: flags.profileArn!,
      roleArn: flags.roleArn!,
      region: flags.region,
      endpoint: flags.endpoint,
      durationSeconds: flags.sessionDuration,
      roleSessionName: flags.roleSessionName,
      useFips: envFlag("AWS_USE_FIPS_ENDPOINT"),
      useDualStack: envFlag("AWS_USE_DUALSTACK_ENDPOINT"),
    },
    { noVerifySsl: !flags.verifySsl, withProxy: flags.withProxy, timeoutMs: flags.timeout },
  );
  return toCredentialProcessOutput(credentials);
}

function envFlag(name: string): boolean {
  return (process.env[name] ?? "").toLowerCase() === "true";
}
