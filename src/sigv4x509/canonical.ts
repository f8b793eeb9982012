/**
 * SigV4 canonicalization as a CLIENT builds it: small pure functions, no I/O,
 * each checked against golden vectors (AWS's SigV4 test suite and hand-derived
 * SigV4-X509 requests) in `test/sigv4x509/`.
 *
 * SigV4-X509 (IAM Roles Anywhere) uses the canonical request of plain SigV4
 * unchanged; only the string to sign's algorithm, the credential (a certificate
 * serial number) and the signature (RSA/ECDSA instead of HMAC) differ.
 */
import { createHash } from "node:crypto";

/** Query parameters, decoded (not yet percent-encoded). An array keeps repeated keys. */
export type QueryParams = Readonly<Record<string, string>> | ReadonlyArray<readonly [string, string]>;

/** An HTTP request as the signer sees it. */
export interface HttpRequest {
  /** HTTP method, e.g. `POST`. */
  method: string;
  /** `host[:port]` as it goes into the Host header (the port only when not the scheme's default). */
  host: string;
  /** The path as sent on the wire (already percent-encoded where needed), starting with `/`. */
  path: string;
  /** Decoded query parameters. */
  query?: QueryParams;
  /** Header names in any case; one value per name. */
  headers?: Readonly<Record<string, string>>;
  /** Request body; absent means empty. */
  body?: string | Uint8Array;
}

/**
 * Headers never signed, as the reference helper and the SigV4 spec leave them out:
 * proxies and tracing layers may rewrite them.
 */
export const UNSIGNED_HEADERS: ReadonlySet<string> = new Set(["authorization", "user-agent", "x-amzn-trace-id"]);

/** Lower-case hex SHA-256 of a string (UTF-8) or bytes. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** SHA-256 of the empty payload. */
export const EMPTY_PAYLOAD_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** Characters RFC 3986 calls unreserved; SigV4 leaves exactly these unencoded. */
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * Percent-encodes `value` the SigV4 way: UTF-8 bytes, every character except the
 * RFC 3986 unreserved set, upper-case hex. `/` is kept when `keepSlash` is true (paths).
 */
export function uriEncode(value: string, keepSlash = false): string {
  let out = "";
  for (const ch of value) {
    if (UNRESERVED.test(ch) || (keepSlash && ch === "/")) {
      out += ch;
    } else {
      for (const byte of Buffer.from(ch, "utf8")) out += "%" + byte.toString(16).toUpperCase().padStart(2, "0");
    }
  }
  return out;
}

/**
 * Removes `.` and `..` segments and empty segments (RFC 3986 section 5.2.4, as
 * every AWS SDK does for services other than S3); keeps a leading and trailing slash.
 */
export function normalizePath(path: string): string {
  const segments: string[] = [];
  for (const segment of path.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") segments.pop();
    else segments.push(segment);
  }
  const trailing = segments.length > 0 && path.endsWith("/") ? "/" : "";
  return "/" + segments.join("/") + trailing;
}

/**
 * The CanonicalURI: the normalized wire path, URI-encoded once more (SigV4's
 * "encode twice" for every service except S3: `%` in the wire path becomes `%25`).
 */
export function canonicalUri(path: string): string {
  return uriEncode(normalizePath(path === "" ? "/" : path), true);
}

/** The query as `[key, value]` pairs, whatever shape it was given in. */
export function queryEntries(query: QueryParams | undefined): Array<[string, string]> {
  if (!query) return [];
  if (Array.isArray(query)) return (query as ReadonlyArray<readonly [string, string]>).map(([k, v]) => [k, v]);
  return Object.entries(query as Record<string, string>);
}

/**
 * The CanonicalQueryString: each key and value URI-encoded, sorted by encoded key
 * then encoded value (byte order), joined with `&`. Also the query string sent on the wire.
 */
export function canonicalQueryString(query: QueryParams | undefined): string {
  return queryEntries(query)
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort(([ka, va], [kb, vb]) => (ka < kb ? -1 : ka > kb ? 1 : va < vb ? -1 : va > vb ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
}

/** A header value as SigV4 signs it: trimmed, runs of whitespace collapsed to one space. */
export function canonicalHeaderValue(value: string): string {
  return value.trim().replace(/\s+/g, " ");
}

/**
 * The signed headers as sorted `[lower-case name, canonical value]` pairs. Names
 * differing only in case are merged, their values joined with `,` in the given order.
 */
export function headersToSign(headers: Readonly<Record<string, string>> | undefined): Array<[string, string]> {
  const merged = new Map<string, string[]>();
  for (const [name, value] of Object.entries(headers ?? {})) {
    const lower = name.toLowerCase();
    if (UNSIGNED_HEADERS.has(lower)) continue;
    const values = merged.get(lower) ?? [];
    values.push(canonicalHeaderValue(value));
    merged.set(lower, values);
  }
  return [...merged.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, values]) => [name, values.join(",")]);
}

/** The CanonicalHeaders block: one `name:value\n` line per signed header. */
export function canonicalHeaders(headers: Readonly<Record<string, string>> | undefined): string {
  return headersToSign(headers).map(([name, value]) => `${name}:${value}\n`).join("");
}

/** The SignedHeaders list: lower-case names joined with `;`. */
export function signedHeaders(headers: Readonly<Record<string, string>> | undefined): string {
  return headersToSign(headers).map(([name]) => name).join(";");
}

/** Hex SHA-256 of the body (the HashedPayload line). */
export function hashedPayload(body: string | Uint8Array | undefined): string {
  return body === undefined || body.length === 0 ? EMPTY_PAYLOAD_SHA256 : sha256Hex(body);
}

/**
 * The canonical request:
 * `Method \n CanonicalURI \n CanonicalQueryString \n CanonicalHeaders \n SignedHeaders \n HashedPayload`.
 * Only the headers in `req.headers` are signed: add Host, X-Amz-Date etc. first
 * (as {@link signRequest} does).
 */
export function canonicalRequest(req: HttpRequest): string {
  return [
    req.method.toUpperCase(),
    canonicalUri(req.path),
    canonicalQueryString(req.query),
    canonicalHeaders(req.headers),
    signedHeaders(req.headers),
    hashedPayload(req.body),
  ].join("\n");
}
