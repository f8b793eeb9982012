/**
 * `sign-string`: the fixed test string of aws_signing_helper, so that a user can
 * check a key and digest without calling the service. Output-compatible with
 * the reference helper (version 1 of the test string).
 */
import { createHash, type KeyObject } from "node:crypto";
import { usageError } from "../errors";
import type { DigestAlgorithm, Signer } from "../signer/signer";
import { parseCertificate } from "../x509/certificate";

/** The version byte-string the reference puts after the prefix (`"1"`). */
export const SIGN_STRING_TEST_VERSION = 1;

const PREFIX = "AWS Roles Anywhere Credential Helper Signing Test";

/** Output formats of `sign-string --format`. */
export type SignStringFormat = "json" | "text" | "bin";

/** The default format of the reference helper's code (its README says text; the code says json). */
export const DEFAULT_SIGN_STRING_FORMAT: SignStringFormat = "json";

/**
 * The public key bytes the test string hashes: PKCS#1 RSAPublicKey DER for RSA,
 * the uncompressed point `04 || X || Y` for EC (as Go's `elliptic.Marshal`).
 * @throws RaError `UNSUPPORTED_KEY_TYPE` for other keys.
 */
export function testStringPublicKeyBytes(publicKey: KeyObject): Buffer {
  if (publicKey.asymmetricKeyType === "rsa") return publicKey.export({ type: "pkcs1", format: "der" });
  if (publicKey.asymmetricKeyType === "ec") {
    // JWK coordinates are fixed-length (RFC 7518 section 6.2.1.2), so no padding is needed.
    const jwk = publicKey.export({ format: "jwk" });
    return Buffer.concat([Buffer.from([0x04]), Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")]);
  }
  throw usageError("UNSUPPORTED_KEY_TYPE", `sign-string supports RSA and EC keys, not ${publicKey.asymmetricKeyType}`);
}

/**
 * The fixed message: `"AWS Roles Anywhere Credential Helper Signing Test" || "1" ||
 * SHA256("IAM RA" || public key bytes)`, the digest appended as 32 raw bytes.
 */
export function fixedTestString(publicKey: KeyObject): Buffer {
  const suffix = createHash("sha256").update("IAM RA").update(testStringPublicKeyBytes(publicKey)).digest();
  return Buffer.concat([Buffer.from(PREFIX + String(SIGN_STRING_TEST_VERSION), "utf8"), suffix]);
}

/**
 * Signs the fixed test string with the signer's key and `digest`.
 * @throws whatever the signer throws.
 */
export async function signTestString(signer: Signer, digest: DigestAlgorithm = "SHA256"): Promise<Buffer> {
  const { publicKey } = parseCertificate(signer.certificate);
  return signer.sign(fixedTestString(publicKey), digest);
}

/**
 * The exact bytes `sign-string` writes to stdout, as the reference does: `text`
 * is lower-case hex, `json` the same hex as a JSON string (`"ab12…"`), `bin` the
 * raw signature; never a trailing newline.
 */
export function formatSignature(signature: Uint8Array, format: SignStringFormat): Buffer {
  const hex = Buffer.from(signature).toString("hex");
  switch (format) {
    case "text":
      return Buffer.from(hex, "utf8");
    case "json":
      return Buffer.from(JSON.stringify(hex), "utf8");
    case "bin":
      return Buffer.from(signature);
  }
}

/**
 * Parses `--format` / `--digest` values as the reference does (exact, upper-case digests).
 * @throws RaError `INVALID_FLAG` naming the allowed values.
 */
export function parseSignStringFormat(value: string): SignStringFormat {
  if (value === "json" || value === "text" || value === "bin") return value;
  throw usageError("INVALID_FLAG", `--format ${value} is not one of json, text, bin`);
}

/** @throws RaError `INVALID_FLAG` unless `value` is SHA256, SHA384 or SHA512. */
export function parseDigest(value: string): DigestAlgorithm {
  if (value === "SHA256" || value === "SHA384" || value === "SHA512") return value;
  throw usageError("INVALID_FLAG", `--digest ${value} is not one of SHA256, SHA384, SHA512`);
}
