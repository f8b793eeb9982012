/**
 * A signing lane thread, seen from the main thread (see ../lane-grant and
 * ./lane-main). Started when a quick key is first given a lane, and stopped when
 * no lane has been used for {@link SignLane.IDLE_MS}, so that an agent that only
 * serves cached credentials does not keep a thread's memory.
 */
import { join } from "node:path";
import { SHARE_ENV, Worker } from "node:worker_threads";
import { logger } from "../../../log/logger";
import { LANE_BUSY, LANE_VALID } from "../lane-control";
import type { LaneGrantDescription } from "../lane-grant";
import { LaneReply, LaneRequest, MessageBatch, Outbox, unbatch } from "./messages";

/** Young-generation cap of the lane's heap, MiB: it allocates a request and a signature at a time. */
const LANE_YOUNG_GENERATION_MB = 2;

interface Grant {
  /** The grant's shared words (see ../lane-control). */
  words: Int32Array;
  inFlight: number;
  lastUse: number;
  /** Called when the grant is dropped for idleness or because the thread stopped. */
  onDrop: (why: string) => void;
}

/** One lane thread and the grants attached to it. */
export class SignLane {
  /** A grant unused this long is given back, and the thread stops with the last one, ms (tests shorten it). */
  static IDLE_MS = 30_000;
  #worker?: Worker;
  #outbox?: Outbox<LaneRequest>;
  #pending = new Map<number, { grant: number; resolve: (r: LaneReply) => void }>();
  #nextId = 1;
  /** By lane key: a number of this object's own, since grant numbers start again in a new PKCS#11 thread. */
  #grants = new Map<number, Grant>();
  #nextKey = 1;
  /** The shared words of every grant the running worker was given, for when it dies. */
  #workerWords: Int32Array[] = [];
  #sweep?: NodeJS.Timeout;

  /** True while the lane thread runs. */
  get running(): boolean {
    return this.#worker !== undefined;
  }

  /** Signatures under way on `grant`. */
  inFlight(grant: number): number {
    return this.#grants.get(grant)?.inFlight ?? 0;
  }

  /**
   * Hands the lane thread a grant (starting the thread when needed).
   * @returns the key to sign with and to detach
   */
  attach(description: LaneGrantDescription, onDrop: (why: string) => void): number {
    const key = this.#nextKey++;
    const words = new Int32Array(description.control);
    this.#grants.set(key, { words, inFlight: 0, lastUse: Date.now(), onDrop });
    this.#send({ op: "attach", description: { ...description, grant: key } });
    this.#workerWords.push(words);
    this.#sweep ??= setInterval(() => this.#dropIdle(), SignLane.IDLE_MS / 3).unref();
    return key;
  }

  /** Forgets a grant (requests still queued for it will not sign); the thread stops when none is left. */
  detach(key: number): void {
    const g = this.#grants.get(key);
    if (!g) return;
    this.#grants.delete(key);
    Atomics.store(g.words, LANE_VALID, 0);
    if (this.#grants.size > 0) return this.#send({ op: "detach", grant: key });
    this.close();
  }

  /**
   * Signs `message` (latin1, as sent to the PKCS#11 thread) with `grant`. Never
   * rejects: a failure comes back as a bounced reply, for the PKCS#11 thread to make.
   */
  sign(grant: number, message: string): Promise<LaneReply> {
    const g = this.#grants.get(grant);
    const id = this.#nextId++;
    if (!g || !this.#worker) return Promise.resolve({ op: "reply", id, ok: false, bounced: "the lane was given back" });
    g.inFlight++;
    g.lastUse = Date.now();
    return new Promise<LaneReply>((resolve) => {
      this.#pending.set(id, { grant, resolve });
      if (this.#pending.size === 1) this.#worker!.ref();
      this.#outbox!.push({ op: "sign", id, grant, message });
    });
  }

  /** Stops the thread and forgets every grant; signatures under way come back bounced. Idempotent. */
  close(): void {
    const worker = this.#worker;
    for (const g of this.#grants.values()) Atomics.store(g.words, LANE_VALID, 0);
    this.#grants.clear();
    this.#workerWords = [];
    this.#worker = undefined;
    this.#outbox = undefined;
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    this.#bounceAll("the lane thread stopped");
    // Not terminate(): that can stop the thread between C_Sign and clearing its busy
    // word, and the PKCS#11 thread would then wait for a signature that never ends.
    // The lane exits between two messages instead.
    worker?.postMessage({ op: "exit" } satisfies LaneRequest);
  }

  #send(request: LaneRequest): void {
    (this.#outbox ??= new Outbox<LaneRequest>((m) => this.#worker?.postMessage(m))).push(request);
    this.#worker ??= this.#start();
  }

  #start(): Worker {
    const worker = new Worker(join(__dirname, "lane-main.js"), { env: SHARE_ENV, resourceLimits: { maxYoungGenerationSizeMb: LANE_YOUNG_GENERATION_MB } });
    const words = (this.#workerWords = []);
    // A thread that is gone signs no more, whatever its busy words say (a crash skips
    // the lane's `finally`): release the PKCS#11 thread from waiting on them.
    worker.once("exit", () => {
      for (const w of words) {
        Atomics.store(w, LANE_VALID, 0);
        Atomics.store(w, LANE_BUSY, 0);
        Atomics.notify(w, LANE_BUSY);
      }
    });
    worker.on("message", (msg: LaneReply | MessageBatch<LaneReply>) => {
      for (const reply of unbatch(msg)) this.#onReply(reply);
    });
    const stopped = (why: string) => {
      if (this.#worker !== worker) return;
      logger.warn("a signing lane thread stopped; its signatures go to the PKCS#11 thread", { error: why });
      const grants = [...this.#grants.values()];
      this.close();
      for (const g of grants) g.onDrop("the lane thread stopped");
    };
    worker.on("error", (e) => stopped(e.message));
    worker.on("exit", (code) => stopped(`it exited with code ${code}`));
    worker.unref();
    return worker;
  }

  #onReply(reply: LaneReply): void {
    const p = this.#pending.get(reply.id);
    if (!p) return;
    this.#pending.delete(reply.id);
    if (this.#pending.size === 0) this.#worker?.unref();
    const g = this.#grants.get(p.grant);
    if (g) g.inFlight--;
    p.resolve(reply);
  }

  #bounceAll(why: string): void {
    const pending = [...this.#pending];
    this.#pending.clear();
    for (const [id, p] of pending) p.resolve({ op: "reply", id, ok: false, bounced: why });
  }

  #dropIdle(): void {
    const cutoff = Date.now() - SignLane.IDLE_MS;
    for (const [grant, g] of [...this.#grants]) {
      if (g.inFlight === 0 && g.lastUse < cutoff) g.onDrop("unused for a while");
      else continue;
      this.detach(grant);
    }
  }
}
