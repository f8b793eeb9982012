/**
 * The agent on a TPM token (swtpm + tpm2-pkcs11): the real `ra-agent agent`
 * child with a config whose profiles are `pkcs11:` URIs on the TPM, credentials
 * through `ra-agent credential-process --profile`, signing through the agent,
 * then the fault of issue 5: swtpm stops while the agent runs. Cached
 * credentials are still handed out, a signature fails fast with a token error
 * that /v1/status reports, and when swtpm comes back the agent recovers without
 * a restart and logs in exactly once more.
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
import type { ProvisionedTpm, ProvisionedTpmKey } from "../../scripts/tpm/provision";
import { testStateDir } from "../support/cli";
import { unixRequest, writeConfig } from "../agent/helpers";
import { cleanAwsEnv, startAgentProcess, type AgentProcess } from "../agent/world";
import { runCli } from "./cli";
import { startTpmFixture, tpmSkipReason, type TpmFixture } from "./tpm-fixture";

const skip = tpmSkipReason();
let fixture: TpmFixture | undefined;
let tpm: ProvisionedTpm;
let emu: RunningEmulator | undefined;
let dir: string;
let agent: AgentProcess | undefined;
let socket: string;

const quiet = { info() {}, warn() {}, error() {}, debug() {} } as never;

before(async () => {
  if (skip) return;
  // A PIN that cannot turn up in a log by chance (the default "1234" matches timestamps).
  fixture = await startTpmFixture({ pin: "Tq8pin-Zx" });
  tpm = fixture.tpm;
  dir = await mkdtemp(path.join(os.tmpdir(), "ra-agent-tpm-"));
  emu = await startEmulator(buildEmulatorConfig({ caCertificates: [tpm.caPem] }), { logger: quiet });
  const pinFile = path.join(dir, "pin");
  writeFileSync(pinFile, tpm.token.pin + "\n", { mode: 0o600 });
  const common = { pkcs11Lib: tpm.modulePath, pinFile, trustAnchorArn: emu.trustAnchorArn, profileArn: emu.profileArn, roleArn: emu.roleArns[0], endpoint: emu.endpoint, region: "us-east-1", allowSigning: true };
  // Two profiles on the same TPM token: they share its session pool and its single login.
  const configPath = writeConfig(dir, {
    profiles: [
      { name: "tpm-ec", certificate: key("EC").certificateUri, ...common },
      { name: "tpm-rsa", certificate: key("RSA").certificateUri, ...common },
    ],
  });
  socket = path.join(dir, "agent.sock");
  agent = await startAgentProcess(["--config", configPath, "--socket", socket, "--log-level", "debug"], agentEnv());
});

after(async () => {
  await agent?.stop();
  await emu?.close();
  await fixture?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function agentEnv(): NodeJS.ProcessEnv {
  return cleanAwsEnv(dir, { ...tpm.env, HOME: dir, RA_AGENT_STATE_DIR: testStateDir() });
}

function key(type: "RSA" | "EC"): ProvisionedTpmKey {
  const k = tpm.keys.find((x) => x.keyType === type);
  assert.ok(k, `the fixture has a ${type} key`);
  return k;
}

interface Creds {
  Version: number;
  AccessKeyId: string;
  SecretAccessKey: string;
  SessionToken: string;
  Expiration: string;
}

/** `ra-agent credential-process --profile NAME --socket S`: the agent's fast client. */
async function credentialsFromAgent(profile: string): Promise<Creds> {
  const r = await runCli(["credential-process", "--profile", profile, "--socket", socket], { HOME: dir, RA_AGENT_STATE_DIR: testStateDir() });
  assert.equal(r.code, 0, `credential-process --profile ${profile}: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as Creds;
  assert.equal(out.Version, 1);
  assert.match(out.AccessKeyId, /^ASIA[A-Z0-9]{16}$/);
  assert.ok(Date.parse(out.Expiration) > Date.now() + 15 * 60_000, `expiration ${out.Expiration}`);
  return out;
}

interface TokenStatus {
  present: boolean;
  loggedIn: boolean;
  label: string;
  loginAttempts: number;
  recoveries: number;
  lastError?: { code: string; message: string; at: string };
}

async function profileStatus(name: string): Promise<{ signer: string; token?: TokenStatus; cache: { state: string } }> {
  const r = await unixRequest(socket, "GET", "/v1/status");
  assert.equal(r.status, 200, r.body);
  const p = (JSON.parse(r.body) as { profiles: Array<{ name: string }> }).profiles.find((x) => x.name === name);
  assert.ok(p, `profile ${name} in ${r.body}`);
  return p as never;
}

/** A Roles Anywhere SigV4-X509 string to sign, dated now, for the key's algorithm. */
function stringToSign(type: "RSA" | "EC", tag: string): string {
  const amz = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const hex = Buffer.from(tag.padEnd(32, ".")).toString("hex").slice(0, 64);
  return `AWS4-X509-${type === "EC" ? "ECDSA" : "RSA"}-SHA256\n${amz}\n${amz.slice(0, 8)}/us-east-1/rolesanywhere/aws4_request\n${hex}`;
}

async function signThroughAgent(profile: string, sts: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await unixRequest(socket, "POST", `/v1/sign/${profile}`, { body: JSON.stringify({ stringToSign: sts }) });
  return { status: r.status, body: JSON.parse(r.body) as Record<string, unknown> };
}

function verifies(type: "RSA" | "EC", sts: string, signatureHex: string): boolean {
  const cert = new X509Certificate(key(type).certificatePem);
  return verify("sha256", Buffer.from(sts), { key: cert.publicKey, dsaEncoding: "der" }, Buffer.from(signatureHex, "hex"));
}

/** Debug lines of the PKCS#11 layer announcing a C_Login. */
function loginLines(): number {
  return (agent!.stderr().match(/logging in to token/g) ?? []).length;
}

let firstEc: Creds;
let firstRsa: Creds;

test("agent on the TPM: credentials through credential-process --profile, one login for both keys, signing", { skip }, async () => {
  firstEc = await credentialsFromAgent("tpm-ec");
  firstRsa = await credentialsFromAgent("tpm-rsa");
  assert.notEqual(firstEc.AccessKeyId, firstRsa.AccessKeyId);
  assert.equal(emu!.createSessionCount, 2, "one CreateSession per profile");
  // Asked again: the cache answers.
  assert.deepEqual(await credentialsFromAgent("tpm-ec"), firstEc);
  assert.equal(emu!.createSessionCount, 2);

  const ec = await profileStatus("tpm-ec");
  assert.equal(ec.signer, "open");
  assert.ok(ec.token, "token status for a pkcs11 profile");
  assert.equal(ec.token.present, true);
  assert.equal(ec.token.loggedIn, true);
  assert.equal(ec.token.label, tpm.token.label);
  assert.equal(ec.token.loginAttempts, 1, "one login");
  assert.equal((await profileStatus("tpm-rsa")).token?.loginAttempts, 1, "the RSA profile shares the token's login");
  assert.equal(loginLines(), 1, `one "logging in to token" line:\n${agent!.stderr()}`);

  for (const type of ["EC", "RSA"] as const) {
    const sts = stringToSign(type, `before-${type}`);
    const r = await signThroughAgent(type === "EC" ? "tpm-ec" : "tpm-rsa", sts);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(verifies(type, sts, r.body.signature as string), `${type} signature through the agent verifies`);
  }
});

test("swtpm stops: cached credentials still served; signing fails fast with a token error shown in /v1/status", { skip }, async (t) => {
  assert.ok(firstEc, "the first test ran");
  const created = emu!.createSessionCount;
  await tpm.stop();

  // The cache does not need the TPM.
  assert.deepEqual(await credentialsFromAgent("tpm-ec"), firstEc);
  assert.deepEqual(await credentialsFromAgent("tpm-rsa"), firstRsa);
  assert.equal(emu!.createSessionCount, created);

  // A signature needs the TPM: a clear token error (a hang would trip the test runner's timeout).
  const failed = await signThroughAgent("tpm-ec", stringToSign("EC", "while-down"));
  t.diagnostic(`sign while swtpm is stopped: HTTP ${failed.status} ${JSON.stringify(failed.body)}`);
  assert.ok(failed.status >= 500, `status ${failed.status}: ${JSON.stringify(failed.body)}`);
  const error = failed.body.error as { kind: string; code: string; message: string; hint?: string };
  assert.ok(error, JSON.stringify(failed.body));
  assert.equal(error.kind, "token", JSON.stringify(error));
  assert.match(error.code, /^PKCS11_/);
  assert.ok(error.hint, "the error names a fix");
  assert.ok(!JSON.stringify(error).includes(tpm.token.pin), "no PIN in the error");

  // A second request while the TPM is still away fails the same way, and the agent is alive.
  const again = await signThroughAgent("tpm-rsa", stringToSign("RSA", "still-down"));
  assert.ok(again.status >= 500, `status ${again.status}: ${JSON.stringify(again.body)}`);
  assert.equal((again.body.error as { kind: string }).kind, "token");

  const status = await profileStatus("tpm-ec");
  assert.ok(status.token, "token status is still reported");
  assert.equal(status.token.present, false, `the token is reported absent: ${JSON.stringify(status.token)}`);
  assert.ok(status.token.lastError, `the token error is in /v1/status: ${JSON.stringify(status.token)}`);
  assert.match(status.token.lastError.code, /^PKCS11_/);
  assert.equal(status.token.loginAttempts, 1, "no login attempt while the TPM is away");

  // And the cache still answers after the failures.
  assert.deepEqual(await credentialsFromAgent("tpm-ec"), firstEc);
  assert.equal((await unixRequest(socket, "GET", "/v1/health")).status, 200);
});

test("swtpm comes back: the agent recovers without a restart and logs in exactly once", { skip }, async () => {
  const before = await profileStatus("tpm-ec");
  assert.ok(before.token);
  const pid = agent!.child.pid;
  await tpm.start();

  const sts = stringToSign("EC", "after-restart");
  const r = await signThroughAgent("tpm-ec", sts);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.ok(verifies("EC", sts, r.body.signature as string), "the signature after the TPM came back verifies");
  // The other profile on the token works too, on the same new login.
  const stsRsa = stringToSign("RSA", "after-restart");
  const rsa = await signThroughAgent("tpm-rsa", stsRsa);
  assert.equal(rsa.status, 200, JSON.stringify(rsa.body));
  assert.ok(verifies("RSA", stsRsa, rsa.body.signature as string));
  // Several more signatures: still no more logins.
  for (let i = 0; i < 3; i++) assert.equal((await signThroughAgent("tpm-ec", stringToSign("EC", `more-${i}`))).status, 200);

  const after = await profileStatus("tpm-ec");
  assert.ok(after.token);
  assert.equal(after.token.present, true);
  assert.equal(after.token.loggedIn, true);
  assert.equal(after.token.loginAttempts, before.token.loginAttempts + 1, "exactly one new login after the TPM came back");
  assert.ok(after.token.recoveries > before.token.recoveries, "a recovery was recorded");
  assert.equal((await profileStatus("tpm-rsa")).token?.loginAttempts, after.token.loginAttempts, "one login for the whole token");
  assert.equal(loginLines(), 2, `exactly two "logging in to token" lines over the agent's life:\n${agent!.stderr()}`);
  assert.equal(agent!.child.pid, pid);
  assert.equal(agent!.child.exitCode, null, "the agent was not restarted");

  // Credentials are still the cached ones, and the log never carried a secret or the PIN.
  assert.deepEqual(await credentialsFromAgent("tpm-ec"), firstEc);
  const log = agent!.stderr();
  const secrets = { "EC secret key": firstEc.SecretAccessKey, "EC session token": firstEc.SessionToken, "RSA secret key": firstRsa.SecretAccessKey, "RSA session token": firstRsa.SessionToken, PIN: tpm.token.pin };
  for (const [what, secret] of Object.entries(secrets)) assert.ok(!log.includes(secret), `the ${what} reached the agent's log`);
  const code = await agent!.stop();
  agent = undefined;
  assert.equal(code, 0);
});
