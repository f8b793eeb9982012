/**
 * Provisions a TPM-backed PKCS#11 token for tests and the demo: a software TPM
 * (swtpm) with its state in a given directory, a tpm2-pkcs11 store beside it,
 * a token with keys generated inside the TPM (RSA-2048 and EC P-256 by
 * default), and certificates for those keys from a demo CA, stored on the token.
 *
 * No D-Bus, no tpm2-abrmd: tpm2_ptool runs with flush wrappers first on PATH
 * (see tpm2-tools.ts), its commands batched in one Python process
 * (ptool-batch.py). Takes about 2.5 s: mostly tpm2_ptool and key generation
 * in the TPM.
 *
 * As a program:
 *   node dist/scripts/tpm/provision.js provision --dir DIR [--transport unix|tcp] [--json]
 *   node dist/scripts/tpm/provision.js stop|start|env|clear-lockout --dir DIR
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { parseArgs } from "node:util";
import { createCa, issueCertificate, type CertificateAuthority } from "../lib/pki";
import { formatPkcs11Uri } from "../../src/uri/pkcs11-uri";
import { findCatalogEntry, locateCatalogModule } from "../../src/signer/pkcs11/native-config";
import { Swtpm, type SwtpmTransport } from "./swtpm";
import {
  clearDictionaryLockout, findExecutable, NO_LOCKOUT, readDictionaryLockout, runPtool, setDictionaryLockout, writeFlushWrappers,
  type DictionaryLockoutParameters, type DictionaryLockoutState, type Tpm2ToolsEnv,
} from "./tpm2-tools";
import type { TokenPublicKey } from "./token-public-keys";

const execFileAsync = promisify(execFile);

/** Key algorithms tpm2-pkcs11 can generate in a TPM (RSA is limited to 1024-3072 bits there). */
export type TpmKeyAlgorithm = "RSA-2048" | "RSA-3072" | "EC-P256" | "EC-P384";

const PTOOL_ALGORITHM: Record<TpmKeyAlgorithm, string> = { "RSA-2048": "rsa2048", "RSA-3072": "rsa3072", "EC-P256": "ecc256", "EC-P384": "ecc384" };

/** Options of {@link provisionTpm}. */
export interface ProvisionTpmOptions {
  /** Directory for everything: `tpm/` (swtpm state, socket, PID), `store/` (tpm2-pkcs11), `bin/` (wrappers), `certs/`. */
  dir: string;
  /** Token label; `ra-agent-tpm` by default. */
  tokenLabel?: string;
  /** User PIN; `1234` by default (a demo PIN). */
  pin?: string;
  /** Security officer PIN; `12345678` by default. */
  soPin?: string;
  /** Keys to generate in the TPM, in order; RSA-2048 and EC-P256 by default. */
  keys?: TpmKeyAlgorithm[];
  /**
   * Dictionary-attack parameters to set: {@link NO_LOCKOUT} by default (tests
   * must not lock the TPM by accident), or `"tpm-default"` to keep what the TPM
   * has (swtpm: 3 tries, 1000 s recovery). Tests of real lockout pass their own.
   */
  lockout?: DictionaryLockoutParameters | "tpm-default";
  /** How clients reach swtpm: a unix socket by default (no port races), or loopback TCP. */
  transport?: SwtpmTransport;
  /** CA that issues the key certificates; a fresh EC P-256 demo CA by default. */
  ca?: CertificateAuthority;
  /** The tpm2-pkcs11 module; found from native-config/modules.json by default. */
  modulePath?: string;
}

/** The environment tpm2-pkcs11 and tpm2-tools need to reach this TPM and store. */
export interface TpmEnv {
  /** TCTI for tpm2-pkcs11, read once per process at C_Initialize. */
  TPM2_PKCS11_TCTI: string;
  /** The tpm2-pkcs11 store (without it the module silently uses ~/.tpm2_pkcs11). */
  TPM2_PKCS11_STORE: string;
  /** Quiets tpm2-tss logging. */
  TSS2_LOG: string;
  /** TCTI for tpm2-tools (e.g. `tpm2_dictionarylockout`). */
  TPM2TOOLS_TCTI: string;
  [name: string]: string;
}

