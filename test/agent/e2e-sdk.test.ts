/**
 * The AWS SDK for JavaScript v3 against `ra-agent serve`: `fromInstanceMetadata`
 * through the IMDSv2 endpoint and `fromContainerMetadata` through the ECS
 * endpoint, then a real STS call (GetCallerIdentity) to the emulator with the
 * credentials obtained.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fromContainerMetadata, fromHttp, fromInstanceMetadata, fromNodeProviderChain } from "@aws-sdk/credential-providers";
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";
import { tempDir } from "./helpers";

type AwsCredentialIdentityProvider = ReturnType<typeof fromInstanceMetadata>;
import { CLI, cleanAwsEnv, fileLeaf, startWorld, type World } from "./world";

async function startServe(world: World, leaf: { certificate: string; privateKey: string }, extra: string[]) {
  const args = [CLI, "serve", "--port", "0", "--certificate", leaf.certificate, "--private-key", leaf.privateKey, "--trust-anchor-arn", world.arns.trustAnchorArn, "--profile-arn", world.arns.profileArn, "--role-arn", world.arns.roleArn, "--endpoint", world.endpoint, "--region", "us-east-1", ...extra];
  const child = spawn(process.execPath, args, { env: cleanAwsEnv(world.dir), stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const line = await new Promise<Record<string, string>>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once("line", (l) => resolve(JSON.parse(l)));
    child.once("exit", (code) => reject(new Error(`serve exited (${code}): ${stderr}`)));
  });
  return {
    line,
    stop: () => new Promise<number | null>((r) => (child.once("exit", (code) => r(code)), child.kill("SIGTERM"))),
  };
}

async function callerArn(world: World, credentials: AwsCredentialIdentityProvider): Promise<string> {
  const sts = new STSClient({ region: "us-east-1", endpoint: world.stsEndpoint, credentials });
  try {
    const out = await sts.send(new GetCallerIdentityCommand({}));
    return out.Arn ?? "";
  } finally {
    sts.destroy();
  }
}

function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved: Record<string, string | undefined> = {};
  for (const k of Object.keys(vars)) {
    saved[k] = process.env[k];
    process.env[k] = vars[k];
  }
  return fn().finally(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

test("AWS SDK v3 fromInstanceMetadata and fromContainerMetadata against ra-agent serve", async () => {
  const { dir, cleanup } = tempDir();
  const world = await startWorld(dir);
  try {
    const leaf = await fileLeaf(world);
    const tokenFile = join(dir, "ecs-token");
    const serve = await startServe(world, leaf, ["--ecs-token-file", tokenFile]);
    try {
      assert.match(serve.line.imdsEndpoint, /^http:\/\/127\.0\.0\.1:\d+\/$/);
      const imdsArn = await withEnv({ AWS_EC2_METADATA_SERVICE_ENDPOINT: serve.line.imdsEndpoint, AWS_EC2_METADATA_DISABLED: "false" }, async () => {
        const provider = fromInstanceMetadata({ timeout: 2000, maxRetries: 0 });
        const c = await provider();
        assert.match(c.accessKeyId, /^ASIA/);
        assert.ok(c.expiration && c.expiration.getTime() > Date.now() + 15 * 60_000);
        return callerArn(world, provider);
      });
      assert.match(imdsArn, /assumed-role\/ra-agent-emulator\//);

      // fromContainerMetadata sends AWS_CONTAINER_AUTHORIZATION_TOKEN (the token itself);
      // fromHttp and the default chain read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE.
      const token = readFileSync(tokenFile, "utf8");
      const ecsArn = await withEnv({ AWS_CONTAINER_CREDENTIALS_FULL_URI: serve.line.ecsFullUri, AWS_CONTAINER_AUTHORIZATION_TOKEN: token }, async () => {
        const provider = fromContainerMetadata({ timeout: 2000, maxRetries: 0 });
        const c = await provider();
        assert.match(c.accessKeyId, /^ASIA/);
        return callerArn(world, provider);
      });
      assert.match(ecsArn, /assumed-role\/ra-agent-emulator\//);
      for (const make of [() => fromHttp({}), () => fromNodeProviderChain({})]) {
        const arn = await withEnv({ AWS_CONTAINER_CREDENTIALS_FULL_URI: serve.line.ecsFullUri, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: tokenFile, AWS_CONFIG_FILE: join(dir, "none"), AWS_SHARED_CREDENTIALS_FILE: join(dir, "none") }, () => callerArn(world, make()));
        assert.match(arn, /assumed-role\/ra-agent-emulator\//);
      }

      // A wrong token is refused by the ECS endpoint.
      const wrong = join(dir, "wrong-token");
      writeFileSync(wrong, "not-the-token");
      await withEnv({ AWS_CONTAINER_CREDENTIALS_FULL_URI: serve.line.ecsFullUri, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: wrong }, async () => {
        await assert.rejects(fromHttp({})());
      });
      await withEnv({ AWS_CONTAINER_CREDENTIALS_FULL_URI: serve.line.ecsFullUri, AWS_CONTAINER_AUTHORIZATION_TOKEN: "not-the-token" }, async () => {
        await assert.rejects(fromContainerMetadata({ timeout: 2000, maxRetries: 0 })());
      });
      assert.equal(world.emulator.createSessionCount, 1, "one CreateSession for all clients");
    } finally {
      assert.equal(await serve.stop(), 0);
    }
  } finally {
    await world.close();
    cleanup();
  }
});
