/**
 * The endpoint goes away: the agent keeps serving the last good credentials
 * while they are valid, then answers with a clear error. Real emulator, real
 * file key and CreateSession client; the agent's clock is manual so that an hour
 * passes in milliseconds (signing and the emulator use real time).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { Agent } from "../../src/agent/agent";
import { fetchCredentialsFromAgent } from "../../src/agent/client";
import { RaError } from "../../src/errors";
import { ManualClock, memoryLogger, tempDir, unixRequest, writeConfig } from "./helpers";
import { fileLeaf, startWorld } from "./world";

const MIN = 60_000;

test("emulator down: last good credentials served until expiry, then a clear error", async () => {
  const { dir, cleanup } = tempDir();
  const world = await startWorld(dir);
  const clock = new ManualClock(Date.now());
  const leaf = await fileLeaf(world);
  const configPath = writeConfig(dir, { profiles: [{ name: "dev", ...leaf, ...world.arns, endpoint: world.endpoint, region: "us-east-1", durationSeconds: 3600, timeoutMs: 2000 }] });
  const socketPath = join(dir, "agent.sock");
  const { log, lines } = memoryLogger("info");
  // The refresh timeout runs on the manual clock too: keep it out of the way of big jumps.
  const agent = await Agent.start({ configPath, socketPath, log, clock, random: () => 0.5, cachePolicy: { refreshTimeoutMs: 86_400_000 } });
  let emulatorClosed = false;
  try {
    const first = await fetchCredentialsFromAgent({ socketPath, profile: "dev" });
    assert.ok(first);
    assert.equal(world.emulator.createSessionCount, 1);
    const expiresAt = Date.parse(first.Expiration);

    await world.close();
    emulatorClosed = true;

    // Past half-life: the refresh fails, the last good credentials are still handed out.
    clock.current += 31 * MIN;
    assert.deepEqual(await fetchCredentialsFromAgent({ socketPath, profile: "dev" }), first);
    await waitUntil(() => JSON.parse(lastStatus).profiles?.[0]?.cache?.consecutiveFailures >= 1, async () => (lastStatus = (await unixRequest(socketPath, "GET", "/v1/status")).body));
    // 10 minutes left: below botocore's 15-minute mark, still valid, still served (degraded).
    await clock.advance(expiresAt - clock.now() - 10 * MIN);
    assert.deepEqual(await fetchCredentialsFromAgent({ socketPath, profile: "dev" }), first);
    await waitUntil(() => JSON.parse(lastStatus).profiles[0].cache.consecutiveFailures >= 2, async () => (lastStatus = (await unixRequest(socketPath, "GET", "/v1/status")).body));
    const status = JSON.parse(lastStatus).profiles[0].cache;
    assert.equal(status.state, "degraded");
    assert.match(status.lastError.code, /^SERVICE_/);

    // Expired (inside the 60 s margin): a clear error, never the stale credentials.
    await clock.advance(expiresAt - clock.now() - 30_000);
    await assert.rejects(fetchCredentialsFromAgent({ socketPath, profile: "dev" }), (e: unknown) => {
      assert.ok(e instanceof RaError);
      assert.equal(e.kind, "service");
      assert.match(e.code, /^SERVICE_/);
      assert.match(e.message, /no valid credentials for profile "dev": the last refresh .* failed/);
      assert.match(e.hint ?? "", /retries by itself|endpoint/);
      return true;
    });
    assert.ok(lines.some((l) => /credentials refresh \(\w+\) failed/.test(l)));
  } finally {
    await agent.close();
    if (!emulatorClosed) await world.close();
    cleanup();
  }
});

let lastStatus = "{}";

async function waitUntil(cond: () => boolean, poll: () => Promise<unknown>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    await poll();
    if (cond()) return;
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}
