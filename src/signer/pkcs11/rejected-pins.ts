/**
 * PINs that tokens rejected, remembered across processes, so that neither
 * `credential-process` (run by SDKs once per AWS call) nor a restarted agent ever
 * spends another try with a PIN the token already refused.
 *
 * Only rejected PINs are recorded, as HMAC-SHA256 under a random per-user key,
 * per token (label, serial, module path). A wrong PIN reveals nothing about the
 * right one, which is what makes storing a keyed hash of it acceptable; the key
 * lives in a separate file so that the record file alone (in a backup or a
 * support bundle) cannot be brute-forced.
 *
 * Files, in `${RA_AGENT_STATE_DIR:-${XDG_STATE_HOME:-~/.local/state}/ra-agent}`
 * (directory 0700): `rejected-pins.json` and `rejected-pins.key` (0600, written
 * atomically: temp file + rename, under a lock file). A file with loose modes or
 * another owner is ignored with a warning (and replaced on the next write); a
 * directory writable by others or owned by someone else is not used at all (the
 * in-process registry in login.ts still applies).
 *
 * Nothing here throws: a broken store must not block a login with a good PIN.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { chmodSync, closeSync, fsyncSync, linkSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { logger } from "../../log/logger";

/** Environment variable naming ra-agent's state directory. */
export const STATE_DIR_ENV = "RA_AGENT_STATE_DIR";
/** File holding the records. */
export const REJECTED_PINS_FILE = "rejected-pins.json";
/** File holding the HMAC key. */
export const REJECTED_PINS_KEY_FILE = "rejected-pins.key";

/** Records kept per token and tokens kept per file (oldest dropped first). */
const MAX_PER_TOKEN = 20;
const MAX_TOKENS = 50;
/** A lock file older than this was left by a crashed process. */
const STALE_LOCK_MS = 10_000;
const LOCK_WAIT_MS = 2_000;

/** The token a record belongs to. */
export interface RejectedPinToken {
  label: string;
  serial: string;
  /** The module file (its real path). */
  module: string;
}

/** A PIN the token rejected before, as found in the store. */
export interface RejectedPinRecord {
  /** When the token rejected it. */
  at: Date;
  /** The file that holds the record (named in the error: deleting it forgets every record). */
  file: string;
}

interface StoredToken extends RejectedPinToken {
  rejected: Array<{ mac: string; at: string }>;
}

interface StoredFile {
  version: 1;
  tokens: StoredToken[];
}

/**
 * ra-agent's state directory: `RA_AGENT_STATE_DIR`, else `$XDG_STATE_HOME/ra-agent`,
 * else `~/.local/state/ra-agent` (Windows: `%LOCALAPPDATA%\ra-agent\state`).
 */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env[STATE_DIR_ENV];
  if (explicit) return resolve(explicit);
  if (process.platform === "win32") return join(env.LOCALAPPDATA || join(homedir(), "AppData", "Local"), "ra-agent", "state");
  // The XDG spec says to ignore a relative XDG_STATE_HOME.
  const xdg = env.XDG_STATE_HOME;
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), ".local", "state"), "ra-agent");
}

/** Path of the record file in the current state directory. */
export function rejectedPinsPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(stateDir(env), REJECTED_PINS_FILE);
}

const warned = new Set<string>();

function warnOnce(message: string, meta: Record<string, unknown> = {}): void {
  if (warned.has(message)) return;
  warned.add(message);
  logger.warn(message, meta);
}

const currentUid = (): number | undefined => (process.platform !== "win32" && typeof process.getuid === "function" ? process.getuid() : undefined);

function mode(m: number): string {
  return (m & 0o777).toString(8).padStart(4, "0");
}

/**
 * True when `dir` can hold the records: a directory of ours, not writable by group
 * or others. Created (0700) when missing and `create` is set.
 */
