/**
 * The openssl CLI as an independent oracle for tests (signatures, key formats).
 * Missing openssl: tests skip, except under CI=true where they fail.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";

let available: boolean | undefined;

/** True when `openssl` runs. */
export function hasOpenssl(): boolean {
  available ??= spawnSync("openssl", ["version"], { stdio: "ignore" }).status === 0;
  return available;
}

/**
 * Skips the test when openssl is missing (fails under CI=true).
 * @returns true when the test may go on.
 */
export function needOpenssl(t: TestContext): boolean {
  if (hasOpenssl()) return true;
  if (process.env.CI === "true") throw new Error("openssl CLI not found (required in CI): apt-get install openssl");
  t.skip("openssl CLI not found");
  return false;
}

/** Runs openssl, returning stdout; throws with stderr on failure. */
export function openssl(args: string[], input?: Buffer | string): Buffer {
  return execFileSync("openssl", args, { input, stdio: ["pipe", "pipe", "pipe"] });
}

/** A fresh temp dir, removed when the test ends. */
export function tempDir(t: TestContext, prefix = "ra-sig-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
