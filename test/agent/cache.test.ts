import { test } from "node:test";
import assert from "node:assert/strict";
import { ProfileCredentialCache, refreshThresholds } from "../../src/agent/cache";
import { retryDelayMs, DEFAULT_BACKOFF } from "../../src/agent/backoff";
import { RaError } from "../../src/errors";
import type { AwsCredentials } from "../../src/credentials/credentials";
import { ManualClock, deferred, flush, makeCredentials } from "./helpers";

const MIN = 60_000;

function counting(clock: ManualClock, lifetimeMs = 60 * MIN) {
  const calls: number[] = [];
  const source = async () => {
    calls.push(clock.now());
    return makeCredentials(clock.now(), lifetimeMs);
  };
  return { calls, source };
}

test("refresh thresholds: half-life for 1 h, 15-minute floor, short sessions scaled", () => {
  assert.deepEqual(refreshThresholds(60 * MIN), { floorMs: 15 * MIN, refreshAtRemainingMs: 30 * MIN });
  assert.deepEqual(refreshThresholds(12 * 60 * MIN), { floorMs: 15 * MIN, refreshAtRemainingMs: 6 * 60 * MIN });
  // 30-minute sessions: floor 15 min, refresh at 20 min left (5 minutes ahead of the floor).
  assert.deepEqual(refreshThresholds(30 * MIN), { floorMs: 15 * MIN, refreshAtRemainingMs: 20 * MIN });
  // 15-minute sessions (the minimum): floor half the lifetime, refresh at 12.5 min left.
  assert.deepEqual(refreshThresholds(15 * MIN), { floorMs: 7.5 * MIN, refreshAtRemainingMs: 12.5 * MIN });
});

test("backoff grows exponentially with jitter, between the floor and the cap", () => {
  const lo = () => 0;
  const hi = () => 0.999999;
  assert.equal(retryDelayMs(1, DEFAULT_BACKOFF, lo), 5_000);
  assert.equal(retryDelayMs(1, DEFAULT_BACKOFF, hi), 10_000);
  assert.equal(retryDelayMs(2, DEFAULT_BACKOFF, lo), 10_000);
  assert.equal(retryDelayMs(3, DEFAULT_BACKOFF, hi), 40_000);
  assert.equal(retryDelayMs(50, DEFAULT_BACKOFF, hi), 300_000);
  assert.equal(retryDelayMs(50, DEFAULT_BACKOFF, lo), 150_000);
  for (let i = 1; i < 20; i++) {
    const d = retryDelayMs(i);
    assert.ok(d >= DEFAULT_BACKOFF.minDelayMs && d <= DEFAULT_BACKOFF.maxDelayMs, `delay ${d} for ${i} failures`);
  }
});

test("single flight: 500 concurrent waiters on a cold cache cause exactly one refresh", async () => {
  const clock = new ManualClock();
  const gate = deferred<AwsCredentials>();
  let calls = 0;
  const cache = new ProfileCredentialCache("p", () => {
    calls++;
    return gate.promise;
  }, { clock });
  const waiters = Array.from({ length: 500 }, () => cache.get());
  await flush();
  assert.equal(calls, 1);
  assert.equal(cache.status().refreshing, true);
  const creds = makeCredentials(clock.now());
  gate.resolve(creds);
  const results = await Promise.all(waiters);
  assert.equal(calls, 1);
  for (const r of results) assert.equal(r, creds);
  assert.equal(cache.status().state, "fresh");
  cache.close();
});

test("hands out cached credentials while more than the floor is left, refreshes ahead in the background", async () => {
  const clock = new ManualClock();
  const { calls, source } = counting(clock);
  const cache = new ProfileCredentialCache("p", source, { clock });
  const first = await cache.get();
  assert.equal(calls.length, 1);
  await clock.advance(29 * MIN);
  assert.equal(await cache.get(), first, "before half-life: cached");
  assert.equal(calls.length, 1);
  // The refresh-ahead timer fires at half-life because a client used the profile.
  await clock.advance(1 * MIN);
  assert.equal(calls.length, 2);
  const second = await cache.get();
  assert.notEqual(second, first);
  assert.ok(second.expiration.getTime() - clock.now() > 15 * MIN);
  cache.close();
});

