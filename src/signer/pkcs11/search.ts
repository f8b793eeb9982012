/**
 * Finding the certificate and its private key, as the reference helper does
 * (after draft-woodhouse-cert-best-practice §8):
 * 1. certificates are searched on every matching token without logging in; when
 *    none is found and exactly one token matched, log in and search again;
 * 2. the key is searched by its URI, or, when only the certificate was named, by
 *    the certificate's CKA_ID, then its label, then among all keys of the token;
 * 3. a key and a certificate belong together only when their public keys are the
 *    same (SPKI / modulus / EC point from the key or its public-key object); when
 *    the token does not reveal the public key, a test signature decides.
 * A mismatch is refused here, before any network call.
 */
import { randomBytes, verify as verifySignature, KeyObject } from "node:crypto";
import { RaError } from "../../errors";
import { logger } from "../../log/logger";
import { formatPkcs11Uri, Pkcs11Uri, withoutPin } from "../../uri/pkcs11-uri";
import { CertificateInfo, parseCertificate } from "../../x509/certificate";
import type { LoginPolicy } from "./login";
import { planSignature } from "./mechanisms";
import { Pkcs11Module } from "./module";
import { CertificateObject, ObjectQuery, objectUri, PrivateKeyObject, readCertificates, readPrivateKeys, readPublicKeys } from "./objects";
import type { PinProvider } from "./pin";
import { curveFromEcParams, samePublicKey } from "./public-key";
import { SessionLease, TokenContext, tokenContext } from "./session";
import { SignTiming } from "./sign-timing";
import { signOnToken, SignAuth } from "./sign-operation";
import { matchTokens, TokenSlot } from "./token";

/** A certificate found on a token. */
export interface CertificateCandidate {
  ctx: TokenContext;
  object: CertificateObject;
  /** Parsed certificate; undefined when its key type is not usable (the DER is still listed). */
  info?: CertificateInfo;
  /** Its exact URI. */
  uri: string;
}

/** Result of a certificate search. */
export interface CertificateSearch {
  tokens: TokenSlot[];
  certificates: CertificateCandidate[];
}

function shownUri(uri: Pkcs11Uri): string {
  return formatPkcs11Uri(withoutPin({ ...uri, modulePath: undefined, moduleName: undefined, pinSource: undefined }));
}

function tryParse(der: Buffer): CertificateInfo | undefined {
  try {
    return parseCertificate(der);
  } catch (e) {
    logger.debug("skipping a certificate ra-agent cannot use", { error: (e as Error).message });
    return undefined;
  }
}

function candidatesOn(ctx: TokenContext, objects: CertificateObject[]): CertificateCandidate[] {
  return objects.map((object) => ({ ctx, object, info: tryParse(object.der), uri: objectUri(ctx.slot, object, "cert") }));
}

/**
 * Certificates matching `uri` on the tokens matching `uri`. Logs in (once) only
 * when nothing was found and exactly one token matched.
 * @throws RaError from the PIN sources and C_Login when a login is needed
 */
export async function searchCertificates(module: Pkcs11Module, uri: Pkcs11Uri, opts: { pins: PinProvider; policy: LoginPolicy; login: boolean }): Promise<CertificateSearch> {
  const tokens = matchTokens(module, uri);
  const query = { label: uri.object, id: uri.id };
  const certificates: CertificateCandidate[] = [];
  for (const slot of tokens) {
    const ctx = tokenContext(slot);
    const objects = await ctx.withSessionRecovering((lease) => readCertificates(module.api, lease.handle, query));
    certificates.push(...candidatesOn(ctx, objects));
  }
  if (certificates.length === 0 && tokens.length === 1 && opts.login) {
    const ctx = tokenContext(tokens[0]);
    if (ctx.slot.token.loginRequired && !ctx.loggedIn) {
      logger.debug("no certificate visible without login; logging in to the only matching token", { tokenName: ctx.name });
      const objects = await ctx.withSessionRecovering(async (lease) => {
        await ctx.ensureLoggedIn(lease, opts.pins, opts.policy);
        return readCertificates(module.api, lease.handle, query);
      });
      certificates.push(...candidatesOn(ctx, objects));
    }
  }
  return { tokens, certificates };
}

function isValidNow(info: CertificateInfo): boolean {
  const now = Date.now();
  return info.notBefore.getTime() <= now && now <= info.notAfter.getTime();
}

