/**
 * Which proxy, if any, a CreateSession request goes through under `--with-proxy`:
 * HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment (upper-case names
 * first), or explicit settings that override them.
 *
 * The rules are those of Go's `http.ProxyFromEnvironment`, which the reference
 * helper (aws_signing_helper `--with-proxy`) uses, so that a drop-in replacement
 * proxies exactly the calls the helper proxied: an https endpoint uses only
 * HTTPS_PROXY, loopback is never proxied, and NO_PROXY takes domains (with their
 * subdomains), IP addresses and CIDR ranges. `proxy-from-env` is not used: its
 * rules differ (no CIDR, no loopback rule) and it reads only `process.env`, while
 * callers may pass the settings.
 */
import { BlockList, isIP } from "node:net";
import { usageError } from "../errors";

/** Proxy settings; each field falls back to the environment when absent. */
export interface ProxySettings {
  /** Proxy for http: endpoints; `http_proxy` / `HTTP_PROXY` when absent. */
  httpProxy?: string;
  /** Proxy for https: endpoints; `https_proxy` / `HTTPS_PROXY` when absent (never `httpProxy`, as in curl and Go). */
  httpsProxy?: string;
  /** Hosts reached directly (NO_PROXY syntax); `no_proxy` / `NO_PROXY` when absent; "" for none. */
  noProxy?: string;
}

/** Settings after the environment fallbacks, proxy URLs parsed. */
export interface ResolvedProxySettings {
  httpProxy?: URL;
  httpsProxy?: URL;
  noProxy: string;
}

type Env = Readonly<Record<string, string | undefined>>;

/** `user:password@` replaced, so that a proxy URL can appear in errors and logs. */
export function redactProxyUrl(url: URL): string {
  if (!url.username && !url.password) return url.href;
  const copy = new URL(url.href);
  copy.username = "***";
  copy.password = "";
  return copy.href;
}

/**
 * The proxy URL without `user:password@`, and the `Proxy-Authorization` header
 * (Basic) that carries them instead. https-proxy-agent would build the same
 * header from the URL, but it also prints its URL under `DEBUG=https-proxy-agent`.
 */
export function splitProxyCredentials(url: URL): { url: URL; headers: Record<string, string> } {
  if (!url.username && !url.password) return { url, headers: {} };
  const bare = new URL(url.href);
  bare.username = "";
  bare.password = "";
  // Checked when the URL was parsed (parseProxyUrl), so this cannot throw.
  const credentials = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
  return { url: bare, headers: { "Proxy-Authorization": `Basic ${Buffer.from(credentials).toString("base64")}` } };
}

/**
 * Parses a proxy URL as curl does: `host:port` without a scheme means http://.
 * @throws RaError `INVALID_PROXY` unless an http:// or https:// URL with a host
 *   and a user and password in valid percent-encoding.
 */
function parseProxyUrl(value: string, name: string): URL {
  let url: URL | undefined;
  try {
    url = new URL(value.includes("://") ? value : `http://${value}`);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || !url.hostname) {
    // The raw value may hold a password: name the variable, not its content.
    throw usageError("INVALID_PROXY", `${name} is not an http:// or https:// proxy URL`, `set ${name} to http://[user:password@]proxy.example.com:3128 (SOCKS proxies are not supported)`);
  }
  try {
    decodeURIComponent(url.username);
    decodeURIComponent(url.password);
  } catch {
    throw usageError("INVALID_PROXY", `the user or password in ${name} is not valid percent-encoding`, "write a % in them as %25 (and @ as %40, : as %3A)");
  }
  return url;
}

/**
 * Applies the environment fallbacks to explicit settings and parses the proxy URLs.
 * As Go reads them: the upper-case variable first, then the lower-case one; an empty
 * variable counts as unset.
 * @remarks An `HTTP_PROXY` from the environment that is not a usable URL is ignored,
 *   as Go ignores it: it applies only to plain `http://` endpoints, which are loopback
 *   and never proxied, and other tools may have set it (a SOCKS proxy, say).
 * @throws RaError `INVALID_PROXY` when `HTTPS_PROXY` or an explicit proxy is not an http(s) URL.
 */
