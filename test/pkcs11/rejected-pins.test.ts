/**
 * Rejected PINs are remembered across processes: a PIN that a token refused in one
 * process (here a child `ra-agent credential-process`, as an SDK runs it once per
 * AWS call) is refused in the next process before any C_Login; a PIN that works
 * clears the token's records; a record file with loose modes or another owner is
 * not trusted.
 *
 * The witness that no C_Login happened is SoftHSM itself: it sets
 * CKF_USER_PIN_COUNT_LOW in its token file after every failed login and clears it
 * at the next good one. Between the steps the flag is cleared by a good login made
 * outside ra-agent (which leaves ra-agent's records alone), so a flag still clear
 * after a run proves that run spent no wrong PIN on the token.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";
import { stateDir as resolveStateDir } from "../../src/signer/pkcs11/rejected-pins";

/** The CLI compiled next to this test (not bin/ra-agent, which runs dist/). */
const CLI_MAIN = join(__dirname, "..", "..", "src", "cli", "main.js");

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI_MAIN, ...args], { env: { PATH: process.env.PATH, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as unknown as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.end();
  });
}

/** ARNs and a closed loopback endpoint: the runs below fail at the PIN, before any network call. */
const SESSION_FLAGS = [
  "--trust-anchor-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/0b8c4e5f-0000-4000-8000-000000000001",
  "--profile-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:profile/0b8c4e5f-0000-4000-8000-000000000002",
  "--role-arn", "arn:aws:iam::123456789012:role/ra-agent-test",
  "--endpoint", "http://127.0.0.1:9",
];

