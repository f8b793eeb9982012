import type { Command } from "commander";
import { Option } from "commander";

/** Flags of `ra-agent agent`. */
interface AgentFlags {
  config: string;
  socket?: string;
  logFormat?: "text" | "json";
  logLevel?: "error" | "warn" | "info" | "debug";
  check?: boolean;
}

/**
 * `ra-agent agent`: the daemon. Runs in the foreground (systemd-friendly), logs
 * to stderr, prints one JSON line on stdout once listening. SIGHUP reloads the
 * config; SIGTERM/SIGINT stop it and remove the socket.
 */
export function registerAgent(program: Command): void {
  program
    .command("agent")
    .description("run the agent: one token login, cached credentials on a Unix socket (see docs/agent.md)")
    .requiredOption("--config <file>", "agent configuration (JSON) with the profiles to serve")
    .option("--socket <path>", "Unix socket path (default $RA_AGENT_SOCKET, else $XDG_RUNTIME_DIR/ra-agent/agent.sock)")
    .addOption(new Option("--log-format <format>", "log format on stderr").choices(["text", "json"]).default("text"))
    .addOption(new Option("--log-level <level>", "log level on stderr").choices(["error", "warn", "info", "debug"]).default("info"))
    .option("--check", "validate the configuration and exit")
    .action(async (flags: AgentFlags) => {
      const { configureLogger, logger } = await import("../../log/logger");
      configureLogger({ level: flags.logLevel, format: flags.logFormat });
      if (flags.check) {
        const { loadAgentConfig } = await import("../../agent/config");
        const config = loadAgentConfig(flags.config);
        process.stdout.write(JSON.stringify({ ok: true, config: config.source, profiles: config.profiles.map((p) => p.name) }) + "\n");
        return;
      }
      // A long-running daemon: let V8 favour a small heap (the old generation grows in
      // small steps). Measured on the agent (100k requests): heap 24 MB instead of 48 MB,
      // RSS 71 MB instead of 92 MB, credential requests/s within noise; under heavy
      // signing load it costs about a tenth of the EC signing rate (docs/agent.md).
      // Settable at run time, unlike --max-semi-space-size.
      (await import("node:v8")).setFlagsFromString("--optimize-for-size");
      const { Agent } = await import("../../agent/agent");
      const agent = await Agent.start({ configPath: flags.config, socketPath: flags.socket });
      const m = agent.metadataServer;
      process.stdout.write(
        JSON.stringify({ socket: agent.socketPath, pid: process.pid, profiles: agent.profileNames(), ...(m ? { imdsEndpoint: m.imdsEndpoint, ecsFullUri: m.ecsFullUri, ecsTokenFile: m.ecsTokenFile } : {}) }) + "\n",
      );
      await new Promise<void>((resolve) => {
        const onHup = () => void agent.reload();
        const stop = (signal: NodeJS.Signals) => {
          logger.info(`${signal}: shutting down`);
          process.off("SIGHUP", onHup);
          process.off("SIGTERM", stop);
          process.off("SIGINT", stop);
          agent.close().then(resolve, (e) => {
            logger.error(`shutdown: ${(e as Error).message}`);
            resolve();
          });
        };
        process.on("SIGHUP", onHup);
        process.on("SIGTERM", stop);
        process.on("SIGINT", stop);
      });
    });
}
