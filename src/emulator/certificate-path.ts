/**
 * Certificate trust as Roles Anywhere applies it: the signing (leaf)
 * certificate must chain through the certificates of `X-Amz-X509-Chain` to a
 * CA of the trust anchor, every certificate on the path must be within its
 * validity dates and not revoked by an imported CRL, and the leaf must meet the
 * service's end-entity rules.
 *
 * Signatures and issuer/subject matching use node:crypto (OpenSSL's
 * `X509_check_issued` also checks the issuer's keyUsage and key identifiers);
 * extensions and CRLs use @peculiar/x509 (a well-kept parser, rather than
 * hand-written DER).
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";
import type { CertificateInfo } from "../x509/certificate";
import { accessDenied, validation } from "./service-error";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

/** Hashes accepted for the signature on the leaf certificate. */
const STRONG_HASHES = new Set(["SHA-256", "SHA-384", "SHA-512"]);

/** What to check a leaf against. */
export interface PathValidationInput {
  leaf: CertificateInfo;
  /** Intermediates as the client sent them (any order). */
  chain: readonly CertificateInfo[];
  /** The trust anchor's CA certificates. */
  anchors: readonly CertificateInfo[];
  /** CRLs imported for the trust anchor. */
  crls: readonly x509.X509Crl[];
  now: Date;
}

/** A validated path, leaf first, ending with the trust anchor certificate. */
export interface ValidatedPath {
  path: CertificateInfo[];
  anchor: CertificateInfo;
}

/**
 * Reads the X.509 version from DER: `Certificate ::= SEQUENCE { tbsCertificate
 * SEQUENCE { [0] EXPLICIT version INTEGER DEFAULT v1, ... } }`. Returns 1, 2 or 3.
 * A few lines of DER walking, because neither node:crypto nor @peculiar/x509
 * exposes the version.
 */
export function certificateVersion(der: Uint8Array): number {
  const header = (offset: number): { tag: number; contentStart: number; length: number } => {
    const tag = der[offset];
    let len = der[offset + 1];
    let start = offset + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + der[start + i];
      start += n;
    }
    return { tag, contentStart: start, length: len };
  };
  const cert = header(0);
  const tbs = header(cert.contentStart);
  const first = header(tbs.contentStart);
  if (first.tag !== 0xa0) return 1;
  const version = header(first.contentStart);
  if (version.tag !== 0x02 || version.length !== 1) return 1;
  return der[version.contentStart] + 1;
}

/** The @peculiar/x509 view of a certificate (for extensions); a parse failure is the client's fault. */
function extensionsView(cert: CertificateInfo): x509.X509Certificate {
  try {
    return new x509.X509Certificate(new Uint8Array(cert.der));
  } catch (e) {
    throw validation("certificate-der", `Certificate ${describe(cert)} cannot be parsed: ${(e as Error).message}`);
  }
}

/** One extension of a certificate, or null; a malformed extension is the client's fault. */
function extensionOf<T extends x509.Extension>(cert: CertificateInfo, type: new (raw: BufferSource) => T): T | null {
  const view = extensionsView(cert);
  try {
    return view.getExtension(type);
  } catch (e) {
    throw validation("certificate-extension", `Certificate ${describe(cert)} has a malformed ${type.name}: ${(e as Error).message}`);
  }
}

function describe(cert: CertificateInfo): string {
  return `"${cert.subject}" (serial ${cert.serialHex})`;
}

function checkValidity(cert: CertificateInfo, role: string, now: Date): void {
  if (now < cert.notBefore) throw accessDenied("certificate-not-yet-valid", `Untrusted certificate: ${role} ${describe(cert)} is not valid before ${cert.notBefore.toISOString()}`);
  if (now > cert.notAfter) throw accessDenied("certificate-expired", `Untrusted certificate: ${role} ${describe(cert)} expired at ${cert.notAfter.toISOString()}`);
}

function issuedBy(child: CertificateInfo, issuer: CertificateInfo): boolean {
  try {
    return child.x509.checkIssued(issuer.x509) && child.x509.verify(issuer.x509.publicKey);
  } catch {
    return false;
  }
}

/**
 * Checks the end-entity rules: X.509 v3; basicConstraints, if present, not a
 * CA; keyUsage present with digitalSignature; signed with SHA-256 or stronger.
 * @throws RolesAnywhereError `AccessDeniedException` naming the rule.
 */
