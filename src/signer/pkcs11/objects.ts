/**
 * Finding objects on a token and reading their attributes: certificates,
 * private keys and public keys, with the URI attributes (label, id) they are
 * named by. Attribute reads tolerate tokens that refuse some attributes.
 */
import * as pkcs11js from "pkcs11js";
import { KeyObject } from "node:crypto";
import { formatPkcs11Uri, Pkcs11Uri } from "../../uri/pkcs11-uri";
import { CKA_PUBLIC_KEY_INFO } from "./constants";
import { hasCkr } from "./errors";
import { moduleQuery, TokenSlot, tokenUriAttributes } from "./token";
import { publicKeyFromAttributes } from "./public-key";

/** What to search for: a class, optionally a label and an id (as a URI's object= and id=). */
export interface ObjectQuery {
  objectClass: number;
  label?: string;
  id?: Buffer;
}

/** Builds a query from a URI's object attributes. */
export function queryFromUri(uri: Pkcs11Uri, objectClass: number): ObjectQuery {
  return { objectClass, label: uri.object, id: uri.id };
}

const MAX_PER_CALL = 256;

/**
 * All objects matching the query. Always ends the search with C_FindObjectsFinal,
 * so the session stays usable.
 */
export function findObjects(api: pkcs11js.PKCS11, session: Buffer, query: ObjectQuery): Buffer[] {
  const template: pkcs11js.Template = [{ type: pkcs11js.CKA_CLASS, value: query.objectClass }];
  if (query.label !== undefined) template.push({ type: pkcs11js.CKA_LABEL, value: Buffer.from(query.label, "utf8") });
  if (query.id !== undefined) template.push({ type: pkcs11js.CKA_ID, value: query.id });
  api.C_FindObjectsInit(session, template);
  const found: Buffer[] = [];
  try {
    for (;;) {
      const batch = api.C_FindObjects(session, MAX_PER_CALL);
      found.push(...batch);
      if (batch.length < MAX_PER_CALL) break;
    }
  } finally {
    api.C_FindObjectsFinal(session);
  }
  return found;
}

/**
 * Reads attributes one request at a time when the batch is refused, so that one
 * sensitive or unknown attribute does not hide the others. Missing ones are absent from the map.
 */
export function readAttributes(api: pkcs11js.PKCS11, session: Buffer, handle: Buffer, types: number[]): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  try {
    for (const a of api.C_GetAttributeValue(session, handle, types.map((type) => ({ type })))) {
      if (a.value !== undefined) out.set(a.type, a.value);
    }
    return out;
  } catch (e) {
    if (!hasCkr(e, pkcs11js.CKR_ATTRIBUTE_SENSITIVE, pkcs11js.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11js.CKR_BUFFER_TOO_SMALL, pkcs11js.CKR_ARGUMENTS_BAD)) throw e;
  }
  for (const type of types) {
    try {
      const [a] = api.C_GetAttributeValue(session, handle, [{ type }]);
      if (a?.value !== undefined) out.set(type, a.value);
    } catch (e) {
      if (!hasCkr(e, pkcs11js.CKR_ATTRIBUTE_SENSITIVE, pkcs11js.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11js.CKR_BUFFER_TOO_SMALL, pkcs11js.CKR_ARGUMENTS_BAD)) throw e;
    }
  }
  return out;
}

function bool(v: Buffer | undefined): boolean | undefined {
  return v === undefined || v.length === 0 ? undefined : v[0] !== 0;
}

function ulong(v: Buffer | undefined): number | undefined {
  if (v === undefined || v.length === 0) return undefined;
  if (v.length >= 8) return Number(v.readBigUInt64LE(0));
  if (v.length >= 4) return v.readUInt32LE(0);
  return v[0];
}

function text(v: Buffer | undefined): string {
  return v === undefined ? "" : v.toString("utf8");
}

/** Key families ra-agent can use, plus "other" for anything else on the token. */
export type TokenKeyType = "RSA" | "EC" | "other";

function keyTypeOf(v: Buffer | undefined): TokenKeyType {
  const k = ulong(v);
  if (k === pkcs11js.CKK_RSA) return "RSA";
  if (k === pkcs11js.CKK_EC) return "EC";
  return "other";
}

/** Fields common to the objects ra-agent reads. */
interface TokenObject {
  handle: Buffer;
  /** CKA_ID (may be empty). */
  id: Buffer;
  /** CKA_LABEL (may be empty). */
  label: string;
  /** CKA_PRIVATE: visible only after login. */
  private: boolean;
}

/** A certificate object. */
export interface CertificateObject extends TokenObject {
  der: Buffer;
}

/** A private key object and what it reveals about its public half. */
export interface PrivateKeyObject extends TokenObject {
  keyType: TokenKeyType;
  sensitive?: boolean;
  extractable?: boolean;
  neverExtractable?: boolean;
  alwaysAuthenticate: boolean;
  /** CKA_SIGN; undefined when the token does not say. */
  canSign?: boolean;
  /** The public key, when the private key object carries it (SPKI, RSA modulus, EC point). */
  publicKey?: KeyObject;
  /** CKA_EC_PARAMS of an EC key (the curve), even when the point is absent. */
  ecParams?: Buffer;
}

/** A public key object. */
export interface PublicKeyObject extends TokenObject {
  keyType: TokenKeyType;
  publicKey?: KeyObject;
}