describe("rejected PINs across processes (SoftHSM)", needsSoftHsm(), () => {
  let hsm: TestHsm;
  let work: string;
  let state: string;
  let home: string;
  const token = () => hsm.tokens[0];
  const certUri = () => token().keys[0].certificateUri!;
  const recordFile = () => join(state, "rejected-pins.json");

  before(async () => {
    hsm = await provisionTestHsm([{ label: "rejected", keys: [{ label: "k", keyType: "EC-P256" }] }]);
    work = mkdtempSync(join(tmpdir(), "ra-agent-rejected-"));
    state = join(work, "state");
    home = join(work, "home");
    mkdirSync(home);
  });
  after(() => {
    hsm?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  function pinFile(name: string, pin: string): string {
    const path = join(work, name);
    writeFileSync(path, pin + "\n", { mode: 0o600 });
    return path;
  }

  function env(pinPath: string): Record<string, string> {
    return { SOFTHSM2_CONF: hsm.softhsmConf, HOME: home, RA_AGENT_STATE_DIR: state, RA_AGENT_PIN_FILE: pinPath };
  }

  const credentialProcess = (pinPath: string) => runCli(["credential-process", "--certificate", certUri(), "--pkcs11-lib", hsm.modulePath, ...SESSION_FLAGS], env(pinPath));
  const signString = (pinPath: string) => runCli(["sign-string", "--certificate", certUri(), "--pkcs11-lib", hsm.modulePath], env(pinPath));

  /**
   * SoftHSM's view of the token from a fresh process (a long-lived one may cache it):
   * whether a failed C_Login happened since the last good one. With `goodLogin`, first
   * logs in with the right PIN outside ra-agent, which clears the flag.
   */
  function tokenCountLow(goodLogin = false): boolean {
    const script = `
      const p = require(${JSON.stringify(require.resolve("pkcs11js"))});
      const m = new p.PKCS11(); m.load(${JSON.stringify(hsm.modulePath)}); m.C_Initialize({ flags: p.CKF_OS_LOCKING_OK });
      const slot = m.C_GetSlotList(true).find((s) => m.C_GetTokenInfo(s).serialNumber.trim() === ${JSON.stringify(token().serial)});
      if (process.env.GOOD_LOGIN) {
        const s = m.C_OpenSession(slot, p.CKF_SERIAL_SESSION);
        m.C_Login(s, p.CKU_USER, require("fs").readFileSync(0, "utf8"));
        m.C_Logout(s); m.C_CloseSession(s);
      }
      process.stdout.write(String((m.C_GetTokenInfo(slot).flags & p.CKF_USER_PIN_COUNT_LOW) !== 0));
      m.C_Finalize();`;
    const out = execFileSync(process.execPath, ["-e", script], {
      env: { PATH: process.env.PATH, SOFTHSM2_CONF: hsm.softhsmConf, ...(goodLogin ? { GOOD_LOGIN: "1" } : {}) },
      input: goodLogin ? token().pin : "", // on stdin, never argv
    });
    return out.toString() === "true";
  }

  function recordsFor(label: string): unknown[] {
    const doc = JSON.parse(readFileSync(recordFile(), "utf8")) as { tokens: Array<{ label: string; rejected: unknown[] }> };
    return doc.tokens.find((t) => t.label === label)?.rejected ?? [];
  }

  test("a PIN refused in one credential-process run is not tried by the next one; a good PIN clears the record", async () => {
    const wrong = pinFile("wrong.pin", "31415926");
    assert.equal(tokenCountLow(), false);

    // Process A: one C_Login, refused.
    const a = await credentialProcess(wrong);
    assert.equal(a.code, 4, a.stderr);
    assert.match(a.stderr, /C_Login returned CKR_PIN_INCORRECT/);
    assert.equal(a.stdout, "");
    assert.equal(tokenCountLow(), true, "process A made one failed C_Login");

    // The record: private directory and file, no PIN in it.
    assert.equal(statSync(state).mode & 0o777, 0o700);
    assert.equal(statSync(recordFile()).mode & 0o777, 0o600);
    assert.equal(statSync(join(state, "rejected-pins.key")).mode & 0o777, 0o600);
    assert.doesNotMatch(readFileSync(recordFile(), "utf8"), /31415926/);
    assert.equal(recordsFor("rejected").length, 1);

    // Clear SoftHSM's failure flag outside ra-agent: ra-agent's record stays.
    assert.equal(tokenCountLow(true), false);
    assert.equal(recordsFor("rejected").length, 1);

    // Process B, same wrong PIN: refused before any C_Login.
    const b = await credentialProcess(wrong);
    assert.equal(b.code, 4, b.stderr);
    assert.match(b.stderr, /this PIN \(from RA_AGENT_PIN_FILE .*wrong\.pin\) was already rejected by token "rejected" .* at \d{4}-\d\d-\d\dT[\d:]+Z; ra-agent will not try it again/);
    assert.ok(b.stderr.includes(`or delete ${recordFile()}`), b.stderr);
    assert.doesNotMatch(b.stderr, /CKR_PIN_INCORRECT/);
    assert.doesNotMatch(b.stderr + b.stdout, /31415926/);
    assert.equal(tokenCountLow(), false, "process B made no C_Login with the rejected PIN");

    // The corrected PIN works (another process again) and clears the token's records.
    const good = await signString(pinFile("good.pin", token().pin));
    assert.equal(good.code, 0, good.stderr);
    assert.deepEqual(recordsFor("rejected"), []);

    // With the record gone, the old wrong PIN is a new attempt again: one C_Login, refused.
    const again = await credentialProcess(wrong);
    assert.equal(again.code, 4, again.stderr);
    assert.match(again.stderr, /CKR_PIN_INCORRECT/);
    assert.equal(tokenCountLow(true), false);
  });

  test("a record file with loose modes is not trusted: a warning, and it is replaced by a private one", async () => {
    const wrong = pinFile("wrong-2.pin", "27182818");
    assert.equal((await credentialProcess(wrong)).code, 4);
    tokenCountLow(true);
    chmodSync(recordFile(), 0o644);

    const run = await credentialProcess(wrong);
    assert.equal(run.code, 4, run.stderr);
    assert.match(run.stderr, new RegExp(`ignoring ${recordFile().replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: it is readable or writable by group or others \\(mode 0644\\)`));
    assert.match(run.stderr, /C_Login returned CKR_PIN_INCORRECT/, "the untrusted record was not used");
    assert.equal(tokenCountLow(true), false);
    assert.equal(statSync(recordFile()).mode & 0o777, 0o600, "rewritten as a private file");
    assert.equal(recordsFor("rejected").length, 1);

    // The rewritten file is trusted again.
    const next = await credentialProcess(wrong);
    assert.match(next.stderr, /already rejected/);
    assert.equal(tokenCountLow(), false);
  });

  test("a record file owned by another user is not trusted", { skip: process.getuid?.() !== 0 && "needs root to give the file away" }, async () => {
    const wrong = pinFile("wrong-3.pin", "16180339");
    assert.equal((await credentialProcess(wrong)).code, 4);
    tokenCountLow(true);
    chownSync(recordFile(), 4242, 4242);
    const run = await credentialProcess(wrong);
    assert.match(run.stderr, /ignoring .*rejected-pins\.json: it is owned by uid 4242, not by the user running ra-agent \(uid 0\)/);
    assert.match(run.stderr, /CKR_PIN_INCORRECT/);
    assert.equal(tokenCountLow(true), false);
    assert.equal(statSync(recordFile()).uid, 0, "replaced by a file of ours");
  });

  test("a state directory writable by others is not used at all; the PIN is still refused in-process only", async () => {
    const loose = join(work, "loose-state");
    mkdirSync(loose, { mode: 0o777 });
    chmodSync(loose, 0o777);
    const run = await runCli(["sign-string", "--certificate", certUri(), "--pkcs11-lib", hsm.modulePath], { ...env(pinFile("wrong-4.pin", "11235813")), RA_AGENT_STATE_DIR: loose });
    assert.equal(run.code, 4);
    assert.match(run.stderr, /not using the state directory .*loose-state: it is writable by group or others \(mode 0777\); rejected PINs are remembered only in this process/);
    assert.deepEqual(readdirSync(loose), [], "nothing written there");
    tokenCountLow(true);
  });
});

test("the state directory: RA_AGENT_STATE_DIR, else XDG_STATE_HOME/ra-agent, else ~/.local/state/ra-agent", { skip: process.platform === "win32" }, () => {
  assert.equal(resolveStateDir({ RA_AGENT_STATE_DIR: "/srv/ra", XDG_STATE_HOME: "/x", HOME: "/h" }), "/srv/ra");
  assert.equal(resolveStateDir({ XDG_STATE_HOME: "/x/state" }), "/x/state/ra-agent");
  const home = process.env.HOME;
  try {
    process.env.HOME = "/home/someone";
    assert.equal(resolveStateDir({ XDG_STATE_HOME: "relative/ignored" }), "/home/someone/.local/state/ra-agent");
    assert.equal(resolveStateDir({}), "/home/someone/.local/state/ra-agent");
  } finally {
    process.env.HOME = home;
  }
});
