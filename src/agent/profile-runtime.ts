/**
 * One configured profile at run time: its signer (opened once, kept, re-opened
 * only after a failure or a config reload), its credentials cache and its
 * signing endpoint. A PIN error blocks every further use of the signer until
 * {@link ProfileRuntime.resetAfterReload}: tokens count wrong PINs and lock.
 */
import type { Logger } from "winston";
import type { AwsCredentials, CredentialProcessOutput } from "../credentials/credentials";
import { toCredentialProcessOutput } from "../credentials/credentials";
import { RaError } from "../errors";
import type { Signer } from "../signer/signer";
import { parseCertificate } from "../x509/certificate";
import type { KeyListing, ProfileBackend, TokenStatus } from "./backend";
import { ProfileCredentialCache, describeError, type CachePolicy, type CacheStatus, type RefreshEvent } from "./cache";
import type { Clock } from "./clock";
import { systemClock } from "./clock";
import type { ProfileConfig } from "./config";
import { parseStringToSign } from "./string-to-sign";

/** Errors after which a signer cannot work again and must be opened anew. */
const UNUSABLE_SIGNER = new Set(["PKCS11_THREAD_STOPPED", "SIGNER_CLOSED"]);

/** Options of {@link ProfileRuntime}. */
export interface ProfileRuntimeOptions {
  backend: ProfileBackend;
  log: Logger;
  clock?: Clock;
  random?: () => number;
  cachePolicy?: Partial<CachePolicy>;
}

/** A profile's entry in `GET /v1/status`. No secrets. */
export interface ProfileStatus {
  name: string;
  keySource: "pkcs11" | "file";
  /** Where the signer stands: not opened yet, open, failed to open, or blocked after a PIN error. */
  signer: "not-open" | "opening" | "open" | "failed" | "pin-blocked";
  hardwareBacked?: boolean;
  certificate?: { subject: string; issuer: string; serial: string; notAfter: string; sha256Fingerprint: string };
  token?: TokenStatus;
  allowSigning: boolean;
  keepWarm: boolean;
  cache: CacheStatus;
  lastSignerError?: { kind: string; code: string; message: string; at: string };
  signatures: number;
}

/** The serialized credential_process body for one set of credentials, built once. */
interface Body {
  credentials: AwsCredentials;
  json: Buffer;
}

/** Run-time state of one profile. */
export class ProfileRuntime {
  readonly cache: ProfileCredentialCache;
  private signer?: Signer;
  private opening?: Promise<Signer>;
  private signerFailure?: { error: unknown; at: number };
  private pinBlocked = false;
  private body?: Body;
  private signatures = 0;
  private closed = false;
  private readonly clock: Clock;

  constructor(
    readonly config: ProfileConfig,
    private readonly options: ProfileRuntimeOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.cache = new ProfileCredentialCache(config.name, () => this.fetchCredentials(), {
      clock: this.clock,
      random: options.random,
      policy: options.cachePolicy,
      keepWarm: config.keepWarm,
      onRefresh: (e) => this.logRefresh(e),
    });
  }

  get name(): string {
    return this.config.name;
  }

  /**
   * The credential_process JSON for cached credentials that can be handed out
   * now, or undefined (then use {@link credentialsBody}). Synchronous: the hot path.
   */
  peekCredentialsBody(): Buffer | undefined {
    const c = this.cache.peek();
    return c ? this.bodyFor(c) : undefined;
  }

  /**
   * The credential_process JSON, refreshing when needed.
   * @throws RaError when no valid credentials can be had.
   */
  async credentialsBody(): Promise<Buffer> {
    return this.bodyFor(await this.cache.get());
  }

  /** Credentials (for the IMDS/ECS endpoint and `update`). */
  credentials(): Promise<AwsCredentials> {
    return this.cache.get();
  }

