/**
 * Token administration used by provisioning (softhsm/provision.ts) and tests:
 * initialise a token, generate a key pair inside it, store a certificate next to
 * a key. Kept here because only src/signer/pkcs11 calls C_* functions.
 *
 * Not used on the signing path. PINs are passed in memory, never on argv.
 */
import { KeyObject } from "node:crypto";
import * as pkcs11js from "pkcs11js";
import { RaError } from "../../errors";
import { toRaError } from "./errors";
import { Pkcs11Module } from "./module";
import { quirksFor } from "./native-config";
import { readPrivateKeys, readPublicKeys, readCertificates, findObjects } from "./objects";
import { ecParamsFor } from "./public-key";
import { describeTokenInfo, handleToBigInt, listSlots, listTokens, TokenSlot } from "./token";

/** Key types provisioning can generate. */
export type GeneratedKeyType = "RSA-2048" | "RSA-3072" | "EC-P256" | "EC-P384";

/** PKCS#11 labels are 32 blank-padded bytes; pkcs11js pads with NULs, so pad here. */
function padLabel(label: string): string {
  const bytes = Buffer.from(label, "utf8");
  if (bytes.length > 32) throw new RaError("usage", "TOKEN_LABEL_TOO_LONG", `token label "${label}" is longer than 32 bytes`, { hint: "use a shorter label" });
  return label + " ".repeat(32 - bytes.length);
}

/**
 * Initialises a token in the first slot holding an uninitialised token, and sets
 * its user PIN. Returns the new token's slot (found again by label and a serial
 * that did not exist before, since slot ids may change).
 * @throws RaError `NO_FREE_SLOT` when every token is initialised
 */
export function initializeToken(module: Pkcs11Module, label: string, soPin: string, userPin: string): TokenSlot {
  const api = module.api;
  const before = new Set(listTokens(module).map((t) => `${t.token.serial}`));
  const free = listSlots(module, true).find((s) => s.token && !s.token.initialized);
  if (!free) throw new RaError("token", "NO_FREE_SLOT", `no uninitialised token is left in module ${module.path}`, { hint: "SoftHSM adds a free slot after each initialised token; check its tokendir" });
  try {
    api.C_InitToken(free.handle, soPin, padLabel(label));
  } catch (e) {
    throw toRaError(e, { operation: "C_InitToken", token: `free slot ${handleToBigInt(free.handle)}` });
  }
  const slot = listTokens(module).find((t) => t.token.label === label && !before.has(t.token.serial));
  if (!slot) throw new RaError("token", "TOKEN_INIT_LOST", `the token "${label}" was initialised but cannot be found again`, { hint: "inspect the module's token directory" });
  const session = api.C_OpenSession(slot.handle, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  try {
    api.C_Login(session, pkcs11js.CKU_SO, soPin);
    api.C_InitPIN(session, userPin);
    api.C_Logout(session);
  } catch (e) {
    throw toRaError(e, { operation: "C_InitPIN", token: label });
  } finally {
    api.C_CloseSession(session);
  }
  slot.token = describeTokenInfo(api.C_GetTokenInfo(slot.handle));
  return slot;
}

/** Options of {@link generateKeyPair}. */
export interface KeyGenOptions {
  keyType: GeneratedKeyType;
  id: Buffer;
  label: string;
  /** CKA_ALWAYS_AUTHENTICATE on the private key. */
  alwaysAuthenticate?: boolean;
  /** CKA_PRIVATE false on the private key: usable without login. */
  noLogin?: boolean;
  /** Keep the public-key object (default true). Some tokens have none. */
  publicKeyObject?: boolean;
}

/**
 * Generates a key pair inside the token: the private key is sensitive, not
 * extractable, and can only sign. Needs a read-write session logged in as user.
 * Returns the public key (read before the public-key object is destroyed, when asked).
 * @throws RaError `KEY_TOO_LARGE` when the module's quirks say it cannot hold the key
 */
export function generateKeyPair(module: Pkcs11Module, slot: TokenSlot, session: Buffer, opts: KeyGenOptions): KeyObject {
  const api = module.api;
  const quirks = quirksFor({ modulePath: module.path, libraryManufacturer: module.info.manufacturer, tokenManufacturer: slot.token.manufacturer, tokenModel: slot.token.model });
  const common = [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_ID, value: opts.id },
    { type: pkcs11js.CKA_LABEL, value: Buffer.from(opts.label, "utf8") },
  ];
  const privateTemplate: pkcs11js.Template = [
    ...common,
    { type: pkcs11js.CKA_PRIVATE, value: !opts.noLogin },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ];
  if (opts.alwaysAuthenticate) privateTemplate.push({ type: pkcs11js.CKA_ALWAYS_AUTHENTICATE, value: true });
  const publicTemplate: pkcs11js.Template = [...common, { type: pkcs11js.CKA_PRIVATE, value: false }, { type: pkcs11js.CKA_VERIFY, value: true }, { type: pkcs11js.CKA_ENCRYPT, value: false }];
  let mechanism: number;
  if (opts.keyType.startsWith("RSA")) {
    const bits = opts.keyType === "RSA-2048" ? 2048 : 3072;
    if (bits > quirks.maxRsaBits) throw new RaError("usage", "KEY_TOO_LARGE", `this token holds RSA keys of at most ${quirks.maxRsaBits} bits`, { hint: "choose a smaller RSA key or an EC key" });
    mechanism = pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN;
    publicTemplate.push({ type: pkcs11js.CKA_MODULUS_BITS, value: bits }, { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) });
  } else {
    mechanism = pkcs11js.CKM_EC_KEY_PAIR_GEN;
    publicTemplate.push({ type: pkcs11js.CKA_EC_PARAMS, value: ecParamsFor(opts.keyType === "EC-P256" ? "P-256" : "P-384") });
  }
  let pair: pkcs11js.KeyPair;
  try {
    pair = api.C_GenerateKeyPair(session, { mechanism }, publicTemplate, privateTemplate);
  } catch (e) {
    throw toRaError(e, { operation: "C_GenerateKeyPair", token: slot.token.label });
  }
  const pub = readPublicKeys(api, session, { id: opts.id, label: opts.label }).find((p) => p.handle.equals(pair.publicKey) && p.publicKey);
  if (!pub?.publicKey) throw new RaError("token", "KEYGEN_NO_PUBLIC_KEY", "the generated public key could not be read", { hint: "check the token supports CKA_MODULUS / CKA_EC_POINT on public keys" });
  if (opts.publicKeyObject === false) api.C_DestroyObject(session, pair.publicKey);
  return pub.publicKey;
}

