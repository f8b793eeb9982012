/** Proxy choice under --with-proxy: environment fallbacks and NO_PROXY matching (pure functions). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { bypassesProxy, proxyFor, redactProxyUrl, resolveProxySettings, splitProxyCredentials } from "../../src/rolesanywhere/proxy";

test("proxy settings: explicit values win, then lower-case, then upper-case variables; https falls back to the http proxy", () => {
  const env = { HTTP_PROXY: "http://upper:1", http_proxy: "http://lower:2", HTTPS_PROXY: "http://secure:3", NO_PROXY: "a.example" };
  const fromEnv = resolveProxySettings({}, env);
  assert.deepEqual([fromEnv.httpProxy?.href, fromEnv.httpsProxy?.href, fromEnv.noProxy], ["http://lower:2/", "http://secure:3/", "a.example"]);
  const explicit = resolveProxySettings({ httpProxy: "proxy.local:3128", noProxy: "" }, { HTTPS_PROXY: "https://env:4", NO_PROXY: "*" });
  assert.equal(explicit.httpProxy?.href, "http://proxy.local:3128/", "no scheme means http://");
  assert.equal(explicit.httpsProxy?.href, "https://env:4/", "an unset option still reads the environment");
  assert.equal(explicit.noProxy, "", "an explicit empty NO_PROXY overrides the environment");
  assert.equal(resolveProxySettings({}, { HTTP_PROXY: "http://only:5" }).httpsProxy?.href, "http://only:5/");
  assert.deepEqual(resolveProxySettings({}, {}), { httpProxy: undefined, httpsProxy: undefined, noProxy: "" });
});

test("a proxy URL that is not http(s) fails with INVALID_PROXY naming the variable, never its password", () => {
  for (const value of ["socks5://user:hunter2@p:1080", "http://user:hunter2@[bad", "ftp://p"]) {
    assert.throws(() => resolveProxySettings({}, { HTTPS_PROXY: value }), (e: Error & { code?: string; hint?: string }) => {
      assert.equal(e.code, "INVALID_PROXY");
      assert.match(e.message, /HTTPS_PROXY/);
      assert.doesNotMatch(e.message + String(e.hint), /hunter2/);
      return true;
    });
  }
  assert.equal(redactProxyUrl(new URL("http://user:hunter2@p:3128")), "http://***@p:3128/");
});

test("NO_PROXY: exact hosts, .domain and *.domain suffixes, ports, IPv6, * and separators", () => {
  const cases: Array<[string, string, boolean]> = [
    ["https://sts.example.com/", "sts.example.com", true],
    ["https://STS.Example.com/", "sts.example.COM", true],
    ["https://a.sts.example.com/", "sts.example.com", false],
    ["https://a.example.com/", ".example.com", true],
    ["https://a.example.com/", "*.example.com", true],
    ["https://example.com/", ".example.com", false],
    ["https://badexample.com/", ".example.com", false],
    ["https://h.example/", "h.example:443", true],
    ["https://h.example/", "h.example:8443", false],
    ["http://h.example:8080/", "h.example:8080", true],
    ["http://[::1]:8080/", "::1", true],
    ["http://[::1]:8080/", "[::1]:8080", true],
    ["http://[::1]:8080/", "[::1]:9", false],
    ["https://anything/", "*", true],
    ["https://b.example/", "a.example, b.example", true],
    ["https://b.example/", "a.example b.example", true],
    ["https://c.example/", "a.example,b.example", false],
    ["https://c.example/", "", false],
  ];
  for (const [url, noProxy, bypass] of cases) assert.equal(bypassesProxy(new URL(url), noProxy), bypass, `${url} with NO_PROXY=${noProxy}`);
});

test("proxyFor: the scheme picks the proxy; NO_PROXY sends directly", () => {
  const settings = resolveProxySettings({ httpProxy: "http://plain:1", httpsProxy: "http://secure:2", noProxy: "direct.example" });
  assert.equal(proxyFor(new URL("http://x.example/"), settings)?.host, "plain:1");
  assert.equal(proxyFor(new URL("https://x.example/"), settings)?.host, "secure:2");
  assert.equal(proxyFor(new URL("https://direct.example/"), settings), undefined);
  assert.equal(proxyFor(new URL("https://x.example/"), resolveProxySettings({}, {})), undefined);
});

test("splitProxyCredentials: the URL loses user:password, which go decoded into a Basic Proxy-Authorization header", () => {
  const { url, headers } = splitProxyCredentials(new URL("http://ops%40corp:s3cr%3At@proxy.example.com:3128"));
  assert.equal(url.href, "http://proxy.example.com:3128/");
  assert.deepEqual(headers, { "Proxy-Authorization": `Basic ${Buffer.from("ops@corp:s3cr:t").toString("base64")}` });
  const plain = new URL("http://proxy.example.com:3128");
  assert.deepEqual(splitProxyCredentials(plain), { url: plain, headers: {} });
});

test("a proxy password that is not valid percent-encoding is INVALID_PROXY, without the password", () => {
  assert.throws(
    () => resolveProxySettings({ httpProxy: "http://user:50%off@p:3128" }, {}),
    (e: Error & { code?: string }) => e.code === "INVALID_PROXY" && !e.message.includes("50%off") && /percent-encoding/.test(e.message),
  );
});
