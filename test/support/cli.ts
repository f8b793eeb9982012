/**
 * Test support: run the built CLI (`bin/ra-agent`) as a user would, in a child
 * process, asynchronously (an in-process emulator must keep serving meanwhile).
 */
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const REPO_ROOT = join(__dirname, "..", "..", "..");
export const RA_AGENT_BIN = join(REPO_ROOT, "bin", "ra-agent");

/**
 * ra-agent remembers PINs a token rejected in its state directory; tests keep
 * theirs apart from the user's and from other test processes.
 */
let stateDir: string | undefined;
export function testStateDir(): string {
  return (stateDir ??= mkdtempSync(join(tmpdir(), "ra-state-")));
}

/** Result of one CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
}

/** Runs `ra-agent ...args` with `env` added to a minimal environment. */
export function runRaAgent(args: string[], env: Record<string, string | undefined> = {}, input?: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [RA_AGENT_BIN, ...args],
      { env: { PATH: process.env.PATH, HOME: process.env.HOME, RA_AGENT_STATE_DIR: testStateDir(), ...env }, encoding: "buffer", maxBuffer: 16 << 20 },
      (error, stdout, stderr) => {
        const code = error ? (typeof (error as NodeJS.ErrnoException).code === "number" ? ((error as unknown as { code: number }).code) : 1) : 0;
        resolve({ code, stdout: stdout.toString("utf8"), stderr: stderr.toString("utf8"), stdoutBytes: stdout });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

/** Runs any command asynchronously. */
export function runCommand(file: string, args: string[], env: Record<string, string | undefined>): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(file, args, { env: env as NodeJS.ProcessEnv, encoding: "buffer", maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as unknown as { code: unknown }).code === "number" ? (error as unknown as { code: number }).code : 127) : 0;
      resolve({ code, stdout: stdout.toString("utf8"), stderr: stderr.toString("utf8"), stdoutBytes: stdout });
    });
  });
}

/**
 * Fails under CI when a required system tool is missing, and otherwise says why
 * a test is skipped: CI must never silently skip hardware tests.
 */
export function requireTool(path: string, what: string): string | undefined {
  const { existsSync } = require("node:fs") as typeof import("node:fs");
  if (existsSync(path)) return undefined;
  if (process.env.CI === "true") throw new Error(`${what} is required in CI but ${path} is missing: run scripts/ensure-deps.sh`);
  return `${what} not installed (${path})`;
}
