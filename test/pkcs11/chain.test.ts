/**
 * Intermediate CA certificates: found on the token next to the leaf (roots left
 * out, since the trust anchor holds the root), or given by the caller; CA
 * certificates on a token do not make a token-only URI ambiguous.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";
import type * as P11 from "../../src/signer/pkcs11/index";

let hsm: TestHsm;
let p11: typeof P11;
const der = (pem: string): Buffer => Buffer.from(new X509Certificate(pem).raw);

describe("certificate chains", needsSoftHsm(), () => {
  before(async () => {
    hsm = await provisionTestHsm([{ label: "chain", storeCaCertificates: true, keys: [{ label: "leaf", keyType: "EC-P256" }] }], { intermediateCa: true });
    p11 = await import("../../src/signer/pkcs11/index");
  });
  after(async () => {
    await p11?.closeAllPkcs11();
    hsm?.cleanup();
  });

  test("the provisioner issues leaves from an intermediate under the root", () => {
    const root = new X509Certificate(hsm.caPem);
    const intermediate = new X509Certificate(hsm.intermediatePem!);
    const leaf = new X509Certificate(hsm.tokens[0].keys[0].certificatePem);
    assert.ok(intermediate.verify(root.publicKey));
    assert.ok(leaf.verify(intermediate.publicKey));
    assert.ok(leaf.checkIssued(intermediate));
  });

  test("a token-only URI picks the one end-entity certificate; the intermediate on the token becomes the chain", async () => {
    const pins = p11.staticPinProvider(hsm.tokens[0].pin);
    const signer = await p11.openPkcs11Signer({ certificateUri: "pkcs11:token=chain", modulePath: hsm.modulePath, pin: pins });
    assert.deepStrictEqual(Buffer.from(signer.certificate), der(hsm.tokens[0].keys[0].certificatePem));
    assert.deepStrictEqual(signer.chain.map((c) => Buffer.from(c)), [der(hsm.intermediatePem!)], "intermediate only, root left out");
    await signer.close();
    const explicit = await p11.openPkcs11Signer({ certificateUri: "pkcs11:token=chain", modulePath: hsm.modulePath, pin: pins, intermediates: [der(hsm.caPem)] });
    assert.deepStrictEqual(explicit.chain.map((c) => Buffer.from(c)), [der(hsm.caPem)], "given intermediates win");
    await explicit.close();
    const fromFile = await p11.openPkcs11Signer({ certificateDer: der(hsm.tokens[0].keys[0].certificatePem), keyUri: "pkcs11:token=chain;object=leaf", modulePath: hsm.modulePath, pin: pins });
    assert.deepStrictEqual(fromFile.chain, [], "a certificate from a file brings no chain from the token");
    await fromFile.close();
  });
});