export function checkLeafRules(leaf: CertificateInfo): void {
  const version = certificateVersion(leaf.der);
  if (version !== 3) throw accessDenied("leaf-version", `Signing certificate ${describe(leaf)} is X.509 v${version}; v3 is required`);
  // Read basicConstraints itself: OpenSSL's notion of "CA" (node's X509Certificate.ca)
  // also needs keyCertSign, so a cA=true leaf with digitalSignature only would pass.
  if (extensionOf(leaf, x509.BasicConstraintsExtension)?.ca) throw accessDenied("leaf-is-ca", `Signing certificate ${describe(leaf)} is a CA (basicConstraints cA=true); an end-entity certificate is required`);
  const keyUsage = extensionOf(leaf, x509.KeyUsagesExtension);
  if (!keyUsage) throw accessDenied("leaf-key-usage", `Signing certificate ${describe(leaf)} has no keyUsage extension; digitalSignature is required`);
  if ((keyUsage.usages & x509.KeyUsageFlags.digitalSignature) === 0) {
    throw accessDenied("leaf-key-usage", `Signing certificate ${describe(leaf)} keyUsage lacks digitalSignature`);
  }
  let hash: string | undefined;
  try {
    hash = (extensionsView(leaf).signatureAlgorithm.hash as { name?: string } | undefined)?.name;
  } catch {
    hash = undefined;
  }
  if (!hash || !STRONG_HASHES.has(hash.toUpperCase())) {
    throw accessDenied("leaf-signature-hash", `Signing certificate ${describe(leaf)} is signed with ${hash ?? "an unknown algorithm"}; SHA-256 or stronger is required`);
  }
}

// CRL signature checks are WebCrypto-async; remember results per CRL and issuer.
const crlVerdicts = new WeakMap<x509.X509Crl, Map<string, Promise<boolean>>>();

function crlSignedBy(crl: x509.X509Crl, issuer: CertificateInfo): Promise<boolean> {
  let perIssuer = crlVerdicts.get(crl);
  if (!perIssuer) {
    perIssuer = new Map();
    crlVerdicts.set(crl, perIssuer);
  }
  let verdict = perIssuer.get(issuer.sha256Fingerprint);
  if (!verdict) {
    const issuerCert = extensionsView(issuer);
    verdict = crl.issuerName.toString() === issuerCert.subjectName.toString()
      ? crl.verify({ publicKey: issuerCert }).catch(() => false)
      : Promise.resolve(false);
    perIssuer.set(issuer.sha256Fingerprint, verdict);
  }
  return verdict;
}

async function checkRevocation(cert: CertificateInfo, issuer: CertificateInfo, crls: readonly x509.X509Crl[]): Promise<void> {
  for (const crl of crls) {
    if (!(await crlSignedBy(crl, issuer))) continue;
    const entry = crl.findRevoked(cert.serialHex);
    if (entry) {
      throw accessDenied("certificate-revoked", `Certificate ${describe(cert)} was revoked on ${entry.revocationDate.toISOString()} (CRL of "${issuer.subject}")`);
    }
  }
}

function basicConstraintsPathLength(cert: CertificateInfo): number | undefined {
  const bc = extensionOf(cert, x509.BasicConstraintsExtension);
  return bc?.pathLength;
}

/**
 * Builds and checks the path leaf → chain certificates → trust anchor CA.
 * @throws RolesAnywhereError `AccessDeniedException` naming the failed rule.
 */
export async function validateCertificatePath(input: PathValidationInput): Promise<ValidatedPath> {
  const { leaf, chain, anchors, crls, now } = input;
  checkValidity(leaf, "signing certificate", now);
  checkLeafRules(leaf);

  const path: CertificateInfo[] = [leaf];
  const unused = [...chain];
  let current = leaf;
  let anchor: CertificateInfo | undefined;
  // Each step consumes one chain certificate, so the loop ends.
  for (;;) {
    anchor = anchors.find((a) => issuedBy(current, a));
    if (anchor) break;
    const index = unused.findIndex((c) => issuedBy(current, c));
    if (index < 0) {
      throw accessDenied(
        "untrusted",
        `Untrusted signing certificate: no CA of the trust anchor${chain.length ? " and no certificate of X-Amz-X509-Chain" : ""} issued ${describe(current)} (issuer "${current.issuer}")`,
      );
    }
    const next = unused.splice(index, 1)[0];
    if (!next.x509.ca) throw accessDenied("chain-not-ca", `Untrusted certificate: chain certificate ${describe(next)} is not a CA`);
    checkValidity(next, "chain certificate", now);
    path.push(next);
    current = next;
  }
  checkValidity(anchor, "trust anchor certificate", now);
  path.push(anchor);

  // pathLenConstraint: at most N intermediate CAs may follow a CA below it.
  for (let i = 1; i < path.length; i++) {
    const limit = basicConstraintsPathLength(path[i]);
    const below = i - 1;
    if (limit !== undefined && below > limit) {
      throw accessDenied("path-length", `Untrusted certificate path: ${describe(path[i])} allows ${limit} intermediate CA(s) below it, the path has ${below}`);
    }
  }

  for (let i = 0; i < path.length - 1; i++) await checkRevocation(path[i], path[i + 1], crls);
  return { path, anchor };
}
