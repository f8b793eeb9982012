/**
 * One signature on a token: C_SignInit, the context-specific login of a
 * CKA_ALWAYS_AUTHENTICATE key, C_Sign or C_SignAsync (see {@link ./sign-timing!SignTiming}),
 * and the conversion of the result. If anything fails after C_SignInit, the
 * session is discarded (closing it cancels the operation), so that the pool
 * never hands out a session with an operation left active.
 */
import { isMainThread } from "node:worker_threads";
import { RaError } from "../../errors";
import { logger } from "../../log/logger";
import { checkLoginAllowed, login, LoginPolicy } from "./login";
import { ecdsaRawToDer, SignPlan } from "./mechanisms";
import type { PinProvider, PinResult } from "./pin";
import type { SessionLease, TokenContext } from "./session";
import type { SignTiming } from "./sign-timing";

/** Largest signature expected: RSA-8192. */
const SIGNATURE_BUFFER = 1024;

/** The key to sign with. */
export interface KeyHandle {
  handle: Buffer;
  alwaysAuthenticate: boolean;
  /** The key's URI, for PIN prompts and messages. */
  uri: string;
  /** EC keys: bytes of r (and of s) in the token's raw signature, from the certificate's curve. */
  ecFieldBytes?: number;
  /** How long this key takes to sign: C_Sign in place or on libuv's pool. */
  timing: SignTiming;
}

/** How to authenticate a context-specific login. */
export interface SignAuth {
  pins: PinProvider;
  policy: LoginPolicy;
  /** Use the user PIN as the context-specific PIN (`--reuse-pin`). */
  reusePin: boolean;
}

async function contextSpecificPin(ctx: TokenContext, key: KeyHandle, auth: SignAuth): Promise<PinResult> {
  let pin: PinResult | undefined;
  if (auth.reusePin) {
    pin = ctx.rememberedUserPin() ?? (await auth.pins.getPin({ kind: "user", token: ctx.name, tokenUri: ctx.uri }));
  } else {
    pin = await auth.pins.getPin({ kind: "context-specific", token: ctx.name, tokenUri: ctx.uri, keyUri: key.uri });
  }
  if (!pin) {
    throw new RaError("pin", "PKCS11_CONTEXT_PIN_REQUIRED", `the key ${key.uri} needs its PIN again for every signature (CKA_ALWAYS_AUTHENTICATE) and none was given`, {
      hint: "pass --reuse-pin to use the user PIN for it, or run on a terminal to be prompted",
    });
  }
  return pin;
}

/**
 * Signs `plan.input` with `key` on the leased session.
 * @throws RaError / pkcs11js errors (the caller maps them and decides on recovery)
 */
export async function signOnToken(ctx: TokenContext, lease: SessionLease, key: KeyHandle, plan: SignPlan, auth: SignAuth): Promise<Buffer> {
  // Decided once per signature: usePool() counts the signatures it is asked about.
  const inPlace = !isMainThread && !key.timing.usePool();
  if (inPlace && !key.alwaysAuthenticate) return signInPlace(ctx, lease, key, plan);
  const api = ctx.module.api;
  ctx.assertCurrent(lease);
  api.C_SignInit(lease.handle, { mechanism: plan.mechanism }, key.handle);
  let raw: Buffer;
  try {
    if (key.alwaysAuthenticate) {
      const pin = await contextSpecificPin(ctx, key, auth);
      ctx.assertCurrent(lease);
      const target = ctx.loginTarget();
      checkLoginAllowed({ ...target, token: ctx.currentToken(), pin, policy: auth.policy, userType: "context-specific" });
      logger.debug("context-specific login for an always-authenticate key", { key: key.uri, pinSource: pin.source });
      login(api, lease.handle, "context-specific", pin.pin, target);
    }
    if (!inPlace) {
      raw = await api.C_SignAsync(lease.handle, plan.input, Buffer.alloc(SIGNATURE_BUFFER));
    } else {
      raw = timedSign(ctx, lease, key, plan);
    }
  } catch (e) {
    // The operation may still be active (e.g. the context login failed): never reuse this session.
    lease.discard();
    throw e;
  }
  return finishSignature(raw, plan, key);
}

/**
 * C_Sign's output buffer for signatures made in place. One per thread is enough:
 * the in-place path is synchronous, and the result is copied out before it returns.
 */
const inPlaceOutput = Buffer.alloc(SIGNATURE_BUFFER);

/**
 * One signature made in place, synchronously: C_SignInit and a timed C_Sign on
 * this thread. For keys without a context-specific login, off the main thread, when
 * {@link SignTiming} says the token is quick (the PKCS#11 thread's hot path).
 * @throws RaError / pkcs11js errors, as {@link signOnToken}
 */
export function signInPlace(ctx: TokenContext, lease: SessionLease, key: KeyHandle, plan: SignPlan): Buffer {
  ctx.assertCurrent(lease);
  ctx.module.api.C_SignInit(lease.handle, { mechanism: plan.mechanism }, key.handle);
  let raw: Buffer;
  try {
    raw = timedSign(ctx, lease, key, plan);
  } catch (e) {
    lease.discard();
    throw e;
  }
  return finishSignature(raw, plan, key);
}

/** C_Sign in place, into {@link inPlaceOutput}, recorded for {@link SignTiming}. The result is only valid until the next call. */
function timedSign(ctx: TokenContext, lease: SessionLease, key: KeyHandle, plan: SignPlan): Buffer {
  const started = performance.now();
  const raw = ctx.module.api.C_Sign(lease.handle, plan.input, inPlaceOutput);
  key.timing.record((performance.now() - started) * 1000);
  return raw;
}

/**
 * The signature as returned to callers: a copy (RSA) or the DER form (ECDSA), never the token's output buffer.
 * @throws RaError `PKCS11_BAD_SIGNATURE` for a malformed ECDSA signature
 */
export function finishSignature(raw: Buffer, plan: Pick<SignPlan, "output">, key: Pick<KeyHandle, "ecFieldBytes" | "uri">): Buffer {
  if (plan.output !== "ecdsa-der") return Buffer.from(raw);
  assertEcdsaForm(raw, key);
  return ecdsaRawToDer(raw);
}

/**
 * The form of a raw ECDSA signature: r||s of the curve's size, neither zero. A
 * cheap check for every EC signature; the signer verifies the first one after
 * each key lookup in full.
 * @throws RaError `PKCS11_BAD_SIGNATURE`
 */
function assertEcdsaForm(raw: Buffer, key: Pick<KeyHandle, "ecFieldBytes" | "uri">): void {
  const half = raw.length / 2;
  if ((key.ecFieldBytes !== undefined && raw.length !== 2 * key.ecFieldBytes) || allZero(raw, 0, half) || allZero(raw, half, raw.length)) {
    throw new RaError("token", "PKCS11_BAD_SIGNATURE", `the token returned a malformed ECDSA signature for ${key.uri} (${raw.length} bytes${key.ecFieldBytes ? `, expected ${2 * key.ecFieldBytes}` : ""})`, {
      hint: "the key does not match the certificate's curve, or the token is faulty; check with `ra-agent sign-string --debug`",
    });
  }
}

function allZero(bytes: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (bytes[i] !== 0) return false;
  return true;
}
