/**
 * The fast client of the agent's socket protocol, used by
 * `ra-agent credential-process --profile NAME`. It runs on every AWS CLI
 * command, so its import graph is kept to node:http, node:os and node:path
 * (plus the dependency-free errors module): no PKCS#11, x509, undici, winston
 * or commander. Measured against `node -e 0` by scripts/bench-agent.ts.
 */
import { request } from "node:http";
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

/**
 * Sends one request to the agent.
 * @returns undefined when no agent listens on the socket (missing or stale socket).
 * @throws RaError `AGENT_TIMEOUT`, `AGENT_UNREACHABLE` (e.g. permission denied).
 */
export function agentRequest(socketPath: string, method: string, path: string, options: { body?: string | Buffer; contentType?: string; timeoutMs?: number } = {}): Promise<AgentResponse | undefined> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { Host: "ra-agent", Connection: "close" };
    if (options.body !== undefined) {
      headers["Content-Type"] = options.contentType ?? "application/json";
      headers["Content-Length"] = Buffer.byteLength(options.body);
    }
    let settled = false;
    const settle = (f: () => void) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        f();
      }
    };
    const req = request({ socketPath, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => settle(() => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) })));
      res.on("error", (e) => settle(() => reject(unreachable(socketPath, e))));
    });
    const timer = setTimeout(() => {
      settle(() => reject(new RaError("agent", "AGENT_TIMEOUT", `the agent at ${socketPath} did not answer within ${Math.round(timeoutMs / 1000)} s`, { hint: "check the agent's log (journalctl --user -u ra-agent)" })));
      req.destroy();
    }, timeoutMs);
    req.on("error", (e: NodeJS.ErrnoException) => {
      settle(() => (e.code && NO_AGENT.has(e.code) ? resolve(undefined) : reject(unreachable(socketPath, e))));
    });
    req.end(options.body);
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
