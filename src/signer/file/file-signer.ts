/** A {@link Signer} over a key held in memory after reading it from a file. Not hardware-backed. */
import { sign as cryptoSign, type KeyObject } from "node:crypto";
import { RaError, usageError } from "../../errors";
import { algorithmFor, type DigestAlgorithm, type KeyType, type SigV4X509Algorithm, type Signer } from "../signer";

const NODE_DIGESTS: Record<DigestAlgorithm, string> = { SHA256: "sha256", SHA384: "sha384", SHA512: "sha512" };

/**
 * Signs with a node:crypto private key: RSASSA-PKCS1-v1_5 for RSA, DER-encoded
 * ECDSA for EC. Signing runs on libuv's thread pool (async `crypto.sign`).
 */
export class FileSigner implements Signer {
  readonly keyType: KeyType;
  readonly algorithm: SigV4X509Algorithm;
  readonly source = "file" as const;
  readonly hardwareBacked = false;
  #key: KeyObject | undefined;

  /**
   * @param key a private key already checked against `certificate` (see `openFileSigner`).
   * @param certificate end-entity certificate, DER.
   * @param chain intermediates, DER, leaf-side first.
   */
  constructor(key: KeyObject, readonly certificate: Uint8Array, readonly chain: readonly Uint8Array[]) {
    this.#key = key;
    this.keyType = key.asymmetricKeyType === "rsa" ? "RSA" : "EC";
    this.algorithm = algorithmFor(this.keyType);
  }

  /**
   * @throws RaError `UNSUPPORTED_DIGEST` for a digest other than SHA256/384/512,
   *   `SIGNER_CLOSED` after {@link close}.
   */
  sign(message: Uint8Array, digest: DigestAlgorithm = "SHA256"): Promise<Buffer> {
    const key = this.#key;
    if (!key) return Promise.reject(new RaError("internal", "SIGNER_CLOSED", "the file signer was closed"));
    const algorithm = NODE_DIGESTS[digest];
    if (!algorithm) return Promise.reject(usageError("UNSUPPORTED_DIGEST", `digest ${String(digest)} is not supported`, "use SHA256, SHA384 or SHA512"));
    return new Promise((resolve, reject) => {
      cryptoSign(algorithm, message, { key, dsaEncoding: "der" }, (err, signature) =>
        err ? reject(new RaError("internal", "SIGN_FAILED", `signing with the file key failed: ${err.message}`, { cause: err })) : resolve(signature),
      );
    });
  }

  /** Drops the key reference so that it can be collected. Idempotent. */
  async close(): Promise<void> {
    this.#key = undefined;
  }
}