export function resolveProxySettings(explicit: ProxySettings = {}, env: Env = process.env): ResolvedProxySettings {
  const pick = (value: string | undefined, lower: string): [string | undefined, string, boolean] => {
    if (value !== undefined) return [value, `the ${lower} option`, true];
    const upper = lower.toUpperCase();
    return env[upper] ? [env[upper], upper, false] : [env[lower] || undefined, lower, false];
  };
  const [httpValue, httpName, httpExplicit] = pick(explicit.httpProxy, "http_proxy");
  const [httpsValue, httpsName] = pick(explicit.httpsProxy, "https_proxy");
  const [noProxy] = pick(explicit.noProxy, "no_proxy");
  let httpProxy: URL | undefined;
  try {
    httpProxy = httpValue ? parseProxyUrl(httpValue, httpName) : undefined;
  } catch (e) {
    if (httpExplicit) throw e;
  }
  const httpsProxy = httpsValue ? parseProxyUrl(httpsValue, httpsName) : undefined;
  return { httpProxy, httpsProxy, noProxy: noProxy ?? "" };
}

function stripBrackets(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/** Whether an IP literal is a loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104). */
function isLoopbackIp(ip: string): boolean {
  const family = isIP(ip);
  if (family === 4) return ip.startsWith("127.");
  if (family !== 6) return false;
  const loopback = new BlockList();
  loopback.addAddress("::1", "ipv6");
  loopback.addSubnet("::ffff:127.0.0.0", 104, "ipv6");
  return loopback.check(ip, "ipv6");
}

/** Whether the IP literal `ip` lies in the CIDR range `range` ("10.0.0.0/8", "fd00::/8"); false for anything unparsable. */
function inCidr(ip: string, range: string): boolean {
  const [base, bits] = range.split("/");
  const family = isIP(base);
  const prefix = Number(bits);
  if (!family || family !== isIP(ip) || !/^\d+$/.test(bits) || prefix > (family === 4 ? 32 : 128)) return false;
  const list = new BlockList();
  const type = family === 4 ? "ipv4" : "ipv6";
  list.addSubnet(base, prefix, type);
  return list.check(ip, type);
}

/**
 * True when `url` is reached directly: its host is `localhost` or a loopback
 * address (never proxied, whatever NO_PROXY says), or NO_PROXY lists it. NO_PROXY
 * entries are separated by commas, blanks around them trimmed: `*` (every host); an IP address or a
 * CIDR range (`10.0.0.0/8`, `fd00::/8`), which match IP-literal hosts only; a domain,
 * which matches that host and its subdomains (`example.com`), or its subdomains
 * only with a leading `.` or `*.`; IP addresses and domains may carry a `:port`;
 * IPv6 addresses are written `[::1]` or `::1`. Names are compared without DNS.
 * @remarks Go's `http.ProxyFromEnvironment` rules, as the reference helper applies them.
 */
export function bypassesProxy(url: URL, noProxy: string): boolean {
  const host = stripBrackets(url.hostname.toLowerCase());
  if (host === "localhost" || isLoopbackIp(host)) return true;
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  const hostIsIp = isIP(host) !== 0;
  for (const raw of noProxy.toLowerCase().split(",").map((entry) => entry.trim())) {
    if (!raw) continue;
    if (raw === "*") return true;
    if (raw.includes("/")) {
      if (hostIsIp && inCidr(host, raw)) return true;
      continue;
    }
    let entry = raw;
    let entryPort: string | undefined;
    const withPort = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(raw);
    if (withPort) [entry, entryPort] = [withPort[1], withPort[2]];
    entry = stripBrackets(entry);
    // Compared as strings, as Go does: "h:0443" is not port 443.
    if (entryPort !== undefined && entryPort !== port) continue;
    if (isIP(entry)) {
      if (hostIsIp && isIP(entry) === isIP(host) && sameIp(entry, host)) return true;
      continue;
    }
    if (hostIsIp) continue;
    if (entry.startsWith("*.")) entry = entry.slice(1);
    const subdomainsOnly = entry.startsWith(".");
    const domain = subdomainsOnly ? entry.slice(1) : entry;
    if (!domain) continue;
    if (host.endsWith(`.${domain}`) || (!subdomainsOnly && host === domain)) return true;
  }
  return false;
}

/** Whether two IP literals of one family name the same address ("::1" and "0:0::1"). */
function sameIp(a: string, b: string): boolean {
  const type = isIP(a) === 4 ? "ipv4" : "ipv6";
  const list = new BlockList();
  list.addAddress(a, type);
  return list.check(b, type);
}

/** The proxy for `url`, or undefined to connect directly. */
export function proxyFor(url: URL, settings: ResolvedProxySettings): URL | undefined {
  const proxy = url.protocol === "https:" ? settings.httpsProxy : settings.httpProxy;
  return proxy && !bypassesProxy(url, settings.noProxy) ? proxy : undefined;
}
