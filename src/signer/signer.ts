/**
 * The key manager interface at the centre of ra-agent: whatever holds the key
 * (a PKCS#11 token, a file), the SigV4-X509 code sees only a {@link Signer}.
 */

/** Key families Roles Anywhere accepts. */
export type KeyType = "RSA" | "EC";

/** SigV4-X509 algorithm names, as they appear in the string to sign and Authorization header. */
export type SigV4X509Algorithm = "AWS4-X509-RSA-SHA256" | "AWS4-X509-ECDSA-SHA256";

/** Digests a signer can be asked to use (`sign-string --digest`). */
export type DigestAlgorithm = "SHA256" | "SHA384" | "SHA512";

/** Where the private key lives. */
export type KeySource = "pkcs11" | "file";

/**
 * A private key with its certificate. `sign` produces exactly what SigV4-X509
 * wants: RSASSA-PKCS1-v1_5 for RSA, a DER-encoded ECDSA signature for EC.
 */
export interface Signer {
  /** RSA or EC. */
  readonly keyType: KeyType;
  /** The SigV4-X509 algorithm for this key. */
  readonly algorithm: SigV4X509Algorithm;
  /** The end-entity certificate, DER. */
  readonly certificate: Uint8Array;
  /** Intermediate CA certificates, DER, leaf-side first (at most 5 are sent). */
  readonly chain: readonly Uint8Array[];
  /** Where the key is held; a file key is not hardware-backed. */
  readonly source: KeySource;
  /** True when the key cannot leave its device (sensitive, not extractable). */
  readonly hardwareBacked: boolean;
  /**
   * Signs `message` (not a digest) with the given digest, SHA256 by default.
   * @throws RaError when the key cannot sign (token removed, PIN needed, unsupported digest).
   */
  sign(message: Uint8Array, digest?: DigestAlgorithm): Promise<Buffer>;
  /** Releases sessions and handles. Idempotent. */
  close(): Promise<void>;
}

/** The SigV4-X509 algorithm for a key type. */
export function algorithmFor(keyType: KeyType): SigV4X509Algorithm {
  return keyType === "RSA" ? "AWS4-X509-RSA-SHA256" : "AWS4-X509-ECDSA-SHA256";
}
