/**
 * The PKCS#11 {@link Signer}: a private key in a token and its certificate.
 * Opened once, it keeps its token's session pool and login for the life of the
 * process, and finds the token again (logging in once) when the token drops its
 * sessions.
 */
import { verify as verifySignature } from "node:crypto";
import { isMainThread } from "node:worker_threads";
import * as pkcs11js from "pkcs11js";
import { RaError, usageError } from "../../errors";
import { logger } from "../../log/logger";
import { isPkcs11Uri, parsePkcs11Uri, Pkcs11Uri } from "../../uri/pkcs11-uri";
import { CertificateInfo, parseCertificate } from "../../x509/certificate";
import { algorithmFor, DigestAlgorithm, KeyType, SigV4X509Algorithm, Signer } from "../signer";
import type { PinState } from "./constants";
import { errorLogFields, hasCkr, toRaError } from "./errors";
import type { LoginPolicy } from "./login";
import { isRevoked, LaneGrant, LaneGrantDescription, openLaneGrant } from "./lane-grant";
import { chooseMechanism, planWith, SignMechanism } from "./mechanisms";
import { loadModule, resolveModule } from "./module";
import { CertificateObject, PrivateKeyObject, readPrivateKeys } from "./objects";
import { defaultPinProvider, PinProvider } from "./pin";
import { samePublicKey } from "./public-key";
import { chainFromToken, findCertificateForKey, findPrivateKey, searchCertificates, selectCertificate } from "./search";
import { SessionLease, TokenContext, tokenContext } from "./session";
import { KeyHandle, signInPlace, signOnToken, SignAuth } from "./sign-operation";
import { SignTiming } from "./sign-timing";
import { matchTokens, noTokenError, severalTokensError, tokenIdentity, TokenSlot } from "./token";

/** Size of r and of s in a raw ECDSA signature, by curve. */
const EC_FIELD_BYTES: Record<string, number> = { "P-256": 32, "P-384": 48, "P-521": 66 };

/** Options of {@link openPkcs11Signer}. */
export interface Pkcs11SignerOptions {
  /** `pkcs11:` URI of the certificate (may also identify the key). */
  certificateUri?: string;
  /** The certificate, DER, from a file (with `keyUri`). */
  certificateDer?: Uint8Array;
  /** `pkcs11:` URI of the private key. */
  keyUri?: string;
  /** Module file (`--pkcs11-lib`) or a known module name; default p11-kit-proxy. */
  modulePath?: string;
  /** Intermediate CA certificates, DER, leaf-side first. When empty and the certificate is on a token, issuers found on the token are used. */
  intermediates?: Uint8Array[];
  /** Use the user PIN as the context-specific PIN of always-authenticate keys (`--reuse-pin`). */
  reusePin?: boolean;
  /** PIN sources; default: URI pin-source / pin-value, RA_AGENT_PIN_FILE, RA_AGENT_PIN, terminal prompt. */
  pin?: PinProvider;
  /** Log in at the token's final PIN try with a PIN that was not typed at the prompt (`--allow-final-try`). */
  allowFinalTryLogin?: boolean;
}

/** The token a signer uses, as shown in status output. */
export interface Pkcs11TokenInfo {
  label: string;
  manufacturer: string;
  model: string;
  serial: string;
  /** The token's exact URI. */
  uri: string;
  /** Module file. */
  module: string;
  flags: string[];
  pinState: PinState;
  /** Ids of the quirks that apply (`native-config/quirks.json`). */
  quirks: string[];
}

/** A signer's health, for `ra-agent agent` status. Reads cached state only (no token I/O). */
export interface Pkcs11SignerStatus {
  keyUri: string;
  certificateUri?: string;
  token: Pkcs11TokenInfo;
  present: boolean;
  loggedIn: boolean;
  /** C_Login(CKU_USER) calls on this token in this process. */
  loginAttempts: number;
  recoveries: number;
  signatures: number;
  sessions: { open: number; idle: number; busy: number; max: number };
  certificateNotAfter: string;
  lastError?: { code: string; message: string; at: string };
  closed: boolean;
}

const DIGESTS: ReadonlySet<string> = new Set<DigestAlgorithm>(["SHA256", "SHA384", "SHA512"]);

/** A private key in a PKCS#11 token with its certificate. */
export class Pkcs11Signer implements Signer {
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
  /** The parsed certificate. */
  readonly certificateInfo: CertificateInfo;

