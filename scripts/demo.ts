/**
 * `npm run demo`: the main job end to end on the embedded default.
 *
 * 1. Provisions a SoftHSM token (once; reused afterwards) whose keys were
 *    generated inside it, with certificates from a demo CA.
 * 2. Starts the local Roles Anywhere endpoint (`ra-agent emulator`) trusting that CA.
 * 3. Runs `ra-agent credential-process` with a pkcs11: URI and prints the credentials.
 * 4. Points a real AWS CLI at it through `credential_process` and calls
 *    `aws sts get-caller-identity` against the emulator's STS.
 * 5. Stops what it started.
 *
 * State lives in `.state/demo` (mode 0700), or `$RA_AGENT_DEMO_DIR`.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { DemoToken } from "./lib/demo-token";

const ROOT = resolve(__dirname, "..", "..");
const RA_AGENT = join(ROOT, "bin", "ra-agent");


interface EmulatorInfo {
  endpoint: string;
  stsEndpoint: string;
  trustAnchorArn: string;
  profileArn: string;
  roleArns: string[];
}

function step(text: string): void {
  process.stdout.write(`\n\x1b[1m==> ${text}\x1b[0m\n`);
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

async function softHsmToken(stateDir: string): Promise<DemoToken> {
  const { provisionSoftHsm } = await import("../softhsm/provision");
  const result = await provisionSoftHsm({ dir: join(stateDir, "softhsm") });
  const token = result.tokens[0];
  const key = token.keys.find((k) => k.keyType === "EC-P256") ?? token.keys[0];
  return {
    kind: `SoftHSM token "${token.label}" (serial ${token.serial}), key "${key.label}" (${key.keyType}) generated inside the token`,
    modulePath: "/usr/lib/softhsm/libsofthsm2.so",
    certificateUri: key.certificateUri!,
    caPath: result.caPath,
    env: { SOFTHSM2_CONF: result.softhsmConf, RA_AGENT_PIN_FILE: token.pinFile },
  };
}

function startEmulator(caPath: string): Promise<{ child: ChildProcess; info: EmulatorInfo }> {
  const child = spawn(process.execPath, [RA_AGENT, "emulator", "--ca", caPath, "--port", "0", "--log-level", "warn"], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolvePromise, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once("line", (line) => {
      try {
        resolvePromise({ child, info: JSON.parse(line) as EmulatorInfo });
      } catch (e) {
        reject(e);
      }
    });
    child.once("exit", (code) => reject(new Error(`the emulator exited with status ${code} before it listened`)));
  });
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const stateDir = resolve(process.env.RA_AGENT_DEMO_DIR ?? join(ROOT, ".state", "demo"));
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });

  step("Provisioning the token (keys are generated inside it and never leave it)");
  let token: DemoToken;
  if (args.includes("--tpm")) {
    const { demoTpmToken } = await import("./tpm/demo-token");
    token = await demoTpmToken(stateDir);
  } else if (args.includes("--card")) {
    const { demoCardToken } = await import("./card/demo-token");
    token = await demoCardToken(stateDir);
  } else {
    token = await softHsmToken(stateDir);
  }
  process.stdout.write(`${token.kind}\ncertificate URI: ${token.certificateUri}\nmodule: ${token.modulePath}\n`);

  step("Starting the local IAM Roles Anywhere endpoint (ra-agent emulator) trusting the demo CA");
  const { child: emulator, info } = await startEmulator(token.caPath);
  process.stdout.write(JSON.stringify(info, null, 2) + "\n");
  try {
    const flags = [
      "credential-process",
      "--certificate", token.certificateUri,
      "--pkcs11-lib", token.modulePath,
      "--trust-anchor-arn", info.trustAnchorArn,
      "--profile-arn", info.profileArn,
      "--role-arn", info.roleArns[0],
      "--endpoint", info.endpoint,
    ];
    const env = { ...process.env, ...token.env };

    step("ra-agent credential-process (signs CreateSession inside the token)");
    process.stdout.write(`$ ra-agent ${flags.map(shellQuote).join(" ")}\n`);
    const run = spawnSync(process.execPath, [RA_AGENT, ...flags], { env, encoding: "utf8" });
    if (run.status !== 0) {
      process.stderr.write(run.stderr);
      throw new Error(`ra-agent credential-process failed with status ${run.status}`);
    }
    const creds = JSON.parse(run.stdout) as Record<string, string>;
    const shown = { ...creds, SecretAccessKey: creds.SecretAccessKey.slice(0, 4) + "…", SessionToken: creds.SessionToken.slice(0, 12) + "…" };
    process.stdout.write(JSON.stringify(shown, null, 2) + "\n(secret key and session token shortened here; the command prints them in full)\n");

    step("The AWS CLI using ra-agent through credential_process");
    const configPath = join(stateDir, "aws-config");
    const commandLine = [RA_AGENT, ...flags].map(shellQuote).join(" ");
    writeFileSync(configPath, `[profile ra-demo]\ncredential_process = ${commandLine}\nregion = us-east-1\n`, { mode: 0o600 });
    process.stdout.write(`~/.aws/config equivalent (${configPath}):\n[profile ra-demo]\ncredential_process = ra-agent ${flags.map(shellQuote).join(" ")}\n\n`);
    process.stdout.write(`$ aws sts get-caller-identity --profile ra-demo --endpoint-url ${info.stsEndpoint}\n`);
    const aws = spawnSync("aws", ["sts", "get-caller-identity", "--profile", "ra-demo", "--endpoint-url", info.stsEndpoint, "--output", "json"], {
      env: { ...env, AWS_CONFIG_FILE: configPath, AWS_SHARED_CREDENTIALS_FILE: join(stateDir, "no-credentials"), AWS_PROFILE: "ra-demo" },
      encoding: "utf8",
    });
    if (aws.error) throw new Error(`cannot run the AWS CLI (aws): ${aws.error.message}; install it (pip install awscli, or apt-get install awscli)`);
    if (aws.status !== 0) {
      process.stderr.write(aws.stderr);
      throw new Error(`aws sts get-caller-identity failed with status ${aws.status}`);
    }
    process.stdout.write(aws.stdout);
    step("Done: the credentials came from a signature made inside the token; the private key never left it.");
    return 0;
  } finally {
    emulator.kill("SIGTERM");
    await token.stop?.();
  }
}

main().then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
