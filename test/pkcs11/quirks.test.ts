/**
 * Token quirks seen in the wild, each on a SoftHSM fixture: always-authenticate
 * keys, certificates visible only after login, no public-key objects, a key
 * without a certificate, two certificates for one key id, two tokens with one
 * label, an expired certificate, a key usable without login.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, verify, X509Certificate } from "node:crypto";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";
import { rejectsWith } from "../support/assert-ra-error";
import type * as P11 from "../../src/signer/pkcs11/index";

let hsm: TestHsm;
let p11: typeof P11;

const pemDer = (pem: string): Buffer => Buffer.from(new X509Certificate(pem).raw);
const verifies = (pem: string, m: Buffer, s: Buffer): boolean => verify("sha256", m, { key: createPublicKey(pem), dsaEncoding: "der" }, s);
const noPins: P11.PinProvider = { getPin: async () => undefined };


describe("token quirks on SoftHSM", needsSoftHsm(), () => {
  const quirks = () => hsm.tokens[0];
  const key = (label: string) => quirks().keys.find((k) => k.label === label)!;
  const pins = () => p11.staticPinProvider(quirks().pin);

  before(async () => {
    hsm = await provisionTestHsm([
      {
        label: "quirks",
        keys: [
          { label: "always-auth", keyType: "EC-P256", alwaysAuthenticate: true },
          { label: "private-cert", keyType: "RSA-2048", certificate: "private" },
          { label: "no-pubkey-ec", keyType: "EC-P256", publicKeyObject: false },
          { label: "no-cert", keyType: "EC-P256", certificate: "none" },
          { label: "two-certs", keyType: "EC-P256", extraCertificateLabel: "two-certs-attestation" },
          { label: "expired", keyType: "EC-P256", expired: true },
        ],
      },
      { label: "nologin", keys: [{ label: "no-login", keyType: "EC-P256", noLogin: true }] },
      { label: "twin", keys: [{ label: "twin-key", keyType: "EC-P256" }] },
      { label: "twin", keys: [{ label: "twin-key", keyType: "EC-P256" }] },
    ]);
    p11 = await import("../../src/signer/pkcs11/index");
  });
  after(async () => {
    await p11?.closeAllPkcs11();
    hsm?.cleanup();
  });

  // Runs first: the token is not logged in yet, so the private certificate is hidden.
  test("certificate visible only after login: found by logging in to the only matching token", async () => {
    const k = key("private-cert");
    await rejectsWith(p11.findCertificates(k.certificateUri!, { modulePath: hsm.modulePath, pin: noPins }), "PKCS11_PIN_REQUIRED", (e) => {
      assert.equal(e.kind, "pin");
      assert.match(e.hint!, /RA_AGENT_PIN_FILE/);
    });
    const signer = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: pins() });
    assert.deepStrictEqual(Buffer.from(signer.certificate), pemDer(k.certificatePem));
    assert.equal(signer.status().loginAttempts, 1);
    const m = Buffer.from("private certificate");
    assert.ok(verifies(k.certificatePem, m, await signer.sign(m)));
    await signer.close();
  });

  test("always-authenticate key with reusePin: a context-specific login per signature", async () => {
    const k = key("always-auth");
    const signer = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: pins(), reusePin: true });
    for (let i = 0; i < 3; i++) {
      const m = Buffer.from(`always-auth ${i}`);
      assert.ok(verifies(k.certificatePem, m, await signer.sign(m)));
    }
    await signer.close();
  });

  test("always-authenticate key without reusePin and no terminal: a clear error, and the session stays usable", async () => {
    const k = key("always-auth");
    const signer = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: pins() });
    await rejectsWith(signer.sign(Buffer.from("x")), "PKCS11_CONTEXT_PIN_REQUIRED", (e) => assert.match(e.hint!, /--reuse-pin/));
    // The failed operation was cancelled: other signers on the token keep working.
    const other = await p11.openPkcs11Signer({ certificateUri: key("two-certs").certificateUri, modulePath: hsm.modulePath, pin: pins() });
    for (let i = 0; i < 6; i++) await other.sign(Buffer.from(`after ${i}`));
    // A provider that answers context-specific requests (the agent's own) works too.
    const contextPins: P11.PinProvider = { getPin: async (req) => ({ pin: quirks().pin, source: `test ${req.kind}`, interactive: false }) };
    const withContext = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: contextPins });
    const m = Buffer.from("context pin from provider");
    assert.ok(verifies(k.certificatePem, m, await withContext.sign(m)));
    await Promise.all([signer.close(), other.close(), withContext.close()]);
  });

  test("no public-key objects: the key is matched to its certificate by a test signature", async () => {
    const k = key("no-pubkey-ec");
    const signer = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: pins() });
    assert.match(signer.keyUri, /object=no-pubkey-ec/);
    const m = Buffer.from("no public key object");
    assert.ok(verifies(k.certificatePem, m, await signer.sign(m)));
    await signer.close();
    // And a certificate of another P-256 key is refused for it.
    await rejectsWith(
      p11.openPkcs11Signer({ certificateDer: pemDer(key("expired").certificatePem), keyUri: k.keyUri, modulePath: hsm.modulePath, pin: pins() }),
      "PKCS11_KEY_CERTIFICATE_MISMATCH",
      (e) => assert.match(e.message, /a different key of the same type/),
    );
  });

  test("a key without a certificate on the token: certificate file + key URI; key URI alone explains", async () => {
    const k = key("no-cert");
    assert.equal(k.certificateUri, undefined);
    const signer = await p11.openPkcs11Signer({ certificateDer: pemDer(k.certificatePem), keyUri: k.keyUri, modulePath: hsm.modulePath, pin: pins() });
    const m = Buffer.from("certificate from a file");
    assert.ok(verifies(k.certificatePem, m, await signer.sign(m)));
    await signer.close();
    await rejectsWith(p11.openPkcs11Signer({ keyUri: k.keyUri, modulePath: hsm.modulePath, pin: pins() }), "PKCS11_CERTIFICATE_NOT_FOUND", (e) => assert.match(e.hint!, /--certificate FILE/));
  });

  test("two certificates for one key id: candidates listed with URIs; object= disambiguates", async () => {
    const k = key("two-certs");
    const byId = `pkcs11:token=quirks;id=%${k.idHex.toUpperCase()};type=cert`;
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: byId, modulePath: hsm.modulePath, pin: pins() }), "PKCS11_SEVERAL_CERTIFICATES", (e) => {
      assert.match(e.message, /object=two-certs;id=%05;type=cert/);
      assert.match(e.message, /object=two-certs-attestation;id=%05;type=cert/);
    });
    await rejectsWith(p11.openPkcs11Signer({ keyUri: k.keyUri, modulePath: hsm.modulePath, pin: pins() }), "PKCS11_SEVERAL_CERTIFICATES");
    assert.match(k.extraCertificates[0].uri, /object=two-certs-attestation;id=%05;type=cert$/);
    const signer = await p11.openPkcs11Signer({ certificateUri: k.extraCertificates[0].uri, modulePath: hsm.modulePath, pin: pins() });
    assert.deepStrictEqual(Buffer.from(signer.certificate), pemDer(k.extraCertificates[0].pem));
    await signer.close();
    const main = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: pins() });
    assert.deepStrictEqual(Buffer.from(main.certificate), pemDer(k.certificatePem));
    await main.close();
  });

  test("two tokens with the same label: ambiguous without serial (candidates listed), selected by serial", async () => {
    const [a, b] = [hsm.tokens[2], hsm.tokens[3]];
    assert.notEqual(a.serial, b.serial);
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: "pkcs11:token=twin;object=twin-key", modulePath: hsm.modulePath, pin: p11.staticPinProvider(a.pin) }), "PKCS11_SEVERAL_CERTIFICATES", (e) => {
      assert.match(e.message, new RegExp(`serial=${a.serial}`));
      assert.match(e.message, new RegExp(`serial=${b.serial}`));
    });
    await rejectsWith(p11.openPkcs11Signer({ keyUri: "pkcs11:token=twin;object=twin-key", modulePath: hsm.modulePath, pin: p11.staticPinProvider(a.pin) }), "PKCS11_SEVERAL_TOKENS", (e) => {
      assert.match(e.message, new RegExp(`pkcs11:token=twin;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;serial=${a.serial}`));
      assert.match(e.message, new RegExp(`serial=${b.serial}`));
      assert.match(e.hint!, /serial=/);
    });
    for (const t of [a, b]) {
      const signer = await p11.openPkcs11Signer({ keyUri: `pkcs11:token=twin;serial=${t.serial};object=twin-key`, modulePath: hsm.modulePath, pin: p11.staticPinProvider(t.pin) });
      assert.equal(signer.tokenInfo.serial, t.serial);
      assert.deepStrictEqual(Buffer.from(signer.certificate), pemDer(t.keys[0].certificatePem));
      const m = Buffer.from(`twin ${t.serial}`);
      assert.ok(verifies(t.keys[0].certificatePem, m, await signer.sign(m)));
      await signer.close();
    }
  });

  test("an expired certificate is opened as is (the service decides), with its validity visible", async () => {
    const k = key("expired");
    const signer = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: pins() });
    assert.ok(signer.certificateInfo.notAfter.getTime() < Date.now());
    assert.ok(Date.parse(signer.status().certificateNotAfter) < Date.now());
    const m = Buffer.from("expired");
    assert.ok(verifies(k.certificatePem, m, await signer.sign(m)));
    await signer.close();
  });

  test("a key usable without login (CKA_PRIVATE false): no PIN asked, no C_Login", async () => {
    const t = hsm.tokens[1];
    let asked = 0;
    const counting: P11.PinProvider = { getPin: async () => { asked++; return undefined; } };
    const signer = await p11.openPkcs11Signer({ certificateUri: t.keys[0].certificateUri, modulePath: hsm.modulePath, pin: counting });
    const m = Buffer.from("no login");
    assert.ok(verifies(t.keys[0].certificatePem, m, await signer.sign(m)));
    assert.equal(asked, 0);
    assert.equal(signer.status().loginAttempts, 0);
    assert.equal(signer.status().loggedIn, false);
    await signer.close();
  });
});
