/**
 * Where C_Sign runs, per key. On the main thread always on libuv's pool
 * (C_SignAsync), so that the event loop keeps turning. On the PKCS#11 thread it
 * depends on how long the key takes to sign: a quick signature (SoftHSM P-256,
 * ~0.1 ms) is made right there, because the handoff to the pool costs about as
 * much and, measured under load, four pool threads queueing on SoftHSM's locks
 * cut EC signatures/s by 40 %; a slow one (RSA, a TPM, a network HSM) goes to the
 * pool, where the sessions sign in parallel on several cores.
 *
 * Only blocking calls are timed (a pool call's time includes its queueing): the
 * first signatures are made in place, and in pool mode one in
 * {@link SignTiming.RESAMPLE_EVERY} is, to follow the token.
 */
export class SignTiming {
  /** Above this average C_Sign time (µs), parallel signing on the pool wins. */
  static readonly POOL_THRESHOLD_MICROS = 300;
  /** Signatures timed in place before the average decides. */
  static readonly WARM_UP = 4;
  /** In pool mode, one signature in this many is made in place and timed. */
  static readonly RESAMPLE_EVERY = 64;
  private averageMicros?: number;
  private samples = 0;
  private count = 0;

  /** True when this signature should go to libuv's pool; false: call C_Sign in place and {@link record} it. */
  usePool(): boolean {
    this.count++;
    if (this.samples < SignTiming.WARM_UP || this.averageMicros === undefined) return false;
    if (this.averageMicros <= SignTiming.POOL_THRESHOLD_MICROS) return false;
    return this.count % SignTiming.RESAMPLE_EVERY !== 0;
  }

  /** Records the duration of a C_Sign made in place (moving average over ~8 samples). */
  record(micros: number): void {
    this.samples++;
    this.averageMicros = this.averageMicros === undefined ? micros : this.averageMicros + (micros - this.averageMicros) / 8;
  }
}
