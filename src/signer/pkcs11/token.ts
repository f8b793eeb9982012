/**
 * Slots and tokens: enumeration, matching a URI's token attributes, and the
 * errors for "no token" and "several tokens" (each candidate with its URI).
 * Tokens are identified by label, manufacturer, model and serial, never by a
 * remembered slot id (SoftHSM renumbers slots when a token is initialised).
 */
import * as pkcs11js from "pkcs11js";
import { RaError, usageError } from "../../errors";
import { logger } from "../../log/logger";
import { formatPkcs11Uri, parseLibraryVersion, Pkcs11Uri } from "../../uri/pkcs11-uri";
import { CKF_TOKEN_PRESENT, pinStateOf, PinState, tokenFlagNames } from "./constants";
import { toRaError } from "./errors";
import { Pkcs11Module, isDefaultProxy, unpad } from "./module";
import { quirksFor, Quirks } from "./native-config";

/** A token as `C_GetTokenInfo` describes it, padding removed. */
export interface TokenDescription {
  label: string;
  manufacturer: string;
  model: string;
  serial: string;
  /** Raw `CK_TOKEN_INFO.flags`. */
  flags: number;
  flagNames: string[];
  pinState: PinState;
  loginRequired: boolean;
  initialized: boolean;
  protectedAuthenticationPath: boolean;
}

/** A slot and, when present, its token. */
export interface SlotEntry {
  module: Pkcs11Module;
  /** pkcs11js slot handle (8-byte Buffer); valid until the module renumbers slots. */
  handle: Buffer;
  slotId: bigint;
  description: string;
  manufacturer: string;
  slotFlags: number;
  token?: TokenDescription;
}

/** A slot whose token is present and initialised. */
export type TokenSlot = SlotEntry & { token: TokenDescription };

/** Reads a CK_ULONG-sized handle as a number. */
export function handleToBigInt(handle: Buffer): bigint {
  if (handle.length >= 8) return handle.readBigUInt64LE(0);
  if (handle.length >= 4) return BigInt(handle.readUInt32LE(0));
  return BigInt(handle.length ? handle[0] : 0);
}

/** Describes `C_GetTokenInfo` output. */
export function describeTokenInfo(info: pkcs11js.TokenInfo): TokenDescription {
  const flags = info.flags;
  return {
    label: unpad(info.label),
    manufacturer: unpad(info.manufacturerID),
    model: unpad(info.model),
    serial: unpad(info.serialNumber),
    flags,
    flagNames: tokenFlagNames(flags),
    pinState: pinStateOf(flags),
    loginRequired: (flags & pkcs11js.CKF_LOGIN_REQUIRED) !== 0,
    initialized: (flags & pkcs11js.CKF_TOKEN_INITIALIZED) !== 0,
    protectedAuthenticationPath: (flags & pkcs11js.CKF_PROTECTED_AUTHENTICATION_PATH) !== 0,
  };
}

/**
 * Every slot of the module (or only those with a token present). A slot whose
 * info cannot be read is skipped with a debug message, as the reference helper does.
 * @param quirks for the wording of a failure: a token's quirks when looking for it again
 *   (through p11-kit-proxy only the token reveals it is a TPM); default the module's
 * @throws RaError when C_GetSlotList itself fails
 */
export function listSlots(module: Pkcs11Module, tokenPresent = true, quirks?: Quirks): SlotEntry[] {
  let handles: Buffer[];
  try {
    handles = module.api.C_GetSlotList(tokenPresent);
  } catch (e) {
    throw toRaError(e, module.failureContext("C_GetSlotList", quirks));
  }
  const slots: SlotEntry[] = [];
  for (const handle of handles) {
    try {
      const si = module.api.C_GetSlotInfo(handle);
      const entry: SlotEntry = {
        module,
        handle,
        slotId: handleToBigInt(handle),
        description: unpad(si.slotDescription),
        manufacturer: unpad(si.manufacturerID),
        slotFlags: si.flags,
      };
      if (si.flags & CKF_TOKEN_PRESENT) entry.token = describeTokenInfo(module.api.C_GetTokenInfo(handle));
      slots.push(entry);
    } catch (e) {
      logger.debug("skipping a slot whose information cannot be read", { module: module.path, slot: handleToBigInt(handle).toString(), error: (e as Error).message });
    }
  }
  return slots;
}

/** Slots with an initialised token. */
export function listTokens(module: Pkcs11Module, quirks?: Quirks): TokenSlot[] {
  return listSlots(module, true, quirks).filter((s): s is TokenSlot => s.token !== undefined && s.token.initialized);
}

/**
 * True when every token, slot and library attribute of `uri` matches (RFC 7512:
 * absent attributes match anything; values compare exactly).
 * @throws RaError `PKCS11_URI_UNSUPPORTED_ATTRIBUTE` for vendor path attributes,
 *   which this consumer cannot evaluate (and so must not treat as matching).
 */
export function tokenMatches(slot: TokenSlot, uri: Pkcs11Uri): boolean {
  if (uri.vendorPath?.length) {
    throw usageError("PKCS11_URI_UNSUPPORTED_ATTRIBUTE", `the pkcs11: URI has attribute(s) ra-agent does not know: ${uri.vendorPath.map((v) => v.name).join(", ")}`, "remove them; ra-agent matches token, manufacturer, model, serial, slot-*, library-*, object, id and type");
  }
  const t = slot.token;
  const info = slot.module.info;
  if (uri.token !== undefined && uri.token !== t.label) return false;
  if (uri.manufacturer !== undefined && uri.manufacturer !== t.manufacturer) return false;
  if (uri.model !== undefined && uri.model !== t.model) return false;
  if (uri.serial !== undefined && uri.serial !== t.serial) return false;
  if (uri.slotDescription !== undefined && uri.slotDescription !== slot.description) return false;
  if (uri.slotManufacturer !== undefined && uri.slotManufacturer !== slot.manufacturer) return false;
  if (uri.slotId !== undefined && uri.slotId !== slot.slotId) return false;
  if (uri.libraryManufacturer !== undefined && uri.libraryManufacturer !== info.manufacturer) return false;
  if (uri.libraryDescription !== undefined && uri.libraryDescription !== info.description) return false;
  if (uri.libraryVersion !== undefined) {
    const v = parseLibraryVersion(uri.libraryVersion);
    if (v.major !== info.libraryVersionMajor || v.minor !== info.libraryVersionMinor) return false;
  }
  return true;
}

