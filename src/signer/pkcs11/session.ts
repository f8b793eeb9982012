/**
 * One {@link TokenContext} per token per process: a small session pool, one
 * login shared by every signer on the token, the PIN that worked (kept in memory
 * for re-login after a reset), and recovery when the token drops our sessions.
 */
import * as pkcs11js from "pkcs11js";
import { RaError } from "../../errors";
import { logger } from "../../log/logger";
import { CKF_TOKEN_PRESENT, CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS } from "./constants";
import { ckrOf, errorLogFields, hasCkr, Pkcs11CallError, pinLockedHint, PinRefusedError, toRaError } from "./errors";
import { badPins, checkLoginAllowed, login, LoginPolicy, LoginTarget } from "./login";
import { forgetLaneSession, revokeLaneGrants } from "./lane-grant";
import type { Pkcs11Module } from "./module";
import type { Quirks } from "./native-config";
import type { PinProvider, PinResult } from "./pin";
import type { RejectedPinToken } from "./rejected-pins";
import { describeToken, listTokens, quirksForToken, refreshToken, TokenDescription, tokenIdentity, TokenSlot, tokenUri } from "./token";
import { constantValue } from "./constants";

/** A session borrowed from the pool. */
export interface SessionLease {
  handle: Buffer;
  /** The context generation the session belongs to; sessions of older generations are gone. */
  generation: number;
  /** Close this session instead of returning it (an operation may be left active on it). */
  discard(): void;
}

class Lease implements SessionLease {
  discarded = false;
  constructor(readonly handle: Buffer, readonly generation: number) {}
  discard(): void {
    this.discarded = true;
  }
}

/** Errors after which the token is looked up again and the operation retried once. */
const RECOVERABLE = new Set<number>([
  pkcs11js.CKR_SESSION_HANDLE_INVALID,
  pkcs11js.CKR_SESSION_CLOSED,
  pkcs11js.CKR_DEVICE_REMOVED,
  pkcs11js.CKR_TOKEN_NOT_PRESENT,
  pkcs11js.CKR_USER_NOT_LOGGED_IN,
  pkcs11js.CKR_SLOT_ID_INVALID,
  pkcs11js.CKR_KEY_HANDLE_INVALID,
  pkcs11js.CKR_OBJECT_HANDLE_INVALID,
  pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED,
]);

/** The last failure seen on a token, for status output. */
export interface LastError {
  code: string;
  message: string;
  at: string;
}

/** Process-wide state of one token. */
export class TokenContext {
  readonly module: Pkcs11Module;
  /** Identity (module, manufacturer, model, serial, label). */
  readonly key: string;
  slot: TokenSlot;
  readonly quirks: Quirks;
  /** `token "label" (serial …)`. */
  readonly name: string;
  /** Exact URI of the token. */
  readonly uri: string;
  /** Bumped whenever our sessions are dropped; object handles of older generations must be found again. */
  generation = 0;
  /** Our C_Login(CKU_USER) calls on this token in this process. */
  loginAttempts = 0;
  /** Times the token was found again after losing our sessions. */
  recoveries = 0;
  loggedIn = false;
  present = true;
  lastError?: LastError;
  /** Signers holding this context; sessions close when the last one closes. */
  refs = 0;

  private moduleGeneration: number;
  private idle: Buffer[] = [];
  /** Every session we hold, by handle, with the generation it was opened in. */
  private sessions = new Map<string, number>();
  private busy = 0;
  private waiters: Array<() => void> = [];
  private goodPin?: PinResult;
  private loginInFlight?: Promise<void>;
  private recovering?: Promise<void>;
  private mechanisms?: Set<number> | null;

  constructor(slot: TokenSlot) {
    this.module = slot.module;
    this.key = tokenIdentity(slot);
    this.slot = slot;
    this.quirks = quirksForToken(slot);
    this.name = describeToken(slot);
    this.uri = tokenUri(slot);
    this.moduleGeneration = slot.module.generation;
    if (this.quirks.ids.length) logger.debug("token quirks", { tokenName: this.name, quirks: this.quirks.ids });
  }

