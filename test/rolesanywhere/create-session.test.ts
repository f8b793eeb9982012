/**
 * The CreateSession HTTP client against a tiny node:http(s) server in the test,
 * which checks the request it receives (method, path, query, headers, body, and
 * the SigV4-X509 signature, recomputed here independently) and answers with
 * canned bodies. This tests the client, not the emulator.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { createHash, createPrivateKey, verify, X509Certificate } from "node:crypto";
import { once } from "node:events";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { connect, type AddressInfo, type Socket } from "node:net";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createCa, issueCertificate, privateKeyToPem } from "../../scripts/lib/pki";
import { FileSigner } from "../../src/signer/file/file-signer";
import type { Signer } from "../../src/signer/signer";
import { CreateSessionClient, createSession, ServiceError, type CreateSessionClientOptions, type CreateSessionParams } from "../../src/rolesanywhere";
import { needOpenssl, openssl, tempDir } from "../sigv4x509/openssl";

const TA = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8f9a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b";
const PROFILE = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const ROLE = "arn:aws:iam::123456789012:role/RaAgentTest";

const CREDENTIALS_BODY = JSON.stringify({
  credentialSet: [{
    assumedRoleUser: { arn: "arn:aws:sts::123456789012:assumed-role/RaAgentTest/abc", assumedRoleId: "AROAEXAMPLE:abc" },
    credentials: { accessKeyId: "ASIAEXAMPLE", secretAccessKey: "secret/key", sessionToken: "token==", expiration: "2030-01-01T00:00:00Z" },
    packedPolicySize: 10,
    roleArn: ROLE,
    sourceIdentity: "CN=leaf",
  }],
  subjectArn: "arn:aws:rolesanywhere:us-east-1:123456789012:subject/xyz",
});

/** A fresh EC or RSA signer with a certificate valid now, issued by a fresh CA. */
async function makeSigner(algorithm: "EC-P256" | "RSA-2048" = "EC-P256", chain = false): Promise<Signer> {
  const ca = await createCa({ algorithm: "EC-P256" });
  const issuer = chain ? await createCa({ parent: ca, name: "CN=intermediate" }) : ca;
  const { generateKeyPair } = await import("../../scripts/lib/pki");
  const keys = await generateKeyPair(algorithm);
  const cert = await issueCertificate(issuer, keys.publicKey, { subject: "CN=leaf" });
  return new FileSigner(createPrivateKey(await privateKeyToPem(keys.privateKey)), Buffer.from(cert.rawData), chain ? [issuer.der] : []);
}

/** What the test server saw. */
interface Received {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

/**
 * Recomputes the SigV4-X509 signature of a received request from the wire (no
 * code shared with src/sigv4x509) and verifies it against the X-Amz-X509 certificate.
 */
function assertSignatureValid(r: Received): void {
  const m = /^(AWS4-X509-(?:RSA|ECDSA)-SHA256) Credential=(\d+)\/(\d{8}\/[a-z0-9-]+\/rolesanywhere\/aws4_request), SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]+)$/.exec(String(r.headers.authorization));
  assert.ok(m, `Authorization header shape: ${r.headers.authorization}`);
  const [, algorithm, serial, scope, signedHeaders, signature] = m;
  const cert = new X509Certificate(Buffer.from(String(r.headers["x-amz-x509"]), "base64"));
  assert.equal(serial, BigInt("0x" + cert.serialNumber).toString(10), "Credential carries the serial in decimal");
  const names = signedHeaders.split(";");
  assert.deepEqual(names, [...names].sort());
  for (const unsigned of ["authorization", "user-agent", "x-amzn-trace-id"]) assert.ok(!names.includes(unsigned), `${unsigned} is not signed`);
  for (const required of ["host", "x-amz-date", "x-amz-x509", "content-type"]) assert.ok(names.includes(required), `${required} is signed`);
  const [path, query = ""] = r.url.split("?");
  const sortedQuery = query.split("&").sort().join("&");
  assert.equal(query, sortedQuery, "the query is sent in canonical order");
  const creq = [
    r.method,
    path,
    query,
    names.map((n) => `${n}:${String(r.headers[n]).trim()}\n`).join(""),
    signedHeaders,
    createHash("sha256").update(r.body).digest("hex"),
  ].join("\n");
  const sts = [algorithm, String(r.headers["x-amz-date"]), scope, createHash("sha256").update(creq).digest("hex")].join("\n");
  assert.ok(verify("sha256", Buffer.from(sts), { key: cert.publicKey, dsaEncoding: "der" }, Buffer.from(signature, "hex")), "signature verifies");
}

