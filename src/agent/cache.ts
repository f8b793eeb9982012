/**
 * Per-profile credentials cache with refresh-ahead, single flight and
 * serve-last-good.
 *
 * Rules (docs/agent.md, "Credentials cache"):
 * - Normal hand-out: only credentials with more than 15 minutes left (botocore
 *   refreshes below 15 minutes and would otherwise call the agent on every request).
 *   For short sessions (less than 30 minutes in all) the floor is half the lifetime.
 * - Refresh ahead: at half-life, or 5 minutes before the floor when that comes first.
 *   Clients keep getting the current credentials while the refresh runs.
 * - Single flight: one refresh at a time per profile; every waiter gets its result.
 * - A failed refresh is retried with jittered exponential backoff and a minimum
 *   interval; meanwhile the last good credentials are served while they remain
 *   valid (more than {@link CachePolicy.expiryMarginMs} left). botocore accepts
 *   credentials with less than 15 minutes left (it only refuses expired ones), so
 *   serving them beats failing a request that would have worked.
 * - Expired or empty credentials are never served; without valid credentials a
 *   client gets the refresh error, with when the agent tries again.
 * - A PIN error (RaError kind "pin") disables automatic refreshes for the profile
 *   until {@link ProfileCredentialCache.reset} (config reload): a token counts
 *   every wrong PIN and locks.
 */
import type { AwsCredentials } from "../credentials/credentials";
import { RaError } from "../errors";
import { DEFAULT_BACKOFF, retryDelayMs, type BackoffPolicy } from "./backoff";
import { systemClock, type Clock, type TimerHandle } from "./clock";

/** Produces fresh credentials (signs a CreateSession). */
export type CredentialSource = () => Promise<AwsCredentials>;

/** Cache timing, in milliseconds. */
export interface CachePolicy {
  /** Credentials are handed out normally only with more than this left (15 min). */
  minRemainingMs: number;
  /** Refresh at least this long before credentials fall below {@link minRemainingMs} (5 min). */
  refreshLeadMs: number;
  /** After a failed refresh, the last good credentials are served while more than this is left (60 s). */
  expiryMarginMs: number;
  /** A refresh that takes longer than this counts as failed (2 min). */
  refreshTimeoutMs: number;
  /** Retry delays after failures. */
  backoff: BackoffPolicy;
}

/** The defaults described in the module comment. */
export const DEFAULT_CACHE_POLICY: CachePolicy = {
  minRemainingMs: 15 * 60_000,
  refreshLeadMs: 5 * 60_000,
  expiryMarginMs: 60_000,
  refreshTimeoutMs: 120_000,
  backoff: DEFAULT_BACKOFF,
};

/** Options of {@link ProfileCredentialCache}. */
export interface CacheOptions {
  clock?: Clock;
  policy?: Partial<CachePolicy>;
  /** Random numbers in [0, 1) for backoff jitter. */
  random?: () => number;
  /** Refresh ahead even when no client asked since the last refresh (config `keepWarm`). */
  keepWarm?: boolean;
  /** Told about every refresh outcome (for logging); must not throw. */
  onRefresh?: (event: RefreshEvent) => void;
}

/** What {@link CacheOptions.onRefresh} receives. No secrets. */
export type RefreshEvent =
  | { profile: string; outcome: "ok"; reason: RefreshReason; expiration: Date; durationMs: number }
  | { profile: string; outcome: "failed"; reason: RefreshReason; error: unknown; durationMs: number; nextAttemptAt?: Date; disabled: boolean };

/** Why a refresh started. */
export type RefreshReason = "demand" | "ahead" | "retry" | "warm";

/** Where a profile's cache stands. */
export type CacheState =
  /** No credentials yet, no failure. */
  | "empty"
  /** Credentials with more than the refresh-ahead margin left. */
  | "fresh"
  /** Credentials still handed out; a refresh is due or running. */
  | "refresh-due"
  /** Refreshes fail; last good credentials (under the 15-minute floor) still served. */
  | "degraded"
  /** No valid credentials and the last refresh failed. */
  | "failed"
  /** Refreshes stopped after a PIN error until the config is reloaded. */
  | "disabled";

