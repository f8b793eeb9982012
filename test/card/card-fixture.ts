/**
 * Shared set-up for the virtual smart card tests: one card per test file (a
 * process talks to one pcscd for its whole life, see VirtualCard.env), in its
 * own temp dir, stopped by PID afterwards.
 */
import { mkdtemp, rm } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { missingCardDependencies, startVirtualCard, type VirtualCard, type VirtualCardOptions } from "../../scripts/card/virtual-card";

/**
 * `false` when the card can run here; otherwise a skip reason. With CI=true missing
 * dependencies are not a reason to skip: the tests run and fail with the list.
 */
export function cardSkipReason(): string | false {
  const missing = missingCardDependencies();
  if (missing.length === 0 || process.env.CI === "true") return false;
  return `virtual smart card needs: ${missing.join(", ")} (scripts/ensure-deps.sh --apt-only)`;
}

/** A started card plus its temp dir. */
export interface CardFixture {
  card: VirtualCard;
  close(): Promise<void>;
}

/**
 * Starts a virtual card in a fresh temp dir and points this process's libpcsclite at
 * its pcscd (before any OpenSC use in this process).
 */
export async function startCardFixture(options: Omit<VirtualCardOptions, "dir"> = {}): Promise<CardFixture> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "ra-card-"));
  let card: VirtualCard;
  try {
    card = await startVirtualCard({ ...options, dir });
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  const previous = process.env.PCSCLITE_CSOCK_NAME;
  if (previous !== undefined && previous !== card.env.PCSCLITE_CSOCK_NAME) {
    await card.stop();
    throw new Error("a virtual card was already used in this process: run one card per test file");
  }
  process.env.PCSCLITE_CSOCK_NAME = card.env.PCSCLITE_CSOCK_NAME;
  return {
    card,
    async close() {
      await card.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
