/**
 * Reads the public keys of a token through PKCS#11 (no login: public key
 * objects are public), so that provisioning can have certificates issued for
 * keys generated inside the TPM.
 *
 * Run as a child process by provision.ts: tpm2-pkcs11 reads its TCTI and store
 * from the environment once, at C_Initialize, so a process that loads it here
 * stays bound to this TPM. A child keeps the caller free to load the module
 * later with other settings.
 *
 * Usage: node token-public-keys.js MODULE_PATH TOKEN_LABEL  → JSON on stdout.
 */
import * as pkcs11js from "pkcs11js";
import { loadModule } from "../../src/signer/pkcs11/module";
import { readPublicKeys } from "../../src/signer/pkcs11/objects";
import { listTokens } from "../../src/signer/pkcs11/token";

/** One public key object, as printed by this script. */
export interface TokenPublicKey {
  label: string;
  /** CKA_ID, hex. */
  idHex: string;
  keyType: string;
  /** SubjectPublicKeyInfo DER, base64. */
  spkiBase64: string;
}

/**
 * Public keys on the token labelled `tokenLabel`, in this process.
 * @throws Error when the token is missing or a key cannot be read
 */
export function readTokenPublicKeys(modulePath: string, tokenLabel: string): TokenPublicKey[] {
  const module = loadModule(modulePath);
  try {
    const slot = listTokens(module).find((s) => s.token.label === tokenLabel);
    if (!slot) throw new Error(`no token labelled "${tokenLabel}" in ${modulePath}`);
    const session = module.api.C_OpenSession(slot.handle, pkcs11js.CKF_SERIAL_SESSION);
    try {
      return readPublicKeys(module.api, session, {}).map((k) => {
        if (!k.publicKey) throw new Error(`public key "${k.label}" has no readable key material`);
        return { label: k.label, idHex: k.id.toString("hex"), keyType: k.keyType, spkiBase64: k.publicKey.export({ type: "spki", format: "der" }).toString("base64") };
      });
    } finally {
      module.api.C_CloseSession(session);
    }
  } finally {
    module.close();
  }
}

if (require.main === module) {
  try {
    const [modulePath, label] = process.argv.slice(2);
    if (!modulePath || !label) throw new Error("usage: token-public-keys MODULE_PATH TOKEN_LABEL");
    process.stdout.write(JSON.stringify(readTokenPublicKeys(modulePath, label)) + "\n");
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exitCode = 1;
  }
}
