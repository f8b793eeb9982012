/**
 * Provisions SoftHSM tokens for tests and the demo, in one directory:
 * `softhsm2.conf` (from softhsm2.conf.template; tokendir inside the directory,
 * mode 0700), tokens, key pairs generated INSIDE the tokens (sensitive, never
 * extractable), certificates from a demo CA stored on the tokens next to their
 * keys, PEM copies, the CA, and PIN files (mode 0600).
 *
 * Idempotent: calling it again on the same directory with the same token list
 * creates only what is missing and returns the same description.
 *
 * Token work runs in a child process (this file with `--worker`), because
 * SoftHSM reads SOFTHSM2_CONF once per process: provisioning never disturbs the
 * caller's own SoftHSM instance. PINs go to the child on stdin, never on argv.
 *
 * Usage as a script: `node dist/softhsm/provision.js --dir DIR [--fixtures]`
 * prints the description (JSON, including the PINs of these demo tokens).
 */
import type * as X509 from "@peculiar/x509";
import { spawn } from "node:child_process";
import { createPublicKey, randomInt, webcrypto } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { CertificateAuthority, PkiKeyAlgorithm } from "../scripts/lib/pki";

/** The PKI libraries, loaded only in the parent process (the worker does not need them). */
async function loadPki(): Promise<{ x509: typeof X509; pki: typeof import("../scripts/lib/pki") }> {
  const pki = await import("../scripts/lib/pki"); // imports reflect-metadata first
  const x509 = await import("@peculiar/x509");
  return { x509, pki };
}

/** Key types the provisioner generates. */
export type ProvisionKeyType = "RSA-2048" | "RSA-3072" | "EC-P256" | "EC-P384";

/** One key pair to create on a token, with its certificate(s). */
export interface KeySpec {
  /** CKA_LABEL of the key pair and of its certificate. */
  label: string;
  /** CKA_ID in hex; default: the key's position on the token, from 01. */
  idHex?: string;
  keyType: ProvisionKeyType;
  /** CKA_ALWAYS_AUTHENTICATE: a PIN for every signature. */
  alwaysAuthenticate?: boolean;
  /** The certificate object: `public` (default), `private` (visible only after login), `none` (PEM file only). */
  certificate?: "public" | "private" | "none";
  /** Keep the public-key object (default true). */
  publicKeyObject?: boolean;
  /** CKA_PRIVATE false on the private key: usable without login. */
  noLogin?: boolean;
  /** Issue a certificate that expired yesterday. */
  expired?: boolean;
  /** Store a second certificate with the same CKA_ID under this label (like YubiKey attestation certificates). */
  extraCertificateLabel?: string;
  /** Certificate subject; default `CN=<token>/<key>, O=ra-agent test`. */
  subject?: string;
}

/** One token to create. */
export interface TokenSpec {
  label: string;
  /** User PIN; random digits by default. */
  pin?: string;
  /** Security officer PIN; random digits by default. */
  soPin?: string;
  keys?: KeySpec[];
  /** Also store the CA certificates (intermediate and root) on the token, as some tokens carry their chain. */
  storeCaCertificates?: boolean;
}

/** Options of {@link provisionSoftHsm}. */
export interface ProvisionOptions {
  /** Directory for everything (created with mode 0700). */
  dir: string;
  /** Default: {@link DEFAULT_TOKENS}. */
  tokens?: TokenSpec[];
  /** Key algorithm of the demo CA (EC-P256 by default). */
  caAlgorithm?: PkiKeyAlgorithm;
  /** Issue leaf certificates from an intermediate CA under the root (intermediate.pem). */
  intermediateCa?: boolean;
}

/** A provisioned key. */
export interface ProvisionedKey {
  label: string;
  idHex: string;
  keyType: ProvisionKeyType;
  alwaysAuthenticate: boolean;
  /** `pkcs11:token=…;serial=…;object=…;id=…;type=private` */
  keyUri: string;
  /** URI of the certificate object; undefined when `certificate: "none"`. */
  certificateUri?: string;
  certificatePem: string;
  /** PEM copy in the directory. */
  certificatePath: string;
  /** Further certificates with the same CKA_ID. */
  extraCertificates: Array<{ label: string; uri: string; pem: string }>;
}

/** A provisioned token. */
export interface ProvisionedToken {
  label: string;
  serial: string;
  pin: string;
  soPin: string;
  /** File holding the user PIN (mode 0600), for RA_AGENT_PIN_FILE or pin-source=file:. */
  pinFile: string;
  /** `pkcs11:token=…;serial=…` */
  uri: string;
  keys: ProvisionedKey[];
}

