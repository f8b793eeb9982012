/**
 * The messages between the main thread and the PKCS#11 thread, and how errors
 * cross between them. Everything here survives the structured clone of
 * `postMessage`: no functions, no class instances (Buffers arrive as Uint8Array).
 */
import { ErrorKind, RaError } from "../../../errors";
import type { DigestAlgorithm, KeyType, SigV4X509Algorithm } from "../../signer";
import type { ListOptions } from "../enumerate";
import type { LaneGrantDescription } from "../lane-grant";
import type { PinRequest, PinResult } from "../pin";
import type { Pkcs11SignerOptions, Pkcs11SignerStatus, Pkcs11TokenInfo } from "../signer";

/** {@link Pkcs11SignerOptions} without the PIN provider, which stays on the main thread. */
export type ThreadOpenOptions = Omit<Pkcs11SignerOptions, "pin">;

/** {@link ListOptions} without a PIN provider: listings from the thread never log in. */
export type ThreadListOptions = Omit<ListOptions, "pin" | "login">;

/** Main thread → PKCS#11 thread: one operation, answered by a {@link ThreadReply} with the same id. */
export type ThreadRequest =
  | { op: "open"; id: number; options: ThreadOpenOptions; /** PIN channel on the main thread, 0 for none. */ pinChannel: number }
  | { op: "sign"; id: number; signer: number; /** The message's bytes as a latin1 string (see {@link bytesToWire}). */ message: string; digest: DigestAlgorithm }
  | { op: "status"; id: number; signer: number; /** Look at the token (C_GetTokenInfo) instead of cached state. */ probe: boolean }
  | { op: "close"; id: number; signer: number }
  | { op: "lane-grant"; id: number; signer: number; digest: DigestAlgorithm }
  | { op: "lane-release"; id: number; signer: number; grant: number }
  | { op: "list"; id: number; options: ThreadListOptions }
  | { op: "close-all"; id: number };

/** Main thread → lane thread (see ../lane-grant). */
export type LaneRequest =
  | { op: "attach"; description: LaneGrantDescription }
  | { op: "detach"; grant: number }
  | { op: "exit" }
  | { op: "sign"; id: number; grant: number; /** latin1, as in {@link ThreadRequest} */ message: string };

/**
 * Lane thread → main thread: a signature (latin1), or the request handed back
 * ("bounced") to be made by the PKCS#11 thread, with why, for the debug log.
 */
export type LaneReply = { op: "reply"; id: number; ok: true; value: string } | { op: "reply"; id: number; ok: false; bounced: string };

/** Main thread → PKCS#11 thread: the answer to a {@link PinAsk}. */
export type PinAnswer = { op: "pin-answer"; ask: number; ok: true; result?: PinResult } | { op: "pin-answer"; ask: number; ok: false; error: SerializedError };

/** PKCS#11 thread → main thread: the result of a {@link ThreadRequest}. */
export type ThreadReply = { op: "reply"; id: number; ok: true; value: unknown } | { op: "reply"; id: number; ok: false; error: SerializedError };

/** PKCS#11 thread → main thread: a PIN is needed (the PIN sources live on the main thread). */
export interface PinAsk {
  op: "pin";
  ask: number;
  channel: number;
  request: PinRequest;
}

/** PKCS#11 thread → main thread: a log record, written by the main thread's logger (one format, one redaction). */
export type { LogRecord } from "../../../log/forwarding-logger";

/** What the main thread learns about a signer opened in the thread. */
export interface SignerDescription {
  signer: number;
  keyType: KeyType;
  algorithm: SigV4X509Algorithm;
  certificate: Uint8Array;
  chain: Uint8Array[];
  hardwareBacked: boolean;
  keyUri: string;
  certificateUri?: string;
  tokenInfo: Pkcs11TokenInfo;
}

export type { Pkcs11SignerStatus };

