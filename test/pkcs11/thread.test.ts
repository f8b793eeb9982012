/**
 * The PKCS#11 thread on SoftHSM: signers opened and used on the worker thread,
 * PINs asked on the main thread (once per token; a wrong one never retried),
 * errors crossing with their codes and CKR details, the thread's log records
 * written by the main thread's logger (redacted), concurrent signatures, and the
 * choice between C_Sign in place and C_SignAsync ({@link SignTiming}).
 */
import "./isolated-state"; // first: this process's own RA_AGENT_STATE_DIR
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, verify } from "node:crypto";
import { Writable } from "node:stream";
import winston from "winston";
import { RaError } from "../../src/errors";
import { logger } from "../../src/log/logger";
import type { PinProvider, PinRequest } from "../../src/signer/pkcs11/pin";
import { SignTiming } from "../../src/signer/pkcs11/sign-timing";
import type { Pkcs11Thread } from "../../src/signer/pkcs11/thread/pkcs11-thread";
import { closeAllSessionsUnderneath } from "../support/close-sessions";
import { needsSoftHsm, provisionTestHsm, TestHsm } from "../support/softhsm";

function counting(pin: string, asked: PinRequest[]): PinProvider {
  return {
    getPin: async (request) => {
      asked.push(request);
      return { pin, source: "test provider", interactive: false };
    },
  };
}

