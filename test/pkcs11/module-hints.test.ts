/**
 * Advice that is data (native-config/quirks.json and modules.json), used by the
 * code: tpm2-pkcs11's hints (device error, lockout, final try), and the
 * "not installed" / "cannot load" hints of modules, in the loader's errors and in
 * `ra-agent list`. The TPM case runs the real tpm2-pkcs11 module (in a child
 * process: it reads its TCTI once per process) pointed at a TPM that is not there.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RaError } from "../../src/errors";
import { formatInventory, inventoryToJson, type InventoryJson } from "../../src/cli/format-inventory";
import { moduleHints, quirksFor } from "../../src/signer/pkcs11/native-config";

const CLI_MAIN = join(__dirname, "..", "..", "src", "cli", "main.js");
const TPM_MODULE = ["/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so", "/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so", "/usr/lib64/pkcs11/libtpm2_pkcs11.so"].find((p) => existsSync(p));

const DEVICE_HINT = "tpm2-pkcs11 cannot reach the TPM: check that it is reachable through TPM2_PKCS11_TCTI (/dev/tpmrm0, tpm2-abrmd or swtpm running); ra-agent reconnects and logs in again by itself when it is back";
const LOCKED_HINT =
  "the TPM is in dictionary-attack lockout and refuses every PIN, even the right one. One failure is forgotten every TPM2_PT_LOCKOUT_INTERVAL seconds (swtpm default: 1000 s; see `tpm2_getcap properties-variable`), so the next try is possible after at most that long. The TPM owner can end it now with `tpm2_dictionarylockout --clear-lockout` (add `-p <lockout password>` if one is set). Fix the PIN source first: every wrong PIN counts again.";

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI_MAIN, ...args], { env: { PATH: process.env.PATH, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof (error as { code?: unknown }).code === "number" ? (error as unknown as { code: number }).code : 1) : 0, stdout, stderr });
    });
  });
}

/** A loopback port nobody listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

test("tpm2-pkcs11's texts are data in quirks.json, matched by module path and by library", () => {
  for (const q of [quirksFor({ modulePath: "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so" }), quirksFor({ modulePath: "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so", libraryManufacturer: "tpm2-software.github.io" })]) {
    assert.deepEqual(q.ids, ["tpm2-pkcs11"]);
    assert.equal(q.deviceErrorHint, DEVICE_HINT);
    assert.equal(q.pinLockedHint, LOCKED_HINT);
    assert.match(q.finalTryHint!, /TPM2_PT_LOCKOUT_INTERVAL/);
    assert.doesNotMatch(q.finalTryHint!, /resets the counter/, "a TPM's counter only decays with time or --clear-lockout");
  }
  assert.equal(quirksFor({ modulePath: "/usr/lib/softhsm/libsofthsm2.so" }).deviceErrorHint, undefined);
});

test("modules that are not installed: the loader names the package to install (modules.json)", async () => {
  const p11 = await import("../../src/signer/pkcs11/index");
  const cases: Array<[string, RegExp]> = [
    ["/nonexistent/lib/pkcs11/libtpm2_pkcs11.so", /^install tpm2-pkcs11 \(Debian\/Ubuntu: apt-get install libtpm2-pkcs11-1; RHEL\/Fedora: dnf install tpm2-pkcs11\)/],
    ["/nonexistent/lib/opensc-pkcs11.so", /^install OpenSC \(Debian\/Ubuntu: apt-get install opensc-pkcs11 pcscd;/],
    ["/nonexistent/lib/softhsm/libsofthsm2.so", /^install SoftHSM \(Debian\/Ubuntu: apt-get install softhsm2;/],
    ["/nonexistent/lib/libvendor-unknown.so", /^install the module or correct the path/],
  ];
  for (const [path, hint] of cases) {
    assert.throws(() => p11.loadModule(path), (e: unknown) => {
      assert.ok(e instanceof RaError);
      assert.equal(e.code, "PKCS11_MODULE_LOAD_FAILED");
      assert.match(e.hint ?? "", hint, path);
      return true;
    });
  }
  // A file that exists but is no module: what to check, then the module's own advice.
  assert.throws(() => p11.loadModule(__filename), (e: RaError) => e.code === "PKCS11_MODULE_LOAD_FAILED" && /does not load as a PKCS#11 module/.test(e.hint!));
});

test("ra-agent list shows the hint the error carries, else the module's cannotLoad hint from modules.json", () => {
  const out = (m: Parameters<typeof formatInventory>[0]) => formatInventory(m);
  const failed = { path: "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so", name: "opensc-pkcs11", source: "p11-kit" as const, isProxy: false, error: "C_GetSlotList failed", slots: [] };
  assert.match(out([failed]), /\n {2}hint: OpenSC needs pcscd running/);
  assert.equal(inventoryToJson([failed]).modules[0].hint, moduleHints("opensc-pkcs11").cannotLoad);
  assert.match(out([{ ...failed, hint: "the error's own advice" }]), /\n {2}hint: the error's own advice\n/);
  assert.match(out([{ ...failed, name: "libsofthsm2.so", path: "/opt/x/libsofthsm2.so" }]), /hint: SoftHSM reads SOFTHSM2_CONF/, "found by file name");
});

describe("tpm2-pkcs11 without a reachable TPM", { skip: !TPM_MODULE && process.env.CI !== "true" && "tpm2-pkcs11 is not installed (apt-get install libtpm2-pkcs11-1)" }, () => {
  let dir: string;
  let env: Record<string, string>;

  before(async () => {
    assert.ok(TPM_MODULE, "tpm2-pkcs11 is not installed (apt-get install libtpm2-pkcs11-1)");
    dir = mkdtempSync(join(tmpdir(), "ra-agent-notpm-"));
    mkdirSync(join(dir, "store"));
    mkdirSync(join(dir, "home"));
    const tcti = `swtpm:host=127.0.0.1,port=${await closedPort()}`;
    env = { TPM2_PKCS11_TCTI: tcti, TPM2TOOLS_TCTI: tcti, TPM2_PKCS11_STORE: join(dir, "store"), TSS2_LOG: "all+NONE", HOME: join(dir, "home"), RA_AGENT_STATE_DIR: join(dir, "state") };
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("C_Initialize fails: the error carries the module's deviceErrorHint (signing and listing)", async () => {
    const sign = await runCli(["sign-string", "--certificate", "pkcs11:token=ra-agent-tpm", "--pkcs11-lib", TPM_MODULE!], env);
    assert.equal(sign.code, 3, sign.stderr);
    assert.match(sign.stderr, /ra-agent: error: the token failed: C_Initialize returned CKR_GENERAL_ERROR \(module .*libtpm2_pkcs11\.so\)\n {2}hint: (.*)\n/);
    assert.ok(sign.stderr.includes(`hint: ${DEVICE_HINT}\n`), sign.stderr);

    const list = await runCli(["list", "--pkcs11-lib", TPM_MODULE!, "--json"], env);
    const doc = JSON.parse(list.stdout) as InventoryJson;
    assert.match(doc.modules[0].error ?? "", /C_Initialize returned CKR_GENERAL_ERROR/);
    assert.equal(doc.modules[0].errorCode, "PKCS11_DEVICE_ERROR");
    assert.equal(doc.modules[0].hint, DEVICE_HINT);
  });
});