test("a client never gets credentials with 15 minutes or less left while the source works", async () => {
  const clock = new ManualClock();
  const gate: { d?: ReturnType<typeof deferred<AwsCredentials>> } = {};
  let calls = 0;
  const cache = new ProfileCredentialCache("p", () => {
    calls++;
    if (calls === 1) return Promise.resolve(makeCredentials(clock.now()));
    gate.d = deferred<AwsCredentials>();
    return gate.d.promise;
  }, { clock });
  const first = await cache.get();
  // Idle profile: no timer-driven refresh without a request after the credentials came.
  await clock.advance(46 * MIN);
  assert.equal(calls, 1, "an idle profile is left alone");
  // 14 minutes left: below the floor, so the client waits for the refresh.
  const p = cache.get();
  await flush();
  assert.equal(calls, 2);
  const fresh = makeCredentials(clock.now());
  gate.d!.resolve(fresh);
  const got = await p;
  assert.equal(got, fresh);
  assert.notEqual(got, first);
  cache.close();
});

test("refresh failure: last good credentials are served while valid, retries back off, then a clear error", async () => {
  const clock = new ManualClock();
  let fail = false;
  const calls: number[] = [];
  const cache = new ProfileCredentialCache(
    "prod",
    async () => {
      calls.push(clock.now());
      if (fail) throw new RaError("service", "ENDPOINT_UNREACHABLE", "cannot reach the Roles Anywhere endpoint", { hint: "check the network" });
      return makeCredentials(clock.now());
    },
    { clock, random: () => 0.5 },
  );
  const good = await cache.get();
  fail = true;
  await clock.advance(MIN);
  await cache.get(); // a later client: the profile is in use
  await clock.advance(29 * MIN); // refresh ahead fires and fails
  assert.equal(calls.length, 2);
  assert.equal(await cache.get(), good, "still fresh enough: served");
  let s = cache.status();
  assert.equal(s.consecutiveFailures, 1);
  assert.equal(s.lastError?.code, "ENDPOINT_UNREACHABLE");
  assert.ok(s.nextAttemptAt);
  // Requests during the backoff do not cause attempts.
  const before = calls.length;
  for (let i = 0; i < 50; i++) await cache.get();
  assert.equal(calls.length, before, "the minimum interval holds against a request storm");

  // Let retries run until 10 minutes are left: the last good credentials are still served (degraded).
  await clock.advance(20 * MIN);
  assert.ok(calls.length > before, "retries happened in the background");
  const gaps = calls.slice(1).map((t, i) => t - calls[i]);
  for (const g of gaps.slice(1)) assert.ok(g >= DEFAULT_BACKOFF.minDelayMs, `retry gap ${g} ms respects the minimum interval`);
  assert.equal(await cache.get(), good);
  s = cache.status();
  assert.equal(s.state, "degraded");
  assert.ok(s.secondsLeft! <= 10 * 60);

  // Less than the 60-second margin left: never served.
  await clock.advance(9 * MIN + 30_000);
  await assert.rejects(cache.get(), (e: unknown) => {
    assert.ok(e instanceof RaError);
    assert.equal(e.code, "ENDPOINT_UNREACHABLE");
    assert.equal(e.kind, "service");
    assert.match(e.message, /no valid credentials for profile "prod"/);
    assert.match(e.hint ?? "", /check the network/);
    return true;
  });
  assert.equal(cache.status().state, "failed");

  // The source recovers: the next attempt (after the backoff) succeeds.
  fail = false;
  await clock.advance(10 * MIN);
  const recovered = await cache.get();
  assert.notEqual(recovered, good);
  assert.equal(cache.status().state, "fresh");
  assert.equal(cache.status().consecutiveFailures, 0);
  cache.close();
});

