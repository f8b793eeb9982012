import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadAgentConfig, parseAgentConfig } from "../../src/agent/config";
import { RaError } from "../../src/errors";
import { ARNS, tempDir, writeConfig } from "./helpers";

const P11 = "pkcs11:token=ra;object=prod";

function invalid(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof RaError, String(e));
    assert.equal(e.code, "AGENT_CONFIG_INVALID");
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

test("a minimal pkcs11 profile gets its defaults", () => {
  const c = parseAgentConfig({ profiles: [{ name: "prod", certificate: P11, ...ARNS }] }, "/etc/ra-agent/agent.json");
  assert.equal(c.profiles.length, 1);
  const p = c.profiles[0];
  assert.equal(p.durationSeconds, 3600);
  assert.equal(p.allowSigning, false);
  assert.equal(p.verifySsl, true);
  assert.equal(p.keepWarm, false);
  assert.equal(p.certificate, P11);
  assert.equal(c.serve, undefined);
});

test("every problem is listed with its field", () => {
  invalid(
    () =>
      parseAgentConfig(
        {
          profiles: [
            { name: "bad name", certificate: P11, trustAnchorArn: "arn:aws:iam::1:role/x", profileArn: ARNS.profileArn, durationSeconds: 60, pinfile: "/x" },
            { name: "ok", certificate: P11, ...ARNS, region: "Europe" },
            { name: "ok", certificate: P11, ...ARNS },
          ],
          extra: 1,
        },
        "/cfg.json",
      ),
    /profiles\[0\]\.name: "bad name" is not a valid profile name/,
    /profiles\[0\]\.trustAnchorArn: .* is not of the form arn:aws:rolesanywhere/,
    /profiles\[0\]\.roleArn: is required/,
    /profiles\[0\]\.durationSeconds: must be a whole number from 900 to 43200/,
    /profiles\[0\]\.pinfile: unknown field \(did you mean "pinFile"\?\)/,
    /profiles\[1\]\.region: "Europe" is not a region name/,
    /profiles\[2\]\.name: duplicate profile name "ok"/,
    /extra: unknown field/,
  );
});

test("secrets written inline are refused, with the alternative named", () => {
  invalid(() => parseAgentConfig({ profiles: [{ name: "a", certificate: P11, ...ARNS, pin: "1234" }] }, "/c.json"), /profiles\[0\]\.pin: secrets are not written in the config; use pinFile or pinEnv/);
});

test("pinEnv must name a set variable; pinFile must be private", () => {
  const { dir, cleanup } = tempDir();
  try {
    invalid(() => parseAgentConfig({ profiles: [{ name: "a", certificate: P11, ...ARNS, pinEnv: "RA_TEST_UNSET_PIN_VAR" }] }, join(dir, "c.json"), { env: {} }), /pinEnv: the environment variable RA_TEST_UNSET_PIN_VAR is not set/);
    const ok = parseAgentConfig({ profiles: [{ name: "a", certificate: P11, ...ARNS, pinEnv: "MY_PIN" }] }, join(dir, "c.json"), { env: { MY_PIN: "1" } });
    assert.equal(ok.profiles[0].pinEnv, "MY_PIN");
    const pin = join(dir, "pin");
    writeFileSync(pin, "1234\n");
    chmodSync(pin, 0o644);
    invalid(() => parseAgentConfig({ profiles: [{ name: "a", certificate: P11, ...ARNS, pinFile: "pin" }] }, join(dir, "c.json")), /pinFile: .* readable or writable by group or others \(mode 644\); run chmod 600/);
    chmodSync(pin, 0o600);
    const c = parseAgentConfig({ profiles: [{ name: "a", certificate: P11, ...ARNS, pinFile: "pin" }] }, join(dir, "c.json"));
    assert.equal(c.profiles[0].pinFile, pin, "relative to the config file's directory");
    invalid(() => parseAgentConfig({ profiles: [{ name: "a", certificate: P11, ...ARNS, pinFile: "pin", pinEnv: "X" }] }, join(dir, "c.json"), { env: { X: "1" } }), /give pinFile or pinEnv, not both/);
  } finally {
    cleanup();
  }
});

test("${VAR} in paths is expanded (systemd LoadCredential); unset variables are reported", () => {
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(join(dir, "pin"), "1234");
    chmodSync(join(dir, "pin"), 0o400);
    const c = parseAgentConfig({ profiles: [{ name: "a", certificate: P11, ...ARNS, pinFile: "${CREDENTIALS_DIRECTORY}/pin" }] }, "/x/c.json", { env: { CREDENTIALS_DIRECTORY: dir } });
    assert.equal(c.profiles[0].pinFile, join(dir, "pin"));
    invalid(() => parseAgentConfig({ profiles: [{ name: "a", certificate: P11, ...ARNS, pinFile: "${CREDENTIALS_DIRECTORY}/pin" }] }, "/x/c.json", { env: {} }), /uses \$\{CREDENTIALS_DIRECTORY\}, which is not set/);
  } finally {
    cleanup();
  }
});

test("file keys need both files, which must exist", () => {
  const { dir, cleanup } = tempDir();
  try {
    invalid(() => parseAgentConfig({ profiles: [{ name: "a", certificate: "cert.pem", ...ARNS }] }, join(dir, "c.json")), /profiles\[0\]\.certificate: .*cert\.pem: no such file/, /profiles\[0\]\.privateKey: required when the certificate is a file/);
    invalid(() => parseAgentConfig({ profiles: [{ name: "a", certificate: P11, privateKey: "/k.pem", ...ARNS }] }, join(dir, "c.json")), /privateKey: must be a pkcs11: URI when the certificate is one/);
  } finally {
    cleanup();
  }
});

test("serve: loopback only, names a configured profile", () => {
  invalid(() => parseAgentConfig({ profiles: [{ name: "a", certificate: P11, ...ARNS }], serve: { profile: "b", host: "0.0.0.0" } }, "/c.json"), /serve\.host: must be a loopback address/, /serve\.profile: no profile is named "b"/);
  const c = parseAgentConfig({ profiles: [{ name: "a", certificate: P11, ...ARNS }], serve: { profile: "a", ecsTokenFile: "/run/ra/ecs-token" } }, "/c.json");
  assert.deepEqual(c.serve, { profile: "a", port: 9911, host: "127.0.0.1", hopLimit: 64, imds: true, ecsTokenFile: "/run/ra/ecs-token" });
});

test("loadAgentConfig: unreadable file and JSON syntax errors are named", () => {
  const { dir, cleanup } = tempDir();
  try {
    assert.throws(() => loadAgentConfig(join(dir, "none.json")), (e: unknown) => e instanceof RaError && e.code === "AGENT_CONFIG_UNREADABLE" && /no such file/.test(e.message));
    writeFileSync(join(dir, "bad.json"), "{ profiles: [] }");
    assert.throws(() => loadAgentConfig(join(dir, "bad.json")), (e: unknown) => e instanceof RaError && e.code === "AGENT_CONFIG_SYNTAX");
    const path = writeConfig(dir, { version: 1, profiles: [{ name: "a", certificate: P11, ...ARNS }] });
    assert.equal(loadAgentConfig(path).profiles[0].name, "a");
  } finally {
    cleanup();
  }
});