/** One key generated in the TPM, with its certificate on the token. */
export interface ProvisionedTpmKey {
  keyType: "RSA" | "EC";
  algorithm: TpmKeyAlgorithm;
  /** CKA_LABEL of the private key, public key and certificate. */
  label: string;
  /** CKA_ID (tpm2_ptool stores the text given to `--id` as its bytes). */
  id: Buffer;
  /** `pkcs11:` URI of the private key. */
  keyUri: string;
  /** `pkcs11:` URI of the certificate. */
  certificateUri: string;
  certificatePem: string;
  certificateDer: Buffer;
  /** Path of the certificate PEM file (also on the token). */
  certificateFile: string;
}

/** A provisioned TPM token and the swtpm behind it. */
export interface ProvisionedTpm {
  dir: string;
  env: TpmEnv;
  modulePath: string;
  token: { label: string; pin: string; soPin: string; uri: string };
  keys: ProvisionedTpmKey[];
  caPem: string;
  ca: CertificateAuthority;
  /** Milliseconds per provisioning step, for reports. */
  timings: Record<string, number>;
  swtpm: Swtpm;
  /** Stops swtpm (orderly TPM2_Shutdown, then SIGTERM by PID) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts swtpm again on the same state and address. */
  start(): Promise<void>;
  /** Kills swtpm with SIGKILL, as a crash would. */
  kill(): Promise<void>;
  /** Sets the TPM's dictionary-attack parameters. */
  setLockout(p: DictionaryLockoutParameters): Promise<void>;
  /** `tpm2_dictionarylockout --clear-lockout`. */
  clearLockout(): Promise<void>;
  /** The TPM's DA counter and parameters. */
  lockoutState(): Promise<DictionaryLockoutState>;
}

/** What provisioning leaves in `<dir>/tpm-token.json` (no PINs) for start/stop from another process. */
interface SavedState {
  transport: SwtpmTransport;
  ports?: { server: number; ctrl: number };
  env: TpmEnv;
  modulePath: string;
  tokenLabel: string;
  keys: Array<{ algorithm: TpmKeyAlgorithm; label: string; keyUri: string; certificateUri: string; certificateFile: string }>;
}

/**
 * The tpm2-pkcs11 module on this machine.
 * @throws Error when it is not installed
 */
export function findTpm2Pkcs11Module(): string {
  const entry = findCatalogEntry("tpm2_pkcs11");
  const path = entry && locateCatalogModule(entry);
  if (!path || !existsSync(path)) throw new Error("tpm2-pkcs11 is not installed (libtpm2_pkcs11.so not found): apt-get install libtpm2-pkcs11-1 libtpm2-pkcs11-tools");
  return path;
}

/**
 * What is missing on this machine to provision a TPM token (empty when all is there):
 * executables and the tpm2-pkcs11 module, each named by its Debian package.
 */
export function missingTpmDependencies(): string[] {
  const missing: string[] = [];
  const need: Array<[string, string]> = [
    ["swtpm", "swtpm"], ["tpm2_ptool", "libtpm2-pkcs11-tools"], ["tpm2_flushcontext", "tpm2-tools"],
    ["tpm2_dictionarylockout", "tpm2-tools"], ["tpm2_getcap", "tpm2-tools"], ["tpm2_shutdown", "tpm2-tools"],
  ];
  for (const [exe, pkg] of need) if (!findExecutable(exe)) missing.push(`${exe} (${pkg})`);
  try {
    findTpm2Pkcs11Module();
  } catch {
    missing.push("libtpm2_pkcs11.so (libtpm2-pkcs11-1)");
  }
  return missing;
}

function keyLabel(alg: TpmKeyAlgorithm): string {
  return alg.toLowerCase(); // rsa-2048, ec-p256
}