test("expired credentials are never served, even when the source is down", async () => {
  const clock = new ManualClock();
  let fail = false;
  const cache = new ProfileCredentialCache("p", async () => {
    if (fail) throw new Error("down");
    return makeCredentials(clock.now(), 20 * MIN);
  }, { clock });
  await cache.get();
  fail = true;
  await clock.advance(20 * MIN);
  await assert.rejects(cache.get(), /no valid credentials/);
  await clock.advance(60 * MIN);
  await assert.rejects(cache.get(), /no valid credentials/);
  cache.close();
});

test("empty or already-expired credentials from the source are refused", async () => {
  const clock = new ManualClock();
  const bad: AwsCredentials[] = [
    { accessKeyId: "", secretAccessKey: "x", sessionToken: "y", expiration: new Date(clock.now() + 3600_000) },
    { accessKeyId: "A", secretAccessKey: "x", sessionToken: "", expiration: new Date(clock.now() + 3600_000) },
    { accessKeyId: "A", secretAccessKey: "x", sessionToken: "y", expiration: new Date(NaN) },
    { accessKeyId: "A", secretAccessKey: "x", sessionToken: "y", expiration: new Date(clock.now() - 1000) },
  ];
  for (const b of bad) {
    const cache = new ProfileCredentialCache("p", async () => b, { clock });
    await assert.rejects(cache.get(), (e: unknown) => e instanceof RaError && /AGENT_(EMPTY|EXPIRED)_CREDENTIALS/.test(e.code));
    cache.close();
  }
});

test("a PIN error stops automatic refreshes until reset (config reload)", async () => {
  const clock = new ManualClock();
  let pinBad = false;
  let calls = 0;
  const cache = new ProfileCredentialCache("hsm", async () => {
    calls++;
    if (pinBad) throw new RaError("pin", "PKCS11_PIN_INCORRECT", "the token refused the PIN (CKR_PIN_INCORRECT)", { hint: "fix the PIN file" });
    return makeCredentials(clock.now());
  }, { clock });
  const good = await cache.get();
  pinBad = true;
  await clock.advance(MIN);
  await cache.get();
  await clock.advance(29 * MIN); // refresh ahead -> PIN error
  assert.equal(calls, 2);
  assert.equal(cache.status().state, "disabled");
  assert.equal(cache.isDisabled, true);
  // Valid credentials are still handed out: no PIN is spent to serve them.
  assert.equal(await cache.get(), good);
  await clock.advance(29 * MIN);
  assert.equal(calls, 2, "no retry after a PIN error, however long");
  await assert.rejects(cache.get(), (e: unknown) => e instanceof RaError && e.kind === "pin" && /SIGHUP/.test(e.hint ?? ""));
  assert.equal(calls, 2);
  pinBad = false;
  cache.reset();
  await cache.get();
  assert.equal(calls, 3);
  assert.equal(cache.status().state, "fresh");
  cache.close();
});

test("keepWarm refreshes an idle profile and warm() fetches at start", async () => {
  const clock = new ManualClock();
  const { calls, source } = counting(clock);
  const cache = new ProfileCredentialCache("p", source, { clock, keepWarm: true });
  await cache.warm();
  assert.equal(calls.length, 1);
  await clock.advance(30 * MIN);
  assert.equal(calls.length, 2, "refreshed at half-life without any client");
  cache.close();
});

test("a hung source counts as a failure after the refresh timeout", async () => {
  const clock = new ManualClock();
  const cache = new ProfileCredentialCache("p", () => new Promise<AwsCredentials>(() => undefined), { clock, policy: { refreshTimeoutMs: 5_000 } });
  const rejected = assert.rejects(cache.get(), (e: unknown) => e instanceof RaError && e.code === "AGENT_REFRESH_TIMEOUT");
  await clock.advance(5_000);
  await rejected;
  cache.close();
});

test("status carries no secrets", async () => {
  const clock = new ManualClock();
  const creds = makeCredentials(clock.now());
  const cache = new ProfileCredentialCache("p", async () => creds, { clock });
  await cache.get();
  const text = JSON.stringify(cache.status());
  assert.ok(!text.includes(creds.secretAccessKey));
  assert.ok(!text.includes(creds.sessionToken));
  assert.ok(!text.includes(creds.accessKeyId));
  cache.close();
});
