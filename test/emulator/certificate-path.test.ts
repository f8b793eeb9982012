/**
 * Path validation in isolation: chains in any order, intermediates that are not
 * CAs, pathLenConstraint, validity of every certificate on the path, CRLs that
 * must (and must not) count.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { certificateVersion, validateCertificatePath } from "../../src/emulator/certificate-path";
import { RolesAnywhereError } from "../../src/emulator/service-error";
import { parseCertificate, type CertificateInfo } from "../../src/x509/certificate";
import { createCa, createCrl, generateKeyPair, issueCertificate, privateKeyToPem, type CertificateAuthority } from "../../scripts/lib/pki";
import { fixturesDir, haveCommand, tempDir } from "./helpers";

const now = () => new Date();
const info = (c: x509.X509Certificate | CertificateAuthority): CertificateInfo => parseCertificate(new Uint8Array("rawData" in c ? c.rawData : c.der));

async function leafOf(ca: CertificateAuthority, opts: Parameters<typeof issueCertificate>[2] = {}): Promise<CertificateInfo> {
  const keys = await generateKeyPair("EC-P256");
  return info(await issueCertificate(ca, keys.publicKey, opts));
}

async function denied(p: Promise<unknown>, rule: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof RolesAnywhereError && e.type === "AccessDeniedException" && e.rule === rule);
}

/** A CA whose basicConstraints carries a pathLenConstraint (pki.ts does not offer one). */
async function caWithPathLength(name: string, pathLength: number, parent?: CertificateAuthority): Promise<CertificateAuthority> {
  const keys = await generateKeyPair("EC-P256");
  const ext = [
    new x509.BasicConstraintsExtension(true, pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  const common = { serialNumber: "0a" + Date.now().toString(16), notBefore: new Date(Date.now() - 3600_000), notAfter: new Date(Date.now() + 86400_000), extensions: ext, signingAlgorithm: { name: "ECDSA", hash: "SHA-256" } };
  const certificate = parent
    ? await x509.X509CertificateGenerator.create({ ...common, subject: name, issuer: parent.certificate.subject, publicKey: keys.publicKey, signingKey: parent.keys.privateKey })
    : await x509.X509CertificateGenerator.createSelfSigned({ ...common, name, keys });
  return { certificate, der: Buffer.from(certificate.rawData), pem: certificate.toString("pem"), keys, privateKeyPem: await privateKeyToPem(keys.privateKey) };
}

test("accepts leaf → intermediates (sent in any order, with an unrelated extra) → anchor", async () => {
  const root = await createCa({ name: "CN=root" });
  const i1 = await createCa({ name: "CN=i1", parent: root });
  const i2 = await createCa({ name: "CN=i2", parent: i1 });
  const stranger = await createCa({ name: "CN=stranger" });
  const leaf = await leafOf(i2);
  const result = await validateCertificatePath({ leaf, chain: [info(stranger), info(i1), info(i2)], anchors: [info(root)], crls: [], now: now() });
  assert.deepEqual(result.path.map((c) => c.subject), [leaf.subject, "CN=i2", "CN=i1", "CN=root"]);
});

test("a trust anchor may itself be an intermediate CA", async () => {
  const root = await createCa({ name: "CN=root" });
  const issuing = await createCa({ name: "CN=issuing", parent: root });
  await validateCertificatePath({ leaf: await leafOf(issuing), chain: [], anchors: [info(issuing)], crls: [], now: now() });
});

test("refuses a chain certificate that is not a CA", async () => {
  const root = await createCa({ name: "CN=root" });
  const keys = await generateKeyPair("EC-P256");
  // An end-entity certificate that (wrongly) has keyCertSign, used to sign a leaf.
  const fakeCert = await issueCertificate(root, keys.publicKey, { subject: "CN=not a CA", keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature });
  const fake: CertificateAuthority = { certificate: fakeCert, der: Buffer.from(fakeCert.rawData), pem: fakeCert.toString("pem"), keys, privateKeyPem: "" };
  await denied(validateCertificatePath({ leaf: await leafOf(fake), chain: [info(fake)], anchors: [info(root)], crls: [], now: now() }), "chain-not-ca");
});

test("enforces pathLenConstraint", async () => {
  const root = await caWithPathLength("CN=root pathlen 0", 0);
  const intermediate = await caWithPathLength("CN=intermediate", 0, root);
  const leaf = await leafOf(intermediate);
  await denied(validateCertificatePath({ leaf, chain: [info(intermediate)], anchors: [info(root)], crls: [], now: now() }), "path-length");
  // Directly under a pathlen-0 CA is fine.
  await validateCertificatePath({ leaf: await leafOf(root), chain: [], anchors: [info(root)], crls: [], now: now() });
});

test("every certificate on the path must be within its validity dates", async () => {
  const day = 86400_000;
  const root = await createCa({ name: "CN=root" });
  const oldIntermediate = await createCa({ name: "CN=old", parent: root, notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) });
  await denied(validateCertificatePath({ leaf: await leafOf(oldIntermediate), chain: [info(oldIntermediate)], anchors: [info(root)], crls: [], now: now() }), "certificate-expired");
  const oldRoot = await createCa({ name: "CN=old root", notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) });
  await denied(validateCertificatePath({ leaf: await leafOf(oldRoot), chain: [], anchors: [info(oldRoot)], crls: [], now: now() }), "certificate-expired");
  // The same leaf checked at another time: "now" is an input, never the system clock.
  const root2 = await createCa({ name: "CN=root2" });
  const leaf = await leafOf(root2);
  await denied(validateCertificatePath({ leaf, chain: [], anchors: [info(root2)], crls: [], now: new Date(Date.now() + 400 * day) }), "certificate-expired");
});

