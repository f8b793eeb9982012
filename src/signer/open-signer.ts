/**
 * Chooses the key source for a certificate/key pair given as the CLI and the
 * agent config name them: a `pkcs11:` URI goes to the PKCS#11 backend, a path to
 * the file backend. Backends are loaded lazily so that unused native modules
 * (pkcs11js) are never loaded.
 */
import { usageError } from "../errors";
import { logger } from "../log/logger";
import { readCertificates } from "../x509/pem";
import { assertCertificateCurrent } from "../x509/validity";
import { readUserFile } from "../util/read-user-file";

export { readUserFile };
import type { Signer } from "./signer";
import type { PinProvider } from "./pkcs11/pin";
import type { Pkcs11SignerOptions } from "./pkcs11/signer";

/** Where the certificate and key come from, as the user wrote them. */
export interface SignerSourceOptions {
  /** Certificate file path (PEM, DER, PKCS#12) or `pkcs11:` URI. */
  certificate?: string;
  /** Private key file path or `pkcs11:` URI. */
  privateKey?: string;
  /** PEM bundle of intermediate CA certificates. */
  intermediates?: string;
  /** PKCS#11 module path; default p11-kit-proxy. */
  pkcs11Lib?: string;
  /** Password of an encrypted PKCS#8 or PKCS#12 file. */
  pkcs8Password?: string;
  /** Reuse the user PIN for always-authenticate keys. */
  reusePin?: boolean;
  /**
   * Log in even when the token says the next wrong PIN locks it
   * (`CKF_USER_PIN_FINAL_TRY`); off by default because tokens lock.
   */
  allowFinalTryLogin?: boolean;
  /**
   * Refuse a certificate file that is not valid at this time before the token is
   * touched, so that no PIN is spent on a request the service would refuse.
   */
  validAt?: Date;
  /** Where token PINs come from; default: the URI's pin-source, RA_AGENT_PIN_FILE, RA_AGENT_PIN, pin-value, a prompt. */
  pin?: PinProvider;
  /**
   * Where PKCS#11 keys are opened: a {@link ./pkcs11/thread/pkcs11-thread!Pkcs11Thread}
   * keeps every token call off this thread (the agent); default: this thread (the CLI).
   */
  pkcs11Thread?: { openSigner(options: Pkcs11SignerOptions): Promise<Signer> };
}

/** True for a `pkcs11:` URI (scheme is case-insensitive, RFC 3986). */
export function isPkcs11Uri(value: string | undefined): value is string {
  return value !== undefined && /^pkcs11:/i.test(value);
}

/**
 * Reads an intermediates bundle.
 * @throws RaError `UNREADABLE_FILE` / `INVALID_CERTIFICATE_FILE`
 */
export async function readIntermediates(path: string | undefined): Promise<Buffer[]> {
  if (!path) return [];
  return readCertificates(await readUserFile(path, "--intermediates"), `intermediates file ${path}`);
}

/**
 * Opens the signer that the options name.
 * @throws RaError `MISSING_KEY_SOURCE` when neither a certificate nor a key is given,
 *   and whatever the chosen backend throws (token, PIN, file format, key/certificate mismatch).
 */
export async function openSigner(opts: SignerSourceOptions): Promise<Signer> {
  const { certificate, privateKey } = opts;
  if (!certificate && !privateKey) {
    throw usageError(
      "MISSING_KEY_SOURCE",
      "no certificate or private key given",
      "pass --certificate (a file or a pkcs11: URI) and, for file keys, --private-key",
    );
  }
  const intermediates = await readIntermediates(opts.intermediates);
  if (isPkcs11Uri(certificate) || isPkcs11Uri(privateKey)) {
    const certificateDer = certificate && !isPkcs11Uri(certificate)
      ? readCertificates(await readUserFile(certificate, "--certificate"), `certificate file ${certificate}`)[0]
      : undefined;
    if (certificateDer && opts.validAt) assertCertificateCurrent(certificateDer, opts.validAt);
    if (privateKey && !isPkcs11Uri(privateKey)) {
      throw usageError(
        "MIXED_KEY_SOURCES",
        "the certificate is a pkcs11: URI but --private-key is a file",
        "name the key in the token with a pkcs11: URI too, or omit --private-key to find it through the certificate",
      );
    }
    const open = opts.pkcs11Thread
      ? (o: Pkcs11SignerOptions) => opts.pkcs11Thread!.openSigner(o)
      : (await import("./pkcs11/index")).openPkcs11Signer;
    return open({
      certificateUri: isPkcs11Uri(certificate) ? certificate : undefined,
      certificateDer,
      keyUri: privateKey,
      modulePath: opts.pkcs11Lib,
      intermediates,
      reusePin: opts.reusePin,
      allowFinalTryLogin: opts.allowFinalTryLogin,
      pin: opts.pin,
    });
  }
  const { openFileSigner } = await import("./file/index");
  if (!certificate) {
    throw usageError("MISSING_CERTIFICATE", "--private-key is a file but no --certificate was given", "pass --certificate with the certificate file of that key");
  }
  const signer = await openFileSigner({
    certificatePath: certificate,
    privateKeyPath: privateKey,
    pkcs8Password: opts.pkcs8Password,
    intermediates,
  });
  logger.debug("using a file key: it is NOT hardware-backed and can be copied; prefer a PKCS#11 token", { certificate });
  return signer;
}