  /** The token as the cross-process rejected-PIN records name it. */
  get tokenRef(): RejectedPinToken {
    return { label: this.slot.token.label, serial: this.slot.token.serial, module: this.module.key };
  }

  /** Who a C_Login is for: names, identities, quirks, and a fresh read of the PIN flags. */
  loginTarget(): LoginTarget {
    return {
      tokenName: this.name,
      tokenKey: this.key,
      tokenRef: this.tokenRef,
      quirks: this.quirks,
      freshFlags: () => {
        try {
          return refreshToken(this.slot).flags;
        } catch {
          return undefined;
        }
      },
    };
  }

  /** False when another context re-initialised the module and this one has not caught up yet. */
  get moduleCurrent(): boolean {
    return this.module.generation === this.moduleGeneration;
  }

  /** Sessions open now, idle ones, and the pool's size. */
  sessionStats(): { open: number; idle: number; busy: number; max: number } {
    return { open: this.currentSessionCount(), idle: this.idle.length, busy: this.busy, max: this.quirks.sessionPoolSize };
  }

  /** True when `e` should trigger {@link recover}: standard codes plus the token's quirks. */
  isRecoverable(e: unknown): boolean {
    const ckr = ckrOf(e);
    // Our own "not present" comes from a recovery that just looked: fail fast.
    if (ckr === undefined) return false;
    if (RECOVERABLE.has(ckr)) return true;
    return this.quirks.recoverableErrors.some((name) => constantValue(name) === ckr);
  }

  /** Records a failure for {@link lastError}. */
  noteError(e: unknown): void {
    const err = e instanceof RaError ? e : toRaError(e, { operation: "PKCS#11", token: this.name });
    this.lastError = { code: err.code, message: err.message, at: new Date().toISOString() };
  }

  private handleKey(h: Buffer): string {
    return h.toString("hex");
  }

  private syncModuleGeneration(): void {
    if (this.module.generation !== this.moduleGeneration) {
      this.moduleGeneration = this.module.generation;
      this.dropSessions("the module was re-initialised");
    }
  }

  /** Sessions of the current generation (idle and busy): the pool's size. */
  private currentSessionCount(): number {
    let n = 0;
    for (const g of this.sessions.values()) if (g === this.generation) n++;
    return n;
  }

  private openSession(): Buffer {
    let h: Buffer;
    try {
      h = this.module.api.C_OpenSession(this.slot.handle, pkcs11js.CKF_SERIAL_SESSION);
    } catch (e) {
      throw toRaError(e, { operation: "C_OpenSession", token: this.name, quirks: this.quirks });
    }
    forgetLaneSession(h);
    const key = this.handleKey(h);
    if (this.sessions.has(key)) {
      // The module handed out a number we still held: the old session is dead (closed underneath us).
      this.idle = this.idle.filter((i) => !i.equals(h));
    }
    this.sessions.set(key, this.generation);
    return h;
  }

  private closeSession(h: Buffer): void {
    this.sessions.delete(this.handleKey(h));
    try {
      this.module.api.C_CloseSession(h);
    } catch (e) {
      logger.debug("C_CloseSession failed (already closed?)", { tokenName: this.name, error: (e as Error).message });
    }
  }

  /**
   * Forgets every session of the current generation (closing the idle ones; busy
   * ones close when returned), and the login with them.
   */
  private dropSessions(why: string): void {
    logger.debug("dropping PKCS#11 sessions", { tokenName: this.name, why });
    revokeLaneGrants({ owner: this });
    for (const h of this.idle) this.closeSession(h);
    this.idle = [];
    this.generation++;
    this.loggedIn = false;
  }

