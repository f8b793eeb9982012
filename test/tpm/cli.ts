/**
 * Runs the CLI compiled next to these tests (not bin/ra-agent, which runs
 * dist/): `node <outDir>/src/cli/main.js ...`, in a child process, with a
 * minimal environment plus `env`.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";

/** The compiled CLI entry point of this build. */
export const CLI_MAIN = join(__dirname, "..", "..", "src", "cli", "main.js");

/** Result of one CLI run. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `ra-agent ...args`. */
export function runCli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI_MAIN, ...args],
      { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, maxBuffer: 16 << 20, timeout: 120_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as unknown as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end();
  });
}
