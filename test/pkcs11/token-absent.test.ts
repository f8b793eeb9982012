/**
 * A token that disappears and comes back, as a TPM whose daemon restarts or an
 * HSM that fails over: signing fails fast with a `token` error while it is gone,
 * and works again, after one login, when it returns, without reopening the signer.
 *
 * SoftHSM loses a token whose directory vanishes and sees it again only after
 * C_Finalize/C_Initialize, which is what tpm2-pkcs11 needs after a TPM restart:
 * this file gives SoftHSM the tpm2-pkcs11 recovery quirk (reinitializeOnRecovery)
 * through a private copy of native-config, and exercises that path.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPublicKey, verify } from "node:crypto";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";
import type * as P11 from "../../src/signer/pkcs11/index";
import { RaError } from "../../src/errors";
import { nativeConfigDir, resetNativeConfigCache } from "../../src/signer/pkcs11/native-config";

let hsm: TestHsm;
let p11: typeof P11;
let configCopy: string;

describe("token absent, then back", needsSoftHsm(), () => {
  before(async () => {
    configCopy = mkdtempSync(join(tmpdir(), "ra-agent-native-config-"));
    cpSync(nativeConfigDir(), configCopy, { recursive: true });
    const quirksPath = join(configCopy, "quirks.json");
    const quirks = JSON.parse(readFileSync(quirksPath, "utf8"));
    const softhsm = quirks.quirks.find((q: { id: string }) => q.id === "softhsm2");
    softhsm.reinitializeOnRecovery = true;
    softhsm.recoverableErrors = ["CKR_GENERAL_ERROR"];
    writeFileSync(quirksPath, JSON.stringify(quirks));
    process.env.RA_AGENT_NATIVE_CONFIG = configCopy;
    resetNativeConfigCache();
    hsm = await provisionTestHsm([{ label: "comes-and-goes", keys: [{ label: "k", keyType: "EC-P256" }] }]);
    p11 = await import("../../src/signer/pkcs11/index");
  });
  after(async () => {
    await p11?.closeAllPkcs11();
    hsm?.cleanup();
    rmSync(configCopy, { recursive: true, force: true });
    delete process.env.RA_AGENT_NATIVE_CONFIG;
    resetNativeConfigCache();
  });

  test("fails fast with a token error while absent; recovers with one login when back", async () => {
    const k = hsm.tokens[0].keys[0];
    const signer = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: p11.staticPinProvider(hsm.tokens[0].pin) });
    const ok = (m: Buffer, s: Buffer): boolean => verify("sha256", m, { key: createPublicKey(k.certificatePem), dsaEncoding: "der" }, s);
    assert.ok(ok(Buffer.from("present"), await signer.sign(Buffer.from("present"))));
    assert.equal(signer.status().loginAttempts, 1);

    const tokensDir = join(hsm.dir, "tokens");
    const [tokenDir] = readdirSync(tokensDir);
    assert.equal((await signer.probe()).present, true);
    renameSync(join(tokensDir, tokenDir), join(hsm.dir, "away"));
    assert.equal((await signer.probe()).present, false, "a probe sees it gone without signing or logging in");
    for (let i = 0; i < 2; i++) {
      await assert.rejects(signer.sign(Buffer.from("absent")), (e: unknown) => {
        assert.ok(e instanceof RaError);
        assert.equal(e.kind, "token");
        assert.equal(e.code, "PKCS11_TOKEN_NOT_PRESENT");
        assert.match(e.message, /token "comes-and-goes" \(serial [0-9a-f]+.*\) is not present/);
        return true;
      });
    }
    const st = signer.status();
    assert.equal(st.present, false);
    assert.equal(st.lastError?.code, "PKCS11_TOKEN_NOT_PRESENT");
    assert.equal(st.loginAttempts, 1, "no login while absent");

    renameSync(join(hsm.dir, "away"), join(tokensDir, tokenDir));
    const back = Buffer.from("back again");
    assert.ok(ok(back, await signer.sign(back)));
    const after = signer.status();
    assert.equal(after.present, true);
    assert.equal(after.loginAttempts, 2, "exactly one login after the token returned");
    await signer.close();
  });
});
