/**
 * SoftHSM provisioning: the description it returns, file modes, keys generated
 * inside the token (never extractable), certificates issued by the demo CA and
 * stored next to their keys, and idempotence on the same directory.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";
import { provisionSoftHsm, TokenSpec } from "../../softhsm/provision";
import type * as P11 from "../../src/signer/pkcs11/index";

const SPEC: TokenSpec[] = [
  { label: "prov", keys: [{ label: "rsa", keyType: "RSA-2048" }, { label: "ec", keyType: "EC-P384", idHex: "a1b2" }, { label: "bare", keyType: "EC-P256", publicKeyObject: false, certificate: "none" }] },
];

let hsm: TestHsm;
let p11: typeof P11;

describe("SoftHSM provisioning", needsSoftHsm(), () => {
  before(async () => {
    hsm = await provisionTestHsm(SPEC);
    p11 = await import("../../src/signer/pkcs11/index");
  });
  after(async () => {
    await p11?.closeAllPkcs11();
    hsm?.cleanup();
  });

  test("the description: config, tokens, PINs, keys with URIs, certificates from the CA", () => {
    assert.equal(hsm.softhsmConf, join(hsm.dir, "softhsm2.conf"));
    assert.match(readFileSync(hsm.softhsmConf, "utf8"), new RegExp(`directories.tokendir = ${join(hsm.dir, "tokens")}`));
    assert.equal(statSync(hsm.dir).mode & 0o777, 0o700);
    assert.equal(statSync(join(hsm.dir, "tokens")).mode & 0o777, 0o700);
    assert.equal(statSync(hsm.softhsmConf).mode & 0o777, 0o600);
    const [t] = hsm.tokens;
    assert.equal(t.label, "prov");
    assert.match(t.serial, /^[0-9a-f]{16}$/);
    assert.match(t.pin, /^\d{8}$/);
    assert.notEqual(t.pin, t.soPin);
    assert.equal(readFileSync(t.pinFile, "utf8"), t.pin + "\n");
    assert.equal(statSync(t.pinFile).mode & 0o777, 0o600);
    assert.equal(statSync(join(hsm.dir, "ca.key.pem")).mode & 0o777, 0o600);
    assert.equal(t.uri, `pkcs11:token=prov;serial=${t.serial}`);
    const ca = new X509Certificate(hsm.caPem);
    assert.deepStrictEqual(t.keys.map((k) => [k.label, k.idHex, k.keyType]), [["rsa", "01", "RSA-2048"], ["ec", "a1b2", "EC-P384"], ["bare", "03", "EC-P256"]]);
    for (const k of t.keys) {
      const cert = new X509Certificate(k.certificatePem);
      assert.ok(cert.verify(ca.publicKey), `${k.label} issued by the demo CA`);
      assert.equal(readFileSync(k.certificatePath, "utf8"), k.certificatePem);
      assert.equal(k.keyUri, `${t.uri};object=${k.label};id=${k.idHex.replace(/(..)/g, "%$1").toUpperCase()};type=private`);
    }
    assert.equal(t.keys[2].certificateUri, undefined, "certificate: none");
    assert.match(t.keys[1].certificateUri!, /;id=%A1%B2;type=cert$/);
  });

  test("keys are generated inside the token: sensitive, never extractable, sign only; certificates paired", async () => {
    const [m] = await p11.listPkcs11({ modulePaths: [hsm.modulePath], uri: hsm.tokens[0].uri, login: true, pin: p11.staticPinProvider(hsm.tokens[0].pin) });
    const token = m.slots[0].token!;
    assert.equal(token.keys.length, 3);
    for (const k of token.keys) {
      assert.equal(k.sensitive, true, k.label);
      assert.equal(k.extractable, false, k.label);
      assert.equal(k.neverExtractable, true, k.label);
      assert.equal(k.canSign, true, k.label);
    }
    assert.equal(token.certificates.length, 2);
    assert.deepStrictEqual(token.keys.find((k) => k.label === "bare")!.certificateUris, []);
  });

  test("a second run on the same directory changes nothing and returns the same description", async () => {
    const again = await provisionSoftHsm({ dir: hsm.dir, tokens: SPEC });
    const { modulePath: _m, cleanup: _c, ...first } = hsm;
    assert.deepStrictEqual(again, first);
    // Still the same objects on the token (SoftHSM re-reads its token files when another process changes them).
    const listing = await p11.listPkcs11({ modulePaths: [hsm.modulePath], uri: hsm.tokens[0].uri, login: true, pin: p11.staticPinProvider(hsm.tokens[0].pin) });
    assert.equal(listing[0].slots[0].token!.keys.length, 3);
    assert.equal(listing[0].slots[0].token!.certificates.length, 2);
    await assert.rejects(provisionSoftHsm({ dir: hsm.dir, tokens: [{ label: "other" }] }), /provisioned with a different token list/);
  });
});
