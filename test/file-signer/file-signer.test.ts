/**
 * File keys: every format aws_signing_helper reads (and DER), made with the
 * openssl CLI in a temp dir; signatures checked with node:crypto against the
 * certificate; each failure checked for its error code.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { createCipheriv, createPrivateKey, randomBytes, scryptSync, verify, X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier } from "@peculiar/asn1-x509";
import { EncryptedData, EncryptedPrivateKeyInfo } from "@peculiar/asn1-pkcs8";
import { openFileSigner, type FileSignerOptions } from "../../src/signer/file";
import { Pbes2Params, ScryptParams } from "../../src/signer/file/encrypted-pkcs8";
import { parsePem } from "../../src/x509/pem";
import { EC_LEAF_KEY_PEM, EC_LEAF_PEM, INTERMEDIATE_CA_PEM, ROOT_CA_PEM, RSA_LEAF_KEY_PEM, RSA_LEAF_PEM } from "../sigv4x509/fixtures";
import { needOpenssl, openssl, tempDir } from "../sigv4x509/openssl";

const der = (pem: string) => parsePem(pem)[0].der;

/** Writes the fixture PKI into `dir`. */
function fixtures(dir: string): Record<string, string> {
  const files: Record<string, string> = {
    rsaCert: RSA_LEAF_PEM, rsaKey: RSA_LEAF_KEY_PEM, ecCert: EC_LEAF_PEM, ecKey: EC_LEAF_KEY_PEM,
    int: INTERMEDIATE_CA_PEM, root: ROOT_CA_PEM,
  };
  const paths: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    paths[name] = join(dir, `${name}.pem`);
    writeFileSync(paths[name], content, { mode: 0o600 });
  }
  return paths;
}

interface Setup { dir: string; f: Record<string, string>; ossl: (...args: string[]) => string }

function setup(t: TestContext): Setup | undefined {
  if (!needOpenssl(t)) return undefined;
  const dir = tempDir(t, "ra-file-signer-");
  const f = fixtures(dir);
  /** Runs openssl; the last argument names the output file (relative to dir). */
  const ossl = (...args: string[]) => {
    openssl(args.map((a) => (a.startsWith("@") ? join(dir, a.slice(1)) : a)));
    return join(dir, args[args.indexOf("-out") + 1].slice(1));
  };
  return { dir, f, ossl };
}

/** Opens a signer and checks that it signs with the certificate's key. */
async function assertSigns(options: FileSignerOptions, expectCertDer: Buffer, keyType: "RSA" | "EC"): Promise<void> {
  const signer = await openFileSigner(options);
  try {
    assert.equal(signer.source, "file");
    assert.equal(signer.hardwareBacked, false);
    assert.equal(signer.keyType, keyType);
    assert.equal(signer.algorithm, keyType === "RSA" ? "AWS4-X509-RSA-SHA256" : "AWS4-X509-ECDSA-SHA256");
    assert.deepEqual(Buffer.from(signer.certificate), expectCertDer);
    const message = Buffer.from("AWS4-X509 string to sign");
    const publicKey = new X509Certificate(expectCertDer).publicKey;
    for (const digest of ["SHA256", "SHA384", "SHA512"] as const) {
      const sig = await signer.sign(message, digest);
      assert.ok(verify(digest.toLowerCase(), message, { key: publicKey, dsaEncoding: "der" }, sig), `${digest} signature verifies`);
    }
  } finally {
    await signer.close();
  }
}

test("PEM certificate with PKCS#8, PKCS#1 and SEC1 keys (RSA and EC)", async (t) => {
  const s = setup(t);
  if (!s) return;
  const { f, ossl } = s;
  await assertSigns({ certificatePath: f.rsaCert, privateKeyPath: f.rsaKey }, der(RSA_LEAF_PEM), "RSA");
  await assertSigns({ certificatePath: f.ecCert, privateKeyPath: f.ecKey }, der(EC_LEAF_PEM), "EC");
  const pkcs1 = ossl("rsa", "-in", f.rsaKey, "-traditional", "-out", "@rsa-pkcs1.pem");
  assert.match(readFileSync(pkcs1, "utf8"), /BEGIN RSA PRIVATE KEY/);
  await assertSigns({ certificatePath: f.rsaCert, privateKeyPath: pkcs1 }, der(RSA_LEAF_PEM), "RSA");
  const sec1 = ossl("ec", "-in", f.ecKey, "-out", "@ec-sec1.pem");
  assert.match(readFileSync(sec1, "utf8"), /BEGIN EC PRIVATE KEY/);
  await assertSigns({ certificatePath: f.ecCert, privateKeyPath: sec1 }, der(EC_LEAF_PEM), "EC");
  // `openssl ecparam -genkey` style: an EC PARAMETERS block before the key.
  const params = openssl(["ecparam", "-name", "prime256v1"]).toString();
  const withParams = join(s.dir, "ec-params.pem");
  writeFileSync(withParams, params + readFileSync(sec1, "utf8"));
  await assertSigns({ certificatePath: f.ecCert, privateKeyPath: withParams }, der(EC_LEAF_PEM), "EC");
});