function describeCandidates(list: CertificateCandidate[]): string {
  return list
    .slice(0, 10)
    .map((c) => `  ${c.uri}${c.info ? `  (subject ${c.info.subject}; valid ${c.info.notBefore.toISOString().slice(0, 10)} to ${c.info.notAfter.toISOString().slice(0, 10)}${c.info.x509.ca ? "; a CA certificate" : ""})` : ""}`)
    .join("\n") + (list.length > 10 ? `\n  … and ${list.length - 10} more` : "");
}

/**
 * Picks the one certificate a signer uses. Among several, a single end-entity
 * certificate that is valid now wins (CA certificates and expired renewals on the
 * same token are common); otherwise every candidate is listed.
 * @throws RaError `PKCS11_CERTIFICATE_NOT_FOUND`, `PKCS11_SEVERAL_CERTIFICATES` (kind `token`)
 */
export function selectCertificate(search: CertificateSearch, uri: Pkcs11Uri): CertificateCandidate & { info: CertificateInfo } {
  const usable = search.certificates.filter((c): c is CertificateCandidate & { info: CertificateInfo } => c.info !== undefined);
  if (usable.length === 0) {
    const reason = search.certificates.length
      ? `the matching certificate(s) have key types ra-agent cannot use (RSA and EC only)`
      : search.tokens.length > 1
        ? `none is visible without login, and ra-agent logs in only when exactly one token matches`
        : `the token holds no such certificate`;
    throw new RaError("token", "PKCS11_CERTIFICATE_NOT_FOUND", `no usable certificate matches ${shownUri(uri)} on ${search.tokens.length} token(s): ${reason}`, {
      hint: search.tokens.length > 1 ? "add token= or serial= to the URI so that one token matches" : "check object= / id= (run `ra-agent read-certificate-data` with a token-only URI to list certificates), or give a PIN if the certificate is private",
    });
  }
  if (usable.length === 1) return usable[0];
  const leaves = usable.filter((c) => !c.info.x509.ca);
  const current = leaves.filter((c) => isValidNow(c.info));
  for (const pool of [leaves, current]) {
    if (pool.length === 1) {
      logger.debug("several certificates match; using the only end-entity certificate valid now", { certificate: pool[0].uri });
      return pool[0];
    }
  }
  throw new RaError("token", "PKCS11_SEVERAL_CERTIFICATES", `${usable.length} certificates match ${shownUri(uri)}:\n${describeCandidates(usable)}`, {
    hint: "name one with object=LABEL (or id=, serial=) in the certificate URI; each candidate's URI is listed above",
  });
}

/** What a key object says about a certificate's public key. */
type Verdict = "match" | "mismatch" | "unknown";

function classify(api: Pkcs11Module["api"], session: Buffer, key: PrivateKeyObject, cert: CertificateInfo): Verdict {
  if (key.keyType !== cert.keyType) return "mismatch";
  if (key.publicKey) return samePublicKey(key.publicKey, cert.publicKey) ? "match" : "mismatch";
  if (key.keyType === "EC") {
    const curve = curveFromEcParams(key.ecParams);
    if (curve && curve !== cert.keyDetail) return "mismatch";
  }
  if (key.id.length > 0) {
    // Tokens without the public key on the private key object: try the public-key object with the same CKA_ID.
    const pubs = readPublicKeys(api, session, { id: key.id }).filter((p) => p.publicKey && p.keyType === key.keyType);
    if (pubs.some((p) => samePublicKey(p.publicKey!, cert.publicKey))) return "match";
  }
  return "unknown";
}

/** Signs a random challenge with `key` and checks it against `publicKey`. */
async function testSignature(ctx: TokenContext, lease: SessionLease, key: PrivateKeyObject, keyUri: string, auth: SignAuth, publicKeys: KeyObject[]): Promise<boolean[]> {
  if (key.keyType === "other") return publicKeys.map(() => false);
  const challenge = Buffer.concat([Buffer.from("ra-agent key/certificate match "), randomBytes(32)]);
  const plan = planSignature(key.keyType, challenge, "SHA256", ctx.mechanismList(), ctx.quirks.avoidMechanisms);
  let signature: Buffer;
  try {
    signature = await signOnToken(ctx, lease, { handle: key.handle, alwaysAuthenticate: key.alwaysAuthenticate, uri: keyUri, timing: new SignTiming() }, plan, auth);
  } catch (e) {
    if (e instanceof RaError && e.kind === "pin") throw e;
    logger.debug("test signature failed", { key: keyUri, error: (e as Error).message });
    return publicKeys.map(() => false);
  }
  return publicKeys.map((pk) => {
    try {
      return verifySignature("sha256", challenge, { key: pk, dsaEncoding: "der" }, signature);
    } catch {
      return false;
    }
  });
}

