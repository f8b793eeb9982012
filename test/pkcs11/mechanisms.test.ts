import { test } from "node:test";
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import assert from "node:assert/strict";
import { constants, generateKeyPairSync, privateEncrypt, sign, verify } from "node:crypto";
import * as pkcs11js from "pkcs11js";
import { digestInfo, digestOf, ecdsaRawToDer, planSignature } from "../../src/signer/pkcs11/mechanisms";
import { curveFromEcParams, ecParamsFor, publicKeyFromAttributes, samePublicKey, unwrapEcPoint } from "../../src/signer/pkcs11/public-key";
import { ckrName, pinStateOf, tokenFlagNames } from "../../src/signer/pkcs11/constants";
import type { DigestAlgorithm } from "../../src/signer/signer";

const DIGESTS: DigestAlgorithm[] = ["SHA256", "SHA384", "SHA512"];

test("CKM_RSA_PKCS over our DigestInfo equals an RSASSA-PKCS1-v1_5 signature", () => {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const message = Buffer.from("AWS4-X509-RSA-SHA256\n20240101T000000Z\n...");
  for (const d of DIGESTS) {
    // privateEncrypt with PKCS#1 v1.5 padding is exactly what a token does for CKM_RSA_PKCS.
    const raw = privateEncrypt({ key: privateKey, padding: constants.RSA_PKCS1_PADDING }, digestInfo(digestOf(message, d), d));
    assert.ok(verify(d.toLowerCase(), message, publicKey, raw), d);
    assert.deepStrictEqual(raw, sign(d.toLowerCase(), message, privateKey), `${d}: PKCS#1 v1.5 is deterministic`);
  }
});

test("ECDSA r||s converts to DER that node:crypto verifies, for P-256 and P-384", () => {
  for (const namedCurve of ["P-256", "P-384"]) {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve });
    for (let i = 0; i < 50; i++) {
      // Many signatures: some r or s have a high bit set or a leading zero byte.
      const message = Buffer.from(`message ${i}`);
      const raw = sign("sha256", message, { key: privateKey, dsaEncoding: "ieee-p1363" });
      const der = ecdsaRawToDer(raw);
      assert.ok(verify("sha256", message, { key: publicKey, dsaEncoding: "der" }, der), `${namedCurve} #${i}`);
    }
  }
});

test("ECDSA DER encoding: golden vector with high bits and leading zeros", () => {
  const r = Buffer.alloc(32, 0);
  r[31] = 0x01;
  const s = Buffer.alloc(32, 0xff);
  const der = ecdsaRawToDer(Buffer.concat([r, s]));
  assert.equal(der.toString("hex"), "3026020101022100" + "ff".repeat(32));
  assert.throws(() => ecdsaRawToDer(Buffer.alloc(63)), /expected r\|\|s/);
  assert.throws(() => ecdsaRawToDer(Buffer.alloc(0)), /expected r\|\|s/);
});

test("mechanism choice: hash-and-sign RSA when listed, raw RSA with DigestInfo otherwise, ECDSA over a JS digest", () => {
  const msg = Buffer.from("m");
  const all = new Set([pkcs11js.CKM_SHA256_RSA_PKCS, pkcs11js.CKM_SHA384_RSA_PKCS, pkcs11js.CKM_RSA_PKCS, pkcs11js.CKM_ECDSA]);
  const rsa = planSignature("RSA", msg, "SHA256", all);
  assert.equal(rsa.mechanismName, "CKM_SHA256_RSA_PKCS");
  assert.deepStrictEqual(rsa.input, msg);
  const rsa512 = planSignature("RSA", msg, "SHA512", all);
  assert.equal(rsa512.mechanismName, "CKM_RSA_PKCS", "no CKM_SHA512_RSA_PKCS listed");
  assert.deepStrictEqual(rsa512.input, digestInfo(digestOf(msg, "SHA512"), "SHA512"));
  const avoided = planSignature("RSA", msg, "SHA256", all, ["CKM_SHA256_RSA_PKCS"]);
  assert.equal(avoided.mechanismName, "CKM_RSA_PKCS", "quirks can veto a listed mechanism");
  const unknown = planSignature("RSA", msg, "SHA256", undefined);
  assert.equal(unknown.mechanismName, "CKM_RSA_PKCS", "mechanism list unavailable: the basic mechanism");
  const ec = planSignature("EC", msg, "SHA384", all);
  assert.equal(ec.mechanismName, "CKM_ECDSA");
  assert.deepStrictEqual(ec.input, digestOf(msg, "SHA384"));
  assert.equal(ec.output, "ecdsa-der");
  assert.throws(() => planSignature("EC", msg, "SHA256", new Set([pkcs11js.CKM_RSA_PKCS])), (e: Error & { code?: string }) => e.code === "PKCS11_MECHANISM_UNSUPPORTED");
});

test("public keys from PKCS#11 attributes match the key they came from", () => {
  const ec = generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey;
  const jwk = ec.export({ format: "jwk" });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")]);
  const wrapped = Buffer.concat([Buffer.from([0x04, point.length]), point]); // DER OCTET STRING, as PKCS#11 specifies
  assert.equal(curveFromEcParams(ecParamsFor("P-384")), "P-384");
  assert.deepStrictEqual(unwrapEcPoint(wrapped, 48), point);
  assert.deepStrictEqual(unwrapEcPoint(point, 48), point, "a raw point is accepted too");
  const fromWrapped = publicKeyFromAttributes({ keyType: "EC", ecParams: ecParamsFor("P-384"), ecPoint: wrapped });
  assert.ok(fromWrapped && samePublicKey(fromWrapped, ec));
  assert.equal(publicKeyFromAttributes({ keyType: "EC", ecParams: ecParamsFor("P-384") }), undefined, "no point: unknown");

  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey;
  const r = rsa.export({ format: "jwk" });
  const withZero = Buffer.concat([Buffer.from([0]), Buffer.from(r.n!, "base64url")]);
  const fromRsa = publicKeyFromAttributes({ keyType: "RSA", modulus: withZero, publicExponent: Buffer.from(r.e!, "base64url") });
  assert.ok(fromRsa && samePublicKey(fromRsa, rsa));
  const fromSpki = publicKeyFromAttributes({ keyType: "RSA", publicKeyInfo: rsa.export({ type: "spki", format: "der" }) });
  assert.ok(fromSpki && samePublicKey(fromSpki, rsa));
  assert.ok(!samePublicKey(fromSpki, generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey));
});

test("CKR names, token flags and PIN state", () => {
  assert.equal(ckrName(0xa0), "CKR_PIN_INCORRECT");
  assert.equal(ckrName(0xa4), "CKR_PIN_LOCKED");
  assert.equal(ckrName(0x80001234), "CKR_0x80001234");
  const flags = pkcs11js.CKF_TOKEN_INITIALIZED | pkcs11js.CKF_LOGIN_REQUIRED | pkcs11js.CKF_USER_PIN_INITIALIZED | pkcs11js.CKF_USER_PIN_FINAL_TRY;
  assert.deepStrictEqual(tokenFlagNames(flags), ["token-initialized", "login-required", "user-pin-initialized", "user-pin-final-try"]);
  assert.equal(pinStateOf(flags), "final-try");
  assert.equal(pinStateOf(flags | pkcs11js.CKF_USER_PIN_LOCKED), "locked");
  assert.equal(pinStateOf(pkcs11js.CKF_USER_PIN_INITIALIZED), "ok");
});
