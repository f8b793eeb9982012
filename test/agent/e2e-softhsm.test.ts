/**
 * End to end with a key generated inside a SoftHSM token: the real CLI agent,
 * the real emulator, the AWS CLI through credential_process, single flight under
 * 200 concurrent clients, token status and key listing, signing through the
 * agent, and a wrong PIN that is tried exactly once until a reload.
 * Without SoftHSM the test is skipped, except in CI where it fails.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, verify, X509Certificate } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { unixRequest, tempDir, writeConfig } from "./helpers";
import { CLI, cleanAwsEnv, run, softhsmAvailable, softhsmToken, startAgentProcess, startWorld, SOFTHSM_MODULE } from "./world";

const available = softhsmAvailable();

test("agent with a SoftHSM key: one login, single flight, AWS CLI, status, keys, signing", { skip: !available && "SoftHSM not installed" }, async () => {
  const { dir, cleanup } = tempDir();
  const world = await startWorld(dir);
  try {
    const token = await softhsmToken(world, { pin: "Zq7pin-Wx" });
    const pinFile = join(dir, "pin");
    writeFileSync(pinFile, token.pin + "\n", { mode: 0o600 });
    const configPath = writeConfig(dir, {
      profiles: [{ name: "hsm", certificate: token.uri, pkcs11Lib: SOFTHSM_MODULE, pinFile, ...world.arns, endpoint: world.endpoint, region: "us-east-1", allowSigning: true }],
    });
    const socket = join(dir, "agent.sock");
    const agent = await startAgentProcess(["--config", configPath, "--socket", socket, "--log-level", "debug"], { ...token.env });
    let stopped = false;
    try {
      // 200 clients at once on a cold cache: one CreateSession, one login.
      const answers = await Promise.all(Array.from({ length: 200 }, () => unixRequest(socket, "GET", "/v1/credentials/hsm")));
      for (const a of answers) assert.equal(a.status, 200, a.body);
      assert.equal(new Set(answers.map((a) => a.body)).size, 1);
      assert.equal(world.emulator.createSessionCount, 1);
      const creds = JSON.parse(answers[0].body);

      // The AWS CLI through credential_process = ra-agent credential-process --profile (the agent's fast client).
      const awsConfig = join(dir, "aws-config");
      writeFileSync(awsConfig, `[profile hsm]\ncredential_process = ${process.execPath} ${CLI} credential-process --profile hsm --socket ${socket}\n`);
      const aws = await run("aws", ["--profile", "hsm", "--endpoint-url", world.stsEndpoint, "sts", "get-caller-identity"], { env: cleanAwsEnv(dir, { AWS_CONFIG_FILE: awsConfig }) });
      assert.equal(aws.status, 0, aws.stderr);
      assert.match(aws.stdout, /assumed-role/);
      assert.equal(world.emulator.createSessionCount, 1, "the AWS CLI got the cached credentials");

      // Status: token present and logged in, once.
      const status = JSON.parse((await unixRequest(socket, "GET", "/v1/status")).body);
      const p = status.profiles[0];
      assert.equal(p.keySource, "pkcs11");
      assert.equal(p.hardwareBacked, true);
      assert.equal(p.token.present, true);
      assert.equal(p.token.loggedIn, true);
      assert.equal(p.token.label, token.label);
      assert.equal(p.token.loginAttempts, 1);

      // Keys: the key and the certificate with their exact URIs.
      const keys = JSON.parse((await unixRequest(socket, "GET", "/v1/keys")).body).profiles[0].keys;
      assert.ok(keys.some((k: { type: string; uri: string }) => k.type === "private-key" && k.uri.includes("type=private")));
      assert.ok(keys.some((k: { type: string; subject?: string }) => k.type === "certificate" && k.subject === "CN=agent-softhsm"));

      // Signing a SigV4-X509 string to sign on the token.
      const amz = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
      const sts = `AWS4-X509-ECDSA-SHA256\n${amz}\n${amz.slice(0, 8)}/us-east-1/rolesanywhere/aws4_request\n${"c".repeat(64)}`;
      const signed = await unixRequest(socket, "POST", "/v1/sign/hsm", { body: JSON.stringify({ stringToSign: sts }) });
      assert.equal(signed.status, 200, signed.body);
      const der = await readTokenCertificate(token.env, token.label);
      const pub = createPublicKey(new X509Certificate(der).publicKey.export({ type: "spki", format: "pem" }));
      assert.ok(verify("sha256", Buffer.from(sts), pub, Buffer.from(JSON.parse(signed.body).signature, "hex")));

      const code = await agent.stop();
      stopped = true;
      assert.equal(code, 0);
      const log = agent.stderr();
      for (const secret of [creds.SecretAccessKey, creds.SessionToken]) assert.ok(!log.includes(secret), "a secret reached the log");
      assert.ok(!log.includes(token.pin), "the PIN reached the log");
    } finally {
      if (!stopped) await agent.stop();
    }
  } finally {
    await world.close();
    cleanup();
  }
});

test("a wrong PIN is tried once; the agent waits for a reload, then logs in", { skip: !available && "SoftHSM not installed" }, async () => {
  const { dir, cleanup } = tempDir();
  const world = await startWorld(dir);
  try {
    const token = await softhsmToken(world, { pin: "Rt5pin-Qa" });
    const pinFile = join(dir, "pin");
    writeFileSync(pinFile, "Wrong-pin-9", { mode: 0o600 });
    const configPath = writeConfig(dir, { profiles: [{ name: "hsm", certificate: token.uri, pkcs11Lib: SOFTHSM_MODULE, pinFile, ...world.arns, endpoint: world.endpoint, region: "us-east-1" }] });
    const socket = join(dir, "agent.sock");
    const agent = await startAgentProcess(["--config", configPath, "--socket", socket, "--log-level", "debug"], { ...token.env });
    try {
      const first = await unixRequest(socket, "GET", "/v1/credentials/hsm");
      assert.equal(first.status, 503);
      const e = JSON.parse(first.body).error;
      assert.equal(e.kind, "pin");
      assert.equal(e.code, "PKCS11_PIN_INCORRECT");
      // The PIN file is corrected, but the agent does not try again by itself.
      writeFileSync(pinFile, token.pin);
      for (let i = 0; i < 3; i++) {
        const again = await unixRequest(socket, "GET", "/v1/credentials/hsm");
        assert.equal(again.status, 503);
        assert.equal(JSON.parse(again.body).error.kind, "pin");
      }
      assert.equal(JSON.parse((await unixRequest(socket, "GET", "/v1/status")).body).profiles[0].signer, "pin-blocked");
      assert.equal(world.emulator.createSessionCount, 0);
      // SIGHUP: the profile gets one new chance, with the corrected PIN.
      agent.child.kill("SIGHUP");
      for (let i = 0; i < 100 && !agent.stderr().includes("configuration reloaded"); i++) await new Promise((r) => setTimeout(r, 50));
      const ok = await unixRequest(socket, "GET", "/v1/credentials/hsm");
      assert.equal(ok.status, 200, ok.body);
      const log = agent.stderr();
      assert.ok(!log.includes("Wrong-pin-9") && !log.includes(token.pin), "a PIN reached the log");
    } finally {
      await agent.stop();
    }
  } finally {
    await world.close();
    cleanup();
  }
});

async function readTokenCertificate(env: NodeJS.ProcessEnv, label: string): Promise<Buffer> {
  const { spawnSync } = await import("node:child_process");
  const r = spawnSync("pkcs11-tool", ["--module", SOFTHSM_MODULE, "--token-label", label, "--read-object", "--type", "cert", "--id", "01"], { env });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout;
}
