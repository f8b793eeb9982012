import { test } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, verify } from "node:crypto";
import { join } from "node:path";
import { Agent } from "../../src/agent/agent";
import { agentRequest, fetchCredentialsFromAgent } from "../../src/agent/client";
import { parseStringToSign } from "../../src/agent/string-to-sign";
import { RaError } from "../../src/errors";
import type { AwsCredentials } from "../../src/credentials/credentials";
import { ARNS, makeCredentials, memoryLogger, rawExchange, softwareSigner, tempDir, testBackend, unixRequest, writeConfig } from "./helpers";

const P11 = "pkcs11:token=t;object=k";

async function startAgent(opts: { allowSigning?: boolean; session?: (n: number) => Promise<AwsCredentials>; limits?: Parameters<typeof Agent.start>[0]["limits"] } = {}) {
  const { dir, cleanup } = tempDir();
  const signer = await softwareSigner("EC-P256");
  const backend = testBackend({ signer, session: opts.session ?? (async () => makeCredentials(Date.now())) });
  const configPath = writeConfig(dir, {
    profiles: [
      { name: "p", certificate: P11, ...ARNS, allowSigning: opts.allowSigning ?? false },
      { name: "q", certificate: P11, ...ARNS },
    ],
  });
  const socketPath = join(dir, "agent.sock");
  const { log, lines } = memoryLogger();
  const agent = await Agent.start({ configPath, socketPath, backend, log, limits: opts.limits });
  return {
    agent,
    backend,
    signer,
    socketPath,
    configPath,
    dir,
    lines,
    close: async () => {
      await agent.close();
      cleanup();
    },
  };
}

function stringToSign(algorithm: string, now = new Date()): string {
  const amz = now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  return `${algorithm}\n${amz}\n${amz.slice(0, 8)}/eu-west-1/rolesanywhere/aws4_request\n${"ab".repeat(32)}`;
}

test("GET /v1/credentials/{profile}: credential_process JSON, cached", async () => {
  const t = await startAgent();
  try {
    const r1 = await unixRequest(t.socketPath, "GET", "/v1/credentials/p");
    assert.equal(r1.status, 200);
    assert.equal(r1.headers["content-type"], "application/json");
    assert.equal(r1.headers["cache-control"], "no-store");
    const body = JSON.parse(r1.body);
    assert.deepEqual(Object.keys(body), ["Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"]);
    assert.equal(body.Version, 1);
    const r2 = await unixRequest(t.socketPath, "GET", "/v1/credentials/p");
    assert.equal(r2.body, r1.body);
    assert.equal(t.backend.sessions, 1, "served from the cache");
    assert.equal(t.backend.opens, 1, "the signer is opened once");
    // Through the fast client too.
    const viaClient = await fetchCredentialsFromAgent({ socketPath: t.socketPath, profile: "p" });
    assert.deepEqual(viaClient, body);
    assert.equal(t.backend.sessions, 1);
  } finally {
    await t.close();
  }
});

test("errors: unknown profile 404, wrong method 405, unknown path 404, with JSON bodies", async () => {
  const t = await startAgent();
  try {
    const r = await unixRequest(t.socketPath, "GET", "/v1/credentials/nope");
    assert.equal(r.status, 404);
    const e = JSON.parse(r.body).error;
    assert.equal(e.code, "AGENT_UNKNOWN_PROFILE");
    assert.match(e.hint, /configured profiles: p, q/);
    assert.equal((await unixRequest(t.socketPath, "DELETE", "/v1/credentials/p")).status, 405);
    assert.equal((await unixRequest(t.socketPath, "GET", "/v2/credentials/p")).status, 404);
    assert.equal((await unixRequest(t.socketPath, "GET", "/v1/credentials/a%2Fb")).status, 404);
    assert.equal((await unixRequest(t.socketPath, "GET", "/v1/credentials/%E0%A4%A")).status, 404);
    await assert.rejects(fetchCredentialsFromAgent({ socketPath: t.socketPath, profile: "nope" }), (err: unknown) => err instanceof RaError && err.code === "AGENT_UNKNOWN_PROFILE" && err.kind === "agent");
  } finally {
    await t.close();
  }
});

