/**
 * A software TPM (swtpm) for tests and the demo: one process per state
 * directory, reachable over a unix socket or loopback TCP, with no D-Bus and no
 * resource manager (platform notes). swtpm daemonises itself (`-d`) and writes
 * its PID to a file; {@link Swtpm.stop} kills exactly that PID and waits for it.
 *
 * The TCTI string stays the same across stop/start (same socket path or ports),
 * because tpm2-pkcs11 reads its TCTI once, at C_Initialize: a process that
 * already loaded the module can only reconnect to the same address.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** How clients reach the TPM. */
export type SwtpmTransport = "unix" | "tcp";

/** Options of {@link Swtpm}. */
export interface SwtpmOptions {
  /** Directory for the TPM state, PID file, sockets and log (created if missing). */
  dir: string;
  /**
   * `unix` (default when the socket path fits in sockaddr_un): no port races
   * between parallel tests. `tcp`: two free loopback ports chosen at first start.
   */
  transport?: SwtpmTransport;
  /** The swtpm executable; `swtpm` from PATH by default. */
  swtpmPath?: string;
  /** swtpm log level (0 = off, 20 = every command); logs go to `<dir>/swtpm.log`. */
  logLevel?: number;
  /** TCP ports of an instance started before (to restart it from another process); ctrl must be server + 1. */
  ports?: { server: number; ctrl: number };
}

/** sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), including the NUL. */
const MAX_UNIX_SOCKET_PATH = 100;

/** swtpm processes this process started and has not stopped yet: killed on exit so tests leak nothing. */
const running = new Set<number>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const pid of running) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
  });
}

/** True while `pid` runs (an exited but unreaped process, a zombie, counts as gone). */
export function isProcessRunning(pid: number): boolean {
  return isAlive(pid);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
  // A daemon that exited but is not reaped yet (its parent is init, which reaps lazily) is a zombie: gone for us.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true;
  }
}

/** True when `pid` is a swtpm process (guards against a recycled PID in a stale PID file). */
function isSwtpm(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0].endsWith("swtpm");
  } catch {
    // No /proc (macOS): trust the PID file.
    return !existsSync("/proc/self") && isAlive(pid);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function listenOn(port: number): Promise<import("node:net").Server | undefined> {
  return new Promise((res) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => res(undefined));
    srv.listen(port, "127.0.0.1", () => res(srv));
  });
}

/**
 * Two consecutive free loopback ports P and P+1: the swtpm TCTI finds the
 * control channel at the command port + 1. The kernel picks P; another process
 * may take the ports before swtpm binds them, so starts retry.
 */
async function freePortPair(): Promise<{ server: number; ctrl: number }> {
  for (let i = 0; i < 50; i++) {
    const first = await listenOn(0);
    if (!first) continue;
    const port = (first.address() as { port: number }).port;
    const second = port < 65535 ? await listenOn(port + 1) : undefined;
    await new Promise((r) => first.close(r));
    if (second) {
      await new Promise((r) => second.close(r));
      return { server: port, ctrl: port + 1 };
    }
  }
  throw new Error("swtpm: found no two consecutive free loopback ports");
}

/** Resolves when a connection to the server endpoint succeeds. */
function probe(endpoint: { path: string } | { port: number; host: string }): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection(endpoint as never);
    s.once("connect", () => {
      s.destroy();
      res(true);
    });
    s.once("error", () => res(false));
  });
}

/** One swtpm instance bound to a state directory. */
export class Swtpm {
  /** Absolute directory holding `state/`, `swtpm.pid`, the sockets and `swtpm.log`. */
  readonly dir: string;
  readonly stateDir: string;
  readonly pidFile: string;
  readonly logFile: string;
  readonly transport: SwtpmTransport;
  private readonly swtpmPath: string;
  private readonly logLevel: number;
  private ports?: { server: number; ctrl: number };
  private pidValue?: number;