/** Certificates (X.509 only) matching the query. */
export function readCertificates(api: pkcs11js.PKCS11, session: Buffer, query: Omit<ObjectQuery, "objectClass">): CertificateObject[] {
  const out: CertificateObject[] = [];
  for (const handle of findObjects(api, session, { ...query, objectClass: pkcs11js.CKO_CERTIFICATE })) {
    const a = readAttributes(api, session, handle, [pkcs11js.CKA_CERTIFICATE_TYPE, pkcs11js.CKA_VALUE, pkcs11js.CKA_ID, pkcs11js.CKA_LABEL, pkcs11js.CKA_PRIVATE]);
    const type = ulong(a.get(pkcs11js.CKA_CERTIFICATE_TYPE));
    const der = a.get(pkcs11js.CKA_VALUE);
    if ((type !== undefined && type !== pkcs11js.CKC_X_509) || !der || der.length === 0) continue;
    out.push({ handle, der, id: a.get(pkcs11js.CKA_ID) ?? Buffer.alloc(0), label: text(a.get(pkcs11js.CKA_LABEL)), private: bool(a.get(pkcs11js.CKA_PRIVATE)) ?? false });
  }
  return out;
}

/** Private keys matching the query. */
export function readPrivateKeys(api: pkcs11js.PKCS11, session: Buffer, query: Omit<ObjectQuery, "objectClass">): PrivateKeyObject[] {
  const out: PrivateKeyObject[] = [];
  for (const handle of findObjects(api, session, { ...query, objectClass: pkcs11js.CKO_PRIVATE_KEY })) {
    const a = readAttributes(api, session, handle, [
      pkcs11js.CKA_KEY_TYPE, pkcs11js.CKA_ID, pkcs11js.CKA_LABEL, pkcs11js.CKA_PRIVATE, pkcs11js.CKA_SENSITIVE, pkcs11js.CKA_EXTRACTABLE,
      pkcs11js.CKA_NEVER_EXTRACTABLE, pkcs11js.CKA_ALWAYS_AUTHENTICATE, pkcs11js.CKA_SIGN, pkcs11js.CKA_MODULUS, pkcs11js.CKA_PUBLIC_EXPONENT,
      pkcs11js.CKA_EC_PARAMS, pkcs11js.CKA_EC_POINT, CKA_PUBLIC_KEY_INFO,
    ]);
    const keyType = keyTypeOf(a.get(pkcs11js.CKA_KEY_TYPE));
    out.push({
      handle,
      keyType,
      id: a.get(pkcs11js.CKA_ID) ?? Buffer.alloc(0),
      label: text(a.get(pkcs11js.CKA_LABEL)),
      // A token that does not say is treated as private: log in before use.
      private: bool(a.get(pkcs11js.CKA_PRIVATE)) ?? true,
      sensitive: bool(a.get(pkcs11js.CKA_SENSITIVE)),
      extractable: bool(a.get(pkcs11js.CKA_EXTRACTABLE)),
      neverExtractable: bool(a.get(pkcs11js.CKA_NEVER_EXTRACTABLE)),
      alwaysAuthenticate: bool(a.get(pkcs11js.CKA_ALWAYS_AUTHENTICATE)) ?? false,
      canSign: bool(a.get(pkcs11js.CKA_SIGN)),
      ecParams: a.get(pkcs11js.CKA_EC_PARAMS),
      publicKey: publicKeyOf(keyType, a),
    });
  }
  return out;
}

/** The public key an object's attributes describe, whichever of them the token gives. */
function publicKeyOf(keyType: Parameters<typeof publicKeyFromAttributes>[0]["keyType"], a: Map<number, Buffer | undefined>) {
  return publicKeyFromAttributes({
    keyType,
    publicKeyInfo: a.get(CKA_PUBLIC_KEY_INFO),
    modulus: a.get(pkcs11js.CKA_MODULUS),
    publicExponent: a.get(pkcs11js.CKA_PUBLIC_EXPONENT),
    ecParams: a.get(pkcs11js.CKA_EC_PARAMS),
    ecPoint: a.get(pkcs11js.CKA_EC_POINT),
  });
}

/** Public keys matching the query. */
export function readPublicKeys(api: pkcs11js.PKCS11, session: Buffer, query: Omit<ObjectQuery, "objectClass">): PublicKeyObject[] {
  const out: PublicKeyObject[] = [];
  for (const handle of findObjects(api, session, { ...query, objectClass: pkcs11js.CKO_PUBLIC_KEY })) {
    const a = readAttributes(api, session, handle, [
      pkcs11js.CKA_KEY_TYPE, pkcs11js.CKA_ID, pkcs11js.CKA_LABEL, pkcs11js.CKA_PRIVATE, pkcs11js.CKA_MODULUS, pkcs11js.CKA_PUBLIC_EXPONENT,
      pkcs11js.CKA_EC_PARAMS, pkcs11js.CKA_EC_POINT, CKA_PUBLIC_KEY_INFO,
    ]);
    const keyType = keyTypeOf(a.get(pkcs11js.CKA_KEY_TYPE));
    out.push({
      handle,
      keyType,
      id: a.get(pkcs11js.CKA_ID) ?? Buffer.alloc(0),
      label: text(a.get(pkcs11js.CKA_LABEL)),
      private: bool(a.get(pkcs11js.CKA_PRIVATE)) ?? false,
      publicKey: publicKeyOf(keyType, a),
    });
  }
  return out;
}

/** The exact URI of an object on a token: token attributes, then object=, id=, type=. */
export function objectUri(slot: TokenSlot, object: { label: string; id: Buffer }, type: "cert" | "private" | "public"): string {
  const uri: Pkcs11Uri = { ...tokenUriAttributes(slot), ...moduleQuery(slot.module) };
  if (object.label !== "") uri.object = object.label;
  if (object.id.length > 0) uri.id = Buffer.from(object.id);
  uri.type = type;
  return formatPkcs11Uri(uri);
}