async function timed<T>(timings: Record<string, number>, name: string, f: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await f();
  } finally {
    timings[name] = Math.round(performance.now() - t0);
  }
}

/**
 * Reads the token's public keys in a child process (tpm2-pkcs11 binds to one
 * TCTI per process at C_Initialize; the caller's process stays unbound).
 */
async function readPublicKeysInChild(modulePath: string, label: string, env: TpmEnv): Promise<TokenPublicKey[]> {
  const script = join(__dirname, "token-public-keys.js");
  try {
    const { stdout } = await execFileAsync(process.execPath, [script, modulePath, label], { env: { ...process.env, ...env }, timeout: 30_000 });
    return JSON.parse(stdout) as TokenPublicKey[];
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`cannot read the public keys from the TPM token: ${(err.stderr || err.message).trim()}`);
  }
}

function bindLifecycle(swtpm: Swtpm, tools: Tpm2ToolsEnv): Pick<ProvisionedTpm, "stop" | "start" | "kill" | "setLockout" | "clearLockout" | "lockoutState"> {
  return {
    stop: () => swtpm.stop(),
    start: () => swtpm.start(),
    kill: () => swtpm.kill(),
    setLockout: (p) => setDictionaryLockout(tools, p),
    clearLockout: () => clearDictionaryLockout(tools),
    lockoutState: () => readDictionaryLockout(tools),
  };
}

/**
 * Starts swtpm in `opts.dir` and provisions a tpm2-pkcs11 token on it with keys
 * generated in the TPM and certificates from a demo CA. swtpm keeps running
 * (daemonised) until `stop()`, or until this process exits.
 *
 * @remarks The PINs reach tpm2_ptool on stdin (batch mode), but tpm2_ptool
 * itself passes PIN-derived authorisation values to tpm2-tools on their command
 * lines (and takes PINs as arguments in the one-process-per-command fallback):
 * fine for test and demo PINs; see docs/tpm.md for a real TPM.
 * @throws Error when swtpm, tpm2-tools, tpm2_ptool or tpm2-pkcs11 is missing, or a step fails
 */