  constructor(opts: SwtpmOptions) {
    this.dir = resolve(opts.dir);
    this.stateDir = join(this.dir, "state");
    this.pidFile = join(this.dir, "swtpm.pid");
    this.logFile = join(this.dir, "swtpm.log");
    this.swtpmPath = opts.swtpmPath ?? "swtpm";
    this.logLevel = opts.logLevel ?? 0;
    const socketFits = join(this.dir, "swtpm.sock.ctrl").length <= MAX_UNIX_SOCKET_PATH;
    if (opts.transport === "unix" && !socketFits) {
      throw new Error(`swtpm: the socket path under ${this.dir} is too long for a unix socket; use a shorter directory or transport "tcp"`);
    }
    this.transport = opts.transport ?? (socketFits ? "unix" : "tcp");
    this.ports = opts.ports;
  }

  /** The TCP ports (tcp transport, after the first start). */
  get tcpPorts(): { server: number; ctrl: number } | undefined {
    return this.ports;
  }

  private readPidFile(): number | undefined {
    try {
      const pid = Number.parseInt(readFileSync(this.pidFile, "utf8").trim(), 10);
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Path of the command socket (unix transport). */
  get socketPath(): string {
    return join(this.dir, "swtpm.sock");
  }

  /**
   * The TCTI configuration for tpm2-tss (`TPM2TOOLS_TCTI`, `TPM2_PKCS11_TCTI`).
   * @throws Error for TCP before the first start (ports are chosen then)
   */
  get tcti(): string {
    if (this.transport === "unix") return `swtpm:path=${this.socketPath}`;
    if (!this.ports) throw new Error("swtpm: TCP ports are chosen at the first start()");
    return `swtpm:host=127.0.0.1,port=${this.ports.server}`;
  }

  /** PID of the running swtpm, if started by this object. */
  get pid(): number | undefined {
    return this.pidValue;
  }

  /** True while the swtpm process is alive. */
  get running(): boolean {
    return this.pidValue !== undefined && isAlive(this.pidValue);
  }

  private endpointArgs(): string[] {
    if (this.transport === "unix") {
      // swtpm's TCTI finds the control channel at "<server path>.ctrl".
      return ["--server", `type=unixio,path=${this.socketPath}`, "--ctrl", `type=unixio,path=${this.socketPath}.ctrl`];
    }
    const p = this.ports!;
    return ["--server", `type=tcp,port=${p.server},bindaddr=127.0.0.1`, "--ctrl", `type=tcp,port=${p.ctrl},bindaddr=127.0.0.1`];
  }

  /**
   * Starts swtpm on the state directory (a fresh TPM when it is empty, the same
   * TPM after {@link stop}), and resolves once it accepts connections.
   * @throws Error when swtpm is missing or does not start (its log is quoted)
   */
  async start(): Promise<void> {
    if (this.running) return;
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    // Another process (e.g. `provision.js start`) may have started this TPM: use it as it is.
    // Its socket files must not be removed, or clients could no longer connect.
    const existing = this.readPidFile();
    if (existing !== undefined && isAlive(existing) && isSwtpm(existing)) {
      this.pidValue = existing;
      return;
    }
    rmSync(this.pidFile, { force: true });
    rmSync(this.logFile, { force: true });
    const firstTcpStart = this.transport === "tcp" && !this.ports;
    for (let attempt = 0; ; attempt++) {
      if (this.transport === "unix") {
        // A socket file left by a killed swtpm makes bind() fail.
        rmSync(this.socketPath, { force: true });
        rmSync(this.socketPath + ".ctrl", { force: true });
      } else if (firstTcpStart && (attempt > 0 || !this.ports)) {
        this.ports = await freePortPair();
      }
      const args = [
        "socket", "--tpm2",
        "--tpmstate", `dir=${this.stateDir}`,
        ...this.endpointArgs(),
        // The TPM is started (TPM2_Startup(CLEAR)) by swtpm itself: no tpm2_startup needed, as after a reboot.
        "--flags", "not-need-init,startup-clear",
        "--pid", `file=${this.pidFile}`,
        "--log", `file=${this.logFile},level=${this.logLevel}`,
        "-d",
      ];
      try {
        await execFileAsync(this.swtpmPath, args, { timeout: 10_000 });
        break;
      } catch (e) {
        const err = e as NodeJS.ErrnoException & { stderr?: string };
        if (err.code === "ENOENT") {
          throw new Error(`swtpm is not installed (${this.swtpmPath} not found): install swtpm and swtpm-tools (Debian/Ubuntu: apt-get install swtpm swtpm-tools)`);
        }
        const log = existsSync(this.logFile) ? readFileSync(this.logFile, "utf8").trim().split("\n").slice(-10).join("\n") : "";
        const detail = `${err.stderr ?? ""}\n${log}`.trim();
        if (firstTcpStart && attempt < 4 && /in use|bind/i.test(detail)) continue;
        throw new Error(`swtpm did not start: ${detail || err.message}`);
      }
    }
    const pid = Number.parseInt(readFileSync(this.pidFile, "utf8").trim(), 10);
    if (!Number.isInteger(pid) || pid <= 0) throw new Error(`swtpm wrote no PID to ${this.pidFile}`);
    this.pidValue = pid;
    running.add(pid);
    installExitHook();
    // swtpm binds before daemonising, so this normally succeeds at once.
    const endpoint = this.transport === "unix" ? { path: this.socketPath } : { port: this.ports!.server, host: "127.0.0.1" };
    for (let i = 0; i < 100; i++) {
      if (await probe(endpoint)) return;
      if (!isAlive(pid)) break;
      await sleep(20);
    }
    throw new Error(`swtpm (pid ${pid}) does not accept connections; see ${this.logFile}`);
  }

  /**
   * Stops swtpm and resolves when the process is gone: `tpm2_shutdown` first
   * (unless `orderly` is false), then SIGTERM to its PID, SIGKILL after 5 s.
   * The state directory is kept, so {@link start} brings the same TPM back.
   *
   * @remarks An orderly TPM2_Shutdown matters when dictionary-attack protection
   * is on: after a power loss without it, the TPM may count one more
   * authorisation failure at the next startup, which would make lockout tests flaky.
   */
  async stop(opts: { orderly?: boolean } = {}): Promise<void> {
    const pid = this.pidValue ?? this.readPidFile();
    if (pid === undefined) return;
    if (isAlive(pid) && isSwtpm(pid)) {
      if (opts.orderly !== false) {
        try {
          await execFileAsync("tpm2_shutdown", ["-c"], { env: { ...process.env, TPM2TOOLS_TCTI: this.tcti, TSS2_LOG: "all+NONE" }, timeout: 5000 });
        } catch {
          // best effort: tpm2-tools missing or the TPM busy; SIGTERM follows anyway
        }
      }
      process.kill(pid, "SIGTERM");
      const deadline = Date.now() + 5000;
      while (isAlive(pid) && Date.now() < deadline) await sleep(10);
      if (isAlive(pid)) {
        process.kill(pid, "SIGKILL");
        while (isAlive(pid)) await sleep(10);
      }
    }
    running.delete(pid);
    this.pidValue = undefined;
    rmSync(this.pidFile, { force: true });
  }

  /**
   * Lets swtpm outlive this process (by default every swtpm started here is
   * stopped when the process exits, so that tests leak nothing).
   */
  detach(): void {
    if (this.pidValue !== undefined) running.delete(this.pidValue);
  }

  /**
   * Kills swtpm with SIGKILL, as a crash would (no chance to save anything). Resolves when it is gone.
   */
  async kill(): Promise<void> {
    const pid = this.pidValue;
    if (pid === undefined) return;
    if (isAlive(pid) && isSwtpm(pid)) {
      process.kill(pid, "SIGKILL");
      while (isAlive(pid)) await sleep(10);
    }
    running.delete(pid);
    this.pidValue = undefined;
    rmSync(this.pidFile, { force: true });
  }
}

/** True when the swtpm executable can be run. */
export async function swtpmAvailable(swtpmPath = "swtpm"): Promise<boolean> {
  try {
    await execFileAsync(swtpmPath, ["--version"], { timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}
