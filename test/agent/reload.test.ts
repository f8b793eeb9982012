import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Agent } from "../../src/agent/agent";
import { RaError } from "../../src/errors";
import { ARNS, makeCredentials, memoryLogger, softwareSigner, tempDir, testBackend, unixRequest, writeConfig } from "./helpers";

const P11 = "pkcs11:token=t;object=k";

test("reload: an invalid config is ignored and the old one keeps serving", async () => {
  const { dir, cleanup } = tempDir();
  const signer = await softwareSigner();
  const backend = testBackend({ signer });
  const configPath = writeConfig(dir, { profiles: [{ name: "p", certificate: P11, ...ARNS }] });
  const { log, lines } = memoryLogger();
  const agent = await Agent.start({ configPath, socketPath: join(dir, "a.sock"), backend, log });
  try {
    const before = (await unixRequest(agent.socketPath, "GET", "/v1/credentials/p")).body;
    writeFileSync(configPath, "{ not json");
    const r = await agent.reload();
    assert.equal(r.ok, false);
    assert.ok(r.error instanceof RaError && r.error.code === "AGENT_CONFIG_SYNTAX");
    assert.ok(lines.some((l) => l.includes("reload failed; keeping the previous configuration")));
    assert.equal((await unixRequest(agent.socketPath, "GET", "/v1/credentials/p")).body, before);
    const status = JSON.parse((await unixRequest(agent.socketPath, "GET", "/v1/status")).body);
    assert.equal(status.lastReload.ok, false);
    assert.equal(status.lastReload.error.code, "AGENT_CONFIG_SYNTAX");
  } finally {
    await agent.close();
    cleanup();
  }
});

test("reload: unchanged profiles keep their cache; changed, added and removed profiles are applied", async () => {
  const { dir, cleanup } = tempDir();
  const signer = await softwareSigner();
  const backend = testBackend({ signer });
  const configPath = writeConfig(dir, {
    profiles: [
      { name: "keep", certificate: P11, ...ARNS },
      { name: "change", certificate: P11, ...ARNS },
      { name: "drop", certificate: P11, ...ARNS },
    ],
  });
  const agent = await Agent.start({ configPath, socketPath: join(dir, "a.sock"), backend, log: memoryLogger().log });
  try {
    const keep1 = (await unixRequest(agent.socketPath, "GET", "/v1/credentials/keep")).body;
    const change1 = (await unixRequest(agent.socketPath, "GET", "/v1/credentials/change")).body;
    writeConfig(dir, {
      profiles: [
        { name: "keep", certificate: P11, ...ARNS },
        { name: "change", certificate: P11, ...ARNS, durationSeconds: 7200 },
        { name: "new", certificate: P11, ...ARNS },
      ],
    });
    const r = await agent.reload();
    assert.deepEqual({ ok: r.ok, kept: r.kept, changed: r.changed, removed: r.removed, added: r.added }, { ok: true, kept: ["keep"], changed: ["change"], removed: ["drop"], added: ["new"] });
    assert.equal((await unixRequest(agent.socketPath, "GET", "/v1/credentials/keep")).body, keep1, "cache kept");
    assert.notEqual((await unixRequest(agent.socketPath, "GET", "/v1/credentials/change")).body, change1, "new credentials for a changed profile");
    assert.equal((await unixRequest(agent.socketPath, "GET", "/v1/credentials/drop")).status, 404);
    assert.equal((await unixRequest(agent.socketPath, "GET", "/v1/credentials/new")).status, 200);
  } finally {
    await agent.close();
    cleanup();
  }
});

test("a PIN error blocks the profile (no retry, no PIN spent) until a reload", async () => {
  const { dir, cleanup } = tempDir();
  const signer = await softwareSigner();
  let pinOk = false;
  let opens = 0;
  const backend = testBackend({
    openSigner: async () => {
      opens++;
      if (!pinOk) throw new RaError("pin", "PKCS11_PIN_INCORRECT", "the token refused the PIN (CKR_PIN_INCORRECT)", { hint: "fix the PIN file" });
      return signer;
    },
    session: async () => makeCredentials(Date.now()),
  });
  const configPath = writeConfig(dir, { profiles: [{ name: "hsm", certificate: P11, ...ARNS, allowSigning: true }] });
  const agent = await Agent.start({ configPath, socketPath: join(dir, "a.sock"), backend, log: memoryLogger().log });
  try {
    const r1 = await unixRequest(agent.socketPath, "GET", "/v1/credentials/hsm");
    assert.equal(r1.status, 503);
    const e1 = JSON.parse(r1.body).error;
    assert.equal(e1.kind, "pin");
    assert.equal(e1.code, "PKCS11_PIN_INCORRECT");
    assert.match(e1.hint, /SIGHUP/);
    for (let i = 0; i < 5; i++) await unixRequest(agent.socketPath, "GET", "/v1/credentials/hsm");
    const amz = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
    await unixRequest(agent.socketPath, "POST", "/v1/sign/hsm", { body: JSON.stringify({ stringToSign: `AWS4-X509-ECDSA-SHA256\n${amz}\n${amz.slice(0, 8)}/eu-west-1/rolesanywhere/aws4_request\n${"0".repeat(64)}` }) });
    assert.equal(opens, 1, "the PIN was tried once, never again");
    const status = JSON.parse((await unixRequest(agent.socketPath, "GET", "/v1/status")).body);
    assert.equal(status.profiles[0].signer, "pin-blocked");
    assert.equal(status.profiles[0].cache.state, "disabled");
    pinOk = true;
    const r = await agent.reload();
    assert.deepEqual(r.kept, ["hsm"]);
    assert.equal((await unixRequest(agent.socketPath, "GET", "/v1/credentials/hsm")).status, 200);
    assert.equal(opens, 2);
  } finally {
    await agent.close();
    cleanup();
  }
});
