/**
 * Emulator configuration: defaults, stable ARNs, the --config JSON format, and
 * a clear error for each kind of bad input.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildEmulatorConfig, loadEmulatorConfigFile, parseEmulatorConfigJson, resolveEmulatorConfig, type EmulatorConfig } from "../../src/emulator";
import { isRaError } from "../../src/errors";
import { createCa, createCrl, generateKeyPair, issueCertificate, type CertificateAuthority } from "../../scripts/lib/pki";
import { tempDir } from "./helpers";

let caPromise: Promise<CertificateAuthority> | undefined;
const ca = () => (caPromise ??= createCa({ name: "CN=config test CA" }));

function invalid(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (e: unknown) => isRaError(e, "EMULATOR_CONFIG_INVALID") && message.test(e.message) && e.kind === "usage");
}

test("buildEmulatorConfig: one trust anchor per CA, one profile with the default role", async () => {
  const resolved = resolveEmulatorConfig(buildEmulatorConfig({ caCertificates: [(await ca()).pem] }));
  assert.equal(resolved.region, "us-east-1");
  assert.equal(resolved.accountId, "123456789012");
  assert.equal(resolved.trustAnchors.length, 1);
  assert.deepEqual(resolved.profiles.map((p) => [p.name, p.roleArns, p.durationSeconds, p.acceptRoleSessionName]), [["default", ["arn:aws:iam::123456789012:role/ra-agent-emulator"], 3600, false]]);
  assert.equal(resolved.host, "127.0.0.1");
  assert.equal(resolved.port, 0);
});

test("ARNs are derived stably: same set-up, same ARNs; another CA or name, another ARN", async () => {
  const other = await createCa({ name: "CN=another" });
  const a = resolveEmulatorConfig(buildEmulatorConfig({ caCertificates: [(await ca()).pem], trustAnchorNames: ["corp"] }));
  const b = resolveEmulatorConfig(buildEmulatorConfig({ caCertificates: [(await ca()).pem], trustAnchorNames: ["corp"] }));
  const c = resolveEmulatorConfig(buildEmulatorConfig({ caCertificates: [other.pem], trustAnchorNames: ["corp"] }));
  const d = resolveEmulatorConfig(buildEmulatorConfig({ caCertificates: [(await ca()).pem], trustAnchorNames: ["lab"] }));
  assert.equal(a.trustAnchors[0].arn, b.trustAnchors[0].arn);
  assert.equal(a.profiles[0].arn, b.profiles[0].arn);
  assert.notEqual(a.trustAnchors[0].arn, c.trustAnchors[0].arn);
  assert.notEqual(a.trustAnchors[0].arn, d.trustAnchors[0].arn);
  const region = resolveEmulatorConfig(buildEmulatorConfig({ caCertificates: [(await ca()).pem], region: "ap-southeast-2", accountId: "000011112222" }));
  assert.match(region.trustAnchors[0].arn, /^arn:aws:rolesanywhere:ap-southeast-2:000011112222:trust-anchor\//);
  assert.deepEqual(region.profiles[0].roleArns, ["arn:aws:iam::000011112222:role/ra-agent-emulator"]);
});

test("a PEM bundle with several CAs becomes one trust anchor holding all of them; DER is accepted", async () => {
  const other = await createCa({ name: "CN=second" });
  const resolved = resolveEmulatorConfig(buildEmulatorConfig({ caCertificates: [(await ca()).pem + other.pem, other.der] }));
  assert.deepEqual(resolved.trustAnchors.map((t) => t.certificates.length), [2, 1]);
});

test("refuses bad configurations with a message naming the field", async () => {
  const pem = (await ca()).pem;
  const base = (over: Partial<EmulatorConfig>): EmulatorConfig => ({ trustAnchors: [{ certificates: [pem] }], ...over });
  invalid(() => resolveEmulatorConfig({ trustAnchors: [] }), /no trust anchor is configured/);
  invalid(() => resolveEmulatorConfig(base({ region: "mars" })), /region "mars"/);
  invalid(() => resolveEmulatorConfig(base({ accountId: "12" })), /accountId "12"/);
  invalid(() => resolveEmulatorConfig(base({ port: 70000 })), /port must be an integer/);
  invalid(() => resolveEmulatorConfig(base({ profiles: [{ roleArns: [] }] })), /has no roleArns/);
  invalid(() => resolveEmulatorConfig(base({ profiles: [{ roleArns: ["arn:aws:iam::123456789012:user/u"] }] })), /is not an IAM role ARN/);
  invalid(() => resolveEmulatorConfig(base({ profiles: [{ roleArns: ["arn:aws:iam::123456789012:role/r"], durationSeconds: 60 }] })), /durationSeconds must be an integer from 900 to 43200/);
  invalid(() => resolveEmulatorConfig(base({ profiles: [{ roleArns: ["arn:aws:iam::123456789012:role/r"], arn: "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/00000000-0000-4000-8000-000000000000" }] })), /not in partition aws, region us-east-1/);
  invalid(() => resolveEmulatorConfig(base({ trustAnchors: [{ certificates: [pem], arn: "arn:aws:rolesanywhere:us-east-1:123456789012:profile/00000000-0000-4000-8000-000000000000" }] })), /is not a Roles Anywhere trust-anchor ARN/);
  invalid(() => resolveEmulatorConfig(base({ trustAnchors: [{ name: "x", certificates: [pem] }, { name: "x", certificates: [pem] }] })), /same name x/);
  invalid(() => resolveEmulatorConfig(base({ trustAnchors: [{ certificates: ["not pem"] }] })), /holds no PEM "CERTIFICATE" block/);
  invalid(() => resolveEmulatorConfig(base({ trustAnchors: [{ certificates: [pem], crls: ["-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"] }] })), /a CRL does not parse/);
  const keys = await generateKeyPair("EC-P256");
  const leaf = await issueCertificate(await ca(), keys.publicKey);
  invalid(() => resolveEmulatorConfig(base({ trustAnchors: [{ certificates: [leaf.toString("pem")] }] })), /is not a CA/);
});

test("the --config JSON file: relative paths, CRL files, every field", async () => {
  const tmp = tempDir();
  try {
    const root = await ca();
    writeFileSync(join(tmp.dir, "ca.pem"), root.pem);
    writeFileSync(join(tmp.dir, "ca.crl"), (await createCrl(root, ["0badc0de"])).toString("pem"));
    writeFileSync(join(tmp.dir, "ca.der"), root.der);
    const file = join(tmp.dir, "emulator.json");
    writeFileSync(
      file,
      JSON.stringify({
        region: "us-west-2",
        accountId: "111122223333",
        host: "127.0.0.1",
        port: 0,
        stsPort: 0,
        maxClockSkewSeconds: 120,
        trustAnchors: [
          { name: "corp", certificateFiles: ["ca.pem"], crlFiles: ["ca.crl"] },
          { name: "der", certificateFiles: ["ca.der"], enabled: false },
        ],
        profiles: [{ name: "ci", roleArns: ["arn:aws:iam::111122223333:role/ci"], durationSeconds: 43200, acceptRoleSessionName: true }],
      }),
    );
    const resolved = resolveEmulatorConfig(loadEmulatorConfigFile(file));
    assert.equal(resolved.region, "us-west-2");
    assert.equal(resolved.maxClockSkewSeconds, 120);
    assert.equal(resolved.trustAnchors[0].crls.length, 1);
    assert.equal(resolved.trustAnchors[1].enabled, false);
    assert.deepEqual([resolved.profiles[0].durationSeconds, resolved.profiles[0].acceptRoleSessionName], [43200, true]);
    assert.match(resolved.profiles[0].arn, /^arn:aws:rolesanywhere:us-west-2:111122223333:profile\//);

    invalid(() => parseEmulatorConfigJson({ trustAnchors: [], colour: "blue" }, tmp.dir), /unknown field "colour"/);
    invalid(() => parseEmulatorConfigJson({ trustAnchors: [{ certificateFile: "ca.pem" }] }, tmp.dir), /trustAnchors\[0\]: unknown field "certificateFile"/);
    invalid(() => parseEmulatorConfigJson({ trustAnchors: [{ certificateFiles: ["missing.pem"] }] }, tmp.dir), /cannot read CA certificate file .*missing\.pem: ENOENT/);
    invalid(() => parseEmulatorConfigJson({ trustAnchors: [], profiles: [{ roleArns: ["r"], durationSeconds: "1h" }] }, tmp.dir), /profiles\[0\]\.durationSeconds must be a number/);
    writeFileSync(join(tmp.dir, "broken.json"), "{ not json");
    invalid(() => loadEmulatorConfigFile(join(tmp.dir, "broken.json")), /is not valid JSON/);
  } finally {
    tmp.cleanup();
  }
});
