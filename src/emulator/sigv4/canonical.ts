/**
 * SigV4 canonicalization as a SERVER sees it: everything is rebuilt from the
 * request exactly as it arrived on the wire (raw path, raw query, raw header
 * lines, body bytes), never from a client-side model of the request.
 *
 * This is the emulator's own code on purpose: it must not share code with the
 * client-side signer in `src/sigv4x509/`, so that a canonicalization bug on one
 * side cannot hide the same bug on the other. Pure functions, no I/O.
 */
import { createHash } from "node:crypto";

/** A request as received: what the verifiers need, nothing more. */
export interface ReceivedRequest {
  /** HTTP method as sent, e.g. `POST`. */
  method: string;
  /** The request target as sent: raw (still percent-encoded) path plus optional `?query`. */
  target: string;
  /** Header lines as received, in order: `[name, value]`, names in any case, duplicates kept. */
  headers: ReadonlyArray<readonly [string, string]>;
  /** The body bytes. */
  body: Buffer;
}

/** Thrown when the request cannot even be canonicalized (bad percent-encoding, a bad path). */
export class CanonicalizationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CanonicalizationError";
  }
}

/** Lower-case hex SHA-256. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/** RFC 3986 percent-encoding as SigV4 defines it: everything but unreserved characters, upper-case hex, UTF-8. */
export function uriEncode(value: string): string {
  let out = "";
  for (const ch of value) {
    if (UNRESERVED.test(ch)) {
      out += ch;
    } else {
      for (const byte of Buffer.from(ch, "utf8")) out += "%" + byte.toString(16).toUpperCase().padStart(2, "0");
    }
  }
  return out;
}

function percentDecode(value: string, what: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new CanonicalizationError(`${what} has invalid percent-encoding: ${JSON.stringify(value.slice(0, 80))}`);
  }
}

/** Splits a request target into its raw path and raw query (without `?`). */
export function splitTarget(target: string): { rawPath: string; rawQuery: string } {
  const q = target.indexOf("?");
  return q < 0 ? { rawPath: target, rawQuery: "" } : { rawPath: target.slice(0, q), rawQuery: target.slice(q + 1) };
}

/**
 * The canonical URI of a non-S3 service: the path normalized (RFC 3986 dot
 * segments removed, repeated slashes kept), then each segment URI-encoded twice.
 * Clients encode the path once for the wire and once more for the canonical
 * request, so the server decodes the wire form once and encodes it twice.
 * @throws CanonicalizationError when the path is not absolute or badly encoded.
 */
export function canonicalUri(rawPath: string): string {
  if (rawPath === "" || rawPath === "*") return "/";
  if (!rawPath.startsWith("/")) throw new CanonicalizationError(`request path must start with "/": ${JSON.stringify(rawPath.slice(0, 80))}`);
  const input = rawPath.split("/").slice(1);
  const out: string[] = [];
  input.forEach((segment, i) => {
    const decoded = percentDecode(segment, "request path");
    const last = i === input.length - 1;
    if (decoded === ".") {
      if (last) out.push("");
    } else if (decoded === "..") {
      out.pop();
      if (last) out.push("");
    } else {
      out.push(uriEncode(uriEncode(decoded)));
    }
  });
  return "/" + out.join("/");
}

/**
 * Decodes a raw query string into `[name, value]` pairs, in order. `+` is kept
 * as a literal plus (SigV4 clients encode a space as `%20`).
 * @throws CanonicalizationError on invalid percent-encoding.
 */
export function parseRawQuery(rawQuery: string): Array<[string, string]> {
  if (rawQuery === "") return [];
  return rawQuery
    .split("&")
    .filter((part) => part !== "")
    .map((part) => {
      const eq = part.indexOf("=");
      const name = eq < 0 ? part : part.slice(0, eq);
      const value = eq < 0 ? "" : part.slice(eq + 1);
      return [percentDecode(name, "query parameter name"), percentDecode(value, "query parameter value")];
    });
}

/**
 * The canonical query string: each name and value URI-encoded, sorted by
 * encoded name then encoded value, joined with `&`. `exclude` drops a
 * parameter (the signature itself, for presigned URLs).
 */
export function canonicalQuery(pairs: ReadonlyArray<readonly [string, string]>, exclude?: string): string {
  return pairs
    .filter(([name]) => name !== exclude)
    .map(([name, value]) => [uriEncode(name), uriEncode(value)] as const)
    .sort(([an, av], [bn, bv]) => (an < bn ? -1 : an > bn ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join("&");
}

/** Header values grouped by lower-case name; several lines of one header keep their order. */
export function groupHeaders(headers: ReadonlyArray<readonly [string, string]>): Map<string, string[]> {
  const grouped = new Map<string, string[]>();
  for (const [name, value] of headers) {
    const key = name.toLowerCase();
    const list = grouped.get(key);
    if (list) list.push(value);
    else grouped.set(key, [value]);
  }
  return grouped;
}

/** A header value as SigV4 canonicalizes it: trimmed, runs of spaces collapsed to one. */
export function canonicalHeaderValue(values: readonly string[]): string {
  return values.map((v) => v.trim().replace(/ +/g, " ")).join(",");
}

/**
 * The canonical headers block (`name:value\n` per signed header) for the
 * given signed header names, which must be present in the request.
 * @throws CanonicalizationError when a signed header is missing.
 */
export function canonicalHeaders(grouped: Map<string, string[]>, signedHeaders: readonly string[]): string {
  return signedHeaders
    .map((name) => {
      const values = grouped.get(name);
      if (!values) throw new CanonicalizationError(`signed header "${name}" is not in the request`);
      return `${name}:${canonicalHeaderValue(values)}\n`;
    })
    .join("");
}

/**
 * The full canonical request of a received request.
 * @param signedHeaders lower-case, sorted names from the Authorization header.
 * @param payloadHash hex SHA-256 of the body (or the value the protocol mandates).
 * @throws CanonicalizationError when the request cannot be canonicalized.
 */
export function canonicalRequest(request: ReceivedRequest, signedHeaders: readonly string[], payloadHash: string, excludeQuery?: string): string {
  const { rawPath, rawQuery } = splitTarget(request.target);
  return [
    request.method,
    canonicalUri(rawPath),
    canonicalQuery(parseRawQuery(rawQuery), excludeQuery),
    canonicalHeaders(groupHeaders(request.headers), signedHeaders),
    signedHeaders.join(";"),
    payloadHash,
  ].join("\n");
}

/** The SigV4 string to sign. */
export function stringToSign(algorithm: string, amzDate: string, scope: string, canonicalRequestText: string): string {
  return [algorithm, amzDate, scope, sha256Hex(canonicalRequestText)].join("\n");
}
