/**
 * `ra-agent emulator` as a process: exactly one JSON line on stdout once
 * listening, logs on stderr, a working endpoint, a clean exit on SIGTERM;
 * `--config` files; usage errors.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createCa, haveCommand, independentlySign, tempDir, writeCa, writeLeaf } from "./helpers";
import { buildWorld, ROLE_A, ROLE_B } from "./world";

const mainJs = resolve(__dirname, "..", "..", "src", "cli", "main.js");
const canSign = haveCommand("python3") && haveCommand("openssl", ["version"]);
if (!canSign && process.env.CI === "true") throw new Error("python3 and openssl are required on CI for the emulator tests");

interface Started {
  child: ChildProcessWithoutNullStreams;
  line: Record<string, unknown>;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startCli(args: string[]): Promise<Started> {
  const child = spawn(process.execPath, [mainJs, "emulator", ...args], { env: { ...process.env, RA_AGENT_LOG_LEVEL: "info" } });
  let out = "";
  let err = "";
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.on("exit", (code, signal) => res({ code, signal })));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  return new Promise((resolvePromise, reject) => {
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
      const nl = out.indexOf("\n");
      if (nl >= 0) resolvePromise({ child, line: JSON.parse(out.slice(0, nl)) as Record<string, unknown>, stdout: () => out, stderr: () => err, exited });
    });
    void exited.then(({ code }) => reject(new Error(`emulator exited (${code}) before printing its line: ${err}`)));
  });
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [mainJs, "emulator", ...args]);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("exit", (code) => resolvePromise({ code, stdout, stderr }));
  });
}

test("ra-agent emulator --ca: one JSON line, a working endpoint, clean stop on SIGTERM", { skip: canSign ? false : "python3 or openssl missing" }, async () => {
  const tmp = tempDir();
  try {
    const world = await buildWorld(tmp.dir, false);
    const emu = await startCli(["--ca", world.rootFile, "--role-arn", ROLE_A, "--role-arn", ROLE_B, "--port", "0"]);
    try {
      const line = emu.line;
      assert.deepEqual(Object.keys(line), ["endpoint", "stsEndpoint", "trustAnchorArn", "profileArn", "roleArns"]);
      assert.match(line.endpoint as string, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.match(line.stsEndpoint as string, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.notEqual(line.endpoint, line.stsEndpoint);
      assert.match(line.trustAnchorArn as string, /^arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor\/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.match(line.profileArn as string, /^arn:aws:rolesanywhere:us-east-1:123456789012:profile\/[0-9a-f-]{36}$/);
      assert.deepEqual(line.roleArns, [ROLE_A, ROLE_B]);

      const [signed] = await independentlySign([
        { endpoint: line.endpoint as string, ...world.leaves.ec, query: { trustAnchorArn: line.trustAnchorArn as string, profileArn: line.profileArn as string, roleArn: ROLE_B }, send: true },
      ]);
      assert.equal(signed.response!.status, 201, signed.response!.body);
    } finally {
      emu.child.kill("SIGTERM");
    }
    const { code } = await emu.exited;
    assert.equal(code, 0);
    assert.equal(emu.stdout().split("\n").filter(Boolean).length, 1, "stdout holds only the JSON line");
    assert.match(emu.stderr(), /emulator: listening/);
    assert.match(emu.stderr(), /CreateSession 201/);
    // No secret reaches the log.
    assert.doesNotMatch(emu.stderr(), /secretAccessKey|sessionToken/i);
  } finally {
    tmp.cleanup();
  }
});

test("ra-agent emulator --config: trust anchors, profiles and ARNs from the file; flags override ports and host", async () => {
  const tmp = tempDir();
  try {
    await buildWorld(tmp.dir, false); // writes root.pem
    const profileArn = "arn:aws:rolesanywhere:eu-west-1:210987654321:profile/12345678-1234-4234-8234-123456789abc";
    writeFileSync(
      join(tmp.dir, "emulator.json"),
      JSON.stringify({
        region: "eu-west-1",
        accountId: "210987654321",
        trustAnchors: [{ name: "corp", certificateFiles: ["root.pem"] }],
        profiles: [{ name: "ci", arn: profileArn, roleArns: ["arn:aws:iam::210987654321:role/ci"], durationSeconds: 43200, acceptRoleSessionName: true }],
      }),
    );
    const emu = await startCli(["--config", join(tmp.dir, "emulator.json"), "--host", "127.0.0.1", "--port", "0", "--log-level", "warn"]);
    try {
      assert.equal(emu.line.profileArn, profileArn);
      assert.match(emu.line.trustAnchorArn as string, /^arn:aws:rolesanywhere:eu-west-1:210987654321:trust-anchor\//);
      assert.deepEqual(emu.line.roleArns, ["arn:aws:iam::210987654321:role/ci"]);
    } finally {
      emu.child.kill("SIGTERM");
    }
    assert.equal((await emu.exited).code, 0);
    assert.equal(emu.stderr(), "", "--log-level warn keeps stderr quiet");
  } finally {
    tmp.cleanup();
  }
});

test("ra-agent emulator: usage errors exit 2 with a hint", async () => {
  const tmp = tempDir();
  try {
    const ca = await createCa({ name: "CN=cli usage CA" });
    const caFile = writeCa(tmp.dir, "ca", ca);
    writeFileSync(join(tmp.dir, "leaf.pem"), (await writeLeaf(tmp.dir, "leaf", ca, "EC-P256")).pem);
    writeFileSync(join(tmp.dir, "c.json"), "{}");
    const [noCa, clash, missing, notCa, badPort] = await Promise.all([
      runCli(["--port", "0"]),
      runCli(["--config", join(tmp.dir, "c.json"), "--ca", "x.pem"]),
      runCli(["--ca", join(tmp.dir, "absent.pem")]),
      runCli(["--ca", join(tmp.dir, "leaf.pem")]),
      runCli(["--ca", caFile, "--port", "70000"]),
    ]);
    for (const r of [noCa, clash, missing, notCa, badPort]) {
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stdout, "");
    }
    assert.match(noCa.stderr, /no CA to trust\n\s+hint: give --ca FILE/);
    assert.match(clash.stderr, /--ca cannot be combined with --config/);
    assert.match(missing.stderr, /cannot read CA certificate file .*absent\.pem: ENOENT/);
    assert.match(notCa.stderr, /is not a CA/);
    assert.match(badPort.stderr, /not a port number/);
  } finally {
    tmp.cleanup();
  }
});