/** What {@link provisionSoftHsm} returns. */
export interface ProvisionResult {
  dir: string;
  /** Path of softhsm2.conf: set SOFTHSM2_CONF to it before loading SoftHSM. */
  softhsmConf: string;
  tokens: ProvisionedToken[];
  caPem: string;
  caKeyPem: string;
  caPath: string;
  /** The intermediate CA that issued the leaves, with `intermediateCa`. */
  intermediatePem?: string;
  intermediatePath?: string;
}

/** The demo token: RSA-2048, EC P-256 and EC P-384 keys, each with a certificate. */
export const DEFAULT_TOKENS: TokenSpec[] = [
  {
    label: "ra-agent",
    keys: [
      { label: "rsa-2048", keyType: "RSA-2048" },
      { label: "ec-p256", keyType: "EC-P256" },
      { label: "ec-p384", keyType: "EC-P384" },
    ],
  },
];

/** Tokens with the quirks seen in the wild (for tests): see docs/pkcs11.md. */
export const FIXTURE_TOKENS: TokenSpec[] = [
  ...DEFAULT_TOKENS,
  {
    label: "quirks",
    keys: [
      { label: "always-auth", keyType: "EC-P256", alwaysAuthenticate: true },
      { label: "private-cert", keyType: "RSA-2048", certificate: "private" },
      { label: "no-pubkey-ec", keyType: "EC-P256", publicKeyObject: false },
      { label: "no-cert", keyType: "EC-P256", certificate: "none" },
      { label: "two-certs", keyType: "EC-P256", extraCertificateLabel: "two-certs-attestation" },
      { label: "expired", keyType: "EC-P256", expired: true },
      { label: "no-login", keyType: "EC-P256", noLogin: true },
    ],
  },
  { label: "twin", keys: [{ label: "twin-key", keyType: "EC-P256" }] },
  { label: "twin", keys: [{ label: "twin-key", keyType: "EC-P256" }] },
];

interface WorkerKey {
  label: string;
  idHex: string;
  keyType: ProvisionKeyType;
  alwaysAuthenticate: boolean;
  noLogin: boolean;
  publicKeyObject: boolean;
  /** SPKI recorded when the key was generated (tokens without public-key objects cannot tell it again). */
  knownSpkiB64?: string;
}

interface WorkerCert {
  idHex: string;
  label: string;
  derB64: string;
  subjectB64: string;
  issuerB64: string;
  serialB64: string;
  private: boolean;
}

interface WorkerToken {
  index: number;
  label: string;
  pin: string;
  soPin: string;
  serial?: string;
  keys: WorkerKey[];
  certs: WorkerCert[];
}

interface WorkerJob {
  phase: "keys" | "certs";
  tokens: WorkerToken[];
}

interface WorkerResult {
  tokens: Array<{ index: number; serial: string; keys: Array<{ idHex: string; spkiB64: string }> }>;
}

interface StateFile {
  version: 1;
  spec: string;
  tokens: Array<{ serial: string; pin: string; soPin: string; certs: Record<string, string>; spki?: Record<string, string> }>;
}

function randomPin(digits: number): string {
  let s = "";
  for (let i = 0; i < digits; i++) s += String(randomInt(10));
  return s;
}

function writePrivate(path: string, data: string): void {
  writeFileSync(path, data, { mode: 0o600 });
  chmodSync(path, 0o600);
}

function derInteger(hex: string): Buffer {
  let b = Buffer.from(hex.length % 2 ? "0" + hex : hex, "hex");
  if (b[0] & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return Buffer.concat([Buffer.from([0x02, b.length]), b]);
}

function runWorker(conf: string, job: WorkerJob): Promise<WorkerResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [__filename, "--worker"], {
      env: { ...process.env, SOFTHSM2_CONF: conf },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) {
        reject(new Error(`SoftHSM provisioning worker failed (${code}): ${Buffer.concat(err).toString().trim()}`));
        return;
      }
      try {
        resolvePromise(JSON.parse(Buffer.concat(out).toString()) as WorkerResult);
      } catch (e) {
        reject(new Error(`SoftHSM provisioning worker printed no result: ${(e as Error).message}; stderr: ${Buffer.concat(err).toString().trim()}`));
      }
    });
    child.stdin.end(JSON.stringify(job));
  });
}