type Handler = (r: Received, res: ServerResponse) => void;

/** Starts a local HTTP(S) server on an ephemeral loopback port; closed when the test ends. */
async function startServer(t: TestContext, handler: Handler, tls?: { key: string; cert: string; maxVersion?: "TLSv1.1" }): Promise<{ url: string; received: Received[]; server: Server }> {
  const received: Received[] = [];
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const r = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString() };
      received.push(r);
      handler(r, res);
    });
  };
  const server = tls ? createHttpsServer({ key: tls.key, cert: tls.cert, ...(tls.maxVersion ? { maxVersion: tls.maxVersion, minVersion: "TLSv1" as const } : {}) }, onRequest) : createHttpServer(onRequest);
  const sockets = new Set<Socket>();
  server.on("connection", (s: Socket) => (sockets.add(s), s.on("close", () => sockets.delete(s))));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  return { url: `${tls ? "https" : "http"}://127.0.0.1:${port}`, received, server };
}

function reply(status: number, body: string, headers: Record<string, string> = {}): Handler {
  return (_r, res) => {
    res.writeHead(status, { "Content-Type": "application/json", "x-amzn-RequestId": "req-123", ...headers });
    res.end(body);
  };
}

function params(signer: Signer, endpoint: string, extra: Partial<CreateSessionParams> = {}): CreateSessionParams & CreateSessionClientOptions {
  return { signer, trustAnchorArn: TA, profileArn: PROFILE, roleArn: ROLE, endpoint, maxAttempts: 1, retryBaseDelayMs: 0, ...extra };
}

test("201: the request carries the ARNs in the query, the body and a valid SigV4-X509 signature; credentials parse", async (t) => {
  for (const algorithm of ["EC-P256", "RSA-2048"] as const) {
    const signer = await makeSigner(algorithm, true);
    const { url, received } = await startServer(t, reply(201, CREDENTIALS_BODY));
    const result = await createSession({ ...params(signer, url, { durationSeconds: 900, roleSessionName: "host-01" }), userAgent: "ra-agent-test/9" });
    assert.deepEqual(result.credentials, { accessKeyId: "ASIAEXAMPLE", secretAccessKey: "secret/key", sessionToken: "token==", expiration: new Date("2030-01-01T00:00:00Z") });
    assert.equal(result.raw.subjectArn, "arn:aws:rolesanywhere:us-east-1:123456789012:subject/xyz");
    assert.equal(received.length, 1);
    const r = received[0];
    assert.equal(r.method, "POST");
    const url2 = new URL(r.url, "http://x");
    assert.equal(url2.pathname, "/sessions");
    assert.deepEqual([...url2.searchParams.entries()], [["profileArn", PROFILE], ["roleArn", ROLE], ["trustAnchorArn", TA]]);
    assert.deepEqual(JSON.parse(r.body), { durationSeconds: 900, roleSessionName: "host-01" });
    assert.equal(r.headers["content-type"], "application/json");
    assert.equal(r.headers["user-agent"], "ra-agent-test/9");
    assert.equal(r.headers.host, new URL(url).host);
    assert.equal(r.headers["x-amz-x509"], Buffer.from(signer.certificate).toString("base64"));
    assert.equal(r.headers["x-amz-x509-chain"], Buffer.from(signer.chain[0]).toString("base64"));
    assert.match(String(r.headers.authorization), new RegExp(`^${signer.algorithm} Credential=\\d+/\\d{8}/us-east-1/rolesanywhere/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain, Signature=`));
    assertSignatureValid(r);
  }
});

test("defaults: durationSeconds 3600, no roleSessionName; --region overrides the signing region; a base path is kept", async (t) => {
  const signer = await makeSigner();
  const { url, received } = await startServer(t, reply(201, CREDENTIALS_BODY));
  await createSession(params(signer, url + "/prefix/", { region: "eu-west-3" }));
  assert.deepEqual(JSON.parse(received[0].body), { durationSeconds: 3600 });
  assert.equal(new URL(received[0].url, "http://x").pathname, "/prefix/sessions");
  assert.match(String(received[0].headers.authorization), /\/eu-west-3\/rolesanywhere\/aws4_request/);
  assertSignatureValid(received[0]);
});

