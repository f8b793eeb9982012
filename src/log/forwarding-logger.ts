/**
 * The logger of a worker thread that ra-agent starts (the PKCS#11 thread): it
 * posts each record to the parent thread, whose winston logger formats, redacts
 * and writes it. One format and one redaction for the whole process, and winston
 * (≈ 5 MB of heap per thread) is not loaded a second time.
 */
import type { MessagePort } from "node:worker_threads";

/** A log record as it crosses to the parent thread. */
export interface LogRecord {
  op: "log";
  level: string;
  message: string;
  meta: Record<string, unknown>;
}

/** What a worker thread needs to know to forward its logs (passed in `workerData`). */
export interface LogForwarding {
  /** The parent's level: records below it are not sent. */
  level: string;
}

const SEVERITY: Record<string, number> = { error: 0, warn: 1, info: 2, http: 3, verbose: 4, debug: 5, silly: 6 };

/** The subset of winston's logger that ra-agent's code uses. */
export interface ForwardingLogger {
  level: string;
  log(level: string, message: unknown, meta?: unknown): void;
  error(message: unknown, meta?: unknown): void;
  warn(message: unknown, meta?: unknown): void;
  info(message: unknown, meta?: unknown): void;
  debug(message: unknown, meta?: unknown): void;
  isDebugEnabled(): boolean;
}

/** A field that cannot cross threads (a function, a native handle) is sent as text. */
function cloneable(meta: Record<string, unknown>): Record<string, unknown> {
  return JSON.parse(JSON.stringify(meta, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)) ?? "{}") as Record<string, unknown>;
}

/** Creates a logger that posts records at or above `forwarding.level` to `port`. */
export function createForwardingLogger(port: MessagePort, forwarding: LogForwarding): ForwardingLogger {
  const threshold = SEVERITY[forwarding.level] ?? SEVERITY.info;
  const self: ForwardingLogger = {
    level: forwarding.level,
    log(level, message, meta) {
      if ((SEVERITY[level] ?? 0) > threshold) return;
      const fields = meta !== null && typeof meta === "object" && !Array.isArray(meta) ? (meta as Record<string, unknown>) : meta === undefined ? {} : { meta };
      const record: LogRecord = { op: "log", level, message: message instanceof Error ? message.message : String(message), meta: fields };
      try {
        port.postMessage(record);
      } catch {
        port.postMessage({ ...record, meta: cloneable(fields) });
      }
    },
    error: (m, meta) => self.log("error", m, meta),
    warn: (m, meta) => self.log("warn", m, meta),
    info: (m, meta) => self.log("info", m, meta),
    debug: (m, meta) => self.log("debug", m, meta),
    isDebugEnabled: () => threshold >= SEVERITY.debug,
  };
  return self;
}