describe("PKCS#11 thread on SoftHSM", needsSoftHsm(), () => {
  let hsm: TestHsm;
  let thread: Pkcs11Thread;
  const logLines: string[] = [];
  const key = (label: string) => hsm.tokens[0].keys.find((k) => k.label === label)!;

  before(async () => {
    hsm = await provisionTestHsm([
      { label: "threaded", keys: [{ label: "rsa-2048", keyType: "RSA-2048" }, { label: "ec-p256", keyType: "EC-P256" }] },
      { label: "wrong-pin", keys: [{ label: "ec", keyType: "EC-P256" }] },
    ]);
    // Capture what the main thread's logger writes, at debug level, before the thread starts.
    logger.configure({
      level: "debug",
      format: logger.format,
      transports: [new winston.transports.Stream({ stream: new Writable({ write: (chunk: Buffer, _e, cb) => (logLines.push(chunk.toString()), cb()) }) })],
    });
    thread = new (await import("../../src/signer/pkcs11/thread/pkcs11-thread")).Pkcs11Thread();
  });
  after(async () => {
    await thread?.close();
    hsm?.cleanup();
  });

  test("RSA and EC signers on the thread: concurrent signatures verify; one PIN request, one login", async () => {
    const asked: PinRequest[] = [];
    for (const label of ["rsa-2048", "ec-p256"]) {
      const k = key(label);
      const signer = await thread.openSigner({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: counting(hsm.tokens[0].pin, asked) });
      const messages = Array.from({ length: 40 }, (_, i) => Buffer.from(`AWS4-X509 string to sign ${label} ${i}`));
      const signatures = await Promise.all(messages.map((m) => signer.sign(m)));
      signatures.forEach((s, i) => assert.ok(verify("sha256", messages[i], { key: createPublicKey(k.certificatePem!), dsaEncoding: "der" }, s), `${label} signature ${i} verifies`));
      assert.ok(Buffer.isBuffer(signatures[0]), "signatures come back as Buffers");
      const status = await signer.status();
      assert.equal(status.signatures, 40);
      assert.equal(status.loginAttempts, 1);
    }
    assert.equal(asked.length, 1, "the PIN was asked once for the token, on the main thread");
  });

  test("signing in place on the thread survives the token dropping its sessions: one recovery, one re-login, every signature verifies", async () => {
    for (const label of ["rsa-2048", "ec-p256"]) {
      const k = key(label);
      const signer = await thread.openSigner({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: counting(hsm.tokens[0].pin, []) });
      const verifies = (m: Buffer, sig: Buffer) => verify("sha256", m, { key: createPublicKey(k.certificatePem!), dsaEncoding: "der" }, sig);
      // Every byte value, so that the messages' trip between the threads is checked too.
      const message = (i: number) => Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, b) => b)), Buffer.from(` ${label} ${i}`)]);
      for (let i = 0; i < 10; i++) assert.ok(verifies(message(i), await signer.sign(message(i))), `${label} warm-up ${i}`);
      const before = await signer.status();

      closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
      const messages = Array.from({ length: 20 }, (_, i) => message(100 + i));
      const signatures = await Promise.all(messages.map((m) => signer.sign(m)));
      signatures.forEach((sig, i) => assert.ok(verifies(messages[i], sig), `${label} signature ${i} after the reset`));
      const after = await signer.status();
      assert.equal(after.recoveries - before.recoveries, 1, "one recovery for 20 concurrent signatures");
      assert.equal(after.loginAttempts - before.loginAttempts, 1, "one re-login");
      assert.equal(after.signatures - before.signatures, 20);
      assert.ok(after.sessions.busy === 0 && after.sessions.open >= 1, `no session left borrowed: ${JSON.stringify(after.sessions)}`);
      await signer.close();
    }
  });

  test("a wrong PIN fails once with its code and CKR, and is not asked again", async () => {
    const asked: PinRequest[] = [];
    const k = hsm.tokens[1].keys[0];
    const open = () => thread.openSigner({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: counting("99999999", asked) });
    await assert.rejects(open(), (e: unknown) => e instanceof RaError && e.code === "PKCS11_PIN_INCORRECT" && e.kind === "pin" && (e as unknown as { ckr: number }).ckr === 0xa0);
    assert.equal(asked.length, 1);
    await assert.rejects(open(), (e: unknown) => e instanceof RaError && e.kind === "pin");
    assert.equal(asked.length, 2, "each open asks its provider; the token's C_Login is refused before it is called again");
  });

  test("a PIN source that fails on the main thread fails the open with its own error", async () => {
    const broken: PinProvider = {
      getPin: async () => {
        throw new RaError("pin", "PIN_ENV_UNSET", "the environment variable X is not set", { hint: "set X" });
      },
    };
    // The "wrong-pin" token is not logged in, so opening its key asks for a PIN.
    await assert.rejects(
      thread.openSigner({ certificateUri: hsm.tokens[1].keys[0].certificateUri, modulePath: hsm.modulePath, pin: broken }),
      (e: unknown) => e instanceof RaError && e.code === "PIN_ENV_UNSET" && e.hint === "set X",
    );
  });

  test("the thread's log records reach the main logger, redacted, with no PIN", () => {
    const text = logLines.join("");
    assert.match(text, /PKCS#11 signer ready/, "debug records from the thread are written by the main thread");
    assert.match(text, /pinSource/);
    assert.doesNotMatch(text, new RegExp(hsm.tokens[0].pin), "no PIN in the log");
    assert.doesNotMatch(text, /99999999/, "not even a wrong one");
  });

  test("a thread that stops: its signers fail clearly; a new thread opens the key again and signs", async () => {
    const k = key("ec-p256");
    const asked: PinRequest[] = [];
    const before = await thread.openSigner({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: counting(hsm.tokens[0].pin, asked) });
    await thread.terminateForTest();
    await assert.rejects(before.sign(Buffer.from("after the crash")), (e: unknown) => e instanceof RaError && e.code === "PKCS11_THREAD_STOPPED" && !!e.hint);
    const again = await thread.openSigner({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: counting(hsm.tokens[0].pin, asked) });
    const message = Buffer.from("signed by the new thread");
    assert.ok(verify("sha256", message, { key: createPublicKey(k.certificatePem!), dsaEncoding: "der" }, await again.sign(message)));
    await assert.rejects(before.sign(message), (e: unknown) => e instanceof RaError && e.code === "PKCS11_THREAD_STOPPED", "a signer of the old thread stays unusable");
    await assert.rejects(before.probe(), (e: unknown) => e instanceof RaError && e.code === "PKCS11_THREAD_STOPPED");
    // Signer numbers start again in the new thread: closing the old signer must not close the new one.
    await before.close();
    assert.ok(verify("sha256", message, { key: createPublicKey(k.certificatePem!), dsaEncoding: "der" }, await again.sign(message)), "the new signer still works");
  });

  test("a quick EC key signs on a lane thread too under concurrent load: every signature verifies, one login", async () => {
    const k = key("ec-p256");
    const asked: PinRequest[] = [];
    const signer = await thread.openSigner({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: counting(hsm.tokens[0].pin, asked) });
    const verifies = (m: Buffer, sig: Buffer) => verify("sha256", m, { key: createPublicKey(k.certificatePem!), dsaEncoding: "der" }, sig);
    const message = (i: number) => Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, b) => b)), Buffer.from(` lane ${i}`)]);
    for (let i = 0; i < 10; i++) assert.ok(verifies(message(i), await signer.sign(message(i))), `warm-up ${i}`);
    assert.equal(signer.laneSignatures, 0, "no lane without concurrency");
    const warm = await signer.status();
    let n = 100;
    for (let wave = 0; wave < 30 && signer.laneSignatures < 50; wave++) {
      const messages = Array.from({ length: 40 }, () => message(n++));
      const signatures = await Promise.all(messages.map((m) => signer.sign(m)));
      signatures.forEach((sig, i) => assert.ok(verifies(messages[i], sig), `wave ${wave} signature ${i}`));
    }
    assert.ok(signer.laneSignatures >= 50, `signatures made on the lane: ${signer.laneSignatures}`);
    const status = await signer.status();
    assert.equal(status.signatures + signer.laneSignatures, n - 100 + 10, "every signature was made once, on one thread or the other");
    assert.ok(asked.length <= 1, "the PIN was asked at most once (the token may be logged in already)");
    assert.equal(status.loginAttempts, warm.loginAttempts, "the lane never logs in");

    // The token drops every session, the lane's too: the lane hands its signatures back, the PKCS#11 thread recovers once.
    closeAllSessionsUnderneath(hsm.modulePath, hsm.tokens[0].serial);
    const messages = Array.from({ length: 40 }, () => message(n++));
    const signatures = await Promise.all(messages.map((m) => signer.sign(m)));
    signatures.forEach((sig, i) => assert.ok(verifies(messages[i], sig), `after the reset: signature ${i}`));
    const after = await signer.status();
    assert.equal(after.recoveries - status.recoveries, 1, "one recovery");
    assert.equal(after.loginAttempts - status.loginAttempts, 1, "one re-login");
    assert.equal(after.sessions.busy, 0);
    await signer.close();
  });

  test("a lane unused for IDLE_MS is given back and its thread stops; later load gets a new one", async () => {
    const { SignLane } = await import("../../src/signer/pkcs11/thread/sign-lane");
    const idle = SignLane.IDLE_MS;
    SignLane.IDLE_MS = 300;
    try {
      const k = key("ec-p256");
      const signer = await thread.openSigner({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: counting(hsm.tokens[0].pin, []) });
      const verifies = (m: Buffer, sig: Buffer) => verify("sha256", m, { key: createPublicKey(k.certificatePem!), dsaEncoding: "der" }, sig);
      for (let i = 0; i < 10; i++) await signer.sign(Buffer.from(`warm-up ${i}`));
      for (let wave = 0; wave < 30 && signer.laneSignatures === 0; wave++) await Promise.all(Array.from({ length: 40 }, (_, i) => signer.sign(Buffer.from(`idle ${wave} ${i}`))));
      assert.ok(signer.laneSignatures > 0 && thread.lane.running, "the lane is in use");
      const deadline = Date.now() + 5000;
      while (thread.lane.running && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal(thread.lane.running, false, "the idle lane's thread stopped");
      const messages = Array.from({ length: 40 }, (_, i) => Buffer.from(`after the lane stopped ${i}`));
      const signatures = await Promise.all(messages.map((m) => signer.sign(m)));
      signatures.forEach((sig, i) => assert.ok(verifies(messages[i], sig), `signature ${i} after the lane stopped`));
      assert.equal((await signer.status()).sessions.busy, 0);
      await signer.close();
    } finally {
      SignLane.IDLE_MS = idle;
    }
  });

  test("an RSA key never signs on a lane (each of its signatures is verified on the PKCS#11 thread)", async () => {
    const k = key("rsa-2048");
    const signer = await thread.openSigner({ certificateUri: k.certificateUri, modulePath: hsm.modulePath, pin: counting(hsm.tokens[0].pin, []) });
    for (let i = 0; i < 5; i++) await signer.sign(Buffer.from(`warm-up ${i}`));
    for (let wave = 0; wave < 3; wave++) await Promise.all(Array.from({ length: 20 }, (_, i) => signer.sign(Buffer.from(`rsa ${wave} ${i}`))));
    assert.equal(signer.laneSignatures, 0);
    await signer.close();
  });

  test("listing through the thread sees the tokens without logging in", async () => {
    const modules = await thread.list({ modulePaths: [hsm.modulePath] });
    const labels = modules.flatMap((m) => (m.slots ?? []).map((s) => s.token?.label));
    assert.ok(labels.includes("threaded") && labels.includes("wrong-pin"), `tokens listed: ${labels.join(", ")}`);
  });
});