test("CRLs: a revoked intermediate is refused; CRLs from other issuers or forged ones are ignored", async () => {
  const root = await createCa({ name: "CN=crl root" });
  const intermediate = await createCa({ name: "CN=crl intermediate", parent: root });
  const leaf = await leafOf(intermediate);
  const intermediateSerial = intermediate.certificate.serialNumber;
  const input = { leaf, chain: [info(intermediate)], anchors: [info(root)], now: now() };
  await denied(validateCertificatePath({ ...input, crls: [await createCrl(root, [intermediateSerial])] }), "certificate-revoked");
  // The intermediate's own CRL revokes the leaf.
  await denied(validateCertificatePath({ ...input, crls: [await createCrl(intermediate, [leaf.serialHex])] }), "certificate-revoked");
  // Same issuer name, different key: a forged CRL does not count.
  const impostor = await createCa({ name: "CN=crl root" });
  await validateCertificatePath({ ...input, crls: [await createCrl(impostor, [intermediateSerial])] });
  // A CRL of an unrelated CA listing the same serial does not count either.
  const other = await createCa({ name: "CN=other" });
  await validateCertificatePath({ ...input, crls: [await createCrl(other, [intermediateSerial, leaf.serialHex])] });
});

test("certificateVersion reads v3 and v1 from DER", { skip: haveCommand("openssl", ["version"]) ? false : "openssl missing" }, async () => {
  const v3 = readFileSync(join(fixturesDir, "golden-rsa.pem"), "utf8");
  assert.equal(certificateVersion(parseCertificate(Buffer.from(v3.replace(/-----[A-Z ]+-----|\s/g, ""), "base64")).der), 3);
  const tmp = tempDir();
  try {
    const key = join(tmp.dir, "k.pem");
    execFileSync("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key], { stdio: "ignore" });
    execFileSync("openssl", ["req", "-new", "-key", key, "-subj", "/CN=v1", "-out", join(tmp.dir, "r.csr")], { stdio: "ignore" });
    const der = execFileSync("openssl", ["x509", "-req", "-in", join(tmp.dir, "r.csr"), "-signkey", key, "-days", "1", "-outform", "DER"], { stdio: ["ignore", "pipe", "ignore"] });
    assert.equal(certificateVersion(der), 1);
  } finally {
    tmp.cleanup();
  }
});
