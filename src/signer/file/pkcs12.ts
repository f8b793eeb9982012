/**
 * PKCS#12 (`.p12` / `.pfx`) files: a private key with its certificate and chain.
 *
 * Decryption uses node-forge: Node's OpenSSL 3 has no PKCS#12 API and lacks RC2
 * (legacy provider only), yet most existing PKCS#12 files, those from OpenSSL 1.x
 * and older Windows exports, encrypt their certificates with RC2-40. node-forge is
 * the widely used, maintained pure-JS implementation that reads legacy
 * (SHA-1/3DES/RC2) and current (PBES2 AES, SHA-256 MAC) files alike.
 */
import { createPrivateKey, createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import forge from "node-forge";
import { usageError } from "../../errors";
import { logger } from "../../log/logger";

/** What a PKCS#12 file yields for signing. */
export interface Pkcs12Contents {
  privateKey: KeyObject;
  /** The end-entity certificate (the one whose public key matches the key), DER. */
  certificate: Buffer;
  /** The CA certificates that chain from it, leaf-side first, without the self-signed root. */
  chain: Buffer[];
}

const OID_DATA = "1.2.840.113549.1.7.1";
const OID_SIGNED_DATA = "1.2.840.113549.1.7.2";

function forgeAsn1(data: Buffer): forge.asn1.Asn1 | undefined {
  try {
    return forge.asn1.fromDer(forge.util.createBuffer(data.toString("binary")), false);
  } catch {
    return undefined;
  }
}

/** True when `data` is shaped like a PFX: SEQUENCE { INTEGER 3, ContentInfo (data | signedData), ... }. */
export function looksLikePkcs12(data: Buffer): boolean {
  const root = data.length > 0 && data[0] === 0x30 ? forgeAsn1(data) : undefined;
  if (!root || !Array.isArray(root.value) || root.value.length < 2) return false;
  const [version, authSafe] = root.value as forge.asn1.Asn1[];
  if (version.type !== forge.asn1.Type.INTEGER || forge.util.bytesToHex(version.value as string) !== "03") return false;
  const contentType = Array.isArray(authSafe.value) ? (authSafe.value[0] as forge.asn1.Asn1 | undefined) : undefined;
  if (!contentType || contentType.type !== forge.asn1.Type.OID) return false;
  const oid = forge.asn1.derToOid(contentType.value as string);
  return oid === OID_DATA || oid === OID_SIGNED_DATA;
}

function toBuffer(asn1: forge.asn1.Asn1): Buffer {
  return Buffer.from(forge.asn1.toDer(asn1).getBytes(), "binary");
}

function open(data: Buffer, password: string, what: string): forge.pkcs12.Pkcs12Pfx {
  try {
    return forge.pkcs12.pkcs12FromAsn1(forgeAsn1(data)!, false, password);
  } catch (e) {
    const message = (e as Error).message;
    // node-forge gives no error codes; these two messages are its only "wrong password" signals.
    if (/MAC could not be verified|wrong password/i.test(message)) {
      throw usageError(
        "PKCS12_WRONG_PASSWORD",
        password === "" ? `${what} is protected by a password and none was given` : `cannot open ${what}: wrong password`,
        "pass the PKCS#12 password with --pkcs8-password (or RA_AGENT_PKCS8_PASSWORD / RA_AGENT_PKCS8_PASSWORD_FILE)",
        e,
      );
    }
    throw usageError("PKCS12_UNSUPPORTED", `cannot read ${what}: ${message}`, "re-export it: openssl pkcs12 -export -inkey key.pem -in cert.pem -certfile chain.pem -out file.p12", e);
  }
}

function spki(key: KeyObject): Buffer {
  return (key.type === "private" ? createPublicKey(key) : key).export({ type: "spki", format: "der" });
}

/**
 * Orders the chain: from the leaf, repeatedly the certificate that issued the
 * current one (name and signature), stopping at a self-signed root, which is left
 * out (the trust anchor already holds it, and Roles Anywhere takes at most 5).
 */
function buildChain(leaf: X509Certificate, others: X509Certificate[], what: string): Buffer[] {
  const chain: Buffer[] = [];
  const unused = new Set(others);
  let current = leaf;
  for (;;) {
    const issuer = [...unused].find((c) => current.checkIssued(c) && current.verify(c.publicKey));
    if (!issuer) break;
    unused.delete(issuer);
    if (issuer.checkIssued(issuer)) break; // self-signed root
    chain.push(issuer.raw);
    current = issuer;
  }
  for (const c of unused) logger.debug(`${what}: certificate "${c.subject.replace(/\n/g, ", ")}" is not on the leaf's chain; not sent`);
  return chain;
}

/**
 * Opens a PKCS#12 file with `password`, then with the empty password, which the
 * reference helper always uses (it only reads password-less files).
 * @throws RaError `PKCS12_WRONG_PASSWORD`, `PKCS12_UNSUPPORTED`, `PKCS12_NO_KEY`,
 *   `PKCS12_SEVERAL_KEYS`, `PKCS12_NO_CERTIFICATE`, `UNKNOWN_KEY_FORMAT`.
 */
export function parsePkcs12(data: Buffer, password: string | undefined, what: string): Pkcs12Contents {
  let pfx: forge.pkcs12.Pkcs12Pfx;
  try {
    pfx = open(data, password ?? "", what);
  } catch (e) {
    // A password meant for something else (RA_AGENT_PKCS8_PASSWORD set globally) must not
    // stop a password-less file that the reference helper reads.
    if (!password) throw e;
    try {
      pfx = open(data, "", what);
    } catch {
      throw e;
    }
  }
  const keys: KeyObject[] = [];
  const certificates: X509Certificate[] = [];
  for (const content of pfx.safeContents) {
    for (const bag of content.safeBags) {
      if (bag.type === forge.pki.oids.keyBag || bag.type === forge.pki.oids.pkcs8ShroudedKeyBag) {
        // node-forge decodes RSA keys into its own objects and leaves others (EC) as ASN.1.
        const der = bag.key ? toBuffer(forge.pki.wrapRsaPrivateKey(forge.pki.privateKeyToAsn1(bag.key))) : toBuffer(bag.asn1);
        try {
          keys.push(createPrivateKey({ key: der, format: "der", type: "pkcs8" }));
        } catch (e) {
          throw usageError("UNKNOWN_KEY_FORMAT", `${what} holds a private key that cannot be read: ${(e as Error).message}`, undefined, e);
        } finally {
          der.fill(0);
        }
      } else if (bag.type === forge.pki.oids.certBag) {
        const der = bag.cert ? toBuffer(forge.pki.certificateToAsn1(bag.cert)) : toBuffer(bag.asn1);
        certificates.push(new X509Certificate(der));
      }
    }
  }
  if (keys.length === 0) throw usageError("PKCS12_NO_KEY", `${what} holds no private key`, "export the PKCS#12 file with its private key, or pass the key with --private-key and the certificate as PEM");
  if (keys.length > 1) throw usageError("PKCS12_SEVERAL_KEYS", `${what} holds ${keys.length} private keys`, "export a PKCS#12 file with only the key for Roles Anywhere");
  const [privateKey] = keys;
  const keySpki = spki(privateKey);
  const leaf = certificates.find((c) => spki(c.publicKey).equals(keySpki));
  if (!leaf) {
    throw usageError(
      "PKCS12_NO_CERTIFICATE",
      certificates.length === 0 ? `${what} holds no certificate` : `${what} holds no certificate for its private key`,
      "export the PKCS#12 file with the end-entity certificate of its key",
    );
  }
  return { privateKey, certificate: leaf.raw, chain: buildChain(leaf, certificates.filter((c) => c !== leaf), what) };
}