  /**
   * Signs a SigV4-X509 string to sign with the profile's key.
   * @throws RaError `AGENT_SIGNING_DISABLED` unless the profile sets allowSigning;
   *   `AGENT_INVALID_STRING_TO_SIGN`; signer errors.
   */
  async signStringToSign(text: string): Promise<{ algorithm: string; signature: string }> {
    if (!this.config.allowSigning) {
      throw new RaError("agent", "AGENT_SIGNING_DISABLED", `signing is not enabled for profile "${this.name}"`, {
        hint: 'set "allowSigning": true in the profile and reload the agent (SIGHUP)',
      });
    }
    return this.useSigner((signer) => {
      parseStringToSign(text, signer.algorithm, this.clock.now());
      return signer.sign(Buffer.from(text, "utf8"), "SHA256").then((signature) => {
        this.signatures++;
        return { algorithm: signer.algorithm, signature: signature.toString("hex") };
      });
    });
  }

  /** Keys and certificates visible to this profile. */
  async listKeys(): Promise<KeyListing[]> {
    const signer = this.signer;
    if (this.options.backend.listKeys && !this.pinBlocked) {
      const listed = await this.options.backend.listKeys(this.config, signer);
      if (listed) return listed;
    }
    if (!signer) return [];
    const info = parseCertificate(signer.certificate);
    return [
      {
        uri: this.config.certificate ?? this.config.privateKey ?? "",
        type: "certificate",
        keyType: info.keyType,
        subject: info.subject,
        issuer: info.issuer,
        serial: info.serialDecimal,
        notAfter: info.notAfter.toISOString(),
        sha256Fingerprint: info.sha256Fingerprint,
      },
    ];
  }

  /** Status without secrets; looks at the token (off the event loop) when the signer can. */
  async status(): Promise<ProfileStatus> {
    const keySource = /^pkcs11:/i.test(this.config.certificate ?? this.config.privateKey ?? "") ? "pkcs11" : "file";
    const status: ProfileStatus = {
      name: this.name,
      keySource,
      signer: this.pinBlocked ? "pin-blocked" : this.signer ? "open" : this.opening ? "opening" : this.signerFailure ? "failed" : "not-open",
      allowSigning: this.config.allowSigning,
      keepWarm: this.config.keepWarm,
      cache: this.cache.status(),
      signatures: this.signatures,
    };
    if (this.signer) {
      status.hardwareBacked = this.signer.hardwareBacked;
      try {
        const c = parseCertificate(this.signer.certificate);
        status.certificate = { subject: c.subject, issuer: c.issuer, serial: c.serialDecimal, notAfter: c.notAfter.toISOString(), sha256Fingerprint: c.sha256Fingerprint };
      } catch {
        // A signer always holds a parsed certificate; nothing to report otherwise.
      }
      try {
        status.token = await this.options.backend.tokenStatus?.(this.signer);
      } catch {
        // Status must never fail because a token is gone.
      }
    }
    if (this.signerFailure) status.lastSignerError = { ...describeError(this.signerFailure.error), at: new Date(this.signerFailure.at).toISOString() };
    return status;
  }

  /** After a config reload that kept this profile: allow the PIN to be tried again. */
  async resetAfterReload(): Promise<void> {
    if (this.pinBlocked) {
      // The PIN source may have changed: open a fresh signer next time.
      const old = this.signer;
      this.signer = undefined;
      this.pinBlocked = false;
      this.signerFailure = undefined;
      await old?.close().catch(() => undefined);
    }
    this.cache.reset();
  }

  /** Fetches credentials at start when the profile asks to be kept warm. */
  async warm(): Promise<void> {
    if (this.config.keepWarm) await this.cache.warm();
  }

  /** Stops the cache and closes the signer. */
  async close(): Promise<void> {
    this.closed = true;
    this.cache.close();
    const signer = this.signer ?? (await this.opening?.catch(() => undefined));
    this.signer = undefined;
    this.body = undefined;
    await signer?.close().catch(() => undefined);
  }

  private bodyFor(c: AwsCredentials): Buffer {
    const body = this.body;
    if (body && body.credentials === c) return body.json;
    const out: CredentialProcessOutput = toCredentialProcessOutput(c);
    const json = Buffer.from(JSON.stringify(out));
    this.body = { credentials: c, json };
    return json;
  }

  private async fetchCredentials(): Promise<AwsCredentials> {
    return this.useSigner((signer) => this.options.backend.createSession(signer, this.config));
  }

