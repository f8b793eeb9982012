/**
 * SigV4-X509 golden vectors. The canonical requests and strings to sign below
 * were derived by hand from the SigV4 spec and the Roles Anywhere signing rules
 * (made with printf and sha256sum, not with this code); the RSA signature with
 * `openssl dgst -sha256 -sign` (PKCS#1 v1.5 is deterministic), and it is made
 * again with the openssl CLI at test time and compared byte for byte.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, verify, X509Certificate } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { FileSigner } from "../../src/signer/file/file-signer";
import { authorizationHeader, canonicalRequest, signRequest, type HttpRequest } from "../../src/sigv4x509";
import { parsePem } from "../../src/x509/pem";
import { EC_LEAF_KEY_PEM, EC_LEAF_PEM, INTERMEDIATE_CA_PEM, RSA_LEAF_KEY_PEM, RSA_LEAF_PEM, RSA_LEAF_SERIAL_DECIMAL, EC_LEAF_SERIAL_DECIMAL } from "./fixtures";
import { needOpenssl, openssl, tempDir } from "./openssl";

const der = (pem: string) => parsePem(pem)[0].der;
const b64 = (pem: string) => der(pem).toString("base64");

const TA = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8f9a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b";
const PROFILE = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const ROLE = "arn:aws:iam::123456789012:role/RaAgentTest";
const NOW = new Date("2026-01-02T03:04:05.999Z");
const BODY = '{"durationSeconds":3600}';

/** The CreateSession request before signing, as the client builds it. */
function createSessionRequest(): HttpRequest {
  return {
    method: "POST",
    host: "rolesanywhere.us-east-1.amazonaws.com",
    path: "/sessions",
    query: [["profileArn", PROFILE], ["roleArn", ROLE], ["trustAnchorArn", TA]],
    headers: { "Content-Type": "application/json", "User-Agent": "ra-agent-test/1.0", "X-Amzn-Trace-Id": "Root=1-abc" },
    body: BODY,
  };
}

const QUERY =
  "profileArn=arn%3Aaws%3Arolesanywhere%3Aus-east-1%3A123456789012%3Aprofile%2F1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d" +
  "&roleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2FRaAgentTest" +
  "&trustAnchorArn=arn%3Aaws%3Arolesanywhere%3Aus-east-1%3A123456789012%3Atrust-anchor%2F8f9a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b";
const BODY_SHA256 = "1a15f67f6619aa540b13e9a4c37d149fb2c9bdea25d82b73a3878826694dfe27";

const RSA_CREQ = [
  "POST",
  "/sessions",
  QUERY,
  "content-type:application/json",
  "host:rolesanywhere.us-east-1.amazonaws.com",
  "x-amz-date:20260102T030405Z",
  `x-amz-x509:${b64(RSA_LEAF_PEM)}`,
  `x-amz-x509-chain:${b64(INTERMEDIATE_CA_PEM)}`,
  "",
  "content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain",
  BODY_SHA256,
].join("\n");

const RSA_STS = [
  "AWS4-X509-RSA-SHA256",
  "20260102T030405Z",
  "20260102/us-east-1/rolesanywhere/aws4_request",
  "06c3c7218bcc506a45db243f1374e0c560d447dfb3e766af3255734da5fd0d57",
].join("\n");

const RSA_SIGNATURE =
  "2635f960ae56be1664e351f189cdff5e6e006b752df48c52c64873e0296174c6e65cb9c1e10fc296d9db9efdcf2b7276b1daa64c5d1764a2297343dd7af85f64" +
  "dc8872984bbb52ce6922c26678844e189cdecb9a863af394d293b73dd18f2ac0d8241f74f95b078e61eda54cc67a8527391a3dabbc35661f5138a49ce35e409a" +
  "e16a0a4cf81f69f2384c1d50334254a2701f944366d813a9b41cd056b948ee9266ff03ed685b18b96e26aeff3cd77dac0a0b161b325fcc635d6ee2e1f82e899b" +
  "9899e8f496f8b4ea1ff20b07337b1e12db4de8c29a5f3bac8d6b0c0d1ea982697a684b7232ff822acdb0807a16ea6e874e709a44eba162cccbfc6170708a9125";

const EC_CREQ = [
  "POST",
  "/sessions",
  QUERY,
  "content-type:application/json",
  "host:rolesanywhere.us-east-1.amazonaws.com",
  "x-amz-date:20260102T030405Z",
  `x-amz-x509:${b64(EC_LEAF_PEM)}`,
  "",
  "content-type;host;x-amz-date;x-amz-x509",
  BODY_SHA256,
].join("\n");

const EC_STS = [
  "AWS4-X509-ECDSA-SHA256",
  "20260102T030405Z",
  "20260102/us-east-1/rolesanywhere/aws4_request",
  "a594d620dadb974de705aaadd3d5ae47b7f372d52917e104a87bc3062e687e44",
].join("\n");

function rsaSigner(chain: Buffer[] = [der(INTERMEDIATE_CA_PEM)]): FileSigner {
  return new FileSigner(createPrivateKey(RSA_LEAF_KEY_PEM), der(RSA_LEAF_PEM), chain);
}

