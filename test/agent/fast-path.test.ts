import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { Agent } from "../../src/agent/agent";
import { parseFastArgs } from "../../src/agent/fast-path";
import { RaError } from "../../src/errors";
import { ARNS, makeCredentials, memoryLogger, softwareSigner, tempDir, testBackend, writeConfig } from "./helpers";

test("fast path: only `credential-process --profile NAME [--socket PATH]` is taken", () => {
  assert.deepEqual(parseFastArgs(["credential-process", "--profile", "p"]), { profile: "p" });
  assert.deepEqual(parseFastArgs(["credential-process", "--socket=/s", "--profile=p"]), { profile: "p", socket: "/s" });
  for (const args of [
    ["credential-process"],
    ["credential-process", "--profile"],
    ["credential-process", "--profile", "--socket", "/s"],
    ["credential-process", "--profile", "p", "--no-agent"],
    ["credential-process", "--profile", "p", "--certificate", "c.pem"],
    ["credential-process", "--profile", "p", "--profile", "q"],
    ["sign-string", "--profile", "p"],
  ]) {
    assert.equal(parseFastArgs(args), undefined, args.join(" "));
  }
});

function runFast(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const fast = resolve(__dirname, "../../src/agent/fast-path.js");
  const script = `require(${JSON.stringify(fast)}).runFastCredentialProcess(process.argv).then((c) => { process.stdout.write("\\nEXIT " + c); })`;
  return new Promise((res) => {
    const child = spawn(process.execPath, ["-e", script, "--", ...args]);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("close", (status) => res({ status, stdout, stderr }));
  });
}

test("fast path end to end: credentials, an agent error with its exit status, and no agent left to the CLI", async () => {
  const { dir, cleanup } = tempDir();
  const signer = await softwareSigner();
  let fail = false;
  const backend = testBackend({
    signer,
    session: async () => {
      if (fail) throw new RaError("service", "CREATE_SESSION_DENIED", "denied by the service");
      return makeCredentials(Date.now());
    },
  });
  const configPath = writeConfig(dir, { profiles: [{ name: "ok", certificate: "pkcs11:token=t", ...ARNS }, { name: "bad", certificate: "pkcs11:token=t", ...ARNS }] });
  const socket = join(dir, "a.sock");
  const agent = await Agent.start({ configPath, socketPath: socket, backend, log: memoryLogger().log });
  try {
    // `node -e` leaves process.argv = [node, ...args]: runFastCredentialProcess reads from index 2.
    const ok = await runFast(["x", "credential-process", "--profile", "ok", "--socket", socket]);
    const [json, exit] = ok.stdout.split("\nEXIT ");
    assert.equal(exit, "0");
    assert.equal(JSON.parse(json).Version, 1);
    fail = true;
    const bad = await runFast(["x", "credential-process", "--profile", "bad", "--socket", socket]);
    assert.match(bad.stdout, /EXIT 5$/, "service errors exit with status 5, as the CLI does");
    assert.match(bad.stderr, /^ra-agent: error: agent: no valid credentials for profile "bad".*denied by the service/);
    const none = await runFast(["x", "credential-process", "--profile", "ok", "--socket", join(dir, "none.sock")]);
    assert.match(none.stdout, /EXIT undefined$/, "no agent: the full CLI decides");
  } finally {
    await agent.close();
    cleanup();
  }
});

test("the client's HTTP response parser: Content-Length, chunked, read-to-close, truncation", async () => {
  const { parseHttpResponse } = await import("../../src/agent/client");
  const b = (s: string) => Buffer.from(s, "latin1");
  assert.deepEqual(parseHttpResponse(b("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"), false), { status: 200, body: b("{}") });
  assert.equal(parseHttpResponse(b("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}"), false), undefined, "waits for the rest");
  assert.throws(() => parseHttpResponse(b("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}"), true), /truncated/);
  assert.deepEqual(parseHttpResponse(b("HTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), false), { status: 503, body: b("abcde") });
  assert.equal(parseHttpResponse(b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"), false), undefined);
  assert.deepEqual(parseHttpResponse(b("HTTP/1.0 404 x\r\n\r\nbody"), true), { status: 404, body: b("body") });
  assert.equal(parseHttpResponse(b("HTTP/1.1 200 OK\r\nContent-"), false), undefined);
  assert.throws(() => parseHttpResponse(b("SSH-2.0-OpenSSH\r\n\r\n"), false), /not an HTTP response/);
});
