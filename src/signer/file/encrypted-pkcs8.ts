/**
 * Encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`, RFC 5958 / PKCS#5 v2.1 PBES2).
 *
 * PBKDF2 keys go to OpenSSL through node:crypto (`createPrivateKey` with a
 * passphrase). scrypt keys are decrypted here with node:crypto's `scrypt` and
 * AES-CBC, because OpenSSL caps scrypt at 32 MiB of memory (N=16384, r=8): keys
 * made by other tools with stronger parameters would not open, while the
 * reference helper (Go) opens them. The ASN.1 is parsed with @peculiar/asn1-schema
 * (already the project's ASN.1 library through @peculiar/x509) rather than by hand.
 */
import { createDecipheriv, createPrivateKey, scrypt, type KeyObject } from "node:crypto";
import { AsnConvert, AsnProp, AsnPropTypes, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier } from "@peculiar/asn1-x509";
import { EncryptedPrivateKeyInfo } from "@peculiar/asn1-pkcs8";
import { usageError } from "../../errors";

/** PBES2-params (RFC 8018 appendix A.4). */
export class Pbes2Params {
  @AsnProp({ type: AlgorithmIdentifier }) keyDerivationFunc = new AlgorithmIdentifier();
  @AsnProp({ type: AlgorithmIdentifier }) encryptionScheme = new AlgorithmIdentifier();
}

/** scrypt-params (RFC 7914 section 7.1). */
export class ScryptParams {
  @AsnProp({ type: AsnPropTypes.OctetString }) salt = new ArrayBuffer(0);
  @AsnProp({ type: AsnPropTypes.Integer }) costParameter = 0;
  @AsnProp({ type: AsnPropTypes.Integer }) blockSize = 0;
  @AsnProp({ type: AsnPropTypes.Integer }) parallelizationParameter = 0;
  @AsnProp({ type: AsnPropTypes.Integer, optional: true }) keyLength?: number;
}

const OID_PBES2 = "1.2.840.113549.1.5.13";
const OID_PBKDF2 = "1.2.840.113549.1.5.12";
const OID_SCRYPT = "1.3.6.1.4.1.11591.4.11";
/** PKCS#12 PBE with SHA-1 and 3-key / 2-key triple DES: OpenSSL 3 still decrypts these. */
const PKCS12_3DES = new Set(["1.2.840.113549.1.12.1.3", "1.2.840.113549.1.12.1.4"]);
const AES_CBC: Record<string, { name: string; keyLength: number }> = {
  "2.16.840.1.101.3.4.1.2": { name: "aes-128-cbc", keyLength: 16 },
  "2.16.840.1.101.3.4.1.22": { name: "aes-192-cbc", keyLength: 24 },
  "2.16.840.1.101.3.4.1.42": { name: "aes-256-cbc", keyLength: 32 },
};
const KNOWN_NAMES: Record<string, string> = {
  [OID_PBES2]: "PBES2", [OID_PBKDF2]: "PBKDF2", [OID_SCRYPT]: "scrypt",
  "1.2.840.113549.1.5.3": "PBES1 MD5-DES", "1.2.840.113549.1.5.10": "PBES1 SHA1-DES",
  "1.2.840.113549.1.12.1.5": "PKCS#12 RC2-128", "1.2.840.113549.1.12.1.6": "PKCS#12 RC2-40",
  "1.2.840.113549.3.7": "DES-EDE3-CBC",
};

/** scrypt may use at most this much memory (128·N·r·p bytes): a damaged or hostile file must not exhaust the machine. */
export const SCRYPT_MAX_MEMORY = 1024 * 1024 * 1024;

const REENCRYPT_HINT = "re-encrypt the key with PBES2: openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key-enc.pem (or -scrypt)";

function nameOf(oid: string): string {
  return KNOWN_NAMES[oid] ?? AES_CBC[oid]?.name ?? oid;
}

/** True when `der` parses as an EncryptedPrivateKeyInfo (and so is not a plain key). */
export function isEncryptedPkcs8(der: Uint8Array): boolean {
  try {
    const info = AsnConvert.parse(der, EncryptedPrivateKeyInfo);
    return info.encryptedData.byteLength > 0 && /^1\.2\.840\.113549\.1\.(5|12)\./.test(info.encryptionAlgorithm.algorithm);
  } catch {
    return false;
  }
}

function wrongPassword(what: string, cause?: unknown): Error {
  return usageError(
    "PKCS8_WRONG_PASSWORD",
    `cannot decrypt ${what}: wrong password (or the file is damaged)`,
    "check the password given with --pkcs8-password / RA_AGENT_PKCS8_PASSWORD / RA_AGENT_PKCS8_PASSWORD_FILE",
    cause,
  );
}

function unsupported(what: string, scheme: string): Error {
  return usageError("UNSUPPORTED_KEY_ENCRYPTION", `${what} is encrypted with ${scheme}, which ra-agent does not decrypt`, REENCRYPT_HINT);
}