test("service errors carry the service's code, message and request id", async (t) => {
  const signer = await makeSigner();
  const cases: Array<[Handler, string, number, string | undefined, RegExp]> = [
    [reply(403, JSON.stringify({ message: "Untrusted certificate. Insufficient certificate" }), { "X-Amzn-ErrorType": "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/" }),
      "CREATE_SESSION_DENIED", 403, "AccessDeniedException", /AccessDeniedException \(HTTP 403\): Untrusted certificate/],
    [reply(400, JSON.stringify({ __type: "com.amazonaws.rolesanywhere#ValidationException", message: "durationSeconds too long" })),
      "CREATE_SESSION_INVALID", 400, "ValidationException", /ValidationException.*durationSeconds too long/],
    [reply(404, JSON.stringify({ code: "ResourceNotFoundException", message: "Trust anchor not found" })),
      "CREATE_SESSION_NOT_FOUND", 404, "ResourceNotFoundException", /Trust anchor not found/],
    [reply(429, JSON.stringify({ message: "Rate exceeded" }), { "X-Amzn-ErrorType": "ThrottlingException" }),
      "CREATE_SESSION_THROTTLED", 429, "ThrottlingException", /Rate exceeded/],
    [(_r, res) => (res.writeHead(502, { "Content-Type": "text/html" }), res.end("<html>Bad gateway</html>")),
      "CREATE_SESSION_SERVER_ERROR", 502, undefined, /HTTP 502: <html>Bad gateway/],
  ];
  for (const [handler, code, status, serviceCode, message] of cases) {
    const { url } = await startServer(t, handler);
    await assert.rejects(createSession(params(signer, url)), (e: unknown) => {
      assert.ok(e instanceof ServiceError, String(e));
      assert.equal(e.kind, "service");
      assert.equal(e.code, code);
      assert.equal(e.statusCode, status);
      assert.equal(e.serviceCode, serviceCode);
      assert.match(e.message, message);
      assert.ok(e.hint, "a hint is given");
      if (handler !== cases[4][0]) assert.equal(e.requestId, "req-123");
      return true;
    });
  }
});

test("a 2xx with malformed JSON, an empty credentialSet or missing fields is one clear error", async (t) => {
  const signer = await makeSigner();
  const cases: Array<[string, string]> = [
    ["not json", "CREATE_SESSION_BAD_RESPONSE"],
    ["[]", "CREATE_SESSION_BAD_RESPONSE"],
    [JSON.stringify({ credentialSet: [] }), "CREATE_SESSION_NO_CREDENTIALS"],
    [JSON.stringify({}), "CREATE_SESSION_NO_CREDENTIALS"],
    [JSON.stringify({ credentialSet: [{ credentials: { accessKeyId: "A", secretAccessKey: "S", expiration: "2030-01-01T00:00:00Z" } }] }), "CREATE_SESSION_BAD_RESPONSE"],
    [JSON.stringify({ credentialSet: [{ credentials: { accessKeyId: "A", secretAccessKey: "S", sessionToken: "T", expiration: "soon" } }] }), "CREATE_SESSION_BAD_RESPONSE"],
  ];
  for (const [body, code] of cases) {
    const { url } = await startServer(t, reply(201, body));
    await assert.rejects(createSession(params(signer, url)), { code, kind: "service" }, body);
  }
});

test("retryable failures (5xx, throttling) are retried, re-signed, up to maxAttempts", async (t) => {
  const signer = await makeSigner();
  let calls = 0;
  const { url, received } = await startServer(t, (r, res) => (++calls < 3 ? reply(503, "{}")(r, res) : reply(201, CREDENTIALS_BODY)(r, res)));
  const result = await createSession({ ...params(signer, url), maxAttempts: 3 });
  assert.equal(result.credentials.accessKeyId, "ASIAEXAMPLE");
  assert.equal(received.length, 3);
  received.forEach(assertSignatureValid);

  const throttled = await startServer(t, reply(429, "{}", { "X-Amzn-ErrorType": "ThrottlingException" }));
  await assert.rejects(createSession({ ...params(signer, throttled.url), maxAttempts: 2 }), { code: "CREATE_SESSION_THROTTLED" });
  assert.equal(throttled.received.length, 2);

  const denied = await startServer(t, reply(403, "{}", { "X-Amzn-ErrorType": "AccessDeniedException" }));
  await assert.rejects(createSession({ ...params(signer, denied.url), maxAttempts: 3 }), { code: "CREATE_SESSION_DENIED" });
  assert.equal(denied.received.length, 1, "a 403 is not retried");
});

