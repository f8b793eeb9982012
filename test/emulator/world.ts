/**
 * A complete test set-up for the emulator: a root CA with an intermediate and
 * a CRL, an untrusted CA, leaf certificates that each break one rule, and an
 * emulator configuration with several trust anchors and profiles.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import type { CertificateAuthority } from "../../scripts/lib/pki";
import type { EmulatorConfig } from "../../src/emulator";
import { createCa, createCrl, writeCa, writeLeaf, type LeafFiles } from "./helpers";

export const ACCOUNT = "123456789012";
export const ROLE_A = `arn:aws:iam::${ACCOUNT}:role/ra-test-a`;
export const ROLE_B = `arn:aws:iam::${ACCOUNT}:role/team/ra-test-b`;
export const ROLE_OUTSIDE = `arn:aws:iam::${ACCOUNT}:role/not-in-any-profile`;
export const TA_ROOT = `arn:aws:rolesanywhere:us-east-1:${ACCOUNT}:trust-anchor/00000000-0000-4000-8000-000000000001`;
export const TA_DISABLED = `arn:aws:rolesanywhere:us-east-1:${ACCOUNT}:trust-anchor/00000000-0000-4000-8000-000000000002`;
export const TA_UNKNOWN = `arn:aws:rolesanywhere:us-east-1:${ACCOUNT}:trust-anchor/00000000-0000-4000-8000-0000000000ff`;
export const PROFILE_MAIN = `arn:aws:rolesanywhere:us-east-1:${ACCOUNT}:profile/00000000-0000-4000-8000-000000000011`;
export const PROFILE_NAMED = `arn:aws:rolesanywhere:us-east-1:${ACCOUNT}:profile/00000000-0000-4000-8000-000000000012`;
export const PROFILE_DISABLED = `arn:aws:rolesanywhere:us-east-1:${ACCOUNT}:profile/00000000-0000-4000-8000-000000000013`;
export const PROFILE_UNKNOWN = `arn:aws:rolesanywhere:us-east-1:${ACCOUNT}:profile/00000000-0000-4000-8000-0000000000ff`;
/** Session duration cap of PROFILE_MAIN. */
export const MAIN_PROFILE_CAP = 7200;

/** Leaves every world has. */
export interface BasicLeaves {
  rsa: LeafFiles;
  ec: LeafFiles;
}

/** Leaves that break one rule each (full world only). */
export interface RuleLeaves {
  ec384: LeafFiles;
  viaIntermediate: LeafFiles;
  untrusted: LeafFiles;
  expired: LeafFiles;
  notYetValid: LeafFiles;
  isCa: LeafFiles;
  /** cA=true without keyCertSign: OpenSSL does not call it a CA, the service does. */
  isCaNoCertSign: LeafFiles;
  noKeyUsage: LeafFiles;
  noDigitalSignature: LeafFiles;
  sha1: LeafFiles;
  revoked: LeafFiles;
  v1: LeafFiles;
  p521: LeafFiles;
}

export interface World {
  dir: string;
  root: CertificateAuthority;
  rootFile: string;
  intermediate: CertificateAuthority;
  intermediateFile: string;
  leaves: BasicLeaves & Partial<RuleLeaves>;
  config: EmulatorConfig;
}

function opensslLeaf(dir: string, name: string, rootKeyFile: string, rootFile: string, opts: { curve: string; extensions: boolean }): LeafFiles {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  execFileSync("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", `ec_paramgen_curve:${opts.curve}`, "-out", key], { stdio: "ignore" });
  execFileSync("openssl", ["req", "-new", "-key", key, "-subj", `/CN=${name}`, "-out", csr], { stdio: "ignore" });
  const args = ["x509", "-req", "-in", csr, "-CA", rootFile, "-CAkey", rootKeyFile, "-days", "30", "-sha256", "-set_serial", "0x" + Date.now().toString(16) + name.length, "-out", cert];
  if (opts.extensions) {
    const ext = join(dir, `${name}.ext`);
    writeFileSync(ext, "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n");
    args.push("-extfile", ext);
  }
  execFileSync("openssl", args, { stdio: "ignore" });
  const pem = execFileSync("openssl", ["x509", "-in", cert]).toString();
  const serialHex = execFileSync("openssl", ["x509", "-in", cert, "-noout", "-serial"]).toString().trim().split("=")[1].toLowerCase();
  return { certificate: cert, privateKey: key, pem, serialHex };
}