/** Reads private keys, logging in first when the token hides them or `needLogin` says the found ones are not enough. */
async function readKeys(ctx: TokenContext, lease: SessionLease, query: Omit<ObjectQuery, "objectClass">, auth: SignAuth, enough: (keys: PrivateKeyObject[]) => boolean): Promise<PrivateKeyObject[]> {
  const api = ctx.module.api;
  let keys = readPrivateKeys(api, lease.handle, query);
  if (ctx.slot.token.loginRequired && !ctx.loggedIn && (keys.length === 0 || keys.some((k) => k.private) || !enough(keys))) {
    await ctx.ensureLoggedIn(lease, auth.pins, auth.policy);
    keys = readPrivateKeys(api, lease.handle, query);
  }
  return keys;
}

/** A private key chosen for signing. */
export interface ChosenKey {
  key: PrivateKeyObject;
  uri: string;
}

function pickPreferred(keys: PrivateKeyObject[]): PrivateKeyObject {
  // The same key may be present twice (one copy always-authenticate): prefer the one that needs no extra PIN.
  return keys.find((k) => !k.alwaysAuthenticate) ?? keys[0];
}

function listKeys(ctx: TokenContext, keys: PrivateKeyObject[]): string {
  return keys.slice(0, 10).map((k) => `  ${objectUri(ctx.slot, k, "private")}  (${k.keyType}${k.alwaysAuthenticate ? ", always-authenticate" : ""})`).join("\n");
}

/**
 * Finds the private key on the token of `ctx`.
 * @param uri the key URI, or the certificate URI when no key URI was given (`derivedFromCertificate`)
 * @param cert the certificate the key must match, when known
 * @throws RaError `PKCS11_KEY_NOT_FOUND`, `PKCS11_KEY_CERTIFICATE_MISMATCH`, `PKCS11_SEVERAL_KEYS` (kind `token`), PIN errors
 */
export async function findPrivateKey(
  ctx: TokenContext,
  lease: SessionLease,
  opts: { uri: Pkcs11Uri; derivedFromCertificate: boolean; cert?: { info: CertificateInfo; object?: CertificateObject }; auth: SignAuth },
): Promise<ChosenKey> {
  const api = ctx.module.api;
  const { uri, cert } = opts;
  const queries: Array<Omit<ObjectQuery, "objectClass">> = [];
  if (opts.derivedFromCertificate && cert?.object) {
    if (cert.object.id.length > 0) queries.push({ id: cert.object.id });
    if (uri.object !== undefined || uri.id !== undefined) queries.push({ label: uri.object, id: uri.id });
    queries.push({});
  } else {
    queries.push({ label: uri.object, id: uri.id });
  }

  const mismatched: PrivateKeyObject[] = [];
  let lastKeys: PrivateKeyObject[] = [];
  for (const query of queries) {
    const enough = (keys: PrivateKeyObject[]): boolean => !cert || keys.some((k) => classify(api, lease.handle, k, cert.info) === "match");
    const keys = await readKeys(ctx, lease, query, opts.auth, enough);
    if (keys.length === 0) continue;
    lastKeys = keys;
    if (!cert) {
      const distinct = keys.filter((k, i) => !k.publicKey || keys.findIndex((o) => o.publicKey && samePublicKey(o.publicKey, k.publicKey!)) === i);
      if (distinct.length > 1) {
        throw new RaError("token", "PKCS11_SEVERAL_KEYS", `${keys.length} private keys match ${shownUri(uri)} and there is no certificate to tell them apart:\n${listKeys(ctx, keys)}`, {
          hint: "name one key with object= or id= in the key URI, or give its certificate (--certificate)",
        });
      }
      const key = pickPreferred(keys);
      return { key, uri: objectUri(ctx.slot, key, "private") };
    }
    const verdicts = keys.map((k) => classify(api, lease.handle, k, cert.info));
    let matches = keys.filter((_, i) => verdicts[i] === "match");
    const unknown = keys.filter((_, i) => verdicts[i] === "unknown");
    if (matches.length === 0 && unknown.length > 0) {
      // The token does not reveal these public keys: let one signature decide.
      const confirmed: PrivateKeyObject[] = [];
      for (const k of unknown) {
        const [ok] = await testSignature(ctx, lease, k, objectUri(ctx.slot, k, "private"), opts.auth, [cert.info.publicKey]);
        if (ok) confirmed.push(k);
        else mismatched.push(k);
      }
      matches = confirmed;
    }
    mismatched.push(...keys.filter((_, i) => verdicts[i] === "mismatch"));
    if (matches.length > 0) {
      const key = pickPreferred(matches);
      if (matches.length > 1) logger.debug("several keys match the certificate; using one", { chosen: objectUri(ctx.slot, key, "private"), count: matches.length });
      return { key, uri: objectUri(ctx.slot, key, "private") };
    }
    if (!opts.derivedFromCertificate) break;
  }

  if (cert && mismatched.length > 0) {
    const k = mismatched[0];
    const what = k.keyType !== cert.info.keyType ? `an ${k.keyType} key, but the certificate has an ${cert.info.keyType} key` : "a different key of the same type";
    throw new RaError("token", "PKCS11_KEY_CERTIFICATE_MISMATCH", `the private key ${objectUri(ctx.slot, k, "private")} does not belong to the certificate (subject ${cert.info.subject}): it is ${what}`, {
      hint: "name the key that belongs to this certificate (object= / id= in the key URI), or the certificate of this key",
    });
  }
  const all = lastKeys.length ? lastKeys : readPrivateKeys(api, lease.handle, {});
  throw new RaError("token", "PKCS11_KEY_NOT_FOUND", `no private key matches ${shownUri(uri)} on ${ctx.name}${all.length ? `; private keys there:\n${listKeys(ctx, all)}` : ""}`, {
    hint: all.length ? "correct object= / id= in the key URI (labels are case-sensitive)" : "check that the key is on this token and that the PIN is given (private keys are visible only after login)",
  });
}

