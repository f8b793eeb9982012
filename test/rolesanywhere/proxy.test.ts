/** Proxy choice under --with-proxy: environment fallbacks and NO_PROXY matching (pure functions). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { bypassesProxy, proxyFor, redactProxyUrl, resolveProxySettings, splitProxyCredentials } from "../../src/rolesanywhere/proxy";

test("proxy settings (Go's order): explicit values win, then upper-case, then lower-case variables, empty ones unset; https never falls back to the http proxy", () => {
  const env = { HTTP_PROXY: "http://upper:1", http_proxy: "http://lower:2", https_proxy: "http://secure:3", NO_PROXY: "", no_proxy: "a.example" };
  const fromEnv = resolveProxySettings({}, env);
  assert.deepEqual([fromEnv.httpProxy?.href, fromEnv.httpsProxy?.href, fromEnv.noProxy], ["http://upper:1/", "http://secure:3/", "a.example"]);
  assert.equal(resolveProxySettings({}, { HTTPS_PROXY: "http://up:4", https_proxy: "http://low:5" }).httpsProxy?.href, "http://up:4/");
  const explicit = resolveProxySettings({ httpProxy: "proxy.local:3128", noProxy: "" }, { HTTPS_PROXY: "https://env:4", NO_PROXY: "*" });
  assert.equal(explicit.httpProxy?.href, "http://proxy.local:3128/", "no scheme means http://");
  assert.equal(explicit.httpsProxy?.href, "https://env:4/", "an unset option still reads the environment");
  assert.equal(explicit.noProxy, "", "an explicit empty NO_PROXY overrides the environment");
  // As curl, Go (the reference helper) and botocore: HTTP_PROXY is for http:// URLs only.
  const httpOnly = resolveProxySettings({}, { HTTP_PROXY: "http://only:5" });
  assert.equal(httpOnly.httpsProxy, undefined);
  assert.equal(proxyFor(new URL("https://rolesanywhere.us-east-1.amazonaws.com/"), httpOnly), undefined);
  assert.equal(proxyFor(new URL("http://x.example/"), httpOnly)?.host, "only:5");
  assert.deepEqual(resolveProxySettings({}, {}), { httpProxy: undefined, httpsProxy: undefined, noProxy: "" });
});

test("an unusable HTTP_PROXY in the environment is ignored (it never applies), as in Go; an explicit one is refused", () => {
  const settings = resolveProxySettings({}, { HTTP_PROXY: "socks5://user:hunter2@s:1080", HTTPS_PROXY: "http://secure:3" });
  assert.equal(settings.httpProxy, undefined);
  assert.equal(proxyFor(new URL("https://rolesanywhere.us-east-1.amazonaws.com/"), settings)?.host, "secure:3");
  assert.throws(() => resolveProxySettings({ httpProxy: "socks5://s:1080" }, {}), { code: "INVALID_PROXY" });
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

test("NO_PROXY (Go's rules, as the reference helper): domains with subdomains, .domain and *.domain, IPs, CIDR, ports, IPv6, * and separators", () => {
  const cases: Array<[string, string, boolean]> = [
    ["https://sts.example.com/", "sts.example.com", true],
    ["https://STS.Example.com/", "sts.example.COM", true],
    ["https://a.sts.example.com/", "sts.example.com", true],
    ["https://rolesanywhere.us-east-1.amazonaws.com/", "amazonaws.com", true],
    ["https://notamazonaws.com/", "amazonaws.com", false],
    ["https://a.example.com/", ".example.com", true],
    ["https://a.example.com/", "*.example.com", true],
    ["https://example.com/", ".example.com", false],
    ["https://badexample.com/", ".example.com", false],
    ["https://h.example/", "h.example:443", true],
    ["https://h.example/", "h.example:8443", false],
    ["http://h.example:8080/", "h.example:8080", true],
    ["http://[fd00::1]:8080/", "fd00::1", true],
    ["http://[fd00::1]:8080/", "[fd00::1]:8080", true],
    ["http://[fd00::1]:8080/", "[fd00::1]:9", false],
    ["https://anything/", "*", true],
    ["https://b.example/", "a.example, b.example", true],
    ["https://b.example/", " a.example ,b.example ", true],
    ["https://b.example/", "a.example b.example", false],
    ["https://example.com/", "*.example.com", false],
    ["https://h.example/", "h.example:0443", false],
    ["https://h.example/", "h.example:0", false],
    ["https://c.example/", "a.example,b.example", false],
    ["https://c.example/", "", false],
    ["https://10.1.2.3/", "10.0.0.0/8", true],
    ["https://11.1.2.3/", "10.0.0.0/8", false],
    ["https://10.1.2.3/", "10.1.2.3", true],
    ["https://10.1.2.3/", "10.1.2.3:443", true],
    ["https://10.1.2.3/", "10.1.2.3:8443", false],
    ["https://10.1.2.4/", "10.1.2.3", false],
    ["https://[fd00::5]/", "fd00::/8", true],
    ["https://[fe00::5]/", "fd00::/8", false],
    ["https://[fd00::5]/", "fd00:0::5", true],
    ["https://10.1.2.3/", "2.10.in-addr.arpa, example.com", false],
    ["https://h.example/", "10.0.0.0/8", false],
    ["https://h.example/", "10.0.0.0/99, 10.0.0.0/x, /8, .", false],
  ];
  for (const [url, noProxy, bypass] of cases) assert.equal(bypassesProxy(new URL(url), noProxy), bypass, `${url} with NO_PROXY=${noProxy}`);
});

test("loopback is never proxied, whatever NO_PROXY says (as Go's ProxyFromEnvironment)", () => {
  const settings = resolveProxySettings({ httpProxy: "http://plain:1", httpsProxy: "http://secure:2", noProxy: "" });
  for (const url of ["http://localhost:8080/", "http://LOCALHOST/", "http://127.0.0.1:9911/", "http://127.8.9.10/", "http://[::1]:8080/", "http://[::ffff:127.0.0.1]/"]) {
    assert.equal(proxyFor(new URL(url), settings), undefined, url);
  }
  for (const url of ["http://localhost.example/", "http://128.0.0.1/", "http://[::2]/"]) assert.equal(proxyFor(new URL(url), settings)?.host, "plain:1", url);
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
