/**
 * The HTTP(S) transport of the CreateSession client, on node's own http/https
 * modules: keep-alive agents, TLS 1.2+, an optional CA bundle, `--with-proxy`
 * CONNECT tunnels, a per-attempt deadline and a response size cap.
 *
 * Why not undici: it instantiates llhttp as WebAssembly and loads ~110 modules,
 * about 25 MB of RSS against the agent daemon's 80 MB target; node:https costs ~2 MB.
 */
import { readFile } from "node:fs/promises";
import * as http from "node:http";
import * as https from "node:https";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import type { HttpsProxyAgent } from "https-proxy-agent";
import { usageError } from "../errors";
import { logger } from "../log/logger";
import { proxyFor, redactProxyUrl, resolveProxySettings, splitProxyCredentials, type ProxySettings, type ResolvedProxySettings } from "./proxy";

/** A response body larger than this is not a CreateSession answer. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;
/**
 * Idle keep-alive sockets are closed after this long: below the idle timeouts of
 * AWS load balancers (60 s), so that a reused socket is rarely one the server is closing.
 */
const IDLE_SOCKET_TIMEOUT_MS = 4_000;

/** TLS and proxy settings of a {@link HttpTransport}. */
export interface HttpTransportOptions {
  /** Skip TLS certificate verification. */
  noVerifySsl?: boolean;
  /** Use HTTP_PROXY / HTTPS_PROXY / NO_PROXY (or `proxy`); without it no proxy is used. */
  withProxy?: boolean;
  /** Proxy settings that override the environment. */
  proxy?: ProxySettings;
  /** PEM file of the CAs to trust instead of Node's bundled ones; `AWS_CA_BUNDLE` when absent. */
  caBundlePath?: string;
  /** PEM CA certificates, instead of `caBundlePath`. */
  ca?: string | Buffer;
}

