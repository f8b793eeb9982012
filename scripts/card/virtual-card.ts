/**
 * A virtual smart card for tests and the demo: a libcacard CAC card (RSA-2048
 * key and certificate in an NSS database) behind a private pcscd, seen by
 * OpenSC's `opensc-pkcs11.so` as a real token with a real PIN retry counter.
 *
 * Pieces, all started and stopped by PID:
 * - `vcard-bridge` (C, ./vcard-bridge.c): the card; connects to vpcd and counts wrong PINs;
 * - `pcscd`, socket-activated through `socket-activate` (C, ./socket-activate.c) on a
 *   socket inside the card's directory, with vpcd as its only reader on a free TCP port.
 *
 * Clients reach that pcscd through `PCSCLITE_CSOCK_NAME` (see {@link VirtualCard.env}),
 * so several virtual cards can run side by side and the system's pcscd (if any) is
 * neither stopped nor seen. Not part of the product; `scripts/` is not published.
 *
 * CLI: `node dist/scripts/card/virtual-card.js start|stop|remove|insert|status|run --dir DIR`.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { promises as fsp, existsSync, openSync, closeSync, readFileSync, statSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { createCa, generateKeyPair, issueCertificate, privateKeyToPem, type CertificateAuthority } from "../lib/pki";

/** Where Debian/Ubuntu (and Fedora) put OpenSC's PKCS#11 module. */
const OPENSC_MODULE_CANDIDATES = [
  "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
  "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
  "/usr/lib64/opensc-pkcs11.so",
  "/usr/lib/opensc-pkcs11.so",
];
const VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
const PCSCD_CANDIDATES = ["/usr/sbin/pcscd", "/usr/bin/pcscd", "/sbin/pcscd"];
/** NSS nickname of the card's certificate and key inside the database. */
const NICKNAME = "ra-agent-card";
/** OpenSC's label for the first CAC key and certificate (CKA_ID 00 01). */
const CAC_OBJECT_LABEL = "CAC ID Certificate";
/** libcacard's emulated CAC card always reports this serial. */
const CAC_SERIAL = "000058bd002c19b5";
const STATE_FILE = "virtual-card.json";

/** Options for {@link startVirtualCard}. */
export interface VirtualCardOptions {
  /** Directory for every file of this card (created when missing; must not hold a card yet). */
  dir: string;
  /** The card's user PIN, 4-8 characters (it is the NSS database password). Default `123456`. */
  pin?: string;
  /** Wrong PINs before the card blocks, 1-15. Default 3. */
  maxTries?: number;
  /** Token label = the certificate's CN (OpenSC shows the CN), at most 32 bytes. Default `ra-agent virtual card`. */
  label?: string;
  /** CA that issues the card certificate; a fresh demo CA when absent. */
  ca?: CertificateAuthority;
  /** Use this pcscd socket path instead of `<dir>/pcscd.comm` (see {@link VirtualCard.env} remarks). */
  socketPath?: string;
  /** Keep pcscd and the bridge running after this process exits (CLI `start`). Default false. */
  detached?: boolean;
  /** Log every APDU (never PIN data) to `<dir>/bridge.log`. */
  verbose?: boolean;
  /** How long to wait for the token to appear or disappear. Default 15000 ms. */
  timeoutMs?: number;
}

/** The PIN retry counter the bridge keeps (its state file). */
export interface PinCounter {
  maxTries: number;
  triesLeft: number;
}

/** VERIFY commands with a PIN that the card answered, by outcome. */
export interface PinEvents {
  verified: number;
  wrong: number;
  /** Refused without checking because the PIN was blocked. */
  refusedBlocked: number;
}

