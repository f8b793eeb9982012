import { usageError } from "../errors";
import { parseCertificate } from "./certificate";

/** Certificates may start a little in the future: SigV4 tolerates 5 minutes of clock skew. */
const CLOCK_SKEW_MS = 5 * 60_000;

/**
 * Refuses a certificate that Roles Anywhere would refuse for its dates, before
 * any network call (and, for token keys, before any PIN is spent).
 * @throws RaError `CERTIFICATE_EXPIRED`, `CERTIFICATE_NOT_YET_VALID`
 */
export function assertCertificateCurrent(certificateDer: Uint8Array, now: Date): void {
  const cert = parseCertificate(certificateDer);
  if (cert.notAfter.getTime() < now.getTime()) {
    throw usageError("CERTIFICATE_EXPIRED", `the certificate (${cert.subject}, serial ${cert.serialHex}) expired on ${cert.notAfter.toISOString()}`, "renew the certificate and put the new one in its file or token");
  }
  if (cert.notBefore.getTime() > now.getTime() + CLOCK_SKEW_MS) {
    throw usageError("CERTIFICATE_NOT_YET_VALID", `the certificate (${cert.subject}) is valid only from ${cert.notBefore.toISOString()}`, "check this machine's clock, or wait until the certificate becomes valid");
  }
}
