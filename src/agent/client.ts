/**
 * The fast client of the agent's socket protocol, used by
 * `ra-agent credential-process --profile NAME`. It runs on every AWS CLI
 * command, so its import graph is kept to node:net, node:os and node:path
 * (plus the dependency-free errors module): no PKCS#11, x509, undici, winston
 * or commander. Measured against `node -e 0` by scripts/bench-agent.ts.
 */
import { connect } from "node:net";
import type { CredentialProcessOutput } from "../credentials/credentials";
import { RaError, type ErrorKind } from "../errors";
import { defaultSocketPath } from "./socket-path";

export { defaultSocketPath, SOCKET_ENV } from "./socket-path";

/** Options of {@link fetchCredentialsFromAgent}. */
export interface AgentClientOptions {
  /** Socket path; default {@link defaultSocketPath} (`$RA_AGENT_SOCKET`, then `$XDG_RUNTIME_DIR/ra-agent/agent.sock`, ...). */
  socketPath?: string;
  /** Profile name in the agent's config. */
  profile: string;
  /** Whole-request timeout; default 30 s (a cold refresh signs on a token and calls CreateSession). */
  timeoutMs?: number;
}

/** A raw answer of the agent. */
export interface AgentResponse {
  status: number;
  body: Buffer;
}

const KINDS: ReadonlySet<string> = new Set(["usage", "token", "pin", "service", "agent", "internal"]);

/** Connection errors meaning "no agent is running there" (as opposed to "an agent refused us"). */
const NO_AGENT = new Set(["ENOENT", "ECONNREFUSED", "ENOTDIR"]);

/** Largest answer accepted from the agent. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

/**
 * Parses a complete HTTP/1.1 response (the connection is closed after one
 * request, so the body runs to the end of the data or to Content-Length).
 * @returns undefined when `data` does not hold a whole response yet.
 */
export function parseHttpResponse(data: Buffer, ended: boolean): AgentResponse | undefined {
  const headEnd = data.indexOf("\r\n\r\n");
  if (headEnd === -1) {
    if (ended) throw new Error("truncated response");
    return undefined;
  }
  const head = data.subarray(0, headEnd).toString("latin1").split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]);
  if (!m) throw new Error("not an HTTP response");
  const headers = new Map<string, string>();
  for (const line of head.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const rest = data.subarray(headEnd + 4);
  const status = Number(m[1]);
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const chunks: Buffer[] = [];
    let pos = 0;
    for (;;) {
      const lineEnd = rest.indexOf("\r\n", pos);
      if (lineEnd === -1) return ended ? fail() : undefined;
      const size = parseInt(rest.subarray(pos, lineEnd).toString("latin1"), 16);
      if (!Number.isFinite(size)) throw new Error("bad chunk size");
      if (size === 0) return { status, body: Buffer.concat(chunks) };
      if (rest.length < lineEnd + 2 + size + 2) return ended ? fail() : undefined;
      chunks.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
      pos = lineEnd + 2 + size + 2;
    }
  }
  const length = headers.get("content-length");
  if (length !== undefined) {
    const n = Number(length);
    if (!Number.isInteger(n) || n < 0) throw new Error("bad Content-Length");
    if (rest.length >= n) return { status, body: rest.subarray(0, n) };
    return ended ? fail() : undefined;
  }
  return ended ? { status, body: rest } : undefined;
}

function fail(): never {
  throw new Error("truncated response");
}

/**
 * Sends one request to the agent. A raw HTTP/1.1 exchange over node:net rather
 * than node:http: the http client's first request in a fresh process costs about
 * 12 ms more (measured), a tenth of Node's start-up, on every AWS CLI command.
 * @returns undefined when no agent listens on the socket (missing or stale socket).
 * @throws RaError `AGENT_TIMEOUT`, `AGENT_UNREACHABLE` (e.g. permission denied), `AGENT_BAD_RESPONSE`.
 */
