/**
 * Writing one profile into the AWS shared credentials file, as
 * `aws_signing_helper update` does, but safely:
 * - only the three credential keys of that profile change; every other profile,
 *   key, comment, blank line and the line endings stay as they were;
 * - the new file is written to a temp file in the same directory, fsynced and
 *   renamed over the old one, so a reader (or a crash) sees the old or the new
 *   file, never a partial one; mode 0600;
 * - writers from ra-agent serialise on an advisory lock file (`<file>.lock`,
 *   created exclusively with its owner already in it, by hard link; a lock whose
 *   process is gone, or older than 30 s, is stale).
 */
import { randomBytes } from "node:crypto";
import { chownSync, closeSync, fsyncSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, writeSync, type Stats } from "node:fs";
import { homedir, hostname } from "node:os";
import { basename, dirname, join } from "node:path";
import { RaError } from "../errors";

/** The three values written. */
export interface FileCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
}

/** `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`. */
export function credentialsFilePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.AWS_SHARED_CREDENTIALS_FILE || join(homedir(), ".aws", "credentials");
}

const SECTION = /^\s*\[\s*([^\]]*?)\s*\]\s*(?:[#;].*)?$/;
const KEY_LINE = /^\s*([A-Za-z0-9_.-]+)\s*[=:]/;
const CONTINUATION = /^[ \t]+\S/;
const KEYS = ["aws_access_key_id", "aws_secret_access_key", "aws_session_token"] as const;

/**
 * Returns `text` with `profile`'s credential keys set. Pure; the line ending of
 * the file (LF or CRLF) is kept.
 * @throws RaError `INVALID_PROFILE_NAME` for a name that cannot be a section name;
 *   `INVALID_CREDENTIALS` for values with line breaks.
 */
export function setProfileCredentials(text: string, profile: string, c: FileCredentials): string {
  if (!profile || /[\]\r\n]/.test(profile) || profile.trim() !== profile) {
    throw new RaError("usage", "INVALID_PROFILE_NAME", `"${profile}" cannot be a profile name in the credentials file`, { hint: "use letters, digits, - and _" });
  }
  const values: Record<(typeof KEYS)[number], string> = {
    aws_access_key_id: c.accessKeyId,
    aws_secret_access_key: c.secretAccessKey,
    aws_session_token: c.sessionToken,
  };
  for (const v of Object.values(values)) {
    if (!v || /[\r\n]/.test(v)) throw new RaError("internal", "INVALID_CREDENTIALS", "refusing to write empty credentials or credentials with line breaks");
  }
  const eol = text.includes("\r\n") ? "\r\n" : "\n";
  const lines = text.length ? text.split(/\r?\n/) : [];
  if (lines.length && lines[lines.length - 1] === "") lines.pop(); // the final newline

  const out: string[] = [];
  let i = 0;
  let found = false;
  while (i < lines.length) {
    const m = SECTION.exec(lines[i]);
    if (!found && m && m[1] === profile) {
      found = true;
      out.push(lines[i++]);
      const written = new Set<string>();
      let lastKeyAt = out.length; // insert missing keys after the header by default
      while (i < lines.length && !SECTION.test(lines[i])) {
        const k = KEY_LINE.exec(lines[i]);
        const key = k?.[1].toLowerCase() as (typeof KEYS)[number] | undefined;
        if (key && (KEYS as readonly string[]).includes(key)) {
          i++;
          while (i < lines.length && CONTINUATION.test(lines[i])) i++; // drop a multi-line old value
          if (written.has(key)) continue; // a duplicate key: keep one
          written.add(key);
          out.push(`${key} = ${values[key]}`);
          lastKeyAt = out.length;
          continue;
        }
        out.push(lines[i++]);
        if (k) lastKeyAt = out.length;
      }
      const missing = KEYS.filter((k) => !written.has(k)).map((k) => `${k} = ${values[k]}`);
      out.splice(lastKeyAt, 0, ...missing);
      continue;
    }
    out.push(lines[i++]);
  }
  if (!found) {
    if (out.length && out[out.length - 1].trim() !== "") out.push("");
    out.push(`[${profile}]`, ...KEYS.map((k) => `${k} = ${values[k]}`));
  }
  return out.join(eol) + eol;
}

/** Options of {@link withFileLock}. */
export interface LockOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  /** A lock older than this is stale whatever its owner (default 30 s; a write takes milliseconds). */
  staleMs?: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** True when the lock file's owner is gone or the lock is too old. */
function lockIsStale(content: string, st: Stats, staleMs: number): boolean {
  if (Date.now() - st.mtimeMs > staleMs) return true;
  const [pidText, host] = content.split("\n");
  const pid = Number(pidText);
  // A lock from another host (shared home over NFS): only its age tells.
  return host === hostname() && Number.isInteger(pid) && pid > 0 && !processAlive(pid);
}

/**
 * Runs `fn` while holding the advisory lock `lockPath`.
 * @throws RaError `CREDENTIALS_FILE_LOCKED` after the timeout.
 */
export async function withFileLock<T>(lockPath: string, fn: () => T | Promise<T>, options: LockOptions = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const staleMs = options.staleMs ?? 30_000;
  const me = `${process.pid}\n${hostname()}\n${randomBytes(8).toString("hex")}\n`;
  const deadline = Date.now() + timeoutMs;
  // The lock appears with its content in one step (written to a private file,
  // then hard-linked to the lock name, which fails if the lock exists): a writer
  // killed at any moment never leaves an empty lock that nobody could judge.
  const staging = `${lockPath}.${process.pid}.${randomBytes(4).toString("hex")}`;
  removeDeadLockStaging(dirname(lockPath), basename(lockPath));
  for (;;) {
    try {
      const fd = openSync(staging, "wx", 0o600);
      try {
        writeSync(fd, me);
      } finally {
        closeSync(fd);
      }
      try {
        linkSync(staging, lockPath);
        break;
      } finally {
        unlinkSync(staging);
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") {
        throw new RaError("usage", "CREDENTIALS_FILE_LOCK", `cannot create the lock file ${lockPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint: "check that the directory is writable", cause: e });
      }
    }
    try {
      const content = readFileSync(lockPath, "utf8");
      const st = statSync(lockPath);
      if (lockIsStale(content, st, staleMs)) {
        // Remove it only if it is still the lock we judged stale.
        if (readFileSync(lockPath, "utf8") === content) unlinkSync(lockPath);
        continue;
      }
    } catch {
      continue; // it vanished between the calls: try again
    }
    if (Date.now() >= deadline) {
      throw new RaError("usage", "CREDENTIALS_FILE_LOCKED", `${lockPath} is held by another writer`, { hint: `if no ra-agent update runs, remove ${lockPath}` });
    }
    await sleep(20 + Math.random() * 30);
  }
  try {
    return await fn();
  } finally {
    try {
      if (readFileSync(lockPath, "utf8") === me) unlinkSync(lockPath);
    } catch {
      // gone already
    }
  }
}

/** Removes temp files left by writers that were killed mid-write. */
function removeDeadTempFiles(dir: string, base: string): void {
  const prefix = `.${base}.ra-agent-`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    if (!n.startsWith(prefix) || !n.endsWith(".tmp")) continue;
    const pid = Number(n.slice(prefix.length).split("-")[0]);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !processAlive(pid)) {
      try {
        unlinkSync(join(dir, n));
      } catch {
        // someone else removed it
      }
    }
  }
}

/** Removes `<name>.<pid>.<hex>` lock staging files of writers that died between creating and linking them. */
function removeDeadLockStaging(dir: string, lockName: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const m = n.startsWith(lockName + ".") ? /^(\d+)\.[0-9a-f]{8}$/.exec(n.slice(lockName.length + 1)) : null;
    if (m && Number(m[1]) !== process.pid && !processAlive(Number(m[1]))) {
      try {
        unlinkSync(join(dir, n));
      } catch {
        // gone already
      }
    }
  }
}

/**
 * Writes `content` to `file` atomically with mode 0600: temp file in the same
 * directory, fsync, rename, fsync of the directory. A symbolic link at `file` is
 * followed (its target is replaced, the link stays). When root rewrites another
 * user's file, that user keeps ownership.
 */
export function writeFileAtomic(file: string, content: string): void {
  let target = file;
  let previous: Stats | undefined;
  try {
    target = realpathSync(file);
    previous = statSync(target);
  } catch {
    // a new file
  }
  const dir = dirname(target);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  removeDeadTempFiles(dir, basename(target));
  const tmp = join(dir, `.${basename(target)}.ra-agent-${process.pid}-${randomBytes(6).toString("hex")}.tmp`);
  const fd = openSync(tmp, "wx", 0o600);
  try {
    const data = Buffer.from(content, "utf8");
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // best effort
    }
    throw e;
  }
  closeSync(fd);
  if (previous && typeof process.getuid === "function" && process.getuid() === 0 && (previous.uid !== 0 || previous.gid !== 0)) {
    chownSync(tmp, previous.uid, previous.gid);
  }
  renameSync(tmp, target);
  try {
    const dfd = openSync(dir, "r");
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic.
  }
}

/**
 * Sets `profile`'s credentials in the shared credentials file, under the lock.
 * @throws RaError `CREDENTIALS_FILE_UNREADABLE`, `CREDENTIALS_FILE_WRITE`, `CREDENTIALS_FILE_LOCKED`.
 */
export async function writeProfileCredentials(file: string, profile: string, c: FileCredentials, lock: LockOptions = {}): Promise<void> {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  await withFileLock(`${file}.lock`, () => {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
        throw new RaError("usage", "CREDENTIALS_FILE_UNREADABLE", `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint: "check its permissions", cause: e });
      }
    }
    const next = setProfileCredentials(text, profile, c);
    try {
      writeFileAtomic(file, next);
    } catch (e) {
      throw new RaError("usage", "CREDENTIALS_FILE_WRITE", `cannot write ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint: "check that its directory is writable", cause: e });
    }
  }, lock);
}