test("connection refused and timeout are clear service errors", async (t) => {
  const signer = await makeSigner();
  const closed = createHttpServer();
  closed.listen(0, "127.0.0.1");
  await once(closed, "listening");
  const port = (closed.address() as AddressInfo).port;
  closed.close();
  await once(closed, "close");
  await assert.rejects(createSession(params(signer, `http://127.0.0.1:${port}`)), { code: "SERVICE_UNREACHABLE", kind: "service", message: /refused/ });

  const { url } = await startServer(t, () => undefined); // never answers
  await assert.rejects(createSession({ ...params(signer, url), timeoutMs: 300 }), { code: "SERVICE_TIMEOUT", message: /timed out after 300 ms/ });
});

test("inputs are validated before the key is used or anything is sent", async (t) => {
  const base = await makeSigner();
  let signs = 0;
  const signer: Signer = Object.assign(Object.create(base) as Signer, { sign: (m: Uint8Array, d?: "SHA256") => (signs++, base.sign(m, d)) });
  const { url, received } = await startServer(t, reply(201, CREDENTIALS_BODY));
  const bad: Array<[Partial<CreateSessionParams>, string]> = [
    [{ durationSeconds: 899 }, "INVALID_SESSION_DURATION"],
    [{ durationSeconds: 43201 }, "INVALID_SESSION_DURATION"],
    [{ durationSeconds: 1000.5 }, "INVALID_SESSION_DURATION"],
    [{ roleSessionName: "x" }, "INVALID_ROLE_SESSION_NAME"],
    [{ roleSessionName: "has space" }, "INVALID_ROLE_SESSION_NAME"],
    [{ trustAnchorArn: "arn:aws:rolesanywhere:us-east-1:123456789012:profile/x" }, "INVALID_ARN"],
    [{ profileArn: PROFILE.replace("us-east-1", "us-west-2") }, "ARN_REGION_MISMATCH"],
    [{ endpoint: "http://192.0.2.1:8080" }, "INSECURE_ENDPOINT"],
    [{ endpoint: "not a url" }, "INVALID_ENDPOINT"],
    [{ now: () => new Date("2200-01-01T00:00:00Z") }, "CERTIFICATE_EXPIRED"],
    [{ now: () => new Date("2000-01-01T00:00:00Z") }, "CERTIFICATE_NOT_YET_VALID"],
  ];
  for (const [extra, code] of bad) {
    await assert.rejects(createSession(params(signer, url, extra)), { code, kind: "usage" }, JSON.stringify(extra));
  }
  assert.equal(signs, 0);
  assert.equal(received.length, 0);
  assert.throws(() => new CreateSessionClient({ timeoutMs: 0 }), { code: "INVALID_TIMEOUT" });
});

test("one client reuses its keep-alive connection for several calls; close() closes it", async (t) => {
  const signer = await makeSigner();
  const { url, received, server } = await startServer(t, reply(201, CREDENTIALS_BODY));
  const connections: Socket[] = [];
  server.on("connection", (s: Socket) => connections.push(s));
  const client = new CreateSessionClient({ maxAttempts: 1 });
  await client.createSession(params(signer, url));
  await client.createSession(params(signer, url));
  assert.equal(received.length, 2);
  assert.equal(connections.length, 1, "the second call reuses the first connection");
  const closed = once(connections[0], "close");
  await client.close();
  await closed;
  await client.close();
  await assert.rejects(client.createSession(params(signer, url)), { code: "CLIENT_CLOSED" });
});

