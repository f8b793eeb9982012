import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, statSync, existsSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { isLoopbackHost, roleNameOf, startMetadataServer, MAX_IMDS_TOKENS } from "../../src/agent/metadata-server";
import { RaError } from "../../src/errors";
import { ARNS, ManualClock, makeCredentials, memoryLogger, rawExchange, tempDir } from "./helpers";

function http(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}

async function start(opts: { clock?: ManualClock; ecs?: boolean; fail?: boolean } = {}) {
  const { dir, cleanup } = tempDir();
  const clock = opts.clock;
  const creds = makeCredentials(clock ? clock.now() : Date.now());
  let calls = 0;
  const server = await startMetadataServer({
    getCredentials: async () => {
      calls++;
      if (opts.fail) throw new RaError("service", "SERVICE_UNREACHABLE", "cannot reach the endpoint");
      return creds;
    },
    roleArn: "arn:aws:iam::123456789012:role/team/ra-agent-test",
    port: 0,
    ecsTokenFile: opts.ecs ? join(dir, "ecs-token") : undefined,
    log: memoryLogger().log,
    clock,
  });
  return { server, creds, dir, calls: () => calls, close: async () => (await server.close(), cleanup()) };
}

test("role name and loopback host rules", () => {
  assert.equal(roleNameOf(ARNS.roleArn), "ra-agent-test");
  assert.equal(roleNameOf("arn:aws:iam::123456789012:role/path/to/Role1"), "Role1");
  for (const h of ["127.0.0.1", "127.0.0.1:9911", "localhost:80", "LOCALHOST", "[::1]:9911", "[::1]", "127.8.9.10"]) assert.ok(isLoopbackHost(h), h);
  for (const h of [undefined, "", "169.254.169.254", "evil.example:9911", "127.0.0.1.evil.example", "[::2]:1", "localhost:abc", "10.0.0.1"]) assert.ok(!isLoopbackHost(h), String(h));
});

test("IMDSv2 flow: token, role name, credentials", async () => {
  const t = await start();
  try {
    const port = t.server.port;
    const tok = await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "60" });
    assert.equal(tok.status, 200);
    assert.equal(tok.headers["x-aws-ec2-metadata-token-ttl-seconds"], "60");
    const token = tok.body;
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    const role = await http(port, "GET", "/latest/meta-data/iam/security-credentials/", { "X-aws-ec2-metadata-token": token });
    assert.equal(role.status, 200);
    assert.equal(role.body, "ra-agent-test");
    const c = await http(port, "GET", "/latest/meta-data/iam/security-credentials/ra-agent-test", { "X-aws-ec2-metadata-token": token });
    assert.equal(c.status, 200);
    const body = JSON.parse(c.body);
    assert.equal(body.Code, "Success");
    assert.equal(body.Type, "AWS-HMAC");
    assert.equal(body.AccessKeyId, t.creds.accessKeyId);
    assert.equal(body.SecretAccessKey, t.creds.secretAccessKey);
    assert.equal(body.Token, t.creds.sessionToken);
    assert.match(body.Expiration, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.match(body.LastUpdated, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    // Extended path (newer SDKs) adds the account id.
    const ext = await http(port, "GET", "/latest/meta-data/iam/security-credentials-extended/ra-agent-test", { "X-aws-ec2-metadata-token": token });
    assert.equal(JSON.parse(ext.body).AccountId, "123456789012");
    assert.equal((await http(port, "GET", "/latest/meta-data/iam/security-credentials/other-role", { "X-aws-ec2-metadata-token": token })).status, 404);
  } finally {
    await t.close();
  }
});

test("IMDSv2: TTL must be 1-21600; no token, unknown token -> 401; X-Forwarded-For -> 400; Host must be loopback", async () => {
  const t = await start();
  try {
    const port = t.server.port;
    for (const ttl of ["0", "21601", "-1", "abc", "1.5", ""]) {
      assert.equal((await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": ttl })).status, 400, `ttl ${ttl}`);
    }
    assert.equal((await http(port, "PUT", "/latest/api/token")).status, 400, "missing TTL");
    assert.equal((await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "21600" })).status, 200);
    assert.equal((await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "1" })).status, 200);
    assert.equal((await http(port, "GET", "/latest/api/token")).status, 405);
    assert.equal((await http(port, "GET", "/latest/meta-data/iam/security-credentials/")).status, 401, "IMDSv1 (no token) refused");
    assert.equal((await http(port, "GET", "/latest/meta-data/iam/security-credentials/", { "X-aws-ec2-metadata-token": "made-up" })).status, 401);
    assert.equal((await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "10.0.0.1" })).status, 400);
    const token = (await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "60" })).body;
    assert.equal((await http(port, "GET", "/latest/meta-data/iam/security-credentials/ra-agent-test", { "X-aws-ec2-metadata-token": token, "X-Forwarded-For": "1.2.3.4" })).status, 400);
    assert.equal((await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "60", Host: "evil.example" })).status, 400, "DNS rebinding");
    assert.equal((await http(port, "GET", "/latest/meta-data/iam/security-credentials/ra-agent-test", { "X-aws-ec2-metadata-token": token, Host: "169.254.169.254" })).status, 400);
    assert.equal(t.calls(), 0, "no credentials were handed out");
  } finally {
    await t.close();
  }
});

