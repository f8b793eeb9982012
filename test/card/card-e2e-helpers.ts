/**
 * Shared by the card end-to-end tests (CLI and agent): run the CLI compiled with
 * the test (not bin/ra-agent, which runs the lead's dist/), with a clean
 * environment plus the card's, and the emulator trusting the card's CA.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { buildEmulatorConfig, startEmulator, type RunningEmulator } from "../../src/emulator";
import { memoryLogger } from "../agent/helpers";

/** The CLI entry point built next to this compiled test. */
export const CARD_CLI = resolve(__dirname, "../../src/cli/main.js");

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `ra-agent ...args` (this build) without blocking the event loop. */
export function runCli(args: string[], env: NodeJS.ProcessEnv, input = "", timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CARD_CLI, ...args], { env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
    child.stdin!.end(input);
  });
}

/** A minimal environment: no AWS_* or RA_AGENT_* from the machine, plus `extra`. */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("AWS_") && !k.startsWith("RA_AGENT_") && k !== "PCSCLITE_CSOCK_NAME") env[k] = v;
  return { ...env, AWS_EC2_METADATA_DISABLED: "true", ...extra };
}

/** A fresh private directory (state dir, PIN files, config). */
export function privateDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Writes a PIN file readable by its owner only. */
export function writePinFile(path: string, pin: string): string {
  writeFileSync(path, pin + "\n", { mode: 0o600 });
  return path;
}

/** The in-process emulator trusting `caPem`. */
export function startCardEmulator(caPem: string): Promise<RunningEmulator> {
  return startEmulator(buildEmulatorConfig({ caCertificates: [caPem], durationSeconds: 3600 }), { logger: memoryLogger("error").log });
}

/** A SigV4-X509 string to sign for the card's RSA key, dated now. */
export function stringToSign(seed: string): string {
  const amz = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const hash = Buffer.from(seed.padEnd(32, "x").slice(0, 32)).toString("hex");
  return `AWS4-X509-RSA-SHA256\n${amz}\n${amz.slice(0, 8)}/us-east-1/rolesanywhere/aws4_request\n${hash}`;
}
