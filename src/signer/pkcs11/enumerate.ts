/**
 * Enumeration for `read-certificate-data`, `list` and the agent: modules, slots,
 * tokens, keys and certificates, each with the exact `pkcs11:` URI to paste.
 */
import { existsSync } from "node:fs";
import { basename } from "node:path";
import { RaError } from "../../errors";
import { logger } from "../../log/logger";
import { parsePkcs11Uri, Pkcs11Uri } from "../../uri/pkcs11-uri";
import { CertificateInfo, parseCertificate } from "../../x509/certificate";
import type { PinState } from "./constants";
import { toRaError } from "./errors";
import type { LoginPolicy } from "./login";
import { isDefaultProxy, loadModule, resolveModule } from "./module";
import { catalogEntryForPath, locateCatalogModule, moduleCatalog } from "./native-config";
import { CertificateObject, objectUri, PrivateKeyObject, readCertificates, readPrivateKeys, readPublicKeys } from "./objects";
import { listP11KitModules } from "./p11-kit";
import { defaultPinProvider, PinProvider } from "./pin";
import { publicKeyDetail, samePublicKey, curveFromEcParams } from "./public-key";
import { searchCertificates } from "./search";
import { tokenContext } from "./session";
import { listSlots, noTokenError, quirksForToken, TokenSlot, tokenMatches, tokenUri } from "./token";

/** A certificate found by {@link findCertificates}. */
export interface FoundCertificate {
  /** Exact URI of the certificate object. */
  uri: string;
  der: Buffer;
}

/**
 * Every certificate matching `uri` (no "several" error: `read-certificate-data`
 * lists them all). Searches without login first; logs in only when nothing was
 * found and exactly one token matched, and a PIN is available.
 * @throws RaError `INVALID_PKCS11_URI`, module errors, `PKCS11_TOKEN_NOT_FOUND`, PIN errors
 */
export async function findCertificates(uri: string, opts: { modulePath?: string; pin?: PinProvider; allowFinalTryLogin?: boolean } = {}): Promise<FoundCertificate[]> {
  try {
    return await findCertificatesUnmapped(uri, opts);
  } catch (e) {
    throw toRaError(e, { operation: "searching certificates" });
  }
}

async function findCertificatesUnmapped(uri: string, opts: { modulePath?: string; pin?: PinProvider; allowFinalTryLogin?: boolean }): Promise<FoundCertificate[]> {
  const parsed = parsePkcs11Uri(uri);
  const module = loadModule(resolveModule({ modulePath: opts.modulePath, uris: [parsed] }).path);
  const search = await searchCertificates(module, parsed, { pins: opts.pin ?? defaultPinProvider([parsed]), policy: { allowFinalTryLogin: opts.allowFinalTryLogin }, login: true });
  if (search.tokens.length === 0) throw noTokenError(module, parsed, "certificates");
  return search.certificates.map((c) => ({ uri: c.uri, der: c.object.der }));
}

/** A module in a listing. */
export interface ModuleListing {
  path: string;
  /** Catalogue id or p11-kit module name. */
  name: string;
  /** How it was found. */
  source: "explicit" | "default" | "p11-kit" | "catalog";
  /** For the proxy: the tokens of every p11-kit module. */
  isProxy: boolean;
  library?: { manufacturer: string; description: string; version: string; cryptokiVersion: string };
  /** Why it could not be loaded. */
  error?: string;
  /** The error's code (`PKCS11_MODULE_LOAD_FAILED`, `PKCS11_DEVICE_ERROR`, …). */
  errorCode?: string;
  /** What to do about the error (module quirks and `native-config/modules.json`). */
  hint?: string;
  slots: SlotListing[];
}

/** A slot in a listing. */
export interface SlotListing {
  slotId: string;
  description: string;
  manufacturer: string;
  tokenPresent: boolean;
  token?: TokenListing;
}

/** A token in a listing. */
export interface TokenListing {
  uri: string;
  label: string;
  manufacturer: string;
  model: string;
  serial: string;
  flags: string[];
  pinState: PinState;
  loginRequired: boolean;
  initialized: boolean;
  quirks: string[];
  /** True when the listing logged in, so private objects are included. */
  loggedIn: boolean;
  keys: KeyListing[];
  certificates: CertificateListing[];
  /** Why objects could not be listed. */
  objectsError?: string;
}

/** A private key in a listing. */
export interface KeyListing {
  uri: string;
  label: string;
  idHex: string;
  keyType: "RSA" | "EC" | "other";
  bits?: number;
  curve?: string;
  sensitive?: boolean;
  extractable?: boolean;
  neverExtractable?: boolean;
  alwaysAuthenticate: boolean;
  canSign?: boolean;
  /** URIs of certificates on the token with this key. */
  certificateUris: string[];
}