/** A complete response. */
export interface HttpResponse {
  statusCode: number;
  /** Names in lower case. */
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** No complete response within the attempt's deadline. */
export class RequestTimeoutError extends Error {
  readonly code = "ETIMEDOUT";
  constructor(readonly timeoutMs: number) {
    super(`no complete response within ${timeoutMs} ms`);
    this.name = "RequestTimeoutError";
  }
}

/** The response body exceeded {@link MAX_RESPONSE_BYTES}. */
export class ResponseTooLargeError extends Error {
  readonly code = "ERR_RESPONSE_TOO_LARGE";
  constructor(readonly statusCode: number) {
    super(`the response body is larger than ${MAX_RESPONSE_BYTES} bytes`);
    this.name = "ResponseTooLargeError";
  }
}

type TlsOptions = Pick<https.RequestOptions, "minVersion" | "rejectUnauthorized" | "ca" | "checkServerIdentity">;
type ProxyAgentClass = typeof HttpsProxyAgent;

/** Request option read by {@link requestScopedProxyAgent}: aborted when `post` gives up on the request. */
const ABANDON = "raAgentAbandon";

/**
 * https-proxy-agent whose CONNECT ends when its request is given up: a request
 * that times out before the proxy answered must not leave the socket to the proxy
 * open (in the agent, a silent proxy would otherwise cost one socket per attempt).
 * A request given up before it has a socket never emits `close`, so `post` passes
 * its own signal in the request options, which agent-base hands to `connect()`.
 * @remarks https-proxy-agent 7 reads `connectOpts` synchronously at the start of
 *   `connect()`, so each CONNECT gets its own signal here.
 */
function requestScopedProxyAgent(Base: ProxyAgentClass): ProxyAgentClass {
  return class RequestScopedProxyAgent extends Base<string> {
    override connect(req: http.ClientRequest, opts: Parameters<HttpsProxyAgent<string>["connect"]>[1]): ReturnType<HttpsProxyAgent<string>["connect"]> {
      const given = (opts as unknown as Record<string, AbortSignal | undefined>)[ABANDON];
      const shared = this.connectOpts;
      const own = new AbortController();
      // Not AbortSignal.any: on node 20 its combined signal can be collected before it fires.
      for (const signal of [shared.signal, given]) {
        if (signal?.aborted) own.abort();
        else signal?.addEventListener("abort", () => own.abort(), { once: true });
      }
      this.connectOpts = { ...shared, signal: own.signal };
      try {
        return super.connect(req, opts);
      } finally {
        this.connectOpts = shared;
      }
    }
  } as ProxyAgentClass;
}

/**
 * Reads the CA bundle the options name, if any.
 * @throws RaError `UNREADABLE_FILE`, `INVALID_CA_BUNDLE` (no PEM certificate in it).
 */
async function loadCa(o: HttpTransportOptions): Promise<string | Buffer | undefined> {
  if (o.ca !== undefined) return o.ca;
  const caPath = o.caBundlePath ?? (process.env.AWS_CA_BUNDLE || undefined);
  if (!caPath) return undefined;
  let ca: Buffer;
  try {
    ca = await readFile(caPath);
  } catch (e) {
    throw usageError("UNREADABLE_FILE", `cannot read the CA bundle ${caPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, "fix AWS_CA_BUNDLE (a PEM file of CA certificates)", e);
  }
  // Node would silently trust nothing from a DER or empty file and fail every handshake later.
  if (!ca.toString("latin1").includes("-----BEGIN CERTIFICATE-----")) {
    throw usageError("INVALID_CA_BUNDLE", `the CA bundle ${caPath} holds no PEM certificate`, "AWS_CA_BUNDLE must be a PEM file of CA certificates");
  }
  return ca;
}

/**
 * Keep-alive agents (one per scheme and proxy; in practice one, as a client
 * talks to one endpoint) and the request loop around them. Not reusable after {@link close}.
 */
export class HttpTransport {
  readonly #tls: TlsOptions;
  readonly #proxy: ResolvedProxySettings | undefined;
  readonly #ProxyAgent: ProxyAgentClass | undefined;
  readonly #agents = new Map<string, http.Agent>();
  /** Aborts CONNECTs still waiting for the proxy's answer when the transport closes. */
  readonly #closing = new AbortController();

  private constructor(tls: TlsOptions, proxy: ResolvedProxySettings | undefined, ProxyAgent: ProxyAgentClass | undefined) {
    this.#tls = tls;
    this.#proxy = proxy;
    this.#ProxyAgent = ProxyAgent;
  }

  /**
   * Reads the CA bundle and the proxy settings; loads the proxy agent only when a proxy is set.
   * @throws RaError `UNREADABLE_FILE`, `INVALID_CA_BUNDLE`, `INVALID_PROXY`.
   */
  static async create(o: HttpTransportOptions): Promise<HttpTransport> {
    const ca = await loadCa(o);
    if (o.noVerifySsl) logger.warn("TLS certificate verification is OFF (--no-verify-ssl): anyone on the path can read the credentials");
    const tls: TlsOptions = { minVersion: "TLSv1.2", rejectUnauthorized: !o.noVerifySsl, ...(ca !== undefined ? { ca } : {}) };
    const proxy = o.withProxy ? resolveProxySettings(o.proxy) : undefined;
    // TooTallNate's proxy-agents (https-proxy-agent): the CONNECT tunnel, proxy
    // authentication from the URL, TLS to https:// proxies and 407 handling. 7.x is
    // its last CommonJS line; loaded lazily so that the direct path does not pay for it.
    const ProxyAgent = proxy?.httpProxy || proxy?.httpsProxy ? requestScopedProxyAgent((await import("https-proxy-agent")).HttpsProxyAgent) : undefined;
    return new HttpTransport(tls, proxy, ProxyAgent);
  }

  /** The agent for `url`, and whether it tunnels through a proxy. */
  #agentFor(url: URL): { agent: http.Agent; proxied: boolean } {
    const proxy = this.#proxy && proxyFor(url, this.#proxy);
    const key = `${url.protocol}${proxy ? ` via ${proxy.href}` : ""}`;
    const proxied = proxy !== undefined && this.#ProxyAgent !== undefined;
    let agent = this.#agents.get(key);
    if (agent) return { agent, proxied };
    const common = { keepAlive: true, timeout: IDLE_SOCKET_TIMEOUT_MS };
    if (proxy && this.#ProxyAgent) {
      logger.debug("CreateSession goes through a proxy", { proxy: redactProxyUrl(proxy) });
      // The TLS settings also apply to an https:// proxy, as AWS_CA_BUNDLE did with undici.
      // The credentials go as a header: the agent's own URL (printed under DEBUG=https-proxy-agent) has none.
      const { url: proxyUrl, headers } = splitProxyCredentials(proxy);
      agent = new this.#ProxyAgent(proxyUrl, { ...common, ...this.#tls, headers, signal: this.#closing.signal });
    } else {
      agent = url.protocol === "https:" ? new https.Agent({ ...common, ...this.#tls }) : new http.Agent(common);
    }
    this.#agents.set(key, agent);
    return { agent, proxied };
  }

  /**
   * POSTs `body` and reads the whole response, all within `timeoutMs` (connect
   * to last body byte). The socket stays open for the next call when the exchange completes.
   *
   * @throws RequestTimeoutError past the deadline; ResponseTooLargeError; otherwise
   *   node's own errors with their `code` (ECONNREFUSED, ENOTFOUND, ECONNRESET, EPROTO, CERT_*, ...).
   */
  post(url: URL, headers: Readonly<Record<string, string>>, body: string, timeoutMs: number): Promise<HttpResponse> {
    return new Promise<HttpResponse>((resolve, reject) => {
      const secure = url.protocol === "https:";
      const { agent, proxied } = this.#agentFor(url);
      const options: https.RequestOptions = {
        method: "POST",
        headers: { ...headers, "Content-Length": String(Buffer.byteLength(body)) },
        agent,
        // Per request too: a proxy agent does not pass its own options to the TLS socket to the endpoint.
        ...(secure ? this.#tls : {}),
        // Inside a tunnel, https-proxy-agent 7 drops `host` and sets no SNI for an IP
        // endpoint, so node would check the certificate against "localhost": name the endpoint.
        ...(secure && proxied ? { checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(url.hostname.replace(/^\[|\]$/g, ""), cert) } : {}),
      };
      const abandon = new AbortController();
      if (proxied) (options as Record<string, unknown>)[ABANDON] = abandon.signal;
      let settled = false;
      const finish = (error: Error | undefined, response?: HttpResponse): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) {
          // A socket with an unread or half-sent exchange cannot be reused: destroy it,
          // and a CONNECT still waiting for the proxy with it.
          abandon.abort();
          req.destroy();
          reject(error);
        } else {
          resolve(response as HttpResponse);
        }
      };
      const req = (secure ? https : http).request(url, options, (res) => {
        const statusCode = res.statusCode ?? 0;
        if (Number(res.headers["content-length"]) > MAX_RESPONSE_BYTES) return finish(new ResponseTooLargeError(statusCode));
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) finish(new ResponseTooLargeError(statusCode));
          else chunks.push(chunk);
        });
        res.on("end", () => finish(undefined, { statusCode, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", (e) => finish(e));
        // The connection closed before the end of the body (no 'end', no 'error' in some node versions).
        res.on("close", () => finish(Object.assign(new Error("the connection closed before the end of the response"), { code: "ECONNRESET" })));
      });
      req.on("error", (e) => finish(e));
      const timer = setTimeout(() => finish(new RequestTimeoutError(timeoutMs)), timeoutMs);
      req.end(body);
    });
  }

  /** Destroys every socket, idle or busy, and aborts pending proxy CONNECTs. Idempotent. */
  close(): void {
    this.#closing.abort();
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
  }
}
