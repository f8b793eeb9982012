import { X509Certificate, createHash, KeyObject } from "node:crypto";
import { usageError } from "../errors";
import type { KeyType } from "../signer/signer";

/** What ra-agent needs to know about a certificate; built on node:crypto's parser. */
export interface CertificateInfo {
  der: Buffer;
  subject: string;
  issuer: string;
  /** Serial number in decimal, as SigV4-X509 puts it in `Credential=`. */
  serialDecimal: string;
  /** Serial number in hex, as printed by openssl. */
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  keyType: KeyType;
  /** EC curve name (`P-256`, `P-384`, `P-521`) or RSA modulus size in bits. */
  keyDetail: string;
  publicKey: KeyObject;
  /** DER SubjectPublicKeyInfo, for matching keys to certificates. */
  spki: Buffer;
  /** SHA-256 of the DER certificate, lower-case hex. */
  sha256Fingerprint: string;
  /** The node:crypto object, for verification helpers. */
  x509: X509Certificate;
}

const CURVES: Record<string, string> = { prime256v1: "P-256", secp384r1: "P-384", secp521r1: "P-521" };

/**
 * Parses a DER certificate.
 * @throws RaError `INVALID_CERTIFICATE` when it does not parse, or its key is neither RSA nor EC.
 */
export function parseCertificate(der: Uint8Array): CertificateInfo {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(Buffer.from(der));
  } catch (e) {
    throw usageError("INVALID_CERTIFICATE", `not a valid X.509 certificate: ${(e as Error).message}`, "check the certificate file or token object", e);
  }
  const publicKey = x509.publicKey;
  const kt = publicKey.asymmetricKeyType;
  if (kt !== "rsa" && kt !== "ec") {
    throw usageError("UNSUPPORTED_KEY_TYPE", `certificate key type ${kt} is not supported`, "Roles Anywhere accepts RSA and EC (P-256, P-384) keys");
  }
  const details = publicKey.asymmetricKeyDetails ?? {};
  const serialHex = x509.serialNumber.toLowerCase();
  return {
    der: Buffer.from(der),
    subject: x509.subject.split("\n").join(", "),
    issuer: x509.issuer.split("\n").join(", "),
    serialDecimal: BigInt("0x" + serialHex).toString(10),
    serialHex,
    notBefore: new Date(x509.validFrom),
    notAfter: new Date(x509.validTo),
    keyType: kt === "rsa" ? "RSA" : "EC",
    keyDetail: kt === "rsa" ? String(details.modulusLength) : CURVES[details.namedCurve ?? ""] ?? String(details.namedCurve),
    publicKey,
    spki: publicKey.export({ type: "spki", format: "der" }),
    sha256Fingerprint: createHash("sha256").update(der).digest("hex"),
    x509,
  };
}
