/**
 * Listening on the agent's Unix socket safely: the directory must belong to the
 * agent's user and be closed to writes by others; the socket is created 0600; a
 * stale socket left by a crashed agent is replaced, a live one never.
 */
import { chmodSync, lstatSync, mkdirSync, unlinkSync, type Stats } from "node:fs";
import { connect, type Server } from "node:net";
import { dirname } from "node:path";
import { RaError } from "../errors";

/** Identity of the socket file this process created, so that shutdown removes only that one. */
export interface SocketIdentity {
  path: string;
  dev: number;
  ino: number;
}

/** What {@link prepareSocketDirectory} found or did. */
export interface DirectoryCheck {
  created: boolean;
  /** Human-readable notes (e.g. a directory readable by others), for a warning log. */
  warnings: string[];
}

function agentError(code: string, message: string, hint: string, cause?: unknown): RaError {
  return new RaError("agent", code, message, { hint, cause });
}

function euid(): number {
  return typeof process.geteuid === "function" ? process.geteuid() : 0;
}

/**
 * Makes sure the socket's directory is safe: created 0700 when missing (only the
 * last component), otherwise a real directory owned by this user, not writable
 * by group or others.
 * @throws RaError `AGENT_SOCKET_DIR_UNSAFE` / `AGENT_SOCKET_DIR_MISSING`.
 */
export function prepareSocketDirectory(dir: string): DirectoryCheck {
  let st: Stats;
  let created = false;
  try {
    st = lstatSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw agentError("AGENT_SOCKET_DIR_UNSAFE", `cannot inspect the socket directory ${dir}: ${(e as Error).message}`, "check the path", e);
    try {
      mkdirSync(dir, { mode: 0o700 });
      chmodSync(dir, 0o700); // the umask may have removed bits; never added
    } catch (e2) {
      throw agentError("AGENT_SOCKET_DIR_MISSING", `cannot create the socket directory ${dir}: ${(e2 as NodeJS.ErrnoException).code ?? (e2 as Error).message}`, `create ${dirname(dir)} first, or choose another --socket path`, e2);
    }
    created = true;
    st = lstatSync(dir);
  }
  if (st.isSymbolicLink()) {
    throw agentError("AGENT_SOCKET_DIR_UNSAFE", `the socket directory ${dir} is a symbolic link`, "point --socket at a real directory");
  }
  if (!st.isDirectory()) throw agentError("AGENT_SOCKET_DIR_UNSAFE", `${dir} is not a directory`, "choose another --socket path");
  if (st.uid !== euid()) {
    throw agentError("AGENT_SOCKET_DIR_UNSAFE", `the socket directory ${dir} belongs to uid ${st.uid}, not to this user (uid ${euid()})`, "use a directory you own, such as $XDG_RUNTIME_DIR/ra-agent (someone else could replace the socket)");
  }
  if (st.mode & 0o022) {
    throw agentError(
      "AGENT_SOCKET_DIR_UNSAFE",
      `the socket directory ${dir} is writable by ${st.mode & 0o002 ? "other users" : "its group"} (mode ${(st.mode & 0o7777).toString(8)})`,
      `run chmod 700 ${dir}, or use a private directory such as $XDG_RUNTIME_DIR/ra-agent`,
    );
  }
  const warnings: string[] = [];
  if (st.mode & 0o077) warnings.push(`the socket directory ${dir} is not 0700 (mode ${(st.mode & 0o7777).toString(8)}); the socket itself is 0600`);
  return { created, warnings };
}

/** Resolves true when something accepts connections on `path`. */
export function isSocketLive(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (live: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(live);
    };
    // No answer in time: a listener with a full backlog is still alive.
    const timer = setTimeout(() => done(true), timeoutMs);
    s.once("connect", () => done(true));
    s.once("error", (e: NodeJS.ErrnoException) => done(e.code !== "ECONNREFUSED" && e.code !== "ENOENT" ? true : false));
  });
}

/**
 * Clears the way for a new socket at `path`: nothing there is fine; a stale
 * socket (nobody listening) is removed; a live socket or a non-socket file is refused.
 * @returns true when a stale socket was removed.
 * @throws RaError `AGENT_ALREADY_RUNNING`, `AGENT_SOCKET_PATH_TAKEN`.
 */
export async function claimSocketPath(path: string): Promise<boolean> {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw agentError("AGENT_SOCKET_PATH_TAKEN", `cannot inspect ${path}: ${(e as Error).message}`, "choose another --socket path", e);
  }
  if (!st.isSocket()) {
    throw agentError("AGENT_SOCKET_PATH_TAKEN", `${path} exists and is not a socket; the agent will not remove it`, "remove it yourself or choose another --socket path");
  }
  if (await isSocketLive(path)) {
    throw agentError("AGENT_ALREADY_RUNNING", `an agent is already listening on ${path}`, "stop it first (systemctl --user stop ra-agent), or use another --socket path");
  }
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw agentError("AGENT_SOCKET_PATH_TAKEN", `cannot remove the stale socket ${path}: ${(e as Error).message}`, "remove it yourself", e);
  }
  return true;
}

/**
 * Binds `server` to `path` with mode 0600 (set through the umask at bind time, so
 * there is no window with a looser mode, and checked again after).
 * @throws RaError `AGENT_ALREADY_RUNNING` when another process won the race for the path.
 */
export async function listenOnSocket(server: Server, path: string): Promise<SocketIdentity> {
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      server.off("listening", onListening);
      reject(
        e.code === "EADDRINUSE"
          ? agentError("AGENT_ALREADY_RUNNING", `${path} is in use by another process`, "stop the other agent or use another --socket path", e)
          : agentError("AGENT_LISTEN_FAILED", `cannot listen on ${path}: ${e.message}`, "check the path and permissions", e),
      );
    };
    const onListening = () => {
      server.off("error", onError);
      resolve();
    };
    server.once("error", onError);
    server.once("listening", onListening);
    // The bind happens synchronously inside listen(); the umask covers exactly it.
    const old = process.umask(0o177);
    try {
      server.listen({ path, backlog: 1024 });
    } finally {
      process.umask(old);
    }
  });
  chmodSync(path, 0o600);
  const st = lstatSync(path);
  return { path, dev: st.dev, ino: st.ino };
}

/** Removes the socket file when it is still the one this process created. */
export function removeOwnSocket(identity: SocketIdentity): void {
  try {
    const st = lstatSync(identity.path);
    if (st.dev === identity.dev && st.ino === identity.ino) unlinkSync(identity.path);
  } catch {
    // Already gone (libuv unlinks a pipe it bound when the server closes).
  }
}