  private readonly ctx: TokenContext;
  private readonly auth: SignAuth;
  private key: PrivateKeyObject;
  private keyGeneration: number;
  private readonly requiresLogin: boolean;
  private forceLogin = false;
  private readonly signTiming = new SignTiming();
  /** What signing needs of {@link key}; rebuilt when the key is looked up again. */
  private keyHandle: KeyHandle;
  /** The mechanism chosen per digest (the token's list and quirks do not change). */
  private readonly mechanisms = new Map<DigestAlgorithm, SignMechanism>();
  /** An EC key's signature was verified in full since the key was last looked up. */
  private verifiedSinceLookup = false;
  private signatures = 0;
  private closed = false;
  /** Sessions lent to lane threads for this key (see ./lane-grant). */
  private readonly laneGrants = new Set<LaneGrant>();

  /** @internal use {@link openPkcs11Signer} */
  constructor(init: { ctx: TokenContext; key: PrivateKeyObject; keyUri: string; keyGeneration: number; certificate: CertificateInfo; certificateUri?: string; chain: Uint8Array[]; auth: SignAuth }) {
    this.ctx = init.ctx;
    this.key = init.key;
    this.keyUri = init.keyUri;
    this.keyGeneration = init.keyGeneration;
    this.certificateInfo = init.certificate;
    this.certificate = init.certificate.der;
    this.certificateUri = init.certificateUri;
    this.chain = init.chain;
    this.auth = init.auth;
    this.keyType = init.certificate.keyType;
    this.algorithm = algorithmFor(this.keyType);
    this.hardwareBacked = init.key.sensitive !== false && init.key.extractable !== true;
    this.requiresLogin = init.ctx.slot.token.loginRequired && init.key.private;
    this.keyHandle = this.handleFor(init.key);
    init.ctx.refs++;
  }

  /** The token holding the key. */
  get tokenInfo(): Pkcs11TokenInfo {
    const t = this.ctx.slot.token;
    return {
      label: t.label, manufacturer: t.manufacturer, model: t.model, serial: t.serial, uri: this.ctx.uri, module: this.ctx.module.path,
      flags: t.flagNames, pinState: t.pinState, quirks: this.ctx.quirks.ids,
    };
  }

  /** Cached state for health checks; never touches the token. */
  status(): Pkcs11SignerStatus {
    return {
      keyUri: this.keyUri,
      certificateUri: this.certificateUri,
      token: this.tokenInfo,
      present: this.ctx.present,
      loggedIn: this.ctx.loggedIn,
      loginAttempts: this.ctx.loginAttempts,
      recoveries: this.ctx.recoveries,
      signatures: this.signatures,
      sessions: this.ctx.sessionStats(),
      certificateNotAfter: this.certificateInfo.notAfter.toISOString(),
      lastError: this.ctx.lastError,
      closed: this.closed,
    };
  }

  /**
   * Looks at the token without logging in or spending a PIN try (C_GetTokenInfo, or
   * the slot list when it was gone) and returns the status with fresh presence and
   * PIN flags. A token that came back is used (and logged in once) on the next signature.
   */
  async probe(): Promise<Pkcs11SignerStatus> {
    const present = this.ctx.probePresence();
    return { ...this.status(), present };
  }