/**
 * Finds the certificate of a key on its token (key URI only): by CKA_ID, then by
 * the key URI's label, then among all certificates, matched by public key.
 * @throws RaError `PKCS11_CERTIFICATE_NOT_FOUND`, `PKCS11_SEVERAL_CERTIFICATES`
 */
export async function findCertificateForKey(ctx: TokenContext, lease: SessionLease, key: ChosenKey, keyUri: Pkcs11Uri, auth: SignAuth): Promise<CertificateCandidate & { info: CertificateInfo }> {
  const api = ctx.module.api;
  const queries: Array<Omit<ObjectQuery, "objectClass">> = [];
  if (key.key.id.length > 0) queries.push({ id: key.key.id });
  if (keyUri.object !== undefined) queries.push({ label: keyUri.object });
  queries.push({});
  let publicKey = key.key.publicKey;
  if (!publicKey && key.key.id.length > 0) {
    const pubs = readPublicKeys(api, lease.handle, { id: key.key.id }).filter((p) => p.publicKey && p.keyType === key.key.keyType);
    if (pubs.length === 1) publicKey = pubs[0].publicKey;
  }
  for (const query of queries) {
    const found = candidatesOn(ctx, readCertificates(api, lease.handle, query)).filter((c): c is CertificateCandidate & { info: CertificateInfo } => c.info !== undefined && c.info.keyType === key.key.keyType);
    if (found.length === 0) continue;
    let matching: typeof found;
    if (publicKey) {
      matching = found.filter((c) => samePublicKey(c.info.publicKey, publicKey!));
    } else {
      const ok = await testSignature(ctx, lease, key.key, key.uri, auth, found.map((c) => c.info.publicKey));
      matching = found.filter((_, i) => ok[i]);
    }
    if (matching.length === 0) continue;
    return selectCertificate({ tokens: [ctx.slot], certificates: matching }, { ...keyUri, type: "cert" });
  }
  throw new RaError("token", "PKCS11_CERTIFICATE_NOT_FOUND", `no certificate on ${ctx.name} matches the key ${key.uri}`, {
    hint: "store the certificate on the token next to the key (same CKA_ID), or give it with --certificate FILE",
  });
}

/**
 * Intermediate CA certificates on the same token that issue the leaf, leaf-side
 * first, self-signed roots excluded (the trust anchor holds the root), at most 5.
 */
export function chainFromToken(ctx: TokenContext, lease: SessionLease, leaf: CertificateInfo): Buffer[] {
  const cas = readCertificates(ctx.module.api, lease.handle, {})
    .map((o) => tryParse(o.der))
    .filter((c): c is CertificateInfo => c !== undefined && c.x509.ca === true);
  const chain: Buffer[] = [];
  let current = leaf;
  while (chain.length < 5) {
    const issuer = cas.find((c) => !c.der.equals(current.der) && current.x509.checkIssued(c.x509) && current.x509.verify(c.publicKey) && !chain.some((d) => d.equals(c.der)));
    if (!issuer || issuer.x509.checkIssued(issuer.x509)) break;
    chain.push(issuer.der);
    current = issuer;
  }
  return chain;
}
