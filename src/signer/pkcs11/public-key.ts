/**
 * Public keys from PKCS#11 attributes (CKA_PUBLIC_KEY_INFO, RSA modulus and
 * exponent, EC parameters and point), as node:crypto KeyObjects, to match a
 * private key to its certificate without signing anything. Pure functions.
 */
import { createPublicKey, KeyObject } from "node:crypto";
import type { TokenKeyType } from "./objects";

/** Named curves Roles Anywhere accepts (and P-521), by DER-encoded OID. */
const CURVES: ReadonlyArray<{ name: "P-256" | "P-384" | "P-521"; oid: string; bytes: number }> = [
  { name: "P-256", oid: "06082a8648ce3d030107", bytes: 32 },
  { name: "P-384", oid: "06052b81040022", bytes: 48 },
  { name: "P-521", oid: "06052b81040023", bytes: 66 },
];

/** The curve named by CKA_EC_PARAMS (a DER OID), or undefined. */
export function curveFromEcParams(ecParams: Buffer | undefined): "P-256" | "P-384" | "P-521" | undefined {
  if (!ecParams) return undefined;
  const hex = ecParams.toString("hex");
  return CURVES.find((c) => c.oid === hex)?.name;
}

/** The DER OID bytes for CKA_EC_PARAMS of a curve. */
export function ecParamsFor(curve: "P-256" | "P-384" | "P-521"): Buffer {
  return Buffer.from(CURVES.find((c) => c.name === curve)!.oid, "hex");
}

/** Size in bytes of a curve's field elements. */
export function curveBytes(curve: "P-256" | "P-384" | "P-521"): number {
  return CURVES.find((c) => c.name === curve)!.bytes;
}

/**
 * The uncompressed point from CKA_EC_POINT. PKCS#11 says it is a DER OCTET STRING
 * wrapping `04 || X || Y`; some tokens return the raw point: both are accepted.
 */
export function unwrapEcPoint(ecPoint: Buffer, coordinateBytes: number): Buffer | undefined {
  const raw = 1 + 2 * coordinateBytes;
  if (ecPoint.length === raw && ecPoint[0] === 0x04) return ecPoint;
  if (ecPoint[0] === 0x04) {
    // DER OCTET STRING: 04 len [len...] point
    let offset = 1;
    let len = ecPoint[offset++];
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = (len << 8) | ecPoint[offset++];
    }
    const inner = ecPoint.subarray(offset, offset + len);
    if (inner.length === raw && inner[0] === 0x04) return inner;
  }
  return undefined;
}

function b64url(b: Buffer): string {
  return b.toString("base64url");
}

function stripLeadingZeros(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

/** Attributes that may describe a public key. */
export interface PublicKeyAttributes {
  keyType: TokenKeyType;
  publicKeyInfo?: Buffer;
  modulus?: Buffer;
  publicExponent?: Buffer;
  ecParams?: Buffer;
  ecPoint?: Buffer;
}

/**
 * The public key the attributes describe, or undefined when they are not enough
 * (an EC private key carries the curve but usually not the point).
 */
export function publicKeyFromAttributes(a: PublicKeyAttributes): KeyObject | undefined {
  if (a.publicKeyInfo && a.publicKeyInfo.length > 0) {
    try {
      return createPublicKey({ key: a.publicKeyInfo, format: "der", type: "spki" });
    } catch {
      // fall through to the key-type specific attributes
    }
  }
  try {
    if (a.keyType === "RSA" && a.modulus?.length && a.publicExponent?.length) {
      return createPublicKey({ key: { kty: "RSA", n: b64url(stripLeadingZeros(a.modulus)), e: b64url(stripLeadingZeros(a.publicExponent)) }, format: "jwk" });
    }
    if (a.keyType === "EC" && a.ecPoint?.length) {
      const curve = curveFromEcParams(a.ecParams);
      if (!curve) return undefined;
      const n = curveBytes(curve);
      const point = unwrapEcPoint(a.ecPoint, n);
      if (!point) return undefined;
      return createPublicKey({ key: { kty: "EC", crv: curve, x: b64url(point.subarray(1, 1 + n)), y: b64url(point.subarray(1 + n)) }, format: "jwk" });
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** True when both keys are the same public key (compared as DER SubjectPublicKeyInfo). */
export function samePublicKey(a: KeyObject, b: KeyObject): boolean {
  return a.export({ type: "spki", format: "der" }).equals(b.export({ type: "spki", format: "der" }));
}

/** RSA modulus size in bits, or EC curve name, of a public key. */
export function publicKeyDetail(key: KeyObject): { keyType: "RSA" | "EC" | "other"; bits?: number; curve?: string } {
  const d = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === "rsa") return { keyType: "RSA", bits: d.modulusLength };
  if (key.asymmetricKeyType === "ec") {
    const curve = { prime256v1: "P-256", secp384r1: "P-384", secp521r1: "P-521" }[d.namedCurve ?? ""] ?? d.namedCurve;
    return { keyType: "EC", curve, bits: curve === "P-256" ? 256 : curve === "P-384" ? 384 : curve === "P-521" ? 521 : undefined };
  }
  return { keyType: "other" };
}
