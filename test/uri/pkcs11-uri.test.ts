import { test } from "node:test";
import assert from "node:assert/strict";
import { formatPkcs11Uri, isPkcs11Uri, parsePkcs11Uri, Pkcs11Uri, redactPkcs11Uri, withoutPin } from "../../src/uri/pkcs11-uri";
import { RaError } from "../../src/errors";

// The examples of RFC 7512 §3.
const RFC_EXAMPLES = [
  "pkcs11:",
  "pkcs11:object=my-pubkey;type=public",
  "pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
  "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin",
  "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11",
  "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
  "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin",
  "pkcs11:slot-description=Sun%20Metaslot",
  "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;library-version=1.23",
  "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;id=%01%02%03%Ba%dd%Ef%08;object=%E2%82%AC",
  "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
  "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert",
  "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a?pin-source=file:/etc/token_pin&vendor-bbb=value-b",
];

function rejects(text: string, pattern: RegExp): void {
  assert.throws(() => parsePkcs11Uri(text), (e: unknown) => {
    assert.ok(e instanceof RaError, "an RaError");
    assert.equal(e.code, "INVALID_PKCS11_URI");
    assert.equal(e.kind, "usage");
    assert.match(e.message, pattern);
    return true;
  });
}

test("every RFC 7512 example parses, formats, and parses back to the same object", () => {
  for (const text of RFC_EXAMPLES) {
    const parsed = parsePkcs11Uri(text);
    const formatted = formatPkcs11Uri(parsed);
    assert.deepStrictEqual(parsePkcs11Uri(formatted), parsed, text);
    // Formatting is canonical: a second round trip gives the same text.
    assert.equal(formatPkcs11Uri(parsePkcs11Uri(formatted)), formatted);
  }
});

test("RFC 7512 example values are decoded", () => {
  const a = parsePkcs11Uri(RFC_EXAMPLES[3]);
  assert.equal(a.token, "The Software PKCS#11 Softtoken");
  assert.equal(a.manufacturer, "Snake Oil, Inc.");
  assert.equal(a.model, "1.0");
  assert.equal(a.object, "my-certificate");
  assert.equal(a.type, "cert");
  assert.deepStrictEqual(a.id, Buffer.from([0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91]));
  assert.equal(a.serial, "");
  assert.equal(a.pinSource, "file:/etc/token_pin");

  const b = parsePkcs11Uri(RFC_EXAMPLES[9]);
  assert.equal(b.token, "My token% created by Joe");
  assert.equal(b.libraryVersion, "3");
  assert.deepStrictEqual(b.id, Buffer.from([1, 2, 3, 0xba, 0xdd, 0xef, 8]));
  assert.equal(b.object, "€");

  assert.equal(parsePkcs11Uri(RFC_EXAMPLES[10]).token, "A name with a substring %;");
  assert.equal(parsePkcs11Uri(RFC_EXAMPLES[11]).token, "Name with a small A with acute: á");
  assert.equal(parsePkcs11Uri(RFC_EXAMPLES[6]).pinValue, "the-pin");
  assert.equal(parsePkcs11Uri(RFC_EXAMPLES[4]).moduleName, "mypkcs11");
  assert.equal(parsePkcs11Uri(RFC_EXAMPLES[5]).modulePath, "/mnt/libmypkcs11.so.1");

  const v = parsePkcs11Uri(RFC_EXAMPLES[12]);
  assert.deepStrictEqual(v.vendorPath, [{ name: "vendor-aaa", value: "value-a" }]);
  assert.deepStrictEqual(v.vendorQuery, [{ name: "vendor-bbb", value: "value-b" }]);
  assert.deepStrictEqual(parsePkcs11Uri("pkcs11:"), {});
});

