import assert from "node:assert/strict";
import { RaError } from "../../src/errors";

/** Asserts that `p` rejects with an RaError of `code`, then runs further checks on it. */
export async function rejectsWith(p: Promise<unknown>, code: string, check?: (e: RaError) => void): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof RaError, `an RaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    check?.(e);
    return true;
  });
}
