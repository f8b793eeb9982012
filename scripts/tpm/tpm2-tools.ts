/**
 * Running tpm2-tools and tpm2_ptool against a TPM without a resource manager,
 * and the TPM's dictionary-attack (DA) lockout settings.
 *
 * Without tpm2-abrmd (or the kernel's /dev/tpmrm0) every tpm2-tools command
 * leaves its transient objects loaded, and after a few commands the TPM has no
 * room left: `tpm2_ptool addtoken` fails with "out of memory for object
 * contexts" (platform notes). tpm2_ptool runs the tools by name from PATH, so a
 * directory of wrappers put first on PATH runs each real tool and then
 * `tpm2_flushcontext -t`. tpm2-tools save object contexts to files, so the next
 * command reloads what it needs.
 */
import { execFile, spawn } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** tpm2-tools commands that tpm2_ptool 1.9 runs (tpm2_pkcs11/tpm2.py). */
export const PTOOL_TPM2_COMMANDS = [
  "tpm2_createprimary", "tpm2_evictcontrol", "tpm2_readpublic", "tpm2_load", "tpm2_loadexternal", "tpm2_unseal",
  "tpm2_encryptdecrypt", "tpm2_create", "tpm2_getcap", "tpm2_import", "tpm2_changeauth", "tpm2_sign",
] as const;

