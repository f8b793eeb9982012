/**
 * The swtpm lifecycle used by TPM provisioning: start on a unix socket or on
 * free loopback ports, stop by PID (and wait), restart on the same state and
 * address, crash-kill, and the dictionary-attack settings through tpm2-tools.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { isProcessRunning, Swtpm } from "../../scripts/tpm/swtpm";
import { clearDictionaryLockout, readDictionaryLockout, setDictionaryLockout, type Tpm2ToolsEnv } from "../../scripts/tpm/tpm2-tools";
import { tpmSkipReason } from "./tpm-fixture";

const skip = tpmSkipReason();

/** Running, not a zombie: swtpm daemonises, so its parent is init, which may reap it late. */
const alive = isProcessRunning;

for (const transport of ["unix", "tcp"] as const) {
  test(`swtpm over ${transport}: start, settings survive stop/start on the same address, kill`, { skip }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "ra-swtpm-"));
    const swtpm = new Swtpm({ dir, transport });
    try {
      await swtpm.start();
      const pid = swtpm.pid!;
      assert.ok(pid > 0 && alive(pid), "swtpm runs with the PID from its PID file");
      const tcti = swtpm.tcti;
      assert.match(tcti, transport === "unix" ? /^swtpm:path=\// : /^swtpm:host=127\.0\.0\.1,port=\d+$/);
      const env: Tpm2ToolsEnv = { TPM2TOOLS_TCTI: tcti, TSS2_LOG: "all+NONE" };

      const fresh = await readDictionaryLockout(env);
      assert.equal(fresh.counter, 0);
      await setDictionaryLockout(env, { maxTries: 7, recoveryTime: 120, lockoutRecoveryTime: 5 });
      assert.deepEqual(await readDictionaryLockout(env), { counter: 0, maxTries: 7, recoveryTime: 120, lockoutRecoveryTime: 5, inLockout: false });

      await swtpm.stop();
      assert.equal(alive(pid), false, "stop() waits until the process is gone");
      assert.equal(swtpm.running, false);
      assert.equal(existsSync(swtpm.pidFile), false);

      await swtpm.start();
      assert.notEqual(swtpm.pid, pid);
      assert.equal(swtpm.tcti, tcti, "a restarted TPM keeps its address (tpm2-pkcs11 cannot change TCTI)");
      const after = await readDictionaryLockout(env);
      assert.equal(after.maxTries, 7, "the TPM's NV state survives a restart");
      assert.equal(after.counter, 0, "an orderly stop adds no DA failure");
      await clearDictionaryLockout(env);

      const pid2 = swtpm.pid!;
      await swtpm.kill();
      assert.equal(alive(pid2), false);
      // A crash leaves the socket files behind: start() must cope.
      await swtpm.start();
      assert.equal((await readDictionaryLockout(env)).maxTries, 7);
    } finally {
      await swtpm.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test("swtpm refuses a unix socket path that does not fit in sockaddr_un", { skip }, () => {
  assert.throws(() => new Swtpm({ dir: path.join(os.tmpdir(), "x".repeat(120)), transport: "unix" }), /too long for a unix socket/);
  assert.equal(new Swtpm({ dir: path.join(os.tmpdir(), "x".repeat(120)) }).transport, "tcp", "auto falls back to TCP");
});

test("a missing swtpm executable is reported by name", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "ra-swtpm-"));
  try {
    await assert.rejects(new Swtpm({ dir, swtpmPath: path.join(dir, "no-such-swtpm") }).start(), /swtpm is not installed/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