test("RSA: canonical request, string to sign, signature and Authorization match the golden vector", async (t) => {
  const signed = await signRequest(createSessionRequest(), rsaSigner(), { region: "us-east-1", now: NOW });
  assert.equal(signed.signing.canonicalRequest, RSA_CREQ);
  assert.equal(signed.signing.stringToSign, RSA_STS);
  assert.equal(signed.signing.signature, RSA_SIGNATURE);
  assert.equal(
    signed.headers.Authorization,
    `AWS4-X509-RSA-SHA256 Credential=${RSA_LEAF_SERIAL_DECIMAL}/20260102/us-east-1/rolesanywhere/aws4_request, ` +
      `SignedHeaders=content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain, Signature=${RSA_SIGNATURE}`,
  );
  assert.equal(signed.headers["X-Amz-Date"], "20260102T030405Z");
  assert.equal(signed.headers["X-Amz-X509"], b64(RSA_LEAF_PEM));
  assert.equal(signed.headers["X-Amz-X509-Chain"], b64(INTERMEDIATE_CA_PEM));
  assert.equal(signed.headers.Host, "rolesanywhere.us-east-1.amazonaws.com");
  assert.equal(signed.headers["User-Agent"], "ra-agent-test/1.0", "unsigned headers are still sent");
  // The signed request's own canonical form is the golden one (what a server recomputes).
  assert.equal(canonicalRequest(signed), RSA_CREQ);

  if (!needOpenssl(t)) return;
  const dir = tempDir(t);
  writeFileSync(join(dir, "key.pem"), RSA_LEAF_KEY_PEM, { mode: 0o600 });
  writeFileSync(join(dir, "sts"), signed.signing.stringToSign);
  const fromOpenssl = openssl(["dgst", "-sha256", "-sign", join(dir, "key.pem"), join(dir, "sts")]);
  assert.equal(fromOpenssl.toString("hex"), signed.signing.signature, "openssl's PKCS#1 v1.5 signature is byte-identical");
});

test("ECDSA: golden canonical request and string to sign; the DER signature verifies with node:crypto and openssl", async (t) => {
  const signer = new FileSigner(createPrivateKey(EC_LEAF_KEY_PEM), der(EC_LEAF_PEM), []);
  const signed = await signRequest(createSessionRequest(), signer, { region: "us-east-1", now: NOW });
  assert.equal(signed.signing.canonicalRequest, EC_CREQ);
  assert.equal(signed.signing.stringToSign, EC_STS);
  assert.equal(signed.headers["X-Amz-X509-Chain"], undefined, "no chain header without intermediates");
  const signature = Buffer.from(signed.signing.signature, "hex");
  assert.equal(signature[0], 0x30, "DER SEQUENCE, not raw r||s");
  const publicKey = new X509Certificate(der(EC_LEAF_PEM)).publicKey;
  assert.ok(verify("sha256", Buffer.from(EC_STS), { key: publicKey, dsaEncoding: "der" }, signature));
  assert.equal(
    signed.headers.Authorization,
    authorizationHeader("AWS4-X509-ECDSA-SHA256", EC_LEAF_SERIAL_DECIMAL, "20260102/us-east-1/rolesanywhere/aws4_request", "content-type;host;x-amz-date;x-amz-x509", signed.signing.signature),
  );

  if (!needOpenssl(t)) return;
  const dir = tempDir(t);
  writeFileSync(join(dir, "pub.pem"), createPublicKey(EC_LEAF_KEY_PEM).export({ type: "spki", format: "pem" }));
  writeFileSync(join(dir, "sts"), EC_STS);
  writeFileSync(join(dir, "sig"), signature);
  assert.match(openssl(["dgst", "-sha256", "-verify", join(dir, "pub.pem"), "-signature", join(dir, "sig"), join(dir, "sts")]).toString(), /Verified OK/);
});

test("caller headers named like signing headers are replaced; Content-Type defaults to application/json", async () => {
  const req = createSessionRequest();
  req.headers = { host: "evil.example", "x-amz-date": "19990101T000000Z", authorization: "old", "User-Agent": "ua" };
  const signed = await signRequest(req, rsaSigner(), { region: "us-east-1", now: NOW });
  assert.equal(signed.signing.canonicalRequest, RSA_CREQ);
  assert.deepEqual(Object.keys(signed.headers).sort(), ["Authorization", "Content-Type", "Host", "User-Agent", "X-Amz-Date", "X-Amz-X509", "X-Amz-X509-Chain"]);
});

test("the chain header takes at most 5 certificates: 5 are sent comma-joined, 6 are refused before signing", async () => {
  const int = der(INTERMEDIATE_CA_PEM);
  const five = await signRequest(createSessionRequest(), rsaSigner([int, int, int, int, int]), { region: "us-east-1", now: NOW });
  assert.equal(five.headers["X-Amz-X509-Chain"], Array(5).fill(int.toString("base64")).join(","));
  let signCalls = 0;
  const six = rsaSigner([int, int, int, int, int, int]);
  const original = six.sign.bind(six);
  six.sign = (m, d) => (signCalls++, original(m, d));
  await assert.rejects(signRequest(createSessionRequest(), six, { region: "us-east-1", now: NOW }), { code: "TOO_MANY_INTERMEDIATES", kind: "usage" });
  assert.equal(signCalls, 0);
});

test("region and service go into the scope; an invalid region is refused", async () => {
  const signed = await signRequest(createSessionRequest(), rsaSigner(), { region: "cn-north-1", now: NOW });
  assert.equal(signed.signing.scope, "20260102/cn-north-1/rolesanywhere/aws4_request");
  assert.match(signed.headers.Authorization, /Credential=1311768467294899695\/20260102\/cn-north-1\/rolesanywhere\/aws4_request,/);
  await assert.rejects(signRequest(createSessionRequest(), rsaSigner(), { region: "", now: NOW }), { code: "INVALID_REGION" });
});