test("IMDSv2: a token expires after its TTL; at most 256 tokens live", async () => {
  const clock = new ManualClock(Date.now());
  const t = await start({ clock });
  try {
    const port = t.server.port;
    const token = (await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "10" })).body;
    const ok = await http(port, "GET", "/latest/meta-data/iam/security-credentials/", { "X-aws-ec2-metadata-token": token });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers["x-aws-ec2-metadata-token-ttl-seconds"], "10");
    clock.current += 10_001;
    assert.equal((await http(port, "GET", "/latest/meta-data/iam/security-credentials/", { "X-aws-ec2-metadata-token": token })).status, 401);
    const first = (await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "100" })).body;
    for (let i = 0; i < MAX_IMDS_TOKENS; i++) await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "1000" });
    assert.equal((await http(port, "GET", "/latest/meta-data/iam/security-credentials/", { "X-aws-ec2-metadata-token": first })).status, 401, "the earliest-expiring token was evicted");
  } finally {
    await t.close();
  }
});

test("ECS endpoint: token file 0600, Authorization required and compared exactly", async () => {
  const t = await start({ ecs: true });
  try {
    const file = t.server.ecsTokenFile!;
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const token = readFileSync(file, "utf8");
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    assert.match(t.server.ecsFullUri!, /^http:\/\/127\.0\.0\.1:\d+\/ecs\/credentials$/);
    const path = "/ecs/credentials";
    assert.equal((await http(t.server.port, "GET", path)).status, 401);
    assert.equal((await http(t.server.port, "GET", path, { Authorization: token.slice(0, -1) })).status, 403);
    assert.equal((await http(t.server.port, "GET", path, { Authorization: token + "x" })).status, 403);
    assert.equal((await http(t.server.port, "GET", path, { Authorization: `Bearer ${token}` })).status, 403);
    assert.equal(t.calls(), 0);
    const ok = await http(t.server.port, "GET", path, { Authorization: token });
    assert.equal(ok.status, 200);
    const body = JSON.parse(ok.body);
    assert.equal(body.AccessKeyId, t.creds.accessKeyId);
    assert.equal(body.Token, t.creds.sessionToken);
    assert.equal(body.RoleArn, "arn:aws:iam::123456789012:role/team/ra-agent-test");
    assert.equal((await http(t.server.port, "GET", path, { Authorization: token, "X-Forwarded-For": "1.1.1.1" })).status, 400);
    await t.server.close();
    assert.equal(existsSync(file), false, "the token file is removed at shutdown");
  } finally {
    await t.close();
  }
});

test("no credentials: 503 with the reason; malformed requests are closed and the server stays up", async () => {
  const t = await start({ fail: true });
  try {
    const port = t.server.port;
    const token = (await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "60" })).body;
    const r = await http(port, "GET", "/latest/meta-data/iam/security-credentials/ra-agent-test", { "X-aws-ec2-metadata-token": token });
    assert.equal(r.status, 503);
    assert.equal(JSON.parse(r.body).error.code, "SERVICE_UNREACHABLE");
    const x = await rawExchange({ host: "127.0.0.1", port }, `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: ${"a".repeat(20000)}\r\n\r\n`);
    assert.match(x.answer, /^HTTP\/1\.1 431/);
    assert.ok(x.closed);
    assert.equal((await http(port, "PUT", "/latest/api/token", { "X-aws-ec2-metadata-token-ttl-seconds": "60" })).status, 200);
  } finally {
    await t.close();
  }
});

test("only loopback addresses can be bound", async () => {
  await assert.rejects(
    startMetadataServer({ getCredentials: async () => makeCredentials(Date.now()), roleArn: ARNS.roleArn, host: "0.0.0.0", port: 0, log: memoryLogger().log }),
    (e: unknown) => e instanceof RaError && e.code === "SERVE_NOT_LOOPBACK",
  );
});
