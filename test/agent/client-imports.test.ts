import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";

test("the fast client loads no heavy module (pkcs11js, x509, undici, winston, commander)", () => {
  const client = resolve(__dirname, "../../src/agent/client.js");
  const r = spawnSync(process.execPath, ["-e", `require(${JSON.stringify(client)}); console.log(JSON.stringify(Object.keys(require.cache)))`]);
  assert.equal(r.status, 0, r.stderr.toString());
  const loaded: string[] = JSON.parse(r.stdout.toString());
  for (const f of loaded) {
    assert.doesNotMatch(f, /node_modules/, `the client loaded ${f}`);
  }
  assert.ok(loaded.length <= 5, `few files: ${loaded.join(", ")}`);
});