export async function provisionTpm(opts: ProvisionTpmOptions): Promise<ProvisionedTpm> {
  const timings: Record<string, number> = {};
  const t0 = performance.now();
  const dir = resolve(opts.dir);
  const label = opts.tokenLabel ?? "ra-agent-tpm";
  const pin = opts.pin ?? "1234";
  const soPin = opts.soPin ?? "12345678";
  const algorithms = opts.keys ?? ["RSA-2048", "EC-P256"];
  const modulePath = opts.modulePath ?? findTpm2Pkcs11Module();
  const storeDir = join(dir, "store");
  const binDir = join(dir, "bin");
  const certDir = join(dir, "certs");
  for (const d of [dir, storeDir, binDir, certDir]) mkdirSync(d, { recursive: true, mode: 0o700 });

  // The CA is made while the TPM works.
  const caPromise = opts.ca ? Promise.resolve(opts.ca) : createCa({ name: "CN=ra-agent TPM demo CA", algorithm: "EC-P256" });
  caPromise.catch(() => undefined);

  writeFlushWrappers(binDir);
  const swtpm = new Swtpm({ dir: join(dir, "tpm"), transport: opts.transport });
  await timed(timings, "swtpmStart", () => swtpm.start());
  try {
    const env: TpmEnv = { TPM2_PKCS11_TCTI: swtpm.tcti, TPM2_PKCS11_STORE: storeDir, TSS2_LOG: "all+NONE", TPM2TOOLS_TCTI: swtpm.tcti };
    const tools: Tpm2ToolsEnv = { ...env, wrapperDir: binDir };
    const lockout = opts.lockout ?? NO_LOCKOUT;
    if (lockout !== "tpm-default") await timed(timings, "dictionaryLockout", () => setDictionaryLockout(tools, lockout));

    // tpm2_ptool: init (a primary key, persisted in the TPM), addtoken, one addkey per key: one batch.
    // A fresh store's first primary object has id 1; an existing store is extended with a new one.
    const fresh = !existsSync(join(storeDir, "tpm2_pkcs11.sqlite3"));
    const addtoken = (pid: string) => ["addtoken", `--pid=${pid}`, `--label=${label}`, `--sopin=${soPin}`, `--userpin=${pin}`, `--path=${storeDir}`];
    // One key at a time: the TPM and the store's SQLite database are both serial.
    const addkeys = algorithms.map((alg) => ["addkey", `--label=${label}`, `--userpin=${pin}`, `--algorithm=${PTOOL_ALGORITHM[alg]}`, `--key-label=${keyLabel(alg)}`, `--id=${keyLabel(alg)}`, `--path=${storeDir}`]);
    const init = ["init", `--path=${storeDir}`];
    const primaryIdOf = (out: string) => {
      const id = /^id:\s*(\d+)/m.exec(out)?.[1];
      if (!id) throw new Error(`tpm2_ptool init printed no primary object id: ${out.trim()}`);
      return id;
    };
    if (fresh) {
      const [initOut] = await timed(timings, "ptool", () => runPtool([init, addtoken("1"), ...addkeys], tools));
      if (primaryIdOf(initOut) !== "1") throw new Error(`tpm2_ptool init in a fresh store created primary object ${primaryIdOf(initOut)}, not 1`);
    } else {
      const [initOut] = await timed(timings, "ptoolInit", () => runPtool([init], tools));
      await timed(timings, "ptool", () => runPtool([addtoken(primaryIdOf(initOut)), ...addkeys], tools));
    }

    const publicKeys = await timed(timings, "readPublicKeys", () => readPublicKeysInChild(modulePath, label, env));
    const ca = await caPromise;
    const keys: ProvisionedTpmKey[] = [];
    for (const alg of algorithms) {
      const kl = keyLabel(alg);
      const pub = publicKeys.find((k) => k.label === kl);
      if (!pub) throw new Error(`the token shows no public key labelled "${kl}" after tpm2_ptool addkey`);
      const cert = await issueCertificate(ca, Buffer.from(pub.spkiBase64, "base64"), { subject: `CN=ra-agent TPM ${alg} key, O=ra-agent demo` });
      const certificatePem = cert.toString("pem") + "\n";
      const certificateFile = join(certDir, `${kl}.pem`);
      writeFileSync(certificateFile, certificatePem);
      const id = Buffer.from(pub.idHex, "hex");
      keys.push({
        keyType: alg.startsWith("RSA") ? "RSA" : "EC",
        algorithm: alg,
        label: kl,
        id,
        keyUri: formatPkcs11Uri({ token: label, object: kl, id, type: "private" }),
        certificateUri: formatPkcs11Uri({ token: label, object: kl, id, type: "cert" }),
        certificatePem,
        certificateDer: Buffer.from(cert.rawData),
        certificateFile,
      });
    }
    await timed(timings, "ptoolAddcerts", () => runPtool(keys.map((k) => ["addcert", `--label=${label}`, `--key-label=${k.label}`, `--path=${storeDir}`, k.certificateFile]), tools));
    writeFileSync(join(dir, "ca.pem"), ca.pem);
    const saved: SavedState = {
      transport: swtpm.transport, ports: swtpm.tcpPorts, env, modulePath, tokenLabel: label,
      keys: keys.map((k) => ({ algorithm: k.algorithm, label: k.label, keyUri: k.keyUri, certificateUri: k.certificateUri, certificateFile: k.certificateFile })),
    };
    writeFileSync(join(dir, "tpm-token.json"), JSON.stringify(saved, null, 2) + "\n", { mode: 0o600 });
    timings.total = Math.round(performance.now() - t0);
    return {
      dir, env, modulePath,
      token: { label, pin, soPin, uri: formatPkcs11Uri({ token: label }) },
      keys, caPem: ca.pem, ca, timings, swtpm,
      ...bindLifecycle(swtpm, tools),
    };
  } catch (e) {
    await swtpm.stop({ orderly: false }).catch(() => undefined);
    throw e;
  }
}

