/**
 * The emulator's two HTTP endpoints: Roles Anywhere (`POST /sessions`) and STS
 * (`GetCallerIdentity`), each on its own port. Every request is read with a
 * body limit, handled, and answered in the service's wire format; no input
 * can crash the process.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import type winston from "winston";
import { RaError, usageError } from "../errors";
import { logger as defaultLogger } from "../log/logger";
import { resolveEmulatorConfig, type EmulatorConfig, type ResolvedEmulatorConfig } from "./config";
import { handleCreateSession } from "./create-session";
import { CredentialStore, type IssuedSession } from "./credential-store";
import { RolesAnywhereError, StsError } from "./service-error";
import { splitTarget, type ReceivedRequest } from "./sigv4/canonical";
import { handleStsRequest, stsErrorXml } from "./sts";

/** Largest request header block accepted (a 5-certificate RSA-4096 chain fits). */
const MAX_HEADER_BYTES = 64 * 1024;
/** An oversized body is drained up to this size (so the client reads the 413), then the connection is cut. */
const MAX_DRAIN_BYTES = 8 * 1024 * 1024;

/** Options that are not part of the configuration. */
export interface EmulatorOptions {
  /** The clock used for date checks and expirations (tests move it). Default: the system clock. */
  clock?: () => Date;
  /** Logger; default the process-wide ra-agent logger (stderr). */
  logger?: winston.Logger;
}

/** A trust anchor as the running emulator reports it. */
export interface EmulatorTrustAnchorInfo {
  name: string;
  arn: string;
}

/** A profile as the running emulator reports it. */
export interface EmulatorProfileInfo {
  name: string;
  arn: string;
  roleArns: string[];
  durationSeconds: number;
  acceptRoleSessionName: boolean;
}

/** A running emulator. */
export interface RunningEmulator {
  /** Roles Anywhere endpoint, e.g. `http://127.0.0.1:PORT`. */
  endpoint: string;
  /** STS endpoint, e.g. `http://127.0.0.1:PORT2`. */
  stsEndpoint: string;
  region: string;
  accountId: string;
  /** The first trust anchor's ARN. */
  trustAnchorArn: string;
  /** The first profile's ARN. */
  profileArn: string;
  /** The first profile's roles. */
  roleArns: string[];
  trustAnchors: EmulatorTrustAnchorInfo[];
  profiles: EmulatorProfileInfo[];
  /** The validated configuration in use. */
  config: ResolvedEmulatorConfig;
  /** Successful CreateSession calls since start. */
  readonly createSessionCount: number;
  /** Sessions issued and still remembered (they include secrets: for in-process tests only). */
  issuedSessions(): IssuedSession[];
  /** Stops both endpoints and drops open connections. Idempotent. */
  close(): Promise<void>;
}

/** The one JSON line `ra-agent emulator` prints on stdout once listening. */
export function emulatorStartupLine(e: RunningEmulator): string {
  return JSON.stringify({ endpoint: e.endpoint, stsEndpoint: e.stsEndpoint, trustAnchorArn: e.trustAnchorArn, profileArn: e.profileArn, roleArns: e.roleArns });
}

type BodyResult = { ok: true; body: Buffer } | { ok: false; tooLarge: true } | { ok: false; aborted: true };

/** Reads the body up to `limit` bytes; a larger body is drained (within reason) and reported. */
function readBody(req: IncomingMessage, limit: number): Promise<BodyResult> {
  return new Promise((resolve) => {
    const declared = Number(req.headers["content-length"]);
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = Number.isFinite(declared) && declared > limit;
    let settled = false;
    const done = (r: BodyResult) => {
      if (!settled) {
        settled = true;
        resolve(r);
      }
    };
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) tooLarge = true;
      if (!tooLarge) chunks.push(chunk);
      else if (size > MAX_DRAIN_BYTES) {
        done({ ok: false, tooLarge: true });
        req.socket.destroy();
      }
    });
    req.on("end", () => done(tooLarge ? { ok: false, tooLarge: true } : { ok: true, body: Buffer.concat(chunks) }));
    req.on("error", () => done({ ok: false, aborted: true }));
    // After "end" this is a no-op; before it, the client went away mid-body.
    req.on("close", () => done({ ok: false, aborted: true }));
  });
}

