/**
 * Golden vectors for the emulator's SigV4 verification, computed independently
 * of the verifier: the canonical requests and strings to sign below were
 * written by hand, hashed with sha256sum, and the RSA signature was made with
 * `openssl dgst -sha256 -sign test/emulator/fixtures/golden-rsa.key`
 * (PKCS#1 v1.5 is deterministic, so the signature is a fixed literal).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { canonicalQuery, canonicalRequest, canonicalUri, parseRawQuery, sha256Hex, stringToSign, type ReceivedRequest } from "../../src/emulator/sigv4/canonical";
import { parseAuthorization } from "../../src/emulator/sigv4/authorization";
import { verifySigV4X509Request } from "../../src/emulator/sigv4x509-verifier";
import { sigV4SigningKey } from "../../src/emulator/sts";
import { RolesAnywhereError } from "../../src/emulator/service-error";
import { createHmac } from "node:crypto";
import { fixturesDir, requireCommand } from "./helpers";

// DER of test/emulator/fixtures/golden-rsa.pem (serial 0x1A2B3C4D5E6F = 28772997619311), base64.
const GOLDEN_RSA_CERT_B64 = [
  "MIIDLDCCAhSgAwIBAgIGGis8TV5vMA0GCSqGSIb3DQEBCwUAMCUxIzAhBgNVBAMMGnJhLWFnZW50IGdvbGRlbiB2ZWN0b3IgUlNB",
  "MCAXDTI2MTEyNTE0MTIwNFoYDzIxMjYxMTAxMTQxMjA0WjAlMSMwIQYDVQQDDBpyYS1hZ2VudCBnb2xkZW4gdmVjdG9yIFJTQTCC",
  "ASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBAJ/cuNv7U24m2gHd3KMuxM0TnYWiUuEbkHX61WjPCSyTfPt6uDeLKdMspyCc",
  "cLVs395dCK00WrMSkue95nPPlOP2kiB7uCcdgr/SuOIg5EpHZ+ehQfOhAU8P8MIbItF8PmIwov/0WyCbIuCLtu28EAxH0FOt9WsK",
  "+ebyC17u/MWNR4WyJtc5N8TgAyDYKqzUw3rMLquoaP6QUsOV5PxgWPp64k3gFchYbgDBF4nP4h/iXOnE1fS3WJCVjcFY82s6DkqP",
  "7dAikkk+DzW6K7+GyPEwa5z/0xnDg7s3i+fwGtWtjbCTrd2WzMtIkMdEB/Jxrz8I1X4hJETuqAKDsaq/wxMCAwEAAaNgMF4wHQYD",
  "VR0OBBYEFEhX+tAKOXQT7EqN3xsUzO/JkORaMB8GA1UdIwQYMBaAFEhX+tAKOXQT7EqN3xsUzO/JkORaMAwGA1UdEwEB/wQCMAAw",
  "DgYDVR0PAQH/BAQDAgeAMA0GCSqGSIb3DQEBCwUAA4IBAQAcUyQzJgZyJZ52Tm7fk7qk3l7OdyTAN7mH6hDIgCwlyjc3ClsvH4rs",
  "9K2awkNktp9laQzHwJWIIIINtVhbg/VmG4fzNKMgeGRPKRenHbw43CopCGUyn4kYk65dTFlRza8hsIVO64dtIeCJUkJwt+gbfa3y",
  "r5LsS2mUzV+VU/TdYqTyFsj+D5vwuiElU14cYp8iVYbDK2MyoarS+3qH08BrQ0y34Wz49vuU47wd6WTlvY7s4tqtRiujiCi+M8qC",
  "ESQvZJzyMh/lwawyrhj+Mh3ZPdkKoNGAT/Fe6TxP37cFdVCIhefq7Mo9EaGXVIjHA9TEy7Wb2/Tmkls+cHgU9q1G",
].join("");

// The request on the wire: query out of order, mixed-case and absent percent-encoding,
// a signed header with runs of spaces, an unsigned User-Agent.
const WIRE_TARGET =
  "/sessions?trustAnchorArn=arn%3aaws%3arolesanywhere%3aus-east-1%3a123456789012%3atrust-anchor%2f11111111-2222-4333-8444-555555555555" +
  "&roleArn=arn:aws:iam::123456789012:role/Golden.Role_1%40x" +
  "&profileArn=arn%3Aaws%3Arolesanywhere%3Aus-east-1%3A123456789012%3Aprofile%2Faaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
const BODY = '{"durationSeconds":3600}';

const GOLDEN_CANONICAL_REQUEST =
  "POST\n" +
  "/sessions\n" +
  "profileArn=arn%3Aaws%3Arolesanywhere%3Aus-east-1%3A123456789012%3Aprofile%2Faaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee" +
  "&roleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2FGolden.Role_1%40x" +
  "&trustAnchorArn=arn%3Aaws%3Arolesanywhere%3Aus-east-1%3A123456789012%3Atrust-anchor%2F11111111-2222-4333-8444-555555555555\n" +
  "content-type:application/json\n" +
  "host:rolesanywhere.us-east-1.amazonaws.com\n" +
  "x-amz-date:20240115T083000Z\n" +
  `x-amz-x509:${GOLDEN_RSA_CERT_B64}\n` +
  "x-custom-note:spaced out value\n" +
  "\n" +
  "content-type;host;x-amz-date;x-amz-x509;x-custom-note\n" +
  "1a15f67f6619aa540b13e9a4c37d149fb2c9bdea25d82b73a3878826694dfe27";

const GOLDEN_STRING_TO_SIGN =
  "AWS4-X509-RSA-SHA256\n" +
  "20240115T083000Z\n" +
  "20240115/us-east-1/rolesanywhere/aws4_request\n" +
  "3c9e68cab18e68cb5f1f42f2ae3025e57598a6b12fed3a2be513b89126d075a1";

const GOLDEN_RSA_SIGNATURE =
  "5e44f1c2326de95dea181694224da6caa0d8ba07bed5e159366d6ba3624dbb1657a6a8ec6b0fbd18d30486da9a76003737e1b746475dae3074e4bf9a5ca67ed8" +
  "d8d983fc9441aa42c105ca0e4ba1eefa39f81602266e1da9b1d0789e5f996df087a733031de2e1dc3983a48c80f5509288dd26d02bba2e1e3c8f49164f7d744f" +
  "db8eee1bb603db0dadc81c0bda0352335003e5abe9212edf5250aec04b7b7b15a1dcefc05708398068883b5aaa79f79d839f1860e9f17ccc4e6853a8964bbea6" +
  "7443e9ed9f7e7b4c31429e4d3ee6edb21fdc542ea95351cd8b8f832df800da35dc5beece5f2970e75bfaffa561353f668b8dd5a00db7c0494634b3dfecc8d934";

const SIGNED_HEADERS = "content-type;host;x-amz-date;x-amz-x509;x-custom-note";
const NOW = new Date("2024-01-15T08:31:10Z");

function goldenRequest(overrides: Partial<ReceivedRequest> = {}, signature = GOLDEN_RSA_SIGNATURE): ReceivedRequest {
  return {
    method: "POST",
    target: WIRE_TARGET,
    headers: [
      ["Host", "rolesanywhere.us-east-1.amazonaws.com"],
      ["Content-Type", "application/json"],
      ["X-Amz-Date", "20240115T083000Z"],
      ["X-Amz-X509", GOLDEN_RSA_CERT_B64],
      ["X-Custom-Note", "  spaced    out   value  "],
      ["User-Agent", "golden/1.0 (not signed)"],
      ["Authorization", `AWS4-X509-RSA-SHA256 Credential=28772997619311/20240115/us-east-1/rolesanywhere/aws4_request, SignedHeaders=${SIGNED_HEADERS}, Signature=${signature}`],
    ],
    body: Buffer.from(BODY),
    ...overrides,
  };
}

const opts = { now: NOW, region: "us-east-1", maxClockSkewSeconds: 300 };

test("the fixture certificate is the one whose base64 is written in this test", () => {
  const pem = readFileSync(join(fixturesDir, "golden-rsa.pem"), "utf8");
  const b64 = pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "");
  assert.equal(b64, GOLDEN_RSA_CERT_B64);
});

test("canonical request of the received request equals the hand-written one", () => {
  const auth = parseAuthorization(goldenRequest().headers.find(([k]) => k === "Authorization")![1]);
  assert.deepEqual(auth.signedHeaders, SIGNED_HEADERS.split(";"));
  assert.equal(canonicalRequest(goldenRequest(), auth.signedHeaders, sha256Hex(BODY)), GOLDEN_CANONICAL_REQUEST);
});

test("string to sign equals the hand-written one", () => {
  assert.equal(stringToSign("AWS4-X509-RSA-SHA256", "20240115T083000Z", "20240115/us-east-1/rolesanywhere/aws4_request", GOLDEN_CANONICAL_REQUEST), GOLDEN_STRING_TO_SIGN);
});

test("the openssl CLI reproduces the literal RSA signature over the literal string to sign", (t) => {
  if (!requireCommand(t, "openssl", ["version"])) return;
  const sig = execFileSync("openssl", ["dgst", "-sha256", "-sign", join(fixturesDir, "golden-rsa.key")], { input: GOLDEN_STRING_TO_SIGN });
  assert.equal(sig.toString("hex"), GOLDEN_RSA_SIGNATURE);
});

test("the verifier accepts the golden RSA request", () => {
  const verified = verifySigV4X509Request(goldenRequest(), opts);
  assert.equal(verified.canonicalRequest, GOLDEN_CANONICAL_REQUEST);
  assert.equal(verified.stringToSign, GOLDEN_STRING_TO_SIGN);
  assert.equal(verified.leaf.serialDecimal, "28772997619311");
});

test("the verifier accepts an EC request signed by the openssl CLI over a hand-written string to sign", (t) => {
  if (!requireCommand(t, "openssl", ["version"])) return;
  const pem = readFileSync(join(fixturesDir, "golden-ec.pem"), "utf8");
  const certB64 = pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "");
  const canonical =
    "POST\n/sessions\n\n" +
    "host:127.0.0.1:8443\n" +
    "x-amz-date:20240115T083000Z\n" +
    `x-amz-x509:${certB64}\n` +
    "\nhost;x-amz-date;x-amz-x509\n" +
    // sha256 of the empty body
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  const toSign = `AWS4-X509-ECDSA-SHA256\n20240115T083000Z\n20240115/us-east-1/rolesanywhere/aws4_request\n${sha256Hex(canonical)}`;
  // ECDSA is randomised: sign here with openssl, the verifier never sees this text.
  const sig = execFileSync("openssl", ["dgst", "-sha256", "-sign", join(fixturesDir, "golden-ec.key")], { input: toSign }).toString("hex");
  const request: ReceivedRequest = {
    method: "POST",
    target: "/sessions",
    headers: [
      ["host", "127.0.0.1:8443"],
      ["x-amz-date", "20240115T083000Z"],
      ["x-amz-x509", certB64],
      // serial 0x0102030405060708 in decimal
      ["authorization", `AWS4-X509-ECDSA-SHA256 Credential=72623859790382856/20240115/us-east-1/rolesanywhere/aws4_request, SignedHeaders=host;x-amz-date;x-amz-x509, Signature=${sig}`],
    ],
    body: Buffer.alloc(0),
  };
  const verified = verifySigV4X509Request(request, opts);
  assert.equal(verified.canonicalRequest, canonical);
  assert.equal(verified.stringToSign, toSign);
});

function assertDenied(fn: () => unknown, rule: string, type = "AccessDeniedException"): void {
  assert.throws(fn, (e: unknown) => e instanceof RolesAnywhereError && e.rule === rule && e.type === type);
}

test("golden request with a changed body, query, signed header or method no longer verifies", () => {
  assertDenied(() => verifySigV4X509Request(goldenRequest({ body: Buffer.from('{"durationSeconds":3601}') }), opts), "signature");
  assertDenied(() => verifySigV4X509Request(goldenRequest({ target: WIRE_TARGET.replace("Golden.Role_1", "Golden.Role_2") }), opts), "signature");
  assertDenied(() => verifySigV4X509Request(goldenRequest({ method: "PUT" }), opts), "signature");
  const headers = goldenRequest().headers.map(([k, v]) => [k, k === "X-Custom-Note" ? "spaced out value!" : v] as [string, string]);
  assertDenied(() => verifySigV4X509Request(goldenRequest({ headers }), opts), "signature");
  // An unsigned header may change freely.
  const ua = goldenRequest().headers.map(([k, v]) => [k, k === "User-Agent" ? "other" : v] as [string, string]);
  verifySigV4X509Request(goldenRequest({ headers: ua }), opts);
});

test("golden request checked at a time more than 5 minutes away is refused", () => {
  assertDenied(() => verifySigV4X509Request(goldenRequest(), { ...opts, now: new Date("2024-01-15T08:35:01Z") }), "date-skew");
  assertDenied(() => verifySigV4X509Request(goldenRequest(), { ...opts, now: new Date("2024-01-15T08:24:59Z") }), "date-skew");
  verifySigV4X509Request(goldenRequest(), { ...opts, now: new Date("2024-01-15T08:35:00Z") });
});

test("canonical URI: dot segments removed, each segment encoded twice", () => {
  assert.equal(canonicalUri("/"), "/");
  assert.equal(canonicalUri(""), "/");
  assert.equal(canonicalUri("/sessions"), "/sessions");
  assert.equal(canonicalUri("/a/./b/../c"), "/a/c");
  assert.equal(canonicalUri("/a%20b/%7Euser"), "/a%2520b/~user");
  assert.equal(canonicalUri("/x/"), "/x/");
});

test("canonical query: decoded, re-encoded with upper-case hex, sorted by name then value", () => {
  assert.equal(canonicalQuery(parseRawQuery("b=2&a=z&a=y&c")), "a=y&a=z&b=2&c=");
  assert.equal(canonicalQuery(parseRawQuery("k=%7e%2a%20+/")), "k=~%2A%20%2B%2F");
  assert.equal(canonicalQuery(parseRawQuery("")), "");
  assert.equal(canonicalQuery(parseRawQuery("%C3%A9=%e2%82%ac")), "%C3%A9=%E2%82%AC");
});

// AWS's published SigV4 example (IAM ListUsers, "Create a signed AWS API request" in the IAM user guide):
// the canonical request, string to sign and signature below are theirs.
test("SigV4-HMAC: AWS's published ListUsers example", () => {
  const request: ReceivedRequest = {
    method: "GET",
    target: "/?Action=ListUsers&Version=2010-05-08",
    headers: [
      ["Content-Type", "application/x-www-form-urlencoded; charset=utf-8"],
      ["Host", "iam.amazonaws.com"],
      ["X-Amz-Date", "20150830T123600Z"],
    ],
    body: Buffer.alloc(0),
  };
  const canonical = canonicalRequest(request, ["content-type", "host", "x-amz-date"], sha256Hex(""));
  assert.equal(
    canonical,
    "GET\n/\nAction=ListUsers&Version=2010-05-08\ncontent-type:application/x-www-form-urlencoded; charset=utf-8\nhost:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  const toSign = stringToSign("AWS4-HMAC-SHA256", "20150830T123600Z", "20150830/us-east-1/iam/aws4_request", canonical);
  assert.equal(toSign, "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\nf536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
  const key = sigV4SigningKey("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "iam");
  assert.equal(key.toString("hex"), "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
  assert.equal(createHmac("sha256", key).update(toSign).digest("hex"), "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
});