/** Cache status as reported by `GET /v1/status`. Contains no secret. */
export interface CacheStatus {
  state: CacheState;
  /** Expiration of the held credentials (ISO 8601). */
  expiration?: string;
  /** Seconds of validity left. */
  secondsLeft?: number;
  /** When the held credentials were obtained. */
  obtainedAt?: string;
  /** When the next refresh-ahead is due. */
  refreshAt?: string;
  refreshing: boolean;
  consecutiveFailures: number;
  lastError?: { kind: string; code: string; message: string; at: string };
  /** Earliest time of the next attempt after a failure. */
  nextAttemptAt?: string;
  refreshCount: number;
}

interface Held {
  credentials: AwsCredentials;
  obtainedAt: number;
  expiresAt: number;
  /** Normal hand-out floor for this lifetime. */
  floorMs: number;
  /** Remaining time at which a refresh ahead starts. */
  refreshAtRemainingMs: number;
}

interface Failure {
  error: unknown;
  at: number;
}

/**
 * Credentials cache of one profile. All methods are safe to call concurrently.
 */
export class ProfileCredentialCache {
  private readonly clock: Clock;
  private readonly policy: CachePolicy;
  private readonly random: () => number;
  private held?: Held;
  private inflight?: Promise<AwsCredentials>;
  private failures = 0;
  private lastFailure?: Failure;
  private nextAttemptAt = 0;
  private disabled?: Failure;
  private timer?: TimerHandle;
  private lastRequestAt = -Infinity;
  private refreshCount = 0;
  private closed = false;

  /**
   * @param profile - profile name, used in errors and events.
   * @param source - obtains new credentials; its RaErrors reach clients unchanged.
   */
  constructor(
    readonly profile: string,
    private readonly source: CredentialSource,
    private readonly options: CacheOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.policy = { ...DEFAULT_CACHE_POLICY, ...options.policy };
    this.random = options.random ?? Math.random;
  }

  /**
   * Synchronous fast path: the credentials when they can be handed out right now
   * (more than the floor left), else undefined (then call {@link get}). Starts a
   * background refresh when one is due.
   */
  peek(): AwsCredentials | undefined {
    const now = this.clock.now();
    this.lastRequestAt = now;
    const held = this.held;
    if (!held || held.expiresAt - now <= held.floorMs) return undefined;
    if (held.expiresAt - now <= held.refreshAtRemainingMs) this.refreshInBackground(now, "ahead");
    return held.credentials;
  }

  /**
   * Credentials for a client: cached ones when they have more than the floor left,
   * else the result of the (single) refresh in flight, else the last good ones
   * while still valid.
   * @throws RaError the refresh error (its kind and code) when no valid credentials exist;
   *   `AGENT_CLOSED` after {@link close}.
   */
  async get(): Promise<AwsCredentials> {
    const fast = this.peek();
    if (fast) return fast;
    if (this.closed) throw new RaError("agent", "AGENT_CLOSED", `profile "${this.profile}" is shutting down`);
    const now = this.clock.now();
    if (!this.inflight && this.mayAttempt(now)) this.startRefresh("demand");
    // After failures, a retry may be slow or fail again: serve valid last-good
    // credentials at once instead of holding the client.
    if (this.inflight && !(this.failures > 0 && this.usable(now))) {
      try {
        return await this.inflight;
      } catch {
        // Fall through: serve the last good credentials if they are still valid.
      }
    }
    const usable = this.usable(this.clock.now());
    if (usable) return usable;
    throw this.unavailableError();
  }

  /** Status without secrets. */
  status(): CacheStatus {
    const now = this.clock.now();
    const held = this.held && this.held.expiresAt - now > 0 ? this.held : undefined;
    const status: CacheStatus = {
      state: this.state(now),
      refreshing: this.inflight !== undefined,
      consecutiveFailures: this.failures,
      refreshCount: this.refreshCount,
    };
    if (held) {
      status.expiration = new Date(held.expiresAt).toISOString();
      status.secondsLeft = Math.floor((held.expiresAt - now) / 1000);
      status.obtainedAt = new Date(held.obtainedAt).toISOString();
      status.refreshAt = new Date(held.expiresAt - held.refreshAtRemainingMs).toISOString();
    }
    const failure = this.disabled ?? this.lastFailure;
    if (failure) status.lastError = { ...describeError(failure.error), at: new Date(failure.at).toISOString() };
    if (!this.disabled && this.failures > 0 && this.nextAttemptAt > now) status.nextAttemptAt = new Date(this.nextAttemptAt).toISOString();
    return status;
  }

  /** Whether refreshes are stopped after a PIN error. */
  get isDisabled(): boolean {
    return this.disabled !== undefined;
  }

