/**
 * Test helper: a fresh SoftHSM directory per test file. SoftHSM reads
 * SOFTHSM2_CONF once per process (at C_Initialize), so each test file provisions
 * one directory in `before()` and sets the variable before anything loads the module.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { provisionSoftHsm, ProvisionOptions, ProvisionResult, TokenSpec } from "../../softhsm/provision";

/** Where SoftHSM's module is on this machine, or undefined. */
export function softHsmModulePath(): string | undefined {
  return ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib64/pkcs11/libsofthsm2.so", "/opt/homebrew/lib/softhsm/libsofthsm2.so"].find((p) => existsSync(p));
}

/**
 * `skip` option for tests that need SoftHSM: skipped when it is missing, except in
 * CI (`CI=true`), where the test runs and fails.
 */
export function needsSoftHsm(): { skip: string | false } {
  if (softHsmModulePath() || process.env.CI === "true") return { skip: false };
  return { skip: "SoftHSM is not installed (apt-get install softhsm2)" };
}

/** A provisioned SoftHSM directory with SOFTHSM2_CONF set for this process. */
export interface TestHsm extends ProvisionResult {
  modulePath: string;
  cleanup(): void;
}

/**
 * Provisions tokens in a fresh temp directory and points this process's
 * SOFTHSM2_CONF at it.
 * @throws when SoftHSM is missing (the test fails, as CI requires)
 */
export async function provisionTestHsm(tokens: TokenSpec[], options: Omit<ProvisionOptions, "dir" | "tokens"> = {}): Promise<TestHsm> {
  const modulePath = softHsmModulePath();
  if (!modulePath) throw new Error("SoftHSM is not installed (apt-get install softhsm2)");
  const dir = mkdtempSync(join(tmpdir(), "ra-agent-p11-"));
  const result = await provisionSoftHsm({ ...options, dir: join(dir, "hsm"), tokens });
  process.env.SOFTHSM2_CONF = result.softhsmConf;
  return { ...result, modulePath, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