/** True when a private key with this CKA_ID exists (and is visible in the session). */
export function hasPrivateKey(module: Pkcs11Module, session: Buffer, id: Buffer): boolean {
  return readPrivateKeys(module.api, session, { id }).length > 0;
}

/** Public key of an existing key pair: from the private key object or the public-key object with the same CKA_ID. */
export function existingPublicKey(module: Pkcs11Module, session: Buffer, id: Buffer): KeyObject | undefined {
  const priv = readPrivateKeys(module.api, session, { id })[0];
  if (priv?.publicKey) return priv.publicKey;
  return readPublicKeys(module.api, session, { id }).find((p) => p.publicKey)?.publicKey;
}

/** Options of {@link storeCertificate}. */
export interface StoreCertificateOptions {
  der: Buffer;
  id: Buffer;
  label: string;
  /** DER of the subject and issuer names and of the serial INTEGER (CKA_SUBJECT, CKA_ISSUER, CKA_SERIAL_NUMBER). */
  subject: Buffer;
  issuer: Buffer;
  serialNumber: Buffer;
  /** CKA_PRIVATE: visible only after login. */
  private?: boolean;
}

/** Stores an X.509 certificate object unless one with the same label and id exists. Returns true when written. */
export function storeCertificate(module: Pkcs11Module, session: Buffer, opts: StoreCertificateOptions): boolean {
  const api = module.api;
  if (readCertificates(api, session, { id: opts.id, label: opts.label }).some((c) => c.der.equals(opts.der))) return false;
  try {
    api.C_CreateObject(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE },
      { type: pkcs11js.CKA_CERTIFICATE_TYPE, value: pkcs11js.CKC_X_509 },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: opts.private ?? false },
      { type: pkcs11js.CKA_MODIFIABLE, value: false },
      { type: pkcs11js.CKA_LABEL, value: Buffer.from(opts.label, "utf8") },
      { type: pkcs11js.CKA_ID, value: opts.id },
      { type: pkcs11js.CKA_SUBJECT, value: opts.subject },
      { type: pkcs11js.CKA_ISSUER, value: opts.issuer },
      { type: pkcs11js.CKA_SERIAL_NUMBER, value: opts.serialNumber },
      { type: pkcs11js.CKA_VALUE, value: opts.der },
    ]);
  } catch (e) {
    throw toRaError(e, { operation: "C_CreateObject", token: opts.label });
  }
  return true;
}

/** Opens a read-write session and logs the user in (provisioning only). */
export function openAdminSession(module: Pkcs11Module, slot: TokenSlot, userPin: string): Buffer {
  const api = module.api;
  const session = api.C_OpenSession(slot.handle, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  try {
    api.C_Login(session, pkcs11js.CKU_USER, userPin);
  } catch (e) {
    if (!(e instanceof pkcs11js.Pkcs11Error && e.code === pkcs11js.CKR_USER_ALREADY_LOGGED_IN)) {
      api.C_CloseSession(session);
      throw toRaError(e, { operation: "C_Login", token: slot.token.label });
    }
  }
  return session;
}

/** Closes a session opened by {@link openAdminSession}. */
export function closeAdminSession(module: Pkcs11Module, session: Buffer): void {
  try {
    module.api.C_CloseSession(session);
  } catch {
    // already closed
  }
}

/** Number of objects of a class on the token (tests). */
export function countObjects(module: Pkcs11Module, session: Buffer, objectClass: number): number {
  return findObjects(module.api, session, { objectClass }).length;
}
