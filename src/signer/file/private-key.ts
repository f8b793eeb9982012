/**
 * Reads a private key file the way aws_signing_helper accepts them, and a little
 * more: PEM or DER; PKCS#8 (plain and encrypted), PKCS#1 (`RSA PRIVATE KEY`),
 * SEC1 (`EC PRIVATE KEY`), and legacy OpenSSL-encrypted PEM (`Proc-Type: 4,ENCRYPTED`).
 * Parsing is node:crypto's (OpenSSL); only scrypt decryption is done in
 * {@link decryptPkcs8}.
 */
import { createPrivateKey, type KeyObject } from "node:crypto";
import { usageError } from "../../errors";
import { logger } from "../../log/logger";
import { parsePem, type PemBlock } from "../../x509/pem";
import { decryptPkcs8, isEncryptedPkcs8 } from "./encrypted-pkcs8";

/** EC curves Roles Anywhere can verify (OpenSSL names → NIST names). */
export const SUPPORTED_CURVES: Readonly<Record<string, string>> = { prime256v1: "P-256", secp384r1: "P-384", secp521r1: "P-521" };

const KEY_LABELS = new Set(["PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]);

/** Options of {@link parsePrivateKey}. */
export interface ParsePrivateKeyOptions {
  /** Password of an encrypted key; an empty string counts as none (as in the reference). */
  password?: string;
  /** How to name the file in errors, e.g. `private key file /etc/ra/key.pem`. */
  what: string;
}

/** True when `data` holds a private key (PEM label or DER structure), encrypted or not. */
export function containsPrivateKey(data: Buffer): boolean {
  const text = data.toString("latin1");
  if (text.includes("-----BEGIN")) return parsePem(text).some((b) => KEY_LABELS.has(b.label));
  return false;
}

/** True when the first private key in `data` is encrypted (and so needs a password). */
export function isEncryptedPrivateKey(data: Buffer): boolean {
  const text = data.toString("latin1");
  if (text.includes("-----BEGIN")) {
    const block = parsePem(text).find((b) => KEY_LABELS.has(b.label));
    return block !== undefined && (block.label === "ENCRYPTED PRIVATE KEY" || isLegacyEncrypted(block));
  }
  return isEncryptedPkcs8(data);
}

function isLegacyEncrypted(block: PemBlock): boolean {
  return /ENCRYPTED/i.test(block.headers["Proc-Type"] ?? "");
}

/** Rebuilds the PEM text of a block with its encapsulated headers (legacy encryption needs them). */
function blockToPem(block: PemBlock): string {
  const headers = Object.entries(block.headers).map(([k, v]) => `${k}: ${v}\n`).join("");
  const body = block.der.toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "");
  return `-----BEGIN ${block.label}-----\n${headers}${headers ? "\n" : ""}${body}\n-----END ${block.label}-----\n`;
}

function unparsable(what: string, format: string, cause: unknown): Error {
  return usageError("UNKNOWN_KEY_FORMAT", `${what} is not a valid ${format} private key: ${(cause as Error).message}`, "check that the file is the private key and is not damaged", cause);
}

function warnUnusedPassword(password: string | undefined, what: string): void {
  // The reference helper fails here; a password from the environment meant for another
  // key should not break an unencrypted one, so ra-agent only warns.
  if (password) logger.warn(`${what} is not encrypted; the PKCS#8 password given is ignored`);
}

/**
 * Rejects keys Roles Anywhere cannot use.
 * @throws RaError `UNSUPPORTED_KEY_TYPE`
 */
export function assertSupportedKey(key: KeyObject, what: string): void {
  const type = key.asymmetricKeyType;
  if (type === "rsa") return;
  if (type === "ec") {
    const curve = key.asymmetricKeyDetails?.namedCurve ?? "unknown";
    if (curve in SUPPORTED_CURVES) return;
    throw usageError("UNSUPPORTED_KEY_TYPE", `${what} is an EC key on curve ${curve}`, "Roles Anywhere accepts EC keys on P-256, P-384 or P-521, and RSA keys");
  }
  const extra = type === "rsa-pss" ? " (an RSA-PSS-only key cannot make the PKCS#1 v1.5 signatures SigV4-X509 needs)" : "";
  throw usageError("UNSUPPORTED_KEY_TYPE", `${what} is a ${type} key${extra}`, "Roles Anywhere accepts RSA and EC (P-256, P-384, P-521) keys");
}

async function parsePemKey(block: PemBlock, password: string | undefined, what: string): Promise<KeyObject> {
  if (block.label === "ENCRYPTED PRIVATE KEY") return decryptPkcs8(block.der, password, what);
  if (isLegacyEncrypted(block)) {
    if (!password) {
      throw usageError("PKCS8_PASSWORD_REQUIRED", `${what} is an encrypted PEM key and no password was given`, "pass --pkcs8-password, or convert it to encrypted PKCS#8: openssl pkcs8 -topk8 -v2 aes-256-cbc");
    }
    try {
      return createPrivateKey({ key: blockToPem(block), format: "pem", passphrase: password });
    } catch (e) {
      throw usageError("PKCS8_WRONG_PASSWORD", `cannot decrypt ${what}: wrong password (or the file is damaged)`, "check the password", e);
    }
  }
  warnUnusedPassword(password, what);
  const type = block.label === "PRIVATE KEY" ? "pkcs8" : block.label === "RSA PRIVATE KEY" ? "pkcs1" : "sec1";
  try {
    return createPrivateKey({ key: block.der, format: "der", type });
  } catch (e) {
    throw unparsable(what, block.label, e);
  }
}

async function parseDerKey(der: Buffer, password: string | undefined, what: string): Promise<KeyObject> {
  if (isEncryptedPkcs8(der)) return decryptPkcs8(der, password, what);
  for (const type of ["pkcs8", "sec1", "pkcs1"] as const) {
    try {
      const key = createPrivateKey({ key: der, format: "der", type });
      warnUnusedPassword(password, what);
      return key;
    } catch {
      // try the next encoding
    }
  }
  throw usageError(
    "UNKNOWN_KEY_FORMAT",
    `${what} holds no private key ra-agent can read`,
    "give a PEM or DER private key: PKCS#8 (PRIVATE KEY / ENCRYPTED PRIVATE KEY), PKCS#1 (RSA PRIVATE KEY) or SEC1 (EC PRIVATE KEY); for PKCS#12 pass the .p12 file as --certificate without --private-key",
  );
}

/**
 * Parses the first private key in `data` (PEM blocks that are not keys, such as
 * `EC PARAMETERS` or `CERTIFICATE`, are skipped).
 * @throws RaError `UNKNOWN_KEY_FORMAT`, `PKCS8_PASSWORD_REQUIRED`, `PKCS8_WRONG_PASSWORD`,
 *   `UNSUPPORTED_KEY_ENCRYPTION`, `UNSUPPORTED_KEY_TYPE`.
 */
export async function parsePrivateKey(data: Buffer, options: ParsePrivateKeyOptions): Promise<KeyObject> {
  const { what } = options;
  const password = options.password === "" ? undefined : options.password;
  const text = data.toString("latin1");
  let key: KeyObject;
  if (text.includes("-----BEGIN")) {
    const blocks = parsePem(text);
    const block = blocks.find((b) => KEY_LABELS.has(b.label));
    if (!block) {
      const found = blocks.map((b) => b.label).join(", ") || "no complete PEM block";
      throw usageError(
        "UNKNOWN_KEY_FORMAT",
        `${what} holds no private key (found: ${found})`,
        "give the PEM private key (PRIVATE KEY, ENCRYPTED PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
      );
    }
    key = await parsePemKey(block, password, what);
  } else if (data.length > 0 && data[0] === 0x30) {
    key = await parseDerKey(data, password, what);
  } else {
    throw usageError("UNKNOWN_KEY_FORMAT", `${what} is neither PEM nor DER`, "give a PEM or DER private key file");
  }
  assertSupportedKey(key, what);
  return key;
}
