/**
 * The one `pkcs11:` URI parser and formatter of ra-agent (RFC 7512). Pure code:
 * no pkcs11js here, so that the CLI and the agent can validate URIs without
 * loading a native module.
 *
 * A PKCS#11 URI is a search term rather than an identifier: path attributes
 * constrain the library, slot, token and object; query attributes say how to get
 * the PIN and which module to load.
 */
import { usageError } from "../errors";

/** Object classes a URI's `type` attribute can name (RFC 7512 §2.3). */
export type Pkcs11ObjectType = "cert" | "private" | "public" | "secret-key" | "data";

const OBJECT_TYPES: readonly Pkcs11ObjectType[] = ["cert", "private", "public", "secret-key", "data"];

/** An attribute this parser does not know (a vendor attribute), kept in order. */
export interface Pkcs11VendorAttribute {
  name: string;
  value: string;
}

/**
 * A parsed `pkcs11:` URI. Only attributes present in the URI are set, so that two
 * parses of equivalent URIs compare equal with `assert.deepStrictEqual`.
 */
export interface Pkcs11Uri {
  /** Token label (`CK_TOKEN_INFO.label`, without padding). */
  token?: string;
  /** Token manufacturer (`CK_TOKEN_INFO.manufacturerID`). */
  manufacturer?: string;
  /** Token model. */
  model?: string;
  /** Token serial number. */
  serial?: string;
  slotDescription?: string;
  slotManufacturer?: string;
  /** Slot ID, decimal in the URI. Slot IDs may change between runs (SoftHSM renumbers them): prefer `serial`. */
  slotId?: bigint;
  libraryManufacturer?: string;
  libraryDescription?: string;
  /** `M` or `M.N`, as written (`1.23` is major 1, minor 23). */
  libraryVersion?: string;
  /** Object label (`CKA_LABEL`). */
  object?: string;
  /** Object ID (`CKA_ID`), raw bytes. */
  id?: Buffer;
  type?: Pkcs11ObjectType;
  /** PIN in clear text (discouraged by RFC 7512; kept for compatibility with aws_signing_helper). */
  pinValue?: string;
  /** Where to read the PIN: `file:/path`, `/path`, or `|command`. */
  pinSource?: string;
  moduleName?: string;
  /** Absolute path of the module file, or of a directory searched for `module-name`. */
  modulePath?: string;
  /** Unknown path attributes (vendor-specific), in order. */
  vendorPath?: Pkcs11VendorAttribute[];
  /** Unknown query attributes (vendor-specific), in order. */
  vendorQuery?: Pkcs11VendorAttribute[];
}

type StringPathKey =
  | "token" | "manufacturer" | "model" | "serial" | "slotDescription" | "slotManufacturer"
  | "libraryManufacturer" | "libraryDescription" | "object";
type StringQueryKey = "pinValue" | "pinSource" | "moduleName" | "modulePath";

/** Path attributes in the order {@link formatPkcs11Uri} writes them. */
const PATH_ATTRIBUTES: ReadonlyArray<[string, keyof Pkcs11Uri]> = [
  ["token", "token"],
  ["manufacturer", "manufacturer"],
  ["model", "model"],
  ["serial", "serial"],
  ["slot-description", "slotDescription"],
  ["slot-manufacturer", "slotManufacturer"],
  ["slot-id", "slotId"],
  ["library-manufacturer", "libraryManufacturer"],
  ["library-description", "libraryDescription"],
  ["library-version", "libraryVersion"],
  ["object", "object"],
  ["id", "id"],
  ["type", "type"],
];

/** Query attributes in the order {@link formatPkcs11Uri} writes them. */
const QUERY_ATTRIBUTES: ReadonlyArray<[string, StringQueryKey]> = [
  ["module-name", "moduleName"],
  ["module-path", "modulePath"],
  ["pin-source", "pinSource"],
  ["pin-value", "pinValue"],
];

const PATH_KEYS = new Map(PATH_ATTRIBUTES);
const QUERY_KEYS = new Map(QUERY_ATTRIBUTES);

/** Attribute names whose values are never echoed in error messages. */
const SECRET_ATTRIBUTES = new Set(["pin-value"]);

const URI_HINT = "write it as pkcs11:token=LABEL;object=LABEL[;id=%01][;type=cert|private]?pin-source=file:/path (RFC 7512); percent-encode reserved characters, e.g. space as %20";

function invalid(message: string, hint = URI_HINT): never {
  throw usageError("INVALID_PKCS11_URI", `invalid pkcs11: URI: ${message}`, hint);
}

/** True when `text` starts with the `pkcs11:` scheme (case-insensitive, RFC 3986). */
export function isPkcs11Uri(text: string | undefined): text is string {
  return text !== undefined && /^pkcs11:/i.test(text);
}

