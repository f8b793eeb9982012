import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { Agent } from "../../src/agent/agent";
import { claimSocketPath, prepareSocketDirectory } from "../../src/agent/socket-listener";
import { defaultSocketPath } from "../../src/agent/socket-path";
import { RaError } from "../../src/errors";
import { ARNS, memoryLogger, tempDir, testBackend, unixRequest, writeConfig } from "./helpers";

const P11 = "pkcs11:token=t;object=k";

function agentConfig(dir: string): string {
  return writeConfig(dir, { profiles: [{ name: "p", certificate: P11, ...ARNS }] });
}

function isCode(code: string) {
  return (e: unknown) => e instanceof RaError && e.code === code;
}

test("default socket path: RA_AGENT_SOCKET, XDG_RUNTIME_DIR, /run for root, per-uid tmp dir", () => {
  assert.equal(defaultSocketPath({ RA_AGENT_SOCKET: "/x/a.sock", XDG_RUNTIME_DIR: "/run/user/1" }), "/x/a.sock");
  assert.equal(defaultSocketPath({ XDG_RUNTIME_DIR: "/run/user/1000" }), "/run/user/1000/ra-agent/agent.sock");
  const uid = process.getuid!();
  const expected = uid === 0 ? "/run/ra-agent/agent.sock" : new RegExp(`ra-agent-${uid}/agent\\.sock$`);
  if (typeof expected === "string") assert.equal(defaultSocketPath({}), expected);
  else assert.match(defaultSocketPath({}), expected);
});

test("the agent creates its directory 0700 and its socket 0600, and removes the socket on close", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const socketPath = join(dir, "ra-agent", "agent.sock");
    const agent = await Agent.start({ configPath: agentConfig(dir), socketPath, backend: testBackend({}), log: memoryLogger().log });
    assert.equal(lstatSync(join(dir, "ra-agent")).mode & 0o777, 0o700);
    const st = lstatSync(socketPath);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal((await unixRequest(socketPath, "GET", "/v1/health")).status, 200);
    await agent.close();
    assert.equal(existsSync(socketPath), false);
  } finally {
    cleanup();
  }
});

test("a socket directory writable by group or others is refused", async () => {
  const { dir, cleanup } = tempDir();
  try {
    for (const mode of [0o777, 0o770, 0o1777]) {
      const d = join(dir, `open-${mode.toString(8)}`);
      mkdirSync(d);
      chmodSync(d, mode);
      assert.throws(() => prepareSocketDirectory(d), (e: unknown) => isCode("AGENT_SOCKET_DIR_UNSAFE")(e) && /writable by/.test((e as Error).message));
      await assert.rejects(Agent.start({ configPath: agentConfig(dir), socketPath: join(d, "agent.sock"), backend: testBackend({}), log: memoryLogger().log }), isCode("AGENT_SOCKET_DIR_UNSAFE"));
      assert.equal(existsSync(join(d, "agent.sock")), false);
    }
    // Readable by others is allowed (with a warning): the socket itself is 0600.
    const readable = join(dir, "readable");
    mkdirSync(readable);
    chmodSync(readable, 0o755);
    assert.equal(prepareSocketDirectory(readable).warnings.length, 1);
  } finally {
    cleanup();
  }
});

test("a socket directory owned by another user is refused", () => {
  const { dir, cleanup } = tempDir();
  try {
    let foreign: string;
    if (process.getuid!() === 0) {
      foreign = join(dir, "foreign");
      mkdirSync(foreign, { mode: 0o700 });
      chownSync(foreign, 4321, 4321);
    } else {
      foreign = "/"; // owned by root, not by this user
    }
    assert.throws(() => prepareSocketDirectory(foreign), (e: unknown) => isCode("AGENT_SOCKET_DIR_UNSAFE")(e) && /belongs to uid/.test((e as Error).message));
  } finally {
    cleanup();
  }
});

test("a symbolic link as socket directory is refused", () => {
  const { dir, cleanup } = tempDir();
  try {
    mkdirSync(join(dir, "real"), { mode: 0o700 });
    symlinkSync(join(dir, "real"), join(dir, "link"));
    assert.throws(() => prepareSocketDirectory(join(dir, "link")), isCode("AGENT_SOCKET_DIR_UNSAFE"));
  } finally {
    cleanup();
  }
});

test("a stale socket (its process died) is replaced", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const socketPath = join(dir, "agent.sock");
    // A process that binds the socket and dies without removing it.
    const r = spawnSync(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, "SIGKILL"))`]);
    assert.equal(r.signal, "SIGKILL");
    assert.ok(lstatSync(socketPath).isSocket(), "the dead process left its socket behind");
    const { log, lines } = memoryLogger("info");
    const agent = await Agent.start({ configPath: agentConfig(dir), socketPath, backend: testBackend({}), log });
    try {
      assert.ok(lines.some((l) => l.includes("removed a stale socket")));
      assert.equal((await unixRequest(socketPath, "GET", "/v1/health")).status, 200);
    } finally {
      await agent.close();
    }
  } finally {
    cleanup();
  }
});

test("a live socket is never stolen", async () => {
  const { dir, cleanup } = tempDir();
  const socketPath = join(dir, "agent.sock");
  const other = createServer((s) => {
    s.on("error", () => undefined); // the liveness probes hang up at once
    s.end("still mine");
  });
  await new Promise<void>((r) => other.listen(socketPath, r));
  try {
    await assert.rejects(Agent.start({ configPath: agentConfig(dir), socketPath, backend: testBackend({}), log: memoryLogger().log }), isCode("AGENT_ALREADY_RUNNING"));
    await assert.rejects(claimSocketPath(socketPath), isCode("AGENT_ALREADY_RUNNING"));
    // The other listener still owns the path and answers.
    const answer = await new Promise<string>((resolve, reject) => {
      const c = require("node:net").connect(socketPath) as import("node:net").Socket;
      let data = "";
      c.on("data", (d: Buffer) => (data += d.toString()));
      c.on("end", () => resolve(data));
      c.on("error", reject);
    });
    assert.equal(answer, "still mine");
    // And a second agent does not steal from a first agent either.
    const first = await Agent.start({ configPath: agentConfig(dir), socketPath: join(dir, "a2.sock"), backend: testBackend({}), log: memoryLogger().log });
    await assert.rejects(Agent.start({ configPath: agentConfig(dir), socketPath: join(dir, "a2.sock"), backend: testBackend({}), log: memoryLogger().log }), isCode("AGENT_ALREADY_RUNNING"));
    assert.equal((await unixRequest(join(dir, "a2.sock"), "GET", "/v1/health")).status, 200);
    await first.close();
  } finally {
    await new Promise((r) => other.close(r));
    cleanup();
  }
});

test("a file that is not a socket is left alone", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const socketPath = join(dir, "agent.sock");
    writeFileSync(socketPath, "precious");
    await assert.rejects(Agent.start({ configPath: agentConfig(dir), socketPath, backend: testBackend({}), log: memoryLogger().log }), isCode("AGENT_SOCKET_PATH_TAKEN"));
    assert.ok(lstatSync(socketPath).isFile());
  } finally {
    cleanup();
  }
});
