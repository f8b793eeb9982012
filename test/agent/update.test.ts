import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runUpdate } from "../../src/agent/update";
import { RaError } from "../../src/errors";
import type { AwsCredentials } from "../../src/credentials/credentials";
import { ManualClock, flush, makeCredentials, memoryLogger, tempDir } from "./helpers";
import { CLI, cleanAwsEnv, fileLeaf, run, startWorld } from "./world";

const MIN = 60_000;

test("update loop: writes at once, again at half-life, retries failures, stops on abort", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const clock = new ManualClock();
    const file = join(dir, "credentials");
    writeFileSync(file, "# keep me\n[other]\naws_access_key_id = AKIAOTHER\n");
    let fail = false;
    const issued: AwsCredentials[] = [];
    const written: string[] = [];
    const controller = new AbortController();
    const done = runUpdate({
      source: async () => {
        if (fail) throw new RaError("service", "SERVICE_UNREACHABLE", "down");
        const c = makeCredentials(clock.now(), 60 * MIN);
        issued.push(c);
        return c;
      },
      file,
      profile: "ra",
      once: false,
      log: memoryLogger().log,
      clock,
      signal: controller.signal,
      random: () => 0,
      onWrite: (c) => written.push(c.accessKeyId),
    });
    await flush();
    assert.deepEqual(written, [issued[0].accessKeyId]);
    assert.match(readFileSync(file, "utf8"), /^# keep me\n\[other\]\naws_access_key_id = AKIAOTHER\n\n\[ra\]\naws_access_key_id = ASIA/);
    await clock.advance(29 * MIN);
    assert.equal(written.length, 1);
    await clock.advance(1 * MIN);
    assert.equal(written.length, 2, "rewritten at half-life");
    fail = true;
    await clock.advance(30 * MIN); // fails, backs off (5 s, 10 s, ...)
    assert.equal(written.length, 2);
    fail = false;
    await clock.advance(1 * MIN);
    assert.equal(written.length, 3, "recovered after the backoff");
    assert.match(readFileSync(file, "utf8"), new RegExp(`aws_access_key_id = ${issued[2].accessKeyId}`));
    controller.abort();
    await done;
  } finally {
    cleanup();
  }
});

test("update: a PIN error ends the loop at once (never retried)", async () => {
  const { dir, cleanup } = tempDir();
  try {
    let calls = 0;
    await assert.rejects(
      runUpdate({
        source: async () => {
          calls++;
          throw new RaError("pin", "PKCS11_PIN_INCORRECT", "wrong PIN");
        },
        file: join(dir, "credentials"),
        profile: "x",
        once: false,
        log: memoryLogger().log,
        clock: new ManualClock(),
      }),
      (e: unknown) => e instanceof RaError && e.kind === "pin",
    );
    assert.equal(calls, 1);
  } finally {
    cleanup();
  }
});

test("ra-agent update --once writes the profile; the AWS CLI uses it", async () => {
  const { dir, cleanup } = tempDir();
  const world = await startWorld(dir);
  try {
    const leaf = await fileLeaf(world);
    const file = join(dir, "aws", "credentials");
    const env = cleanAwsEnv(dir, { AWS_SHARED_CREDENTIALS_FILE: file });
    const args = [CLI, "update", "--once", "--profile", "ra", "--certificate", leaf.certificate, "--private-key", leaf.privateKey, "--trust-anchor-arn", world.arns.trustAnchorArn, "--profile-arn", world.arns.profileArn, "--role-arn", world.arns.roleArn, "--endpoint", world.endpoint, "--region", "us-east-1"];
    const r = await run(process.execPath, args, { env });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "");
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.match(readFileSync(file, "utf8"), /^\[ra\]\naws_access_key_id = ASIA\w+\naws_secret_access_key = \S+\naws_session_token = \S+\n$/);
    const aws = await run("aws", ["--profile", "ra", "--endpoint-url", world.stsEndpoint, "sts", "get-caller-identity"], { env });
    assert.equal(aws.status, 0, aws.stderr);
    assert.match(aws.stdout, /assumed-role/);
    // A missing flag is a usage error naming it.
    const bad = await run(process.execPath, [CLI, "update", "--once", "--certificate", leaf.certificate, "--private-key", leaf.privateKey], { env });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--trust-anchor-arn is required/);
  } finally {
    await world.close();
    cleanup();
  }
});