function usableDir(dir: string, create: boolean): boolean {
  let st;
  try {
    st = statSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
      warnOnce(`cannot use the state directory ${dir} (${(e as Error).message}); rejected PINs are remembered only in this process`);
      return false;
    }
    if (!create) return false;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      if (process.platform !== "win32") chmodSync(dir, 0o700); // mkdir's mode is masked by the umask
      return true;
    } catch (e2) {
      warnOnce(`cannot create the state directory ${dir} (${(e2 as Error).message}); rejected PINs are remembered only in this process`, { hint: `set ${STATE_DIR_ENV} to a writable directory` });
      return false;
    }
  }
  const uid = currentUid();
  if (!st.isDirectory()) {
    warnOnce(`the state directory ${dir} is not a directory; rejected PINs are remembered only in this process`);
    return false;
  }
  if (uid !== undefined && (st.uid !== uid || (st.mode & 0o022) !== 0)) {
    const why = st.uid !== uid ? `it is owned by uid ${st.uid}, not by the user running ra-agent (uid ${uid})` : `it is writable by group or others (mode ${mode(st.mode)})`;
    warnOnce(`not using the state directory ${dir}: ${why}; rejected PINs are remembered only in this process`, { hint: st.uid !== uid ? `set ${STATE_DIR_ENV} to a directory of your own` : `run: chmod 700 ${dir}` });
    return false;
  }
  return true;
}

/** `ok` for a regular file of ours that only we can read and write. */
function fileState(path: string): "ok" | "missing" | "unsafe" {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "missing";
    warnOnce(`ignoring ${path}: ${(e as Error).message}`);
    return "unsafe";
  }
  const uid = currentUid();
  let why: string | undefined;
  if (!st.isFile()) why = "it is not a regular file";
  else if (uid !== undefined && st.uid !== uid) why = `it is owned by uid ${st.uid}, not by the user running ra-agent (uid ${uid})`;
  else if (uid !== undefined && (st.mode & 0o077) !== 0) why = `it is readable or writable by group or others (mode ${mode(st.mode)})`;
  if (why) {
    warnOnce(`ignoring ${path}: ${why}; ra-agent replaces it with a private file (0600) when it next records a rejected PIN`, { hint: `delete it, or run: chmod 600 ${path}` });
    return "unsafe";
  }
  return "ok";
}

/** Writes `data` to `path` atomically (temp file in the same directory, fsync, rename). */
function writeAtomically(path: string, data: Buffer | string): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data, "utf8") : data);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    throw e;
  }
}

/** The HMAC key; created when missing (or replaced when unsafe) if `create` is set. */
function readKey(dir: string, create: boolean): Buffer | undefined {
  const path = join(dir, REJECTED_PINS_KEY_FILE);
  const state = fileState(path);
  if (state === "ok") {
    try {
      const key = readFileSync(path);
      if (key.length === 32) return key;
      warnOnce(`ignoring ${path}: it does not hold a 32-byte key`);
    } catch (e) {
      warnOnce(`cannot read ${path}: ${(e as Error).message}`);
    }
  }
  if (!create) return undefined;
  const key = randomBytes(32);
  if (state === "missing") {
    // link() fails when another process created the key meanwhile: use theirs.
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    writeAtomically(tmp, key);
    try {
      linkSync(tmp, path);
      return key;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      return readKey(dir, false);
    } finally {
      unlinkSync(tmp);
    }
  }
  writeAtomically(path, key);
  return key;
}

function emptyStore(): StoredFile {
  return { version: 1, tokens: [] };
}

function readStore(file: string): StoredFile {
  if (fileState(file) !== "ok") return emptyStore();
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as StoredFile;
    if (parsed?.version === 1 && Array.isArray(parsed.tokens)) return parsed;
    warnOnce(`ignoring ${file}: not a rejected-PIN record file of this ra-agent version`);
  } catch (e) {
    warnOnce(`ignoring ${file}: ${(e as Error).message}`);
  }
  return emptyStore();
}

function sameToken(a: RejectedPinToken, b: RejectedPinToken): boolean {
  return a.label === b.label && a.serial === b.serial && a.module === b.module;
}

function macOf(key: Buffer, token: RejectedPinToken, pin: string): string {
  // JSON keeps the fields apart unambiguously; the prefix versions the scheme.
  return createHmac("sha256", key).update(JSON.stringify(["ra-agent rejected PIN v1", token.module, token.serial, token.label, pin])).digest("hex");
}