/** Builds the PKI in `dir`; `full` adds the rule-breaking leaves and a CRL. */
export async function buildWorld(dir: string, full: boolean): Promise<World> {
  const root = await createCa({ name: "CN=ra-agent test root", algorithm: "EC-P256" });
  const intermediate = await createCa({ name: "CN=ra-agent test intermediate", algorithm: "EC-P256", parent: root });
  const rootFile = writeCa(dir, "root", root);
  const intermediateFile = writeCa(dir, "intermediate", intermediate);
  const leaves: World["leaves"] = {
    rsa: await writeLeaf(dir, "leaf-rsa", root, "RSA-2048"),
    ec: await writeLeaf(dir, "leaf-ec", root, "EC-P256"),
  };
  const crls: string[] = [];
  if (full) {
    const other = await createCa({ name: "CN=some other CA", algorithm: "EC-P256" });
    const day = 86400_000;
    const rootKeyFile = join(dir, "root.key");
    writeFileSync(rootKeyFile, root.privateKeyPem, { mode: 0o600 });
    Object.assign(leaves, {
      ec384: await writeLeaf(dir, "leaf-ec384", root, "EC-P384"),
      viaIntermediate: await writeLeaf(dir, "leaf-via-intermediate", intermediate, "EC-P256"),
      untrusted: await writeLeaf(dir, "leaf-untrusted", other, "EC-P256"),
      expired: await writeLeaf(dir, "leaf-expired", root, "EC-P256", { notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) }),
      notYetValid: await writeLeaf(dir, "leaf-future", root, "EC-P256", { notBefore: new Date(Date.now() + day), notAfter: new Date(Date.now() + 10 * day) }),
      isCa: await writeLeaf(dir, "leaf-is-ca", root, "EC-P256", { isCa: true, keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign }),
      isCaNoCertSign: await writeLeaf(dir, "leaf-is-ca-no-certsign", root, "EC-P256", { isCa: true, keyUsage: x509.KeyUsageFlags.digitalSignature }),
      noKeyUsage: await writeLeaf(dir, "leaf-no-key-usage", root, "EC-P256", { noKeyUsage: true }),
      noDigitalSignature: await writeLeaf(dir, "leaf-no-digital-signature", root, "EC-P256", { keyUsage: x509.KeyUsageFlags.keyAgreement }),
      sha1: await writeLeaf(dir, "leaf-sha1", root, "EC-P256", { signatureHash: "SHA-1" }),
      revoked: await writeLeaf(dir, "leaf-revoked", root, "EC-P256"),
      v1: opensslLeaf(dir, "leaf-v1", rootKeyFile, rootFile, { curve: "P-256", extensions: false }),
      p521: opensslLeaf(dir, "leaf-p521", rootKeyFile, rootFile, { curve: "P-521", extensions: true }),
    } satisfies RuleLeaves);
    crls.push((await createCrl(root, [leaves.revoked!.serialHex])).toString("pem"));
    // A CRL signed by another CA that lists the good leaf's serial: it must be ignored.
    crls.push((await createCrl(other, [leaves.ec.serialHex])).toString("pem"));
  }
  const config: EmulatorConfig = {
    trustAnchors: [
      { name: "root", arn: TA_ROOT, certificates: [root.pem], crls },
      { name: "disabled", arn: TA_DISABLED, enabled: false, certificates: [root.pem] },
    ],
    profiles: [
      { name: "main", arn: PROFILE_MAIN, roleArns: [ROLE_A, ROLE_B], durationSeconds: MAIN_PROFILE_CAP },
      { name: "named", arn: PROFILE_NAMED, roleArns: [ROLE_A], acceptRoleSessionName: true },
      { name: "off", arn: PROFILE_DISABLED, enabled: false, roleArns: [ROLE_A] },
    ],
  };
  return { dir, root, rootFile, intermediate, intermediateFile, leaves, config };
}

/** The three ARNs of a request against the world's main trust anchor and profile. */
export function arns(roleArn = ROLE_A, profileArn = PROFILE_MAIN, trustAnchorArn = TA_ROOT): Record<string, string> {
  return { trustAnchorArn, profileArn, roleArn };
}
