import type { Command } from "commander";
import { usageError } from "../../errors";
import { addKeySourceOptions, addSessionOptions, logLevelFrom, rejectUnsupportedFlags, resolvePkcs8Password, type CredentialFlags } from "../credential-options";

/** Flags of `ra-agent serve`. */
interface ServeFlags extends CredentialFlags {
  port: number;
  hopLimit: number;
  imds: boolean;
  ecsTokenFile?: string;
}

function integerIn(name: string, min: number, max: number): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max) throw usageError("INVALID_FLAG", `--${name} must be a whole number from ${min} to ${max}, got "${v}"`);
    return n;
  };
}

/**
 * `ra-agent serve`: an IMDSv2-compatible credentials endpoint on loopback (and
 * optionally an ECS container-credentials endpoint), flag-compatible with
 * aws_signing_helper serve. Prints one JSON line with the endpoints on stdout.
 */
export function registerServe(program: Command): void {
  const cmd = program
    .command("serve")
    .description("serve credentials on a loopback IMDSv2-compatible endpoint (and optionally an ECS endpoint)")
    .option("--port <n>", "TCP port on 127.0.0.1 (0 picks a free port)", integerIn("port", 0, 65535), 9911)
    .option("--hop-limit <n>", "IP TTL of responses (accepted for compatibility; no effect on loopback)", integerIn("hop-limit", 1, 255), 64)
    .option("--no-imds", "do not serve the IMDSv2 paths (only the ECS endpoint)")
    .option("--ecs-token-file <path>", "also serve the ECS endpoint; its authorization token is written to this file (0600)");
  addKeySourceOptions(cmd);
  addSessionOptions(cmd);
  cmd.action(async (flags: ServeFlags) => {
    rejectUnsupportedFlags(flags as unknown as Record<string, unknown>);
    if (!flags.imds && !flags.ecsTokenFile) throw usageError("INVALID_FLAG", "--no-imds without --ecs-token-file serves nothing", "add --ecs-token-file PATH");
    const { configureLogger, logger } = await import("../../log/logger");
    configureLogger({ level: logLevelFrom(flags) ?? "info" });
    // As in `agent`: a long-running server favours a small heap (see there).
    (await import("node:v8")).setFlagsFromString("--optimize-for-size");
    const [{ profileFromFlags }, { startStandaloneServe }] = await Promise.all([import("../../agent/flags-profile"), import("../../agent/serve")]);
    const profile = profileFromFlags("serve", { ...flags, pkcs8Password: await resolvePkcs8Password(flags.pkcs8Password) }, process.stdin.isTTY === true);
    if (flags.hopLimit !== 64) logger.warn("--hop-limit has no effect: the endpoint listens on loopback only, where replies never cross a router");
    const serve = await startStandaloneServe({ profile, port: flags.port, imds: flags.imds, ecsTokenFile: flags.ecsTokenFile, log: logger });
    const s = serve.server;
    process.stdout.write(JSON.stringify({ imdsEndpoint: s.imdsEndpoint, ecsFullUri: s.ecsFullUri, ecsTokenFile: s.ecsTokenFile, port: s.port }) + "\n");
    if (s.imdsEndpoint) logger.info(`Local server started on port ${s.port}. Make it available to the SDK with: export AWS_EC2_METADATA_SERVICE_ENDPOINT=${s.imdsEndpoint}`);
    if (s.ecsFullUri) logger.info(`ECS endpoint: export AWS_CONTAINER_CREDENTIALS_FULL_URI=${s.ecsFullUri} AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=${s.ecsTokenFile}`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off("SIGTERM", stop);
        process.off("SIGINT", stop);
        serve.close().then(resolve, resolve);
      };
      process.on("SIGTERM", stop);
      process.on("SIGINT", stop);
    });
  });
}
