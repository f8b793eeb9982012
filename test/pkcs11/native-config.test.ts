/**
 * native-config/ is data the code uses: module locations (default module, names
 * in --pkcs11-lib and module-name) and per-module quirks (pool size,
 * serialisation, mechanisms, PIN advice, recovery), matched also through p11-kit-proxy.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { candidatePaths, findCatalogEntry, moduleCatalog, quirksFor } from "../../src/signer/pkcs11/native-config";
import { isDefaultProxy, resolveModule } from "../../src/signer/pkcs11/module";
import { planSignature } from "../../src/signer/pkcs11/mechanisms";
import * as pkcs11js from "pkcs11js";

test("the catalogue knows the modules ra-agent meets, per platform", () => {
  const ids = moduleCatalog().modules.map((m) => m.id);
  for (const id of ["p11-kit-proxy", "softhsm2", "opensc-pkcs11", "tpm2_pkcs11", "ykcs11", "luna", "nshield", "cloudhsm", "utimaco", "fortanix"]) assert.ok(ids.includes(id), id);
  for (const m of moduleCatalog().modules) {
    assert.ok(m.paths["linux-x64"]?.length, `${m.id} linux-x64`);
    for (const [platform, paths] of Object.entries(m.paths)) {
      assert.match(platform, /^(linux|darwin|win32)-(x64|arm64)$/);
      assert.ok(paths.length > 0, `${m.id} ${platform}`);
    }
  }
  assert.equal(findCatalogEntry("opensc")?.id, "opensc-pkcs11", "aliases");
  assert.equal(findCatalogEntry("SoftHSM")?.id, "softhsm2", "case-insensitive");
  assert.ok(candidatePaths(findCatalogEntry("p11-kit-proxy")!).length > 0 || process.platform === "win32");
});

test("the default module is p11-kit-proxy, found where the catalogue says", { skip: existsSync("/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so") || process.env.CI === "true" ? false : "p11-kit-proxy not installed" }, () => {
  const choice = resolveModule({});
  assert.equal(choice.source, "default");
  assert.ok(isDefaultProxy(choice.path), choice.path);
  assert.ok(existsSync(choice.path));
  const byName = resolveModule({ modulePath: "softhsm2" });
  assert.match(byName.path, /libsofthsm2\.so$/, "a known name in --pkcs11-lib");
  assert.equal(resolveModule({ uris: [{ moduleName: "softhsm2" }] }).source, "uri-module-name");
  assert.equal(resolveModule({ modulePath: "/x/y.so", uris: [{ modulePath: "/a/b.so" }] }).path, "/x/y.so", "--pkcs11-lib wins");
  assert.throws(() => resolveModule({ uris: [{ modulePath: "/a/b.so" }, { modulePath: "/c/d.so" }] }), /different modules/);
});

test("quirks: matched by module file, library, or token and slot fields (through the proxy)", () => {
  const defaults = quirksFor({ modulePath: "/opt/vendor/libunknown.so" });
  assert.deepStrictEqual(defaults.ids, []);
  assert.equal(defaults.sessionPoolSize, 4);
  assert.equal(defaults.serializeSigning, false);

  const softhsmDirect = quirksFor({ modulePath: "/usr/lib/softhsm/libsofthsm2.so", libraryManufacturer: "SoftHSM" });
  const softhsmProxy = quirksFor({ modulePath: "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so", libraryManufacturer: "PKCS#11 Kit", tokenManufacturer: "SoftHSM project" });
  for (const q of [softhsmDirect, softhsmProxy]) {
    assert.deepStrictEqual(q.ids, ["softhsm2"]);
    assert.ok(q.avoidMechanisms.includes("CKM_ECDSA_SHA256"));
  }

  const tpmDirect = quirksFor({ modulePath: "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so", libraryManufacturer: "tpm2-software.github.io" });
  const tpmProxy = quirksFor({ libraryManufacturer: "PKCS#11 Kit", tokenManufacturer: "IBM", tokenModel: "SW   TPM", tokenSerial: "0000000000000000" });
  for (const q of [tpmDirect, tpmProxy]) {
    assert.deepStrictEqual(q.ids, ["tpm2-pkcs11"]);
    assert.equal(q.serializeSigning, true);
    assert.equal(q.sessionPoolSize, 1);
    assert.equal(q.maxRsaBits, 3072);
    assert.equal(q.reinitializeOnRecovery, true);
    assert.ok(q.recoverableErrors.includes("CKR_GENERAL_ERROR"));
    assert.match(q.pinLockedHint!, /dictionary-attack lockout/);
  }

  const card = quirksFor({ libraryManufacturer: "PKCS#11 Kit", slotManufacturer: "OpenSC Project", tokenManufacturer: "piv_II" });
  assert.deepStrictEqual(card.ids, ["opensc"]);
  assert.equal(card.pinFlagsReliable, true);
  assert.equal(card.sessionPoolSize, 1);
});

test("quirks steer mechanism choice", () => {
  const all = new Set([pkcs11js.CKM_ECDSA, pkcs11js.CKM_ECDSA_SHA256]);
  const softhsm = quirksFor({ libraryManufacturer: "SoftHSM" });
  assert.equal(planSignature("EC", Buffer.from("m"), "SHA256", all, softhsm.avoidMechanisms).mechanismName, "CKM_ECDSA");
});
