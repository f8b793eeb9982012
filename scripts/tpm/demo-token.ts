/**
 * The demo on a TPM (`npm run demo -- --tpm`): keys generated inside a software
 * TPM (swtpm), reached through tpm2-pkcs11, with swtpm's real lockout settings.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DemoToken } from "../lib/demo-token";
import { provisionTpmToken } from "./provision";

/** Provisions a fresh TPM token under `stateDir/tpm` and describes it for the demo. */
export async function demoTpmToken(stateDir: string): Promise<DemoToken> {
  const dir = join(stateDir, "tpm");
  // A software TPM's state is cheap to make again (about 2 s); a fresh one avoids a stale swtpm from an earlier run.
  rmSync(dir, { recursive: true, force: true });
  const tpm = await provisionTpmToken(dir);
  const key = tpm.keys.find((k) => k.keyType === "EC") ?? tpm.keys[0];
  const pinFile = join(tpm.dir, "demo-pin");
  writeFileSync(pinFile, tpm.token.pin + "\n", { mode: 0o600 });
  const caPath = join(tpm.dir, "demo-ca.pem");
  writeFileSync(caPath, tpm.caPem);
  return {
    kind: `TPM token "${tpm.token.label}" (swtpm through tpm2-pkcs11), key "${key.label}" (${key.algorithm}) generated inside the TPM`,
    modulePath: tpm.modulePath,
    certificateUri: key.certificateUri,
    caPath,
    env: { ...tpm.env, RA_AGENT_PIN_FILE: pinFile },
    stop: () => tpm.stop(),
  };
}
