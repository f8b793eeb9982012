/**
 * A small demo/test PKI built on @peculiar/x509 (a well-kept library, chosen over
 * hand-written DER or the openssl CLI because OpenSSL 3.0 cannot set arbitrary
 * validity dates): CAs, intermediates, leaf certificates for a public key that
 * lives elsewhere (for example inside a PKCS#11 token), and CRLs.
 *
 * Not part of the product's signing path; used by tests, the demo and provisioning.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto, createPublicKey, KeyObject } from "node:crypto";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

/** Key algorithms the PKI can generate. */
export type PkiKeyAlgorithm = "RSA-2048" | "RSA-3072" | "EC-P256" | "EC-P384";

/** A CA: its certificate and signing key. */
export interface CertificateAuthority {
  certificate: x509.X509Certificate;
  /** DER of the certificate. */
  der: Buffer;
  pem: string;
  keys: CryptoKeyPair;
  /** The CA's private key as PKCS#8 PEM (for writing to disk in tests/demo). */
  privateKeyPem: string;
}

function keyGenParams(alg: PkiKeyAlgorithm): RsaHashedKeyGenParams | EcKeyGenParams {
  switch (alg) {
    case "RSA-2048":
    case "RSA-3072":
      return { name: "RSASSA-PKCS1-v1_5", modulusLength: alg === "RSA-2048" ? 2048 : 3072, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" };
    case "EC-P256":
      return { name: "ECDSA", namedCurve: "P-256" };
    case "EC-P384":
      return { name: "ECDSA", namedCurve: "P-384" };
  }
}

function signingAlgorithm(key: CryptoKey, hash = "SHA-256"): Algorithm | EcdsaParams {
  return key.algorithm.name === "ECDSA" ? ({ name: "ECDSA", hash } as EcdsaParams) : ({ name: "RSASSA-PKCS1-v1_5", hash } as Algorithm);
}

/** Generates a WebCrypto key pair (extractable, so that tests can write it out). */
export async function generateKeyPair(alg: PkiKeyAlgorithm): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(keyGenParams(alg), true, ["sign", "verify"])) as CryptoKeyPair;
}

/** PKCS#8 PEM of a private CryptoKey. */
export async function privateKeyToPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", key));
  return x509.PemConverter.encode(der, "PRIVATE KEY") + "\n";
}

function randomSerial(): string {
  // Positive, 16 bytes: a leading 0x01..0x7f byte keeps it positive and full length.
  const b = Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)));
  b[0] = (b[0] & 0x7f) | 0x01;
  return b.toString("hex");
}

/** Options for {@link createCa}. */
export interface CaOptions {
  name?: string;
  algorithm?: PkiKeyAlgorithm;
  notBefore?: Date;
  notAfter?: Date;
  /** Issue an intermediate under this CA instead of a self-signed root. */
  parent?: CertificateAuthority;
}

/** Creates a root CA, or an intermediate when `parent` is given. */
export async function createCa(opts: CaOptions = {}): Promise<CertificateAuthority> {
  const keys = await generateKeyPair(opts.algorithm ?? "EC-P256");
  const name = opts.name ?? "CN=ra-agent demo CA";
  const notBefore = opts.notBefore ?? new Date(Date.now() - 3600_000);
  const notAfter = opts.notAfter ?? new Date(Date.now() + 10 * 365 * 86400_000);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  let certificate: x509.X509Certificate;
  if (opts.parent) {
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(opts.parent.keys.publicKey));
    certificate = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(), subject: name, issuer: opts.parent.certificate.subject,
      notBefore, notAfter, extensions, publicKey: keys.publicKey, signingKey: opts.parent.keys.privateKey,
      signingAlgorithm: signingAlgorithm(opts.parent.keys.privateKey),
    });
  } else {
    certificate = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(), name, notBefore, notAfter, extensions, keys, signingAlgorithm: signingAlgorithm(keys.privateKey),
    });
  }
  return { certificate, der: Buffer.from(certificate.rawData), pem: certificate.toString("pem") + "\n", keys, privateKeyPem: await privateKeyToPem(keys.privateKey) };
}

/** Options for {@link issueCertificate}. */
export interface LeafOptions {
  subject?: string;
  notBefore?: Date;
  notAfter?: Date;
  /** Hex serial; random when absent. */
  serialNumber?: string;
  /** Key usage flags; digitalSignature by default. */
  keyUsage?: number;
  /** Omit the key usage extension entirely. */
  noKeyUsage?: boolean;
  /** Mark the certificate as a CA (to test that leaves must not be CAs). */
  isCa?: boolean;
  /** Hash for the issuer's signature; SHA-256 by default (SHA-1 to test rejection). */
  signatureHash?: "SHA-1" | "SHA-256" | "SHA-384" | "SHA-512";
}

/** A public key given as SPKI DER, PEM, a KeyObject or a WebCrypto key. */
export type PublicKeyInput = Buffer | Uint8Array | string | KeyObject | CryptoKey;

function toSpkiDer(key: PublicKeyInput): Buffer {
  if (key instanceof KeyObject) return key.export({ type: "spki", format: "der" });
  if (typeof key === "string") return createPublicKey(key).export({ type: "spki", format: "der" });
  if (key instanceof Uint8Array) return Buffer.from(key);
  return KeyObject.from(key as CryptoKey).export({ type: "spki", format: "der" });
}

/** Issues an end-entity certificate for `publicKey`, signed by `ca`. */
export async function issueCertificate(ca: CertificateAuthority, publicKey: PublicKeyInput, opts: LeafOptions = {}): Promise<x509.X509Certificate> {
  const spki = toSpkiDer(publicKey);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(opts.isCa ?? false, undefined, true),
    await x509.SubjectKeyIdentifierExtension.create(new Uint8Array(spki)),
    await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
  ];
  if (!opts.noKeyUsage) {
    extensions.push(new x509.KeyUsagesExtension(opts.keyUsage ?? x509.KeyUsageFlags.digitalSignature, true));
  }
  return x509.X509CertificateGenerator.create({
    serialNumber: opts.serialNumber ?? randomSerial(),
    subject: opts.subject ?? "CN=ra-agent demo leaf",
    issuer: ca.certificate.subject,
    notBefore: opts.notBefore ?? new Date(Date.now() - 3600_000),
    notAfter: opts.notAfter ?? new Date(Date.now() + 365 * 86400_000),
    extensions,
    publicKey: new Uint8Array(spki),
    signingKey: ca.keys.privateKey,
    signingAlgorithm: signingAlgorithm(ca.keys.privateKey, opts.signatureHash ?? "SHA-256"),
  });
}

/** Creates a CRL from `ca` revoking the given hex serial numbers. */
export async function createCrl(ca: CertificateAuthority, revokedSerialsHex: string[]): Promise<x509.X509Crl> {
  return x509.X509CrlGenerator.create({
    issuer: ca.certificate.subject,
    thisUpdate: new Date(Date.now() - 60_000),
    nextUpdate: new Date(Date.now() + 7 * 86400_000),
    entries: revokedSerialsHex.map((serialNumber) => ({ serialNumber, revocationDate: new Date(Date.now() - 60_000) })),
    signingKey: ca.keys.privateKey,
    signingAlgorithm: signingAlgorithm(ca.keys.privateKey),
  });
}
