/**
 * Import for its effect, first: gives this test process its own ra-agent state
 * directory (RA_AGENT_STATE_DIR, where rejected PINs are recorded), removed at exit,
 * so that test files never share records with each other or with the user's own.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** This process's state directory. */
export const testStateDir = mkdtempSync(join(tmpdir(), "ra-agent-state-"));
process.env.RA_AGENT_STATE_DIR = testStateDir;
process.on("exit", () => rmSync(testStateDir, { recursive: true, force: true }));
