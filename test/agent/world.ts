/**
 * End-to-end set-up for agent tests: a CA, a leaf certificate with its key
 * (a PEM file, or a key generated inside a SoftHSM token), the real emulator
 * in-process, and helpers to run the real `ra-agent` CLI as a child process.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { startEmulator, buildEmulatorConfig, type RunningEmulator } from "../../src/emulator";
import { createCa, issueCertificate, type CertificateAuthority } from "../../scripts/lib/pki";
import { memoryLogger } from "./helpers";

/** The built CLI entry point next to this compiled test. */
export const CLI = resolve(__dirname, "../../src/cli/main.js");

export interface World {
  dir: string;
  ca: CertificateAuthority;
  caFile: string;
  emulator: RunningEmulator;
  /** ARNs and endpoint for a profile. */
  arns: { trustAnchorArn: string; profileArn: string; roleArn: string };
  endpoint: string;
  stsEndpoint: string;
  close(): Promise<void>;
}

/** Starts the emulator for a fresh CA. */
export async function startWorld(dir: string, durationSeconds = 3600): Promise<World> {
  const ca = await createCa({ algorithm: "EC-P256", name: "CN=ra-agent agent-test CA" });
  const caFile = join(dir, "ca.pem");
  writeFileSync(caFile, ca.pem);
  const emulator = await startEmulator(buildEmulatorConfig({ caCertificates: [ca.pem], durationSeconds }), { logger: memoryLogger("error").log });
  return {
    dir,
    ca,
    caFile,
    emulator,
    arns: { trustAnchorArn: emulator.trustAnchorArn, profileArn: emulator.profileArn, roleArn: emulator.roleArns[0] },
    endpoint: emulator.endpoint,
    stsEndpoint: emulator.stsEndpoint,
    close: () => emulator.close(),
  };
}

/** A PEM key and certificate issued by the world's CA. */
export async function fileLeaf(world: World, name = "leaf"): Promise<{ certificate: string; privateKey: string }> {
  const pair = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const cert = await issueCertificate(world.ca, pair.publicKey, { subject: `CN=${name}` });
  const certificate = join(world.dir, `${name}.pem`);
  const privateKey = join(world.dir, `${name}.key`);
  writeFileSync(certificate, cert.toString("pem") + "\n");
  writeFileSync(privateKey, pair.privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
  return { certificate, privateKey };
}

export const SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so";

/** True when SoftHSM and pkcs11-tool are installed; in CI their absence fails the test. */
export function softhsmAvailable(): boolean {
  const ok = existsSync(SOFTHSM_MODULE) && spawnSync("softhsm2-util", ["--version"]).status === 0 && spawnSync("pkcs11-tool", ["--version"]).status !== null;
  if (!ok && process.env.CI === "true") throw new Error("SoftHSM (softhsm2, opensc) is required in CI");
  return ok;
}

/** A SoftHSM token in `dir` with a key generated inside it and a certificate from the world's CA. */
export interface SoftHsmToken {
  env: NodeJS.ProcessEnv;
  conf: string;
  label: string;
  pin: string;
  uri: string;
}

/**
 * Initialises a private SoftHSM token (own SOFTHSM2_CONF), generates a
 * key pair inside it (sensitive, never extractable), issues a certificate for
 * its public key and stores the certificate on the token.
 */
export async function softhsmToken(world: World, opts: { label?: string; pin?: string; keyType?: "EC:prime256v1" | "rsa:2048" } = {}): Promise<SoftHsmToken> {
  const label = opts.label ?? "ra-agent-test";
  const pin = opts.pin ?? "1234";
  const tokens = join(world.dir, "tokens");
  mkdirSync(tokens, { recursive: true });
  const conf = join(world.dir, "softhsm2.conf");
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  run("softhsm2-util", ["--init-token", "--free", "--label", label, "--so-pin", "5678", "--pin", pin]);
  const common = ["--module", SOFTHSM_MODULE, "--token-label", label, "--login", "--pin", pin];
  run("pkcs11-tool", [...common, "--keypairgen", "--key-type", opts.keyType ?? "EC:prime256v1", "--id", "01", "--label", "agent-key", "--usage-sign"]);
  const pubDer = run("pkcs11-tool", ["--module", SOFTHSM_MODULE, "--token-label", label, "--read-object", "--type", "pubkey", "--id", "01"]);
  const { createPublicKey } = await import("node:crypto");
  const pub = createPublicKey({ key: pubDer, format: "der", type: "spki" });
  const cert = await issueCertificate(world.ca, pub, { subject: "CN=agent-softhsm" });
  const certDer = join(world.dir, "token-cert.der");
  writeFileSync(certDer, Buffer.from(cert.rawData));
  run("pkcs11-tool", [...common, "--write-object", certDer, "--type", "cert", "--id", "01", "--label", "agent-key"]);
  return { env, conf, label, pin, uri: `pkcs11:token=${encodeURIComponent(label)};object=agent-key` };
}

/** A running `ra-agent agent` child process. */
export interface AgentProcess {
  child: ChildProcess;
  socket: string;
  startup: Record<string, unknown>;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** Starts the real CLI agent and waits for its startup line. */
export async function startAgentProcess(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<AgentProcess> {
  const child = spawn(process.execPath, [CLI, "agent", ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr!.on("data", (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const startup = await new Promise<Record<string, unknown>>((resolvePromise, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once("line", (line) => resolvePromise(JSON.parse(line)));
    child.once("exit", (code) => reject(new Error(`agent exited (${code}) before it was ready:\n${err}`)));
  });
  return {
    child,
    socket: startup.socket as string,
    startup,
    stderr: () => err,
    stop: async () => {
      child.kill("SIGTERM");
      return exited;
    },
  };
}

/** Runs a program without blocking the event loop (the emulator runs in this process). */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (status) => {
      clearTimeout(timer);
      resolvePromise({ status, stdout, stderr });
    });
    child.stdin!.end(opts.input ?? "");
  });
}

/** An environment with no AWS settings from the machine. */
export function cleanAwsEnv(dir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("AWS_") && !k.startsWith("RA_AGENT_")) env[k] = v;
  return { ...env, AWS_CONFIG_FILE: join(dir, "no-aws-config"), AWS_SHARED_CREDENTIALS_FILE: join(dir, "no-aws-credentials"), AWS_DEFAULT_REGION: "us-east-1", AWS_EC2_METADATA_DISABLED: "true", ...extra };
}

