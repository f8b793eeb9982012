/**
 * Where PINs come from. In order: the URI's `pin-source` (`file:/path`, `/path`
 * or `|command`), `RA_AGENT_PIN_FILE`, `RA_AGENT_PIN`, the URI's `pin-value`
 * (compatibility with aws_signing_helper; discouraged), and a prompt on the
 * terminal (stderr, no echo) when stdin is a TTY. Never argv.
 *
 * A PIN file must not be readable or writable by group or others, and must be
 * owned by the current user or root.
 */
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import type { ReadStream } from "node:tty";
import { RaError } from "../../errors";
import { logger } from "../../log/logger";
import type { Pkcs11Uri } from "../../uri/pkcs11-uri";

/** Environment variable holding the user PIN. */
export const PIN_ENV = "RA_AGENT_PIN";
/** Environment variable naming a file that holds the user PIN. */
export const PIN_FILE_ENV = "RA_AGENT_PIN_FILE";

/** What a PIN is asked for. */
export interface PinRequest {
  /** `user` to log in; `context-specific` for a CKA_ALWAYS_AUTHENTICATE key, per signature. */
  kind: "user" | "context-specific";
  /** Human description of the token. */
  token: string;
  /** The token's exact URI. */
  tokenUri: string;
  /** The key's URI, for context-specific PINs. */
  keyUri?: string;
  /** The token reports that one try is left. */
  finalTry?: boolean;
}

/** A PIN and where it came from (the source is logged, never the PIN). */
export interface PinResult {
  pin: string;
  /** e.g. `RA_AGENT_PIN_FILE /run/secrets/pin`, `URI pin-value`, `terminal prompt`. */
  source: string;
  /** Typed by a person for this run: allowed even at the token's final try. */
  interactive: boolean;
}

/**
 * Supplies PINs. Returns undefined when it has none (the next source is tried,
 * or the operation fails with "PIN required"); throws when a configured source is broken.
 */
export interface PinProvider {
  getPin(request: PinRequest): Promise<PinResult | undefined>;
}

function pinError(code: string, message: string, hint: string, cause?: unknown): RaError {
  return new RaError("pin", code, message, { hint, cause });
}

/** Removes one trailing newline (files written by `echo`), nothing else. */
function stripNewline(s: string): string {
  return s.replace(/\r?\n$/, "");
}

/**
 * Reads a PIN file after checking it is private.
 * @throws RaError `PIN_FILE_UNREADABLE`, `PIN_FILE_PERMISSIONS` (readable or writable by
 *   group/others, or owned by another user), `PIN_FILE_EMPTY`
 */
export async function readPinFile(path: string, what: string): Promise<string> {
  let st;
  try {
    st = await fs.stat(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw pinError("PIN_FILE_UNREADABLE", `cannot read the PIN file ${path} (${what}): ${code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : (e as Error).message}`, "check the path and that ra-agent's user can read it", e);
  }
  if (!st.isFile()) throw pinError("PIN_FILE_UNREADABLE", `the PIN file ${path} (${what}) is not a regular file`, "point it at a file holding only the PIN");
  if (process.platform !== "win32") {
    if ((st.mode & 0o066) !== 0) {
      throw pinError("PIN_FILE_PERMISSIONS", `the PIN file ${path} (${what}) is readable or writable by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, "0")})`, `run: chmod 600 ${path}`);
    }
    const uid = typeof process.getuid === "function" ? process.getuid() : undefined;
    if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
      throw pinError("PIN_FILE_PERMISSIONS", `the PIN file ${path} (${what}) is owned by another user (uid ${st.uid})`, `make it owned by the user running ra-agent (chown) or by root`);
    }
  }
  let text: string;
  try {
    text = await fs.readFile(path, "utf8");
  } catch (e) {
    throw pinError("PIN_FILE_UNREADABLE", `cannot read the PIN file ${path} (${what}): ${(e as Error).message}`, "check its permissions", e);
  }
  const pin = stripNewline(text);
  if (pin === "") throw pinError("PIN_FILE_EMPTY", `the PIN file ${path} (${what}) is empty`, "write the PIN into it (no other text)");
  return pin;
}

/**
 * Runs a `pin-source=|command` and reads the PIN from its stdout. The command runs
 * through the shell, with stdin and stderr on the terminal (so it may prompt), and
 * without `RA_AGENT_PIN` in its environment.
 * @throws RaError `PIN_COMMAND_FAILED`
 */
export function runPinCommand(command: string, timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env[PIN_ENV];
    const shell = process.platform === "win32" ? { cmd: process.env.ComSpec || "cmd.exe", args: ["/d", "/s", "/c", command] } : { cmd: "/bin/sh", args: ["-c", command] };
    const child = spawn(shell.cmd, shell.args, { stdio: ["inherit", "pipe", "inherit"], env, windowsHide: true });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.stdout.on("data", (c: Buffer) => chunks.push(c));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(pinError("PIN_COMMAND_FAILED", `the PIN command (pin-source |…) could not start: ${e.message}`, "check the command in pin-source", e));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        reject(pinError("PIN_COMMAND_FAILED", `the PIN command (pin-source |…) ${signal ? `was killed by ${signal}` : `exited with status ${code}`}`, "run the command by hand to check it prints the PIN"));
        return;
      }
      const pin = stripNewline(Buffer.concat(chunks).toString("utf8"));
      if (pin === "") reject(pinError("PIN_COMMAND_FAILED", "the PIN command (pin-source |…) printed nothing", "make it print the PIN on stdout"));
      else resolve(pin);
    });
  });
}

