/**
 * The drop-in CLI commands on a TPM token (swtpm + tpm2-pkcs11, through
 * `--pkcs11-lib`), as a user runs them: `credential-process` with the TPM's EC
 * and RSA keys against the in-process emulator (trusting the TPM provisioning
 * CA), `sign-string` verified with node:crypto against the token's certificate,
 * and `read-certificate-data` on the token URI listing each certificate with a
 * URI that selects exactly it. The CLI is the build compiled next to this test.
 *
 * One TPM for the whole file (tpm2-pkcs11 binds to one TCTI per process).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { verify, X509Certificate } from "node:crypto";
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { buildEmulatorConfig, startEmulator, type RunningEmulator } from "../../src/emulator";
import { fixedTestString } from "../../src/sigv4x509/sign-string";
import type { ProvisionedTpm, ProvisionedTpmKey } from "../../scripts/tpm/provision";
import { testStateDir } from "../support/cli";
import { runCli } from "./cli";
import { startTpmFixture, tpmSkipReason, type TpmFixture } from "./tpm-fixture";

const skip = tpmSkipReason();
let fixture: TpmFixture | undefined;
let tpm: ProvisionedTpm;
let emu: RunningEmulator | undefined;
let dir: string;
let pinFile: string;

const quiet = { info() {}, warn() {}, error() {}, debug() {} } as never;

before(async () => {
  if (skip) return;
  // A PIN that cannot turn up in a log by chance (the default "1234" matches timestamps).
  fixture = await startTpmFixture({ pin: "Kv3pin-Rm" });
  tpm = fixture.tpm;
  // tpm2-pkcs11 may create state in HOME: keep the user's untouched.
  dir = await mkdtemp(path.join(os.tmpdir(), "ra-cli-tpm-"));
  pinFile = path.join(dir, "pin");
  writeFileSync(pinFile, tpm.token.pin + "\n", { mode: 0o600 });
  emu = await startEmulator(buildEmulatorConfig({ caCertificates: [tpm.caPem] }), { logger: quiet });
});

after(async () => {
  await emu?.close();
  await fixture?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return { ...tpm.env, HOME: dir, RA_AGENT_STATE_DIR: testStateDir(), RA_AGENT_PIN_FILE: pinFile, ...extra };
}

function key(type: "RSA" | "EC"): ProvisionedTpmKey {
  const k = tpm.keys.find((x) => x.keyType === type);
  assert.ok(k, `the fixture has a ${type} key`);
  return k;
}

function arnFlags(): string[] {
  const e = emu!;
  return ["--trust-anchor-arn", e.trustAnchorArn, "--profile-arn", e.profileArn, "--role-arn", e.roleArns[0], "--endpoint", e.endpoint, "--region", "us-east-1"];
}

for (const type of ["EC", "RSA"] as const) {
  test(`credential-process with the TPM's ${type} key: credential_process JSON from the emulator`, { skip }, async () => {
    const k = key(type);
    const before = emu!.createSessionCount;
    const r = await runCli(["credential-process", "--pkcs11-lib", tpm.modulePath, "--certificate", k.certificateUri, ...arnFlags()], env());
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split("\n").length, 1, "stdout carries only the JSON");
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(out).sort(), ["AccessKeyId", "Expiration", "SecretAccessKey", "SessionToken", "Version"]);
    assert.equal(out.Version, 1);
    assert.match(out.AccessKeyId as string, /^ASIA[A-Z0-9]{16}$/);
    assert.ok((out.SecretAccessKey as string).length > 0 && (out.SessionToken as string).length > 0);
    assert.ok(Date.parse(out.Expiration as string) > Date.now() + 15 * 60_000, `expiration ${String(out.Expiration)}`);
    assert.equal(emu!.createSessionCount, before + 1, "one CreateSession, accepted by the emulator");
    assert.ok(!r.stderr.includes(tpm.token.pin), "the PIN reached stderr");
  });

  test(`credential-process with the TPM's ${type} private-key URI only: the certificate is found on the token`, { skip }, async () => {
    const r = await runCli(["credential-process", "--pkcs11-lib", tpm.modulePath, "--private-key", key(type).keyUri, ...arnFlags()], env());
    assert.equal(r.code, 0, r.stderr);
    assert.match((JSON.parse(r.stdout) as { AccessKeyId: string }).AccessKeyId, /^ASIA/);
  });
}

test("sign-string with both TPM keys verifies against the token's certificates (SHA256 and SHA384)", { skip }, async () => {
  for (const type of ["EC", "RSA"] as const) {
    const k = key(type);
    const cert = new X509Certificate(k.certificatePem);
    for (const digest of ["SHA256", "SHA384"] as const) {
      const r = await runCli(["sign-string", "--pkcs11-lib", tpm.modulePath, "--certificate", k.certificateUri, "--digest", digest, "--format", "text"], env());
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^[0-9a-f]+$/);
      const ok = verify(digest.replace("SHA", "sha"), fixedTestString(cert.publicKey), { key: cert.publicKey, dsaEncoding: "der" }, Buffer.from(r.stdout, "hex"));
      assert.ok(ok, `${type} ${digest} signature verifies`);
      if (type === "RSA") assert.equal(r.stdout.length, 512, "an RSA-2048 signature is 256 bytes");
    }
  }
  // The default format is a JSON string of hex.
  const json = await runCli(["sign-string", "--pkcs11-lib", tpm.modulePath, "--certificate", key("EC").certificateUri], env());
  assert.equal(json.code, 0, json.stderr);
  assert.match(JSON.parse(json.stdout) as string, /^[0-9a-f]+$/);
});

test("read-certificate-data on the token URI lists the TPM certificates, each with a URI that selects exactly it", { skip }, async () => {
  const r = await runCli(["read-certificate-data", "--pkcs11-lib", tpm.modulePath, "--certificate", tpm.token.uri, "--json"], env());
  assert.equal(r.code, 0, r.stderr);
  const ids = JSON.parse(r.stdout) as Array<{ uri: string; subject: string; serialNumber?: string }>;
  assert.equal(ids.length, tpm.keys.length, r.stdout);
  for (const k of tpm.keys) {
    const cert = new X509Certificate(k.certificatePem);
    const subject = cert.subject.split("\n").reverse().join(",");
    const match = ids.filter((id) => id.uri.includes(`object=${encodeURIComponent(k.label)}`) || id.uri === k.certificateUri);
    assert.equal(match.length, 1, `one listed certificate for ${k.label}: ${JSON.stringify(ids)} (subject ${subject})`);
    assert.match(match[0].uri, /^pkcs11:/);
    assert.match(match[0].uri, new RegExp(`token=${encodeURIComponent(tpm.token.label)}`));
    // The printed URI selects exactly that certificate.
    const one = await runCli(["read-certificate-data", "--pkcs11-lib", tpm.modulePath, "--certificate", match[0].uri, "--json"], env());
    assert.equal(one.code, 0, one.stderr);
    const only = JSON.parse(one.stdout) as Array<{ uri: string }>;
    assert.equal(only.length, 1, one.stdout);
    assert.equal(only[0].uri, match[0].uri);
  }
  // The text form, as aws_signing_helper prints it.
  const text = await runCli(["read-certificate-data", "--pkcs11-lib", tpm.modulePath, "--certificate", tpm.token.uri], env());
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^Matching identities\n1\) Hex Fingerprint: [0-9a-f]{40}\nSubject: .*\nIssuer: .*\nSerial Number: [0-9A-F]+\nURI: pkcs11:/);
  assert.equal((text.stdout.match(/^URI: pkcs11:/gm) ?? []).length, tpm.keys.length);
});
