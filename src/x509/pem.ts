import { usageError } from "../errors";

/** One PEM block: its label (e.g. `CERTIFICATE`) and DER bytes. */
export interface PemBlock {
  label: string;
  der: Buffer;
  /** Encapsulated headers such as `Proc-Type` / `DEK-Info` (legacy encrypted PEM). */
  headers: Record<string, string>;
}

const PEM_RE = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

/** Parses every PEM block in `text`, in order. */
export function parsePem(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(PEM_RE)) {
    const headers: Record<string, string> = {};
    const bodyLines: string[] = [];
    for (const line of m[2].split(/\r?\n/)) {
      const h = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
      if (h) headers[h[1]] = h[2];
      else bodyLines.push(line.trim());
    }
    blocks.push({ label: m[1], der: Buffer.from(bodyLines.join(""), "base64"), headers });
  }
  return blocks;
}

/** Encodes DER as PEM with the given label. */
export function toPem(der: Uint8Array, label = "CERTIFICATE"): string {
  const b64 = Buffer.from(der).toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/**
 * Reads certificates from PEM text or a single DER certificate.
 * @throws RaError `INVALID_CERTIFICATE_FILE` when no certificate is found.
 */
export function readCertificates(data: Buffer, what: string): Buffer[] {
  const text = data.toString("latin1");
  if (text.includes("-----BEGIN")) {
    const certs = parsePem(text).filter((b) => b.label === "CERTIFICATE" || b.label === "X509 CERTIFICATE").map((b) => b.der);
    if (certs.length === 0) {
      throw usageError("INVALID_CERTIFICATE_FILE", `${what} holds no PEM CERTIFICATE block`, "give a PEM or DER X.509 certificate file");
    }
    return certs;
  }
  if (data.length > 0 && data[0] === 0x30) return [data];
  throw usageError("INVALID_CERTIFICATE_FILE", `${what} is neither PEM nor DER`, "give a PEM or DER X.509 certificate file");
}
