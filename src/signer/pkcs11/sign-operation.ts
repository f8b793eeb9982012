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
    if (isMainThread || key.timing.usePool()) {
      raw = await api.C_SignAsync(lease.handle, plan.input, Buffer.alloc(SIGNATURE_BUFFER));
    } else {
      const started = process.hrtime.bigint();
      raw = api.C_Sign(lease.handle, plan.input, Buffer.alloc(SIGNATURE_BUFFER));
      key.timing.record(Number(process.hrtime.bigint() - started) / 1000);
    }
  } catch (e) {
    // The operation may still be active (e.g. the context login failed): never reuse this session.
    lease.discard();
    throw e;
  }
  if (plan.output !== "ecdsa-der") return Buffer.from(raw);
  assertEcdsaForm(raw, key);
  return ecdsaRawToDer(Buffer.from(raw));
}

/**
 * The form of a raw ECDSA signature: r||s of the curve's size, neither zero. A
 * cheap check for every EC signature; the signer verifies the first one after
 * each key lookup in full.
 * @throws RaError `PKCS11_BAD_SIGNATURE`
 */
function assertEcdsaForm(raw: Buffer, key: KeyHandle): void {
  const half = raw.length / 2;
  const zero = (b: Buffer) => b.every((x) => x === 0);
  if ((key.ecFieldBytes !== undefined && raw.length !== 2 * key.ecFieldBytes) || zero(raw.subarray(0, half)) || zero(raw.subarray(half))) {
    throw new RaError("token", "PKCS11_BAD_SIGNATURE", `the token returned a malformed ECDSA signature for ${key.uri} (${raw.length} bytes${key.ecFieldBytes ? `, expected ${2 * key.ecFieldBytes}` : ""})`, {
      hint: "the key does not match the certificate's curve, or the token is faulty; check with `ra-agent sign-string --debug`",
    });
  }
}
