/**
 * Loopback credentials endpoints for SDKs that cannot run a credential_process:
 *
 * - IMDSv2-compatible (what aws_signing_helper `serve` offers): `PUT /latest/api/token`
 *   with `X-aws-ec2-metadata-token-ttl-seconds` 1-21600, then
 *   `GET /latest/meta-data/iam/security-credentials/` (the role name) and
 *   `GET /latest/meta-data/iam/security-credentials/{role}` (the credentials) with
 *   `X-aws-ec2-metadata-token`. No IMDSv1: every GET needs a token.
 * - ECS container-credentials: `GET /ecs/credentials` with an `Authorization`
 *   header equal to a random token that is written to a 0600 file
 *   (`AWS_CONTAINER_CREDENTIALS_FULL_URI` + `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).
 *
 * Defences: the Host header must name a loopback address (DNS rebinding); a request
 * with X-Forwarded-For is refused (400, as IMDS does, against forwarding proxies);
 * tokens are random 256-bit values, compared by SHA-256 digest in constant time;
 * at most 256 IMDS tokens live at once (the earliest-expiring one is evicted).
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, dirname, join } from "node:path";
import type { Logger } from "winston";
import type { AwsCredentials } from "../credentials/credentials";
import { RaError } from "../errors";
import { systemClock, type Clock } from "./clock";
import { DEFAULT_LIMITS, errorBody, hardenServer, sendJson, sendText, serverOptions, statusForError, type HttpLimits } from "./http-util";

/** Path of the ECS container-credentials endpoint. */
export const ECS_PATH = "/ecs/credentials";
const TOKEN_PATH = "/latest/api/token";
const CREDS_PATH = "/latest/meta-data/iam/security-credentials";
const CREDS_EXT_PATH = "/latest/meta-data/iam/security-credentials-extended";
const TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER = "x-aws-ec2-metadata-token";
/** As on EC2 and in the reference helper. */
export const MAX_IMDS_TOKENS = 256;

/** Options of {@link startMetadataServer}. */
export interface MetadataServerOptions {
  /** Credentials to hand out (from a cache: called on every request). */
  getCredentials: () => Promise<AwsCredentials>;
  /** Role ARN: its last path element is the role name IMDS reports. */
  roleArn: string;
  /** Loopback address; default 127.0.0.1. */
  host?: string;
  /** Port; 0 = any free port. Default 9911. */
  port?: number;
  /** Serve the IMDSv2 paths (default true). */
  imds?: boolean;
  /** Serve the ECS path with this token file (created 0600 with a fresh token). */
  ecsTokenFile?: string;
  log: Logger;
  clock?: Clock;
  limits?: HttpLimits;
}

/** A running endpoint. */
export interface MetadataServer {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  /** For `AWS_EC2_METADATA_SERVICE_ENDPOINT`, when IMDS is served. */
  readonly imdsEndpoint?: string;
  /** For `AWS_CONTAINER_CREDENTIALS_FULL_URI`, when ECS is served. */
  readonly ecsFullUri?: string;
  /** For `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`. */
  readonly ecsTokenFile?: string;
  /** Stops listening and removes the ECS token file. */
  close(): Promise<void>;
}

/** The role name (last path element of the role ARN), as IMDS lists it. */
export function roleNameOf(roleArn: string): string {
  const resource = roleArn.split(":").slice(5).join(":");
  const parts = resource.split("/");
  return parts[parts.length - 1] || "ra-agent";
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/** A random 256-bit token in base64url (43 characters). */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

/**
 * Writes `content` to `file` with mode 0600, atomically (temp file in the same
 * directory, fsync, rename), so that a reader never sees a partial token.
 */
export function writePrivateFile(file: string, content: string): void {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, file);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // best effort
    }
    throw e;
  }
}