test("a response body over 1 MiB is refused, declared or not", async (t) => {
  const signer = await makeSigner();
  const big = "x".repeat(1024 * 1024 + 1);
  const declared = await startServer(t, reply(201, big));
  const chunked = await startServer(t, (_r, res) => {
    res.writeHead(201, { "Content-Type": "application/json" });
    for (let i = 0; i < 3; i++) res.write(big.slice(0, 512 * 1024));
    res.end();
  });
  for (const { url } of [declared, chunked]) {
    await assert.rejects(createSession(params(signer, url)), { code: "CREATE_SESSION_BAD_RESPONSE", kind: "service", message: /larger than 1048576 bytes/ });
  }
});

test("a body that stalls times out; a connection cut mid-body is a retryable connection error", async (t) => {
  const signer = await makeSigner();
  const stalled = await startServer(t, (_r, res) => (res.writeHead(201, { "Content-Length": "100" }), res.write("{")));
  await assert.rejects(createSession({ ...params(signer, stalled.url), timeoutMs: 300 }), { code: "SERVICE_TIMEOUT", retryable: true, message: /timed out after 300 ms/ });
  const cut = await startServer(t, (_r, res) => (res.writeHead(201, { "Content-Length": "100" }), res.write("{", () => res.socket?.destroy())));
  await assert.rejects(createSession(params(signer, cut.url)), { code: "SERVICE_CONNECTION_ERROR", retryable: true });
});

/** A self-signed TLS server certificate for 127.0.0.1, made with openssl. */
function tlsServerCert(t: TestContext, subjectAltName = "IP:127.0.0.1"): { key: string; cert: string; certPath: string } {
  const dir = tempDir(t, "ra-tls-");
  const keyPath = join(dir, "key.pem");
  const certPath = join(dir, "cert.pem");
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyPath, "-out", certPath, "-days", "2", "-subj", "/CN=ra-agent test server", "-addext", `subjectAltName=${subjectAltName}`]);
  return { key: readFileSync(keyPath, "utf8"), cert: readFileSync(certPath, "utf8"), certPath };
}

test("TLS: an untrusted server certificate fails; the CA bundle (AWS_CA_BUNDLE) or --no-verify-ssl lets it through", async (t) => {
  if (!needOpenssl(t)) return;
  const signer = await makeSigner();
  const tls = tlsServerCert(t);
  const { url, received } = await startServer(t, reply(201, CREDENTIALS_BODY), tls);
  await assert.rejects(createSession({ ...params(signer, url), caBundlePath: undefined, ca: undefined }), { code: "SERVICE_TLS_ERROR", kind: "service" });
  assert.equal(received.length, 0);
  assert.equal((await createSession({ ...params(signer, url), caBundlePath: tls.certPath })).credentials.accessKeyId, "ASIAEXAMPLE");
  assert.equal((await createSession({ ...params(signer, url), noVerifySsl: true })).credentials.accessKeyId, "ASIAEXAMPLE");
  const notPem = join(tempDir(t), "x.pem");
  writeFileSync(notPem, "nothing");
  await assert.rejects(createSession({ ...params(signer, url), caBundlePath: notPem }), { code: "INVALID_CA_BUNDLE" });
  await assert.rejects(createSession({ ...params(signer, url), caBundlePath: notPem + ".missing" }), { code: "UNREADABLE_FILE" });
});

test("TLS: a server offering only TLS 1.1 or older is refused (TLS 1.2 minimum); https to a plain-HTTP port is a TLS error", async (t) => {
  if (!needOpenssl(t)) return;
  const signer = await makeSigner();
  const tls = tlsServerCert(t);
  const { url, received } = await startServer(t, reply(201, CREDENTIALS_BODY), { ...tls, maxVersion: "TLSv1.1" });
  await assert.rejects(createSession({ ...params(signer, url), caBundlePath: tls.certPath }), (e: unknown) => {
    assert.ok(e instanceof ServiceError, String(e));
    assert.equal(e.code, "SERVICE_TLS_ERROR");
    assert.equal(e.retryable, false);
    assert.doesNotMatch(e.message, /deps\/openssl|\n/, "OpenSSL's source location is left out");
    return true;
  });
  assert.equal(received.length, 0);
  const plain = await startServer(t, reply(201, CREDENTIALS_BODY));
  await assert.rejects(createSession(params(signer, plain.url.replace("http:", "https:"))), { code: "SERVICE_TLS_ERROR" });
  assert.equal(plain.received.length, 0);
});

