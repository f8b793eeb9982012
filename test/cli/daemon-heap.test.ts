/**
 * How the long-running commands keep their heap small: a young-generation limit
 * given at start is recognised wherever node takes flags (checked in a child
 * process too, where setting a V8 flag cannot leak into other tests).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { youngGenerationLimited } from "../../src/cli/daemon-heap";

test("a semi-space limit is found on node's command line and in NODE_OPTIONS, in both spellings", () => {
  assert.equal(youngGenerationLimited(["--max-semi-space-size=1"], ""), true);
  assert.equal(youngGenerationLimited(["--max_semi_space_size=2"], ""), true);
  assert.equal(youngGenerationLimited([], "--max-semi-space-size=1"), true);
  assert.equal(youngGenerationLimited([], "--enable-source-maps --max-semi-space-size 1"), true);
  assert.equal(youngGenerationLimited([], "--max-semi-space-size"), true);
});

test("other flags are not taken for a semi-space limit", () => {
  assert.equal(youngGenerationLimited([], ""), false);
  assert.equal(youngGenerationLimited(["--max-old-space-size=64"], "--min-semi-space-size=1"), false);
  assert.equal(youngGenerationLimited([], "--max-semi-space-sizes=1"), false);
  assert.equal(youngGenerationLimited(["--no-max-semi-space-size-x"], ""), false);
});

test("a daemon reports whether node was started with the semi-space limit", () => {
  const module = join(__dirname, "..", "..", "src", "cli", "daemon-heap.js");
  const probe = `process.stdout.write(JSON.stringify(require(${JSON.stringify(module)}).keepDaemonHeapSmall()))`;
  const run = (env: Record<string, string>) => spawnSync(process.execPath, ["-e", probe], { env: { ...process.env, NODE_OPTIONS: "", ...env }, encoding: "utf8" });
  const plain = run({});
  assert.equal(plain.status, 0, plain.stderr);
  assert.deepEqual(JSON.parse(plain.stdout), { youngGenerationLimited: false });
  const limited = run({ NODE_OPTIONS: "--max-semi-space-size=1" });
  assert.equal(limited.status, 0, limited.stderr);
  assert.deepEqual(JSON.parse(limited.stdout), { youngGenerationLimited: true });
});
