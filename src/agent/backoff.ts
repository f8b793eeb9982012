/**
 * Retry delays after a failed credential refresh: exponential, jittered, with a
 * floor (so that a storm of client requests can never turn into a storm of
 * CreateSession calls; the service allows about 10 per second per account) and
 * a ceiling.
 */

/** Backoff parameters, in milliseconds. */
export interface BackoffPolicy {
  /** Smallest delay between two attempts, whatever the jitter. */
  minDelayMs: number;
  /** Delay scale of the first retry; doubles with each consecutive failure. */
  baseDelayMs: number;
  /** Largest delay. */
  maxDelayMs: number;
}

/** 5 s floor, 10 s first retry, at most 5 min between attempts. */
export const DEFAULT_BACKOFF: BackoffPolicy = { minDelayMs: 5_000, baseDelayMs: 10_000, maxDelayMs: 300_000 };

/**
 * Delay before the next attempt after `failures` consecutive failures (1 for the first).
 * "Equal jitter": half the exponential step is fixed, half random, so that
 * agents on many hosts spread out while each still backs off.
 * @param random - a number in [0, 1); injectable for tests.
 */
export function retryDelayMs(failures: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(failures, 1) - 1, 30);
  const step = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** exponent);
  const jittered = step / 2 + (step / 2) * random();
  return Math.round(Math.min(policy.maxDelayMs, Math.max(policy.minDelayMs, jittered)));
}
