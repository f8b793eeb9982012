/**
 * PIN sources: files (mode and owner checks), commands, the environment, the
 * URI, their order, and the terminal prompt (no echo), driven through a real
 * pseudo-terminal.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { RaError } from "../../src/errors";
import { chainPinProviders, defaultPinProvider, envPinProvider, PinRequest, readPinFile, runPinCommand, uriPinProvider } from "../../src/signer/pkcs11/pin";

let dir: string;
const user: PinRequest = { kind: "user", token: 'token "t"', tokenUri: "pkcs11:token=t" };
const context: PinRequest = { kind: "context-specific", token: 'token "t"', tokenUri: "pkcs11:token=t", keyUri: "pkcs11:token=t;object=k" };

function pinFile(name: string, content: string, mode: number): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  chmodSync(p, mode);
  return p;
}

async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof RaError, String(e));
    assert.equal(e.code, code, e.message);
    assert.equal(e.kind, "pin");
    if (re) assert.match(e.message, re);
    return true;
  });
}

describe("PIN sources", () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "ra-agent-pin-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("PIN files: one trailing newline removed; group/other access, emptiness and directories refused", async () => {
    assert.equal(await readPinFile(pinFile("ok", "12 34\n", 0o600), "test"), "12 34");
    assert.equal(await readPinFile(pinFile("crlf", "5678\r\n", 0o400), "test"), "5678");
    await rejectsWith(readPinFile(pinFile("group-read", "1", 0o640), "test"), "PIN_FILE_PERMISSIONS", /mode 0640/);
    await rejectsWith(readPinFile(pinFile("other-write", "1", 0o602), "test"), "PIN_FILE_PERMISSIONS", /mode 0602/);
    await rejectsWith(readPinFile(pinFile("empty", "\n", 0o600), "test"), "PIN_FILE_EMPTY");
    await rejectsWith(readPinFile(join(dir, "missing"), "test"), "PIN_FILE_UNREADABLE", /no such file/);
    if (typeof process.getuid === "function" && process.getuid() === 0) {
      const foreign = pinFile("foreign", "1\n", 0o600);
      chownSync(foreign, 1, 1);
      await rejectsWith(readPinFile(foreign, "test"), "PIN_FILE_PERMISSIONS", /owned by another user \(uid 1\)/);
    }
    mkdirSync(join(dir, "a-dir"));
    await rejectsWith(readPinFile(join(dir, "a-dir"), "test"), "PIN_FILE_UNREADABLE", /not a regular file/);
  });

  test("pin-source commands: stdout is the PIN; failures are clear; RA_AGENT_PIN is not passed on", async () => {
    assert.equal(await runPinCommand("printf '%s\\n' 4321"), "4321");
    await rejectsWith(runPinCommand("exit 3"), "PIN_COMMAND_FAILED", /exited with status 3/);
    await rejectsWith(runPinCommand("true"), "PIN_COMMAND_FAILED", /printed nothing/);
    process.env.RA_AGENT_PIN = "secret";
    try {
      assert.equal(await runPinCommand('printf %s "${RA_AGENT_PIN:-unset}"'), "unset");
    } finally {
      delete process.env.RA_AGENT_PIN;
    }
  });

  test("URI pin-source forms: file:/path, file:///path, /path, |command; others refused", async () => {
    const f = pinFile("uri", "2468\n", 0o600);
    for (const src of [`file:${f}`, `file://${f}`, f]) {
      assert.deepStrictEqual(await uriPinProvider({ pinSource: src }).getPin(user), { pin: "2468", source: `URI pin-source file ${f}`, interactive: false });
    }
    assert.equal((await uriPinProvider({ pinSource: "|echo 1357" }).getPin(user))?.pin, "1357");
    await rejectsWith(uriPinProvider({ pinSource: "relative/pin" }).getPin(user), "PIN_SOURCE_UNSUPPORTED");
    await rejectsWith(uriPinProvider({ pinSource: "https://example.com/pin" }).getPin(user), "PIN_SOURCE_UNSUPPORTED");
    // A PIN written as pin-source by mistake is not echoed back.
    await assert.rejects(uriPinProvider({ pinSource: "314159" }).getPin(user), (e: unknown) => {
      assert.ok(e instanceof RaError && e.code === "PIN_SOURCE_UNSUPPORTED");
      assert.doesNotMatch(`${e.message} ${e.hint ?? ""}`, /314159/);
      return true;
    });
  });

  test("order: URI pin-source, RA_AGENT_PIN_FILE, RA_AGENT_PIN, URI pin-value; none for context-specific PINs", async () => {
    const f = pinFile("env", "1111\n", 0o600);
    const env = { RA_AGENT_PIN_FILE: f, RA_AGENT_PIN: "2222" };
    assert.equal((await chainPinProviders(envPinProvider(env)).getPin(user))?.source, `RA_AGENT_PIN_FILE ${f}`);
    assert.equal((await envPinProvider({ RA_AGENT_PIN: "2222" }).getPin(user))?.pin, "2222");
    assert.equal(await envPinProvider({ RA_AGENT_PIN: "" }).getPin(user), undefined);
    const uriFile = pinFile("uri-first", "3333\n", 0o600);
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      assert.equal((await defaultPinProvider([{ pinSource: `file:${uriFile}` }]).getPin(user))?.pin, "3333");
      assert.equal((await defaultPinProvider([{}, { pinValue: "4444" }]).getPin(user))?.pin, "1111", "the environment before pin-value");
      delete process.env.RA_AGENT_PIN_FILE;
      assert.equal((await defaultPinProvider([{ pinValue: "4444" }]).getPin(user))?.pin, "2222");
      delete process.env.RA_AGENT_PIN;
      assert.equal((await defaultPinProvider([{}, { pinValue: "4444" }]).getPin(user))?.pin, "4444");
      // Context-specific PINs come only from the terminal (or --reuse-pin); no TTY here.
      if (!process.stdin.isTTY) assert.equal(await defaultPinProvider([{ pinValue: "4444" }]).getPin(context), undefined);
    } finally {
      process.env = saved;
    }
  });

  test("terminal prompt: on stderr, without echo, with line editing", { skip: spawnSync("python3", ["-c", "import pty"]).status === 0 ? false : "python3 with pty is needed" }, () => {
    // A child node process on a pseudo-terminal asks for the PIN; python types "12", a backspace, "34", Enter.
    const pinModule = resolve(__dirname, "../../src/signer/pkcs11/pin.js");
    const child = `require(${JSON.stringify(pinModule)}).ttyPinProvider().getPin({kind:"user",token:'token "t"',tokenUri:"pkcs11:token=t",finalTry:true}).then(r=>{process.stdout.write("RESULT["+r.pin+"]["+r.source+"]["+r.interactive+"]\\n");process.exit(0)})`;
    const driver = `
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], [sys.argv[1], "-e", sys.argv[2]])
out = b""
def read(timeout, marker):
    global out
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            out += chunk
            if marker in out:
                return
read(10, b"locks: ")
os.write(fd, b"12\\x7f34\\r")
read(10, b"][true]")
os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
`;
    const r = spawnSync("python3", ["-c", driver, process.execPath, child], { encoding: "utf8", timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /PIN for token "t" — WARNING: the token reports ONE try left before the PIN locks: /);
    assert.match(r.stdout, /RESULT\[134\]\[terminal prompt\]\[true\]/);
    assert.doesNotMatch(r.stdout.replace(/RESULT\[.*$/m, ""), /1|34/, "the typed PIN is not echoed");
  });
});