/**
 * Decrypts a DER EncryptedPrivateKeyInfo.
 * @throws RaError `PKCS8_PASSWORD_REQUIRED` (no or empty password: the reference
 *   helper treats a zero-length password as none), `PKCS8_WRONG_PASSWORD`,
 *   `UNSUPPORTED_KEY_ENCRYPTION`, `UNKNOWN_KEY_FORMAT`.
 */
export async function decryptPkcs8(der: Uint8Array, password: string | undefined, what: string): Promise<KeyObject> {
  if (!password) {
    throw usageError(
      "PKCS8_PASSWORD_REQUIRED",
      `${what} is an encrypted PKCS#8 key and no password was given`,
      "pass --pkcs8-password, or set RA_AGENT_PKCS8_PASSWORD_FILE (a file holding the password) or RA_AGENT_PKCS8_PASSWORD",
    );
  }
  let info: EncryptedPrivateKeyInfo;
  try {
    info = AsnConvert.parse(der, EncryptedPrivateKeyInfo);
  } catch (e) {
    throw usageError("UNKNOWN_KEY_FORMAT", `${what} is not a valid encrypted PKCS#8 key: ${(e as Error).message}`, "check that the file is the private key", e);
  }
  const algorithm = info.encryptionAlgorithm.algorithm;
  if (algorithm === OID_PBES2) {
    const params = AsnConvert.parse(info.encryptionAlgorithm.parameters!, Pbes2Params);
    const kdf = params.keyDerivationFunc.algorithm;
    const cipher = params.encryptionScheme.algorithm;
    if (kdf === OID_SCRYPT) {
      const aes = AES_CBC[cipher];
      if (!aes) throw unsupported(what, `PBES2 scrypt with ${nameOf(cipher)}`);
      const iv = Buffer.from(AsnConvert.parse(params.encryptionScheme.parameters!, OctetString).buffer);
      const scryptParams = AsnConvert.parse(params.keyDerivationFunc.parameters!, ScryptParams);
      return decryptScrypt(Buffer.from(info.encryptedData.buffer), password, scryptParams, aes, iv, what);
    }
    if (kdf !== OID_PBKDF2) throw unsupported(what, `PBES2 with key derivation ${nameOf(kdf)}`);
    return decryptWithOpenSsl(der, password, what, `PBES2 PBKDF2 with ${nameOf(cipher)}`);
  }
  if (PKCS12_3DES.has(algorithm)) return decryptWithOpenSsl(der, password, what, "PKCS#12 PBE 3DES");
  throw unsupported(what, nameOf(algorithm));
}

function decryptWithOpenSsl(der: Uint8Array, password: string, what: string, scheme: string): KeyObject {
  try {
    return createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8", passphrase: password });
  } catch (e) {
    const code = (e as { code?: string }).code ?? "";
    // A cipher or PRF this OpenSSL lacks is not a password problem; everything else
    // (bad padding, or garbage that happened to unpad) is.
    if (/UNSUPPORTED|UNKNOWN_CIPHER|UNKNOWN_DIGEST/i.test(code)) throw unsupported(what, scheme);
    throw wrongPassword(what, e);
  }
}

async function decryptScrypt(
  ciphertext: Buffer,
  password: string,
  params: ScryptParams,
  aes: { name: string; keyLength: number },
  iv: Buffer,
  what: string,
): Promise<KeyObject> {
  const N = params.costParameter;
  const r = params.blockSize;
  const p = params.parallelizationParameter;
  const memory = 128 * N * r * p;
  if (memory > SCRYPT_MAX_MEMORY) {
    throw usageError(
      "UNSUPPORTED_KEY_ENCRYPTION",
      `${what} uses scrypt parameters (N=${N}, r=${r}, p=${p}) that need ${Math.round(memory / 1048576)} MiB, more than the ${SCRYPT_MAX_MEMORY / 1048576} MiB ra-agent allows`,
      REENCRYPT_HINT,
    );
  }
  if (params.keyLength !== undefined && params.keyLength !== aes.keyLength) {
    throw usageError("UNKNOWN_KEY_FORMAT", `${what}: scrypt key length ${params.keyLength} does not fit ${aes.name}`);
  }
  const key = await new Promise<Buffer>((resolve, reject) =>
    scrypt(password, Buffer.from(params.salt), aes.keyLength, { N, r, p, maxmem: memory + 32 * 1024 * 1024 }, (err, derived) =>
      err ? reject(usageError("UNSUPPORTED_KEY_ENCRYPTION", `${what}: invalid scrypt parameters (${err.message})`, REENCRYPT_HINT, err)) : resolve(derived),
    ),
  );
  let plaintext: Buffer | undefined;
  try {
    const decipher = createDecipheriv(aes.name, key, iv);
    plaintext = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    return createPrivateKey({ key: plaintext, format: "der", type: "pkcs8" });
  } catch (e) {
    throw wrongPassword(what, e);
  } finally {
    key.fill(0);
    plaintext?.fill(0);
  }
}
