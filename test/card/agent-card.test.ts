/**
 * The agent (`ra-agent agent --config`, a child process) on the virtual smart card
 * through OpenSC: credentials through `credential-process --profile`, signing;
 * PIN safety on a card that counts (one try at start with a wrong PIN, none at
 * later requests, refreshes or a restart, one login after the PIN file is fixed
 * and SIGHUP; no login at the final try); card removal (cached credentials still
 * served, signing fails with a clear error, one login when the card is back, no
 * restart). The counter is read from the card itself.
 * Without the card's dependencies the tests are skipped, except with CI=true.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { verify, X509Certificate } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { RunningEmulator } from "../../src/emulator";
import { unixRequest, writeConfig } from "../agent/helpers";
import { startAgentProcess, type AgentProcess } from "../agent/world";
import { cardSkipReason, startCardFixture, type CardFixture } from "./card-fixture";
import { cleanEnv, privateDir, runCli, startCardEmulator, stringToSign, writePinFile } from "./card-e2e-helpers";

const skip = cardSkipReason();
const PIN_OK = "739154";
const PIN_BAD = "000000";

let fx: CardFixture;
let emu: RunningEmulator;
let dir: string;
/** Shared by every agent run in this file: rejected PINs are remembered here across restarts. */
let stateDir: string;
const agents: AgentProcess[] = [];

before(async () => {
  if (skip) return;
  dir = privateDir("ra-agent-card-");
  stateDir = join(dir, "state");
  fx = await startCardFixture({ pin: PIN_OK, maxTries: 3 });
  emu = await startCardEmulator(fx.card.caPem);
});

after(async () => {
  if (skip) return;
  for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) await a.stop();
  await emu?.close();
  await fx?.close();
  rmSync(dir, { recursive: true, force: true });
});

function agentEnv(): NodeJS.ProcessEnv {
  return cleanEnv({ ...fx.card.env, RA_AGENT_STATE_DIR: stateDir });
}

/** Writes an agent config with one card profile, `card`. */
function cardConfig(name: string, pinFile: string, extra: Record<string, unknown> = {}): string {
  return writeConfig(dir, {
    profiles: [
      {
        name: "card",
        certificate: fx.card.key.certificateUri,
        pkcs11Lib: fx.card.modulePath,
        pinFile,
        trustAnchorArn: emu.trustAnchorArn,
        profileArn: emu.profileArn,
        roleArn: emu.roleArns[0],
        endpoint: emu.endpoint,
        region: "us-east-1",
        ...extra,
      },
    ],
  }, `${name}.json`);
}

async function startAgent(configPath: string, socket: string): Promise<AgentProcess> {
  const agent = await startAgentProcess(["--config", configPath, "--socket", socket, "--log-level", "debug"], agentEnv());
  agents.push(agent);
  return agent;
}

async function status(socket: string): Promise<ProfileStatus> {
  const r = await unixRequest(socket, "GET", "/v1/status");
  assert.equal(r.status, 200, r.body);
  return (JSON.parse(r.body) as { profiles: ProfileStatus[] }).profiles[0];
}

interface ProfileStatus {
  signer: string;
  token?: { present: boolean; loggedIn: boolean; label: string; loginAttempts: number; lastError?: { code?: string; message?: string } };
  cache: { state: string; consecutiveFailures?: number; lastError?: { code: string } };
  lastSignerError?: { code: string; kind: string; message: string };
}