/** A certificate in a listing. */
export interface CertificateListing {
  uri: string;
  label: string;
  idHex: string;
  der: Buffer;
  subject?: string;
  issuer?: string;
  serialHex?: string;
  serialDecimal?: string;
  notBefore?: string;
  notAfter?: string;
  sha256Fingerprint?: string;
  keyType?: string;
  isCa?: boolean;
  /** URI of the private key on the token that matches it (when visible). */
  keyUri?: string;
}

/** Options of {@link listPkcs11}. */
export interface ListOptions {
  /** Modules to list; default: the default module (p11-kit-proxy). */
  modulePaths?: string[];
  /** Also list every p11-kit-registered module and every catalogue module installed here, each loaded directly. */
  allModules?: boolean;
  /** Only tokens matching this URI's token attributes. */
  uri?: string;
  /** Log in to matching tokens to list private objects (asks the PIN sources). */
  login?: boolean;
  pin?: PinProvider;
  allowFinalTryLogin?: boolean;
  /** Skip keys and certificates (tokens only). */
  tokensOnly?: boolean;
}

/** Modules to list: explicit ones, else the default; with `allModules`, also p11-kit's and the catalogue's. */
export function moduleCandidates(opts: Pick<ListOptions, "modulePaths" | "allModules" | "uri">): Array<{ path: string; name: string; source: ModuleListing["source"] }> {
  const out = new Map<string, { path: string; name: string; source: ModuleListing["source"] }>();
  const add = (path: string, name: string, source: ModuleListing["source"]): void => {
    if (!out.has(path)) out.set(path, { path, name, source });
  };
  const nameOf = (path: string): string => catalogEntryForPath(path)?.id ?? basename(path);
  if (opts.modulePaths?.length) for (const p of opts.modulePaths) add(resolveModule({ modulePath: p }).path, nameOf(resolveModule({ modulePath: p }).path), "explicit");
  else {
    try {
      const parsed = opts.uri ? parsePkcs11Uri(opts.uri) : undefined;
      const choice = resolveModule({ uris: [parsed] });
      add(choice.path, nameOf(choice.path), choice.source === "default" ? "default" : "explicit");
    } catch (e) {
      if (!opts.allModules) throw e;
    }
  }
  if (opts.allModules) {
    for (const m of listP11KitModules()) add(m.path, m.name, "p11-kit");
    for (const entry of moduleCatalog().modules) {
      const p = locateCatalogModule(entry);
      if (p && p.startsWith("/") && existsSync(p) && ![...out.values()].some((o) => o.name === entry.id)) add(p, entry.id, "catalog");
    }
  }
  return [...out.values()];
}

function hex(b: Buffer): string {
  return b.toString("hex");
}

function certificateListing(slot: TokenSlot, o: CertificateObject, info: CertificateInfo | undefined): CertificateListing {
  return {
    uri: objectUri(slot, o, "cert"),
    label: o.label,
    idHex: hex(o.id),
    der: o.der,
    subject: info?.subject,
    issuer: info?.issuer,
    serialHex: info?.serialHex,
    serialDecimal: info?.serialDecimal,
    notBefore: info?.notBefore.toISOString(),
    notAfter: info?.notAfter.toISOString(),
    sha256Fingerprint: info?.sha256Fingerprint,
    keyType: info ? `${info.keyType} ${info.keyDetail}` : undefined,
    isCa: info?.x509.ca,
  };
}