/**
 * A CONNECT proxy on loopback. `answer` replaces the tunnel: a status line to send
 * back (e.g. 407), or "silent" to never answer. `hosts` is the proxy's own name
 * resolution (a proxied client never resolves the endpoint's name itself).
 */
async function startProxy(t: TestContext, answer?: string, hosts: Record<string, string> = {}): Promise<{ url: string; connects: string[]; auths: (string | undefined)[]; sockets: Set<Socket>; proxyServer: import("node:http").Server }> {
  const connects: string[] = [];
  const auths: (string | undefined)[] = [];
  const proxy = createHttpServer();
  proxy.on("connect", (req: IncomingMessage, client: Socket, head: Buffer) => {
    connects.push(req.url ?? "");
    auths.push(req.headers["proxy-authorization"]);
    if (answer === "silent") return;
    if (answer) return void client.end(`${answer}\r\nProxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n`);
    const [host, port] = (req.url ?? "").split(":");
    const upstream = connect(Number(port), hosts[host] ?? host, () => {
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
  });
  const proxySockets = new Set<Socket>();
  proxy.on("connection", (s: Socket) => (proxySockets.add(s), s.on("close", () => proxySockets.delete(s))));
  proxy.listen(0, "127.0.0.1");
  await once(proxy, "listening");
  t.after(() => (proxySockets.forEach((s) => s.destroy()), proxy.close()));
  return { url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, connects, auths, sockets: proxySockets, proxyServer: proxy };
}

/** A name only the test proxy resolves (RFC 6761 reserves .test), with a TLS server certificate for it and 127.0.0.1. */
const PROXIED_NAME = "rolesanywhere.ra-agent.test";

test("--with-proxy tunnels an https endpoint through HTTPS_PROXY with CONNECT; NO_PROXY goes direct; loopback is never proxied; without the flag no proxy is used", async (t) => {
  if (!needOpenssl(t)) return;
  const signer = await makeSigner();
  const tls = tlsServerCert(t, `DNS:${PROXIED_NAME},IP:127.0.0.1`);
  const { url, received } = await startServer(t, reply(201, CREDENTIALS_BODY), tls);
  const port = new URL(url).port;
  const { url: proxyUrl, connects } = await startProxy(t, undefined, { [PROXIED_NAME]: "127.0.0.1" });
  const named = `https://${PROXIED_NAME}:${port}`;
  const withProxy = (noProxy: string) => ({ withProxy: true, caBundlePath: tls.certPath, proxy: { httpProxy: proxyUrl, httpsProxy: proxyUrl, noProxy } });

  await createSession({ ...params(signer, named), ...withProxy("") });
  assert.deepEqual(connects, [`${PROXIED_NAME}:${port}`]);
  assertSignatureValid(received[0]);

  // Loopback is never proxied, as in the reference helper (Go's ProxyFromEnvironment).
  await createSession({ ...params(signer, url), ...withProxy("") });
  assert.equal(connects.length, 1, "a loopback endpoint goes direct");
  assert.equal(received.length, 2);

  // Direct calls to TEST-NET-1 (RFC 5737) fail, refused or timed out; the proxy must see none of them.
  const direct = `https://192.0.2.1:${port}`;
  const failsDirectly = (e: Error & { code?: string }) => /^SERVICE_(TIMEOUT|UNREACHABLE|CONNECTION_ERROR|TLS_ERROR)$/.test(String(e.code));
  for (const noProxy of ["192.0.2.0/24", "192.0.2.1", `192.0.2.1:${port}`, "10.0.0.0/8, 192.0.2.1", "*"]) {
    await assert.rejects(createSession({ ...params(signer, direct), ...withProxy(noProxy), timeoutMs: 300 }), failsDirectly, `NO_PROXY=${noProxy}`);
  }
  await assert.rejects(createSession({ ...params(signer, direct), ...withProxy(""), withProxy: false, timeoutMs: 300 }), failsDirectly, "no --with-proxy");
  assert.equal(connects.length, 1, "NO_PROXY and no --with-proxy bypass the proxy");
});

test("--with-proxy: the proxy's user and password go in Proxy-Authorization, never into the DEBUG=https-proxy-agent output", async (t) => {
  if (!needOpenssl(t)) return;
  const tls = tlsServerCert(t, `DNS:${PROXIED_NAME}`);
  const server = await startServer(t, reply(201, CREDENTIALS_BODY), tls);
  const { received } = server;
  const url = `https://${PROXIED_NAME}:${new URL(server.url).port}`;
  const { url: proxyUrl, connects, auths } = await startProxy(t, undefined, { [PROXIED_NAME]: "127.0.0.1" });
  // A percent-encoded user and password, as they appear in HTTPS_PROXY.
  const withCredentials = proxyUrl.replace("http://", "http://ops%40corp:s3cr%3At-h%25nter@");
  const expected = `Basic ${Buffer.from("ops@corp:s3cr:t-h%nter").toString("base64")}`;

  await createSession({ ...params(await makeSigner(), url), withProxy: true, caBundlePath: tls.certPath, proxy: { httpsProxy: withCredentials, noProxy: "" } });
  assert.deepEqual(auths, [expected]);

  // The `debug` package reads DEBUG when it loads: run the call in a child process.
  const ca = await createCa({ algorithm: "EC-P256" });
  const { generateKeyPair } = await import("../../scripts/lib/pki");
  const keys = await generateKeyPair("EC-P256");
  const cert = await issueCertificate(ca, keys.publicKey, { subject: "CN=leaf" });
  const src = join(__dirname, "../../src");
  const script = [
    `const { createPrivateKey } = require("node:crypto");`,
    `const { FileSigner } = require(${JSON.stringify(join(src, "signer/file/file-signer"))});`,
    `const { createSession } = require(${JSON.stringify(join(src, "rolesanywhere"))});`,
    `const signer = new FileSigner(createPrivateKey(process.env.T_KEY), Buffer.from(process.env.T_CERT, "base64"), []);`,
    `createSession({ signer, ...JSON.parse(process.env.T_PARAMS) }).then(() => console.log("ok"), (e) => { console.log(e.message); process.exitCode = 1; });`,
  ].join("\n");
  const { execFile } = await import("node:child_process");
  const keyPem = await privateKeyToPem(keys.privateKey);
  const child = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
    execFile(
      process.execPath,
      ["-e", script],
      {
        env: {
          ...process.env,
          DEBUG: "https-proxy-agent*,agent-base*",
          T_KEY: keyPem,
          T_CERT: Buffer.from(cert.rawData).toString("base64"),
          T_PARAMS: JSON.stringify({ trustAnchorArn: TA, profileArn: PROFILE, roleArn: ROLE, endpoint: url, maxAttempts: 1, withProxy: true, caBundlePath: tls.certPath, proxy: { httpsProxy: withCredentials, noProxy: "" } }),
        },
      },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve({ stdout, stderr })),
    ),
  );
  assert.equal(child.stdout.trim(), "ok");
  assert.match(child.stderr, /https-proxy-agent/, "the debug output was on");
  assert.match(child.stderr, new RegExp(new URL(proxyUrl).port), "it names the proxy");
  for (const secret of ["s3cr", "h%nter", "h%25nter", Buffer.from("ops@corp:s3cr:t-h%nter").toString("base64")]) {
    assert.ok(!child.stderr.includes(secret), `the debug output holds no part of the password (${secret})`);
  }
  assert.deepEqual(auths, [expected, expected]);
  assert.equal(connects.length, 2);
  assert.equal(received.length, 2);
});

