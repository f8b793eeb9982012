import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync, lstatSync } from "node:fs";
import { join, resolve } from "node:path";
import { setProfileCredentials, withFileLock, writeProfileCredentials } from "../../src/agent/credentials-file";
import { RaError } from "../../src/errors";
import { tempDir } from "./helpers";

const C = { accessKeyId: "ASIANEW", secretAccessKey: "newsecret", sessionToken: "newtoken" };

const ORIGINAL = `# my AWS credentials
[default]
aws_access_key_id = AKIAOLD
aws_secret_access_key = oldsecret ; trailing

; a comment between profiles
[prod]
region = eu-west-1
aws_access_key_id=ASIAOLD
aws_session_token = oldtoken
  continued-old-token-line
aws_secret_access_key = oldprodsecret
s3 =
  max_concurrent_requests = 20
# end of prod

[other]
aws_access_key_id = AKIAOTHER
`;

test("only the profile's three keys change; everything else stays", () => {
  const out = setProfileCredentials(ORIGINAL, "prod", C);
  assert.equal(
    out,
    `# my AWS credentials
[default]
aws_access_key_id = AKIAOLD
aws_secret_access_key = oldsecret ; trailing

; a comment between profiles
[prod]
region = eu-west-1
aws_access_key_id = ASIANEW
aws_session_token = newtoken
aws_secret_access_key = newsecret
s3 =
  max_concurrent_requests = 20
# end of prod

[other]
aws_access_key_id = AKIAOTHER
`,
  );
});

test("missing keys are added after the section's last key; a new profile is appended", () => {
  const partial = "[a]\nregion = us-east-1\n\n# tail comment\n[b]\nx = 1";
  assert.equal(
    setProfileCredentials(partial, "a", C),
    "[a]\nregion = us-east-1\naws_access_key_id = ASIANEW\naws_secret_access_key = newsecret\naws_session_token = newtoken\n\n# tail comment\n[b]\nx = 1\n",
  );
  assert.equal(setProfileCredentials(partial, "c", C), partial + "\n\n[c]\naws_access_key_id = ASIANEW\naws_secret_access_key = newsecret\naws_session_token = newtoken\n");
  assert.equal(setProfileCredentials("", "default", C), "[default]\naws_access_key_id = ASIANEW\naws_secret_access_key = newsecret\naws_session_token = newtoken\n");
  // Duplicated keys collapse into one; CRLF files stay CRLF.
  assert.equal(setProfileCredentials("[a]\r\naws_access_key_id = 1\r\naws_access_key_id = 2\r\n", "a", C), "[a]\r\naws_access_key_id = ASIANEW\r\naws_secret_access_key = newsecret\r\naws_session_token = newtoken\r\n");
  // A section that only looks similar is not touched.
  assert.match(setProfileCredentials("[prod2]\nx = 1\n", "prod", C), /^\[prod2\]\nx = 1\n\n\[prod\]\n/);
});

test("the result parses as before with Python's configparser (botocore's reader)", async () => {
  const { spawnSync } = await import("node:child_process");
  const out = setProfileCredentials(ORIGINAL, "prod", C);
  const py = spawnSync("python3", ["-c", "import configparser,sys,json\nc=configparser.RawConfigParser()\nc.read_string(sys.stdin.read())\nprint(json.dumps({s:dict(c.items(s)) for s in c.sections()}))"], { input: out });
  assert.equal(py.status, 0, py.stderr?.toString());
  const parsed = JSON.parse(py.stdout.toString());
  assert.equal(parsed.prod.aws_access_key_id, "ASIANEW");
  assert.equal(parsed.prod.aws_session_token, "newtoken");
  assert.equal(parsed.prod.region, "eu-west-1");
  assert.equal(parsed.default.aws_access_key_id, "AKIAOLD");
  assert.equal(parsed.other.aws_access_key_id, "AKIAOTHER");
});

test("bad names and values are refused", () => {
  for (const name of ["", "a]b", "a\nb", " a"]) assert.throws(() => setProfileCredentials("", name, C), (e: unknown) => e instanceof RaError && e.code === "INVALID_PROFILE_NAME");
  assert.throws(() => setProfileCredentials("", "a", { ...C, sessionToken: "x\ny" }), /line breaks/);
  assert.throws(() => setProfileCredentials("", "a", { ...C, sessionToken: "" }), /empty/);
});