  /**
   * Forgets failures and re-enables refreshes after a PIN error (config reload).
   * Held credentials stay.
   */
  reset(): void {
    this.disabled = undefined;
    this.failures = 0;
    this.lastFailure = undefined;
    this.nextAttemptAt = 0;
    this.schedule();
  }

  /**
   * Starts a refresh now unless one runs or a failure backoff is pending, and
   * resolves when it ends (never rejects). Used to warm the cache at start.
   */
  async warm(): Promise<void> {
    const now = this.clock.now();
    if (!this.inflight && this.mayAttempt(now)) this.startRefresh("warm");
    await this.inflight?.catch(() => undefined);
  }

  /** Stops timers; later calls to {@link get} fail. A refresh in flight finishes unobserved. */
  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private state(now: number): CacheState {
    if (this.disabled) return "disabled";
    const held = this.held;
    const left = held ? held.expiresAt - now : 0;
    if (held && left > held.refreshAtRemainingMs && this.failures === 0) return "fresh";
    if (held && left > held.floorMs) return "refresh-due";
    if (held && left > this.policy.expiryMarginMs) return "degraded";
    return this.lastFailure ? "failed" : "empty";
  }

  private usable(now: number): AwsCredentials | undefined {
    const held = this.held;
    if (!held) return undefined;
    if (held.expiresAt - now > this.policy.expiryMarginMs) return held.credentials;
    if (held.expiresAt <= now) this.held = undefined; // never keep expired secrets around
    return undefined;
  }

  private mayAttempt(now: number): boolean {
    return !this.closed && !this.disabled && now >= this.nextAttemptAt;
  }

  private refreshInBackground(now: number, reason: RefreshReason): void {
    if (this.inflight || !this.mayAttempt(now)) return;
    this.startRefresh(reason).catch(() => undefined);
  }

  private startRefresh(reason: RefreshReason): Promise<AwsCredentials> {
    const started = this.clock.now();
    this.timer?.cancel();
    this.timer = undefined;
    const run = (async () => {
      try {
        const credentials = await this.callSource();
        const now = this.clock.now();
        const held = this.accept(credentials, now);
        this.held = held;
        this.failures = 0;
        this.lastFailure = undefined;
        this.nextAttemptAt = 0;
        this.refreshCount++;
        this.notify({ profile: this.profile, outcome: "ok", reason, expiration: credentials.expiration, durationMs: now - started });
        return credentials;
      } catch (error) {
        const now = this.clock.now();
        this.failures++;
        this.lastFailure = { error, at: now };
        const disabled = error instanceof RaError && error.kind === "pin";
        if (disabled) this.disabled = { error, at: now };
        else this.nextAttemptAt = now + retryDelayMs(this.failures, this.policy.backoff, this.random);
        this.notify({
          profile: this.profile,
          outcome: "failed",
          reason,
          error,
          durationMs: now - started,
          nextAttemptAt: disabled ? undefined : new Date(this.nextAttemptAt),
          disabled,
        });
        throw error;
      } finally {
        this.inflight = undefined;
        this.schedule();
      }
    })();
    this.inflight = run;
    run.catch(() => undefined); // waiters observe the rejection; nobody else must see it unhandled
    return run;
  }

  /** Calls the source, bounded by the refresh timeout. */
  private callSource(): Promise<AwsCredentials> {
    return new Promise<AwsCredentials>((resolve, reject) => {
      const timer = this.clock.setTimer(() => {
        reject(
          new RaError("service", "AGENT_REFRESH_TIMEOUT", `refreshing credentials for profile "${this.profile}" took longer than ${Math.round(this.policy.refreshTimeoutMs / 1000)} s`, {
            hint: "check that the token and the Roles Anywhere endpoint respond",
          }),
        );
      }, this.policy.refreshTimeoutMs);
      let call: Promise<AwsCredentials>;
      try {
        call = this.source();
      } catch (e) {
        call = Promise.reject(e);
      }
      call.then(
        (c) => {
          timer.cancel();
          resolve(c);
        },
        (e) => {
          timer.cancel();
          reject(e);
        },
      );
    });
  }