  /**
   * Borrows a session (opening one while the pool is below its size, else waiting).
   * @throws RaError when the token is absent or a session cannot be opened
   */
  async acquire(): Promise<SessionLease> {
    this.syncModuleGeneration();
    if (!this.present) await this.recover(this.generation);
    for (;;) {
      const idle = this.idle.pop();
      if (idle) return this.lease(idle);
      if (this.currentSessionCount() < this.quirks.sessionPoolSize) return this.lease(this.openSession());
      await new Promise<void>((resolve) => this.waiters.push(resolve));
      this.syncModuleGeneration();
    }
  }

  /**
   * Borrows an idle session now, without waiting and without opening one; undefined
   * when none is idle, the token is marked absent, or the module was re-initialised
   * (then {@link acquire} does the bookkeeping). For the synchronous signing path.
   */
  tryAcquire(): SessionLease | undefined {
    if (!this.present || this.module.generation !== this.moduleGeneration) return undefined;
    const idle = this.idle.pop();
    return idle ? this.lease(idle) : undefined;
  }

  private lease(handle: Buffer): Lease {
    this.busy++;
    return new Lease(handle, this.generation);
  }

  /** Returns a session to the pool (or closes it when discarded or stale). */
  release(lease: SessionLease): void {
    this.busy--;
    const discarded = lease instanceof Lease && lease.discarded;
    const owner = this.sessions.get(this.handleKey(lease.handle));
    if (owner !== lease.generation) {
      // The number now belongs to a newer session (ours was closed underneath us): leave it alone.
    } else if (lease.generation !== this.generation) {
      // Our sessions were dropped while this one was busy: close it quietly.
      this.closeSession(lease.handle);
    } else if (discarded) {
      // Keep one session open while logged in: closing the last one logs the token out.
      if (this.currentSessionCount() === 1 && this.loggedIn) {
        try {
          this.idle.push(this.openSession());
        } catch (e) {
          logger.debug("could not open a replacement session", { tokenName: this.name, error: (e as Error).message });
        }
      }
      this.closeSession(lease.handle);
    } else {
      this.idle.push(lease.handle);
    }
    this.waiters.shift()?.();
  }

  /**
   * Throws a recoverable "session lost" error when our sessions were dropped since
   * `lease` was borrowed: its handle number may already belong to a newer session.
   * Call it before each use of a lease that follows an `await`.
   * @throws Pkcs11CallError `PKCS11_SESSION_LOST` (CKR_SESSION_HANDLE_INVALID)
   */
  assertCurrent(lease: SessionLease): void {
    if (lease.generation !== this.generation) {
      throw new Pkcs11CallError("token", "PKCS11_SESSION_LOST", `the session with ${this.name} was reset while in use`, pkcs11js.CKR_SESSION_HANDLE_INVALID, "session", {
        hint: "the token was reset; the operation is retried once",
      });
    }
  }

  /**
   * Like {@link withSession}, but when `fn` fails with a recoverable error (the token
   * dropped our sessions, was reset or re-inserted), recovers once and runs `fn`
   * again on a fresh session. For lookups; signing does the same with its own bookkeeping.
   */
  async withSessionRecovering<T>(fn: (lease: SessionLease) => Promise<T> | T): Promise<T> {
    let seen = this.generation;
    try {
      return await this.withSession((lease) => {
        seen = lease.generation;
        return fn(lease);
      });
    } catch (e) {
      if (!this.isRecoverable(e)) throw e;
      logger.info("lost the token session; finding the token again", { tokenName: this.name, ...errorLogFields(e) });
      await this.recover(seen);
      return this.withSession(fn);
    }
  }

  /** Runs `fn` with a borrowed session, returning it afterwards. */
  async withSession<T>(fn: (lease: SessionLease) => Promise<T> | T): Promise<T> {
    const lease = await this.acquire();
    try {
      return await fn(lease);
    } finally {
      this.release(lease);
    }
  }

  /** Mechanisms the token lists (cached), or undefined when it will not say. */
  mechanismList(): ReadonlySet<number> | undefined {
    if (this.mechanisms === undefined) {
      try {
        this.mechanisms = new Set(this.module.api.C_GetMechanismList(this.slot.handle));
      } catch (e) {
        logger.debug("C_GetMechanismList failed; falling back to basic mechanisms", { tokenName: this.name, error: (e as Error).message });
        this.mechanisms = null;
      }
    }
    return this.mechanisms ?? undefined;
  }