test("DER certificate and DER keys (PKCS#8, PKCS#1, SEC1)", async (t) => {
  const s = setup(t);
  if (!s) return;
  const { f, ossl } = s;
  const rsaCertDer = ossl("x509", "-in", f.rsaCert, "-outform", "DER", "-out", "@rsa.crt.der");
  const ecCertDer = ossl("x509", "-in", f.ecCert, "-outform", "DER", "-out", "@ec.crt.der");
  const rsaPkcs8Der = ossl("pkcs8", "-topk8", "-nocrypt", "-in", f.rsaKey, "-outform", "DER", "-out", "@rsa.p8.der");
  const rsaPkcs1Der = ossl("rsa", "-in", f.rsaKey, "-traditional", "-outform", "DER", "-out", "@rsa.p1.der");
  const ecSec1Der = ossl("ec", "-in", f.ecKey, "-outform", "DER", "-out", "@ec.sec1.der");
  await assertSigns({ certificatePath: rsaCertDer, privateKeyPath: rsaPkcs8Der }, der(RSA_LEAF_PEM), "RSA");
  await assertSigns({ certificatePath: rsaCertDer, privateKeyPath: rsaPkcs1Der }, der(RSA_LEAF_PEM), "RSA");
  await assertSigns({ certificatePath: ecCertDer, privateKeyPath: ecSec1Der }, der(EC_LEAF_PEM), "EC");
});

test("encrypted PKCS#8: PBES2 with PBKDF2 (several PRFs and ciphers) and scrypt; DER too", async (t) => {
  const s = setup(t);
  if (!s) return;
  const { f, ossl } = s;
  const variants: Array<[string, string[]]> = [
    ["pbkdf2-default", []],
    ["pbkdf2-aes128-sha512", ["-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA512"]],
    ["pbkdf2-aes192-sha384", ["-v2", "aes-192-cbc", "-v2prf", "hmacWithSHA384"]],
    ["scrypt", ["-scrypt"]],
  ];
  for (const [name, args] of variants) {
    const path = ossl("pkcs8", "-topk8", "-in", f.ecKey, ...args, "-passout", "pass:correct horse", "-out", `@${name}.pem`);
    assert.match(readFileSync(path, "utf8"), /BEGIN ENCRYPTED PRIVATE KEY/);
    await assertSigns({ certificatePath: f.ecCert, privateKeyPath: path, pkcs8Password: "correct horse" }, der(EC_LEAF_PEM), "EC");
    await assert.rejects(openFileSigner({ certificatePath: f.ecCert, privateKeyPath: path, pkcs8Password: "wrong" }), { code: "PKCS8_WRONG_PASSWORD", kind: "usage" }, name);
    await assert.rejects(openFileSigner({ certificatePath: f.ecCert, privateKeyPath: path }), { code: "PKCS8_PASSWORD_REQUIRED" }, name);
    await assert.rejects(openFileSigner({ certificatePath: f.ecCert, privateKeyPath: path, pkcs8Password: "" }), { code: "PKCS8_PASSWORD_REQUIRED" }, `${name}: empty password counts as none`);
  }
  const rsaDer = ossl("pkcs8", "-topk8", "-in", f.rsaKey, "-scrypt", "-passout", "pass:pw", "-outform", "DER", "-out", "@rsa-scrypt.der");
  await assertSigns({ certificatePath: f.rsaCert, privateKeyPath: rsaDer, pkcs8Password: "pw" }, der(RSA_LEAF_PEM), "RSA");
});

