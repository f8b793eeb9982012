/**
 * Test helpers for the agent: a manual clock, an in-test credential source, a
 * node:crypto signer with a test-PKI certificate (a real key and certificate, not a
 * PKCS#11 stand-in: the PKCS#11 paths are tested with SoftHSM in the e2e tests),
 * temp dirs and raw socket requests.
 */
import { generateKeyPairSync, createPrivateKey, sign as cryptoSign, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import winston from "winston";
import type { AwsCredentials } from "../../src/credentials/credentials";
import type { Clock, TimerHandle } from "../../src/agent/clock";
import type { ProfileBackend } from "../../src/agent/backend";
import type { Signer, DigestAlgorithm } from "../../src/signer/signer";
import { algorithmFor } from "../../src/signer/signer";
import { createCa, issueCertificate } from "../../scripts/lib/pki";

/** A clock that only moves when told to. */
export class ManualClock implements Clock {
  private timers: { at: number; fn: () => void; id: number; cancelled: boolean }[] = [];
  private seq = 0;
  constructor(public current = Date.UTC(2030, 0, 1, 12, 0, 0)) {}
  now(): number {
    return this.current;
  }
  setTimer(fn: () => void, delayMs: number): TimerHandle {
    const t = { at: this.current + Math.max(0, delayMs), fn, id: this.seq++, cancelled: false };
    this.timers.push(t);
    return { cancel: () => void (t.cancelled = true) };
  }
  /** Pending (not cancelled) timer due times. */
  pending(): number[] {
    return this.timers.filter((t) => !t.cancelled).map((t) => t.at).sort((a, b) => a - b);
  }
  /** Moves time forward, firing due timers in order and letting promises settle. */
  async advance(ms: number): Promise<void> {
    const end = this.current + ms;
    for (;;) {
      await flush();
      const due = this.timers.filter((t) => !t.cancelled && t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.current = Math.max(this.current, due.at);
      due.cancelled = true;
      due.fn();
    }
    this.current = end;
    await flush();
  }
}

/** Lets pending promise callbacks run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

let counter = 0;
/** Distinct fake credentials valid for `lifetimeMs` from `now`. */
export function makeCredentials(now: number, lifetimeMs = 3600_000): AwsCredentials {
  counter++;
  return {
    accessKeyId: `ASIATEST${String(counter).padStart(12, "0")}`,
    secretAccessKey: `secret-${counter}-${"s".repeat(30)}`,
    sessionToken: `token-${counter}-${"t".repeat(60)}`,
    expiration: new Date(now + lifetimeMs),
  };
}

/** A deferred promise. */
export function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A temp dir removed by the returned cleanup. */
export function tempDir(prefix = "ra-agent-test-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A silent logger that records messages and metadata (as JSON) for assertions. */
export function memoryLogger(level = "debug"): { log: winston.Logger; lines: string[] } {
  const lines: string[] = [];
  const { Writable } = require("node:stream") as typeof import("node:stream");
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const log = winston.createLogger({ level, format: winston.format.json(), transports: [new winston.transports.Stream({ stream })] });
  return { log, lines };
}

/** A software signer over a node:crypto key with a certificate from the test PKI. */
export async function softwareSigner(alg: "EC-P256" | "RSA-2048" = "EC-P256"): Promise<Signer & { privateKey: KeyObject }> {
  const ca = await createCa({ algorithm: alg });
  const pair = alg === "EC-P256" ? generateKeyPairSync("ec", { namedCurve: "P-256" }) : generateKeyPairSync("rsa", { modulusLength: 2048 });
  const cert = await issueCertificate(ca, pair.publicKey, { subject: "CN=agent-test" });
  const keyType = alg === "EC-P256" ? "EC" : "RSA";
  let closed = false;
  const privateKey = createPrivateKey(pair.privateKey.export({ type: "pkcs8", format: "pem" }));
  return {
    keyType,
    algorithm: algorithmFor(keyType),
    certificate: new Uint8Array(cert.rawData),
    chain: [],
    source: "file",
    hardwareBacked: false,
    privateKey,
    async sign(message: Uint8Array, digest: DigestAlgorithm = "SHA256") {
      if (closed) throw new Error("closed");
      return cryptoSign(digest.replace("SHA", "sha"), message, privateKey);
    },
    async close() {
      closed = true;
    },
  };
}

/** An in-test backend: credentials from a function, counting calls. */
export function testBackend(opts: { signer?: Signer; session?: (n: number) => Promise<AwsCredentials>; openSigner?: () => Promise<Signer> }): ProfileBackend & { sessions: number; opens: number } {
  const backend = {
    sessions: 0,
    opens: 0,
    async openSigner() {
      backend.opens++;
      if (opts.openSigner) return opts.openSigner();
      if (!opts.signer) throw new Error("no signer");
      return opts.signer;
    },
    async createSession() {
      backend.sessions++;
      if (!opts.session) return makeCredentials(Date.now());
      return opts.session(backend.sessions);
    },
  };
  return backend;
}

/** Writes a config file and returns its path. */
export function writeConfig(dir: string, config: unknown, name = "agent.json"): string {
  const p = join(dir, name);
  writeFileSync(p, JSON.stringify(config, null, 2));
  return p;
}

/** ARNs in the shapes the config validator accepts. */
export const ARNS = {
  trustAnchorArn: "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0b1e9c3a-6a3f-4f6e-9d55-1f0c2a3b4c5d",
  profileArn: "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/8d7e6f5a-4b3c-4d2e-8f1a-0b9c8d7e6f5a",
  roleArn: "arn:aws:iam::123456789012:role/ra-agent-test",
};

/** An HTTP request over a Unix socket. */
export function unixRequest(socketPath: string, method: string, path: string, opts: { body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: { ...(opts.body !== undefined ? { "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(opts.body)) } : {}), ...opts.headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}

/**
 * Writes raw bytes to a socket and collects what comes back until the peer
 * closes (or `timeoutMs`). Returns the answer and whether the peer closed.
 */
export function rawExchange(target: { path: string } | { port: number; host: string }, data: string | Buffer, timeoutMs = 3000): Promise<{ answer: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = "path" in target ? connect(target.path) : connect(target.port, target.host);
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      s.destroy();
      resolve({ answer: Buffer.concat(chunks).toString("latin1"), closed });
    };
    const t = setTimeout(() => finish(false), timeoutMs);
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("close", () => finish(true));
    s.on("error", () => finish(true));
    s.on("connect", () => s.write(data));
  });
}