function sameMac(a: string, b: string): boolean {
  const x = Buffer.from(a, "hex");
  const y = Buffer.from(b, "hex");
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Runs a read-modify-write of the record file under `rejected-pins.json.lock`. */
function withLock<T>(file: string, fn: () => T): T {
  const lock = `${file}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      closeSync(openSync(lock, "wx", 0o600));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    try {
      if (Date.now() - statSync(lock).mtimeMs > STALE_LOCK_MS) unlinkSync(lock);
    } catch {
      // released meanwhile
    }
    if (Date.now() > deadline) {
      // Better a rare lost update than no record at all.
      logger.debug("the rejected-PIN lock is busy; writing without it", { file });
      return fn();
    }
    sleepSync(10);
  }
  try {
    return fn();
  } finally {
    try {
      unlinkSync(lock);
    } catch {
      // removed as stale by another process
    }
  }
}

/**
 * The record of `pin` for `token`, when the token rejected it before (in any process
 * of this user).
 */
export function findRejectedPin(token: RejectedPinToken, pin: string): RejectedPinRecord | undefined {
  try {
    const dir = stateDir();
    if (!usableDir(dir, false)) return undefined;
    const file = join(dir, REJECTED_PINS_FILE);
    const stored = readStore(file).tokens.find((t) => sameToken(t, token));
    if (!stored?.rejected?.length) return undefined;
    const key = readKey(dir, false);
    if (!key) return undefined;
    const mac = macOf(key, token, pin);
    const hit = stored.rejected.find((r) => typeof r.mac === "string" && sameMac(r.mac, mac));
    return hit ? { at: new Date(hit.at), file } : undefined;
  } catch (e) {
    warnOnce(`cannot read the rejected-PIN records: ${(e as Error).message}`);
    return undefined;
  }
}

/** Records that `token` rejected `pin`. */
export function recordRejectedPin(token: RejectedPinToken, pin: string, at = new Date()): void {
  try {
    const dir = stateDir();
    if (!usableDir(dir, true)) return;
    const file = join(dir, REJECTED_PINS_FILE);
    withLock(file, () => {
      const hadKey = fileState(join(dir, REJECTED_PINS_KEY_FILE)) === "ok";
      const key = readKey(dir, true)!;
      // A new key makes the old records meaningless: start afresh.
      const data = hadKey ? readStore(file) : emptyStore();
      let entry = data.tokens.find((t) => sameToken(t, token));
      if (!entry) {
        entry = { label: token.label, serial: token.serial, module: token.module, rejected: [] };
        data.tokens.push(entry);
      }
      const mac = macOf(key, token, pin);
      entry.rejected = entry.rejected.filter((r) => r.mac !== mac);
      entry.rejected.push({ mac, at: at.toISOString() });
      entry.rejected = entry.rejected.slice(-MAX_PER_TOKEN);
      const latest = (t: StoredToken): string => t.rejected.map((r) => r.at).sort().pop() ?? "";
      data.tokens = data.tokens.sort((a, b) => latest(a).localeCompare(latest(b))).slice(-MAX_TOKENS);
      writeAtomically(file, JSON.stringify(data, null, 2) + "\n");
    });
    logger.debug("recorded a rejected PIN", { file, tokenLabel: token.label });
  } catch (e) {
    warnOnce(`cannot record the rejected PIN: ${(e as Error).message}; other ra-agent processes may try it once more`);
  }
}

/** Forgets every record of `token` (after a successful login). Writes only when there is something to forget. */
export function clearRejectedPins(token: RejectedPinToken): void {
  try {
    const dir = stateDir();
    if (!usableDir(dir, false)) return;
    const file = join(dir, REJECTED_PINS_FILE);
    if (!readStore(file).tokens.some((t) => sameToken(t, token))) return;
    withLock(file, () => {
      const data = readStore(file);
      data.tokens = data.tokens.filter((t) => !sameToken(t, token));
      writeAtomically(file, JSON.stringify(data, null, 2) + "\n");
    });
    logger.debug("cleared rejected-PIN records after a good login", { file, tokenLabel: token.label });
  } catch (e) {
    warnOnce(`cannot clear the rejected-PIN records: ${(e as Error).message}`);
  }
}