/**
 * Reads a PIN from the terminal without echo. Only when stdin is a TTY; the
 * prompt goes to stderr (stdout carries results).
 * @throws RaError `PIN_PROMPT_CANCELLED` on Ctrl-C / Ctrl-D
 */
export function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin as ReadStream;
  return new Promise((resolve, reject) => {
    const wasRaw = stdin.isRaw;
    stdin.setRawMode(true);
    stdin.setEncoding("utf8");
    stdin.resume();
    process.stderr.write(prompt);
    let pin = "";
    const finish = (): void => {
      stdin.removeListener("data", onData);
      stdin.setRawMode(wasRaw);
      stdin.pause();
      process.stderr.write("\n");
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === "\r" || ch === "\n") {
          finish();
          resolve(pin);
          return;
        }
        if (ch === "\u0003" || (ch === "\u0004" && pin === "")) {
          finish();
          reject(pinError("PIN_PROMPT_CANCELLED", "PIN entry was cancelled", "run again and enter the PIN, or give it through pin-source / RA_AGENT_PIN_FILE"));
          return;
        }
        if (ch === "\u007f" || ch === "\b") pin = pin.slice(0, -1);
        else if (ch === "\u0015") pin = "";
        else if (ch >= " ") pin += ch;
      }
    };
    stdin.on("data", onData);
  });
}

/** A provider that tries each provider in turn until one returns a PIN. */
export function chainPinProviders(...providers: PinProvider[]): PinProvider {
  return {
    async getPin(request) {
      for (const p of providers) {
        const r = await p.getPin(request);
        if (r) return r;
      }
      return undefined;
    },
  };
}

/** A fixed PIN (tests, the agent's own config). */
export function staticPinProvider(pin: string, source = "configured PIN"): PinProvider {
  return { getPin: async (req) => (req.kind === "user" ? { pin, source, interactive: false } : undefined) };
}

/**
 * The user PIN from a URI: `pin-source` first, else `pin-value` (each can be turned off).
 * @throws RaError from the PIN file or command
 */
export function uriPinProvider(uri: Pkcs11Uri, use: { pinSource?: boolean; pinValue?: boolean } = {}): PinProvider {
  const { pinSource = true, pinValue = true } = use;
  return {
    async getPin(req) {
      if (req.kind !== "user") return undefined;
      if (pinSource && uri.pinSource !== undefined) {
        const src = uri.pinSource;
        if (src.startsWith("|")) return { pin: await runPinCommand(src.slice(1)), source: "URI pin-source command", interactive: false };
        let path = src;
        if (/^file:/i.test(src)) {
          path = src.replace(/^file:(\/\/(localhost)?(?=\/))?/i, "");
        }
        if (!path.startsWith("/") && !/^[A-Za-z]:[\\/]/.test(path)) {
          // The value is not repeated: a user who mistook pin-source for pin-value would see the PIN.
          throw pinError("PIN_SOURCE_UNSUPPORTED", "the URI's pin-source is neither file:/absolute/path nor |command", "use pin-source=file:/path/to/pin-file or pin-source=|/path/to/command (the PIN itself never goes in the URI)");
        }
        return { pin: await readPinFile(path, "URI pin-source"), source: `URI pin-source file ${path}`, interactive: false };
      }
      if (pinValue && uri.pinValue !== undefined) {
        logger.debug("using the PIN from the URI's pin-value; prefer pin-source or RA_AGENT_PIN_FILE (a URI is easily logged or seen in ps)");
        return { pin: uri.pinValue, source: "URI pin-value", interactive: false };
      }
      return undefined;
    },
  };
}

/**
 * The user PIN from `RA_AGENT_PIN_FILE` or `RA_AGENT_PIN`.
 * @throws RaError from the PIN file
 */
export function envPinProvider(env: NodeJS.ProcessEnv = process.env): PinProvider {
  return {
    async getPin(req) {
      if (req.kind !== "user") return undefined;
      const file = env[PIN_FILE_ENV];
      if (file) return { pin: await readPinFile(file, PIN_FILE_ENV), source: `${PIN_FILE_ENV} ${file}`, interactive: false };
      const value = env[PIN_ENV];
      if (value !== undefined && value !== "") return { pin: value, source: PIN_ENV, interactive: false };
      return undefined;
    },
  };
}

/** A prompt on the terminal, only when stdin is a TTY. */
export function ttyPinProvider(): PinProvider {
  return {
    async getPin(req) {
      if (!process.stdin.isTTY) return undefined;
      const what = req.kind === "user" ? `PIN for ${req.token}` : `context-specific PIN for key ${req.keyUri ?? ""} on ${req.token}`;
      const warning = req.finalTry ? " — WARNING: the token reports ONE try left before the PIN locks" : "";
      const pin = await promptHidden(`${what}${warning}: `);
      return { pin, source: "terminal prompt", interactive: true };
    },
  };
}

/**
 * The default PIN sources for a signer opened from these URIs (key URI first):
 * each URI's pin-source, then RA_AGENT_PIN_FILE / RA_AGENT_PIN, then each URI's
 * pin-value, then the terminal.
 */
export function defaultPinProvider(uris: Array<Pkcs11Uri | undefined>): PinProvider {
  const given = uris.filter((u): u is Pkcs11Uri => u !== undefined);
  return chainPinProviders(
    ...given.map((u) => uriPinProvider(u, { pinValue: false })),
    envPinProvider(),
    ...given.map((u) => uriPinProvider(u, { pinSource: false })),
    ttyPinProvider(),
  );
}
