/**
 * End to end with a file key (no token): the real CLI agent, the real emulator,
 * and real clients: curl over the socket, the AWS CLI through credential_process,
 * boto3 through the IMDSv2 and ECS endpoints; reload and shutdown by signal;
 * no secrets in debug logs. The SoftHSM variant is in e2e-softhsm.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { unixRequest, tempDir, writeConfig } from "./helpers";
import { CLI, cleanAwsEnv, fileLeaf, run, startAgentProcess, startWorld } from "./world";

const BOTO = `
import boto3, json, sys
s = boto3.session.Session()
c = s.get_credentials()
ident = s.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1").get_caller_identity()
print(json.dumps({"method": c.method, "arn": ident["Arn"]}))
`;

test("agent end to end with a file key: curl, AWS CLI, boto3 (IMDSv2 and ECS), reload, shutdown, no secrets in logs", async () => {
  const { dir, cleanup } = tempDir();
  const world = await startWorld(dir);
  try {
    const leaf = await fileLeaf(world);
    const ecsTokenFile = join(dir, "ecs-token");
    const profile = { name: "dev", ...leaf, ...world.arns, endpoint: world.endpoint, region: "us-east-1", allowSigning: true };
    const configPath = writeConfig(dir, { profiles: [profile], serve: { profile: "dev", port: 0, ecsTokenFile } });
    const socket = join(dir, "run", "agent.sock");
    const agent = await startAgentProcess(["--config", configPath, "--socket", socket, "--log-level", "debug", "--log-format", "json"]);
    let exitCode: number | null | undefined;
    try {
      assert.equal(agent.socket, socket);
      assert.deepEqual(agent.startup.profiles, ["dev"]);
      const ecsToken = readFileSync(ecsTokenFile, "utf8");

      // curl --unix-socket is a complete client.
      const curl = await run("curl", ["-sS", "--fail", "--unix-socket", socket, "http://localhost/v1/credentials/dev"]);
      assert.equal(curl.status, 0, curl.stderr);
      const creds = JSON.parse(curl.stdout);
      assert.equal(creds.Version, 1);
      assert.match(creds.AccessKeyId, /^ASIA/);

      // The AWS CLI with credential_process answered by the agent.
      const awsConfig = join(dir, "aws-config");
      writeFileSync(awsConfig, `[profile agent]\ncredential_process = curl -sS --fail --unix-socket ${socket} http://localhost/v1/credentials/dev\nregion = us-east-1\n`);
      const env = cleanAwsEnv(dir, { AWS_CONFIG_FILE: awsConfig });
      const aws = await run("aws", ["--profile", "agent", "--endpoint-url", world.stsEndpoint, "sts", "get-caller-identity", "--output", "json"], { env });
      assert.equal(aws.status, 0, aws.stderr);
      assert.match(JSON.parse(aws.stdout).Arn, /assumed-role\/ra-agent-emulator\//);

      // boto3 through the IMDSv2 endpoint and through the ECS endpoint.
      const imds = await run("python3", ["-c", BOTO, world.stsEndpoint], { env: cleanAwsEnv(dir, { AWS_EC2_METADATA_DISABLED: "false", AWS_EC2_METADATA_SERVICE_ENDPOINT: agent.startup.imdsEndpoint as string }) });
      assert.equal(imds.status, 0, imds.stderr);
      assert.equal(JSON.parse(imds.stdout).method, "iam-role");
      const ecs = await run("python3", ["-c", BOTO, world.stsEndpoint], {
        env: cleanAwsEnv(dir, { AWS_CONTAINER_CREDENTIALS_FULL_URI: agent.startup.ecsFullUri as string, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: ecsTokenFile }),
      });
      assert.equal(ecs.status, 0, ecs.stderr);
      assert.equal(JSON.parse(ecs.stdout).method, "container-role");

      // All of that cost a single CreateSession: one cache for the socket, IMDS and ECS.
      assert.equal(world.emulator.createSessionCount, 1);

      // Status and keys over the socket.
      const status = JSON.parse((await unixRequest(socket, "GET", "/v1/status")).body);
      assert.equal(status.profiles[0].cache.state, "fresh");
      assert.equal(status.profiles[0].hardwareBacked, false);

      // SIGHUP: a broken config is refused and the agent keeps serving; a good one applies.
      writeFileSync(configPath, "{broken");
      agent.child.kill("SIGHUP");
      await waitFor(() => agent.stderr().includes("configuration reload failed"));
      assert.equal((await unixRequest(socket, "GET", "/v1/credentials/dev")).status, 200);
      writeConfig(dir, { profiles: [profile, { ...profile, name: "dev2" }], serve: { profile: "dev", port: 0, ecsTokenFile } });
      agent.child.kill("SIGHUP");
      await waitFor(() => agent.stderr().includes("configuration reloaded"));
      assert.equal((await unixRequest(socket, "GET", "/v1/credentials/dev2")).status, 200);

      // A signature through the agent, for the secrets check below.
      const amz = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
      const sts = `AWS4-X509-ECDSA-SHA256\n${amz}\n${amz.slice(0, 8)}/us-east-1/rolesanywhere/aws4_request\n${"1".repeat(64)}`;
      assert.equal((await unixRequest(socket, "POST", "/v1/sign/dev", { body: JSON.stringify({ stringToSign: sts }) })).status, 200);

      exitCode = await agent.stop();
      assert.equal(exitCode, 0, agent.stderr());
      assert.equal(existsSync(socket), false, "socket removed at shutdown");
      assert.equal(existsSync(ecsTokenFile), false, "ECS token removed at shutdown");

      // Debug logs: plenty of them, but no secret.
      const log = agent.stderr();
      assert.ok(log.split("\n").length > 10);
      assert.ok(log.includes('"level":"debug"'));
      for (const secret of [creds.SecretAccessKey, creds.SessionToken, ecsToken]) assert.ok(!log.includes(secret), "a secret reached the log");
      assert.ok(!log.includes(readFileSync(leaf.privateKey, "utf8").split("\n")[1]), "key material reached the log");
    } finally {
      if (exitCode === undefined) await agent.stop();
    }
  } finally {
    await world.close();
    cleanup();
  }
});

test("ra-agent agent --check validates a config and names the bad field", () => {
  const { dir, cleanup } = tempDir();
  try {
    const good = writeConfig(dir, { profiles: [{ name: "x", certificate: "pkcs11:token=a", trustAnchorArn: "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/00000000-0000-4000-8000-000000000001", profileArn: "arn:aws:rolesanywhere:us-east-1:123456789012:profile/00000000-0000-4000-8000-000000000011", roleArn: "arn:aws:iam::123456789012:role/r" }] });
    const ok = spawnSync(process.execPath, [CLI, "agent", "--config", good, "--check"]);
    assert.equal(ok.status, 0, ok.stderr.toString());
    assert.deepEqual(JSON.parse(ok.stdout.toString()).profiles, ["x"]);
    const bad = writeConfig(dir, { profiles: [{ name: "x", certificate: "pkcs11:token=a" }] }, "bad.json");
    const r = spawnSync(process.execPath, [CLI, "agent", "--config", bad, "--check"]);
    assert.equal(r.status, 2);
    assert.equal(r.stdout.toString(), "");
    assert.match(r.stderr.toString(), /profiles\[0\]\.trustAnchorArn: is required/);
  } finally {
    cleanup();
  }
});

async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 50));
  }
}