function percentDecode(raw: string, attr: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === "%") {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) {
        const shown = SECRET_ATTRIBUTES.has(attr) ? "" : ` ("${raw}")`;
        invalid(`attribute ${attr} has a bad percent-encoding${shown}: "%" must be followed by two hex digits`);
      }
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      // Lenient: characters outside RFC 7512's set (a space, a "/" in the path, non-ASCII)
      // are taken literally, as UTF-8; the formatter encodes them.
      for (const b of Buffer.from(c, "utf8")) bytes.push(b);
    }
  }
  return Buffer.from(bytes);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeText(raw: string, attr: string): string {
  const bytes = percentDecode(raw, attr);
  try {
    return utf8.decode(bytes);
  } catch {
    return invalid(`attribute ${attr} is not valid UTF-8 after percent-decoding`);
  }
}

function isAbsolutePath(p: string): boolean {
  return p.startsWith("/") || /^[A-Za-z]:[\\/]/.test(p) || p.startsWith("\\\\");
}

function splitAttribute(part: string, where: "path" | "query", index: number): [string, string] {
  const eq = part.indexOf("=");
  // Query text is not echoed: a PIN typed in the wrong place must not end up in an error message.
  const shown = (text: string): string => (where === "path" ? `"${text.slice(0, 40)}"` : `#${index + 1}`);
  if (eq <= 0) {
    invalid(`${where} attribute ${eq === 0 ? `${shown("")} has an empty name` : `${shown(part)} must be written as name=value`}`);
  }
  const name = part.slice(0, eq);
  if (!/^[A-Za-z0-9_-]+$/.test(name)) invalid(`${where} attribute name ${shown(name)} contains characters other than letters, digits, "-" and "_"`);
  return [name, part.slice(eq + 1)];
}

/**
 * Parses a `pkcs11:` URI.
 * @throws RaError `INVALID_PKCS11_URI` (kind `usage`) naming the bad part: a missing
 *   scheme, an attribute without `=`, a duplicate attribute, a bad percent-encoding,
 *   an unknown `type`, a non-numeric `slot-id` or `library-version`, `pin-value`
 *   together with `pin-source`, or a relative `module-path`. The message never
 *   contains the PIN.
 */
export function parsePkcs11Uri(text: string): Pkcs11Uri {
  if (typeof text !== "string" || !isPkcs11Uri(text)) {
    invalid(`it must start with "pkcs11:"`);
  }
  const body = text.slice("pkcs11:".length);
  if (body.includes("#")) invalid(`"#" is not allowed (RFC 7512 URIs have no fragment); write it as %23`);
  const q = body.indexOf("?");
  const pathPart = q < 0 ? body : body.slice(0, q);
  const queryPart = q < 0 ? undefined : body.slice(q + 1);
  const uri: Pkcs11Uri = {};
  const seenPath = new Set<string>();

  if (pathPart.length > 0) {
    for (const [index, part] of pathPart.split(";").entries()) {
      if (part === "") invalid(`empty path attribute (two ";" in a row, or a trailing ";")`);
      const [name, raw] = splitAttribute(part, "path", index);
      if (seenPath.has(name)) invalid(`path attribute ${name} appears more than once`);
      seenPath.add(name);
      const key = PATH_KEYS.get(name);
      if (key === undefined) {
        (uri.vendorPath ??= []).push({ name, value: decodeText(raw, name) });
        continue;
      }
      switch (key) {
        case "id":
          uri.id = percentDecode(raw, name);
          break;
        case "slotId": {
          const v = decodeText(raw, name);
          if (!/^\d+$/.test(v)) invalid(`slot-id must be a decimal number, got "${v}"`);
          uri.slotId = BigInt(v);
          break;
        }
        case "libraryVersion": {
          const v = decodeText(raw, name);
          if (!/^\d+(\.\d+)?$/.test(v)) invalid(`library-version must be M or M.N (digits), got "${v}"`);
          uri.libraryVersion = v;
          break;
        }
        case "type": {
          const v = decodeText(raw, name);
          if (!(OBJECT_TYPES as readonly string[]).includes(v)) invalid(`type must be one of ${OBJECT_TYPES.join(", ")}; got "${v}"`);
          uri.type = v as Pkcs11ObjectType;
          break;
        }
        default:
          uri[key as StringPathKey] = decodeText(raw, name);
      }
    }
  }

  if (queryPart !== undefined && queryPart.length > 0) {
    const seenQuery = new Set<string>();
    for (const [index, part] of queryPart.split("&").entries()) {
      if (part === "") invalid(`empty query attribute (two "&" in a row, or a trailing "&")`);
      const [name, raw] = splitAttribute(part, "query", index);
      const key = QUERY_KEYS.get(name);
      if (key === undefined) {
        // RFC 7512 §2.4 leaves duplicate vendor query attributes to the consumer: keep them all.
        (uri.vendorQuery ??= []).push({ name, value: decodeText(raw, name) });
        continue;
      }
      if (seenQuery.has(name)) invalid(`query attribute ${name} appears more than once`);
      seenQuery.add(name);
      uri[key] = decodeText(raw, name);
    }
  }

  if (uri.pinValue !== undefined && uri.pinSource !== undefined) {
    invalid(`pin-value and pin-source must not both be present (RFC 7512 §2.4)`, "keep pin-source (the PIN stays out of the URI) and remove pin-value");
  }
  if (uri.modulePath !== undefined && !isAbsolutePath(uri.modulePath)) {
    invalid(`module-path must be an absolute path, got "${uri.modulePath}"`, "give the full path of the module, e.g. module-path=/usr/lib/softhsm/libsofthsm2.so");
  }
  return uri;
}

const UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
// RFC 7512 §2.3: pk11-res-avail, plus "&" in the path and "/", "?", "|" in the query.
const PATH_SAFE = new Set(UNRESERVED + ":[]@!$'()*+,=&");
const QUERY_SAFE = new Set(UNRESERVED + ":[]@!$'()*+,=/?|");

function hexByte(b: number): string {
  return "%" + b.toString(16).toUpperCase().padStart(2, "0");
}

/** Percent-encodes every byte (used for `id`, whose bytes are binary). */
export function percentEncodeAll(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += hexByte(b);
  return out;
}

function percentEncode(text: string, safe: Set<string>): string {
  let out = "";
  for (const b of Buffer.from(text, "utf8")) {
    const c = String.fromCharCode(b);
    out += b < 0x80 && safe.has(c) ? c : hexByte(b);
  }
  return out;
}

/**
 * Formats a URI so that {@link parsePkcs11Uri} gives back an equal object.
 * Attributes are written in a fixed order (token, manufacturer, model, serial,
 * slot-*, library-*, object, id, type; then module-name, module-path, pin-source,
 * pin-value), `id` fully percent-encoded, other values encoded only where RFC 7512 requires.
 * @throws RaError `INVALID_PKCS11_URI` when the object could not be parsed back
 *   (pin-value with pin-source, relative module-path, bad type, bad library-version).
 */
export function formatPkcs11Uri(uri: Pkcs11Uri): string {
  const path: string[] = [];
  for (const [name, key] of PATH_ATTRIBUTES) {
    const value = uri[key];
    if (value === undefined) continue;
    if (key === "id") path.push(`${name}=${percentEncodeAll(value as Buffer)}`);
    else if (key === "slotId") path.push(`${name}=${(value as bigint).toString(10)}`);
    else path.push(`${name}=${percentEncode(String(value), PATH_SAFE)}`);
  }
  for (const v of uri.vendorPath ?? []) path.push(`${v.name}=${percentEncode(v.value, PATH_SAFE)}`);
  const query: string[] = [];
  for (const [name, key] of QUERY_ATTRIBUTES) {
    const value = uri[key];
    if (value !== undefined) query.push(`${name}=${percentEncode(value, QUERY_SAFE)}`);
  }
  for (const v of uri.vendorQuery ?? []) query.push(`${v.name}=${percentEncode(v.value, QUERY_SAFE)}`);
  const text = "pkcs11:" + path.join(";") + (query.length ? "?" + query.join("&") : "");
  parsePkcs11Uri(text); // validates (throws on an object that cannot round-trip)
  return text;
}

/** A copy of `uri` without `pin-value`, for printing and logging. */
export function withoutPin(uri: Pkcs11Uri): Pkcs11Uri {
  const copy = { ...uri };
  delete copy.pinValue;
  return copy;
}

/** The URI as text with any `pin-value` removed: safe for logs and error messages. */
export function redactPkcs11Uri(text: string): string {
  try {
    return formatPkcs11Uri(withoutPin(parsePkcs11Uri(text)));
  } catch {
    return text.replace(/([?&]pin-value=)[^&]*/gi, "$1[redacted]");
  }
}

/** The `library-version` attribute as numbers; a missing minor part is 0 (RFC 7512 §2.3). */
export function parseLibraryVersion(v: string): { major: number; minor: number } {
  const [major, minor] = v.split(".");
  return { major: Number(major), minor: minor === undefined ? 0 : Number(minor) };
}

/** True when the URI names token-level attributes only (no object, id or type). */
export function isTokenOnlyUri(uri: Pkcs11Uri): boolean {
  return uri.object === undefined && uri.id === undefined && uri.type === undefined;
}
