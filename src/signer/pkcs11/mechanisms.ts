/**
 * How a signature is asked of the token: mechanism choice, the bytes handed to
 * C_Sign, and the conversion of what comes back. Pure functions (golden-tested),
 * no token I/O.
 *
 * RSA: `CKM_SHA{256,384,512}_RSA_PKCS` when the token lists it, else `CKM_RSA_PKCS`
 * over a DigestInfo built here. EC: `CKM_ECDSA` over a digest computed here (SoftHSM
 * has no `CKM_ECDSA_SHA256`), and the raw `r || s` converted to DER.
 */
import { createHash } from "node:crypto";
import * as pkcs11js from "pkcs11js";
import { RaError } from "../../errors";
import type { DigestAlgorithm, KeyType } from "../signer";
import { mechanismByName, mechanismName } from "./constants";

const HASH_NAMES: Record<DigestAlgorithm, string> = { SHA256: "sha256", SHA384: "sha384", SHA512: "sha512" };

/** DER prefixes of DigestInfo (RFC 8017 §9.2, note 1) for each digest. */
const DIGEST_INFO_PREFIX: Record<DigestAlgorithm, Buffer> = {
  SHA256: Buffer.from("3031300d060960864801650304020105000420", "hex"),
  SHA384: Buffer.from("3041300d060960864801650304020205000430", "hex"),
  SHA512: Buffer.from("3051300d060960864801650304020305000440", "hex"),
};

/** `hash(message)` with the named digest. */
export function digestOf(message: Uint8Array, digest: DigestAlgorithm): Buffer {
  return createHash(HASH_NAMES[digest]).update(message).digest();
}

/** DER DigestInfo for a digest value: the input of `CKM_RSA_PKCS` for PKCS#1 v1.5 signatures. */
export function digestInfo(hash: Buffer, digest: DigestAlgorithm): Buffer {
  return Buffer.concat([DIGEST_INFO_PREFIX[digest], hash]);
}

function derInteger(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  let v = bytes.subarray(i);
  if (v[0] & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
  return Buffer.concat([Buffer.from([0x02]), derLength(v.length), v]);
}

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0x81, n]);
  return Buffer.from([0x82, n >> 8, n & 0xff]);
}

/**
 * Converts a PKCS#11 ECDSA signature (`r || s`, equal halves) to the DER
 * `SEQUENCE { INTEGER r, INTEGER s }` that SigV4-X509 expects.
 * @throws RaError `PKCS11_BAD_SIGNATURE` for an empty or odd-length input
 */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  if (raw.length === 0 || raw.length % 2 !== 0) {
    throw new RaError("token", "PKCS11_BAD_SIGNATURE", `the token returned an ECDSA signature of ${raw.length} bytes (expected r||s of equal halves)`, { hint: "run with --debug and report the token model" });
  }
  const half = raw.length / 2;
  const body = Buffer.concat([derInteger(raw.subarray(0, half)), derInteger(raw.subarray(half))]);
  return Buffer.concat([Buffer.from([0x30]), derLength(body.length), body]);
}

/** What to ask of the token for one signature. */
export interface SignPlan {
  mechanism: number;
  mechanismName: string;
  /** Bytes given to C_Sign. */
  input: Buffer;
  /** Convert the token's output: ECDSA raw r||s to DER. */
  output: "as-is" | "ecdsa-der";
}

const HASH_AND_SIGN: Record<DigestAlgorithm, string> = { SHA256: "CKM_SHA256_RSA_PKCS", SHA384: "CKM_SHA384_RSA_PKCS", SHA512: "CKM_SHA512_RSA_PKCS" };

/**
 * Chooses the mechanism and input for signing `message`.
 * @param available mechanisms the token lists (`C_GetMechanismList`); undefined when unknown
 * @param avoid `CKM_*` names the token's quirks say not to use
 * @throws RaError `PKCS11_MECHANISM_UNSUPPORTED` when the token has no usable mechanism
 */
export function planSignature(keyType: KeyType, message: Uint8Array, digest: DigestAlgorithm, available: ReadonlySet<number> | undefined, avoid: readonly string[] = []): SignPlan {
  const usable = (name: string): number | undefined => {
    const m = mechanismByName(name);
    if (m === undefined || avoid.includes(name)) return undefined;
    return available === undefined || available.has(m) ? m : undefined;
  };
  if (keyType === "RSA") {
    const hashed = available === undefined ? undefined : usable(HASH_AND_SIGN[digest]);
    if (hashed !== undefined) return { mechanism: hashed, mechanismName: mechanismName(hashed), input: Buffer.from(message), output: "as-is" };
    if (usable("CKM_RSA_PKCS") !== undefined || available === undefined) {
      return { mechanism: pkcs11js.CKM_RSA_PKCS, mechanismName: "CKM_RSA_PKCS", input: digestInfo(digestOf(message, digest), digest), output: "as-is" };
    }
  } else if (usable("CKM_ECDSA") !== undefined || available === undefined) {
    return { mechanism: pkcs11js.CKM_ECDSA, mechanismName: "CKM_ECDSA", input: digestOf(message, digest), output: "ecdsa-der" };
  }
  throw new RaError("token", "PKCS11_MECHANISM_UNSUPPORTED", `the token lists no mechanism to sign with this ${keyType} key (needs ${keyType === "RSA" ? `${HASH_AND_SIGN[digest]} or CKM_RSA_PKCS` : "CKM_ECDSA"})`, {
    hint: "use a key type the token can sign with; run `ra-agent list` or `pkcs11-tool -M` to see its mechanisms",
  });
}
