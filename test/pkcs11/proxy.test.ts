/**
 * p11-kit-proxy as the default module: with no --pkcs11-lib and no module in the
 * URI, ra-agent loads p11-kit-proxy (location from native-config/modules.json),
 * which loads every module registered with p11-kit, SoftHSM among them.
 *
 * As root, p11-kit reads only system module files (platform notes): the softhsm2
 * package installs /usr/share/p11-kit/modules/softhsm2.module. As another user
 * without that file, the test registers SoftHSM in a private
 * ~/.config/pkcs11/modules (HOME points at a temp dir before p11-kit starts).
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPublicKey, verify } from "node:crypto";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";
import type * as P11 from "../../src/signer/pkcs11/index";

let hsm: TestHsm;
let p11: typeof P11;
let home: string | undefined;

function systemModuleRegistered(): boolean {
  return ["/usr/share/p11-kit/modules/softhsm2.module", "/etc/pkcs11/modules/softhsm2.module"].some((f) => existsSync(f));
}

describe("p11-kit-proxy as the default module", needsSoftHsm(), () => {
  before(async () => {
    hsm = await provisionTestHsm([{ label: "via-proxy", keys: [{ label: "k", keyType: "EC-P256" }] }]);
    const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
    if (!systemModuleRegistered()) {
      assert.ok(!isRoot, "as root p11-kit reads only system module files: install the softhsm2 package's module file");
      home = mkdtempSync(join(tmpdir(), "ra-agent-home-"));
      mkdirSync(join(home, ".config", "pkcs11", "modules"), { recursive: true });
      writeFileSync(join(home, ".config", "pkcs11", "modules", "softhsm2.module"), `module: ${hsm.modulePath}\n`);
      process.env.HOME = home;
      delete process.env.XDG_CONFIG_HOME;
    }
    // Keep tpm2-pkcs11 (also registered with p11-kit) away from ~/.tpm2_pkcs11 and quiet.
    process.env.TPM2_PKCS11_STORE = join(hsm.dir, "no-tpm-store");
    process.env.TSS2_LOG = "all+NONE";
    p11 = await import("../../src/signer/pkcs11/index");
  });
  after(async () => {
    await p11?.closeAllPkcs11();
    hsm?.cleanup();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  test("a certificate URI without any module option is served through p11-kit-proxy", async () => {
    const k = hsm.tokens[0].keys[0];
    const signer = await p11.openPkcs11Signer({ certificateUri: `pkcs11:token=via-proxy;object=k`, pin: p11.staticPinProvider(hsm.tokens[0].pin) });
    assert.match(signer.tokenInfo.module, /p11-kit-proxy\.(so|dylib|dll)$/);
    assert.doesNotMatch(signer.keyUri, /module-path/, "URIs printed for the default module need no module-path");
    assert.deepStrictEqual(signer.tokenInfo.quirks, ["softhsm2"], "quirks matched by token fields through the proxy");
    const m = Buffer.from("through the proxy");
    assert.ok(verify("sha256", m, { key: createPublicKey(k.certificatePem), dsaEncoding: "der" }, await signer.sign(m)));
    await signer.close();
  });

  test("findCertificates and listPkcs11 use the proxy too; listing every module names p11-kit's", async () => {
    const found = await p11.findCertificates("pkcs11:token=via-proxy");
    assert.equal(found.length, 1);
    const listing = await p11.listPkcs11({ uri: "pkcs11:token=via-proxy", tokensOnly: true });
    assert.equal(listing.length, 1);
    assert.equal(listing[0].source, "default");
    assert.equal(listing[0].isProxy, true);
    assert.equal(listing[0].slots.length, 1);
    const all = p11.moduleCandidates({ allModules: true });
    assert.ok(all.some((m) => m.source === "p11-kit" && m.path.endsWith("libsofthsm2.so")), JSON.stringify(all));
  });
});