  /**
   * True when the session is in a user-logged-in state (login is per token, shared by
   * sessions). A dead session (token removed or reset) throws its recoverable error,
   * so that it is noticed before a PIN is asked for, not at C_Login.
   */
  private sessionLoggedIn(session: Buffer): boolean {
    try {
      const state = this.module.api.C_GetSessionInfo(session).state;
      return state === CKS_RO_USER_FUNCTIONS || state === CKS_RW_USER_FUNCTIONS;
    } catch (e) {
      if (this.isRecoverable(e)) throw e;
      return false;
    }
  }

  /**
   * Logs the user in once for the whole process (concurrent callers share one
   * attempt). Uses the PIN that worked before when there is one (after a reset),
   * else asks `pins`. Never retries a refused PIN.
   * @throws RaError `PKCS11_PIN_REQUIRED` when no source has a PIN, the policy errors
   *   of {@link checkLoginAllowed}, and C_Login's errors (`PKCS11_PIN_INCORRECT`, …)
   */
  async ensureLoggedIn(lease: SessionLease, pins: PinProvider, policy: LoginPolicy): Promise<void> {
    this.assertCurrent(lease);
    if (this.loggedIn) return;
    if (!this.loginInFlight) {
      this.loginInFlight = this.doLogin(lease, pins, policy).finally(() => {
        this.loginInFlight = undefined;
      });
    }
    await this.loginInFlight;
    this.assertCurrent(lease);
  }

  private async doLogin(lease: SessionLease, pins: PinProvider, policy: LoginPolicy): Promise<void> {
    if (this.sessionLoggedIn(lease.handle)) {
      this.loggedIn = true;
      return;
    }
    const token = refreshToken(this.slot);
    const remembered = this.goodPin && !badPins.has(this.key, this.goodPin.pin) ? this.goodPin : undefined;
    const pin = remembered ?? (await pins.getPin({ kind: "user", token: this.name, tokenUri: this.uri, finalTry: (token.flags & pkcs11js.CKF_USER_PIN_FINAL_TRY) !== 0 }));
    const ctx = this.loginTarget();
    this.assertCurrent(lease); // the PIN source may have taken a while (a prompt)
    if (!pin) {
      if (token.protectedAuthenticationPath) {
        if (token.flags & pkcs11js.CKF_USER_PIN_LOCKED) {
          throw new PinRefusedError("PKCS11_PIN_LOCKED", `the user PIN of ${this.name} is locked; not logging in`, "locked", { hint: pinLockedHint(this.quirks) });
        }
        logger.info("enter the PIN on the token's PIN pad", { tokenName: this.name });
        this.loginAttempts++;
        login(this.module.api, lease.handle, "user", undefined, ctx);
        this.loggedIn = true;
        return;
      }
      throw new RaError("pin", "PKCS11_PIN_REQUIRED", `${this.name} needs a PIN and none was given`, {
        hint: "give it with pin-source=file:/path in the URI, RA_AGENT_PIN_FILE=/path (mode 0600), RA_AGENT_PIN, or run on a terminal to be prompted",
      });
    }
    checkLoginAllowed({ ...ctx, token, pin, policy, userType: "user" });
    this.loginAttempts++;
    logger.debug("logging in to token", { tokenName: this.name, pinSource: pin.source });
    try {
      login(this.module.api, lease.handle, "user", pin.pin, ctx);
    } catch (e) {
      if (remembered && hasCkr(e, pkcs11js.CKR_PIN_INCORRECT)) this.goodPin = undefined;
      throw e;
    }
    this.loggedIn = true;
    this.goodPin = pin;
  }

  /** The token's description with fresh flags (PIN state); the cached one when it cannot be read. */
  currentToken(): TokenDescription {
    try {
      return refreshToken(this.slot);
    } catch {
      return this.slot.token;
    }
  }

