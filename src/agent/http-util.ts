/**
 * Small HTTP helpers shared by the agent's socket protocol and the loopback
 * IMDS/ECS endpoint: limits, JSON answers, error mapping, bounded body reading.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { RaError } from "../errors";

/** Limits applied to every connection. Requests beyond them close the connection. */
export interface HttpLimits {
  /** Request line plus headers, in bytes. */
  maxHeaderBytes: number;
  /** Request body, in bytes. */
  maxBodyBytes: number;
  /** Time to receive the headers. */
  headersTimeoutMs: number;
  /** Time to receive the whole request. */
  requestTimeoutMs: number;
  /** Idle keep-alive connections are closed after this. */
  keepAliveTimeoutMs: number;
  /** Simultaneous connections; more are refused. */
  maxConnections: number;
  /**
   * A connection with no traffic for this long is closed. Longer than the
   * cache's refresh timeout, so that a client waiting for a slow first refresh
   * (a TPM, a slow endpoint) is not cut off; slow senders are bounded by the
   * header and request timeouts, idle keep-alive connections by the keep-alive timeout.
   */
  socketIdleTimeoutMs: number;
}

/** The limits the agent uses (documented in docs/agent.md). */
export const DEFAULT_LIMITS: HttpLimits = {
  maxHeaderBytes: 8 * 1024,
  maxBodyBytes: 8 * 1024,
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  maxConnections: 4096,
  socketIdleTimeoutMs: 130_000,
};

/** `http.createServer` options implementing the header limits and timeouts. */
export function serverOptions(limits: HttpLimits): {
  maxHeaderSize: number;
  requestTimeout: number;
  headersTimeout: number;
  keepAliveTimeout: number;
  connectionsCheckingInterval: number;
  requireHostHeader: boolean;
} {
  return {
    maxHeaderSize: limits.maxHeaderBytes,
    requestTimeout: limits.requestTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: 1_000,
    requireHostHeader: false,
  };
}

/**
 * Installs connection-level protection: an idle-socket timeout, a connection
 * cap, and a `clientError` handler that answers malformed or oversized requests
 * with a status line and closes the connection (the server keeps running).
 */
export function hardenServer(server: Server, limits: HttpLimits, onClientError?: (code: string) => void): void {
  server.maxConnections = limits.maxConnections;
  server.setTimeout(limits.socketIdleTimeoutMs);
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    const code = err.code ?? "UNKNOWN";
    onClientError?.(code);
    if (socket.writable && !socket.destroyed) {
      const status =
        code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : code === "ERR_HTTP_REQUEST_TIMEOUT" ? "408 Request Timeout" : "400 Bad Request";
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    }
    socket.destroy();
  });
}

const JSON_HEADERS = { "Content-Type": "application/json", "Cache-Control": "no-store" };

/** Sends a JSON body (a Buffer is sent as is). */
export function sendJson(res: ServerResponse, status: number, body: unknown, extraHeaders?: Record<string, string>): void {
  const payload = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
  res.writeHead(status, { ...JSON_HEADERS, "Content-Length": payload.length, ...extraHeaders });
  res.end(payload);
}

/**
 * The hot path: a prepared JSON body with fixed headers, written as a flat
 * header array (no header object to build or walk) and without a Date header.
 */
export function sendPreparedJson(res: ServerResponse, payload: Buffer): void {
  res.sendDate = false;
  res.writeHead(200, ["Content-Type", "application/json", "Cache-Control", "no-store", "Content-Length", String(payload.length)]);
  res.end(payload);
}

/** Sends a plain-text body. */
export function sendText(res: ServerResponse, status: number, text: string, extraHeaders?: Record<string, string>): void {
  const payload = Buffer.from(text);
  res.writeHead(status, { "Content-Type": "text/plain", "Content-Length": payload.length, "Cache-Control": "no-store", ...extraHeaders });
  res.end(payload);
}

/** The HTTP status for an error raised while serving a request. */
export function statusForError(e: unknown): number {
  if (!(e instanceof RaError)) return 500;
  switch (e.code) {
    case "AGENT_UNKNOWN_PROFILE":
    case "AGENT_NOT_FOUND":
      return 404;
    case "AGENT_SIGNING_DISABLED":
      return 403;
    case "AGENT_BODY_TOO_LARGE":
      return 413;
    case "AGENT_UNSUPPORTED_MEDIA_TYPE":
      return 415;
  }
  if (e.code === "AGENT_INVALID_STRING_TO_SIGN" || e.code === "AGENT_BAD_REQUEST") return 400;
  return 503;
}

/** The JSON error body: kind, code, message, hint. Never a stack or a secret. */
export function errorBody(e: unknown): { error: { kind: string; code: string; message: string; hint?: string } } {
  if (e instanceof RaError) return { error: { kind: e.kind, code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } };
  return { error: { kind: "internal", code: "INTERNAL", message: "internal error in the agent (see its log)" } };
}

/**
 * Reads a request body up to `maxBytes`. Beyond that the request is refused
 * with `AGENT_BODY_TOO_LARGE` and the caller must close the connection.
 */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > maxBytes) {
    return Promise.reject(tooLarge(maxBytes));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on("data", (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > maxBytes) {
        failed = true;
        reject(tooLarge(maxBytes));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!failed) resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
    });
    req.on("error", (e) => {
      if (!failed) {
        failed = true;
        reject(new RaError("agent", "AGENT_BAD_REQUEST", `reading the request failed: ${e.message}`));
      }
    });
  });
}

function tooLarge(maxBytes: number): RaError {
  return new RaError("agent", "AGENT_BODY_TOO_LARGE", `the request body is larger than ${maxBytes} bytes`);
}

/** Answers with an error and closes the connection (for oversized or broken requests). */
export function sendErrorAndClose(res: ServerResponse, e: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.shouldKeepAlive = false;
  sendJson(res, statusForError(e), errorBody(e), { Connection: "close" });
  res.on("finish", () => res.socket?.destroy());
}
