/**
 * The PKCS#11 thread, seen from the main thread: a worker thread that owns every
 * PKCS#11 call of the process, and {@link ThreadedPkcs11Signer}, a {@link Signer}
 * whose key operations run there. The agent uses it so that a slow or serialised
 * token (a TPM, a smart card, an HSM across the network) never stalls the event
 * loop that serves credentials, and so that signing and HTTP use separate cores.
 *
 * This file loads neither pkcs11js nor any PKCS#11 code on the main thread; it
 * only imports types from the backend.
 */
import { join } from "node:path";
import { SHARE_ENV, Worker } from "node:worker_threads";
import { RaError } from "../../../errors";
import { logger } from "../../../log/logger";
import type { DigestAlgorithm, KeyType, SigV4X509Algorithm, Signer } from "../../signer";
import type { ModuleListing } from "../enumerate";
import type { PinProvider } from "../pin";
import type { Pkcs11SignerOptions, Pkcs11SignerStatus, Pkcs11TokenInfo } from "../signer";
import { asBuffer, bytesFromWire, bytesToWire, deserializeError, LogRecord, MessageBatch, Outbox, PinAnswer, PinAsk, serializeError, SignerDescription, ThreadListOptions, ThreadReply, ThreadRequest, unbatch } from "./messages";
import { SignLane } from "./sign-lane";
import type { ThreadStartData } from "./thread-main";
import type { LaneGrantDescription } from "../lane-grant";

type Pending = { resolve: (v: unknown) => void; reject: (e: unknown) => void };
type RequestBody = ThreadRequest extends infer R ? (R extends { id: number } ? Omit<R, "id"> : never) : never;

/**
 * Young-generation cap of the thread's heap, MiB. It allocates little (a request,
 * a signature); a small young generation keeps the agent's memory flat.
 */
const THREAD_YOUNG_GENERATION_MB = 2;

/** Calls under way on the PKCS#11 thread from which a quick key asks for a signing lane: a queue, not a pair of requests. */
const LANE_AFTER_PENDING = 4;
/** After a key did not get a lane, or gave one up, the next request waits this long, ms. */
const LANE_RETRY_MS = 5_000;

/**
 * One worker thread for all PKCS#11 work of a process. Started on first use;
 * keeps the process alive only while a call is pending.
 */
export class Pkcs11Thread {
  #worker?: Worker;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #pinChannels = new Map<number, PinProvider>();
  #nextChannel = 1;
  #closed = false;
  #outbox?: Outbox<ThreadRequest>;
  /** Bumped each time a thread stops: signers opened before are unusable. */
  #generation = 0;

  #lane?: SignLane;