test("scrypt parameters beyond OpenSSL's 32 MiB cap (N=65536) still open, as with the reference helper", async (t) => {
  const s = setup(t);
  if (!s) return;
  const password = "p@ss wörd";
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const N = 65536, r = 8, p = 1;
  const key = scryptSync(password, salt, 32, { N, r, p, maxmem: 256 * 1024 * 1024 });
  const plain = createPrivateKey(EC_LEAF_KEY_PEM).export({ type: "pkcs8", format: "der" });
  const cipher = createCipheriv("aes-256-cbc", key, iv);
  const encrypted = Buffer.concat([cipher.update(plain), cipher.final()]);
  const scryptParams = Object.assign(new ScryptParams(), { salt: new Uint8Array(salt).buffer, costParameter: N, blockSize: r, parallelizationParameter: p });
  const pbes2 = Object.assign(new Pbes2Params(), {
    keyDerivationFunc: new AlgorithmIdentifier({ algorithm: "1.3.6.1.4.1.11591.4.11", parameters: AsnConvert.serialize(scryptParams) }),
    encryptionScheme: new AlgorithmIdentifier({ algorithm: "2.16.840.1.101.3.4.1.42", parameters: AsnConvert.serialize(new OctetString(new Uint8Array(iv))) }),
  });
  const info = new EncryptedPrivateKeyInfo({
    encryptionAlgorithm: new AlgorithmIdentifier({ algorithm: "1.2.840.113549.1.5.13", parameters: AsnConvert.serialize(pbes2) }),
    encryptedData: new EncryptedData(new Uint8Array(encrypted)),
  });
  const derKey = Buffer.from(AsnConvert.serialize(info));
  const path = join(s.dir, "strong-scrypt.pem");
  writeFileSync(path, `-----BEGIN ENCRYPTED PRIVATE KEY-----\n${derKey.toString("base64").replace(/(.{64})/g, "$1\n")}\n-----END ENCRYPTED PRIVATE KEY-----\n`);
  // Why the scrypt path exists: OpenSSL itself refuses this file.
  assert.throws(() => createPrivateKey({ key: readFileSync(path), passphrase: password }));
  await assertSigns({ certificatePath: s.f.ecCert, privateKeyPath: path, pkcs8Password: password }, der(EC_LEAF_PEM), "EC");
  await assert.rejects(openFileSigner({ certificatePath: s.f.ecCert, privateKeyPath: path, pkcs8Password: "nope" }), { code: "PKCS8_WRONG_PASSWORD" });
});

test("encryption schemes OpenSSL 3 dropped (PBES1 DES, RC2) are named as unsupported, not as a wrong password", async (t) => {
  const s = setup(t);
  if (!s) return;
  for (const scheme of ["PBE-MD5-DES", "PBE-SHA1-RC2-40"]) {
    const out = join(s.dir, `${scheme}.pem`);
    try {
      openssl(["pkcs8", "-topk8", "-in", s.f.ecKey, "-v1", scheme, "-provider", "legacy", "-provider", "default", "-passout", "pass:pw", "-out", out]);
    } catch {
      t.diagnostic(`openssl's legacy provider cannot make ${scheme} here; skipped`);
      continue;
    }
    await assert.rejects(openFileSigner({ certificatePath: s.f.ecCert, privateKeyPath: out, pkcs8Password: "pw" }), { code: "UNSUPPORTED_KEY_ENCRYPTION", hint: /openssl pkcs8 -topk8 -v2 aes-256-cbc/ });
  }
});

test("legacy OpenSSL-encrypted PEM (Proc-Type: 4,ENCRYPTED) opens with its password", async (t) => {
  const s = setup(t);
  if (!s) return;
  const path = s.ossl("rsa", "-in", s.f.rsaKey, "-traditional", "-aes256", "-passout", "pass:legacy", "-out", "@legacy.pem");
  assert.match(readFileSync(path, "utf8"), /Proc-Type: 4,ENCRYPTED/);
  await assertSigns({ certificatePath: s.f.rsaCert, privateKeyPath: path, pkcs8Password: "legacy" }, der(RSA_LEAF_PEM), "RSA");
  await assert.rejects(openFileSigner({ certificatePath: s.f.rsaCert, privateKeyPath: path, pkcs8Password: "bad" }), { code: "PKCS8_WRONG_PASSWORD" });
  await assert.rejects(openFileSigner({ certificatePath: s.f.rsaCert, privateKeyPath: path }), { code: "PKCS8_PASSWORD_REQUIRED" });
});