test("--with-proxy to an https endpoint: TLS (CA bundle, TLS 1.2+) runs inside the tunnel", async (t) => {
  if (!needOpenssl(t)) return;
  const signer = await makeSigner();
  const tls = tlsServerCert(t, `DNS:${PROXIED_NAME}`);
  const server = await startServer(t, reply(201, CREDENTIALS_BODY), tls);
  const { received } = server;
  const url = `https://${PROXIED_NAME}:${new URL(server.url).port}`;
  const { url: proxyUrl, connects } = await startProxy(t, undefined, { [PROXIED_NAME]: "127.0.0.1" });
  const proxy = { httpsProxy: proxyUrl, noProxy: "" };
  await assert.rejects(createSession({ ...params(signer, url), withProxy: true, proxy }), { code: "SERVICE_TLS_ERROR" }, "the endpoint's certificate is still verified");
  const result = await createSession({ ...params(signer, url), withProxy: true, proxy, caBundlePath: tls.certPath });
  assert.equal(result.credentials.accessKeyId, "ASIAEXAMPLE");
  assert.deepEqual(connects, [new URL(url).host, new URL(url).host]);
  assert.equal(received.length, 1);
  assertSignatureValid(received[0]);
});

test("--with-proxy to a named https endpoint: the certificate is checked against the endpoint's name inside the tunnel", async (t) => {
  if (!needOpenssl(t)) return;
  const signer = await makeSigner();
  const tls = tlsServerCert(t, "DNS:rolesanywhere.ra-agent.test");
  const { url, received } = await startServer(t, reply(201, CREDENTIALS_BODY), tls);
  const port = new URL(url).port;
  // Only the proxy knows these names; both lead to the same test server.
  const { url: proxyUrl, connects } = await startProxy(t, undefined, { "rolesanywhere.ra-agent.test": "127.0.0.1", "other.ra-agent.test": "127.0.0.1" });
  const proxy = { httpsProxy: proxyUrl, noProxy: "" };
  const named = `https://rolesanywhere.ra-agent.test:${port}`;
  const result = await createSession({ ...params(signer, named), withProxy: true, proxy, caBundlePath: tls.certPath });
  assert.equal(result.credentials.accessKeyId, "ASIAEXAMPLE");
  assertSignatureValid(received[0]);
  await assert.rejects(
    createSession({ ...params(signer, `https://other.ra-agent.test:${port}`), withProxy: true, proxy, caBundlePath: tls.certPath }),
    (e: Error & { code?: string }) => e.code === "SERVICE_TLS_ERROR" && /ALTNAME|other\.ra-agent\.test/.test(e.message),
    "a certificate for another name is refused",
  );
  assert.deepEqual(connects, [`rolesanywhere.ra-agent.test:${port}`, `other.ra-agent.test:${port}`]);
  assert.equal(received.length, 1);
});