export function agentRequest(socketPath: string, method: string, path: string, options: { body?: string | Buffer; contentType?: string; timeoutMs?: number } = {}): Promise<AgentResponse | undefined> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const body = options.body === undefined ? undefined : Buffer.from(options.body);
    let head = `${method} ${path} HTTP/1.1\r\nHost: ra-agent\r\nConnection: close\r\n`;
    if (body) head += `Content-Type: ${options.contentType ?? "application/json"}\r\nContent-Length: ${body.length}\r\n`;
    head += "\r\n";
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const socket = connect(socketPath);
    const settle = (f: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      f();
    };
    const tryParse = (ended: boolean) => {
      let res: AgentResponse | undefined;
      try {
        res = parseHttpResponse(Buffer.concat(chunks), ended);
      } catch (e) {
        settle(() => reject(new RaError("agent", "AGENT_BAD_RESPONSE", `the agent at ${socketPath} sent a malformed answer: ${(e as Error).message}`, { hint: "check that the socket belongs to ra-agent" })));
        return;
      }
      if (res) settle(() => resolve(res));
    };
    const timer = setTimeout(() => {
      settle(() => reject(new RaError("agent", "AGENT_TIMEOUT", `the agent at ${socketPath} did not answer within ${Math.round(timeoutMs / 1000)} s`, { hint: "check the agent's log (journalctl --user -u ra-agent)" })));
    }, timeoutMs);
    // No half-close after the request: the server would abort a request still
    // waiting for its answer (a cold refresh). It closes after answering (Connection: close).
    socket.on("connect", () => socket.write(body ? Buffer.concat([Buffer.from(head, "latin1"), body]) : head));
    socket.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_RESPONSE_BYTES) {
        settle(() => reject(new RaError("agent", "AGENT_BAD_RESPONSE", `the agent's answer is larger than ${MAX_RESPONSE_BYTES} bytes`)));
        return;
      }
      chunks.push(c);
      tryParse(false);
    });
    socket.on("end", () => tryParse(true));
    socket.on("error", (e: NodeJS.ErrnoException) => {
      settle(() => (e.code && NO_AGENT.has(e.code) ? resolve(undefined) : reject(unreachable(socketPath, e))));
    });
    socket.on("close", () => tryParse(true));
  });
}

function unreachable(socketPath: string, e: NodeJS.ErrnoException): RaError {
  return new RaError("agent", "AGENT_UNREACHABLE", `cannot talk to the agent at ${socketPath}: ${e.code ?? e.message}`, {
    hint: e.code === "EACCES" ? "the socket belongs to another user: run the agent as yourself, or use your own --socket" : "check that the agent runs (systemctl --user status ra-agent)",
    cause: e,
  });
}

/** Turns an agent error answer into an RaError with the agent's kind, code, message and hint. */
export function errorFromResponse(res: AgentResponse, what: string): RaError {
  try {
    const parsed = JSON.parse(res.body.toString("utf8")) as { error?: { kind?: string; code?: string; message?: string; hint?: string } };
    const e = parsed.error;
    if (e && typeof e.message === "string" && typeof e.code === "string") {
      const kind = (typeof e.kind === "string" && KINDS.has(e.kind) ? e.kind : "agent") as ErrorKind;
      return new RaError(kind, e.code, `agent: ${e.message}`, { hint: typeof e.hint === "string" ? e.hint : undefined });
    }
  } catch {
    // not JSON: fall through
  }
  return new RaError("agent", "AGENT_BAD_RESPONSE", `the agent answered ${what} with HTTP ${res.status}`, { hint: "check the agent's log" });
}

/**
 * Credentials for `profile` from a running agent.
 * @returns the credential_process JSON, or undefined when no agent runs at the socket path.
 * @throws RaError with the agent's error (kind, code, message, hint) when the agent cannot
 *   provide credentials; `AGENT_BAD_RESPONSE` for an answer that is not valid credentials.
 */
export async function fetchCredentialsFromAgent(options: AgentClientOptions): Promise<CredentialProcessOutput | undefined> {
  const socketPath = options.socketPath ?? defaultSocketPath();
  const res = await agentRequest(socketPath, "GET", `/v1/credentials/${encodeURIComponent(options.profile)}`, { timeoutMs: options.timeoutMs });
  if (!res) return undefined;
  if (res.status !== 200) throw errorFromResponse(res, `the credentials request for profile "${options.profile}"`);
  let out: CredentialProcessOutput;
  try {
    out = JSON.parse(res.body.toString("utf8")) as CredentialProcessOutput;
  } catch {
    throw new RaError("agent", "AGENT_BAD_RESPONSE", "the agent's credentials answer is not JSON", { hint: "check that the socket belongs to ra-agent" });
  }
  if (out?.Version !== 1 || !out.AccessKeyId || !out.SecretAccessKey || !out.SessionToken || !out.Expiration) {
    throw new RaError("agent", "AGENT_BAD_RESPONSE", "the agent's credentials answer is incomplete", { hint: "check that the socket belongs to ra-agent" });
  }
  return out;
}