test("writes 0600, creates the directory, follows a symlink, leaves no temp file or lock", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = join(dir, "aws", "credentials");
    await writeProfileCredentials(file, "default", C);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.match(readFileSync(file, "utf8"), /aws_session_token = newtoken/);
    writeFileSync(file, ORIGINAL, { mode: 0o644 });
    await writeProfileCredentials(file, "prod", C);
    assert.equal(statSync(file).mode & 0o777, 0o600, "tightened to 0600");
    assert.equal(readFileSync(file, "utf8"), setProfileCredentials(ORIGINAL, "prod", C));
    const link = join(dir, "link-credentials");
    symlinkSync(file, link);
    await writeProfileCredentials(link, "other", C);
    assert.ok(lstatSync(link).isSymbolicLink(), "the link stays a link");
    assert.match(readFileSync(file, "utf8"), /\[other\]\naws_access_key_id = ASIANEW/);
    assert.deepEqual(readdirSync(join(dir, "aws")), ["credentials"]);
  } finally {
    cleanup();
  }
});

test("the lock serialises writers; a stale lock (dead owner) is taken over", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = join(dir, "credentials");
    await Promise.all(Array.from({ length: 20 }, (_, i) => writeProfileCredentials(file, `p${i}`, { ...C, accessKeyId: `ASIA${i}` })));
    const text = readFileSync(file, "utf8");
    for (let i = 0; i < 20; i++) assert.match(text, new RegExp(`\\[p${i}\\]\\naws_access_key_id = ASIA${i}\\n`), `profile p${i} kept`);
    // A lock left by a process that no longer exists.
    writeFileSync(`${file}.lock`, `999999\n${(await import("node:os")).hostname()}\nx\n`);
    await writeProfileCredentials(file, "after", C, { timeoutMs: 2000 });
    assert.ok(!existsSync(`${file}.lock`));
    // A live lock holds others off until the timeout.
    await withFileLock(`${file}.lock`, async () => {
      await assert.rejects(writeProfileCredentials(file, "x", C, { timeoutMs: 200 }), (e: unknown) => e instanceof RaError && e.code === "CREDENTIALS_FILE_LOCKED");
    });
  } finally {
    cleanup();
  }
});

test("killed mid-write, the file is the old or the new one, never broken", async () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = join(dir, "credentials");
    // A big file makes each write take a while, widening the window for the kill.
    const filler = Array.from({ length: 4000 }, (_, i) => `[filler${i}]\naws_access_key_id = AKIA${i}\nnote = ${"n".repeat(200)}\n`).join("\n");
    writeFileSync(file, filler + "\n[target]\naws_access_key_id = GEN0\naws_secret_access_key = s\naws_session_token = t\n", { mode: 0o600 });
    const valid = (text: string) => {
      assert.ok(text.startsWith("[filler0]\n"), "starts intact");
      assert.match(text, /\[filler3999\]\naws_access_key_id = AKIA3999\n/);
      assert.match(text, /\[target\]\naws_access_key_id = GEN\d+\naws_secret_access_key = s\naws_session_token = t\n$/);
    };
    const modulePath = resolve(__dirname, "../../src/agent/credentials-file.js");
    const script = `
      const { writeProfileCredentials } = require(${JSON.stringify(modulePath)});
      (async () => { for (let i = 1; ; i++) await writeProfileCredentials(${JSON.stringify(file)}, "target", { accessKeyId: "GEN" + i, secretAccessKey: "s", sessionToken: "t" }); })();
    `;
    for (let round = 0; round < 8; round++) {
      const child = spawn(process.execPath, ["-e", script], { stdio: "ignore" });
      await new Promise((r) => setTimeout(r, 80 + round * 37));
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      valid(readFileSync(file, "utf8"));
    }
    // The next writer cleans up after the killed ones (stale lock, temp files).
    await writeProfileCredentials(file, "target", { accessKeyId: "GEN999999", secretAccessKey: "s", sessionToken: "t" }, { timeoutMs: 3000 });
    valid(readFileSync(file, "utf8"));
    assert.deepEqual(readdirSync(dir), ["credentials"]);
  } finally {
    cleanup();
  }
});
