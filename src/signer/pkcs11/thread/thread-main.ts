/**
 * Entry point of the PKCS#11 thread (a worker_threads Worker started by
 * {@link ../pkcs11-thread}). In a process that uses it (the agent, `serve`,
 * `update`) every PKCS#11 call runs here: module loading, token search, C_Login,
 * C_SignInit, C_Sign, recovery and enumeration.
 * The main thread's event loop never waits on a token (a TPM takes 5-8 ms per
 * signature and serialises everything; a smart card's C_Login takes longer).
 *
 * Process-wide PKCS#11 state (one loaded module per file, one session pool and one
 * login per token) lives in this thread only: the main thread must not load the
 * same modules, because C_Finalize in one thread would end the other's sessions.
 */
import { parentPort } from "node:worker_threads";
import { RaError } from "../../../errors";
import type { LogForwarding } from "../../../log/forwarding-logger";
import { listPkcs11 } from "../enumerate";
import type { PinProvider, PinResult } from "../pin";
import { closeAllPkcs11 } from "../index";
import { openPkcs11Signer, Pkcs11Signer } from "../signer";
import { bytesFromWire, bytesToWire, deserializeError, MessageBatch, Outbox, PinAnswer, PinAsk, serializeError, SignerDescription, ThreadReply, ThreadRequest, unbatch } from "./messages";

/** What the main thread passes at start. */
export interface ThreadStartData {
  /** Read by src/log/logger.ts: this thread's logs go to the main thread's logger. */
  logForwarding: LogForwarding;
}

const port = parentPort;
if (!port) throw new Error("thread-main.ts runs only as a worker thread");

const signers = new Map<number, Pkcs11Signer>();
let nextSigner = 1;
const pinAsks = new Map<number, { resolve: (r: PinResult | undefined) => void; reject: (e: unknown) => void }>();
let nextAsk = 1;

/** A PIN provider that asks the main thread's provider on `channel`. */
function remotePinProvider(channel: number): PinProvider {
  return {
    getPin: (request) =>
      new Promise<PinResult | undefined>((resolve, reject) => {
        const ask = nextAsk++;
        pinAsks.set(ask, { resolve, reject });
        port!.postMessage({ op: "pin", ask, channel, request } satisfies PinAsk);
      }),
  };
}

function signerOf(id: number): Pkcs11Signer {
  const s = signers.get(id);
  if (!s) throw new RaError("internal", "SIGNER_CLOSED", "the PKCS#11 signer was closed", { hint: "open it again" });
  return s;
}

async function run(req: ThreadRequest): Promise<unknown> {
  switch (req.op) {
    case "open": {
      const signer = await openPkcs11Signer({ ...req.options, pin: req.pinChannel ? remotePinProvider(req.pinChannel) : undefined });
      const id = nextSigner++;
      signers.set(id, signer);
      const description: SignerDescription = {
        signer: id,
        keyType: signer.keyType,
        algorithm: signer.algorithm,
        certificate: signer.certificate,
        chain: [...signer.chain],
        hardwareBacked: signer.hardwareBacked,
        keyUri: signer.keyUri,
        certificateUri: signer.certificateUri,
        tokenInfo: signer.tokenInfo,
      };
      return description;
    }
    case "sign":
      return bytesToWire(await signerOf(req.signer).sign(bytesFromWire(req.message), req.digest));
    case "status": {
      const signer = signerOf(req.signer);
      return req.probe ? signer.probe() : signer.status();
    }
    case "close": {
      const signer = signers.get(req.signer);
      signers.delete(req.signer);
      await signer?.close();
      return undefined;
    }
    case "lane-grant":
      return signerOf(req.signer).grantLane(req.digest) ?? null;
    case "lane-release":
      signers.get(req.signer)?.releaseLane(req.grant);
      return undefined;
    case "list":
      return listPkcs11({ ...req.options, login: false });
    case "close-all":
      for (const s of signers.values()) await s.close().catch(() => undefined);
      signers.clear();
      await closeAllPkcs11();
      return undefined;
  }
}

const replies = new Outbox<ThreadReply>((m) => port.postMessage(m));

port.on("message", (received: ThreadRequest | PinAnswer | MessageBatch<ThreadRequest | PinAnswer>) => {
  for (const msg of unbatch(received)) handle(msg);
});

function handle(msg: ThreadRequest | PinAnswer): void {
  if (msg.op === "pin-answer") {
    const pending = pinAsks.get(msg.ask);
    pinAsks.delete(msg.ask);
    if (!pending) return;
    if (msg.ok) pending.resolve(msg.result);
    else pending.reject(deserializeError(msg.error));
    return;
  }
  if (msg.op !== "sign") return answerLater(msg.id, run(msg));
  // This thread's hot path: a signature made at once is answered at once, without a
  // promise or a closure.
  try {
    const signature = signerOf(msg.signer).signSoon(bytesFromWire(msg.message), msg.digest);
    if (signature instanceof Promise) answerLater(msg.id, signature.then(bytesToWire));
    else replies.push({ op: "reply", id: msg.id, ok: true, value: bytesToWire(signature) });
  } catch (e) {
    replies.push({ op: "reply", id: msg.id, ok: false, error: serializeError(e) });
  }
}

function answerLater(id: number, result: Promise<unknown>): void {
  result.then(
    (value) => replies.push({ op: "reply", id, ok: true, value }),
    (e: unknown) => replies.push({ op: "reply", id, ok: false, error: serializeError(e) }),
  );
}
