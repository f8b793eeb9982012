/**
 * Test helpers for the emulator: a throw-away PKI written to a temp dir, the
 * independent Python signer, and a raw HTTP client that sends headers exactly
 * as given.
 */
import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createCa, createCrl, generateKeyPair, issueCertificate, privateKeyToPem, type CertificateAuthority, type LeafOptions, type PkiKeyAlgorithm } from "../../scripts/lib/pki";

/** The repository root, from `dist-NAME/test/emulator/` (compiled tests). */
export const repoRoot = resolve(__dirname, "..", "..", "..");
/** Committed fixtures (golden vectors). */
export const fixturesDir = join(repoRoot, "test", "emulator", "fixtures");
/** The signer that shares no code with ra-agent. */
export const independentSigner = join(repoRoot, "test", "support", "independent-signer.py");

/** True when a command can be run. */
export function haveCommand(cmd: string, args: string[] = ["--version"]): boolean {
  return spawnSync(cmd, args, { stdio: "ignore" }).status === 0;
}

/**
 * Whether a dependency-needing test may run: on CI a missing dependency is a
 * failure, elsewhere the test is skipped with the reason.
 */
export function requireCommand(t: { skip(msg: string): void }, cmd: string, args?: string[]): boolean {
  if (haveCommand(cmd, args)) return true;
  if (process.env.CI === "true") throw new Error(`${cmd} is required on CI but is not installed`);
  t.skip(`${cmd} is not installed`);
  return false;
}

/** A temp dir removed by `cleanup()`. */
export function tempDir(prefix = "ra-emu-"): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A leaf key and certificate written to files. */
export interface LeafFiles {
  certificate: string;
  privateKey: string;
  pem: string;
  serialHex: string;
}

/** Issues a leaf for a fresh key and writes both as PEM files in `dir`. */
export async function writeLeaf(dir: string, name: string, ca: CertificateAuthority, alg: PkiKeyAlgorithm, opts: LeafOptions = {}): Promise<LeafFiles> {
  const keys = await generateKeyPair(alg);
  const cert = await issueCertificate(ca, keys.publicKey, { subject: `CN=${name}`, ...opts });
  const pem = cert.toString("pem") + "\n";
  const certificate = join(dir, `${name}.pem`);
  const privateKey = join(dir, `${name}.key`);
  writeFileSync(certificate, pem);
  writeFileSync(privateKey, await privateKeyToPem(keys.privateKey), { mode: 0o600 });
  return { certificate, privateKey, pem, serialHex: cert.serialNumber.toLowerCase() };
}

/** Writes a CA certificate as a PEM file and returns its path. */
export function writeCa(dir: string, name: string, ca: CertificateAuthority): string {
  const file = join(dir, `${name}.pem`);
  writeFileSync(file, ca.pem);
  return file;
}

export { createCa, createCrl };

/** One request spec for the independent signer (see test/support/independent-signer.py). */
export interface SignerSpec {
  endpoint: string;
  certificate: string;
  privateKey: string;
  chain?: string[];
  query?: Record<string, string>;
  bodyParams?: Record<string, unknown>;
  rawBody?: string;
  region?: string;
  service?: string;
  algorithm?: string;
  serial?: string;
  amzDate?: string;
  scopeDate?: string;
  omitSignedHeaders?: string[];
  extraHeaders?: Record<string, string>;
  send?: boolean;
}

/** What the independent signer produced (and, with `send`, what the server answered). */
export interface SignedRequest {
  method: string;
  target: string;
  headers: Array<[string, string]>;
  body: string;
  canonicalRequest: string;
  stringToSign: string;
  response?: { status: number; headers: Record<string, string>; body: string };
}

/** Runs the independent signer once for a batch of specs. */
export function independentlySign(specs: SignerSpec[]): Promise<SignedRequest[]> {
  return new Promise((resolvePromise, reject) => {
    const child = execFile("python3", [independentSigner], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`independent signer failed: ${err.message}\n${stderr}`));
      resolvePromise(JSON.parse(stdout) as SignedRequest[]);
    });
    child.stdin!.end(JSON.stringify({ requests: specs }));
  });
}

/** A raw HTTP answer. */
export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** Sends a request with exactly these header lines (duplicates allowed) and body. */
export function sendRaw(endpoint: string, req: { method?: string; target: string; headers: Array<[string, string]>; body?: string | Buffer }): Promise<RawResponse> {
  const url = new URL(endpoint);
  return new Promise((resolvePromise, reject) => {
    const body = Buffer.from(req.body ?? "");
    // Headers as a flat list keep duplicates and order; node then adds neither Host nor Content-Length.
    const flat: string[] = [];
    const has = (name: string) => req.headers.some(([k]) => k.toLowerCase() === name);
    if (!has("host")) flat.push("Host", url.host);
    if (!has("content-length") && !has("transfer-encoding")) flat.push("Content-Length", String(body.length));
    for (const [k, v] of req.headers) flat.push(k, v);
    const r = httpRequest(
      { host: url.hostname, port: url.port, method: req.method ?? "POST", path: req.target, headers: flat as unknown as Record<string, string>, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolvePromise({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    r.on("error", reject);
    r.end(body);
  });
}

/** Sends a request the independent signer produced. */
export function sendSigned(endpoint: string, signed: SignedRequest): Promise<RawResponse> {
  return sendRaw(endpoint, { method: signed.method, target: signed.target, headers: signed.headers, body: signed.body });
}

/** Replaces (or removes, with `undefined`) a header of a signed request, after signing. */
export function withHeader(signed: SignedRequest, name: string, value: string | undefined): SignedRequest {
  const headers = signed.headers.filter(([k]) => k.toLowerCase() !== name.toLowerCase());
  if (value !== undefined) headers.push([name, value]);
  return { ...signed, headers };
}

/** The header value of a signed request. */
export function headerOf(signed: SignedRequest, name: string): string | undefined {
  return signed.headers.find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1];
}

/** Formats a date as `YYYYMMDDTHHMMSSZ`, written here independently of the emulator's helper. */
export function amzDate(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getUTCFullYear(), 4)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}T${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
}