async function loadOrCreateCa(dir: string, name: string, algorithm: PkiKeyAlgorithm, parent?: CertificateAuthority): Promise<CertificateAuthority> {
  const { x509, pki } = await loadPki();
  const caPath = join(dir, `${name}.pem`);
  const keyPath = join(dir, `${name}.key.pem`);
  if (existsSync(caPath) && existsSync(keyPath)) {
    const pem = readFileSync(caPath, "utf8");
    const privateKeyPem = readFileSync(keyPath, "utf8");
    const certificate = new x509.X509Certificate(pem);
    const spki = Buffer.from(certificate.publicKey.rawData);
    const keyObject = createPublicKey({ key: spki, format: "der", type: "spki" });
    const alg = keyObject.asymmetricKeyType === "ec"
      ? { name: "ECDSA", namedCurve: keyObject.asymmetricKeyDetails?.namedCurve === "secp384r1" ? "P-384" : "P-256" }
      : { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
    const pkcs8 = Buffer.from(privateKeyPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
    const privateKey = await webcrypto.subtle.importKey("pkcs8", pkcs8, alg, true, ["sign"]);
    const publicKey = await webcrypto.subtle.importKey("spki", spki, alg, true, ["verify"]);
    return { certificate, der: Buffer.from(certificate.rawData), pem, keys: { privateKey, publicKey } as CryptoKeyPair, privateKeyPem };
  }
  const ca = await pki.createCa({ name: parent ? "CN=ra-agent demo intermediate CA, O=ra-agent" : "CN=ra-agent demo CA, O=ra-agent", algorithm, parent });
  writeFileSync(caPath, ca.pem, { mode: 0o644 });
  writePrivate(keyPath, ca.privateKeyPem);
  return ca;
}

/** softhsm/softhsm2.conf.template, found from the source or the compiled file. */
function templatePath(): string {
  let d = __dirname;
  for (;;) {
    for (const candidate of [join(d, "softhsm2.conf.template"), join(d, "softhsm", "softhsm2.conf.template")]) if (existsSync(candidate)) return candidate;
    const parent = resolve(d, "..");
    if (parent === d) throw new Error("softhsm/softhsm2.conf.template not found");
    d = parent;
  }
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, "_");
}

function uriPart(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
}

function idUri(idHex: string): string {
  return (idHex.match(/../g) ?? []).map((b) => "%" + b.toUpperCase()).join("");
}

/**
 * Provisions (or re-uses) SoftHSM tokens in `opts.dir`.
 * @throws Error when SoftHSM is not installed or the directory was provisioned with another token list
 */
export async function provisionSoftHsm(opts: ProvisionOptions): Promise<ProvisionResult> {
  const dir = resolve(opts.dir);
  const specs = opts.tokens ?? DEFAULT_TOKENS;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tokenDir = join(dir, "tokens");
  mkdirSync(tokenDir, { recursive: true, mode: 0o700 });
  chmodSync(tokenDir, 0o700);
  const softhsmConf = join(dir, "softhsm2.conf");
  const template = readFileSync(templatePath(), "utf8");
  writePrivate(softhsmConf, template.replace(/@TOKENDIR@/g, tokenDir).replace(/@CONF_PATH@/g, softhsmConf));

  const statePath = join(dir, "provision.json");
  const tokensText = JSON.stringify(specs.map((t) => ({ ...t, pin: undefined, soPin: undefined })));
  const specText = JSON.stringify({ tokens: JSON.parse(tokensText), intermediateCa: opts.intermediateCa ?? false });
  let state: StateFile | undefined = existsSync(statePath) ? (JSON.parse(readFileSync(statePath, "utf8")) as StateFile) : undefined;
  // Directories provisioned before intermediate CAs existed recorded the token list alone.
  if (state && state.spec === tokensText && !opts.intermediateCa) state.spec = specText;
  if (state && state.spec !== specText) {
    throw new Error(`${dir} was provisioned with a different token list; use a fresh directory`);
  }
  state ??= { version: 1, spec: specText, tokens: specs.map((t) => ({ serial: "", pin: t.pin ?? randomPin(8), soPin: t.soPin ?? randomPin(8), certs: {} })) };

  const root = await loadOrCreateCa(dir, "ca", opts.caAlgorithm ?? "EC-P256");
  const intermediate = opts.intermediateCa ? await loadOrCreateCa(dir, "intermediate", opts.caAlgorithm ?? "EC-P256", root) : undefined;
  const ca = intermediate ?? root;
  const { x509, pki } = await loadPki();

  const workerTokens: WorkerToken[] = specs.map((t, index) => ({
    index,
    label: t.label,
    pin: state!.tokens[index].pin,
    soPin: state!.tokens[index].soPin,
    serial: state!.tokens[index].serial || undefined,
    keys: (t.keys ?? []).map((k, i) => ({
      label: k.label,
      idHex: (k.idHex ?? (i + 1).toString(16).padStart(2, "0")).toLowerCase(),
      keyType: k.keyType,
      alwaysAuthenticate: k.alwaysAuthenticate ?? false,
      noLogin: k.noLogin ?? false,
      publicKeyObject: k.publicKeyObject ?? true,
      knownSpkiB64: state!.tokens[index].spki?.[(k.idHex ?? (i + 1).toString(16).padStart(2, "0")).toLowerCase()],
    })),
    certs: [],
  }));

  // Phase 1: tokens and key pairs, generated inside the tokens.
  const keys = await runWorker(softhsmConf, { phase: "keys", tokens: workerTokens });
  for (const t of keys.tokens) {
    state.tokens[t.index].serial = t.serial;
    state.tokens[t.index].spki = Object.fromEntries(t.keys.map((k) => [k.idHex, k.spkiB64]));
  }

  // Certificates from the demo CA for keys that have none yet.
  const result: ProvisionResult = { dir, softhsmConf, tokens: [], caPem: root.pem, caKeyPem: root.privateKeyPem, caPath: join(dir, "ca.pem") };
  if (intermediate) {
    result.intermediatePem = intermediate.pem;
    result.intermediatePath = join(dir, "intermediate.pem");
  }
  for (const [index, spec] of specs.entries()) {
    const st = state.tokens[index];
    const wt = workerTokens[index];
    const tokenUri = `pkcs11:token=${uriPart(spec.label)};serial=${uriPart(st.serial)}`;
    const pinFile = join(dir, `token-${index}-${safeName(spec.label)}.pin`);
    writePrivate(pinFile, st.pin + "\n");
    const token: ProvisionedToken = { label: spec.label, serial: st.serial, pin: st.pin, soPin: st.soPin, pinFile, uri: tokenUri, keys: [] };
    for (const [i, k] of (spec.keys ?? []).entries()) {
      const wk = wt.keys[i];
      const spki = Buffer.from(keys.tokens.find((x) => x.index === index)!.keys.find((x) => x.idHex === wk.idHex)!.spkiB64, "base64");
      const labels = [k.label, ...(k.extraCertificateLabel ? [k.extraCertificateLabel] : [])];
      const pems: string[] = [];
      for (const [n, label] of labels.entries()) {
        const stateKey = `${wk.idHex}/${label}`;
        let pem = st.certs[stateKey];
        if (!pem) {
          const now = Date.now();
          const cert = await pki.issueCertificate(ca, spki, {
            subject: k.subject ?? `CN=${spec.label}/${label}, O=ra-agent test`,
            notBefore: k.expired ? new Date(now - 30 * 86400_000) : new Date(now - 3600_000),
            notAfter: k.expired ? new Date(now - 86400_000) : new Date(now + 365 * 86400_000),
          });
          pem = cert.toString("pem") + "\n";
          st.certs[stateKey] = pem;
        }
        pems.push(pem);
        const cert = new x509.X509Certificate(pem);
        if (k.certificate !== "none") {
          wt.certs.push({
            idHex: wk.idHex,
            label,
            derB64: Buffer.from(cert.rawData).toString("base64"),
            subjectB64: Buffer.from(cert.subjectName.toArrayBuffer()).toString("base64"),
            issuerB64: Buffer.from(cert.issuerName.toArrayBuffer()).toString("base64"),
            serialB64: derInteger(cert.serialNumber).toString("base64"),
            private: k.certificate === "private",
          });
        }
        if (n === 0) writeFileSync(join(dir, `token-${index}-${safeName(k.label)}.pem`), pem);
      }
      const keyUri = `${tokenUri};object=${uriPart(k.label)};id=${idUri(wk.idHex)};type=private`;
      token.keys.push({
        label: k.label,
        idHex: wk.idHex,
        keyType: k.keyType,
        alwaysAuthenticate: wk.alwaysAuthenticate,
        keyUri,
        certificateUri: k.certificate === "none" ? undefined : `${tokenUri};object=${uriPart(k.label)};id=${idUri(wk.idHex)};type=cert`,
        certificatePem: pems[0],
        certificatePath: join(dir, `token-${index}-${safeName(k.label)}.pem`),
        extraCertificates: labels.slice(1).map((label, n) => ({ label, uri: `${tokenUri};object=${uriPart(label)};id=${idUri(wk.idHex)};type=cert`, pem: pems[n + 1] })),
      });
    }
    if (spec.storeCaCertificates) {
      for (const [n, authority] of [intermediate, root].filter((a): a is CertificateAuthority => a !== undefined).entries()) {
        const cert = new x509.X509Certificate(authority.pem);
        wt.certs.push({
          idHex: `ca0${n + 1}`,
          label: n === 0 && intermediate ? "ra-agent demo intermediate CA" : "ra-agent demo CA",
          derB64: Buffer.from(cert.rawData).toString("base64"),
          subjectB64: Buffer.from(cert.subjectName.toArrayBuffer()).toString("base64"),
          issuerB64: Buffer.from(cert.issuerName.toArrayBuffer()).toString("base64"),
          serialB64: derInteger(cert.serialNumber).toString("base64"),
          private: false,
        });
      }
    }
    result.tokens.push(token);
  }

  // Phase 2: certificate objects next to their keys.
  await runWorker(softhsmConf, { phase: "certs", tokens: workerTokens.map((t, i) => ({ ...t, serial: state!.tokens[i].serial })) });
  writePrivate(statePath, JSON.stringify(state, null, 2));
  return result;
}

/** The child process: does the token work of one phase and prints JSON. */
async function workerMain(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const job = JSON.parse(Buffer.concat(chunks).toString()) as WorkerJob;
  // Loaded here, not at the top: the parent process must not load pkcs11js.
  const { loadModule, resolveModuleName } = await import("../src/signer/pkcs11/module");
  const { listTokens } = await import("../src/signer/pkcs11/token");
  const p = await import("../src/signer/pkcs11/provisioning");
  const modulePath = resolveModuleName("softhsm2");
  if (!modulePath) throw new Error("SoftHSM is not installed (apt-get install softhsm2)");
  const module = loadModule(modulePath);
  const result: WorkerResult = { tokens: [] };
  for (const t of job.tokens) {
    let slot = t.serial ? listTokens(module).find((s) => s.token.serial === t.serial && s.token.label === t.label) : undefined;
    if (!slot) {
      if (job.phase === "certs") throw new Error(`token ${t.label} (serial ${t.serial}) disappeared`);
      slot = p.initializeToken(module, t.label, t.soPin, t.pin);
    }
    const session = p.openAdminSession(module, slot, t.pin);
    try {
      const keys: WorkerResult["tokens"][number]["keys"] = [];
      if (job.phase === "keys") {
        for (const k of t.keys) {
          const id = Buffer.from(k.idHex, "hex");
          let existing = p.hasPrivateKey(module, session, id) ? p.existingPublicKey(module, session, id) : undefined;
          if (!existing && k.knownSpkiB64 && p.hasPrivateKey(module, session, id)) existing = createPublicKey({ key: Buffer.from(k.knownSpkiB64, "base64"), format: "der", type: "spki" });
          const publicKey = existing ?? p.generateKeyPair(module, slot, session, { keyType: k.keyType, id, label: k.label, alwaysAuthenticate: k.alwaysAuthenticate, noLogin: k.noLogin, publicKeyObject: k.publicKeyObject });
          keys.push({ idHex: k.idHex, spkiB64: publicKey.export({ type: "spki", format: "der" }).toString("base64") });
        }
      } else {
        for (const c of t.certs) {
          p.storeCertificate(module, session, {
            der: Buffer.from(c.derB64, "base64"), id: Buffer.from(c.idHex, "hex"), label: c.label, private: c.private,
            subject: Buffer.from(c.subjectB64, "base64"), issuer: Buffer.from(c.issuerB64, "base64"), serialNumber: Buffer.from(c.serialB64, "base64"),
          });
        }
      }
      result.tokens.push({ index: t.index, serial: slot.token.serial, keys });
    } finally {
      p.closeAdminSession(module, session);
    }
  }
  module.close();
  process.stdout.write(JSON.stringify(result));
}

async function cliMain(argv: string[]): Promise<void> {
  const dirIdx = argv.indexOf("--dir");
  if (dirIdx < 0 || !argv[dirIdx + 1]) {
    process.stderr.write("usage: provision.js --dir DIR [--fixtures]\n");
    process.exitCode = 2;
    return;
  }
  const result = await provisionSoftHsm({ dir: argv[dirIdx + 1], tokens: argv.includes("--fixtures") ? FIXTURE_TOKENS : DEFAULT_TOKENS });
  process.stdout.write(JSON.stringify(result, null, 2) + "\n");
}

if (require.main === module) {
  const run = process.argv.includes("--worker") ? workerMain() : cliMain(process.argv.slice(2));
  run.catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e as Error & { describe?: () => string }).describe?.() ?? e.message : String(e)}\n`);
    process.exitCode = 1;
  });
}