test("all attributes round-trip, with reserved characters percent-encoded", () => {
  const uri: Pkcs11Uri = {
    token: "Büro; a/b?c#d%e&f",
    manufacturer: "Snake Oil, Inc.",
    model: "m=1",
    serial: "00ff",
    slotDescription: "slot [1]",
    slotManufacturer: "x",
    slotId: 18446744073709551615n,
    libraryManufacturer: "lm",
    libraryDescription: "ld",
    libraryVersion: "2.40",
    object: "key 1",
    id: Buffer.from([0, 1, 0xfe, 0xff]),
    type: "private",
    pinSource: "|/usr/bin/get-pin --token 'a b'&x",
    moduleName: "softhsm2",
    modulePath: "/usr/lib/softhsm/libsofthsm2.so",
  };
  const text = formatPkcs11Uri(uri);
  assert.deepStrictEqual(parsePkcs11Uri(text), uri);
  assert.match(text, /^pkcs11:token=B%C3%BCro%3B%20a%2Fb%3Fc%23d%25e&f;/);
  assert.match(text, /id=%00%01%FE%FF/);
  assert.match(text, /slot-id=18446744073709551615/);
  assert.match(text, /module-path=\/usr\/lib\/softhsm\/libsofthsm2.so/, "'/' stays readable in the query");
  assert.match(text, /pin-source=\|\/usr\/bin\/get-pin%20--token%20'a%20b'%26x/, "'|' stays, '&' is encoded in the query");
});

test("lenient input: raw spaces and non-ASCII are accepted and encoded on output", () => {
  const uri = parsePkcs11Uri("pkcs11:token=My Token;object=clé");
  assert.equal(uri.token, "My Token");
  assert.equal(uri.object, "clé");
  assert.equal(formatPkcs11Uri(uri), "pkcs11:token=My%20Token;object=cl%C3%A9");
  assert.ok(isPkcs11Uri("PKCS11:token=x"), "the scheme is case-insensitive");
  assert.equal(parsePkcs11Uri("PKCS11:token=x").token, "x");
});

test("malformed URIs are refused with an error naming the bad part", () => {
  rejects("/path/to/cert.pem", /must start with "pkcs11:"/);
  rejects("pkcs11:token", /"token" must be written as name=value/);
  rejects("pkcs11:=x", /path attribute "" has an empty name/);
  rejects("pkcs11:token=a;;object=b", /empty path attribute/);
  rejects("pkcs11:token=a;token=b", /token appears more than once/);
  rejects("pkcs11:id=%G1", /attribute id has a bad percent-encoding/);
  rejects("pkcs11:object=abc%2", /attribute object has a bad percent-encoding/);
  rejects("pkcs11:type=key", /type must be one of cert, private, public, secret-key, data/);
  rejects("pkcs11:slot-id=0x10", /slot-id must be a decimal number/);
  rejects("pkcs11:library-version=1.x", /library-version must be M or M.N/);
  rejects("pkcs11:token=a?pin-value=1&pin-source=file:/p", /pin-value and pin-source must not both be present/);
  rejects("pkcs11:token=a?module-path=lib/x.so", /module-path must be an absolute path/);
  rejects("pkcs11:token=a?module-name=x&module-name=y", /module-name appears more than once/);
  rejects("pkcs11:object=%FF%FE", /object is not valid UTF-8/);
  rejects("pkcs11:token=a#frag", /"#" is not allowed/);
  rejects("pkcs11:tok en=a", /attribute name "tok en"/);
  rejects("pkcs11:token=a?module-name=x&4321", /query attribute #2 must be written as name=value/);
});

test("error messages never contain the PIN", () => {
  assert.throws(() => parsePkcs11Uri("pkcs11:token=a?pin-value=4271%zz"), (e: unknown) => {
    assert.ok(e instanceof RaError);
    assert.doesNotMatch(e.message + (e.hint ?? ""), /4271/);
    return true;
  });
  assert.throws(() => parsePkcs11Uri("pkcs11:token=a?4271"), (e: unknown) => e instanceof RaError && !/4271/.test(e.message + e.hint));
});

test("the PIN can be removed for printing", () => {
  const uri = parsePkcs11Uri("pkcs11:token=a;object=k?pin-value=1234");
  assert.equal(formatPkcs11Uri(withoutPin(uri)), "pkcs11:token=a;object=k");
  assert.equal(redactPkcs11Uri("pkcs11:token=a?pin-value=1234&module-name=x"), "pkcs11:token=a?module-name=x");
  assert.equal(redactPkcs11Uri("pkcs11:token=a;token=b?pin-value=1234"), "pkcs11:token=a;token=b?pin-value=[redacted]");
});

test("formatting refuses an object that could not be parsed back", () => {
  assert.throws(() => formatPkcs11Uri({ pinValue: "1", pinSource: "file:/x" }), /pin-value and pin-source/);
  assert.throws(() => formatPkcs11Uri({ modulePath: "relative.so" }), /absolute/);
  assert.throws(() => formatPkcs11Uri({ libraryVersion: "one" }), /library-version/);
});
