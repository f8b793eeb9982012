/**
 * The demo on a virtual smart card (`npm run demo -- --card`): a libcacard CAC
 * card behind its own pcscd, seen by OpenSC's PKCS#11 module as a real card.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DemoToken } from "../lib/demo-token";
import { startVirtualCard } from "./virtual-card";

/** Starts the virtual card under `stateDir/card` and describes it for the demo. */
export async function demoCardToken(stateDir: string): Promise<DemoToken> {
  const card = await startVirtualCard({ dir: join(stateDir, "card") });
  const pinFile = join(card.dir, "demo-pin");
  writeFileSync(pinFile, card.token.pin + "\n", { mode: 0o600 });
  const caPath = join(card.dir, "demo-ca.pem");
  writeFileSync(caPath, card.caPem);
  return {
    kind: `virtual smart card "${card.token.label}" (CAC through pcscd and OpenSC), RSA-2048 key on the card`,
    modulePath: card.modulePath,
    certificateUri: card.key.certificateUri,
    caPath,
    env: { ...card.env, RA_AGENT_PIN_FILE: pinFile },
    stop: () => card.stop(),
  };
}
