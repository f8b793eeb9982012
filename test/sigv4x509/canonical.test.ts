/**
 * Generic SigV4 canonicalization against AWS's published SigV4 test suite
 * (2015-08-30, region us-east-1, service "service", key AKIDEXAMPLE). The
 * canonical requests are written out by hand from the suite's .req files; the
 * suite's published canonical-request hashes and HMAC signatures check them
 * independently (the HMAC key derivation is done here, in the test).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import {
  canonicalHeaderValue,
  canonicalQueryString,
  canonicalRequest,
  canonicalUri,
  canonicalHeaders,
  credentialScope,
  formatAmzDate,
  normalizePath,
  signedHeaders,
  stringToSign,
  uriEncode,
  type HttpRequest,
} from "../../src/sigv4x509";

const SUITE_DATE = "20150830T123600Z";
const SUITE_SCOPE = "20150830/us-east-1/service/aws4_request";
const SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** AWS4-HMAC-SHA256 over a string to sign: only to check canonicalization against the suite's signatures. */
function hmacSignature(sts: string): string {
  const h = (key: Buffer | string, data: string) => createHmac("sha256", key).update(data).digest();
  const kSigning = h(h(h(h("AWS4" + SUITE_SECRET, "20150830"), "us-east-1"), "service"), "aws4_request");
  return createHmac("sha256", kSigning).update(sts).digest("hex");
}

interface SuiteCase {
  name: string;
  request: HttpRequest;
  creq: string;
  /** Published hex SHA-256 of the canonical request, when the suite's .sts was at hand. */
  creqHash?: string;
  /** Published signature from the suite's .authz. */
  signature: string;
}

const host = "example.amazonaws.com";
const baseHeaders = { Host: host, "X-Amz-Date": SUITE_DATE };

const CASES: SuiteCase[] = [
  {
    name: "get-vanilla",
    request: { method: "GET", host, path: "/", headers: baseHeaders },
    creq: "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + EMPTY,
    creqHash: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
    signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
  },
  {
    name: "get-vanilla-query-order-key-case",
    request: { method: "GET", host, path: "/", query: [["Param2", "value2"], ["Param1", "value1"]], headers: baseHeaders },
    creq: "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + EMPTY,
    creqHash: "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
    signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
  },
  {
    name: "post-vanilla-query",
    request: { method: "POST", host, path: "/", query: { Param1: "value1" }, headers: baseHeaders },
    creq: "POST\n/\nParam1=value1\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + EMPTY,
    creqHash: "9d659678c1756bb3113e2ce898845a0a79dbbc57b740555917687f1b3340fbbd",
    signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
  },
  {
    name: "post-x-www-form-urlencoded",
    request: {
      method: "POST", host, path: "/",
      headers: { "Content-Type": "application/x-www-form-urlencoded", ...baseHeaders },
      body: "Param1=value1",
    },
    creq:
      "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n" +
      "content-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
    creqHash: "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281",
    signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
  },
  {
    name: "get-header-value-trim",
    request: { method: "GET", host, path: "/", headers: { ...baseHeaders, "My-Header1": " value1", "My-Header2": ' "a   b   c"' } },
    creq: 'GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:"a b c"\nx-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n' + EMPTY,
    signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
  },
  {
    name: "get-space (path segment with a space)",
    request: { method: "GET", host, path: "/example space/", headers: baseHeaders },
    creq: "GET\n/example%20space/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + EMPTY,
    signature: "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
  },
  {
    name: "get-utf8",
    request: { method: "GET", host, path: "/ሴ", headers: baseHeaders },
    creq: "GET\n/%E1%88%B4\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + EMPTY,
    signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
  },
  {
    name: "get-vanilla-utf8-query",
    request: { method: "GET", host, path: "/", query: { "ሴ": "bar" }, headers: baseHeaders },
    creq: "GET\n/\n%E1%88%B4=bar\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + EMPTY,
    signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
  },
  {
    name: "normalize-path/get-slashes",
    request: { method: "GET", host, path: "//example//", headers: baseHeaders },
    creq: "GET\n/example/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + EMPTY,
    signature: "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
  },
  {
    name: "normalize-path/get-relative-relative",
    request: { method: "GET", host, path: "/example1/example2/../..", headers: baseHeaders },
    creq: "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + EMPTY,
    signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
  },
];

