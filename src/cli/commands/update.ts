import type { Command } from "commander";
import { addKeySourceOptions, addSessionOptions, logLevelFrom, rejectUnsupportedFlags, resolvePkcs8Password, type CredentialFlags } from "../credential-options";

/** Flags of `ra-agent update`. */
interface UpdateFlags extends CredentialFlags {
  profile: string;
  once: boolean;
}

/**
 * `ra-agent update`: writes credentials into a profile of the shared
 * credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials) and keeps
 * them fresh; `--once` writes a single time. Flag-compatible with aws_signing_helper update.
 */
export function registerUpdate(program: Command): void {
  const cmd = program
    .command("update")
    .description("write credentials into a profile of the AWS credentials file and refresh them before they expire")
    .option("--profile <name>", "profile (section) of the credentials file to update", "default")
    .option("--once", "update the profile once and exit", false);
  addKeySourceOptions(cmd);
  addSessionOptions(cmd);
  cmd.action(async (flags: UpdateFlags) => {
    rejectUnsupportedFlags(flags as unknown as Record<string, unknown>);
    const { configureLogger, logger } = await import("../../log/logger");
    configureLogger({ level: logLevelFrom(flags) ?? "info" });
    const [{ profileFromFlags }, { runProfileUpdate }, { credentialsFilePath }] = await Promise.all([
      import("../../agent/flags-profile"),
      import("../../agent/update"),
      import("../../agent/credentials-file"),
    ]);
    const source = profileFromFlags("update", { ...flags, pkcs8Password: await resolvePkcs8Password(flags.pkcs8Password) }, process.stdin.isTTY === true);
    const controller = new AbortController();
    const stop = () => controller.abort();
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
    try {
      await runProfileUpdate({ source, profile: flags.profile, file: credentialsFilePath(), once: flags.once, log: logger, signal: controller.signal });
    } finally {
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
    }
  });
}