describe("SignTiming: C_Sign in place for quick keys, on libuv's pool for slow ones", () => {
  /** Feeds the first (ignored) signature and WARM_UP samples of `micros`. */
  const warmed = (micros: number, first = micros) => {
    const t = new SignTiming();
    assert.equal(t.usePool(), false);
    t.record(first);
    for (let i = 0; i < SignTiming.WARM_UP; i++) {
      assert.equal(t.usePool(), false, "the first signatures are made in place and timed");
      t.record(micros);
    }
    return t;
  };

  test("a quick key stays in place", () => {
    assert.equal(warmed(50).usePool(), false);
  });

  test("a slow key goes to the pool, with one timed sample in RESAMPLE_EVERY", () => {
    const t = warmed(2_000);
    let inPlace = 0;
    for (let i = 0; i < SignTiming.RESAMPLE_EVERY * 4; i++) if (!t.usePool()) inPlace++;
    assert.equal(inPlace, 4);
  });

  test("a key that becomes quick moves back in place", () => {
    const t = warmed(2_000);
    for (let i = 0; i < SignTiming.WINDOW; i++) t.record(80);
    assert.equal(t.usePool(), false);
  });

  test("a cold first signature does not count", () => {
    assert.equal(warmed(25, 4_000).usePool(), false);
  });

  test("a few preempted samples do not move a quick key to the pool", () => {
    const t = warmed(25);
    // 3 of 8 samples slowed down by the scheduler: the median stays the token's time.
    for (let i = 0; i < SignTiming.WINDOW; i++) t.record(i % 3 === 0 ? 4_000 : 25);
    assert.equal(t.typicalMicros(), 25);
    assert.equal(t.usePool(), false);
  });
});