function receivedRequest(req: IncomingMessage, body: Buffer): ReceivedRequest {
  const headers: Array<[string, string]> = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
  return { method: req.method ?? "", target: req.url ?? "/", headers, body };
}

function send(res: ServerResponse, status: number, headers: Record<string, string>, body: string): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { ...headers, "Content-Length": String(Buffer.byteLength(body)) });
  res.end(body);
}

function sendRolesAnywhereError(res: ServerResponse, requestId: string, error: RolesAnywhereError, close = false): void {
  send(
    res,
    error.status,
    {
      "Content-Type": "application/json",
      "X-Amzn-ErrorType": error.type,
      "x-amzn-RequestId": requestId,
      ...(close ? { Connection: "close" } : {}),
    },
    JSON.stringify({ message: error.message }),
  );
}

function sendStsError(res: ServerResponse, requestId: string, error: StsError, close = false): void {
  send(res, error.status, { "Content-Type": "text/xml", "x-amzn-RequestId": requestId, ...(close ? { Connection: "close" } : {}) }, stsErrorXml(error, requestId));
}

function listen(server: Server, host: string, port: number, what: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      reject(usageError("EMULATOR_LISTEN_FAILED", `the ${what} endpoint cannot listen on ${host}:${port}: ${e.code ?? e.message}`, "choose another --port/--sts-port (0 picks a free one) or --host", e));
    };
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

function urlFor(address: AddressInfo): string {
  let host = address.address;
  if (host === "0.0.0.0") host = "127.0.0.1";
  else if (host === "::") host = "::1";
  return `http://${host.includes(":") ? `[${host}]` : host}:${address.port}`;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function makeServer(handler: (req: IncomingMessage, res: ServerResponse) => Promise<void>, log: winston.Logger): Server {
  const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 30_000, headersTimeout: 15_000 }, (req, res) => {
    handler(req, res).catch((e: unknown) => {
      // Never reached in normal operation: handlers answer their own errors.
      log.error("emulator: unhandled error", { error: (e as Error)?.stack ?? String(e) });
      if (!res.headersSent) send(res, 500, { "Content-Type": "application/json", "X-Amzn-ErrorType": "InternalServerException" }, JSON.stringify({ message: "internal error" }));
    });
  });
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    // Malformed HTTP (bad header line, oversized headers): answer like a server would and drop the connection.
    if (err.code !== "ECONNRESET" && socket.writable) {
      const status = err.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    } else {
      socket.destroy();
    }
  });
  return server;
}

/**
 * Starts the Roles Anywhere endpoint and its STS endpoint.
 * @throws RaError `EMULATOR_CONFIG_INVALID` for a bad configuration,
 *   `EMULATOR_LISTEN_FAILED` when a port cannot be bound.
 */