/** True when a Host header names a loopback address (any port). */
export function isLoopbackHost(host: string | undefined): boolean {
  if (!host) return false;
  let name = host.trim().toLowerCase();
  if (name.startsWith("[")) {
    const end = name.indexOf("]");
    if (end === -1) return false;
    const rest = name.slice(end + 1);
    if (rest !== "" && !/^:\d{1,5}$/.test(rest)) return false;
    name = name.slice(1, end);
    return name === "::1" || name === "0:0:0:0:0:0:0:1";
  }
  const colon = name.indexOf(":");
  if (colon !== -1) {
    if (!/^\d{1,5}$/.test(name.slice(colon + 1))) return false;
    name = name.slice(0, colon);
  }
  return name === "localhost" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/** Formats a time as IMDS does: ISO 8601 without milliseconds. */
function imdsTime(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** IMDSv2 session tokens with expiry; looked up by SHA-256 digest. */
class TokenStore {
  private readonly tokens = new Map<string, number>();
  constructor(private readonly clock: Clock) {}

  issue(ttlSeconds: number): string {
    const now = this.clock.now();
    for (const [k, exp] of this.tokens) if (exp <= now) this.tokens.delete(k);
    if (this.tokens.size >= MAX_IMDS_TOKENS) {
      let earliest: string | undefined;
      let earliestExp = Infinity;
      for (const [k, exp] of this.tokens) {
        if (exp < earliestExp) {
          earliestExp = exp;
          earliest = k;
        }
      }
      if (earliest !== undefined) this.tokens.delete(earliest);
    }
    const token = newToken();
    this.tokens.set(digest(token).toString("hex"), now + ttlSeconds * 1000);
    return token;
  }

  /** Seconds left for a valid token, or undefined. */
  check(presented: string | undefined): number | undefined {
    if (!presented || presented.length > 512) return undefined;
    // Hashing first: the map lookup then reveals nothing usable about the token.
    const key = digest(presented).toString("hex");
    const exp = this.tokens.get(key);
    if (exp === undefined) return undefined;
    const left = exp - this.clock.now();
    if (left <= 0) {
      this.tokens.delete(key);
      return undefined;
    }
    return Math.ceil(left / 1000);
  }
}

/**
 * Starts the loopback endpoint.
 * @throws RaError `SERVE_NOT_LOOPBACK` for a non-loopback host, `SERVE_LISTEN_FAILED` (port in use...).
 */
export async function startMetadataServer(options: MetadataServerOptions): Promise<MetadataServer> {
  const host = options.host ?? "127.0.0.1";
  if (!isLoopbackHost(host.includes(":") && !host.startsWith("[") ? `[${host}]` : host)) {
    throw new RaError("usage", "SERVE_NOT_LOOPBACK", `the credentials endpoint only listens on loopback, not ${host}`, { hint: "use 127.0.0.1 or ::1" });
  }
  const clock = options.clock ?? systemClock;
  const limits = options.limits ?? DEFAULT_LIMITS;
  const log = options.log;
  const imds = options.imds ?? true;
  const roleName = roleNameOf(options.roleArn);
  const accountId = options.roleArn.split(":")[4] ?? "";
  const tokens = new TokenStore(clock);
  let ecsDigest: Buffer | undefined;
  if (options.ecsTokenFile) {
    const token = newToken();
    try {
      writePrivateFile(options.ecsTokenFile, token);
    } catch (e) {
      throw new RaError("usage", "SERVE_TOKEN_FILE", `cannot write the ECS token file ${options.ecsTokenFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint: "choose a writable directory for the token file", cause: e });
    }
    ecsDigest = digest(token);
  }
  let lastCreds: AwsCredentials | undefined;
  let lastUpdated = new Date(clock.now());

  const credentials = async (): Promise<AwsCredentials> => {
    const c = await options.getCredentials();
    if (c !== lastCreds) {
      lastCreds = c;
      lastUpdated = new Date(clock.now());
    }
    return c;
  };

  const fail = (res: ServerResponse, e: unknown) => {
    const status = statusForError(e);
    if (status === 500) log.error(`credentials endpoint: ${(e as Error)?.stack ?? String(e)}`);
    else log.warn(`credentials endpoint: no credentials to hand out: ${(e as Error).message}`);
    sendJson(res, status, errorBody(e));
  };

  const handleImds = (req: IncomingMessage, res: ServerResponse, path: string): void => {
    if (path === TOKEN_PATH || path === TOKEN_PATH + "/") {
      if (req.method !== "PUT") return sendText(res, 405, "method not allowed", { Allow: "PUT" });
      const ttlText = req.headers[TTL_HEADER];
      const ttl = typeof ttlText === "string" && /^\d{1,5}$/.test(ttlText) ? Number(ttlText) : NaN;
      if (!(ttl >= 1 && ttl <= 21600)) return sendText(res, 400, "invalid or missing X-aws-ec2-metadata-token-ttl-seconds (1-21600)");
      const token = tokens.issue(ttl);
      return sendText(res, 200, token, { "X-aws-ec2-metadata-token-ttl-seconds": String(ttl) });
    }
    const ext = path.startsWith(CREDS_EXT_PATH);
    const base = ext ? CREDS_EXT_PATH : CREDS_PATH;
    if (!path.startsWith(base)) return sendText(res, 404, "not found");
    if (req.method !== "GET" && req.method !== "HEAD") return sendText(res, 405, "method not allowed", { Allow: "GET" });
    const left = tokens.check(req.headers[TOKEN_HEADER] as string | undefined);
    if (left === undefined) return sendText(res, 401, "missing, unknown or expired IMDSv2 token (PUT /latest/api/token first)");
    const ttlHeader = { "X-aws-ec2-metadata-token-ttl-seconds": String(left) };
    const rest = path.slice(base.length);
    if (rest === "" || rest === "/") return sendText(res, 200, roleName, ttlHeader);
    const name = rest.replace(/^\//, "").replace(/\/$/, "");
    if (name !== roleName) return sendText(res, 404, "not found");
    credentials().then(
      (c) =>
        sendJson(
          res,
          200,
          {
            Code: "Success",
            LastUpdated: imdsTime(lastUpdated),
            Type: "AWS-HMAC",
            AccessKeyId: c.accessKeyId,
            SecretAccessKey: c.secretAccessKey,
            Token: c.sessionToken,
            Expiration: imdsTime(c.expiration),
            ...(ext && accountId ? { AccountId: accountId } : {}),
          },
          ttlHeader,
        ),
      (e) => fail(res, e),
    );
  };

  const handleEcs = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.method !== "GET") return sendText(res, 405, "method not allowed", { Allow: "GET" });
    const auth = req.headers.authorization;
    if (!auth) return sendJson(res, 401, { error: { code: "AccessDenied", message: "missing Authorization header (the token from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)" } });
    if (!timingSafeEqual(digest(auth), ecsDigest!)) {
      return sendJson(res, 403, { error: { code: "AccessDenied", message: "wrong authorization token" } });
    }
    credentials().then(
      (c) =>
        sendJson(res, 200, {
          AccessKeyId: c.accessKeyId,
          SecretAccessKey: c.secretAccessKey,
          Token: c.sessionToken,
          Expiration: imdsTime(c.expiration),
          RoleArn: options.roleArn,
          ...(accountId ? { AccountId: accountId } : {}),
        }),
      (e) => fail(res, e),
    );
  };

  const server: Server = createServer(serverOptions(limits), (req, res) => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q === -1 ? url : url.slice(0, q);
    if (!isLoopbackHost(req.headers.host)) return sendText(res, 400, "the Host header must name a loopback address");
    if (req.headers["x-forwarded-for"] !== undefined) return sendText(res, 400, "requests with X-Forwarded-For are refused");
    if (ecsDigest && path === ECS_PATH) return handleEcs(req, res);
    if (imds && path.startsWith("/latest/")) return handleImds(req, res, path);
    return sendText(res, 404, "not found");
  });
  hardenServer(server, limits, (code) => log.debug("credentials endpoint: malformed request", { code }));

  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(new RaError("usage", "SERVE_LISTEN_FAILED", `cannot listen on ${host}:${options.port ?? 9911}: ${e.code ?? e.message}`, { hint: e.code === "EADDRINUSE" ? "another program uses the port: choose another --port" : undefined, cause: e })),
    );
    server.listen({ host, port: options.port ?? 9911 }, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  return {
    url,
    port,
    imdsEndpoint: imds ? url + "/" : undefined,
    ecsFullUri: ecsDigest ? url + ECS_PATH : undefined,
    ecsTokenFile: options.ecsTokenFile,
    close: () =>
      new Promise<void>((resolve) => {
        if (options.ecsTokenFile) {
          try {
            unlinkSync(options.ecsTokenFile);
          } catch {
            // already gone
          }
        }
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