  /** Calls under way on the thread. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** The signing lane thread for quick keys (see ../lane-grant), created on first use. */
  get lane(): SignLane {
    return (this.#lane ??= new SignLane());
  }

  /** How many times a thread stopped; signers remember the value they were opened at. */
  get generation(): number {
    return this.#generation;
  }

  #start(): Worker {
    const worker = new Worker(join(__dirname, "thread-main.js"), {
      env: SHARE_ENV,
      workerData: { logForwarding: { level: logger.level } } satisfies ThreadStartData,
      resourceLimits: { maxYoungGenerationSizeMb: THREAD_YOUNG_GENERATION_MB },
    });
    worker.on("message", (msg: ThreadReply | PinAsk | LogRecord | MessageBatch<ThreadReply>) => {
      for (const m of unbatch(msg)) this.#onMessage(m, worker);
    });
    this.#outbox = new Outbox<ThreadRequest>((m) => worker.postMessage(m));
    worker.on("error", (e) => this.#failAll(worker, e));
    worker.on("exit", (code) => this.#failAll(worker, new Error(`it exited with code ${code}`)));
    worker.unref();
    return worker;
  }

  /** Rejects every pending call when the thread dies; the next call starts a new one. */
  #failAll(worker: Worker, e: Error): void {
    if (this.#worker !== worker) return;
    this.#worker = undefined;
    if (!this.#closed) this.#generation++;
    if (!this.#closed) logger.error("the PKCS#11 thread stopped", { error: e.message });
    // The lane's sessions were lent by the thread that stopped.
    this.#lane?.close();
    const err = threadStoppedError(e.message);
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  #onMessage(msg: ThreadReply | PinAsk | LogRecord, from: Worker): void {
    switch (msg.op) {
      case "reply": {
        const p = this.#pending.get(msg.id);
        if (!p) return;
        this.#pending.delete(msg.id);
        if (this.#pending.size === 0) this.#worker?.unref();
        if (msg.ok) p.resolve(msg.value);
        else p.reject(deserializeError(msg.error));
        return;
      }
      case "pin":
        void this.#answerPin(msg, from);
        return;
      case "log":
        logger.log(msg.level, msg.message, msg.meta);
        return;
    }
  }

  /**
   * Answers a PIN request of thread `from`. The answer goes to that thread only: a
   * thread that stopped while a PIN source was slow must not pass its PIN to the
   * next thread, whose request numbers start again.
   */
  async #answerPin(ask: PinAsk, from: Worker): Promise<void> {
    let answer: PinAnswer;
    try {
      const provider = this.#pinChannels.get(ask.channel);
      answer = { op: "pin-answer", ask: ask.ask, ok: true, result: provider ? await provider.getPin(ask.request) : undefined };
    } catch (e) {
      answer = { op: "pin-answer", ask: ask.ask, ok: false, error: serializeError(e) };
    }
    if (this.#worker === from) from.postMessage(answer);
  }

  /**
   * Runs one operation on the thread.
   * @throws whatever the operation throws there (as an RaError), `PKCS11_THREAD_STOPPED`, `PKCS11_THREAD_CLOSED`
   */
  call<T>(body: RequestBody): Promise<T> {
    if (this.#closed) {
      return Promise.reject(new RaError("internal", "PKCS11_THREAD_CLOSED", "the PKCS#11 thread was closed", { hint: "this happens only while the agent shuts down" }));
    }
    const worker = (this.#worker ??= this.#start());
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      if (this.#pending.size === 1) worker.ref();
      // The caller's object is its own (built for this call): add the id in place.
      (body as ThreadRequest).id = id;
      this.#outbox!.push(body as ThreadRequest);
    });
  }

  /**
   * Opens a PKCS#11 signer on the thread. PIN requests come back to `opts.pin`
   * on this thread (a prompt or a PIN file is read here).
   * @throws the errors of {@link openPkcs11Signer}
   */
  async openSigner(opts: Pkcs11SignerOptions): Promise<ThreadedPkcs11Signer> {
    const { pin, ...options } = opts;
    const channel = pin ? this.#nextChannel++ : 0;
    if (pin) this.#pinChannels.set(channel, pin);
    try {
      const d = await this.call<SignerDescription>({ op: "open", options, pinChannel: channel });
      return new ThreadedPkcs11Signer(this, d, this.#generation, () => this.#pinChannels.delete(channel));
    } catch (e) {
      this.#pinChannels.delete(channel);
      throw e;
    }
  }

  /** Lists modules, slots, tokens and public objects, without logging in. */
  list(options: ThreadListOptions): Promise<ModuleListing[]> {
    return this.call<ModuleListing[]>({ op: "list", options });
  }

  /**
   * Ends the thread at once, as a crash would (pending calls fail with
   * `PKCS11_THREAD_STOPPED`; the next call starts a new thread). For tests.
   * @internal
   */
  async terminateForTest(): Promise<void> {
    await this.#worker?.terminate();
  }

  /** Closes every signer, logs out, finalises the modules and stops the thread. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    const worker = this.#worker;
    this.#lane?.close();
    if (worker) await this.call({ op: "close-all" }).catch((e: unknown) => logger.debug("closing the PKCS#11 thread's tokens failed", { error: (e as Error).message }));
    this.#closed = true;
    this.#lane?.close();
    this.#pinChannels.clear();
    if (worker) await worker.terminate();
  }
}

/** The error for work lost, or signers left behind, when the PKCS#11 thread stopped. */
function threadStoppedError(why: string): RaError {
  return new RaError("internal", "PKCS11_THREAD_STOPPED", `the PKCS#11 thread stopped: ${why}`, {
    hint: "the token operation did not finish; the agent opens the key again on the next request; report the log if it happens again",
  });
}

/**
 * A {@link Signer} whose key lives in a PKCS#11 token handled by a {@link Pkcs11Thread}.
 * Same behaviour as the in-thread signer (one login per token, recovery, PIN
 * rules, verification); only the thread differs.
 */
export class ThreadedPkcs11Signer implements Signer {
  readonly keyType: KeyType;
  readonly algorithm: SigV4X509Algorithm;
  readonly certificate: Uint8Array;
  readonly chain: readonly Uint8Array[];
  readonly source = "pkcs11" as const;
  readonly hardwareBacked: boolean;
  /** Exact URI of the private key (no PIN). */
  readonly keyUri: string;
  /** Exact URI of the certificate when it is on the token. */
  readonly certificateUri?: string;
  /** The token holding the key, as it was at open. */
  readonly tokenInfo: Pkcs11TokenInfo;
  readonly #thread: Pkcs11Thread;
  readonly #id: number;
  readonly #onClose: () => void;
  readonly #generation: number;
  #closed = false;
  /** The grant this key signs with on the lane thread, if any (see ../lane-grant). */
  #lane?: { grant: number; key: number; digest: DigestAlgorithm };
  #laneRequested = false;
  #laneSignatures = 0;
  #nextLaneRequest = 0;
  #probing?: Promise<Pkcs11SignerStatus>;
  #lastStatus?: Pkcs11SignerStatus;

  /** @internal use {@link Pkcs11Thread.openSigner} */
  constructor(thread: Pkcs11Thread, d: SignerDescription, generation: number, onClose: () => void) {
    this.#thread = thread;
    this.#generation = generation;
    this.#id = d.signer;
    this.#onClose = onClose;
    this.keyType = d.keyType;
    this.algorithm = d.algorithm;
    this.certificate = asBuffer(d.certificate);
    this.chain = d.chain.map(asBuffer);
    this.hardwareBacked = d.hardwareBacked;
    this.keyUri = d.keyUri;
    this.certificateUri = d.certificateUri;
    this.tokenInfo = d.tokenInfo;
  }

  /**
   * Signs on the PKCS#11 thread.
   * @throws the errors of {@link Pkcs11Signer.sign}; `PKCS11_THREAD_STOPPED` when the
   *   thread that opened this signer stopped (open the key again)
   */
  sign(message: Uint8Array, digest: DigestAlgorithm = "SHA256"): Promise<Buffer> {
    if (this.#closed) return Promise.reject(new RaError("internal", "SIGNER_CLOSED", "the PKCS#11 signer was closed", { hint: "open it again" }));
    if (this.#thread.generation !== this.#generation) return Promise.reject(threadStoppedError("this key was opened in a thread that is gone"));
    const wire = bytesToWire(message);
    const lane = this.#lane;
    // Under concurrent load, every other signature goes to the lane thread.
    if (lane && lane.digest === digest && this.#thread.lane.inFlight(lane.key) < this.#thread.pendingCount) {
      return this.#thread.lane.sign(lane.key, wire).then((r) => (r.ok ? this.#fromLane(r.value) : this.#bounced(lane, r.bounced, wire, digest)));
    }
    if (!lane && this.#thread.pendingCount >= LANE_AFTER_PENDING && !this.#laneRequested && Date.now() >= this.#nextLaneRequest) this.#requestLane(digest);
    return this.#signOnThread(wire, digest);
  }

  /** Signatures made on the lane thread (see ../lane-grant); the PKCS#11 thread's status counts the others. */
  get laneSignatures(): number {
    return this.#laneSignatures;
  }

  #fromLane(wire: string): Buffer {
    this.#laneSignatures++;
    return bytesFromWire(wire);
  }

  #signOnThread(wire: string, digest: DigestAlgorithm): Promise<Buffer> {
    return this.#thread.call<string>({ op: "sign", signer: this.#id, message: wire, digest }).then(bytesFromWire);
  }

  /** A signature the lane handed back: the lane is given up, and the PKCS#11 thread makes it. */
  #bounced(lane: { key: number }, why: string, wire: string, digest: DigestAlgorithm): Promise<Buffer> {
    if (this.#lane === lane) {
      this.#dropLane(`it handed a signature back: ${why}`);
      this.#nextLaneRequest = Date.now() + LANE_RETRY_MS;
    }
    if (this.#closed) return Promise.reject(new RaError("internal", "SIGNER_CLOSED", "the PKCS#11 signer was closed", { hint: "open it again" }));
    if (this.#thread.generation !== this.#generation) return Promise.reject(threadStoppedError("this key was opened in a thread that is gone"));
    return this.#signOnThread(wire, digest);
  }

  #requestLane(digest: DigestAlgorithm): void {
    this.#laneRequested = true;
    const retryLater = () => {
      this.#laneRequested = false;
      this.#nextLaneRequest = Date.now() + LANE_RETRY_MS;
    };
    this.#thread.call<LaneGrantDescription | null>({ op: "lane-grant", signer: this.#id, digest }).then(
      (d) => {
        if (!d) return retryLater();
        this.#laneRequested = false;
        if (this.#closed || this.#thread.generation !== this.#generation) {
          void this.#thread.call({ op: "lane-release", signer: this.#id, grant: d.grant }).catch(() => undefined);
          return;
        }
        let key: number;
        try {
          key = this.#thread.lane.attach(d, (why) => {
            if (this.#lane?.key === key) this.#dropLane(why);
          });
        } catch (e) {
          logger.warn("could not start a signing lane; signing goes on without one", { key: this.keyUri, error: (e as Error).message });
          this.#nextLaneRequest = Date.now() + LANE_RETRY_MS;
          void this.#thread.call({ op: "lane-release", signer: this.#id, grant: d.grant }).catch(() => undefined);
          return;
        }
        this.#lane = { grant: d.grant, key, digest };
        logger.debug("signing on two threads under load", { key: this.keyUri, grant: d.grant });
      },
      (e: unknown) => {
        retryLater();
        logger.debug("no signing lane", { key: this.keyUri, error: (e as Error).message });
      },
    );
  }

  /** Gives the lane's session back to the PKCS#11 thread. */
  #dropLane(why: string): void {
    const lane = this.#lane;
    if (!lane) return;
    this.#lane = undefined;
    logger.debug("signing lane given up", { key: this.keyUri, grant: lane.grant, why });
    this.#thread.lane.detach(lane.key);
    // A thread that stopped took its sessions with it; a new one knows nothing of this grant.
    if (this.#thread.generation === this.#generation) void this.#thread.call({ op: "lane-release", signer: this.#id, grant: lane.grant }).catch(() => undefined);
  }

  /** Cached token state (no token I/O), from the thread. */
  status(): Promise<Pkcs11SignerStatus> {
    return this.#statusCall(false);
  }

  /** Token state with a fresh look at the token (presence, PIN flags); never logs in. */
  probe(): Promise<Pkcs11SignerStatus> {
    // One look at a time: status polls must not pile up on the thread that signs.
    this.#probing ??= this.#statusCall(true).finally(() => (this.#probing = undefined));
    return this.#probing;
  }

  /** The last status the thread reported (no call), if any. */
  get lastStatus(): Pkcs11SignerStatus | undefined {
    return this.#lastStatus;
  }

  async #statusCall(probe: boolean): Promise<Pkcs11SignerStatus> {
    if (this.#thread.generation !== this.#generation) throw threadStoppedError("this key was opened in a thread that is gone");
    this.#lastStatus = await this.#thread.call<Pkcs11SignerStatus>({ op: "status", signer: this.#id, probe });
    return this.#lastStatus;
  }

  /** Releases this signer's hold on the token. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#dropLane("the key was closed");
    this.#onClose();
    // Signer numbers start again in a new thread: never close another signer's number.
    if (this.#thread.generation !== this.#generation) return;
    await this.#thread.call({ op: "close", signer: this.#id }).catch(() => undefined);
  }
}