/** A running virtual card. */
export interface VirtualCard {
  /** The card's directory. */
  readonly dir: string;
  /** OpenSC's PKCS#11 module. */
  readonly modulePath: string;
  /** What OpenSC shows. `serial` is the same for every libcacard card: select by label. */
  readonly token: { label: string; serial: string; pin: string };
  /** RFC 7512 URIs of the card key and certificate, and the certificate itself. */
  readonly key: { keyUri: string; certificateUri: string; certificatePem: string };
  /** The issuing CA certificate (PEM): the trust anchor for this card. */
  readonly caPem: string;
  /**
   * Environment for any process that talks to this card (OpenSC through libpcsclite).
   * @remarks libpcsclite reads `PCSCLITE_CSOCK_NAME` once per process, at its first
   * use: a process that loads OpenSC talks to one pcscd for its whole life. To use the
   * card inside the current process, set `process.env.PCSCLITE_CSOCK_NAME` before the
   * module is first initialised; run one virtual card per test file.
   */
  readonly env: { PCSCLITE_CSOCK_NAME: string };
  /** The bridge's PIN counter file (`{"maxTries":N,"triesLeft":N}`). */
  readonly pinStateFile: string;
  /** PIDs of the running processes (undefined when stopped). */
  readonly pids: { pcscd?: number; bridge?: number };
  /** Reads the bridge's PIN retry counter. */
  readPinCounter(): PinCounter;
  /** How many VERIFY commands with a PIN the card has seen (from `<dir>/bridge.log`): each is one C_Login. */
  pinEvents(): PinEvents;
  /** Pulls the card out: stops the bridge and waits until OpenSC sees no token. */
  stopBridge(): Promise<void>;
  /**
   * Inserts the card again and waits until OpenSC sees it (the PIN counter is kept).
   * `resetPinCounter` unblocks the PIN; `triesLeft` sets the counter first (tests: a
   * card at its final try, or blocked, without spending tries).
   */
  startBridge(options?: { resetPinCounter?: boolean; triesLeft?: number }): Promise<void>;
  /** Stops the bridge and pcscd (by PID, waiting for them). Idempotent. */
  stop(): Promise<void>;
}

/** The card's dependencies that are missing on this machine (empty when all are there). */
export function missingCardDependencies(): string[] {
  const missing: string[] = [];
  if (!findFile(PCSCD_CANDIDATES)) missing.push("pcscd (Debian package pcscd)");
  if (!existsSync(VPCD_DRIVER)) missing.push(`${VPCD_DRIVER} (vsmartcard-vpcd)`);
  if (!findFile(OPENSC_MODULE_CANDIDATES)) missing.push("opensc-pkcs11.so (opensc-pkcs11)");
  if (!existsSync("/usr/include/cacard/libcacard.h")) missing.push("libcacard headers (libcacard-dev)");
  for (const [cmd, pkg] of [["pkcs11-tool", "opensc"], ["certutil", "libnss3-tools"], ["pk12util", "libnss3-tools"],
    ["openssl", "openssl"], ["cc", "gcc"], ["pkg-config", "pkg-config"]] as const) {
    if (!onPath(cmd)) missing.push(`${cmd} (${pkg})`);
  }
  return missing;
}

/** Packages that {@link missingCardDependencies} checks for, for `apt-get install`. */
export const CARD_APT_PACKAGES = ["pcscd", "vsmartcard-vpcd", "opensc", "opensc-pkcs11", "libcacard0", "libcacard-dev",
  "libnss3-tools", "openssl", "gcc", "libc6-dev", "pkg-config"] as const;

/** Path of OpenSC's PKCS#11 module on this machine. @throws Error when OpenSC is not installed. */
export function openscModulePath(): string {
  const found = findFile(OPENSC_MODULE_CANDIDATES);
  if (!found) throw new Error(`opensc-pkcs11.so not found in ${OPENSC_MODULE_CANDIDATES.join(", ")}; install the opensc-pkcs11 package`);
  return found;
}

/**
 * Provisions a virtual card in `options.dir` (NSS database, RSA-2048 key, certificate
 * from a demo CA), starts pcscd and the bridge, and waits until OpenSC sees the token.
 * @throws Error naming the missing package, a bad option, or the process that failed (with its log).
 */
