/**
 * sign-string: the fixed test string of aws_signing_helper and its output formats.
 * The expected SHA-256 suffixes were computed with the openssl CLI and sha256sum
 * (`openssl rsa -RSAPublicKey_out -outform DER`; the last 65 bytes of the EC SPKI),
 * independently of this code.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, verify } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { FileSigner } from "../../src/signer/file/file-signer";
import { fixedTestString, formatSignature, parseDigest, parseSignStringFormat, signTestString, testStringPublicKeyBytes } from "../../src/sigv4x509";
import { parsePem } from "../../src/x509/pem";
import { EC_LEAF_KEY_PEM, EC_LEAF_PEM, RSA_LEAF_KEY_PEM, RSA_LEAF_PEM } from "./fixtures";
import { needOpenssl, openssl, tempDir } from "./openssl";

const der = (pem: string) => parsePem(pem)[0].der;
const PREFIX = Buffer.from("AWS Roles Anywhere Credential Helper Signing Test1");

test("the fixed string: prefix, version 1, SHA256(\"IAM RA\" || PKCS#1 public key) for RSA", () => {
  const s = fixedTestString(createPublicKey(RSA_LEAF_KEY_PEM));
  assert.equal(s.length, PREFIX.length + 32);
  assert.deepEqual(s.subarray(0, PREFIX.length), PREFIX);
  assert.equal(s.subarray(PREFIX.length).toString("hex"), "485511704ed29a509319ac19b04f80555a46dfa5d95a18ea6085f2ecb2074522");
});

test("the fixed string for EC hashes the uncompressed point 04||X||Y", () => {
  const key = createPublicKey(EC_LEAF_KEY_PEM);
  const point = testStringPublicKeyBytes(key);
  assert.equal(point.length, 65);
  assert.equal(point[0], 0x04);
  assert.equal(fixedTestString(key).subarray(PREFIX.length).toString("hex"), "fb6f6fed585901498ad52a326a9e75356951474e00aa07b76d455cc4800c233f");
});

test("RSA sign-string with SHA256/384/512 equals openssl dgst -sign byte for byte", async (t) => {
  if (!needOpenssl(t)) return;
  const dir = tempDir(t);
  writeFileSync(join(dir, "key.pem"), RSA_LEAF_KEY_PEM, { mode: 0o600 });
  const message = fixedTestString(createPublicKey(RSA_LEAF_KEY_PEM));
  writeFileSync(join(dir, "msg"), message);
  const signer = new FileSigner(createPrivateKey(RSA_LEAF_KEY_PEM), der(RSA_LEAF_PEM), []);
  for (const digest of ["SHA256", "SHA384", "SHA512"] as const) {
    const ours = await signTestString(signer, digest);
    const theirs = openssl(["dgst", `-${digest.toLowerCase()}`, "-sign", join(dir, "key.pem"), join(dir, "msg")]);
    assert.deepEqual(ours, theirs, digest);
  }
});

test("EC sign-string verifies with the certificate's key for each digest", async () => {
  const signer = new FileSigner(createPrivateKey(EC_LEAF_KEY_PEM), der(EC_LEAF_PEM), []);
  const message = fixedTestString(createPublicKey(EC_LEAF_KEY_PEM));
  for (const digest of ["SHA256", "SHA384", "SHA512"] as const) {
    const sig = await signTestString(signer, digest);
    assert.ok(verify(digest.toLowerCase(), message, { key: createPublicKey(EC_LEAF_KEY_PEM), dsaEncoding: "der" }, sig), digest);
    assert.equal(verify("sha256", message, { key: createPublicKey(EC_LEAF_KEY_PEM), dsaEncoding: "der" }, sig), digest === "SHA256");
  }
});

test("output formats: text = hex, json = JSON string of the hex, bin = raw bytes; no newline", () => {
  const sig = Buffer.from([0x00, 0xab, 0xff]);
  assert.equal(formatSignature(sig, "text").toString(), "00abff");
  assert.equal(formatSignature(sig, "json").toString(), '"00abff"');
  assert.deepEqual(formatSignature(sig, "bin"), sig);
  assert.equal(parseSignStringFormat("bin"), "bin");
  assert.throws(() => parseSignStringFormat("JSON"), { code: "INVALID_FLAG" });
  assert.equal(parseDigest("SHA384"), "SHA384");
  assert.throws(() => parseDigest("sha256"), { code: "INVALID_FLAG" });
});
