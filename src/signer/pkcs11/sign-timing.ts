/**
 * Where C_Sign runs, per key. On the main thread always on libuv's pool
 * (C_SignAsync), so that the event loop keeps turning. On the PKCS#11 thread it
 * depends on how long the key takes to sign: a quick signature (SoftHSM P-256,
 * C_Sign ~25 µs) is made right there, because the handoff to the pool and back
 * costs more than that and, measured under load, four pool threads queueing on
 * SoftHSM's locks cut EC signatures/s by 40 %; a slow one (RSA, a TPM, a network
 * HSM) goes to the pool, where the sessions sign in parallel on several cores.
 *
 * Only blocking calls are timed (a pool call's time includes its queueing): the
 * first signatures are made in place, and in pool mode one in
 * {@link SignTiming.RESAMPLE_EVERY} is, to follow the token.
 *
 * The decision uses the median of the last {@link SignTiming.WINDOW} samples and
 * ignores the key's first signature. A sample is wall time, so a thread preempted
 * in C_Sign on a busy machine reads as a slow token, and the first signature pays
 * for cold caches (measured on SoftHSM P-256: 120-390 µs, then about 30 µs). With a
 * moving average seeded by the first sample, such samples sent the key to the pool
 * for hundreds of signatures at a time: under the agent bench the thread handed
 * most signatures to libuv's pool, and the agent signed at ~45 % of the raw rate
 * instead of ~60 %.
 */
export class SignTiming {
  /** Above this typical C_Sign time (µs), parallel signing on the pool wins. */
  static readonly POOL_THRESHOLD_MICROS = 300;
  /** Signatures timed in place before the first decision (after the ignored first one). */
  static readonly WARM_UP = 4;
  /** In pool mode, one signature in this many is made in place and timed. */
  static readonly RESAMPLE_EVERY = 64;
  /** Samples the median is taken over. */
  static readonly WINDOW = 8;
  private readonly window: number[] = [];
  /** Reused for the median: record() runs on every in-place signature and allocates nothing. */
  private readonly sorted = new Float64Array(SignTiming.WINDOW);
  private nextSlot = 0;
  private recorded = 0;
  private count = 0;
  private typical = 0;

  /** True when this signature should go to libuv's pool; false: call C_Sign in place and {@link record} it. */
  usePool(): boolean {
    this.count++;
    if (this.window.length < SignTiming.WARM_UP) return false;
    if (this.typical <= SignTiming.POOL_THRESHOLD_MICROS) return false;
    return this.count % SignTiming.RESAMPLE_EVERY !== 0;
  }

  /** True when the token is known to be slow (signatures go to the pool, but for resampling); does not count as a signature. */
  prefersPool(): boolean {
    return this.window.length >= SignTiming.WARM_UP && this.typical > SignTiming.POOL_THRESHOLD_MICROS;
  }

  /** Records the duration of a C_Sign made in place. */
  record(micros: number): void {
    if (this.recorded++ === 0) return;
    if (this.window.length < SignTiming.WINDOW) this.window.push(micros);
    else this.window[this.nextSlot] = micros;
    this.nextSlot = (this.nextSlot + 1) % SignTiming.WINDOW;
    const n = this.window.length;
    const sorted = this.sorted;
    for (let i = 0; i < n; i++) {
      // Insertion sort of at most WINDOW numbers.
      const v = this.window[i];
      let j = i;
      for (; j > 0 && sorted[j - 1] > v; j--) sorted[j] = sorted[j - 1];
      sorted[j] = v;
    }
    const mid = n >> 1;
    this.typical = n % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }

  /** Median of the recent samples, µs (0 before any). */
  typicalMicros(): number {
    return this.typical;
  }
}