test("PKCS#12 as --certificate without --private-key: current (AES) and legacy (RC2/3DES), with chain", async (t) => {
  const s = setup(t);
  if (!s) return;
  const { f, ossl } = s;
  const chainFile = join(s.dir, "chain.pem");
  writeFileSync(chainFile, INTERMEDIATE_CA_PEM + ROOT_CA_PEM);
  const modern = ossl("pkcs12", "-export", "-inkey", f.rsaKey, "-in", f.rsaCert, "-certfile", chainFile, "-passout", "pass:p12pass", "-out", "@modern.p12");
  const legacy = ossl("pkcs12", "-export", "-legacy", "-inkey", f.ecKey, "-in", f.ecCert, "-certfile", chainFile, "-passout", "pass:p12pass", "-out", "@legacy.p12");
  const empty = ossl("pkcs12", "-export", "-legacy", "-inkey", f.ecKey, "-in", f.ecCert, "-passout", "pass:", "-out", "@empty.p12");

  await assertSigns({ certificatePath: modern, pkcs8Password: "p12pass" }, der(RSA_LEAF_PEM), "RSA");
  await assertSigns({ certificatePath: legacy, pkcs8Password: "p12pass" }, der(EC_LEAF_PEM), "EC");
  await assertSigns({ certificatePath: empty }, der(EC_LEAF_PEM), "EC");
  await assertSigns({ certificatePath: empty, pkcs8Password: "meant for another key" }, der(EC_LEAF_PEM), "EC");

  for (const path of [modern, legacy]) {
    const signer = await openFileSigner({ certificatePath: path, pkcs8Password: "p12pass" });
    assert.deepEqual(signer.chain.map((c) => Buffer.from(c)), [der(INTERMEDIATE_CA_PEM)], "intermediate only, the self-signed root left out");
    await assert.rejects(openFileSigner({ certificatePath: path, pkcs8Password: "wrong" }), { code: "PKCS12_WRONG_PASSWORD" });
    await assert.rejects(openFileSigner({ certificatePath: path }), { code: "PKCS12_WRONG_PASSWORD", message: /protected by a password and none was given/ });
  }
  await assert.rejects(openFileSigner({ certificatePath: modern, pkcs8Password: "p12pass", intermediatesPath: f.int }), { code: "PKCS12_WITH_INTERMEDIATES" });
  await assert.rejects(openFileSigner({ certificatePath: modern, pkcs8Password: "p12pass", privateKeyPath: f.rsaKey }), { code: "PKCS12_WITH_PRIVATE_KEY" });
  // The certificate bytes come out of the PKCS#12 file unchanged (they are sent in X-Amz-X509).
  const rsaSigner = await openFileSigner({ certificatePath: modern, pkcs8Password: "p12pass" });
  assert.deepEqual(Buffer.from(rsaSigner.certificate), der(RSA_LEAF_PEM));
});

test("a PEM certificate file that also holds the key works without --private-key (as the reference)", async (t) => {
  const s = setup(t);
  if (!s) return;
  const combined = join(s.dir, "combined.pem");
  writeFileSync(combined, RSA_LEAF_PEM + RSA_LEAF_KEY_PEM);
  await assertSigns({ certificatePath: combined }, der(RSA_LEAF_PEM), "RSA");
  await assert.rejects(openFileSigner({ certificatePath: s.f.rsaCert }), { code: "MISSING_PRIVATE_KEY" });
});

test("--intermediates are read into the chain, leaf-side first", async (t) => {
  const s = setup(t);
  if (!s) return;
  const bundle = join(s.dir, "bundle.pem");
  writeFileSync(bundle, INTERMEDIATE_CA_PEM + ROOT_CA_PEM);
  const signer = await openFileSigner({ certificatePath: s.f.rsaCert, privateKeyPath: s.f.rsaKey, intermediatesPath: bundle });
  assert.deepEqual(signer.chain.map((c) => Buffer.from(c)), [der(INTERMEDIATE_CA_PEM), der(ROOT_CA_PEM)]);
  const given = await openFileSigner({ certificatePath: s.f.rsaCert, privateKeyPath: s.f.rsaKey, intermediates: [der(INTERMEDIATE_CA_PEM)] });
  assert.equal(given.chain.length, 1);
});

test("a key that does not belong to the certificate is refused before any use (RSA<->EC, EC<->EC)", async (t) => {
  const s = setup(t);
  if (!s) return;
  await assert.rejects(openFileSigner({ certificatePath: s.f.ecCert, privateKeyPath: s.f.rsaKey }), { code: "KEY_CERTIFICATE_MISMATCH", message: /RSA-2048.*EC P-256/ });
  await assert.rejects(openFileSigner({ certificatePath: s.f.rsaCert, privateKeyPath: s.f.ecKey }), { code: "KEY_CERTIFICATE_MISMATCH" });
  const otherEc = s.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "@other-ec.pem");
  await assert.rejects(openFileSigner({ certificatePath: s.f.ecCert, privateKeyPath: otherEc }), { code: "KEY_CERTIFICATE_MISMATCH" });
});