for (const c of CASES) {
  test(`SigV4 test suite: ${c.name}`, () => {
    const creq = canonicalRequest(c.request);
    assert.equal(creq, c.creq);
    const hash = createHash("sha256").update(creq).digest("hex");
    if (c.creqHash) assert.equal(hash, c.creqHash);
    const sts = stringToSign("AWS4-HMAC-SHA256", SUITE_DATE, credentialScope(SUITE_DATE, "us-east-1", "service"), hash);
    assert.equal(sts, `AWS4-HMAC-SHA256\n${SUITE_DATE}\n${SUITE_SCOPE}\n${hash}`);
    assert.equal(hmacSignature(sts), c.signature);
  });
}

test("uriEncode: unreserved characters stay, everything else is UTF-8 percent-encoded in upper case", () => {
  assert.equal(uriEncode("AZaz09-._~"), "AZaz09-._~");
  assert.equal(uriEncode("a b+c=d&e"), "a%20b%2Bc%3Dd%26e");
  assert.equal(uriEncode("arn:aws:iam::123456789012:role/x"), "arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fx");
  assert.equal(uriEncode("/a/b", true), "/a/b");
  assert.equal(uriEncode("ሴ"), "%E1%88%B4");
  assert.equal(uriEncode("100%"), "100%25");
  assert.equal(uriEncode("é😀"), "%C3%A9%F0%9F%98%80");
});

test("canonicalUri encodes the wire path once more (double encoding, as SigV4 wants outside S3)", () => {
  assert.equal(canonicalUri(""), "/");
  assert.equal(canonicalUri("/sessions"), "/sessions");
  assert.equal(canonicalUri("/a%20b"), "/a%2520b");
  assert.equal(canonicalUri("/prefix/sessions"), "/prefix/sessions");
  assert.equal(normalizePath("/./a/./b/../c/"), "/a/c/");
  assert.equal(normalizePath("/.."), "/");
});

test("canonicalQueryString sorts by encoded key, then value, keeps repeated and empty values", () => {
  assert.equal(canonicalQueryString(undefined), "");
  assert.equal(canonicalQueryString({}), "");
  assert.equal(canonicalQueryString([["b", "2"], ["a", "2"], ["a", "1"], ["c", ""]]), "a=1&a=2&b=2&c=");
  // Sorting is on the encoded form: "%" (0x25) sorts before letters, upper case before lower case.
  assert.equal(canonicalQueryString([["b", "x"], ["B", "x"], [" a", "x"]]), "%20a=x&B=x&b=x");
  assert.equal(canonicalQueryString({ k: "a b/c" }), "k=a%20b%2Fc");
});

test("headers: lower-cased, sorted, trimmed; Authorization, User-Agent and X-Amzn-Trace-Id are not signed", () => {
  const headers = {
    "X-Amz-Date": "20260102T030405Z",
    Host: "h",
    Authorization: "x",
    "User-Agent": "ua",
    "X-Amzn-Trace-Id": "Root=1",
    "My-Header": "  a \t b  ",
    "my-header": "c",
  };
  assert.equal(signedHeaders(headers), "host;my-header;x-amz-date");
  assert.equal(canonicalHeaders(headers), "host:h\nmy-header:a b,c\nx-amz-date:20260102T030405Z\n");
  assert.equal(canonicalHeaderValue("  x  y  "), "x y");
});

test("X-Amz-Date and credential scope formats", () => {
  assert.equal(formatAmzDate(new Date("2026-01-02T03:04:05.678Z")), "20260102T030405Z");
  assert.equal(credentialScope(new Date("2026-01-02T23:59:59Z"), "eu-west-1"), "20260102/eu-west-1/rolesanywhere/aws4_request");
  assert.equal(credentialScope("20260102T030405Z", "us-east-1", "service"), "20260102/us-east-1/service/aws4_request");
  assert.throws(() => credentialScope("20260102T030405Z", "", "rolesanywhere"), { code: "INVALID_REGION" });
  assert.throws(() => credentialScope("20260102T030405Z", "us-east-1/x", "rolesanywhere"), { code: "INVALID_REGION" });
  assert.throws(() => formatAmzDate(new Date("nope")), { code: "INVALID_DATE" });
});