/** Finds an executable on PATH (like `command -v`), skipping `skipDir`. */
export function findExecutable(name: string, pathEnv = process.env.PATH ?? "", skipDir?: string): string | undefined {
  for (const dir of pathEnv.split(delimiter)) {
    if (!dir || dir === skipDir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Writes `<binDir>/tpm2_*` wrappers that run the real tool, then flush transient
 * objects. Put `binDir` first on PATH when running tpm2_ptool.
 * @throws Error when tpm2-tools are not installed
 */
export function writeFlushWrappers(binDir: string): void {
  mkdirSync(binDir, { recursive: true });
  const flush = findExecutable("tpm2_flushcontext", process.env.PATH, binDir);
  if (!flush) throw new Error("tpm2-tools are not installed (tpm2_flushcontext not found): apt-get install tpm2-tools");
  for (const name of PTOOL_TPM2_COMMANDS) {
    const real = findExecutable(name, process.env.PATH, binDir);
    if (!real) continue;
    const script = [
      "#!/bin/sh",
      "# Written by ra-agent scripts/tpm: run the tool, then flush the transient objects it left",
      "# (no resource manager between tpm2-tools and this TPM).",
      `${shellQuote(real)} "$@"`,
      "rc=$?",
      `${shellQuote(flush)} -t >/dev/null 2>&1`,
      "exit $rc",
      "",
    ].join("\n");
    writeFileSync(join(binDir, name), script, { mode: 0o755 });
  }
}

/** Environment for tpm2-tools and tpm2_ptool talking to one TPM. */
export interface Tpm2ToolsEnv {
  /** TCTI for tpm2-tools, e.g. `swtpm:path=/tmp/x/swtpm.sock`. */
  TPM2TOOLS_TCTI: string;
  /** The tpm2-pkcs11 store directory used by tpm2_ptool. */
  TPM2_PKCS11_STORE?: string;
  /** tpm2-tss logging, `all+NONE` to keep tool output clean. */
  TSS2_LOG?: string;
  /** When set, prepended to PATH (the flush wrappers). */
  wrapperDir?: string;
}

function childEnv(env: Tpm2ToolsEnv): NodeJS.ProcessEnv {
  const { wrapperDir, ...vars } = env;
  const out: NodeJS.ProcessEnv = { ...process.env, ...vars };
  if (wrapperDir) out.PATH = `${wrapperDir}${delimiter}${process.env.PATH ?? ""}`;
  return out;
}

/**
 * Runs a tpm2-tools command or tpm2_ptool and returns its stdout.
 * @throws Error with the command name and its stderr when it fails (arguments are not echoed: they may hold PINs)
 */
export async function runTpmTool(command: string, args: string[], env: Tpm2ToolsEnv, timeoutMs = 60_000): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, { env: childEnv(env), timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string; stdout?: string };
    if (err.code === "ENOENT") {
      throw new Error(`${command} is not installed: apt-get install tpm2-tools libtpm2-pkcs11-tools (tpm2_ptool)`);
    }
    const sub = command === "tpm2_ptool" && args[0] ? ` ${args[0]}` : "";
    throw new Error(`${command}${sub} failed: ${(err.stderr || err.stdout || err.message).trim().slice(-2000)}`);
  }
}

const BATCH_MARK = /\n?@@ra-agent-ptool-step@@ \d+\n/;

/** The batch runner next to this file (source tree) or in the repository (compiled into an out dir). */
function batchScript(): string | undefined {
  return [join(__dirname, "ptool-batch.py"), join(__dirname, "..", "..", "..", "scripts", "tpm", "ptool-batch.py")].find((p) => existsSync(p));
}

/** The Python interpreter of tpm2_ptool, from its `#!` line. */
function ptoolInterpreter(): string[] | undefined {
  const ptool = findExecutable("tpm2_ptool");
  if (!ptool) return undefined;
  const first = readFileSync(ptool, "utf8").split("\n", 1)[0];
  if (!first.startsWith("#!")) return undefined;
  const parts = first.slice(2).trim().split(/\s+/);
  return parts[0].endsWith("/env") ? parts.slice(1) : parts;
}

function runBatch(interpreter: string[], script: string, steps: string[][], env: Tpm2ToolsEnv, timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(interpreter[0], [...interpreter.slice(1), script], { env: childEnv(env), stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
    // The PINs travel on stdin, not on a command line.
    child.stdin.end(JSON.stringify(steps));
  });
}

/**
 * Runs tpm2_ptool commands in order and returns each one's stdout. They run in
 * one Python process (ptool-batch.py, through tpm2_ptool's own entry point)
 * when possible: tpm2_ptool's start-up costs more than most commands. Falls back
 * to one tpm2_ptool process per command.
 * @throws Error naming the failing command, with its output (never its arguments)
 */
export async function runPtool(steps: string[][], env: Tpm2ToolsEnv, timeoutMs = 120_000): Promise<string[]> {
  const script = batchScript();
  const interpreter = ptoolInterpreter();
  if (script && interpreter) {
    const r = await runBatch(interpreter, script, steps, env, timeoutMs);
    if (r.code === 0) return r.stdout.split(BATCH_MARK).slice(0, steps.length);
    if (r.code !== 3) throw new Error(`${r.stderr.trim().split("\n").slice(-1)[0] || "tpm2_ptool failed"}: ${(r.stderr + r.stdout).trim().slice(-2000)}`);
  }
  const out: string[] = [];
  for (const step of steps) out.push(await runTpmTool("tpm2_ptool", step, env, timeoutMs));
  return out;
}

/**
 * The TPM's dictionary-attack parameters (TPM2_DictionaryAttackParameters).
 * A TPM counts every failed authorisation of a DA-protected object (a wrong
 * tpm2-pkcs11 PIN is one); at `maxTries` it locks out until the counter decays.
 */
export interface DictionaryLockoutParameters {
  /** Failures before lockout (TPM2_PT_MAX_AUTH_FAIL). */
  maxTries: number;
  /**
   * Seconds for the failure counter to drop by one (TPM2_PT_LOCKOUT_INTERVAL).
   * 0 disables DA protection: failures are not counted at all.
   */
  recoveryTime: number;
  /** Seconds before the lockout hierarchy can be used again after a failed lockout auth (TPM2_PT_LOCKOUT_RECOVERY). */
  lockoutRecoveryTime: number;
}

/** Test settings: no lockout at all (recovery time 0), as in the platform notes. */
export const NO_LOCKOUT: DictionaryLockoutParameters = { maxTries: 1000, recoveryTime: 0, lockoutRecoveryTime: 0 };

/** The live DA state of a TPM. */
export interface DictionaryLockoutState extends DictionaryLockoutParameters {
  /** Failures counted now (TPM2_PT_LOCKOUT_COUNTER). */
  counter: number;
  /** TPMA_PERMANENT inLockout. */
  inLockout: boolean;
}

/**
 * Sets the DA parameters (needs the lockout hierarchy, whose auth is empty on a fresh swtpm).
 * @throws Error from tpm2_dictionarylockout
 */
export async function setDictionaryLockout(env: Tpm2ToolsEnv, p: DictionaryLockoutParameters): Promise<void> {
  await runTpmTool("tpm2_dictionarylockout", ["--setup-parameters", `--max-tries=${p.maxTries}`, `--recovery-time=${p.recoveryTime}`, `--lockout-recovery-time=${p.lockoutRecoveryTime}`], env);
}

/**
 * Resets the failure counter and ends a lockout (`tpm2_dictionarylockout --clear-lockout`).
 * @throws Error from tpm2_dictionarylockout
 */
export async function clearDictionaryLockout(env: Tpm2ToolsEnv): Promise<void> {
  await runTpmTool("tpm2_dictionarylockout", ["--clear-lockout"], env);
}

function property(text: string, name: string): number {
  const m = new RegExp(`^\\s*${name}:\\s*(?:\\n\\s*raw:\\s*)?(0x[0-9a-fA-F]+|\\d+)`, "m").exec(text);
  if (!m) throw new Error(`tpm2_getcap properties-variable printed no ${name}`);
  return Number(m[1]);
}

/**
 * Reads the DA counter and parameters (`tpm2_getcap properties-variable`).
 * @throws Error from tpm2_getcap or when its output lacks a field
 */
export async function readDictionaryLockout(env: Tpm2ToolsEnv): Promise<DictionaryLockoutState> {
  const out = await runTpmTool("tpm2_getcap", ["properties-variable"], env);
  const inLockout = /^\s*inLockout:\s*1/m.test(out);
  return {
    counter: property(out, "TPM2_PT_LOCKOUT_COUNTER"),
    maxTries: property(out, "TPM2_PT_MAX_AUTH_FAIL"),
    recoveryTime: property(out, "TPM2_PT_LOCKOUT_INTERVAL"),
    lockoutRecoveryTime: property(out, "TPM2_PT_LOCKOUT_RECOVERY"),
    inLockout,
  };
}
