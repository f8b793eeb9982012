/**
 * The agent's socket protocol, version 1: HTTP/1.1 over the Unix socket, JSON
 * answers, so that `curl --unix-socket` is a complete client. Documented in
 * docs/agent.md ("Socket protocol").
 *
 * | request | answer |
 * |---|---|
 * | `GET /v1/credentials/{profile}` | 200 credential_process JSON |
 * | `GET /v1/status` | 200 agent, token and cache state (no secrets) |
 * | `GET /v1/keys` | 200 keys and certificates with their URIs |
 * | `POST /v1/sign/{profile}` `{"stringToSign": "..."}` | 200 `{"algorithm","signature"}` (hex); only with `allowSigning` |
 * | `GET /v1/health` | 200 `{"ok":true}` |
 *
 * Errors: `{"error":{"kind","code","message","hint"}}` with 400/403/404/405/413/415/503.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "winston";
import { RaError } from "../errors";
import { errorBody, readBody, sendErrorAndClose, sendJson, sendPreparedJson, statusForError, type HttpLimits } from "./http-util";
import type { ProfileRuntime } from "./profile-runtime";

/** Protocol version prefix. */
export const PROTOCOL_PREFIX = "/v1";

/** What the protocol handler needs from the agent. */
export interface ProtocolHost {
  profile(name: string): ProfileRuntime | undefined;
  profileNames(): string[];
  status(): Promise<unknown>;
  keys(): Promise<unknown>;
  readonly limits: HttpLimits;
  readonly log: Logger;
}

const CREDENTIALS = "/v1/credentials/";
const SIGN = "/v1/sign/";

function notFound(what: string): RaError {
  return new RaError("agent", "AGENT_NOT_FOUND", `no such resource: ${what}`, { hint: "see docs/agent.md for the v1 protocol" });
}

function unknownProfile(name: string, known: string[]): RaError {
  return new RaError("agent", "AGENT_UNKNOWN_PROFILE", `the agent has no profile named "${name}"`, {
    hint: known.length ? `configured profiles: ${known.join(", ")}` : "add the profile to the agent's config and reload it (SIGHUP)",
  });
}

function methodNotAllowed(res: ServerResponse, allow: string): void {
  sendJson(res, 405, { error: { kind: "agent", code: "AGENT_METHOD_NOT_ALLOWED", message: `use ${allow}` } }, { Allow: allow });
}

/** Decodes the `{profile}` path segment; undefined when it is not a plain segment. */
function profileSegment(path: string, prefix: string): string | undefined {
  const raw = path.slice(prefix.length);
  if (raw.length === 0 || raw.length > 200 || raw.includes("/")) return undefined;
  if (!raw.includes("%")) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
}

/**
 * The `stringToSign` of a sign request's JSON body.
 * @throws RaError `AGENT_BAD_REQUEST` when the body is not JSON or has no such string
 */
function stringToSignOf(body: Buffer): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    throw new RaError("agent", "AGENT_BAD_REQUEST", "the request body is not JSON", { hint: 'send {"stringToSign": "..."}' });
  }
  const sts = (parsed as { stringToSign?: unknown } | null)?.stringToSign;
  if (typeof sts !== "string") throw new RaError("agent", "AGENT_BAD_REQUEST", 'the request body has no "stringToSign" string', { hint: 'send {"stringToSign": "..."}' });
  return sts;
}

/** Builds the request handler of the socket protocol. */
export function createProtocolHandler(host: ProtocolHost): (req: IncomingMessage, res: ServerResponse) => void {
  const debug = () => host.log.isDebugEnabled();

  const fail = (res: ServerResponse, e: unknown) => {
    const status = statusForError(e);
    if (status === 500) host.log.error(`agent request failed: ${(e as Error)?.stack ?? String(e)}`);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const headers: Record<string, string> = {};
    if (status === 503) headers["Retry-After"] = "5";
    sendJson(res, status, errorBody(e), headers);
  };

  return (req, res) => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q === -1 ? url : url.slice(0, q);
    const method = req.method;
    if (debug()) host.log.debug("agent request", { method, path });
    if (method !== "POST" && hasBody(req)) {
      return sendErrorAndClose(res, new RaError("agent", "AGENT_BAD_REQUEST", `a ${method} request carries no body`));
    }

    // Hot path first: cached credentials are answered synchronously.
    if (path.startsWith(CREDENTIALS)) {
      if (method !== "GET") return methodNotAllowed(res, "GET");
      const name = profileSegment(path, CREDENTIALS);
      const rt = name === undefined ? undefined : host.profile(name);
      if (!rt) return fail(res, name === undefined ? notFound(path) : unknownProfile(name, host.profileNames()));
      const body = rt.peekCredentialsBody();
      if (body) return sendPreparedJson(res, body);
      rt.credentialsBody().then(
        (b) => sendPreparedJson(res, b),
        (e) => fail(res, e),
      );
      return;
    }

    if (path.startsWith(SIGN)) {
      if (method !== "POST") return methodNotAllowed(res, "POST");
      const name = profileSegment(path, SIGN);
      const rt = name === undefined ? undefined : host.profile(name);
      if (!rt) {
        // Do not read a body for nobody; close instead of draining it.
        return sendErrorAndClose(res, name === undefined ? notFound(path) : unknownProfile(name, host.profileNames()));
      }
      const type = (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
      if (type !== "application/json") {
        return sendErrorAndClose(res, new RaError("agent", "AGENT_UNSUPPORTED_MEDIA_TYPE", "the sign request must be application/json", { hint: 'send {"stringToSign": "..."} with Content-Type: application/json' }));
      }
      readBody(req, host.limits.maxBodyBytes)
        .then((raw) => rt.signStringToSign(stringToSignOf(raw)))
        .then(
          // Both fields are plain ASCII (an algorithm name, hex): no escaping needed.
          (result) => sendPreparedJson(res, Buffer.from(`{"algorithm":"${result.algorithm}","signature":"${result.signature}"}`, "latin1")),
          (e) => (e instanceof RaError && e.code === "AGENT_BODY_TOO_LARGE" ? sendErrorAndClose(res, e) : fail(res, e)),
        );
      return;
    }

    switch (path) {
      case "/v1/status":
        if (method !== "GET") return methodNotAllowed(res, "GET");
        host.status().then(
          (st) => sendJson(res, 200, st),
          (e) => fail(res, e),
        );
        return;
      case "/v1/health":
        if (method !== "GET") return methodNotAllowed(res, "GET");
        return sendJson(res, 200, { ok: true });
      case "/v1/keys":
        if (method !== "GET") return methodNotAllowed(res, "GET");
        host.keys().then(
          (k) => sendJson(res, 200, k),
          (e) => fail(res, e),
        );
        return;
      default:
        return fail(res, notFound(path));
    }
  };
}