test("unreadable files, unknown formats and unsupported key types give clear errors", async (t) => {
  const s = setup(t);
  if (!s) return;
  const { f, dir } = s;
  await assert.rejects(openFileSigner({ certificatePath: join(dir, "missing.pem"), privateKeyPath: f.rsaKey }), { code: "UNREADABLE_FILE", message: /no such file/ });
  await assert.rejects(openFileSigner({ certificatePath: f.rsaCert, privateKeyPath: join(dir, "missing.key") }), { code: "UNREADABLE_FILE" });
  mkdirSync(join(dir, "adir"));
  await assert.rejects(openFileSigner({ certificatePath: f.rsaCert, privateKeyPath: join(dir, "adir") }), { code: "UNREADABLE_FILE", message: /is a directory/ });

  const garbage = join(dir, "garbage");
  writeFileSync(garbage, "hello, not a key\n");
  await assert.rejects(openFileSigner({ certificatePath: f.rsaCert, privateKeyPath: garbage }), { code: "UNKNOWN_KEY_FORMAT" });
  await assert.rejects(openFileSigner({ certificatePath: f.rsaCert, privateKeyPath: f.int }), { code: "UNKNOWN_KEY_FORMAT", message: /found: CERTIFICATE/ });
  await assert.rejects(openFileSigner({ certificatePath: garbage, privateKeyPath: f.rsaKey }), { code: "INVALID_CERTIFICATE_FILE" });
  await assert.rejects(openFileSigner({ certificatePath: f.rsaKey, privateKeyPath: f.rsaKey }), { code: "INVALID_CERTIFICATE_FILE" });
  const derGarbage = join(dir, "der-garbage");
  writeFileSync(derGarbage, Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]));
  await assert.rejects(openFileSigner({ certificatePath: f.rsaCert, privateKeyPath: derGarbage }), { code: "UNKNOWN_KEY_FORMAT" });

  const ed = s.ossl("genpkey", "-algorithm", "ED25519", "-out", "@ed.pem");
  await assert.rejects(openFileSigner({ certificatePath: f.rsaCert, privateKeyPath: ed }), { code: "UNSUPPORTED_KEY_TYPE", message: /ed25519/ });
  const k1 = s.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1", "-out", "@k1.pem");
  await assert.rejects(openFileSigner({ certificatePath: f.ecCert, privateKeyPath: k1 }), { code: "UNSUPPORTED_KEY_TYPE", message: /secp256k1/ });
});

test("a password given for an unencrypted key is ignored (with a warning), not fatal", async (t) => {
  const s = setup(t);
  if (!s) return;
  await assertSigns({ certificatePath: s.f.ecCert, privateKeyPath: s.f.ecKey, pkcs8Password: "unused" }, der(EC_LEAF_PEM), "EC");
});

test("promptPassword: asked when no password is given, asked again after a wrong one, at most 3 times", async (t) => {
  const s = setup(t);
  if (!s) return;
  const path = s.ossl("pkcs8", "-topk8", "-in", s.f.ecKey, "-passout", "pass:right", "-out", "@enc.pem");
  const answers = ["wrong", "right"];
  const prompts: string[] = [];
  const signer = await openFileSigner({ certificatePath: s.f.ecCert, privateKeyPath: path, promptPassword: async (q) => (prompts.push(q), answers.shift()!) });
  assert.equal(prompts.length, 2);
  assert.match(prompts[1], /^Wrong password/);
  await signer.close();
  let asked = 0;
  await assert.rejects(openFileSigner({ certificatePath: s.f.ecCert, privateKeyPath: path, promptPassword: async () => (asked++, "nope") }), { code: "PKCS8_WRONG_PASSWORD" });
  assert.equal(asked, 3);
});

test("sign after close fails; an unknown digest is refused", async (t) => {
  const s = setup(t);
  if (!s) return;
  const signer = await openFileSigner({ certificatePath: s.f.ecCert, privateKeyPath: s.f.ecKey });
  await assert.rejects(signer.sign(Buffer.from("x"), "MD5" as never), { code: "UNSUPPORTED_DIGEST" });
  await signer.close();
  await signer.close();
  await assert.rejects(signer.sign(Buffer.from("x")), { code: "SIGNER_CLOSED" });
});