async function listObjects(slot: TokenSlot, listing: TokenListing, opts: ListOptions, pins: PinProvider, policy: LoginPolicy): Promise<void> {
  const ctx = tokenContext(slot);
  await ctx.withSessionRecovering(async (lease) => {
    const api = slot.module.api;
    if (opts.login && slot.token.loginRequired && !ctx.loggedIn) await ctx.ensureLoggedIn(lease, pins, policy);
    listing.loggedIn = ctx.loggedIn;
    const certObjects = readCertificates(api, lease.handle, {});
    const certs = certObjects.map((o) => {
      let info: CertificateInfo | undefined;
      try {
        info = parseCertificate(o.der);
      } catch {
        info = undefined;
      }
      return { o, info, listing: certificateListing(slot, o, info) };
    });
    const keys: PrivateKeyObject[] = readPrivateKeys(api, lease.handle, {});
    for (const k of keys) {
      let pub = k.publicKey;
      if (!pub && k.id.length) {
        const pubs = readPublicKeys(api, lease.handle, { id: k.id }).filter((p) => p.publicKey && p.keyType === k.keyType);
        if (pubs.length === 1) pub = pubs[0].publicKey;
      }
      const detail = pub ? publicKeyDetail(pub) : { keyType: k.keyType, curve: curveFromEcParams(k.ecParams) };
      const keyUri = objectUri(slot, k, "private");
      const matching = certs.filter((c) => c.info && (pub ? samePublicKey(c.info.publicKey, pub) : c.o.id.equals(k.id) && k.id.length > 0 && c.info.keyType === k.keyType));
      for (const c of matching) c.listing.keyUri ??= keyUri;
      listing.keys.push({
        uri: keyUri,
        label: k.label,
        idHex: hex(k.id),
        keyType: k.keyType,
        bits: "bits" in detail ? detail.bits : undefined,
        curve: detail.curve,
        sensitive: k.sensitive,
        extractable: k.extractable,
        neverExtractable: k.neverExtractable,
        alwaysAuthenticate: k.alwaysAuthenticate,
        canSign: k.canSign,
        certificateUris: matching.map((c) => c.listing.uri),
      });
    }
    listing.certificates.push(...certs.map((c) => c.listing));
  });
}

/**
 * Lists modules, their slots and tokens, and (unless `tokensOnly`) the keys and
 * certificates of each token, with their URIs. A module that fails to load, or a
 * token whose objects cannot be read, is reported in the listing, not thrown.
 * @throws RaError `INVALID_PKCS11_URI`; module resolution errors when no module can be chosen;
 *   PIN errors when `login` is set
 */
export async function listPkcs11(opts: ListOptions = {}): Promise<ModuleListing[]> {
  try {
    return await listUnmapped(opts);
  } catch (e) {
    throw toRaError(e, { operation: "listing tokens" });
  }
}

function noteModuleError(listing: ModuleListing, e: unknown, operation: string): void {
  const err = toRaError(e, { operation });
  listing.error = err.message;
  listing.errorCode = err.code;
  if (err.hint) listing.hint = err.hint;
}

async function listUnmapped(opts: ListOptions): Promise<ModuleListing[]> {
  const filter: Pkcs11Uri | undefined = opts.uri ? parsePkcs11Uri(opts.uri) : undefined;
  const pins = opts.pin ?? defaultPinProvider([filter]);
  const policy: LoginPolicy = { allowFinalTryLogin: opts.allowFinalTryLogin };
  const result: ModuleListing[] = [];
  for (const cand of moduleCandidates(opts)) {
    const listing: ModuleListing = { path: cand.path, name: cand.name, source: cand.source, isProxy: isDefaultProxy(cand.path), slots: [] };
    result.push(listing);
    let module;
    try {
      module = loadModule(cand.path);
    } catch (e) {
      noteModuleError(listing, e, "loading the module");
      continue;
    }
    listing.library = { manufacturer: module.info.manufacturer, description: module.info.description, version: module.info.libraryVersion, cryptokiVersion: module.info.cryptokiVersion };
    let slots;
    try {
      slots = listSlots(module, false);
    } catch (e) {
      noteModuleError(listing, e, "C_GetSlotList");
      continue;
    }
    for (const slot of slots) {
      const sl: SlotListing = { slotId: slot.slotId.toString(), description: slot.description, manufacturer: slot.manufacturer, tokenPresent: slot.token !== undefined };
      if (slot.token) {
        const ts = slot as TokenSlot;
        if (filter && !tokenMatches(ts, filter)) continue;
        const t = ts.token;
        const tl: TokenListing = {
          uri: t.initialized ? tokenUri(ts) : "",
          label: t.label, manufacturer: t.manufacturer, model: t.model, serial: t.serial, flags: t.flagNames, pinState: t.pinState,
          loginRequired: t.loginRequired, initialized: t.initialized, quirks: quirksForToken(ts).ids, loggedIn: false, keys: [], certificates: [],
        };
        sl.token = tl;
        if (t.initialized && !opts.tokensOnly) {
          try {
            await listObjects(ts, tl, opts, pins, policy);
          } catch (e) {
            if (e instanceof RaError && e.kind === "pin") throw e;
            tl.objectsError = toRaError(e, { operation: "listing objects", token: t.label }).message;
            logger.debug("cannot list objects", { tokenName: t.label, error: tl.objectsError });
          }
        }
      } else if (filter) {
        continue;
      }
      listing.slots.push(sl);
    }
  }
  return result;
}
