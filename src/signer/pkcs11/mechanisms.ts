/**
 * How a signature is asked of the token: mechanism choice, the bytes handed to
 * C_Sign, and the conversion of what comes back. Pure functions (golden-tested),
 * no token I/O.
 *
 * RSA: `CKM_SHA{256,384,512}_RSA_PKCS` when the token lists it, else `CKM_RSA_PKCS`
 * over a DigestInfo built here. EC: `CKM_ECDSA` over a digest computed here (SoftHSM
 * has no `CKM_ECDSA_SHA256`), and the raw `r || s` converted to DER.
 */
import { hash } from "node:crypto";
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

/** `hash(message)` with the named digest (one-shot `crypto.hash`: no Hash object per signature). */
export function digestOf(message: Uint8Array, digest: DigestAlgorithm): Buffer {
  return hash(HASH_NAMES[digest], message, "buffer");
}

/** DER DigestInfo for a digest value: the input of `CKM_RSA_PKCS` for PKCS#1 v1.5 signatures. */
export function digestInfo(hash: Buffer, digest: DigestAlgorithm): Buffer {
  return Buffer.concat([DIGEST_INFO_PREFIX[digest], hash]);
}

/** Offset of the first byte of `bytes[from, to)` that a DER INTEGER keeps (leading zeros dropped, one kept). */
function integerStart(bytes: Uint8Array, from: number, to: number): number {
  let i = from;
  while (i < to - 1 && bytes[i] === 0) i++;
  return i;
}

function derLengthSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x100 ? 2 : 3;
}

function writeDerLength(out: Buffer, at: number, n: number): number {
  if (n < 0x80) {
    out[at] = n;
    return at + 1;
  }
  if (n < 0x100) {
    out[at] = 0x81;
    out[at + 1] = n;
    return at + 2;
  }
  out[at] = 0x82;
  out[at + 1] = n >> 8;
  out[at + 2] = n & 0xff;
  return at + 3;
}

/** Writes `bytes[from, to)` as a DER INTEGER (a 0x00 before a high bit) at `at`; returns the next offset. */
function writeDerInteger(out: Buffer, at: number, bytes: Uint8Array, from: number, to: number, pad: boolean): number {
  out[at] = 0x02;
  let i = writeDerLength(out, at + 1, to - from + (pad ? 1 : 0));
  if (pad) out[i++] = 0;
  out.set(bytes.subarray(from, to), i);
  return i + (to - from);
}

/**
 * Converts a PKCS#11 ECDSA signature (`r || s`, equal halves) to the DER
 * `SEQUENCE { INTEGER r, INTEGER s }` that SigV4-X509 expects, in one allocation
 * (this runs for every EC signature).
 * @throws RaError `PKCS11_BAD_SIGNATURE` for an empty or odd-length input
 */
export function ecdsaRawToDer(raw: Uint8Array): Buffer {
  if (raw.length === 0 || raw.length % 2 !== 0) {
    throw new RaError("token", "PKCS11_BAD_SIGNATURE", `the token returned an ECDSA signature of ${raw.length} bytes (expected r||s of equal halves)`, { hint: "run with --debug and report the token model" });
  }
  const half = raw.length / 2;
  const r = integerStart(raw, 0, half);
  const s = integerStart(raw, half, raw.length);
  const padR = (raw[r] & 0x80) !== 0;
  const padS = (raw[s] & 0x80) !== 0;
  const rLength = half - r + (padR ? 1 : 0);
  const sLength = raw.length - s + (padS ? 1 : 0);
  const body = 1 + derLengthSize(rLength) + rLength + 1 + derLengthSize(sLength) + sLength;
  const out = Buffer.allocUnsafe(1 + derLengthSize(body) + body);
  out[0] = 0x30;
  let at = writeDerLength(out, 1, body);
  at = writeDerInteger(out, at, raw, r, half, padR);
  writeDerInteger(out, at, raw, s, raw.length, padS);
  return out;
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
 * The message-independent half of a {@link SignPlan}: which mechanism, and how
 * the message becomes C_Sign's input. Depends only on the key, the digest and the
 * token, so a signer computes it once per digest.
 */
export interface SignMechanism {
  mechanism: number;
  mechanismName: string;
  digest: DigestAlgorithm;
  /** C_Sign's input: the message (the token hashes), its digest, or a DigestInfo over the digest. */
  input: "message" | "digest" | "digest-info";
  output: SignPlan["output"];
}

/**
 * Chooses the mechanism for signing with a `keyType` key and `digest`.
 * @param available mechanisms the token lists (`C_GetMechanismList`); undefined when unknown
 * @param avoid `CKM_*` names the token's quirks say not to use
 * @throws RaError `PKCS11_MECHANISM_UNSUPPORTED` when the token has no usable mechanism
 */
export function chooseMechanism(keyType: KeyType, digest: DigestAlgorithm, available: ReadonlySet<number> | undefined, avoid: readonly string[] = []): SignMechanism {
  const usable = (name: string): number | undefined => {
    const m = mechanismByName(name);
    if (m === undefined || avoid.includes(name)) return undefined;
    return available === undefined || available.has(m) ? m : undefined;
  };
  if (keyType === "RSA") {
    const hashed = available === undefined ? undefined : usable(HASH_AND_SIGN[digest]);
    if (hashed !== undefined) return { mechanism: hashed, mechanismName: mechanismName(hashed), digest, input: "message", output: "as-is" };
    if (usable("CKM_RSA_PKCS") !== undefined || available === undefined) {
      return { mechanism: pkcs11js.CKM_RSA_PKCS, mechanismName: "CKM_RSA_PKCS", digest, input: "digest-info", output: "as-is" };
    }
  } else if (usable("CKM_ECDSA") !== undefined || available === undefined) {
    return { mechanism: pkcs11js.CKM_ECDSA, mechanismName: "CKM_ECDSA", digest, input: "digest", output: "ecdsa-der" };
  }
  throw new RaError("token", "PKCS11_MECHANISM_UNSUPPORTED", `the token lists no mechanism to sign with this ${keyType} key (needs ${keyType === "RSA" ? `${HASH_AND_SIGN[digest]} or CKM_RSA_PKCS` : "CKM_ECDSA"})`, {
    hint: "use a key type the token can sign with; run `ra-agent list` or `pkcs11-tool -M` to see its mechanisms",
  });
}

/** The plan for signing `message` with a chosen mechanism. */
export function planWith(m: SignMechanism, message: Uint8Array): SignPlan {
  const input = m.input === "message" ? Buffer.from(message) : m.input === "digest" ? digestOf(message, m.digest) : digestInfo(digestOf(message, m.digest), m.digest);
  return { mechanism: m.mechanism, mechanismName: m.mechanismName, input, output: m.output };
}

/**
 * Chooses the mechanism and input for signing `message`.
 * @param available mechanisms the token lists (`C_GetMechanismList`); undefined when unknown
 * @param avoid `CKM_*` names the token's quirks say not to use
 * @throws RaError `PKCS11_MECHANISM_UNSUPPORTED` when the token has no usable mechanism
 */
export function planSignature(keyType: KeyType, message: Uint8Array, digest: DigestAlgorithm, available: ReadonlySet<number> | undefined, avoid: readonly string[] = []): SignPlan {
  return planWith(chooseMechanism(keyType, digest, available, avoid), message);
}