  /**
   * Runs an operation on the profile's signer (opening it if needed). A PIN error
   * blocks the signer. A signer that can no longer work (its PKCS#11 thread
   * stopped) is dropped and the key opened again, once: nothing reached the token,
   * and the reopen uses the same PIN source, so no refused PIN is tried again.
   */
  private useSigner<T>(op: (signer: Signer) => Promise<T>, attempt = 1): Promise<T> {
    const run = (signer: Signer): Promise<T> => {
      let result: Promise<T>;
      try {
        result = op(signer);
      } catch (e) {
        result = Promise.reject(e);
      }
      return result.catch((e: unknown) => this.afterSignerFailure(e, signer, op, attempt));
    };
    // An open signer is used at once, without waiting a turn: this is every signature's path.
    const open = this.closed || this.pinBlocked ? undefined : this.signer;
    return open ? run(open) : this.getSigner().then(run);
  }

  /** What {@link useSigner} does after `op` failed on `signer`: block the PIN, or open the key again once. */
  private afterSignerFailure<T>(e: unknown, signer: Signer, op: (signer: Signer) => Promise<T>, attempt: number): Promise<T> {
    if (e instanceof RaError && e.kind === "pin") this.blockPin(e);
    if (!(e instanceof RaError && UNUSABLE_SIGNER.has(e.code))) throw e;
    if (this.signer === signer) {
      this.signer = undefined;
      this.options.log.warn(`profile "${this.name}": the key is no longer usable (${e.code}); opening it again`, { profile: this.name, code: e.code });
      void signer.close().catch(() => undefined);
    }
    if (attempt >= 2) throw e;
    return this.useSigner(op, attempt + 1);
  }


  private blockPin(e: RaError): void {
    if (!this.pinBlocked) {
      this.options.log.error(`profile "${this.name}": PIN problem (${e.code}); the agent stops using this token until the configuration is reloaded (SIGHUP)`, { profile: this.name, code: e.code });
    }
    this.pinBlocked = true;
    this.signerFailure = { error: e, at: this.clock.now() };
  }

  /** The open signer; opens it once (single flight). */
  private getSigner(): Promise<Signer> {
    if (this.closed) return Promise.reject(new RaError("agent", "AGENT_CLOSED", `profile "${this.name}" is shutting down`));
    if (this.pinBlocked && this.signerFailure) {
      const e = this.signerFailure.error as RaError;
      return Promise.reject(
        new RaError("pin", e.code, `profile "${this.name}": ${e.message}`, {
          hint: `${e.hint ? e.hint + "; then " : ""}reload the agent (SIGHUP): the agent never retries a PIN by itself`,
          cause: e,
        }),
      );
    }
    if (this.signer) return Promise.resolve(this.signer);
    if (!this.opening) {
      this.opening = (async () => {
        try {
          const signer = await this.options.backend.openSigner(this.config);
          if (this.closed) {
            await signer.close().catch(() => undefined);
            throw new RaError("agent", "AGENT_CLOSED", `profile "${this.name}" is shutting down`);
          }
          this.signer = signer;
          this.signerFailure = undefined;
          this.options.log.info(`profile "${this.name}": key opened`, { profile: this.name, algorithm: signer.algorithm, source: signer.source, hardwareBacked: signer.hardwareBacked });
          return signer;
        } catch (e) {
          this.signerFailure = { error: e, at: this.clock.now() };
          if (e instanceof RaError && e.kind === "pin") this.blockPin(e);
          throw e;
        } finally {
          this.opening = undefined;
        }
      })();
    }
    return this.opening;
  }

  private logRefresh(e: RefreshEvent): void {
    const log = this.options.log;
    if (e.outcome === "ok") {
      log.info(`profile "${e.profile}": credentials obtained (${e.reason}), valid until ${e.expiration.toISOString()}`, { profile: e.profile, durationMs: e.durationMs });
    } else {
      const d = describeError(e.error);
      log.warn(
        `profile "${e.profile}": credentials refresh (${e.reason}) failed: ${d.message}` +
          (e.disabled ? "; refreshes stopped until the configuration is reloaded" : e.nextAttemptAt ? `; next attempt at ${e.nextAttemptAt.toISOString()}` : ""),
        { profile: e.profile, code: d.code, kind: d.kind },
      );
    }
  }
}