export async function startEmulator(config: EmulatorConfig, options: EmulatorOptions = {}): Promise<RunningEmulator> {
  const resolved = resolveEmulatorConfig(config);
  const clock = options.clock ?? (() => new Date());
  const log = options.logger ?? defaultLogger;
  const store = new CredentialStore();
  let createSessionCount = 0;

  const rolesAnywhere = makeServer(async (req, res) => {
    const requestId = randomUUID();
    const { rawPath } = splitTarget(req.url ?? "/");
    const body = await readBody(req, resolved.maxBodyBytes);
    if (!body.ok) {
      if ("tooLarge" in body) {
        log.info("emulator: CreateSession refused: body too large", { requestId });
        sendRolesAnywhereError(res, requestId, new RolesAnywhereError("ValidationException", "body-too-large", `Request body exceeds ${resolved.maxBodyBytes} bytes`, 413), true);
      }
      return;
    }
    if (rawPath !== "/sessions" || req.method !== "POST") {
      sendRolesAnywhereError(res, requestId, new RolesAnywhereError("UnknownOperationException", "unknown-operation", `No operation at ${req.method} ${rawPath}; this endpoint implements POST /sessions (CreateSession)`));
      return;
    }
    try {
      const { response, session } = await handleCreateSession(receivedRequest(req, body.body), resolved, store, clock());
      createSessionCount++;
      log.info("emulator: CreateSession 201", {
        requestId,
        roleArn: session.roleArn,
        roleSessionName: session.roleSessionName,
        certificateSerial: session.certificateSerialHex,
        accessKeyId: session.accessKeyId,
        expiration: session.expiration.toISOString(),
      });
      send(res, 201, { "Content-Type": "application/json", "x-amzn-RequestId": requestId }, JSON.stringify(response));
    } catch (e) {
      if (!(e instanceof RolesAnywhereError)) throw e;
      log.info(`emulator: CreateSession ${e.status} ${e.type}`, { requestId, rule: e.rule, reason: e.message.split("\n")[0] });
      log.debug("emulator: CreateSession refusal detail", { requestId, detail: e.message });
      sendRolesAnywhereError(res, requestId, e);
    }
  }, log);

  const sts = makeServer(async (req, res) => {
    const requestId = randomUUID();
    const { rawPath } = splitTarget(req.url ?? "/");
    const body = await readBody(req, resolved.maxBodyBytes);
    if (!body.ok) {
      if ("tooLarge" in body) sendStsError(res, requestId, new StsError("RequestEntityTooLarge", `Request body exceeds ${resolved.maxBodyBytes} bytes`, 413), true);
      return;
    }
    if (rawPath !== "/" || (req.method !== "POST" && req.method !== "GET")) {
      sendStsError(res, requestId, new StsError("InvalidAction", `No operation at ${req.method} ${rawPath}; STS answers GET or POST on /`, 404));
      return;
    }
    try {
      const result = handleStsRequest(receivedRequest(req, body.body), store, { now: clock(), maxClockSkewSeconds: resolved.maxClockSkewSeconds }, requestId);
      log.info(`emulator: STS ${result.action} 200`, { requestId, arn: result.session.assumedRoleArn });
      send(res, 200, { "Content-Type": "text/xml", "x-amzn-RequestId": requestId }, result.xml);
    } catch (e) {
      if (!(e instanceof StsError)) throw e;
      log.info(`emulator: STS ${e.status} ${e.code}`, { requestId, reason: e.message });
      sendStsError(res, requestId, e);
    }
  }, log);

  let closed = false;
  const closeAll = async () => {
    if (closed) return;
    closed = true;
    await Promise.all([closeServer(rolesAnywhere), closeServer(sts)]);
  };
  let raAddress: AddressInfo;
  let stsAddress: AddressInfo;
  try {
    raAddress = await listen(rolesAnywhere, resolved.host, resolved.port, "Roles Anywhere");
    stsAddress = await listen(sts, resolved.host, resolved.stsPort, "STS");
  } catch (e) {
    await closeAll();
    throw e instanceof RaError ? e : usageError("EMULATOR_LISTEN_FAILED", String(e), "check --host and the ports", e);
  }

  const first = resolved.profiles[0];
  const running: RunningEmulator = {
    endpoint: urlFor(raAddress),
    stsEndpoint: urlFor(stsAddress),
    region: resolved.region,
    accountId: resolved.accountId,
    trustAnchorArn: resolved.trustAnchors[0].arn,
    profileArn: first.arn,
    roleArns: [...first.roleArns],
    trustAnchors: resolved.trustAnchors.map((t) => ({ name: t.name, arn: t.arn })),
    profiles: resolved.profiles.map((p) => ({ name: p.name, arn: p.arn, roleArns: [...p.roleArns], durationSeconds: p.durationSeconds, acceptRoleSessionName: p.acceptRoleSessionName })),
    config: resolved,
    get createSessionCount() {
      return createSessionCount;
    },
    issuedSessions: () => store.list(),
    close: closeAll,
  };
  log.info("emulator: listening", { endpoint: running.endpoint, stsEndpoint: running.stsEndpoint, region: resolved.region });
  if (!isLoopbackAddress(resolved.host)) {
    log.warn(`emulator: listening on ${resolved.host}, not loopback: it hands out credentials over plain HTTP to anyone who can reach it; use it on test networks only`);
  }
  return running;
}

function isLoopbackAddress(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
