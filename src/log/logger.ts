import { isMainThread, parentPort, workerData } from "node:worker_threads";
import type winston from "winston";
import { createForwardingLogger, type LogForwarding } from "./forwarding-logger";

/** winston, loaded on first use (a forwarding worker thread never loads it). */
function loadWinston(): typeof winston {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require("winston") as typeof winston;
}

/** Log output format: human text or one JSON object per line. */
export type LogFormat = "text" | "json";

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  level?: "error" | "warn" | "info" | "debug";
  format?: LogFormat;
}

/**
 * Field names whose values are never logged. Matching is case-insensitive and
 * ignores `-` and `_`, so `SessionToken`, `session_token` and `x-amz-security-token` all match.
 * A bare `token` is not on the list: in ra-agent it names a PKCS#11 token.
 */
const SECRET_FIELDS = new Set(
  [
    "pin", "pinvalue", "userpin", "sopin", "password", "passphrase", "pkcs8password",
    "secretaccesskey", "secretkey", "sessiontoken", "securitytoken", "xamzsecuritytoken",
    "authorization", "authorizationtoken", "imdstoken", "metadatatoken", "bearertoken", "accesstoken",
    "privatekey", "credentials",
  ],
);

function isSecretField(name: string): boolean {
  return SECRET_FIELDS.has(name.toLowerCase().replace(/[-_]/g, ""));
}

/** Replaces the values of secret fields, recursively, with `[redacted]`. */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 6 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  if (value instanceof Error || Buffer.isBuffer(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = isSecretField(k) ? "[redacted]" : redact(v, depth + 1);
  }
  return out;
}

// PINs and secrets can also appear inside free text such as a pkcs11: URI.
const INLINE_SECRETS = /(pin-value=)[^&;\s"]*/gi;

const redactFormat = (winston: typeof import("winston")) => winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (isSecretField(key)) (info as Record<string, unknown>)[key] = "[redacted]";
    else (info as Record<string, unknown>)[key] = redact(info[key]);
  }
  if (typeof info.message === "string") info.message = info.message.replace(INLINE_SECRETS, "$1[redacted]");
  return info;
});

/**
 * Creates a winston logger that writes only to stderr (stdout carries results)
 * and redacts secret fields.
 */
export function createLogger(options: LoggerOptions = {}): winston.Logger {
  const winston = loadWinston();
  const format = options.format === "json"
    ? winston.format.combine(redactFormat(winston)(), winston.format.timestamp(), winston.format.json())
    : winston.format.combine(
        redactFormat(winston)(),
        winston.format.timestamp(),
        winston.format.printf(({ timestamp, level, message, ...rest }) => {
          const extra = Object.keys(rest).length ? " " + JSON.stringify(rest) : "";
          return `${timestamp} ${level} ${String(message)}${extra}`;
        }),
      );
  return winston.createLogger({
    level: options.level ?? "info",
    format,
    transports: [new winston.transports.Stream({ stream: process.stderr })],
  });
}

/** In a worker thread that ra-agent started with `workerData.logForwarding`: where its logs go. */
const forwarding = !isMainThread && parentPort ? (workerData as { logForwarding?: LogForwarding } | undefined)?.logForwarding : undefined;

/**
 * The process-wide logger; the CLI reconfigures its level from `--debug` / `--log-level`.
 * In a forwarding worker thread (the PKCS#11 thread) it posts records to the parent
 * thread instead: that logger has only the methods ra-agent uses (debug, info, warn,
 * error, log, level, isDebugEnabled).
 */
export const logger: winston.Logger = forwarding
  ? (createForwardingLogger(parentPort!, forwarding) as unknown as winston.Logger)
  : createLogger({
      level: (process.env.RA_AGENT_LOG_LEVEL as LoggerOptions["level"]) ?? "warn",
      format: process.env.RA_AGENT_LOG_FORMAT === "json" ? "json" : "text",
    });

/** Changes the process-wide logger's level and format. */
export function configureLogger(options: LoggerOptions): void {
  const fresh = createLogger({ level: options.level ?? (logger.level as LoggerOptions["level"]), format: options.format });
  logger.configure({ level: fresh.level, format: fresh.format, transports: fresh.transports });
}