/** Polls until `cond` holds (no time limit is asserted; the test runner's timeout applies). */
async function until<T>(what: string, probe: () => Promise<T>, cond: (v: T) => boolean, tries = 400): Promise<T> {
  let last: T | undefined;
  for (let i = 0; i < tries; i++) {
    last = await probe();
    if (cond(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`${what}: never happened; last: ${JSON.stringify(last)}`);
}

async function credentials(socket: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await unixRequest(socket, "GET", "/v1/credentials/card");
  return { status: r.status, body: JSON.parse(r.body) as Record<string, unknown> };
}

async function sign(socket: string, seed: string): Promise<{ status: number; body: Record<string, unknown>; sts: string }> {
  const sts = stringToSign(seed);
  const r = await unixRequest(socket, "POST", "/v1/sign/card", { body: JSON.stringify({ stringToSign: sts }) });
  return { status: r.status, body: JSON.parse(r.body) as Record<string, unknown>, sts };
}

function verifiesWithCard(sts: string, signatureHex: string): boolean {
  const cert = new X509Certificate(fx.card.key.certificatePem);
  return verify("sha256", Buffer.from(sts), cert.publicKey, Buffer.from(signatureHex, "hex"));
}

async function resetCard(): Promise<void> {
  await fx.card.stopBridge();
  await fx.card.startBridge({ resetPinCounter: true });
}

test("agent on the card: credentials through credential-process --profile, signing; card pulled out and put back", { skip }, async () => {
  const pinFile = writePinFile(join(dir, "pin-ok"), PIN_OK);
  const socket = join(dir, "a1.sock");
  const agent = await startAgent(cardConfig("a1", pinFile, { allowSigning: true }), socket);
  const logins0 = fx.card.pinEvents().verified;

  // credential-process --profile: the agent's client, as in an AWS config.
  const cli = await runCli(["credential-process", "--profile", "card", "--socket", socket], agentEnv());
  assert.equal(cli.code, 0, cli.stderr);
  const creds = JSON.parse(cli.stdout) as Record<string, unknown>;
  assert.equal(creds.Version, 1);
  assert.match(String(creds.AccessKeyId), /^ASIA/);
  assert.ok(Date.parse(String(creds.Expiration)) > Date.now() + 15 * 60_000);
  const again = await runCli(["credential-process", "--profile", "card", "--socket", socket], agentEnv());
  assert.equal(again.code, 0, again.stderr);
  assert.equal((JSON.parse(again.stdout) as Record<string, unknown>).AccessKeyId, creds.AccessKeyId, "served from the cache");
  assert.equal(emu.createSessionCount, 1);

  const signed = await sign(socket, "card in");
  assert.equal(signed.status, 200, JSON.stringify(signed.body));
  assert.equal(signed.body.algorithm, "AWS4-X509-RSA-SHA256");
  assert.ok(verifiesWithCard(signed.sts, String(signed.body.signature)), "the agent's signature verifies with the card certificate");
  assert.equal(fx.card.pinEvents().verified - logins0, 1, "one login for credentials and signing");
  const st = await status(socket);
  assert.equal(st.signer, "open");
  assert.equal(st.token?.present, true);
  assert.equal(st.token?.loggedIn, true);
  assert.equal(st.token?.label, fx.card.token.label);

  // The card is pulled out while the agent runs.
  const loginsBefore = fx.card.pinEvents().verified;
  await fx.card.stopBridge();
  // Status looks at the token itself (on the PKCS#11 thread): absent at once, before any signature notices.
  const pulled = await status(socket);
  assert.equal(pulled.token?.present, false, `status right after the card was pulled: ${JSON.stringify(pulled.token)}`);
  const cached = await credentials(socket);
  assert.equal(cached.status, 200, JSON.stringify(cached.body));
  assert.equal(cached.body.AccessKeyId, creds.AccessKeyId, "cached credentials still served with the card out");
  const cachedCli = await runCli(["credential-process", "--profile", "card", "--socket", socket], agentEnv());
  assert.equal(cachedCli.code, 0, cachedCli.stderr);
  assert.equal((JSON.parse(cachedCli.stdout) as Record<string, unknown>).AccessKeyId, creds.AccessKeyId);

  const out = await sign(socket, "card out");
  assert.notEqual(out.status, 200);
  const error = out.body.error as { kind: string; code: string; message: string; hint?: string };
  assert.equal(error.kind, "token", JSON.stringify(out.body));
  assert.equal(error.code, "PKCS11_TOKEN_NOT_PRESENT", JSON.stringify(out.body));
  assert.match(error.message, /not present/);
  // Asking again while it is out: the same clear error.
  const out2 = await sign(socket, "still out");
  assert.equal((out2.body.error as { code: string }).code, "PKCS11_TOKEN_NOT_PRESENT", JSON.stringify(out2.body));

  // Status shows the token problem.
  const gone = await status(socket);
  assert.notEqual(gone.signer, "pin-blocked", "a missing card is not a PIN problem");
  assert.ok(gone.token, `status has no token section: ${JSON.stringify(gone)}`);
  assert.equal(gone.token.present, false, `status while the card is out: ${JSON.stringify(gone.token)}`);
  assert.equal(fx.card.pinEvents().verified, loginsBefore, "no login while the card is out");

  // The card comes back: the agent works again without a restart, with one new login.
  await fx.card.startBridge();
  const back = await sign(socket, "card back");
  assert.equal(back.status, 200, JSON.stringify(back.body));
  assert.ok(verifiesWithCard(back.sts, String(back.body.signature)));
  const back2 = await sign(socket, "card back 2");
  assert.equal(back2.status, 200, JSON.stringify(back2.body));
  assert.equal(fx.card.pinEvents().verified - loginsBefore, 1, "exactly one new login after the card came back");
  const present = await status(socket);
  assert.equal(present.token?.present, true);
  assert.equal(present.token?.loggedIn, true);
  assert.equal((await credentials(socket)).body.AccessKeyId, creds.AccessKeyId);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });

  assert.equal(await agent.stop(), 0);
  assert.ok(!agent.stderr().includes(PIN_OK), "the PIN reached the log");
  assert.ok(!agent.stderr().includes(String(creds.SecretAccessKey)), "a secret reached the log");
});