  /**
   * True when the token is there now. Reads token info (fresh PIN flags) or, when it
   * was gone, the slot list; never logs in. Marks the token absent when it vanished.
   */
  probePresence(): boolean {
    if (this.present) {
      try {
        // The slot, not the token info: OpenSC answers C_GetTokenInfo from its cache
        // after a card is pulled, but C_GetSlotInfo asks the reader.
        if ((this.module.api.C_GetSlotInfo(this.slot.handle).flags & CKF_TOKEN_PRESENT) === 0) {
          this.present = false;
          this.noteError(new RaError("token", "PKCS11_TOKEN_NOT_PRESENT", `${this.name} is not present`, { hint: "insert the card or key; the next request finds it again" }));
          return false;
        }
        refreshToken(this.slot);
        return true;
      } catch (e) {
        this.present = false;
        this.noteError(e);
        return false;
      }
    }
    try {
      return listTokens(this.module).some((s) => tokenIdentity(s) === this.key);
    } catch {
      return false;
    }
  }

  /** The user PIN that logged in, for `reusePin` context-specific logins. */
  rememberedUserPin(): PinResult | undefined {
    return this.goodPin;
  }

  /**
   * After a recoverable error: drops our sessions, re-initialises the module when
   * its quirks say so, and finds the token again by identity (not slot id). One
   * recovery runs at a time; callers that saw an older generation just retry.
   * @throws RaError `PKCS11_TOKEN_NOT_PRESENT` (kind `token`) when the token is gone
   */
  async recover(seenGeneration: number): Promise<void> {
    if (seenGeneration !== this.generation && this.present) return;
    if (!this.recovering) {
      this.recovering = (async () => {
        this.recoveries++;
        this.dropSessions("recovering from a token error");
        if (this.quirks.reinitializeOnRecovery) {
          try {
            this.module.reinitialize(this.quirks);
          } catch (e) {
            this.present = false;
            const err = toRaError(e, { operation: "C_Initialize", token: this.name, quirks: this.quirks });
            this.noteError(err);
            throw err;
          }
          this.moduleGeneration = this.module.generation;
        }
        this.relocate();
      })().finally(() => {
        this.recovering = undefined;
      });
    }
    await this.recovering;
  }

  /** Finds this token again among the module's slots. */
  private relocate(): void {
    let found: TokenSlot | undefined;
    try {
      found = listTokens(this.module, this.quirks).find((s) => tokenIdentity(s) === this.key);
    } catch (e) {
      this.present = false;
      const err = toRaError(e, { operation: "C_GetSlotList", token: this.name, quirks: this.quirks });
      this.noteError(err);
      throw err;
    }
    if (!found) {
      this.present = false;
      const err = new RaError("token", "PKCS11_TOKEN_NOT_PRESENT", `${this.name} is not present`, {
        hint: "insert the card or key, or restore the connection to the HSM or TPM; the next request finds it again",
      });
      this.noteError(err);
      throw err;
    }
    this.slot = found;
    this.mechanisms = undefined;
    this.present = true;
    logger.info("found the token again", { tokenName: this.name });
  }

  /** Closes every idle session (busy ones close when returned); the login ends with the last session. */
  close(): void {
    revokeLaneGrants({ owner: this });
    for (const h of this.idle) this.closeSession(h);
    this.idle = [];
    this.generation++;
    this.loggedIn = false;
    this.goodPin = undefined;
    contexts.delete(this.key);
  }
}

const contexts = new Map<string, TokenContext>();

/** The process-wide context of the token in `slot` (created on first use). */
export function tokenContext(slot: TokenSlot): TokenContext {
  const key = tokenIdentity(slot);
  let ctx = contexts.get(key);
  if (!ctx) {
    ctx = new TokenContext(slot);
    contexts.set(key, ctx);
  } else if (ctx.present) {
    ctx.slot = slot;
  }
  return ctx;
}

/** Every live token context (for status and shutdown). */
export function tokenContexts(): TokenContext[] {
  return [...contexts.values()];
}