  /**
   * Signs `message` (RSASSA-PKCS1-v1_5 or DER ECDSA) with the digest, SHA256 by default.
   * On a lost session or token it finds the token again, logs in once with the PIN
   * that worked, and retries once. Every RSA signature is verified with the
   * certificate before it is returned: one faulty RSA-CRT signature reveals the key.
   * For EC keys the first signature after each key lookup is verified in full
   * (the key still matches the certificate), every one is checked for form;
   * verifying each would cost two scalar multiplications, more than SoftHSM's signature.
   * @throws RaError `SIGNER_CLOSED`; `PKCS11_TOKEN_NOT_PRESENT` (kind `token`) when the token
   *   is gone; PIN errors (kind `pin`); `PKCS11_BAD_SIGNATURE` when the token's signature
   *   does not verify; other token errors naming the CKR code
   * @remarks SoftHSM has no CKM_ECDSA_SHA256: EC messages are hashed here and signed with
   *   CKM_ECDSA. TPM and smart-card tokens sign one at a time (quirks.json).
   */
  sign(message: Uint8Array, digest: DigestAlgorithm = "SHA256"): Promise<Buffer> {
    try {
      const signature = this.signSoon(message, digest);
      return signature instanceof Promise ? signature : Promise.resolve(signature);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * {@link sign} without a promise when the signature is made at once (the
   * synchronous in-place path of the PKCS#11 thread); a promise otherwise.
   * @throws the errors of {@link sign}, synchronously when they happen at once
   */
  signSoon(message: Uint8Array, digest: DigestAlgorithm = "SHA256"): Buffer | Promise<Buffer> {
    if (this.closed) throw new RaError("internal", "SIGNER_CLOSED", "the PKCS#11 signer was closed", { hint: "open it again" });
    if (!DIGESTS.has(digest)) throw usageError("UNSUPPORTED_DIGEST", `unsupported digest ${digest}`, "use SHA256, SHA384 or SHA512");
    const seenGeneration = this.ctx.generation;
    let now: Buffer | undefined;
    try {
      now = this.signNow(message, digest);
    } catch (e) {
      return this.recoverAndSign(e, seenGeneration, message, digest);
    }
    if (!now) return this.signWaiting(message, digest);
    this.signatures++;
    return now;
  }

  /** The full path: a session when one is free, the login, the key found again, C_SignAsync for slow tokens. */
  private async signWaiting(message: Uint8Array, digest: DigestAlgorithm): Promise<Buffer> {
    let seenGeneration = this.ctx.generation;
    let signature: Buffer;
    try {
      signature = await this.ctx.withSession((lease) => {
        seenGeneration = lease.generation;
        return this.signWith(lease, message, digest);
      });
    } catch (e) {
      return this.recoverAndSign(e, seenGeneration, message, digest);
    }
    this.signatures++;
    return signature;
  }

  /**
   * After a failed attempt: a recoverable error (the token dropped our sessions,
   * was reset or re-inserted) finds the token again and signs once more; any other
   * error, or a second failure, is thrown as an RaError.
   */
  private async recoverAndSign(e: unknown, seenGeneration: number, message: Uint8Array, digest: DigestAlgorithm): Promise<Buffer> {
    if (!this.ctx.isRecoverable(e)) throw this.fail(e, "C_Sign");
    logger.warn("lost the token session; finding the token again and retrying once", { tokenName: this.ctx.name, ...errorLogFields(e) });
    if (hasCkr(e, pkcs11js.CKR_USER_NOT_LOGGED_IN)) this.forceLogin = true;
    let signature: Buffer;
    try {
      await this.ctx.recover(seenGeneration);
      signature = await this.ctx.withSession((lease) => this.signWith(lease, message, digest));
    } catch (e2) {
      throw this.fail(e2, "C_Sign");
    }
    this.signatures++;
    return signature;
  }

  private fail(e: unknown, operation: string): RaError {
    const err = toRaError(e, { operation, token: this.ctx.name, object: this.keyUri, quirks: this.ctx.quirks });
    this.ctx.noteError(err);
    return err;
  }

  /**
   * The PKCS#11 thread's hot path: signs at once, synchronously, when nothing has to
   * be waited for (logged in, key handle current, an idle session, a quick token, no
   * context-specific login, not on the main thread). Undefined when it does not
   * apply; {@link signWith} then does the full work. Same errors as {@link signWith}.
   */
  private signNow(message: Uint8Array, digest: DigestAlgorithm): Buffer | undefined {
    if (isMainThread || this.key.alwaysAuthenticate || this.keyGeneration !== this.ctx.generation || this.signTiming.prefersPool()) return undefined;
    if ((this.requiresLogin || this.forceLogin) && !this.ctx.loggedIn) return undefined;
    const lease = this.ctx.tryAcquire();
    if (!lease) return undefined;
    try {
      const plan = planWith(this.mechanismFor(digest), message);
      const signature = signInPlace(this.ctx, lease, this.keyHandle, plan);
      this.verifyIfDue(message, digest, signature, plan.mechanismName);
      return signature;
    } finally {
      this.ctx.release(lease);
    }
  }

  private async signWith(lease: SessionLease, message: Uint8Array, digest: DigestAlgorithm): Promise<Buffer> {
    this.ctx.assertCurrent(lease);
    if ((this.requiresLogin || this.forceLogin) && !this.ctx.loggedIn) await this.ctx.ensureLoggedIn(lease, this.auth.pins, this.auth.policy);
    if (this.keyGeneration !== lease.generation) this.relocateKey(lease);
    const plan = planWith(this.mechanismFor(digest), message);
    const signature = await signOnToken(this.ctx, lease, this.keyHandle, plan, this.auth);
    this.verifyIfDue(message, digest, signature, plan.mechanismName);
    return signature;
  }

  /**
   * Verifies a signature with the certificate's public key: every RSA signature, and
   * an EC key's first one after each key lookup.
   * @throws RaError `PKCS11_BAD_SIGNATURE`
   */
  private verifyIfDue(message: Uint8Array, digest: DigestAlgorithm, signature: Buffer, mechanismName: string): void {
    if (this.keyType === "EC" && this.verifiedSinceLookup) return;
    const hash = digest === "SHA256" ? "sha256" : digest === "SHA384" ? "sha384" : "sha512";
    // A faulty signature (a token bug, or a fault attack on RSA-CRT) must never leave the process.
    if (!verifySignature(hash, message, { key: this.certificateInfo.publicKey, dsaEncoding: "der" }, signature)) {
      throw new RaError("token", "PKCS11_BAD_SIGNATURE", `the signature from ${this.ctx.name} (${mechanismName}) does not verify with the certificate's public key`, {
        hint: "the key does not match the certificate, or the token is faulty; check with `ra-agent sign-string --debug`",
      });
    }
    this.verifiedSinceLookup = true;
  }

  /** The mechanism for `digest`, chosen once. */
  private mechanismFor(digest: DigestAlgorithm): SignMechanism {
    let m = this.mechanisms.get(digest);
    if (!m) {
      m = chooseMechanism(this.keyType, digest, this.ctx.mechanismList(), this.ctx.quirks.avoidMechanisms);
      this.mechanisms.set(digest, m);
    }
    return m;
  }

  private handleFor(key: PrivateKeyObject): KeyHandle {
    return { handle: key.handle, alwaysAuthenticate: key.alwaysAuthenticate, uri: this.keyUri, ecFieldBytes: EC_FIELD_BYTES[this.certificateInfo.keyDetail], timing: this.signTiming };
  }

  /** Finds the key object again after the token dropped our sessions (object handles may change). */
  private relocateKey(lease: SessionLease): void {
    const api = this.ctx.module.api;
    const query = { id: this.key.id.length ? this.key.id : undefined, label: this.key.label !== "" ? this.key.label : undefined };
    const keys = readPrivateKeys(api, lease.handle, query).filter((k) => k.keyType === this.key.keyType && (!k.publicKey || samePublicKey(k.publicKey, this.certificateInfo.publicKey)));
    const same = keys.find((k) => k.alwaysAuthenticate === this.key.alwaysAuthenticate) ?? keys[0];
    if (!same) {
      throw new RaError("token", "PKCS11_KEY_NOT_FOUND", `the key ${this.keyUri} is no longer on ${this.ctx.name}`, { hint: "the token was re-initialised or the key deleted; check with `ra-agent list`" });
    }
    this.key = same;
    this.keyHandle = this.handleFor(same);
    this.keyGeneration = lease.generation;
    this.verifiedSinceLookup = false;
  }

  /**
   * Lends a lane thread a session of its own and this key's handle, so that
   * signatures with `digest` can also be made there (see ./lane-grant). Only for a
   * quick EC key that signs in place on this (non-main) thread: logged in as needed,
   * without a context-specific login, verified since it was looked up, on a token
   * whose pool allows more than one session.
   * @returns undefined when the key does not qualify now
   * @throws RaError when the session cannot be opened
   */
  grantLane(digest: DigestAlgorithm): LaneGrantDescription | undefined {
    const timing = this.signTiming;
    // EC only: an RSA signature is verified every time (a fault attack on RSA-CRT), which a lane does not do.
    if (this.keyType !== "EC" || this.closed || isMainThread || this.key.alwaysAuthenticate || timing.typicalMicros() === 0 || timing.prefersPool()) return undefined;
    if (!this.ctx.present || !this.ctx.moduleCurrent || this.keyGeneration !== this.ctx.generation || !this.verifiedSinceLookup || this.ctx.quirks.sessionPoolSize < 2) return undefined;
    if ((this.requiresLogin || this.forceLogin) && !this.ctx.loggedIn) return undefined;
    const mechanism = this.mechanismFor(digest);
    let grant: LaneGrant;
    try {
      grant = openLaneGrant(this.ctx.module, this.ctx, this.ctx.slot.handle);
    } catch (e) {
      // Not noted as the token's last error: signing goes on without a lane.
      throw toRaError(e, { operation: "C_OpenSession", token: this.ctx.name, object: this.keyUri, quirks: this.ctx.quirks });
    }
    // Grants the token context took back (a recovery) are forgotten here.
    for (const g of this.laneGrants) if (isRevoked(g)) this.laneGrants.delete(g);
    this.laneGrants.add(grant);
    logger.debug("lent a session to a signing lane", { tokenName: this.ctx.name, key: this.keyUri, grant: grant.id });
    return {
      grant: grant.id,
      modulePath: this.ctx.module.path,
      session: grant.session,
      key: this.keyHandle.handle,
      mechanism,
      ecFieldBytes: this.keyHandle.ecFieldBytes,
      publicKey: this.certificateInfo.publicKey.export({ type: "spki", format: "der" }),
      keyUri: this.keyUri,
      control: grant.control,
    };
  }

  /** Takes back a session lent by {@link grantLane}. Idempotent. */
  releaseLane(grant: number): void {
    for (const g of this.laneGrants) {
      if (g.id !== grant) continue;
      this.laneGrants.delete(g);
      g.revoke();
    }
  }

  /** Releases this signer's hold on the token; the last signer closes the sessions (which logs out). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const g of this.laneGrants) g.revoke();
    this.laneGrants.clear();
    this.ctx.refs--;
    if (this.ctx.refs <= 0) this.ctx.close();
  }
}

function parseOptionalUri(text: string | undefined, what: string, expected: "cert" | "private"): Pkcs11Uri | undefined {
  if (text === undefined) return undefined;
  if (!isPkcs11Uri(text)) throw usageError("INVALID_PKCS11_URI", `the ${what} must be a pkcs11: URI here`, "write it as pkcs11:token=...;object=...");
  const uri = parsePkcs11Uri(text);
  if (uri.type !== undefined && uri.type !== expected) {
    throw usageError("PKCS11_URI_WRONG_TYPE", `the ${what} URI has type=${uri.type}; it must name ${expected === "cert" ? "a certificate (type=cert)" : "a private key (type=private)"}`, `use type=${expected} or drop type= from the URI`);
  }
  return uri;
}

/**
 * Opens a signer for a key in a PKCS#11 token. The certificate comes from its
 * URI or from a file (`certificateDer`); the key from its URI, or through the
 * certificate (its CKA_ID, then public-key match). A key that does not match the
 * certificate is refused here.
 * @throws RaError (usage) `INVALID_PKCS11_URI`, `PKCS11_URI_REQUIRED`, `PKCS11_URI_WRONG_TYPE`;
 *   (token) `PKCS11_MODULE_NOT_FOUND`, `PKCS11_MODULE_LOAD_FAILED`, `PKCS11_TOKEN_NOT_FOUND`,
 *   `PKCS11_SEVERAL_TOKENS`, `PKCS11_CERTIFICATE_NOT_FOUND`, `PKCS11_SEVERAL_CERTIFICATES`,
 *   `PKCS11_KEY_NOT_FOUND`, `PKCS11_SEVERAL_KEYS`, `PKCS11_KEY_CERTIFICATE_MISMATCH`;
 *   (pin) `PKCS11_PIN_REQUIRED`, `PKCS11_PIN_INCORRECT`, `PKCS11_PIN_LOCKED`, `PKCS11_PIN_FINAL_TRY`, PIN file errors
 */
export async function openPkcs11Signer(opts: Pkcs11SignerOptions): Promise<Pkcs11Signer> {
  try {
    return await open(opts);
  } catch (e) {
    throw toRaError(e, { operation: "opening the PKCS#11 key" });
  }
}

async function open(opts: Pkcs11SignerOptions): Promise<Pkcs11Signer> {
  const certUri = parseOptionalUri(opts.certificateUri, "certificate", "cert");
  const keyUri = parseOptionalUri(opts.keyUri, "private key", "private");
  if (!certUri && !keyUri) {
    throw usageError("PKCS11_URI_REQUIRED", "no pkcs11: URI for the certificate or the private key", "pass --certificate pkcs11:... and/or --private-key pkcs11:...");
  }
  if (certUri && opts.certificateDer) throw usageError("PKCS11_URI_REQUIRED", "both a certificate URI and a certificate file were given", "give one of them");
  if (!keyUri && opts.certificateDer) {
    throw usageError("PKCS11_URI_REQUIRED", "a certificate file was given but no pkcs11: URI for its private key", "pass --private-key pkcs11:token=...;object=...");
  }
  const choice = resolveModule({ modulePath: opts.modulePath, uris: [keyUri, certUri] });
  const module = loadModule(choice.path);
  logger.debug("PKCS#11 module", { module: choice.path, from: choice.source, library: `${module.info.manufacturer} ${module.info.description} ${module.info.libraryVersion}` });
  const policy: LoginPolicy = { allowFinalTryLogin: opts.allowFinalTryLogin ?? false };
  const auth: SignAuth = { pins: opts.pin ?? defaultPinProvider([keyUri, certUri]), policy, reusePin: opts.reusePin ?? false };

  // 1. The certificate: from the file, or found on a token without logging in first.
  let cert: { info: CertificateInfo; ctx?: TokenContext; object?: CertificateObject; uri?: string } | undefined;
  if (opts.certificateDer) {
    cert = { info: parseCertificate(opts.certificateDer) };
  } else if (certUri) {
    const search = await searchCertificates(module, certUri, { pins: auth.pins, policy, login: true });
    if (search.tokens.length === 0) throw noTokenError(module, certUri, "the certificate");
    const found = selectCertificate(search, certUri);
    cert = { info: found.info, ctx: found.ctx, object: found.object, uri: found.uri };
  }

  // 2. The key's token: the certificate's token when the key URI matches it too.
  const keySearchUri = keyUri ?? certUri!;
  let slot: TokenSlot;
  if (cert?.ctx && !keyUri) {
    slot = cert.ctx.slot;
  } else {
    const tokens = matchTokens(module, keySearchUri);
    const certTokenKey = cert?.ctx?.key;
    const same = certTokenKey ? tokens.find((t) => tokenIdentity(t) === certTokenKey) : undefined;
    if (same) slot = same;
    else if (tokens.length === 1) slot = tokens[0];
    else if (tokens.length === 0) throw noTokenError(module, keySearchUri, "the private key");
    else throw severalTokensError(tokens, keySearchUri, "the private key");
  }
  const ctx = tokenContext(slot);

  // 3. The key (and, for a key URI alone, its certificate), matched by public key.
  const { key, keyUriText, certificate, certificateUri, chain, generation } = await ctx.withSessionRecovering(async (lease) => {
    const chosen = await findPrivateKey(ctx, lease, { uri: keySearchUri, derivedFromCertificate: !keyUri, cert: cert && { info: cert.info, object: cert.object }, auth });
    let certificate = cert?.info;
    let certificateUri = cert?.uri;
    let onToken = cert?.ctx !== undefined;
    if (!certificate) {
      const found = await findCertificateForKey(ctx, lease, chosen, keySearchUri, auth);
      certificate = found.info;
      certificateUri = found.uri;
      onToken = true;
    }
    let chain: Buffer[] = (opts.intermediates ?? []).map((c) => Buffer.from(c));
    if (chain.length === 0 && onToken) {
      chain = chainFromToken(ctx, lease, certificate);
      if (chain.length) logger.debug("using intermediate certificates found on the token", { count: chain.length });
    }
    return { key: chosen.key, keyUriText: chosen.uri, certificate, certificateUri, chain, generation: lease.generation };
  });
  if (key.canSign === false) {
    throw new RaError("token", "PKCS11_KEY_CANNOT_SIGN", `the key ${keyUriText} is not allowed to sign (CKA_SIGN is false)`, { hint: "use a key generated with signing usage (e.g. `pkcs11-tool --keypairgen --usage-sign`)" });
  }
  if (key.sensitive === false || key.extractable === true) {
    logger.warn("the private key can be read out of the token (not sensitive, or extractable)", { key: keyUriText });
  }
  const signer = new Pkcs11Signer({ ctx, key, keyUri: keyUriText, keyGeneration: generation, certificate, certificateUri, chain, auth });
  logger.debug("PKCS#11 signer ready", { key: signer.keyUri, certificate: signer.certificateUri ?? "(file)", token: ctx.name, quirks: ctx.quirks.ids });
  return signer;
}