describe("Outbox: one postMessage per event-loop turn, or per full batch", () => {
  test("messages queued in one turn go together; a lone message goes as itself", async () => {
    const { Outbox, unbatch } = await import("../../src/signer/pkcs11/thread/messages");
    const posted: unknown[] = [];
    const outbox = new Outbox<{ op: string; n: number }>((m) => posted.push(m));
    for (let n = 0; n < 3; n++) outbox.push({ op: "reply", n });
    assert.equal(posted.length, 0, "nothing is posted before the turn ends");
    await new Promise((r) => setImmediate(r));
    assert.equal(posted.length, 1);
    assert.deepEqual(unbatch(posted[0] as never).map((m: { n: number }) => m.n), [0, 1, 2]);
    outbox.push({ op: "reply", n: 3 });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(posted[1], { op: "reply", n: 3 });
  });

  test("a full batch is posted at once, the rest at the end of the turn", async () => {
    const { Outbox, unbatch } = await import("../../src/signer/pkcs11/thread/messages");
    const posted: unknown[] = [];
    const outbox = new Outbox<{ op: string; n: number }>((m) => posted.push(m));
    const total = 2 * Outbox.FLUSH_AT + 3;
    for (let n = 0; n < total; n++) outbox.push({ op: "reply", n });
    assert.equal(posted.length, 2, "two full batches went while the turn was still running");
    await new Promise((r) => setImmediate(r));
    assert.equal(posted.length, 3);
    const all = posted.flatMap((m) => unbatch(m as never).map((x: { n: number }) => x.n));
    assert.deepEqual(all, Array.from({ length: total }, (_, n) => n), "in order, none lost or repeated");
    outbox.push({ op: "reply", n: total });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(posted[3], { op: "reply", n: total }, "the next turn batches again");
  });
});