test("a failing source reaches the client as the source's error (kind, code, hint), HTTP 503", async () => {
  const t = await startAgent({
    session: async () => {
      throw new RaError("service", "CREATE_SESSION_DENIED", "AccessDeniedException: untrusted certificate", { hint: "check the trust anchor" });
    },
  });
  try {
    const r = await unixRequest(t.socketPath, "GET", "/v1/credentials/p");
    assert.equal(r.status, 503);
    assert.ok(r.headers["retry-after"]);
    await assert.rejects(fetchCredentialsFromAgent({ socketPath: t.socketPath, profile: "p" }), (e: unknown) => {
      assert.ok(e instanceof RaError);
      assert.equal(e.kind, "service");
      assert.equal(e.code, "CREATE_SESSION_DENIED");
      assert.match(e.message, /untrusted certificate/);
      assert.match(e.hint ?? "", /check the trust anchor/);
      return true;
    });
    const status = JSON.parse((await unixRequest(t.socketPath, "GET", "/v1/status")).body);
    assert.equal(status.profiles[0].cache.state, "failed");
    assert.equal(status.profiles[0].cache.lastError.code, "CREATE_SESSION_DENIED");
  } finally {
    await t.close();
  }
});

test("the client reports no agent for a missing or stale socket", async () => {
  const { dir, cleanup } = tempDir();
  try {
    assert.equal(await fetchCredentialsFromAgent({ socketPath: join(dir, "none.sock"), profile: "p" }), undefined);
    const { spawnSync } = await import("node:child_process");
    const stale = join(dir, "stale.sock");
    spawnSync(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, "SIGKILL"))`]);
    assert.equal(await fetchCredentialsFromAgent({ socketPath: stale, profile: "p" }), undefined);
  } finally {
    cleanup();
  }
});

test("GET /v1/status: profiles, signer and cache state, no secrets", async () => {
  const t = await startAgent();
  try {
    const creds = JSON.parse((await unixRequest(t.socketPath, "GET", "/v1/credentials/p")).body);
    const r = await unixRequest(t.socketPath, "GET", "/v1/status");
    assert.equal(r.status, 200);
    const s = JSON.parse(r.body);
    assert.equal(s.protocol, "v1");
    assert.equal(s.socket, t.socketPath);
    assert.deepEqual(s.profiles.map((p: { name: string }) => p.name), ["p", "q"]);
    const p = s.profiles[0];
    assert.equal(p.signer, "open");
    assert.equal(p.cache.state, "fresh");
    assert.match(p.certificate.subject, /agent-test/);
    assert.equal(s.profiles[1].signer, "not-open");
    assert.equal(s.profiles[1].cache.state, "empty");
    for (const secret of [creds.SecretAccessKey, creds.SessionToken, creds.AccessKeyId]) assert.ok(!r.body.includes(secret));
  } finally {
    await t.close();
  }
});

test("GET /v1/keys lists the profiles' certificates", async () => {
  const t = await startAgent();
  try {
    await unixRequest(t.socketPath, "GET", "/v1/credentials/p");
    const k = JSON.parse((await unixRequest(t.socketPath, "GET", "/v1/keys")).body);
    assert.equal(k.profiles[0].name, "p");
    assert.equal(k.profiles[0].keys[0].uri, P11);
    assert.match(k.profiles[0].keys[0].subject, /agent-test/);
  } finally {
    await t.close();
  }
});

test("POST /v1/sign is refused unless the profile allows signing", async () => {
  const t = await startAgent({ allowSigning: false });
  try {
    const r = await unixRequest(t.socketPath, "POST", "/v1/sign/p", { body: JSON.stringify({ stringToSign: stringToSign("AWS4-X509-ECDSA-SHA256") }) });
    assert.equal(r.status, 403);
    assert.equal(JSON.parse(r.body).error.code, "AGENT_SIGNING_DISABLED");
  } finally {
    await t.close();
  }
});

test("POST /v1/sign signs a SigV4-X509 string to sign, and nothing else", async () => {
  const t = await startAgent({ allowSigning: true });
  try {
    const sts = stringToSign("AWS4-X509-ECDSA-SHA256");
    const r = await unixRequest(t.socketPath, "POST", "/v1/sign/p", { body: JSON.stringify({ stringToSign: sts }) });
    assert.equal(r.status, 200, r.body);
    const out = JSON.parse(r.body);
    assert.equal(out.algorithm, "AWS4-X509-ECDSA-SHA256");
    const { X509Certificate } = await import("node:crypto");
    const pub = createPublicKey(new X509Certificate(Buffer.from(t.signer.certificate)).publicKey.export({ type: "spki", format: "pem" }));
    assert.ok(verify("sha256", Buffer.from(sts), pub, Buffer.from(out.signature, "hex")), "a valid DER ECDSA signature over the string");

    const refused: [string, unknown][] = [
      ["arbitrary bytes", { stringToSign: "hello" }],
      ["wrong algorithm", { stringToSign: stringToSign("AWS4-X509-RSA-SHA256") }],
      ["trailing newline", { stringToSign: sts + "\n" }],
      ["other service", { stringToSign: sts.replace("rolesanywhere", "s3") }],
      ["uppercase hex", { stringToSign: sts.replace(/ab/g, "AB") }],
      ["old date", { stringToSign: stringToSign("AWS4-X509-ECDSA-SHA256", new Date(Date.now() - 3600_000)) }],
      ["no field", { other: 1 }],
    ];
    for (const [what, body] of refused) {
      const x = await unixRequest(t.socketPath, "POST", "/v1/sign/p", { body: JSON.stringify(body) });
      assert.equal(x.status, 400, what);
    }
    const notJson = await unixRequest(t.socketPath, "POST", "/v1/sign/p", { body: "{", headers: { "Content-Type": "application/json" } });
    assert.equal(notJson.status, 400);
    const wrongType = await unixRequest(t.socketPath, "POST", "/v1/sign/p", { body: sts, headers: { "Content-Type": "text/plain" } });
    assert.equal(wrongType.status, 415);
  } finally {
    await t.close();
  }
});

test("string to sign: date validity and scope date checks", () => {
  const now = Date.UTC(2030, 0, 1, 12, 0, 0);
  const ok = `AWS4-X509-RSA-SHA256\n20300101T120000Z\n20300101/us-east-1/rolesanywhere/aws4_request\n${"0".repeat(64)}`;
  assert.equal(parseStringToSign(ok, "AWS4-X509-RSA-SHA256", now).region, "us-east-1");
  assert.throws(() => parseStringToSign(ok.replace("20300101/", "20300102/"), "AWS4-X509-RSA-SHA256", now), /scope date/);
  assert.throws(() => parseStringToSign(ok.replace("20300101T120000Z", "20300230T120000Z").replace("20300101/", "20300230/"), "AWS4-X509-RSA-SHA256", now), /not a valid date/);
  assert.throws(() => parseStringToSign(ok, "AWS4-X509-RSA-SHA256", now + 6 * 60_000), /5 minutes/);
});

test("oversized and malformed requests close the connection; the agent stays up", async () => {
  const t = await startAgent({ allowSigning: true, limits: { headersTimeoutMs: 300, requestTimeoutMs: 600 } });
  const target = { path: t.socketPath };
  try {
    // Body over the limit (declared).
    const big = JSON.stringify({ stringToSign: "x".repeat(20_000) });
    let x = await rawExchange(target, `POST /v1/sign/p HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: ${big.length}\r\n\r\n${big}`);
    assert.match(x.answer, /^HTTP\/1\.1 413/);
    assert.ok(x.closed);
    // Body over the limit, chunked (no length declared).
    x = await rawExchange(target, `POST /v1/sign/p HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${(20000).toString(16)}\r\n${"y".repeat(20000)}\r\n0\r\n\r\n`);
    assert.match(x.answer, /^HTTP\/1\.1 413/);
    assert.ok(x.closed);
    // Headers over 8 KiB.
    x = await rawExchange(target, `GET /v1/status HTTP/1.1\r\nHost: a\r\nX-Big: ${"z".repeat(10_000)}\r\n\r\n`);
    assert.match(x.answer, /^HTTP\/1\.1 431/);
    assert.ok(x.closed);
    // Garbage instead of HTTP.
    x = await rawExchange(target, "\x00\x01\x02 not http at all\r\n\r\n");
    assert.match(x.answer, /^HTTP\/1\.1 400/);
    assert.ok(x.closed);
    // Bad header syntax.
    x = await rawExchange(target, "GET /v1/status HTTP/1.1\r\nHost a\r\nBad Header\r\n\r\n");
    assert.match(x.answer, /^HTTP\/1\.1 400/);
    assert.ok(x.closed);
    // A GET with a body.
    x = await rawExchange(target, "GET /v1/credentials/p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert.match(x.answer, /^HTTP\/1\.1 400/);
    assert.ok(x.closed);
    // Headers that never end: closed after the headers timeout.
    x = await rawExchange(target, "GET /v1/status HTTP/1.1\r\nHost: a\r\n", 5000);
    assert.ok(x.closed, "a slow client is cut off");
    // Still alive and serving.
    const ok = await unixRequest(t.socketPath, "GET", "/v1/credentials/p");
    assert.equal(ok.status, 200);
  } finally {
    await t.close();
  }
});

test("keep-alive: several requests on one connection", async () => {
  const t = await startAgent();
  try {
    const req = "GET /v1/health HTTP/1.1\r\nHost: a\r\n\r\n";
    const x = await rawExchange({ path: t.socketPath }, req + req + "GET /v1/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert.equal(x.answer.match(/HTTP\/1\.1 200/g)?.length, 3);
  } finally {
    await t.close();
  }
});

test("agentRequest times out against a silent listener", async () => {
  const { dir, cleanup } = tempDir();
  const { createServer } = await import("node:net");
  const path = join(dir, "silent.sock");
  const silent = createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(path, r));
  try {
    await assert.rejects(agentRequest(path, "GET", "/v1/health", { timeoutMs: 200 }), (e: unknown) => e instanceof RaError && e.code === "AGENT_TIMEOUT");
  } finally {
    silent.close();
    cleanup();
  }
});

test("a signer that can no longer work (its PKCS#11 thread stopped) is dropped and the key opened again, once", async () => {
  const { ProfileRuntime } = await import("../../src/agent/profile-runtime");
  const { X509Certificate } = await import("node:crypto");
  const opened: Array<Awaited<ReturnType<typeof softwareSigner>>> = [];
  let stopped = 1;
  const backend = testBackend({
    openSigner: async () => {
      const signer = await softwareSigner("EC-P256");
      opened.push(signer);
      // The first `stopped` signers behave as ones whose PKCS#11 thread stopped.
      if (opened.length > stopped) return signer;
      return { ...signer, sign: async () => Promise.reject(new RaError("internal", "PKCS11_THREAD_STOPPED", "the PKCS#11 thread stopped: test", { hint: "open it again" })) };
    },
  });
  const { log, lines } = memoryLogger();
  const rt = new ProfileRuntime({ name: "p", certificate: P11, ...ARNS, allowSigning: true } as never, { backend, log });
  try {
    const sts = stringToSign("AWS4-X509-ECDSA-SHA256");
    const ok = await rt.signStringToSign(sts);
    const publicKey = new X509Certificate(Buffer.from(opened[opened.length - 1].certificate)).publicKey;
    assert.ok(verify("sha256", Buffer.from(sts), { key: publicKey, dsaEncoding: "der" }, Buffer.from(ok.signature, "hex")), "signed by the reopened key");
    assert.equal(backend.opens, 2, "opened at first use, then again once after the thread stopped");
    assert.ok(lines.some((l) => l.includes("opening it again")), lines.join("\n"));
    // Twice in a row: the request fails with the error instead of looping.
    stopped = opened.length + 2;
  } finally {
    await rt.close();
  }
  const rt2 = new ProfileRuntime({ name: "q", certificate: P11, ...ARNS, allowSigning: true } as never, { backend, log });
  try {
    await assert.rejects(rt2.signStringToSign(stringToSign("AWS4-X509-ECDSA-SHA256")), (e: unknown) => e instanceof RaError && e.code === "PKCS11_THREAD_STOPPED");
    assert.equal((await rt2.status()).signer, "not-open");
  } finally {
    await rt2.close();
  }
});
