/**
 * `ra-agent update`: keeps a profile of the shared credentials file filled with
 * fresh credentials. Writes at once, then again at each refresh point (half-life
 * of the session, see {@link refreshThresholds}), so that tools reading the file
 * (which treat its keys as static) never see expired credentials while the
 * source works. With `once`, writes a single time.
 */
import type { Logger } from "winston";
import type { AwsCredentials } from "../credentials/credentials";
import { RaError } from "../errors";
import { DEFAULT_BACKOFF, retryDelayMs } from "./backoff";
import { refreshThresholds } from "./cache";
import { systemClock, type Clock } from "./clock";
import type { ProfileBackend } from "./backend";
import type { ProfileConfig } from "./config";
import { writeProfileCredentials } from "./credentials-file";

/** Options of {@link runUpdate}. */
export interface UpdateOptions {
  /** Obtains fresh credentials (a CreateSession). */
  source: () => Promise<AwsCredentials>;
  /** Credentials file path. */
  file: string;
  /** Section name in the file. */
  profile: string;
  /** Write once and return. */
  once: boolean;
  log: Logger;
  clock?: Clock;
  /** Stops the loop (SIGTERM). */
  signal?: AbortSignal;
  random?: () => number;
  /** Called after each successful write (tests, status). */
  onWrite?: (c: AwsCredentials) => void;
}

function wait(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = clock.setTimer(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      t.cancel();
      resolve();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Runs the update loop until `signal` aborts (or once).
 * @throws RaError from the source when `once` is set, or at any time for a PIN
 *   error (never retried), and for credentials-file errors.
 */
export async function runUpdate(options: UpdateOptions): Promise<void> {
  const clock = options.clock ?? systemClock;
  const { log, signal } = options;
  let failures = 0;
  // A timer keeps the process alive between writes (clock timers are unref'd).
  const keepAlive = options.once ? undefined : setInterval(() => undefined, 1 << 30);
  try {
    while (!signal?.aborted) {
      let c: AwsCredentials;
      try {
        c = await options.source();
      } catch (e) {
        if (options.once || (e instanceof RaError && (e.kind === "pin" || e.kind === "usage"))) throw e;
        failures++;
        const delay = retryDelayMs(failures, DEFAULT_BACKOFF, options.random);
        log.warn(`update: getting credentials failed (${e instanceof RaError ? e.code : "error"}): ${(e as Error).message}; retrying in ${Math.round(delay / 1000)} s`);
        await wait(clock, delay, signal);
        continue;
      }
      failures = 0;
      await writeProfileCredentials(options.file, options.profile, c);
      options.onWrite?.(c);
      if (options.once) {
        log.info(`update: wrote profile "${options.profile}" to ${options.file}, valid until ${c.expiration.toISOString()}`);
        return;
      }
      const now = clock.now();
      const lifetime = c.expiration.getTime() - now;
      const { refreshAtRemainingMs } = refreshThresholds(lifetime);
      const delay = Math.max(1_000, lifetime - refreshAtRemainingMs);
      log.info(`update: wrote profile "${options.profile}" to ${options.file}, valid until ${c.expiration.toISOString()}; next refresh at ${new Date(now + delay).toISOString()}`);
      await wait(clock, delay, signal);
    }
  } finally {
    if (keepAlive) clearInterval(keepAlive);
  }
}

/** Options of {@link runProfileUpdate}. */
export interface ProfileUpdateOptions extends Omit<UpdateOptions, "source"> {
  profile: string;
  /** Where the credentials come from. */
  source: ProfileConfig;
  backend?: ProfileBackend;
}

/**
 * `update` for a profile built from flags: opens the signer once (one login),
 * then runs {@link runUpdate} with CreateSession as the source.
 * @throws as {@link runUpdate}, and the signer's open errors.
 */
export async function runProfileUpdate(options: ProfileUpdateOptions): Promise<void> {
  const backend = options.backend ?? (await import("./default-backend")).createDefaultBackend();
  try {
    const signer = await backend.openSigner(options.source);
    try {
      await runUpdate({ ...options, source: () => backend.createSession(signer, options.source) });
    } finally {
      await signer.close().catch(() => undefined);
    }
  } finally {
    await backend.close?.();
  }
}
