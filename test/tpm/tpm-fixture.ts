/**
 * Shared set-up for TPM tests: one swtpm + tpm2-pkcs11 token per test file, in
 * its own temp dir, stopped by PID afterwards.
 *
 * tpm2-pkcs11 reads TPM2_PKCS11_TCTI and TPM2_PKCS11_STORE once per process,
 * at C_Initialize, so a test process can use one TPM only: the fixture sets
 * them in process.env before any test loads the module, and refuses a second TPM.
 */
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { missingTpmDependencies, provisionTpm, type ProvisionedTpm, type ProvisionTpmOptions } from "../../scripts/tpm/provision";

/**
 * `false` when a TPM token can be provisioned here; otherwise a skip reason.
 * With CI=true missing dependencies are not a reason to skip: the tests run and
 * fail with the list.
 */
export function tpmSkipReason(): string | false {
  const missing = missingTpmDependencies();
  if (missing.length === 0 || process.env.CI === "true") return false;
  return `TPM tests need: ${missing.join(", ")} (scripts/ensure-deps.sh installs them)`;
}

let fixtureStarted = false;

/** A provisioned TPM token plus its temp dir. */
export interface TpmFixture {
  tpm: ProvisionedTpm;
  close(): Promise<void>;
}

/**
 * Provisions a TPM token in a fresh temp dir and points this process's
 * tpm2-pkcs11 at it (before any use of the module in this process).
 * @throws Error when dependencies are missing (the list), or when this process already uses another TPM
 */
export async function startTpmFixture(options: Omit<ProvisionTpmOptions, "dir"> = {}): Promise<TpmFixture> {
  const missing = missingTpmDependencies();
  if (missing.length) throw new Error(`cannot provision a TPM token, missing: ${missing.join(", ")}`);
  if (fixtureStarted) throw new Error("a TPM was already used in this process: run one TPM per test file");
  fixtureStarted = true;
  // Short path: the unix socket path must fit in sockaddr_un.
  const dir = await mkdtemp(path.join(os.tmpdir(), "ra-tpm-"));
  let tpm: ProvisionedTpm;
  try {
    tpm = await provisionTpm({ ...options, dir });
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  Object.assign(process.env, tpm.env);
  return {
    tpm,
    async close() {
      await tpm.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