test("agent with a wrong PIN: one try at start, none at requests, refreshes or a restart; fixed PIN + SIGHUP: one login", { skip }, async () => {
  await resetCard();
  const pinFile = writePinFile(join(dir, "pin-agent"), PIN_BAD);
  const configPath = cardConfig("a2", pinFile, { keepWarm: true, allowSigning: true });
  const socket = join(dir, "a2.sock");
  const events0 = fx.card.pinEvents();
  const sessions0 = emu.createSessionCount;

  let agent = await startAgent(configPath, socket);
  let st = await until("the agent's start-up login fails", () => status(socket), (s) => s.signer === "pin-blocked");
  assert.equal(st.lastSignerError?.code, "PKCS11_PIN_INCORRECT", JSON.stringify(st));
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 }, "exactly one try spent at start");
  assert.equal(fx.card.pinEvents().wrong - events0.wrong, 1);
  assert.equal(st.cache.state, "disabled", "refreshes stopped until a reload");

  // Later requests: credentials, the CLI client, signing: refused without touching the card.
  for (let i = 0; i < 3; i++) {
    const r = await credentials(socket);
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.equal((r.body.error as { kind: string }).kind, "pin");
  }
  const cli = await runCli(["credential-process", "--profile", "card", "--socket", socket], agentEnv());
  assert.notEqual(cli.code, 0);
  assert.match(cli.stderr, /PIN/, cli.stderr);
  assert.match(cli.stderr, /SIGHUP|reload/, cli.stderr);
  const s = await sign(socket, "wrong pin");
  assert.notEqual(s.status, 200);
  assert.equal((s.body.error as { kind: string }).kind, "pin", JSON.stringify(s.body));
  st = await status(socket);
  assert.equal(st.signer, "pin-blocked");
  assert.equal(st.cache.state, "disabled", "no refresh attempt is scheduled");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 }, "no try spent by requests");
  assert.equal(fx.card.pinEvents().wrong - events0.wrong, 1);

  // A restart with the same bad PIN: refused from the state directory, before any C_Login.
  assert.equal(await agent.stop(), 0);
  agent = await startAgent(configPath, socket);
  st = await until("the restarted agent refuses the PIN", () => status(socket), (x) => x.signer === "pin-blocked");
  assert.equal(st.lastSignerError?.code, "PKCS11_PIN_KNOWN_BAD", JSON.stringify(st));
  assert.equal((await credentials(socket)).status, 503);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 }, "no try spent after a restart");
  assert.equal(fx.card.pinEvents().wrong - events0.wrong, 1, "the bad PIN never reached the card again");
  assert.equal(emu.createSessionCount, sessions0);

  // The PIN file is fixed: nothing happens until SIGHUP, then one login.
  writeFileSync(pinFile, PIN_OK + "\n");
  assert.equal((await credentials(socket)).status, 503, "no retry without a reload");
  assert.equal(fx.card.pinEvents().verified, events0.verified);
  agent.child.kill("SIGHUP");
  const ok = await until("credentials after SIGHUP", () => credentials(socket), (r) => r.status === 200);
  assert.match(String(ok.body.AccessKeyId), /^ASIA/);
  const signed = await sign(socket, "fixed pin");
  assert.equal(signed.status, 200, JSON.stringify(signed.body));
  assert.ok(verifiesWithCard(signed.sts, String(signed.body.signature)));
  assert.equal(fx.card.pinEvents().verified - events0.verified, 1, "one login after the reload");
  assert.equal(fx.card.pinEvents().wrong - events0.wrong, 1);
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });
  st = await status(socket);
  assert.equal(st.signer, "open");
  assert.equal(await agent.stop(), 0);
  for (const pin of [PIN_OK, PIN_BAD]) assert.ok(!agent.stderr().includes(pin), "a PIN reached the log");
});

test("agent at the card's final try: no login on its own, counter unchanged", { skip }, async () => {
  await fx.card.stopBridge();
  await fx.card.startBridge({ triesLeft: 1 });
  try {
    const pinFile = writePinFile(join(dir, "pin-final"), PIN_OK);
    const socket = join(dir, "a3.sock");
    const before = fx.card.pinEvents();
    const agent = await startAgent(cardConfig("a3", pinFile, { keepWarm: true }), socket);
    const st = await until("the agent refuses the final try", () => status(socket), (s) => s.signer === "pin-blocked");
    assert.equal(st.lastSignerError?.code, "PKCS11_PIN_FINAL_TRY", JSON.stringify(st));
    assert.match(st.lastSignerError?.message ?? "", /final|one (PIN )?try left/i);
    const r = await credentials(socket);
    assert.equal(r.status, 503);
    const e = r.body.error as { kind: string; code: string; message: string };
    assert.equal(e.kind, "pin");
    assert.equal(e.code, "PKCS11_PIN_FINAL_TRY");
    assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 1 }, "counter unchanged");
    assert.deepEqual(fx.card.pinEvents(), before, "no VERIFY with a PIN reached the card");
    assert.equal(await agent.stop(), 0);
  } finally {
    await resetCard();
  }
});