/** An error as it crosses threads: the {@link RaError} fields plus the PKCS#11 details when there are some. */
export interface SerializedError {
  kind: ErrorKind;
  code: string;
  message: string;
  hint?: string;
  /** Numeric CKR value, `CKR_*` name, failing C_* function, PIN state: copied as they are. */
  details?: Record<string, unknown>;
}

const DETAIL_FIELDS = ["ckr", "ckrName", "operation", "pinState"] as const;

/** Turns any thrown value into a {@link SerializedError} (non-RaErrors become `internal`). */
export function serializeError(e: unknown): SerializedError {
  if (e instanceof RaError) {
    const details: Record<string, unknown> = {};
    for (const f of DETAIL_FIELDS) {
      const v = (e as unknown as Record<string, unknown>)[f];
      if (v !== undefined) details[f] = v;
    }
    return { kind: e.kind, code: e.code, message: e.message, hint: e.hint, details: Object.keys(details).length ? details : undefined };
  }
  const message = e instanceof Error ? e.message : String(e);
  return { kind: "internal", code: "PKCS11_THREAD_ERROR", message: `the PKCS#11 thread failed: ${message}`, hint: "this is a bug in ra-agent; run with --log-level debug and report it" };
}

/**
 * Rebuilds the error on the receiving thread: an {@link RaError} with the same
 * kind, code, message and hint, and the PKCS#11 details as properties (so that
 * `e.ckr` reads as it does on the thread).
 */
export function deserializeError(s: SerializedError): RaError {
  const e = new RaError(s.kind, s.code, s.message, { hint: s.hint });
  if (s.details) Object.assign(e, s.details);
  return e;
}

/** Several messages sent as one (see {@link Outbox}). */
export interface MessageBatch<T> {
  op: "batch";
  messages: T[];
}

/**
 * Sends messages to the other thread in batches: every message queued during an
 * event-loop turn goes in one `postMessage`, and a batch that reaches
 * {@link Outbox.FLUSH_AT} messages is posted at once. Under load (many signatures in
 * flight) batching saves a cross-thread wake-up per message; posting every few
 * messages keeps both threads busy at the same time: the main thread answers the
 * first signatures of a batch while the PKCS#11 thread makes the next ones
 * (measured through the agent: 46-49 % of raw signing rate with whole-turn
 * batches, 54-61 % with this).
 */
export class Outbox<T> {
  /** Queued messages that are posted without waiting for the end of the turn. */
  static readonly FLUSH_AT = 8;
  #queue: T[] = [];
  #scheduled = false;

  constructor(private readonly post: (message: T | MessageBatch<T>) => void) {}

  /** Queues `message`; it is posted at the end of this event-loop turn, or now when the batch is full. */
  push(message: T): void {
    this.#queue.push(message);
    if (this.#queue.length >= Outbox.FLUSH_AT) return this.flush();
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.flush();
    });
  }

  /** Posts what is queued now. */
  flush(): void {
    const queue = this.#queue;
    if (queue.length === 0) return;
    this.#queue = [];
    this.post(queue.length === 1 ? queue[0] : { op: "batch", messages: queue });
  }
}

/** The messages in `message`: itself, or those of a batch. */
export function unbatch<T extends { op: string }>(message: T | MessageBatch<T>): T[] {
  return message.op === "batch" ? (message as MessageBatch<T>).messages : [message as T];
}

/** A Uint8Array that arrived through postMessage, as a Buffer over the same memory. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Bytes as a latin1 string, one character per byte, for messages between the
 * threads. A string crosses postMessage as a plain copy, while every Uint8Array
 * brings a new ArrayBuffer with its own backing store on the other side: under
 * signing load those allocations were a large part of both threads' GC work.
 */
export function bytesToWire(bytes: Uint8Array): string {
  return asBuffer(bytes).toString("latin1");
}

/** The bytes of a {@link bytesToWire} string (a Buffer from the shared pool). */
export function bytesFromWire(wire: string): Buffer {
  return Buffer.from(wire, "latin1");
}