  /** Validates what the source returned and derives the refresh points. */
  private accept(c: AwsCredentials, now: number): Held {
    const expiresAt = c?.expiration instanceof Date ? c.expiration.getTime() : NaN;
    if (!c || !c.accessKeyId || !c.secretAccessKey || !c.sessionToken || !Number.isFinite(expiresAt)) {
      throw new RaError("service", "AGENT_EMPTY_CREDENTIALS", `the credentials obtained for profile "${this.profile}" are incomplete (a key, secret, session token or expiration is missing)`, {
        hint: "check the Roles Anywhere endpoint's response",
      });
    }
    if (expiresAt - now <= this.policy.expiryMarginMs) {
      throw new RaError("service", "AGENT_EXPIRED_CREDENTIALS", `the credentials obtained for profile "${this.profile}" expire at ${c.expiration.toISOString()}, which is too soon to use`, {
        hint: "check the system clock and the session duration",
      });
    }
    return { credentials: c, obtainedAt: now, expiresAt, ...refreshThresholds(expiresAt - now, this.policy) };
  }

  /** Arms the one timer: refresh ahead after success, retry after failure. */
  private schedule(): void {
    this.timer?.cancel();
    this.timer = undefined;
    if (this.closed || this.disabled || this.inflight) return;
    const now = this.clock.now();
    const held = this.held;
    if (this.failures > 0) {
      // Retry in the background only while it can still save valid credentials
      // (or when asked to keep warm); otherwise the next client request retries.
      if (!(this.options.keepWarm || (held && held.expiresAt > now))) return;
      this.timer = this.clock.setTimer(() => this.onTimer("retry"), Math.max(0, this.nextAttemptAt - now));
      return;
    }
    if (!held) return;
    const at = held.expiresAt - held.refreshAtRemainingMs;
    this.timer = this.clock.setTimer(() => this.onTimer("ahead"), Math.max(0, at - now));
  }

  private onTimer(reason: RefreshReason): void {
    this.timer = undefined;
    const held = this.held;
    // An idle profile (no client since the credentials were obtained) is left to
    // lapse: no CreateSession nobody asked for. The next request refreshes it.
    const wanted = this.options.keepWarm || (held !== undefined && this.lastRequestAt > held.obtainedAt) || (reason === "retry" && held !== undefined);
    if (!wanted) return;
    this.refreshInBackground(this.clock.now(), reason);
  }

  private unavailableError(): RaError {
    const failure = this.disabled ?? this.lastFailure;
    const when = this.nextAttemptAt > this.clock.now() ? `; next attempt at ${new Date(this.nextAttemptAt).toISOString()}` : "";
    if (!failure) {
      return new RaError("agent", "AGENT_NO_CREDENTIALS", `no credentials for profile "${this.profile}"`);
    }
    const e = failure.error;
    const base = e instanceof RaError ? e : undefined;
    const message = `no valid credentials for profile "${this.profile}": the last refresh (${new Date(failure.at).toISOString()}) failed: ${base ? base.message : errorMessage(e)}`;
    const hint = this.disabled
      ? `${base?.hint ? base.hint + "; then " : ""}reload the agent's configuration (SIGHUP) to try again: PIN errors are never retried automatically`
      : [base?.hint, when ? `the agent retries by itself${when}` : undefined].filter(Boolean).join("; ") || undefined;
    return new RaError(base?.kind ?? "service", base?.code ?? "AGENT_REFRESH_FAILED", message, { hint, cause: e });
  }

  private notify(event: RefreshEvent): void {
    try {
      this.options.onRefresh?.(event);
    } catch {
      // A logging failure must not break the cache.
    }
  }
}

/**
 * The hand-out floor and the refresh-ahead point for credentials with
 * `lifetimeMs` of validity when obtained: floor = min(15 min, lifetime/2);
 * refresh when the time left falls to max(floor + 5 min, lifetime/2) (half-life
 * for sessions of 40 minutes and more).
 */
export function refreshThresholds(lifetimeMs: number, policy: Pick<CachePolicy, "minRemainingMs" | "refreshLeadMs"> = DEFAULT_CACHE_POLICY): { floorMs: number; refreshAtRemainingMs: number } {
  const floorMs = Math.min(policy.minRemainingMs, lifetimeMs / 2);
  const refreshAtRemainingMs = Math.min(lifetimeMs, Math.max(floorMs + policy.refreshLeadMs, lifetimeMs / 2));
  return { floorMs, refreshAtRemainingMs };
}

/** Kind, code and message of an error, for status reports and logs. */
export function describeError(e: unknown): { kind: string; code: string; message: string } {
  if (e instanceof RaError) return { kind: e.kind, code: e.code, message: e.message };
  return { kind: "internal", code: "INTERNAL", message: errorMessage(e) };
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
