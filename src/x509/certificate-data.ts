import { createHash } from "node:crypto";
import { parseCertificate } from "./certificate";

/** `read-certificate-data` JSON for a certificate file, field for field as aws_signing_helper prints it. */
export interface CertificateData {
  keyType: "RSA" | "EC";
  /** Base64 DER, as sent in `X-Amz-X509`. */
  certificateData: string;
  /** Serial number in decimal. */
  serialNumber: string;
  supportedAlgorithms: string[];
}

/** Builds {@link CertificateData} for a DER certificate. */
export function certificateData(der: Uint8Array): CertificateData {
  const info = parseCertificate(der);
  return {
    keyType: info.keyType,
    certificateData: Buffer.from(der).toString("base64"),
    serialNumber: info.serialDecimal,
    supportedAlgorithms: ["SHA256", "SHA384", "SHA512"].map((d) => info.keyType + d),
  };
}

/** One certificate found in a token, as `read-certificate-data` lists it. */
export interface CertificateIdentity {
  /** SHA-1 of the DER, hex (what aws_signing_helper prints as "Hex Fingerprint"). */
  sha1Fingerprint: string;
  sha256Fingerprint: string;
  subject: string;
  issuer: string;
  /** Serial in upper-case hex, as the reference prints it. */
  serialNumber: string;
  notBefore: string;
  notAfter: string;
  keyType: "RSA" | "EC";
  uri?: string;
}

/**
 * A distinguished name in RFC 2253 order (most specific first, comma-separated),
 * as Go's pkix.Name prints it, from node's one-attribute-per-line form.
 */
function rfc2253(lines: string): string {
  return lines.split("\n").reverse().join(",");
}

/** Describes a certificate for listings. */
export function certificateIdentity(der: Uint8Array, uri?: string): CertificateIdentity {
  const info = parseCertificate(der);
  return {
    sha1Fingerprint: createHash("sha1").update(der).digest("hex"),
    sha256Fingerprint: info.sha256Fingerprint,
    subject: rfc2253(info.x509.subject),
    issuer: rfc2253(info.x509.issuer),
    serialNumber: BigInt("0x" + info.serialHex).toString(16).toUpperCase(),
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    keyType: info.keyType,
    ...(uri ? { uri } : {}),
  };
}

/** The reference helper's text block for one identity (1-based index), names in RFC 2253 order as Go prints them. */
export function formatIdentity(index: number, id: CertificateIdentity): string {
  let s = `${index}) Hex Fingerprint: ${id.sha1Fingerprint}\nSubject: ${id.subject}\nIssuer: ${id.issuer}\nSerial Number: ${id.serialNumber}\n`;
  if (id.uri) s += `URI: ${id.uri}\n`;
  return s + "\n";
}
