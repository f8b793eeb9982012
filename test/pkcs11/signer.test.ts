/**
 * The reference helper's PKCS#11 matrix on real SoftHSM tokens: certificate URI
 * only, key URI only, both, certificate file + key URI, token-only URI, RSA/EC
 * mismatches; plus P-384, digests, PIN sources, concurrency and enumeration.
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createPublicKey, verify, X509Certificate } from "node:crypto";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";
import { rejectsWith } from "../support/assert-ra-error";
import type * as P11 from "../../src/signer/pkcs11/index";
import { parseCertificate } from "../../src/x509/certificate";

let hsm: TestHsm;
let p11: typeof P11;

function pemDer(pem: string): Buffer {
  return Buffer.from(new X509Certificate(pem).raw);
}

function verifies(pem: string, message: Buffer, signature: Buffer, hash = "sha256"): boolean {
  return verify(hash, message, { key: createPublicKey(pem), dsaEncoding: "der" }, signature);
}


describe("PKCS#11 signer on SoftHSM", needsSoftHsm(), () => {
  let pins: P11.PinProvider;
  const key = (label: string) => hsm.tokens[0].keys.find((k) => k.label === label)!;

  before(async () => {
    hsm = await provisionTestHsm([
      {
        label: "ra-agent",
        keys: [
          { label: "rsa-2048", keyType: "RSA-2048" },
          { label: "ec-p256", keyType: "EC-P256" },
          { label: "ec-p384", keyType: "EC-P384" },
        ],
      },
      { label: "single", keys: [{ label: "only", keyType: "EC-P256" }] },
    ]);
    p11 = await import("../../src/signer/pkcs11/index");
    pins = p11.staticPinProvider(hsm.tokens[0].pin);
  });
  after(async () => {
    await p11?.closeAllPkcs11();
    hsm?.cleanup();
  });

  for (const label of ["rsa-2048", "ec-p256", "ec-p384"]) {
    test(`${label}: certificate URI only; signatures verify with the certificate for every digest`, async () => {
      const k = key(label);
      const signer = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: pins });
      assert.equal(signer.source, "pkcs11");
      assert.equal(signer.hardwareBacked, true, "generated in the token: sensitive, not extractable");
      assert.equal(signer.keyType, label.startsWith("rsa") ? "RSA" : "EC");
      assert.equal(signer.algorithm, label.startsWith("rsa") ? "AWS4-X509-RSA-SHA256" : "AWS4-X509-ECDSA-SHA256");
      assert.deepStrictEqual(Buffer.from(signer.certificate), pemDer(k.certificatePem));
      assert.match(signer.keyUri, new RegExp(`^pkcs11:token=ra-agent;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;serial=${hsm.tokens[0].serial};object=${label};id=%0\\d;type=private`));
      assert.match(signer.certificateUri!, /;type=cert/);
      for (const digest of ["SHA256", "SHA384", "SHA512"] as const) {
        const message = Buffer.from(`string to sign with ${digest}`);
        const signature = await signer.sign(message, digest);
        assert.ok(verifies(k.certificatePem, message, signature, digest.toLowerCase()), `${label} ${digest}`);
      }
      assert.equal(signer.tokenInfo.serial, hsm.tokens[0].serial);
      assert.deepStrictEqual(signer.tokenInfo.quirks, ["softhsm2"]);
      await signer.close();
    });
  }

  test("key URI only: the certificate is found on the token through the key", async () => {
    const k = key("ec-p384");
    const signer = await p11.openPkcs11Signer({ keyUri: k.keyUri, modulePath: hsm.modulePath, pin: pins });
    assert.deepStrictEqual(Buffer.from(signer.certificate), pemDer(k.certificatePem));
    const m = Buffer.from("key uri only");
    assert.ok(verifies(k.certificatePem, m, await signer.sign(m)));
    await signer.close();
  });

  test("certificate URI and key URI", async () => {
    const k = key("rsa-2048");
    const signer = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, keyUri: k.keyUri, modulePath: hsm.modulePath, pin: pins });
    const m = Buffer.from("both");
    assert.ok(verifies(k.certificatePem, m, await signer.sign(m)));
    await signer.close();
  });

  test("certificate file + key URI (label only, as users write it)", async () => {
    const k = key("ec-p256");
    const signer = await p11.openPkcs11Signer({ certificateDer: pemDer(k.certificatePem), keyUri: "pkcs11:token=ra-agent;object=ec-p256", modulePath: hsm.modulePath, pin: pins });
    assert.equal(signer.certificateUri, undefined);
    const m = Buffer.from("file + key");
    assert.ok(verifies(k.certificatePem, m, await signer.sign(m)));
    await signer.close();
  });

  test("certificate file + token-only key URI: the key is found by matching public keys", async () => {
    const k = key("ec-p384");
    const signer = await p11.openPkcs11Signer({ certificateDer: pemDer(k.certificatePem), keyUri: `pkcs11:token=ra-agent;serial=${hsm.tokens[0].serial}`, modulePath: hsm.modulePath, pin: pins });
    assert.match(signer.keyUri, /object=ec-p384/);
    await signer.close();
  });

  test("token-only URI: the one certificate on the token and its key", async () => {
    const single = hsm.tokens[1];
    const signer = await p11.openPkcs11Signer({ certificateUri: "pkcs11:token=single", modulePath: hsm.modulePath, pin: p11.staticPinProvider(single.pin) });
    assert.match(signer.keyUri, /token=single;.*object=only;id=%01;type=private/);
    const m = Buffer.from("token only");
    assert.ok(verifies(single.keys[0].certificatePem, m, await signer.sign(m)));
    await signer.close();
  });

  test("token-only URI on a token with several certificates: refused, candidates listed with URIs", async () => {
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: "pkcs11:token=ra-agent", modulePath: hsm.modulePath, pin: pins }), "PKCS11_SEVERAL_CERTIFICATES", (e) => {
      for (const label of ["rsa-2048", "ec-p256", "ec-p384"]) assert.match(e.message, new RegExp(`object=${label};id=%0\\d;type=cert`));
      assert.match(e.hint!, /object=/);
    });
  });

  test("RSA/EC mismatches are refused before anything is signed", async () => {
    const rsa = key("rsa-2048");
    const ec = key("ec-p256");
    const p384 = key("ec-p384");
    const cases: Array<[P11.Pkcs11SignerOptions, RegExp]> = [
      [{ certificateUri: rsa.certificateUri, keyUri: ec.keyUri }, /an EC key, but the certificate has an RSA key/],
      [{ certificateUri: ec.certificateUri, keyUri: rsa.keyUri }, /an RSA key, but the certificate has an EC key/],
      [{ certificateDer: pemDer(ec.certificatePem), keyUri: rsa.keyUri }, /an RSA key/],
      [{ certificateDer: pemDer(rsa.certificatePem), keyUri: ec.keyUri }, /an EC key/],
      [{ certificateUri: ec.certificateUri, keyUri: p384.keyUri }, /does not belong to the certificate/],
    ];
    for (const [opts, message] of cases) {
      await rejectsWith(p11.openPkcs11Signer({ ...opts, modulePath: hsm.modulePath, pin: pins }), "PKCS11_KEY_CERTIFICATE_MISMATCH", (e) => {
        assert.equal(e.kind, "token");
        assert.match(e.message, message);
      });
    }
  });

  test("PIN from the URI's pin-source file, RA_AGENT_PIN_FILE and pin-value", async () => {
    // One token context per process: these reuse the login, so check the sources themselves resolve.
    const file = join(hsm.dir, "pin-0600");
    writeFileSync(file, hsm.tokens[0].pin + "\n");
    chmodSync(file, 0o600);
    const provider = p11.defaultPinProvider([{ pinSource: `file:${file}` }]);
    assert.deepStrictEqual(await provider.getPin({ kind: "user", token: "t", tokenUri: "pkcs11:" }), { pin: hsm.tokens[0].pin, source: `URI pin-source file ${file}`, interactive: false });
    const k = key("ec-p256");
    const signer = await p11.openPkcs11Signer({ certificateUri: `${k.certificateUri}?pin-source=file:${file}`, modulePath: hsm.modulePath });
    await signer.sign(Buffer.from("x"));
    await signer.close();
    process.env.RA_AGENT_PIN_FILE = file;
    try {
      const env = await p11.defaultPinProvider([]).getPin({ kind: "user", token: "t", tokenUri: "pkcs11:" });
      assert.equal(env?.pin, hsm.tokens[0].pin);
      assert.equal(env?.source, `RA_AGENT_PIN_FILE ${file}`);
    } finally {
      delete process.env.RA_AGENT_PIN_FILE;
    }
    const value = await p11.defaultPinProvider([{ pinValue: "1234" }]).getPin({ kind: "user", token: "t", tokenUri: "pkcs11:" });
    assert.equal(value?.source, "URI pin-value");
  });

  test("concurrent signatures share one login and the session pool", async () => {
    const k = key("ec-p256");
    const signer = await p11.openPkcs11Signer({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: pins });
    const before = signer.status();
    const messages = Array.from({ length: 40 }, (_, i) => Buffer.from(`concurrent ${i}`));
    const signatures = await Promise.all(messages.map((m) => signer.sign(m)));
    signatures.forEach((s, i) => assert.ok(verifies(k.certificatePem, messages[i], s), `signature ${i}`));
    const st = signer.status();
    assert.equal(st.loginAttempts, before.loginAttempts, "no further login");
    assert.equal(st.loginAttempts, 1, "one C_Login for the token in this process");
    assert.ok(st.sessions.open <= st.sessions.max, "pool bounded");
    assert.equal(st.sessions.max, 4);
    assert.equal(st.signatures, 40);
    assert.equal(st.loggedIn, true);
    await signer.close();
  });

  test("findCertificates lists every matching certificate with an exact URI that opens it again", async () => {
    const found = await p11.findCertificates("pkcs11:token=ra-agent", { modulePath: hsm.modulePath, pin: pins });
    assert.equal(found.length, 3);
    for (const c of found) {
      const info = parseCertificate(c.der);
      const k = hsm.tokens[0].keys.find((x) => pemDer(x.certificatePem).equals(c.der))!;
      assert.ok(k, info.subject);
      const signer = await p11.openPkcs11Signer({ certificateUri: c.uri, modulePath: hsm.modulePath, pin: pins });
      assert.deepStrictEqual(Buffer.from(signer.certificate), c.der);
      await signer.close();
    }
    assert.deepStrictEqual(await p11.findCertificates("pkcs11:token=ra-agent;object=nothing", { modulePath: hsm.modulePath, pin: pins }), []);
    await rejectsWith(p11.findCertificates("pkcs11:token=no-such-token", { modulePath: hsm.modulePath }), "PKCS11_TOKEN_NOT_FOUND", (e) => {
      assert.match(e.message, /tokens present:/);
      assert.match(e.message, /pkcs11:token=ra-agent;manufacturer=SoftHSM%20project/);
    });
  });

  test("listPkcs11: tokens, keys and certificates with URIs, key attributes and pairing", async () => {
    const [m] = await p11.listPkcs11({ modulePaths: [hsm.modulePath], login: true, pin: pins, uri: "pkcs11:token=ra-agent" });
    assert.equal(m.name, "softhsm2");
    assert.equal(m.library?.manufacturer, "SoftHSM");
    assert.equal(m.slots.length, 1, "filtered by the URI");
    const t = m.slots[0].token!;
    assert.equal(t.serial, hsm.tokens[0].serial);
    assert.equal(t.loggedIn, true);
    assert.ok(t.flags.includes("login-required"));
    assert.equal(t.keys.length, 3);
    for (const k of t.keys) {
      assert.equal(k.sensitive, true);
      assert.equal(k.extractable, false);
      assert.equal(k.neverExtractable, true, "generated on the token");
      assert.equal(k.canSign, true);
      assert.equal(k.certificateUris.length, 1, k.uri);
    }
    const rsa = t.keys.find((k) => k.label === "rsa-2048")!;
    assert.equal(rsa.keyType, "RSA");
    assert.equal(rsa.bits, 2048);
    assert.equal(t.keys.find((k) => k.label === "ec-p384")!.curve, "P-384");
    for (const c of t.certificates) assert.ok(c.keyUri, `certificate ${c.uri} paired with its key`);
  });

  test("bad input: no URI, wrong type, unknown module, unknown vendor attribute", async () => {
    await rejectsWith(p11.openPkcs11Signer({}), "PKCS11_URI_REQUIRED");
    await rejectsWith(p11.openPkcs11Signer({ certificateDer: pemDer(key("ec-p256").certificatePem) }), "PKCS11_URI_REQUIRED");
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: key("ec-p256").keyUri }), "PKCS11_URI_WRONG_TYPE");
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: "pkcs11:token=ra-agent;token=x" }), "INVALID_PKCS11_URI");
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: "pkcs11:token=ra-agent", modulePath: "/nonexistent/libnothing.so" }), "PKCS11_MODULE_LOAD_FAILED");
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: "pkcs11:token=ra-agent?module-name=no-such-module" }), "PKCS11_MODULE_NOT_FOUND");
    await rejectsWith(p11.openPkcs11Signer({ certificateUri: "pkcs11:token=ra-agent;x-vendor=1", modulePath: hsm.modulePath, pin: pins }), "PKCS11_URI_UNSUPPORTED_ATTRIBUTE");
  });

  test("module-name and module-path in the URI select the module", async () => {
    const k = key("ec-p256");
    for (const q of ["module-name=softhsm2", `module-path=${hsm.modulePath}`]) {
      const signer = await p11.openPkcs11Signer({ certificateUri: `${k.certificateUri}?${q}`, pin: pins });
      assert.match(signer.tokenInfo.module, /libsofthsm2\.so$/);
      await signer.close();
    }
  });
});
