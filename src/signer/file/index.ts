/**
 * File keys: the `Signer` backend for a certificate and private key in files, for
 * parity with aws_signing_helper. Such keys are NOT hardware-backed: anyone who
 * can read the file can copy the key.
 *
 * Accepted, as the reference helper does (plus DER): `--certificate` PEM or DER;
 * `--private-key` PKCS#8 (plain or encrypted with PBES2 PBKDF2/scrypt), PKCS#1 or
 * SEC1; or a PKCS#12 file as `--certificate` with no `--private-key`; or a PEM
 * `--certificate` that also holds the key.
 */
import { readUserFile } from "../../util/read-user-file";
import { createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import { isRaError, usageError } from "../../errors";
import { logger } from "../../log/logger";
import { parseCertificate } from "../../x509/certificate";
import { parsePem, readCertificates } from "../../x509/pem";
import type { Signer } from "../signer";
import { FileSigner } from "./file-signer";
import { looksLikePkcs12, parsePkcs12 } from "./pkcs12";
import { assertSupportedKey, containsPrivateKey, parsePrivateKey } from "./private-key";

export { FileSigner } from "./file-signer";
export { readUserFile } from "../../util/read-user-file";
export { parsePrivateKey, isEncryptedPrivateKey, assertSupportedKey, SUPPORTED_CURVES } from "./private-key";
export { parsePkcs12, looksLikePkcs12, type Pkcs12Contents } from "./pkcs12";
export { decryptPkcs8, isEncryptedPkcs8 } from "./encrypted-pkcs8";

/** Options of {@link openFileSigner}. */
export interface FileSignerOptions {
  /** Certificate file: PEM or DER; or a PKCS#12 file when `privateKeyPath` is absent. */
  certificatePath: string;
  /** Private key file; absent for PKCS#12, or when the certificate PEM also holds the key. */
  privateKeyPath?: string;
  /** Password of an encrypted PKCS#8 key or of the PKCS#12 file (`--pkcs8-password`). */
  pkcs8Password?: string;
  /** PEM bundle of intermediate CA certificates (`--intermediates`). */
  intermediatesPath?: string;
  /** Intermediates already read (DER, leaf-side first); used instead of `intermediatesPath`. */
  intermediates?: readonly Uint8Array[];
  /**
   * Asks the user for a password when a key or PKCS#12 file needs one and none was
   * given (the reference prompts on the terminal). A wrong answer asks again, up to
   * {@link MAX_PASSWORD_PROMPTS} times. Absent: no prompting, a clear error instead.
   */
  promptPassword?: (prompt: string) => Promise<string>;
}

/** How often {@link FileSignerOptions.promptPassword} is asked before giving up. */
export const MAX_PASSWORD_PROMPTS = 3;

const PASSWORD_ERRORS = ["PKCS8_PASSWORD_REQUIRED", "PKCS8_WRONG_PASSWORD", "PKCS12_WRONG_PASSWORD"];

/** Runs `attempt` with the given password, then with prompted ones while the password is the problem. */
async function withPassword<T>(password: string | undefined, prompt: FileSignerOptions["promptPassword"], question: string, attempt: (password: string | undefined) => Promise<T> | T): Promise<T> {
  try {
    return await attempt(password);
  } catch (e) {
    if (!prompt || !PASSWORD_ERRORS.some((code) => isRaError(e, code))) throw e;
    let last = e;
    for (let i = 0; i < MAX_PASSWORD_PROMPTS; i++) {
      try {
        return await attempt(await prompt(i === 0 ? question : `Wrong password. ${question}`));
      } catch (retry) {
        if (!PASSWORD_ERRORS.some((code) => isRaError(retry, code))) throw retry;
        last = retry;
      }
    }
    throw last;
  }
}

/** The certificates of a PEM or DER certificate file, or undefined when it holds none. */
function certificatesIn(data: Buffer): Buffer[] | undefined {
  const text = data.toString("latin1");
  if (text.includes("-----BEGIN")) {
    const certs = parsePem(text).filter((b) => b.label === "CERTIFICATE" || b.label === "X509 CERTIFICATE").map((b) => b.der);
    return certs.length > 0 ? certs : undefined;
  }
  try {
    return [new X509Certificate(data).raw];
  } catch {
    return undefined;
  }
}

/**
 * Refuses a key that does not belong to the certificate, before any network call.
 * @throws RaError `KEY_CERTIFICATE_MISMATCH`
 */
export function assertKeyMatchesCertificate(key: KeyObject, certificateDer: Uint8Array, what: { key: string; certificate: string }): void {
  const cert = parseCertificate(certificateDer);
  const keySpki = createPublicKey(key).export({ type: "spki", format: "der" });
  if (keySpki.equals(cert.spki)) return;
  const keyDesc = key.asymmetricKeyType === "rsa"
    ? `RSA-${key.asymmetricKeyDetails?.modulusLength}`
    : `EC ${key.asymmetricKeyDetails?.namedCurve}`;
  throw usageError(
    "KEY_CERTIFICATE_MISMATCH",
    `${what.key} (${keyDesc}) does not belong to ${what.certificate} (${cert.keyType} ${cert.keyDetail}, subject ${cert.subject})`,
    "pass the private key that was certified, or the certificate issued for this key",
  );
}

/**
 * Opens a file-backed signer. Everything is read and checked here (formats,
 * password, key/certificate match), so that errors come before any network call.
 *
 * @throws RaError (kind `usage`) `UNREADABLE_FILE`, `INVALID_CERTIFICATE_FILE`,
 *   `INVALID_CERTIFICATE`, `MISSING_PRIVATE_KEY`, `UNKNOWN_KEY_FORMAT`,
 *   `PKCS8_PASSWORD_REQUIRED`, `PKCS8_WRONG_PASSWORD`, `UNSUPPORTED_KEY_ENCRYPTION`,
 *   `UNSUPPORTED_KEY_TYPE`, `KEY_CERTIFICATE_MISMATCH`, `PKCS12_*`,
 *   `PKCS12_WITH_INTERMEDIATES`, `PKCS12_WITH_PRIVATE_KEY`.
 */
export async function openFileSigner(options: FileSignerOptions): Promise<Signer> {
  const { certificatePath, privateKeyPath, pkcs8Password, promptPassword } = options;
  const certWhat = `certificate file ${certificatePath}`;
  const certData = await readUserFile(certificatePath, "certificate file");
  const certs = certificatesIn(certData);
  const hasIntermediates = options.intermediatesPath !== undefined || (options.intermediates?.length ?? 0) > 0;

  if (!certs && privateKeyPath && looksLikePkcs12(certData)) {
    throw usageError(
      "PKCS12_WITH_PRIVATE_KEY",
      `${certWhat} is a PKCS#12 file, which holds its own key; --private-key cannot be combined with it`,
      "pass the .p12/.pfx file alone as --certificate (its password with --pkcs8-password)",
    );
  }
  if (!certs && !privateKeyPath && looksLikePkcs12(certData)) {
    if (hasIntermediates) {
      throw usageError(
        "PKCS12_WITH_INTERMEDIATES",
        "--intermediates cannot be combined with a PKCS#12 certificate file",
        "put the intermediate certificates into the PKCS#12 file (openssl pkcs12 -export ... -certfile chain.pem)",
      );
    }
    const p12 = await withPassword(pkcs8Password, promptPassword, `Password for ${certificatePath}:`, (pw) => parsePkcs12(certData, pw, `PKCS#12 file ${certificatePath}`));
    assertSupportedKey(p12.privateKey, `the private key in ${certificatePath}`);
    logger.debug("file signer: PKCS#12", { certificate: certificatePath, chain: p12.chain.length });
    return new FileSigner(p12.privateKey, p12.certificate, p12.chain);
  }
  if (!certs) {
    // Let the shared reader name the problem (neither PEM nor DER, or no CERTIFICATE block).
    readCertificates(certData, certWhat);
    throw usageError(
      "INVALID_CERTIFICATE_FILE",
      `${certWhat} is not a certificate${privateKeyPath ? "" : " or a PKCS#12 file"}`,
      privateKeyPath ? "give a PEM or DER X.509 certificate" : "give a PEM or DER certificate with --private-key, or a PKCS#12 file alone",
    );
  }
  const [leaf, ...extra] = certs;
  parseCertificate(leaf); // a clear INVALID_CERTIFICATE error now rather than at signing time
  if (extra.length > 0) {
    logger.debug(`${certWhat} holds ${extra.length} more certificate(s); only the first is used (pass CA certificates with --intermediates)`);
  }

  let keyData: Buffer;
  let keyWhat: string;
  if (privateKeyPath) {
    keyData = await readUserFile(privateKeyPath, "private key file");
    keyWhat = `private key file ${privateKeyPath}`;
  } else if (containsPrivateKey(certData)) {
    // As the reference: with no --private-key, the key is looked for in the certificate file.
    keyData = certData;
    keyWhat = certWhat;
  } else {
    throw usageError("MISSING_PRIVATE_KEY", `no --private-key given and ${certWhat} holds no private key`, "pass --private-key with the key file (or a pkcs11: URI)");
  }
  const key = await withPassword(pkcs8Password, promptPassword, `Password for ${privateKeyPath ?? certificatePath}:`, (pw) => parsePrivateKey(keyData, { password: pw, what: keyWhat }));
  assertKeyMatchesCertificate(key, leaf, { key: keyWhat, certificate: certWhat });

  const chain = options.intermediates
    ? options.intermediates.map((c) => Buffer.from(c))
    : options.intermediatesPath
      ? readCertificates(await readUserFile(options.intermediatesPath, "intermediates file"), `intermediates file ${options.intermediatesPath}`)
      : [];
  chain.forEach((c) => parseCertificate(c));
  logger.debug("file signer opened", { certificate: certificatePath, privateKey: privateKeyPath, keyType: key.asymmetricKeyType, chain: chain.length });
  return new FileSigner(key, leaf, chain);
}
