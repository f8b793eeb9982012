/**
 * The CLI on the virtual smart card, through OpenSC's module, as a user runs it
 * (child processes with the card's pcscd in their environment): credential-process
 * against the emulator trusting the card's CA, sign-string, read-certificate-data,
 * list; and a wrong PIN that costs exactly one try across two CLI runs (the
 * second is refused from the state directory before any C_Login).
 * Without the card's dependencies the tests are skipped, except with CI=true.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { verify, X509Certificate } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import type { RunningEmulator } from "../../src/emulator";
import { fixedTestString } from "../../src/sigv4x509/sign-string";
import { parsePkcs11Uri } from "../../src/uri/pkcs11-uri";
import type { InventoryJson } from "../../src/cli/format-inventory";
import { cardSkipReason, startCardFixture, type CardFixture } from "./card-fixture";
import { cleanEnv, privateDir, runCli, startCardEmulator, writePinFile } from "./card-e2e-helpers";

const skip = cardSkipReason();
const PIN_OK = "284617";
const PIN_BAD = "000000";

let fx: CardFixture;
let emu: RunningEmulator;
let dir: string;
let goodPin: string;
let badPin: string;

before(async () => {
  if (skip) return;
  dir = privateDir("ra-cli-card-");
  goodPin = writePinFile(join(dir, "pin"), PIN_OK);
  badPin = writePinFile(join(dir, "bad-pin"), PIN_BAD);
  fx = await startCardFixture({ pin: PIN_OK, maxTries: 3 });
  emu = await startCardEmulator(fx.card.caPem);
});

after(async () => {
  if (skip) return;
  await emu?.close();
  await fx?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The CLI's environment: the card, a PIN file, and a state directory of this file's own. */
function env(pinFile: string, stateDir = join(dir, "state")): NodeJS.ProcessEnv {
  return cleanEnv({ ...fx.card.env, RA_AGENT_PIN_FILE: pinFile, RA_AGENT_STATE_DIR: stateDir });
}

const arnFlags = () => ["--trust-anchor-arn", emu.trustAnchorArn, "--profile-arn", emu.profileArn, "--role-arn", emu.roleArns[0], "--endpoint", emu.endpoint];

test("credential-process on the card: valid credential_process JSON from the emulator, one login", { skip }, async () => {
  const before = fx.card.pinEvents();
  const sessions = emu.createSessionCount;
  const r = await runCli(["credential-process", "--pkcs11-lib", fx.card.modulePath, "--certificate", fx.card.key.certificateUri, ...arnFlags()], env(goodPin));
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(out.Version, 1);
  assert.match(String(out.AccessKeyId), /^ASIA/);
  assert.ok(typeof out.SecretAccessKey === "string" && out.SecretAccessKey.length > 0);
  assert.ok(typeof out.SessionToken === "string" && out.SessionToken.length > 0);
  assert.ok(Date.parse(String(out.Expiration)) > Date.now() + 15 * 60_000);
  assert.equal(emu.createSessionCount, sessions + 1);
  assert.equal(fx.card.pinEvents().verified - before.verified, 1, "one login");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });
  assert.ok(!r.stderr.includes(PIN_OK), "the PIN reached the output");
});

test("credential-process with the key URI given too (--private-key) works the same", { skip }, async () => {
  const r = await runCli(["credential-process", "--pkcs11-lib", fx.card.modulePath, "--certificate", fx.card.key.certificateUri, "--private-key", fx.card.key.keyUri, ...arnFlags()], env(goodPin));
  assert.equal(r.code, 0, r.stderr);
  assert.match(String((JSON.parse(r.stdout) as Record<string, unknown>).AccessKeyId), /^ASIA/);
});

test("sign-string on the card verifies with node:crypto against the card certificate", { skip }, async () => {
  const r = await runCli(["sign-string", "--pkcs11-lib", fx.card.modulePath, "--certificate", fx.card.key.certificateUri, "--format", "text"], env(goodPin));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^[0-9a-f]+$/);
  const cert = new X509Certificate(fx.card.key.certificatePem);
  assert.equal(r.stdout.length, 512, "an RSA-2048 signature");
  assert.ok(verify("sha256", fixedTestString(cert.publicKey), cert.publicKey, Buffer.from(r.stdout, "hex")), "the signature does not verify");
});

