/**
 * Time as the agent sees it. Injected everywhere the agent reads the time or
 * schedules work, so that cache and token-expiry logic can be tested with a
 * manual clock instead of sleeping.
 */

/** An opaque timer handle returned by {@link Clock.setTimer}. */
export interface TimerHandle {
  cancel(): void;
}

/** Source of the current time and of timers. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /**
   * Calls `fn` after `delayMs`. Timers never keep the process alive (they are
   * unref'd): a daemon stays up because of its listening socket, not its timers.
   */
  setTimer(fn: () => void, delayMs: number): TimerHandle;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, delayMs) {
    // setTimeout caps at 2^31-1 ms (~24.8 days); longer delays fire at once, so clamp.
    const t = setTimeout(fn, Math.max(0, Math.min(delayMs, 2_147_483_647)));
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};
