/**
 * End-to-end tests of the drop-in commands on a real SoftHSM token and the real
 * emulator: the CLI runs as a child process, exactly as credential_process runs it.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { verify, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { provisionSoftHsm, type ProvisionResult, type ProvisionedKey } from "../../softhsm/provision";
import { startEmulator, buildEmulatorConfig, type RunningEmulator } from "../../src/emulator";
import { fixedTestString } from "../../src/sigv4x509/sign-string";
import { createCa, generateKeyPair, issueCertificate, privateKeyToPem } from "../../scripts/lib/pki";
import { requireTool, runCommand, runRaAgent, testStateDir, RA_AGENT_BIN } from "../support/cli";

const SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so";
const skip = requireTool(SOFTHSM, "SoftHSM");

describe("drop-in commands on SoftHSM", { skip }, () => {
  let dir: string;
  let hsm: ProvisionResult;
  let emu: RunningEmulator;
  let env: Record<string, string>;
  const key = (label: string): ProvisionedKey => hsm.tokens[0].keys.find((k) => k.label === label)!;
  const arnFlags = () => ["--trust-anchor-arn", emu.trustAnchorArn, "--profile-arn", emu.profileArn, "--role-arn", emu.roleArns[0], "--endpoint", emu.endpoint];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ra-cli-"));
    hsm = await provisionSoftHsm({ dir: join(dir, "hsm") });
    emu = await startEmulator(buildEmulatorConfig({ caCertificates: [hsm.caPem] }), { logger: { info() {}, warn() {}, error() {}, debug() {} } as never });
    env = { SOFTHSM2_CONF: hsm.softhsmConf, RA_AGENT_PIN_FILE: hsm.tokens[0].pinFile };
  });
  after(async () => {
    await emu?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function credentialProcess(extra: string[], extraEnv: Record<string, string> = {}) {
    return runRaAgent(["credential-process", "--pkcs11-lib", SOFTHSM, ...arnFlags(), ...extra], { ...env, ...extraEnv });
  }

  function assertCredentials(stdout: string, minTtlMs = 15 * 60_000) {
    const out = JSON.parse(stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(out).sort(), ["AccessKeyId", "Expiration", "SecretAccessKey", "SessionToken", "Version"]);
    assert.equal(out.Version, 1);
    assert.match(out.AccessKeyId as string, /^ASIA[A-Z0-9]{16}$/);
    assert.ok(Date.parse(out.Expiration as string) > Date.now() + minTtlMs, `expiration ${String(out.Expiration)}`);
    return out;
  }

  test("certificate URI only (EC P-256): stdout carries only the credential_process JSON", async () => {
    const r = await credentialProcess(["--certificate", key("ec-p256").certificateUri!]);
    assert.equal(r.code, 0, r.stderr);
    assertCredentials(r.stdout);
    assert.equal(r.stdout.trim().split("\n").length, 1);
  });

  test("private key URI only (RSA-2048): the certificate is found through the key's CKA_ID", async () => {
    const r = await credentialProcess(["--private-key", key("rsa-2048").keyUri]);
    assert.equal(r.code, 0, r.stderr);
    assertCredentials(r.stdout);
  });

  test("certificate file + key URI (P-384), with --session-duration", async () => {
    const k = key("ec-p384");
    const r = await credentialProcess(["--certificate", k.certificatePath, "--private-key", k.keyUri, "--session-duration", "900"]);
    assert.equal(r.code, 0, r.stderr);
    const out = assertCredentials(r.stdout, 10 * 60_000);
    const ttl = Date.parse(out.Expiration as string) - Date.now();
    assert.ok(ttl <= 900_000 + 5_000 && ttl > 800_000, `expiration ${out.Expiration}`);
  });

  test("RSA certificate with an EC key is refused before any network call", async () => {
    const before = emu.createSessionCount;
    const r = await credentialProcess(["--certificate", key("rsa-2048").certificatePath, "--private-key", key("ec-p256").keyUri]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /does not belong to the certificate.*EC key.*RSA key/);
    assert.equal(emu.createSessionCount, before);
  });

  test("the AWS CLI gets credentials through credential_process and calls STS with them", async () => {
    const cfg = join(dir, "aws-config");
    const cmd = [process.execPath, RA_AGENT_BIN, "credential-process", "--pkcs11-lib", SOFTHSM, "--certificate", `'${key("ec-p256").certificateUri}'`, ...arnFlags()].join(" ");
    writeFileSync(cfg, `[profile hw]\ncredential_process = ${cmd}\nregion = us-east-1\n`);
    const r = await runCommand("aws", ["sts", "get-caller-identity", "--profile", "hw", "--endpoint-url", emu.stsEndpoint, "--output", "json"], {
      ...process.env, ...env, RA_AGENT_STATE_DIR: testStateDir(), AWS_CONFIG_FILE: cfg, AWS_SHARED_CREDENTIALS_FILE: join(dir, "none"),
    });
    assert.equal(r.code, 0, r.stderr);
    const id = JSON.parse(r.stdout) as { Arn: string; Account: string };
    assert.equal(id.Account, "123456789012");
    assert.match(id.Arn, /^arn:aws:sts::123456789012:assumed-role\/ra-agent-emulator\//);
  });

  for (const digest of ["SHA256", "SHA384", "SHA512"] as const) {
    test(`sign-string --digest ${digest} verifies against the certificate (RSA and EC)`, async () => {
      for (const label of ["rsa-2048", "ec-p256"]) {
        const k = key(label);
        const r = await runRaAgent(["sign-string", "--pkcs11-lib", SOFTHSM, "--certificate", k.certificateUri!, "--digest", digest, "--format", "text"], env);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^[0-9a-f]+$/);
        const cert = new X509Certificate(k.certificatePem);
        const message = fixedTestString(cert.publicKey);
        const ok = verify(digest.replace("SHA", "sha"), message, { key: cert.publicKey, dsaEncoding: "der" }, Buffer.from(r.stdout, "hex"));
        assert.ok(ok, `${label} ${digest} signature does not verify`);
      }
    });
  }

  test("sign-string formats: json is a JSON string of hex, bin is raw bytes", async () => {
    const k = key("ec-p256");
    const json = await runRaAgent(["sign-string", "--pkcs11-lib", SOFTHSM, "--certificate", k.certificateUri!], env);
    assert.equal(json.code, 0, json.stderr);
    assert.match(JSON.parse(json.stdout) as string, /^[0-9a-f]+$/);
    const bin = await runRaAgent(["sign-string", "--pkcs11-lib", SOFTHSM, "--certificate", k.certificateUri!, "--format", "bin"], env);
    assert.equal(bin.code, 0, bin.stderr);
    assert.equal(bin.stdoutBytes[0], 0x30, "a DER ECDSA signature starts with SEQUENCE");
  });

  test("read-certificate-data: a file gives the reference JSON; a token URI lists each certificate with its exact URI", async () => {
    const k = key("rsa-2048");
    const file = await runRaAgent(["read-certificate-data", "--certificate", k.certificatePath]);
    assert.equal(file.code, 0, file.stderr);
    const data = JSON.parse(file.stdout) as { keyType: string; serialNumber: string; certificateData: string; supportedAlgorithms: string[] };
    assert.equal(data.keyType, "RSA");
    assert.deepEqual(data.supportedAlgorithms, ["RSASHA256", "RSASHA384", "RSASHA512"]);
    assert.equal(data.serialNumber, BigInt("0x" + new X509Certificate(k.certificatePem).serialNumber).toString(10));

    const list = await runRaAgent(["read-certificate-data", "--pkcs11-lib", SOFTHSM, "--certificate", hsm.tokens[0].uri, "--json"], env);
    assert.equal(list.code, 0, list.stderr);
    const ids = JSON.parse(list.stdout) as Array<{ uri: string; subject: string }>;
    assert.equal(ids.length, 3);
    for (const id of ids) {
      // Each printed URI selects exactly that certificate.
      const one = await runRaAgent(["read-certificate-data", "--pkcs11-lib", SOFTHSM, "--certificate", id.uri, "--json"], env);
      assert.equal((JSON.parse(one.stdout) as unknown[]).length, 1, one.stderr);
    }
    const text = await runRaAgent(["read-certificate-data", "--pkcs11-lib", SOFTHSM, "--certificate", hsm.tokens[0].uri], env);
    assert.match(text.stdout, /^Matching identities\n1\) Hex Fingerprint: [0-9a-f]{40}\nSubject: .*\nIssuer: .*\nSerial Number: [0-9A-F]+\nURI: pkcs11:/);
  });

  test("a wrong PIN fails once with CKR_PIN_INCORRECT, exit 4, and the PIN is not printed", async () => {
    const pinFile = join(dir, "bad-pin");
    writeFileSync(pinFile, "99999999\n", { mode: 0o600 });
    const r = await credentialProcess(["--certificate", key("ec-p256").certificateUri!], { RA_AGENT_PIN_FILE: pinFile });
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /CKR_PIN_INCORRECT/);
    assert.doesNotMatch(r.stderr, /99999999/);
    assert.equal(r.stdout, "");
  });

  test("malformed pkcs11: URI → usage error naming the problem, exit 2", async () => {
    const r = await credentialProcess(["--certificate", "pkcs11:token=ra-agent;id=%zz"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /INVALID_PKCS11_URI|percent|%zz/i);
  });

  test("malformed ARN → usage error before the token is touched", async () => {
    const r = await runRaAgent(["credential-process", "--pkcs11-lib", SOFTHSM, "--certificate", key("ec-p256").certificateUri!,
      "--trust-anchor-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor", "--profile-arn", emu.profileArn, "--role-arn", emu.roleArns[0], "--endpoint", emu.endpoint],
      { ...env, RA_AGENT_PIN_FILE: "/nonexistent/pin" });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /trust-anchor-arn/);
  });

  test("missing ARNs are named", async () => {
    const r = await runRaAgent(["credential-process", "--certificate", key("ec-p256").certificateUri!], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--trust-anchor-arn, --profile-arn, --role-arn/);
  });

  test("file keys with intermediates: the chain goes in X-Amz-X509-Chain and the emulator accepts it", async () => {
    const root = await createCa({ name: "CN=cli-test root" });
    const inter = await createCa({ name: "CN=cli-test intermediate", parent: root });
    const leafKeys = await generateKeyPair("EC-P256");
    const leaf = await issueCertificate(inter, leafKeys.publicKey, { subject: "CN=file-leaf" });
    writeFileSync(join(dir, "leaf.pem"), leaf.toString("pem"));
    writeFileSync(join(dir, "leaf.key"), await privateKeyToPem(leafKeys.privateKey), { mode: 0o600 });
    writeFileSync(join(dir, "chain.pem"), inter.pem);
    const emu2 = await startEmulator(buildEmulatorConfig({ caCertificates: [root.pem] }), { logger: { info() {}, warn() {}, error() {}, debug() {} } as never });
    try {
      const flags = ["credential-process", "--certificate", join(dir, "leaf.pem"), "--private-key", join(dir, "leaf.key"),
        "--trust-anchor-arn", emu2.trustAnchorArn, "--profile-arn", emu2.profileArn, "--role-arn", emu2.roleArns[0], "--endpoint", emu2.endpoint];
      const without = await runRaAgent(flags);
      assert.equal(without.code, 5, "without the intermediate the path cannot be built");
      assert.match(without.stderr, /AccessDenied/);
      const withChain = await runRaAgent([...flags, "--intermediates", join(dir, "chain.pem"), "--debug"]);
      assert.equal(withChain.code, 0, withChain.stderr);
      assertCredentials(withChain.stdout);
      assert.match(withChain.stderr, /NOT hardware-backed/);
    } finally {
      await emu2.close();
    }
  });

  test("an expired certificate is refused with a clear error and no CreateSession", async () => {
    const ca = await createCa({ name: "CN=expired-test" });
    const keys = await generateKeyPair("EC-P256");
    const cert = await issueCertificate(ca, keys.publicKey, { notBefore: new Date(Date.now() - 2 * 86400_000), notAfter: new Date(Date.now() - 86400_000) });
    writeFileSync(join(dir, "expired.pem"), cert.toString("pem"));
    writeFileSync(join(dir, "expired.key"), await privateKeyToPem(keys.privateKey), { mode: 0o600 });
    const before = emu.createSessionCount;
    const r = await runRaAgent(["credential-process", "--certificate", join(dir, "expired.pem"), "--private-key", join(dir, "expired.key"), ...arnFlags()]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /expired/i);
    assert.equal(emu.createSessionCount, before);
  });

  test("an expired certificate file with a token key is refused before any PIN is spent", async () => {
    const ca = await createCa({ name: "CN=expired-token-test" });
    const k = key("ec-p256");
    const cert = await issueCertificate(ca, new X509Certificate(k.certificatePem).publicKey, { notBefore: new Date(Date.now() - 2 * 86400_000), notAfter: new Date(Date.now() - 86400_000) });
    writeFileSync(join(dir, "expired-token.pem"), cert.toString("pem"));
    const pinCalls = join(dir, "pin-calls");
    // A PIN command that records each time it is asked: it must never be asked.
    const uri = `${k.keyUri}?pin-source=${encodeURIComponent(`|sh -c 'echo x >> ${pinCalls}; echo 00000000'`)}`;
    const r = await credentialProcess(["--certificate", join(dir, "expired-token.pem"), "--private-key", uri], { RA_AGENT_PIN_FILE: "" });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /expired/);
    assert.throws(() => readFileSync(pinCalls), /ENOENT/);
  });

  test("RA_AGENT_PKCS8_PASSWORD_FILE readable by others is refused with the chmod to run", async () => {
    const pw = join(dir, "loose-password");
    writeFileSync(pw, "secret-password\n", { mode: 0o644 });
    const r = await runRaAgent(["credential-process", "--certificate", key("ec-p256").certificatePath, "--private-key", join(dir, "leaf.key"), ...arnFlags()], { RA_AGENT_PKCS8_PASSWORD_FILE: pw });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /chmod 600/);
    assert.doesNotMatch(r.stderr, /secret-password/);
  });

  test("unsupported certificate-store flags get a clear alternative", async () => {
    const r = await runRaAgent(["credential-process", "--cert-selector", "Key=x509Subject,Value=CN=x", ...arnFlags()]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /pkcs11:/);
  });
});