/** Initialised tokens matching the URI's token attributes. */
export function matchTokens(module: Pkcs11Module, uri: Pkcs11Uri): TokenSlot[] {
  return listTokens(module).filter((s) => tokenMatches(s, uri));
}

/** Options for the URIs ra-agent prints. */
export interface UriOptions {
  /** Add `module-path` (done automatically when the module is not the default proxy). */
  modulePath?: string;
}

/** Query part to add to printed URIs so that they work without `--pkcs11-lib`. */
export function moduleQuery(module: Pkcs11Module): Pick<Pkcs11Uri, "modulePath"> {
  return isDefaultProxy(module.path) || !module.path.startsWith("/") ? {} : { modulePath: module.path };
}

/** The URI attributes that identify a token exactly. */
export function tokenUriAttributes(slot: TokenSlot): Pkcs11Uri {
  const t = slot.token;
  return { token: t.label, manufacturer: t.manufacturer, model: t.model, serial: t.serial };
}

/** The exact `pkcs11:` URI of a token (module-path added when not the default proxy). */
export function tokenUri(slot: TokenSlot): string {
  return formatPkcs11Uri({ ...tokenUriAttributes(slot), ...moduleQuery(slot.module) });
}

/** `token "label" (serial …, manufacturer model)`, for messages. */
export function describeToken(slot: Pick<TokenSlot, "token">): string {
  const t = slot.token;
  return `token "${t.label}" (serial ${t.serial || "none"}, ${[t.manufacturer, t.model].filter(Boolean).join(" ")})`;
}

/** Stable identity of a token within a module, used to find it again after a reset. */
export function tokenIdentity(slot: TokenSlot): string {
  const t = slot.token;
  return [slot.module.key, t.manufacturer, t.model, t.serial, t.label].join("\u0000");
}

/** The quirks that apply to a token. */
export function quirksForToken(slot: TokenSlot): Quirks {
  return quirksFor({
    modulePath: slot.module.path,
    libraryManufacturer: slot.module.info.manufacturer,
    libraryDescription: slot.module.info.description,
    tokenManufacturer: slot.token.manufacturer,
    tokenModel: slot.token.model,
    tokenLabel: slot.token.label,
    tokenSerial: slot.token.serial,
    slotManufacturer: slot.manufacturer,
    slotDescription: slot.description,
  });
}

function listForMessage(slots: TokenSlot[], max = 8): string {
  const lines = slots.slice(0, max).map((s) => `  ${tokenUri(s)}`);
  if (slots.length > max) lines.push(`  … and ${slots.length - max} more`);
  return lines.join("\n");
}

/**
 * The error for a URI that matches no token, listing the tokens that exist.
 * `what` names the object sought, e.g. "the certificate".
 */
export function noTokenError(module: Pkcs11Module, uri: Pkcs11Uri, what: string): RaError {
  const all = listTokens(module);
  const shown = formatPkcs11Uri({ ...tokenUriAttributesOf(uri) });
  const available = all.length ? `tokens present:\n${listForMessage(all)}` : `module ${module.path} shows no initialised token`;
  return new RaError("token", "PKCS11_TOKEN_NOT_FOUND", `no token matches ${shown} (looking for ${what}); ${available}`, {
    hint: all.length
      ? "correct token=/serial= in the URI (labels are case-sensitive), or pick one of the tokens above"
      : "insert the card or key, start the HSM/TPM service, or check the module (--pkcs11-lib, module-path) and its config (e.g. SOFTHSM2_CONF)",
  });
}

/** The error for a URI that matches several tokens where one is needed. */
export function severalTokensError(slots: TokenSlot[], uri: Pkcs11Uri, what: string): RaError {
  const shown = formatPkcs11Uri({ ...tokenUriAttributesOf(uri) });
  return new RaError("token", "PKCS11_SEVERAL_TOKENS", `several tokens match ${shown} (looking for ${what}):\n${listForMessage(slots)}`, {
    hint: "add serial=... (or another attribute that differs) to the URI to choose one",
  });
}

function tokenUriAttributesOf(uri: Pkcs11Uri): Pkcs11Uri {
  const { token, manufacturer, model, serial, slotDescription, slotManufacturer, slotId, libraryManufacturer, libraryDescription, libraryVersion } = uri;
  const picked: Pkcs11Uri = { token, manufacturer, model, serial, slotDescription, slotManufacturer, slotId, libraryManufacturer, libraryDescription, libraryVersion };
  for (const k of Object.keys(picked) as Array<keyof Pkcs11Uri>) if (picked[k] === undefined) delete picked[k];
  return picked;
}

/**
 * Re-reads a token's flags (PIN state changes after failed logins).
 * @throws RaError when the token cannot be read (removed)
 */
export function refreshToken(slot: TokenSlot): TokenDescription {
  try {
    const fresh = describeTokenInfo(slot.module.api.C_GetTokenInfo(slot.handle));
    slot.token = fresh;
    return fresh;
  } catch (e) {
    throw toRaError(e, { operation: "C_GetTokenInfo", token: describeToken(slot) });
  }
}