test("read-certificate-data with a pkcs11:token=... URI lists the card certificate with its URI", { skip }, async () => {
  const tokenUri = `pkcs11:token=${encodeURIComponent(fx.card.token.label)}`;
  const cert = new X509Certificate(fx.card.key.certificatePem);
  const json = await runCli(["read-certificate-data", "--pkcs11-lib", fx.card.modulePath, "--certificate", tokenUri, "--json"], env(goodPin));
  assert.equal(json.code, 0, json.stderr);
  const ids = JSON.parse(json.stdout) as Array<{ uri: string; subject: string; certificateData?: string }>;
  assert.equal(ids.length, 1, json.stdout);
  assert.equal(parsePkcs11Uri(ids[0].uri).token, fx.card.token.label);
  assert.match(ids[0].subject, new RegExp(fx.card.token.label));
  // The listed URI opens that certificate alone.
  const one = await runCli(["read-certificate-data", "--pkcs11-lib", fx.card.modulePath, "--certificate", ids[0].uri, "--json"], env(goodPin));
  assert.equal(one.code, 0, one.stderr);
  assert.equal((JSON.parse(one.stdout) as unknown[]).length, 1);

  const text = await runCli(["read-certificate-data", "--pkcs11-lib", fx.card.modulePath, "--certificate", tokenUri], env(goodPin));
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^Matching identities\n1\) Hex Fingerprint: [0-9a-f]{40}\n/);
  assert.ok(text.stdout.includes(cert.fingerprint.replace(/:/g, "").toLowerCase()), text.stdout);
  assert.ok(text.stdout.includes(`URI: ${ids[0].uri}`), text.stdout);
});

test("list --json shows the card token, its certificate and key", { skip }, async () => {
  const r = await runCli(["list", "--pkcs11-lib", fx.card.modulePath, "--json", "--login"], env(goodPin));
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as InventoryJson;
  const tokens = doc.modules.flatMap((m) => m.slots.flatMap((s) => (s.token ? [s.token] : [])));
  const token = tokens.find((t) => t.label === fx.card.token.label);
  assert.ok(token, `card token not listed: ${r.stdout.slice(0, 2000)}`);
  assert.equal(parsePkcs11Uri(token.uri).token, fx.card.token.label);
  const certDer = new X509Certificate(fx.card.key.certificatePem).raw.toString("base64");
  const cert = token.certificates.find((c) => c.derBase64 === certDer);
  assert.ok(cert, "the card certificate is listed");
  assert.ok(token.keys.length >= 1, "the card key is listed");
  const key = token.keys.find((k) => k.certificateUris.includes(cert.uri));
  assert.ok(key, "the key is matched to its certificate");
  assert.equal(cert.keyUri, key.uri);
  assert.match(key.uri, /^pkcs11:/);
});

test("a wrong PIN through the CLI spends exactly one try; a second run with it spends none (PKCS11_PIN_KNOWN_BAD)", { skip }, async () => {
  const stateDir = join(dir, "state-bad");
  assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });
  const before = fx.card.pinEvents();
  const args = ["credential-process", "--pkcs11-lib", fx.card.modulePath, "--certificate", fx.card.key.certificateUri, ...arnFlags()];
  const sessions = emu.createSessionCount;
  try {
    const first = await runCli(args, env(badPin, stateDir));
    assert.notEqual(first.code, 0);
    assert.match(first.stderr, /CKR_PIN_INCORRECT|PKCS11_PIN_INCORRECT/, first.stderr);
    // PKCS#11 gives no count, only flags: at two tries left OpenSC sets neither COUNT_LOW nor FINAL_TRY.
    assert.match(first.stderr, /tries (are )?left/i, first.stderr);
    assert.match(first.stderr, /never retries|will try this one again/i, first.stderr);
    assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 }, "exactly one try spent");
    assert.equal(fx.card.pinEvents().wrong - before.wrong, 1);

    const second = await runCli(args, env(badPin, stateDir));
    assert.notEqual(second.code, 0);
    assert.match(second.stderr, /was already rejected by token .*will not try it again/, second.stderr);
    assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 2 }, "no try spent on a PIN already refused");
    assert.equal(fx.card.pinEvents().wrong - before.wrong, 1, "the bad PIN never reached the card again");
    for (const r of [first, second]) assert.ok(!r.stderr.includes(PIN_BAD), "the PIN reached the output");
    assert.equal(emu.createSessionCount, sessions);

    // The right PIN still works (and resets the counter).
    const ok = await runCli(args, env(goodPin, stateDir));
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(fx.card.readPinCounter(), { maxTries: 3, triesLeft: 3 });
  } finally {
    if (fx.card.readPinCounter().triesLeft !== 3) {
      await fx.card.stopBridge();
      await fx.card.startBridge({ resetPinCounter: true });
    }
  }
});
