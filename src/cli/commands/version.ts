import type { Command } from "commander";
import { readFileSync } from "node:fs";
import { join } from "node:path";

/** The package version, read from package.json at the repository root. */
export function packageVersion(): string {
  // dist/src/cli/commands -> repository root
  const pkg = JSON.parse(readFileSync(join(__dirname, "..", "..", "..", "..", "package.json"), "utf8")) as { version: string };
  return pkg.version;
}

/** `ra-agent version`: prints the version, as aws_signing_helper does. */
export function registerVersion(program: Command): void {
  program.version(packageVersion(), "-V, --version", "print the version");
  program
    .command("version")
    .description("print the version")
    .action(() => {
      process.stdout.write(packageVersion() + "\n");
    });
}