test("--with-proxy: a 407 is a clear proxy error; a bad proxy URL is a usage error; a silent proxy times out and close() drops it", async (t) => {
  const signer = await makeSigner();
  // No server: these proxies never open the tunnel.
  const url = `https://${PROXIED_NAME}`;
  const auth = await startProxy(t, "HTTP/1.1 407 Proxy Authentication Required");
  await assert.rejects(createSession({ ...params(signer, url), withProxy: true, proxy: { httpsProxy: auth.url, noProxy: "" } }), (e: unknown) => {
    assert.ok(e instanceof ServiceError, String(e));
    assert.equal(e.statusCode, 407);
    assert.match(String(e.hint), /proxy/);
    return true;
  });

  await assert.rejects(createSession({ ...params(signer, url), withProxy: true, proxy: { httpProxy: "socks5://user:hunter2@127.0.0.1:1080" } }), (e: Error & { code?: string; kind?: string }) => {
    assert.equal(e.code, "INVALID_PROXY");
    assert.equal(e.kind, "usage");
    assert.doesNotMatch(e.message, /hunter2/);
    return true;
  });

  const silent = await startProxy(t, "silent");
  const client = new CreateSessionClient({ maxAttempts: 1, timeoutMs: 300, withProxy: true, proxy: { httpsProxy: silent.url, noProxy: "" } });
  const [first] = await Promise.all([
    new Promise<Socket>((resolve) => silent.proxyServer.once("connection", resolve)),
    assert.rejects(client.createSession(params(signer, url)), { code: "SERVICE_TIMEOUT" }),
  ]);
  assert.equal(silent.connects.length, 1);
  // The timed-out attempt's CONNECT is abandoned at once, without close(): no socket per attempt piles up.
  if (first.readableEnded === false) await once(first, "end");
  // close() ends a CONNECT still waiting too, so the process can exit.
  const waiting = new Promise<Socket>((resolve) => silent.proxyServer.once("connection", resolve));
  const pendingCall = client.createSession(params(signer, url)).then(() => undefined, (e: unknown) => e);
  const second = await waiting;
  const ended = once(second, "end");
  await client.close();
  await ended;
  assert.ok((await pendingCall) instanceof Error, "the call that was waiting fails");
});
