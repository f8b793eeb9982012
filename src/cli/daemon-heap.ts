/**
 * Heap settings of the long-running commands (`agent`, `serve`): a daemon keeps a
 * small heap. Two V8 settings do it, and both are used:
 * - `--max-semi-space-size=1`, a 1 MiB young generation. V8 reads it only at
 *   start, so it comes from node's command line or NODE_OPTIONS (the systemd units
 *   set it);
 * - `--optimize-for-size`, set here at run time: the old generation grows in small
 *   steps and is compacted when it can shrink.
 *
 * Measured on the agent (2-core VM, the benchmark's order: client start-ups, a
 * burst of 500 connections, then 100k and 200k credential requests), RSS idle /
 * after 100k / after 200k: both settings 71.1 / 74.1 / 74.6 MB; only
 * `--optimize-for-size` 71.3 / 79.2 / 79.2 MB; only the semi-space limit 71.0 /
 * 80.5-82.7 / 80.5-82.7 MB, because the burst raises the old generation's limit.
 * The price is CPU under heavy signing load: with 128 signatures in flight,
 * `--optimize-for-size` costs about a tenth of the EC signing rate (frequent
 * mark-compacts of promoted requests), a trade the agent makes for its memory.
 */
import { setFlagsFromString } from "node:v8";

const SEMI_SPACE_FLAG = /(^|\s)--max[-_]semi[-_]space[-_]size(=|\s|$)/;

/**
 * True when node was started with a young-generation limit (`--max-semi-space-size`
 * on its command line or in NODE_OPTIONS).
 */
export function youngGenerationLimited(execArgv: readonly string[] = process.execArgv, nodeOptions: string = process.env.NODE_OPTIONS ?? ""): boolean {
  return execArgv.some((a) => SEMI_SPACE_FLAG.test(a)) || SEMI_SPACE_FLAG.test(nodeOptions);
}

/**
 * Keeps this daemon's heap small: sets `--optimize-for-size`, and reports whether the
 * young generation was limited at start (without it the heap grows larger under load).
 */
export function keepDaemonHeapSmall(): { youngGenerationLimited: boolean } {
  setFlagsFromString("--optimize-for-size");
  return { youngGenerationLimited: youngGenerationLimited() };
}
