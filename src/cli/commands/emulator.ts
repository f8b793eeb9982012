import type { Command } from "commander";
import { usageError } from "../../errors";

/** Options of `ra-agent emulator` as commander parses them. */
interface EmulatorFlags {
  ca: string[];
  roleArn: string[];
  crl: string[];
  config?: string;
  host?: string;
  port?: number;
  stsPort?: number;
  region?: string;
  accountId?: string;
  durationSeconds?: number;
  acceptRoleSessionName?: boolean;
  logLevel?: "error" | "warn" | "info" | "debug";
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function portNumber(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw usageError("INVALID_PORT", `${JSON.stringify(value)} is not a port number`, "give 0-65535 (0 picks a free port)");
  return n;
}

function integer(value: string): number {
  if (!/^\d+$/.test(value)) throw usageError("INVALID_NUMBER", `${JSON.stringify(value)} is not a whole number`, "give a number of seconds, e.g. 3600");
  return Number(value);
}

function logLevel(value: string): EmulatorFlags["logLevel"] {
  if (!["error", "warn", "info", "debug"].includes(value)) throw usageError("INVALID_LOG_LEVEL", `unknown log level ${JSON.stringify(value)}`, "use error, warn, info or debug");
  return value as EmulatorFlags["logLevel"];
}

/**
 * `ra-agent emulator`: a local IAM Roles Anywhere endpoint plus STS, for
 * offline tests. Prints one JSON line on stdout once listening, logs to
 * stderr, stops on SIGTERM/SIGINT.
 */
export function registerEmulator(program: Command): void {
  program
    .command("emulator")
    .description("run a local IAM Roles Anywhere endpoint (CreateSession) and STS endpoint (GetCallerIdentity) for offline testing")
    .option("--ca <file>", "CA certificate bundle (PEM or DER) to trust; each file becomes a trust anchor (repeatable)", collect, [])
    .option("--role-arn <arn>", "IAM role ARN the profile may hand out (repeatable; default arn:aws:iam::ACCOUNT:role/ra-agent-emulator)", collect, [])
    .option("--crl <file>", "CRL (PEM or DER) to check certificates against (repeatable)", collect, [])
    .option("--config <file>", "JSON configuration with trust anchors, profiles and CRLs (see docs/emulator.md); replaces --ca/--role-arn/--crl")
    .option("--host <address>", "address to listen on (default 127.0.0.1)")
    .option("--port <n>", "Roles Anywhere endpoint port (default 0: any free port)", portNumber)
    .option("--sts-port <n>", "STS endpoint port (default 0: any free port)", portNumber)
    .option("--region <region>", "region in ARNs and the expected signing scope (default us-east-1)")
    .option("--account-id <id>", "account id in ARNs (default 123456789012)")
    .option("--duration-seconds <n>", "profile's session duration cap, 900-43200 (default 3600)", integer)
    .option("--accept-role-session-name", "let callers choose the role session name")
    .option("--log-level <level>", "error, warn, info (default) or debug; logs go to stderr", logLevel)
    .action(async (flags: EmulatorFlags) => {
      // Flag checks first: a usage error needs none of the heavy modules.
      if (flags.config !== undefined) {
        const clashing = [
          flags.ca.length ? "--ca" : "",
          flags.roleArn.length ? "--role-arn" : "",
          flags.crl.length ? "--crl" : "",
          flags.durationSeconds !== undefined ? "--duration-seconds" : "",
          flags.acceptRoleSessionName ? "--accept-role-session-name" : "",
        ].filter(Boolean);
        if (clashing.length) {
          throw usageError("EMULATOR_FLAGS_CONFLICT", `${clashing.join(", ")} cannot be combined with --config`, "put trust anchors, roles and CRLs in the configuration file");
        }
      } else if (flags.ca.length === 0) {
        throw usageError("EMULATOR_NO_TRUST_ANCHOR", "no CA to trust", "give --ca FILE (the CA that issued your certificates) or --config FILE");
      }
      const [{ readFileSync }, emulator, { configureLogger }] = await Promise.all([import("node:fs"), import("../../emulator"), import("../../log/logger")]);
      configureLogger({ level: flags.logLevel ?? (process.env.RA_AGENT_LOG_LEVEL as EmulatorFlags["logLevel"]) ?? "info" });

      const readInput = (file: string, what: string): Buffer => {
        try {
          return readFileSync(file);
        } catch (e) {
          throw usageError("FILE_UNREADABLE", `cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, "check the path and its permissions", e);
        }
      };

      let config: import("../../emulator").EmulatorConfig;
      if (flags.config !== undefined) {
        config = emulator.loadEmulatorConfigFile(flags.config);
      } else {
        config = emulator.buildEmulatorConfig({
          caCertificates: flags.ca.map((f) => readInput(f, "CA certificate file")),
          trustAnchorNames: flags.ca.map((f) => emulator.trustAnchorNameFromFile(f)),
          roleArns: flags.roleArn,
          crls: flags.crl.map((f) => readInput(f, "CRL file")),
          durationSeconds: flags.durationSeconds,
          acceptRoleSessionName: flags.acceptRoleSessionName,
          accountId: flags.accountId,
        });
      }
      // Flags override the file for where and as whom the endpoint runs.
      config = {
        ...config,
        host: flags.host ?? config.host,
        port: flags.port ?? config.port,
        stsPort: flags.stsPort ?? config.stsPort,
        region: flags.region ?? config.region,
        accountId: flags.accountId ?? config.accountId,
      };

      const running = await emulator.startEmulator(config);
      // Handlers first: whoever reads the line may send SIGTERM at once.
      const stopped = new Promise<void>((resolve) => {
        const stop = () => {
          process.off("SIGTERM", stop);
          process.off("SIGINT", stop);
          resolve();
        };
        process.on("SIGTERM", stop);
        process.on("SIGINT", stop);
      });
      process.stdout.write(emulator.emulatorStartupLine(running) + "\n");
      await stopped;
      await running.close();
    });
}
