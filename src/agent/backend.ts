/**
 * What the agent needs from the rest of ra-agent, per profile: open a signer,
 * call CreateSession, list keys. The agent core depends only on this interface;
 * {@link ./default-backend} wires the real signer and Roles Anywhere client,
 * tests can pass their own credential source.
 */
import type { AwsCredentials } from "../credentials/credentials";
import type { Signer } from "../signer/signer";
import type { ProfileConfig } from "./config";

/** A key or certificate as `GET /v1/keys` lists it. */
export interface KeyListing {
  /** `pkcs11:` URI of the object, or a file path. */
  uri: string;
  /** "certificate", "private-key" or "public-key". */
  type: string;
  label?: string;
  /** CKA_ID in hex. */
  id?: string;
  keyType?: string;
  /** For certificates. */
  subject?: string;
  issuer?: string;
  serial?: string;
  notAfter?: string;
  sha256Fingerprint?: string;
}

/** Token facts for `GET /v1/status`, when the signer can tell them. */
export interface TokenStatus {
  present?: boolean;
  loggedIn?: boolean;
  label?: string;
  serial?: string;
  manufacturer?: string;
  model?: string;
  /** Flags such as `CKF_USER_PIN_COUNT_LOW`, `CKF_USER_PIN_FINAL_TRY`, `CKF_USER_PIN_LOCKED`. */
  flags?: string[];
  [key: string]: unknown;
}

/** The per-profile operations the agent calls. */
export interface ProfileBackend {
  /**
   * Opens the profile's signer (reading its PIN from the configured source).
   * Called once per profile and kept; again only after a failure or a reload.
   * @throws RaError of kind "pin" for PIN problems (the agent then stops trying).
   */
  openSigner(profile: ProfileConfig): Promise<Signer>;
  /**
   * Signs a CreateSession with `signer` and returns the credentials.
   * @throws RaError of kind "service" / "token" / "pin".
   */
  createSession(signer: Signer, profile: ProfileConfig): Promise<AwsCredentials>;
  /**
   * Lists the keys and certificates the profile's source can see (PKCS#11
   * enumeration); undefined when the source cannot be enumerated (file keys).
   * Must not log in.
   */
  listKeys?(profile: ProfileConfig, signer: Signer | undefined): Promise<KeyListing[] | undefined>;
  /** Token state behind `signer`, when known, with a fresh look at the token. Must not block the event loop or log in. */
  tokenStatus?(signer: Signer): Promise<TokenStatus | undefined>;
  /** Releases shared resources (connection pools) at shutdown. */
  close?(): Promise<void>;
}