export async function startVirtualCard(options: VirtualCardOptions): Promise<VirtualCard> {
  const missing = missingCardDependencies();
  if (missing.length) throw new Error(`virtual card: missing ${missing.join(", ")}; run scripts/ensure-deps.sh --apt-only`);
  const pin = options.pin ?? "123456";
  if (!/^[\x21-\x7e]{4,8}$/.test(pin)) throw new Error("virtual card: the PIN must be 4-8 printable ASCII characters without spaces");
  const maxTries = options.maxTries ?? 3;
  if (!Number.isInteger(maxTries) || maxTries < 1 || maxTries > 15) throw new Error("virtual card: maxTries must be 1..15");
  const label = options.label ?? "ra-agent virtual card";
  if (Buffer.byteLength(label) > 32 || /[,=+<>#;"\\]/.test(label)) {
    throw new Error("virtual card: the label must be at most 32 bytes without , = + < > # ; \" \\");
  }
  // pcscd writes its PID file there whatever socket it serves; only root can create the directory.
  if (!existsSync("/run/pcscd") && process.getuid?.() !== 0) {
    throw new Error("virtual card: /run/pcscd does not exist and pcscd, running as you, cannot create it; run `sudo mkdir -m 0755 /run/pcscd` (or install and start the pcscd package)");
  }
  const dir = path.resolve(options.dir);
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  if (existsSync(path.join(dir, "nssdb"))) throw new Error(`virtual card: ${dir} already holds a card; use an empty directory`);
  if (/[",()=\s]/.test(dir)) throw new Error(`virtual card: the directory path must not contain spaces or " , ( ) =: ${dir}`);
  const socketPath = options.socketPath ?? path.join(dir, "pcscd.comm");
  if (Buffer.byteLength(socketPath) > 100) throw new Error(`virtual card: socket path too long for a Unix socket: ${socketPath} (pass socketPath)`);
  const timeoutMs = options.timeoutMs ?? 15_000;

  const [tools, issued] = await Promise.all([buildTools(dir), provisionNssDb(dir, pin, label, options.ca)]);
  const card = new RunningCard({
    dir, pin, label, maxTries, socketPath, tools, timeoutMs,
    modulePath: openscModulePath(), detached: options.detached ?? false, verbose: options.verbose ?? false,
    certificatePem: issued.certificatePem, caPem: issued.caPem,
  });
  try {
    await card.startAll();
  } catch (e) {
    await card.stop();
    throw e;
  }
  return card;
}

// ---------------------------------------------------------------------------------------------
// Building the C tools and provisioning the NSS database

interface Tools {
  bridge: string;
  socketActivate: string;
}

/** The directory that holds this file's C sources (scripts/card), from src or dist. */
function sourceDir(): string {
  for (let d = __dirname; ; d = path.dirname(d)) {
    const candidate = path.join(d, "scripts", "card");
    if (existsSync(path.join(candidate, "vcard-bridge.c"))) return candidate;
    if (existsSync(path.join(d, "vcard-bridge.c"))) return d;
    if (path.dirname(d) === d) throw new Error(`virtual card: scripts/card/vcard-bridge.c not found above ${__dirname}`);
  }
}

/** Compiles the bridge and the socket activator into `<dir>/bin` (about half a second). */
async function buildTools(dir: string): Promise<Tools> {
  const src = sourceDir();
  const bin = path.join(dir, "bin");
  await fsp.mkdir(bin, { recursive: true });
  const flags = (await run("pkg-config", ["--cflags", "--libs", "libcacard"])).stdout.trim().split(/\s+/);
  const bridge = path.join(bin, "vcard-bridge");
  const socketActivate = path.join(bin, "socket-activate");
  await Promise.all([
    run("cc", ["-O2", "-Wall", "-o", bridge, path.join(src, "vcard-bridge.c"), ...flags]),
    run("cc", ["-O2", "-Wall", "-o", socketActivate, path.join(src, "socket-activate.c")]),
  ]);
  return { bridge, socketActivate };
}

/**
 * Creates `<dir>/nssdb` with the PIN as its password and imports an RSA-2048 key with a
 * certificate. The key only passes through 0600 files that are deleted at once: the
 * NSS database is the card's chip.
 */
async function provisionNssDb(dir: string, pin: string, label: string, ca?: CertificateAuthority): Promise<{ certificatePem: string; caPem: string }> {
  const issuer = ca ?? (await createCa({ name: "CN=ra-agent virtual card CA" }));
  const keys = await generateKeyPair("RSA-2048");
  const certificate = await issueCertificate(issuer, keys.publicKey, { subject: `CN=${label}` });
  const certificatePem = certificate.toString("pem") + "\n";
  const nssdb = path.join(dir, "nssdb");
  const secret = await fsp.mkdtemp(path.join(dir, ".provision-"));
  const pinFile = path.join(secret, "pin");
  const p12PassFile = path.join(secret, "p12pass");
  const keyFile = path.join(secret, "key.pem");
  const certFile = path.join(secret, "cert.pem");
  const p12File = path.join(secret, "card.p12");
  try {
    await fsp.mkdir(nssdb, { mode: 0o700 });
    await fsp.writeFile(pinFile, pin, { mode: 0o600 });
    await fsp.writeFile(p12PassFile, "transfer-only", { mode: 0o600 });
    await fsp.writeFile(keyFile, await privateKeyToPem(keys.privateKey), { mode: 0o600 });
    await fsp.writeFile(certFile, certificatePem);
    await run("certutil", ["-N", "-d", `sql:${nssdb}`, "-f", pinFile]);
    await run("openssl", ["pkcs12", "-export", "-inkey", keyFile, "-in", certFile, "-name", NICKNAME,
      "-passout", `file:${p12PassFile}`, "-out", p12File]);
    await run("pk12util", ["-i", p12File, "-d", `sql:${nssdb}`, "-w", p12PassFile, "-k", pinFile]);
  } finally {
    await fsp.rm(secret, { recursive: true, force: true });
  }
  await fsp.writeFile(path.join(dir, "card-cert.pem"), certificatePem);
  await fsp.writeFile(path.join(dir, "ca.pem"), issuer.pem);
  return { certificatePem, caPem: issuer.pem };
}

// ---------------------------------------------------------------------------------------------
// The running card

interface CardConfig {
  dir: string;
  pin: string;
  label: string;
  maxTries: number;
  socketPath: string;
  tools: Tools;
  modulePath: string;
  detached: boolean;
  verbose: boolean;
  timeoutMs: number;
  certificatePem: string;
  caPem: string;
}

/** What `<dir>/virtual-card.json` holds: enough for the CLI to stop or re-insert the card later. */
interface SavedState {
  pids: { pcscd?: number; bridge?: number };
  port: number;
  socketPath: string;
  modulePath: string;
  label: string;
  maxTries: number;
  verbose: boolean;
  tools: Tools;
  keyUri: string;
  certificateUri: string;
}

class RunningCard implements VirtualCard {
  readonly dir: string;
  readonly modulePath: string;
  readonly token: { label: string; serial: string; pin: string };
  readonly key: { keyUri: string; certificateUri: string; certificatePem: string };
  readonly caPem: string;
  readonly env: { PCSCLITE_CSOCK_NAME: string };
  readonly pinStateFile: string;
  private readonly cfg: CardConfig;
  private port = 0;
  private pcscd?: ChildProcess;
  private bridge?: ChildProcess;
  private readonly onExit = () => this.killNow();

  constructor(cfg: CardConfig) {
    this.cfg = cfg;
    this.dir = cfg.dir;
    this.modulePath = cfg.modulePath;
    this.token = { label: cfg.label, serial: CAC_SERIAL, pin: cfg.pin };
    const token = encodeURIComponent(cfg.label);
    const object = encodeURIComponent(CAC_OBJECT_LABEL);
    this.key = {
      keyUri: `pkcs11:token=${token};object=${object};type=private`,
      certificateUri: `pkcs11:token=${token};object=${object};type=cert`,
      certificatePem: cfg.certificatePem,
    };
    this.caPem = cfg.caPem;
    this.env = { PCSCLITE_CSOCK_NAME: cfg.socketPath };
    this.pinStateFile = path.join(cfg.dir, "pin-state.json");
  }

  get pids(): { pcscd?: number; bridge?: number } {
    return { pcscd: this.pcscd?.pid, bridge: this.bridge?.pid };
  }

  readPinCounter(): PinCounter {
    return readPinCounterFile(this.pinStateFile);
  }

  pinEvents(): PinEvents {
    const log = existsSync(path.join(this.dir, "bridge.log")) ? readFileSync(path.join(this.dir, "bridge.log"), "utf8") : "";
    const count = (re: RegExp) => (log.match(re) ?? []).length;
    return {
      verified: count(/^vcard-bridge: pin: verified$/gm),
      wrong: count(/^vcard-bridge: pin: wrong, \d+ tries left$/gm),
      refusedBlocked: count(/^vcard-bridge: pin: refused, blocked$/gm),
    };
  }

  async startAll(): Promise<void> {
    if (!this.cfg.detached) process.once("exit", this.onExit);
    for (let attempt = 1; ; attempt++) {
      this.port = await freePortPair();
      await this.startPcscd();
      try {
        await this.startBridge({ resetPinCounter: true });
        return;
      } catch (e) {
        // Another process took the port between freePortPair and pcscd's bind: try another.
        if (!(e instanceof PortTakenError) || attempt === 3) throw e;
        await this.stop();
        if (!this.cfg.detached) process.once("exit", this.onExit);
      }
    }
  }

  private async startPcscd(): Promise<void> {
    const readerDir = path.join(this.dir, "reader.conf.d");
    await fsp.mkdir(readerDir, { recursive: true });
    const hex = "0x" + this.port.toString(16).toUpperCase();
    await fsp.writeFile(path.join(readerDir, "vpcd"),
      `FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:${hex}\nLIBPATH ${VPCD_DRIVER}\nCHANNELID ${hex}\n`);
    const pcscd = findFile(PCSCD_CANDIDATES)!;
    const args = [this.cfg.socketPath, pcscd, "--foreground", "--config", readerDir];
    // pcsc-lite 2 asks polkit whether a client may connect; this pcscd serves only its owner's socket.
    if (await pcscdSupports(pcscd, "--disable-polkit")) args.push("--disable-polkit");
    this.pcscd = this.spawnLogged(this.cfg.tools.socketActivate, args, "pcscd.log", "w");
    this.saveState();
  }

  async startBridge(options: { resetPinCounter?: boolean; triesLeft?: number } = {}): Promise<void> {
    if (this.bridge && this.bridge.exitCode === null && this.bridge.signalCode === null) {
      throw new Error("virtual card: the bridge is already running (call stopBridge first)");
    }
    if (!this.pcscd) throw new Error("virtual card: stopped");
    if (options.triesLeft !== undefined) {
      const t = options.triesLeft;
      if (!Number.isInteger(t) || t < 0 || t > this.cfg.maxTries) throw new Error(`virtual card: triesLeft must be 0..${this.cfg.maxTries}`);
      writeFileSync(this.pinStateFile, JSON.stringify({ maxTries: this.cfg.maxTries, triesLeft: t }) + "\n", { mode: 0o600 });
    }
    const args = ["--nssdb", path.join(this.dir, "nssdb"), "--nickname", NICKNAME, "--pin-state", this.pinStateFile,
      "--port", String(this.port), "--max-tries", String(this.cfg.maxTries)];
    if (options.resetPinCounter) args.push("--reset-pin-counter");
    if (this.cfg.verbose) args.push("--verbose");
    this.bridge = this.spawnLogged(this.cfg.tools.bridge, args, "bridge.log");
    this.saveState();
    await waitForToken(this, true, this.cfg.timeoutMs, () => this.checkAlive());
  }

  async stopBridge(): Promise<void> {
    const bridge = this.bridge;
    if (!bridge) return;
    await terminate(bridge);
    this.bridge = undefined;
    this.saveState();
    if (this.pcscd) await waitForToken(this, false, this.cfg.timeoutMs, () => this.checkAlive(false));
  }

  async stop(): Promise<void> {
    process.removeListener("exit", this.onExit);
    const children = [this.bridge, this.pcscd].filter((c): c is ChildProcess => c !== undefined);
    this.bridge = undefined;
    this.pcscd = undefined;
    // The bridge first: pcscd then sees a card removal rather than a broken reader.
    for (const child of children) await terminate(child);
    if (existsSync(path.join(this.dir, STATE_FILE))) this.saveState();
    await fsp.rm(this.cfg.socketPath, { force: true });
  }

  /** Last resort when the process exits without stop(): no stray pcscd or bridge. */
  private killNow(): void {
    for (const child of [this.bridge, this.pcscd]) {
      if (child?.pid && child.exitCode === null && child.signalCode === null) {
        try { process.kill(child.pid, "SIGKILL"); } catch { /* already gone */ }
      }
    }
  }

  private checkAlive(needBridge = true): void {
    if (tail(path.join(this.dir, "pcscd.log"), 50).includes("Could not initialize connection to virtual ICC")) {
      throw new PortTakenError(`virtual card: vpcd could not listen on port ${this.port} or ${this.port + 1}`);
    }
    for (const [name, child, log] of [["pcscd", this.pcscd, "pcscd.log"], ["vcard-bridge", needBridge ? this.bridge : undefined, "bridge.log"]] as const) {
      if (child && (child.exitCode !== null || child.signalCode !== null)) {
        throw new Error(`virtual card: ${name} exited (${child.exitCode ?? child.signalCode}); ${path.join(this.dir, log)}:\n${tail(path.join(this.dir, log))}`);
      }
    }
  }

  private spawnLogged(file: string, args: string[], logName: string, flags: "a" | "w" = "a"): ChildProcess {
    const fd = openSync(path.join(this.dir, logName), flags, 0o600);
    try {
      const child = spawn(file, args, { stdio: ["ignore", fd, fd], detached: this.cfg.detached });
      if (this.cfg.detached) child.unref();
      child.on("error", () => { /* reported through exitCode by checkAlive */ });
      return child;
    } finally {
      closeSync(fd);
    }
  }

  private saveState(): void {
    const state: SavedState = {
      pids: this.pids, port: this.port, socketPath: this.cfg.socketPath, modulePath: this.modulePath,
      label: this.cfg.label, maxTries: this.cfg.maxTries, verbose: this.cfg.verbose, tools: this.cfg.tools,
      keyUri: this.key.keyUri, certificateUri: this.key.certificateUri,
    };
    // Synchronous so that the file is current even when the process is about to exit.
    writeFileSync(path.join(this.dir, STATE_FILE), JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** vpcd could not bind its port (taken by another process after we checked it). */
class PortTakenError extends Error {}

function findFile(candidates: readonly string[]): string | undefined {
  return candidates.find((f) => existsSync(f));
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? "/usr/bin:/bin").split(":").some((d) => {
    try {
      return statSync(path.join(d, cmd)).isFile();
    } catch {
      return false;
    }
  });
}

/** Runs a program (no shell), rejecting with its stderr when it fails. */
function run(file: string, args: string[], env?: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env: env ?? process.env, timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`virtual card: ${file} ${args.join(" ")} failed: ${(stderr || err.message).trim()}`));
      else resolve({ stdout, stderr });
    });
  });
}

async function pcscdSupports(pcscd: string, flag: string): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(pcscd, ["--help"], { timeout: 5000 }, (_err, stdout, stderr) => resolve(`${stdout}${stderr}`.includes(flag)));
  });
}

/**
 * A TCP port P with P+1 also free: vpcd listens on both (one per virtual slot), on
 * all interfaces. The ports are released before pcscd binds them; a collision in
 * that gap shows as a token that never appears, with pcscd's log in the error.
 */
async function freePortPair(): Promise<number> {
  const listen = (port: number) => new Promise<net.Server | undefined>((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(undefined));
    s.listen({ port, host: "0.0.0.0", exclusive: true }, () => resolve(s));
  });
  const close = (s: net.Server) => new Promise<void>((r) => s.close(() => r()));
  for (let i = 0; i < 50; i++) {
    const a = await listen(0);
    if (!a) continue;
    const port = (a.address() as net.AddressInfo).port;
    const b = port < 65535 ? await listen(port + 1) : undefined;
    await close(a);
    if (b) {
      await close(b);
      return port;
    }
  }
  throw new Error("virtual card: no free pair of TCP ports for vpcd");
}

/** Token labels in `pkcs11-tool -L` output. */
function tokenLabels(listing: string): string[] {
  return [...listing.matchAll(/token label\s*:\s*(.*)$/gm)].map((m) => m[1].trim());
}

async function listTokens(card: { modulePath: string; env: { PCSCLITE_CSOCK_NAME: string } }): Promise<string[]> {
  try {
    const { stdout } = await run("pkcs11-tool", ["--module", card.modulePath, "--list-slots"], { ...process.env, ...card.env }, 10_000);
    return tokenLabels(stdout);
  } catch {
    return []; // no pcscd yet
  }
}

/** Polls OpenSC (in a child process, so this process's PKCS#11 state is untouched). */
async function waitForToken(card: RunningCard, present: boolean, timeoutMs: number, check: () => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    check();
    const seen = (await listTokens(card)).includes(card.token.label);
    if (seen === present) return;
    if (Date.now() > deadline) {
      throw new Error(`virtual card: OpenSC ${present ? "does not see" : "still sees"} token "${card.token.label}" after ${timeoutMs} ms; ` +
        `logs: ${path.join(card.dir, "pcscd.log")}, ${path.join(card.dir, "bridge.log")}\n${tail(path.join(card.dir, "pcscd.log"))}\n${tail(path.join(card.dir, "bridge.log"))}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** SIGTERM, wait up to 5 s, then SIGKILL; resolves once the process is gone. */
function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

function readPinCounterFile(file: string): PinCounter {
  const state = JSON.parse(readFileSync(file, "utf8")) as PinCounter;
  if (!Number.isInteger(state.maxTries) || !Number.isInteger(state.triesLeft)) throw new Error(`virtual card: bad PIN state file ${file}`);
  return { maxTries: state.maxTries, triesLeft: state.triesLeft };
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

// ---------------------------------------------------------------------------------------------
// Processes started by an earlier `start` (CLI): stopped by PID, after checking that the PID
// still runs our program (PIDs are reused).

function isOurProcess(pid: number | undefined, program: string): pid is number {
  if (!pid) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    if (/^\d+ \(.*\) Z/.test(stat)) return false; // a zombie is already dead
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return cmdline.some((a) => a === program || path.basename(a) === path.basename(program));
  } catch {
    return false;
  }
}

async function terminatePid(pid: number | undefined, program: string): Promise<void> {
  if (!isOurProcess(pid, program)) return;
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 5000;
  while (isOurProcess(pid, program)) {
    if (Date.now() > deadline) {
      process.kill(pid, "SIGKILL");
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function loadState(dir: string): SavedState {
  const file = path.join(path.resolve(dir), STATE_FILE);
  if (!existsSync(file)) throw new Error(`virtual card: no card in ${dir} (${file} missing); start one first`);
  return JSON.parse(readFileSync(file, "utf8")) as SavedState;
}

function saveStateFile(dir: string, state: SavedState): void {
  writeFileSync(path.join(path.resolve(dir), STATE_FILE), JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
}

/** Stops a card started (detached) by another process, by the PIDs in `<dir>/virtual-card.json`. */
export async function stopVirtualCardIn(dir: string): Promise<void> {
  const state = loadState(dir);
  await terminatePid(state.pids.bridge, state.tools.bridge);
  await terminatePid(state.pids.pcscd, "pcscd");
  await fsp.rm(state.socketPath, { force: true });
  saveStateFile(dir, { ...state, pids: {} });
}

/** Pulls out (`present` false) or re-inserts the card of a detached virtual card in `dir`. */
export async function setCardPresentIn(dir: string, present: boolean, options: { resetPinCounter?: boolean; timeoutMs?: number } = {}): Promise<void> {
  const state = loadState(dir);
  const abs = path.resolve(dir);
  const card = { modulePath: state.modulePath, env: { PCSCLITE_CSOCK_NAME: state.socketPath } };
  const wait = async (want: boolean) => {
    const deadline = Date.now() + (options.timeoutMs ?? 15_000);
    while ((await listTokens(card)).includes(state.label) !== want) {
      if (Date.now() > deadline) throw new Error(`virtual card: token "${state.label}" did not ${want ? "appear" : "disappear"}; see ${abs}/bridge.log`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  if (!present) {
    await terminatePid(state.pids.bridge, state.tools.bridge);
    saveStateFile(dir, { ...state, pids: { ...state.pids, bridge: undefined } });
    return wait(false);
  }
  if (isOurProcess(state.pids.bridge, state.tools.bridge)) return;
  const args = ["--nssdb", path.join(abs, "nssdb"), "--nickname", NICKNAME, "--pin-state", path.join(abs, "pin-state.json"),
    "--port", String(state.port), "--max-tries", String(state.maxTries)];
  if (options.resetPinCounter) args.push("--reset-pin-counter");
  if (state.verbose) args.push("--verbose");
  const fd = openSync(path.join(abs, "bridge.log"), "a", 0o600);
  const child = spawn(state.tools.bridge, args, { stdio: ["ignore", fd, fd], detached: true });
  closeSync(fd);
  child.unref();
  saveStateFile(dir, { ...state, pids: { ...state.pids, bridge: child.pid } });
  return wait(true);
}

// ---------------------------------------------------------------------------------------------
// CLI

const USAGE = `usage: virtual-card.js <command> --dir DIR [options]
  start  [--pin P] [--max-tries N] [--label L] [--verbose]   provision and start; prints JSON (with the PIN)
  stop                                                       stop pcscd and the bridge (by PID)
  remove                                                     pull the card out (stop the bridge)
  insert [--reset-pin-counter]                               put the card back
  status                                                     print the state and PIN counter as JSON
  run    [start options] -- COMMAND [ARGS...]                start, run COMMAND with the card's environment
                                                             (PCSCLITE_CSOCK_NAME, RA_CARD_MODULE, RA_CARD_KEY_URI,
                                                             RA_CARD_CERT_URI, RA_CARD_PIN, RA_CARD_CA), then stop`;

function parseCliArgs(argv: string[]): { command: string; opts: Record<string, string | boolean>; rest: string[] } {
  const [command = "", ...args] = argv;
  const opts: Record<string, string | boolean> = {};
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      rest.push(...args.slice(i + 1));
      break;
    }
    if (["--verbose", "--reset-pin-counter"].includes(a)) opts[a.slice(2)] = true;
    else if (a.startsWith("--") && i + 1 < args.length) opts[a.slice(2)] = args[++i];
    else throw new Error(`unexpected argument ${a}\n${USAGE}`);
  }
  return { command, opts, rest };
}

function describe(card: VirtualCard): Record<string, unknown> {
  return {
    dir: card.dir, modulePath: card.modulePath, token: card.token, keyUri: card.key.keyUri,
    certificateUri: card.key.certificateUri, certificateFile: path.join(card.dir, "card-cert.pem"),
    caFile: path.join(card.dir, "ca.pem"), env: card.env, pids: card.pids, pinCounter: card.readPinCounter(),
  };
}

async function main(argv: string[]): Promise<number> {
  const { command, opts, rest } = parseCliArgs(argv);
  const dir = typeof opts.dir === "string" ? opts.dir : undefined;
  if (!dir && command !== "run") throw new Error(`--dir is required\n${USAGE}`);
  const startOptions = (d: string, detached: boolean): VirtualCardOptions => ({
    dir: d, detached, verbose: opts.verbose === true,
    pin: typeof opts.pin === "string" ? opts.pin : undefined,
    maxTries: typeof opts["max-tries"] === "string" ? Number(opts["max-tries"]) : undefined,
    label: typeof opts.label === "string" ? opts.label : undefined,
  });
  switch (command) {
    case "start": {
      const card = await startVirtualCard(startOptions(dir!, true));
      process.stdout.write(JSON.stringify(describe(card), null, 2) + "\n");
      return 0;
    }
    case "stop":
      await stopVirtualCardIn(dir!);
      return 0;
    case "remove":
      await setCardPresentIn(dir!, false);
      return 0;
    case "insert":
      await setCardPresentIn(dir!, true, { resetPinCounter: opts["reset-pin-counter"] === true });
      return 0;
    case "status": {
      const state = loadState(dir!);
      const running = { pcscd: isOurProcess(state.pids.pcscd, "pcscd"), bridge: isOurProcess(state.pids.bridge, state.tools.bridge) };
      const counter = readPinCounterFile(path.join(path.resolve(dir!), "pin-state.json"));
      process.stdout.write(JSON.stringify({ ...state, running, pinCounter: counter }, null, 2) + "\n");
      return 0;
    }
    case "run": {
      if (rest.length === 0) throw new Error(`run needs a command after --\n${USAGE}`);
      const cardDir = dir ?? (await fsp.mkdtemp(path.join(os.tmpdir(), "ra-card-")));
      const card = await startVirtualCard(startOptions(cardDir, false));
      try {
        const child = spawn(rest[0], rest.slice(1), {
          stdio: "inherit",
          env: {
            ...process.env, ...card.env, RA_CARD_DIR: card.dir, RA_CARD_MODULE: card.modulePath, RA_CARD_KEY_URI: card.key.keyUri,
            RA_CARD_CERT_URI: card.key.certificateUri, RA_CARD_PIN: card.token.pin, RA_CARD_CA: path.join(card.dir, "ca.pem"),
            RA_CARD_CERT: path.join(card.dir, "card-cert.pem"),
          },
        });
        const forward = (sig: NodeJS.Signals) => child.kill(sig);
        process.on("SIGINT", forward).on("SIGTERM", forward);
        const code = await new Promise<number>((resolve) => child.on("exit", (c, s) => resolve(c ?? (s ? 128 + (os.constants.signals[s] ?? 0) : 1))));
        process.removeListener("SIGINT", forward).removeListener("SIGTERM", forward);
        return code;
      } finally {
        await card.stop();
        if (!dir) await fsp.rm(cardDir, { recursive: true, force: true });
      }
    }
    default:
      process.stderr.write(`${USAGE}\n`);
      return 2;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => { process.exitCode = code; },
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