/**
 * The demo's entry point: provisions the default token (RSA-2048 and EC P-256
 * keys, PIN 1234) in `dir`, leaving the TPM's own dictionary-attack settings
 * in place so that the demo behaves like a real TPM.
 * @throws Error as {@link provisionTpm}
 */
export function provisionTpmToken(dir: string, opts: Omit<ProvisionTpmOptions, "dir"> = {}): Promise<ProvisionedTpm> {
  return provisionTpm({ lockout: "tpm-default", ...opts, dir });
}

function loadSaved(dir: string): { saved: SavedState; swtpm: Swtpm; tools: Tpm2ToolsEnv } {
  const file = join(resolve(dir), "tpm-token.json");
  if (!existsSync(file)) throw new Error(`${file} not found: provision first (provision --dir ${dir})`);
  const saved = JSON.parse(readFileSync(file, "utf8")) as SavedState;
  const swtpm = new Swtpm({ dir: join(resolve(dir), "tpm"), transport: saved.transport, ports: saved.ports });
  return { saved, swtpm, tools: { ...saved.env, wrapperDir: join(resolve(dir), "bin") } };
}

function shellExports(env: TpmEnv): string {
  return Object.entries(env).map(([k, v]) => `export ${k}='${v}'`).join("\n") + "\n";
}

async function main(argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      dir: { type: "string" },
      transport: { type: "string" },
      json: { type: "boolean", default: false },
      "strict-lockout": { type: "boolean", default: false },
    },
  });
  const command = positionals[0] ?? "provision";
  const dir = values.dir ?? join(process.cwd(), ".state", "tpm");
  switch (command) {
    case "provision": {
      if (values.transport !== undefined && values.transport !== "unix" && values.transport !== "tcp") throw new Error("--transport must be unix or tcp");
      const tpm = await provisionTpm({ dir, transport: values.transport as SwtpmTransport | undefined, lockout: values["strict-lockout"] ? "tpm-default" : undefined });
      tpm.swtpm.detach();
      if (values.json) {
        const { ca: _ca, swtpm: _s, stop: _1, start: _2, kill: _3, setLockout: _4, clearLockout: _5, lockoutState: _6, keys, ...rest } = tpm;
        process.stdout.write(JSON.stringify({ ...rest, pid: tpm.swtpm.pid, keys: keys.map(({ certificateDer: _d, id, ...k }) => ({ ...k, idHex: id.toString("hex") })) }, null, 2) + "\n");
      } else {
        process.stdout.write(`# swtpm pid ${tpm.swtpm.pid}; stop it with: node ${__filename.replace(/\.ts$/, ".js")} stop --dir ${tpm.dir}\n`);
        process.stdout.write(`# module: ${tpm.modulePath}\n# token "${tpm.token.label}", user PIN ${tpm.token.pin} (demo PIN)\n`);
        for (const k of tpm.keys) process.stdout.write(`# ${k.algorithm}: key ${k.keyUri}\n#   certificate ${k.certificateUri}\n`);
        process.stdout.write(`# took ${tpm.timings.total} ms\n`);
        process.stdout.write(shellExports(tpm.env));
      }
      return;
    }
    case "stop":
      await loadSaved(dir).swtpm.stop();
      return;
    case "start": {
      const { swtpm } = loadSaved(dir);
      await swtpm.start();
      swtpm.detach();
      return;
    }
    case "env":
      process.stdout.write(shellExports(loadSaved(dir).saved.env));
      return;
    case "clear-lockout":
      await clearDictionaryLockout(loadSaved(dir).tools);
      return;
    default:
      throw new Error(`unknown command ${command}: provision | stop | start | env | clear-lockout`);
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).catch(
    (e) => {
      process.stderr.write(`tpm provision: ${(e as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
