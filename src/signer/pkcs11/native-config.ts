/**
 * Reads `native-config/modules.json` (where PKCS#11 modules live on each
 * platform) and `native-config/quirks.json` (per-module behaviour), and answers
 * the two questions the PKCS#11 layer asks: which module file to load, and how a
 * given token must be treated (session pool size, signing serialisation,
 * mechanisms to avoid, PIN hints, recovery).
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { RaError } from "../../errors";

/** One module of the catalogue. */
export interface ModuleCatalogEntry {
  id: string;
  name: string;
  kind: "proxy" | "software-hsm" | "smart-card" | "tpm" | "security-key" | "hsm";
  aliases?: string[];
  /** Advice when the module cannot be used (see {@link moduleHints}). */
  hints?: ModuleHints;
  /** Candidate paths per `${process.platform}-${process.arch}`. */
  paths: Record<string, string[]>;
}

/** Advice from `modules.json` for a module that cannot be used. */
export interface ModuleHints {
  /** The module file is missing: how to install it. */
  notInstalled?: string;
  /** The file is there but fails to load or initialise (C_Initialize, first C_GetSlotList): what to check. */
  cannotLoad?: string;
}

interface ModuleCatalog {
  defaultModule: string;
  modules: ModuleCatalogEntry[];
}

/** Behaviour switches for one token, merged from `quirks.json`. */
export interface Quirks {
  /** Ids of the quirk entries that matched, for `--debug` and `list`. */
  ids: string[];
  /** Sessions opened per token for concurrent signatures. */
  sessionPoolSize: number;
  /** One signature at a time on this token (TPMs, smart cards). */
  serializeSigning: boolean;
  /** `CKM_*` names never used for signing even when the token lists them. */
  avoidMechanisms: string[];
  /** Largest RSA key the module can generate or use. */
  maxRsaBits: number;
  /** True when the token's PIN counter flags (count low, final try, locked) can be trusted. */
  pinFlagsReliable: boolean;
  /** Extra advice for `CKR_PIN_INCORRECT` on this token. */
  pinIncorrectHint?: string;
  /** Extra advice for `CKR_PIN_LOCKED` on this token. */
  pinLockedHint?: string;
  /** Advice when ra-agent refuses to log in at the token's final PIN try (replaces the generic text). */
  finalTryHint?: string;
  /**
   * Advice for device errors (`CKR_DEVICE_ERROR`, `CKR_GENERAL_ERROR`, `CKR_FUNCTION_FAILED`),
   * also when C_Initialize or C_GetSlotList fails (matched on the module path there).
   */
  deviceErrorHint?: string;
  /** On recovery, finalise and initialise the module again (reconnects tpm2-pkcs11 to a restarted TPM). */
  reinitializeOnRecovery: boolean;
  /** `CKR_*` names that trigger recovery on this token, besides the standard ones. */
  recoverableErrors: string[];
}

/** What a quirk entry can be matched against. */
export interface QuirkSubject {
  modulePath?: string;
  libraryManufacturer?: string;
  libraryDescription?: string;
  tokenManufacturer?: string;
  tokenModel?: string;
  tokenLabel?: string;
  tokenSerial?: string;
  slotManufacturer?: string;
  slotDescription?: string;
}

interface QuirkEntry extends Partial<Omit<Quirks, "ids">> {
  id: string;
  match: Array<Partial<Record<keyof QuirkSubject, string>>>;
}

interface QuirkFile {
  defaults: Omit<Quirks, "ids">;
  quirks: QuirkEntry[];
}

let configDir: string | undefined;

/**
 * The `native-config` directory: `RA_AGENT_NATIVE_CONFIG` when set, else the first
 * `native-config/` found walking up from this file (works from `src/`, `dist/` and
 * an installed package).
 * @throws RaError `NATIVE_CONFIG_MISSING` when it cannot be found.
 */
export function nativeConfigDir(): string {
  if (configDir) return configDir;
  const fromEnv = process.env.RA_AGENT_NATIVE_CONFIG;
  if (fromEnv) return (configDir = resolve(fromEnv));
  let dir = __dirname;
  for (;;) {
    const candidate = join(dir, "native-config");
    if (existsSync(join(candidate, "modules.json"))) return (configDir = candidate);
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new RaError("internal", "NATIVE_CONFIG_MISSING", "native-config/modules.json was not found next to ra-agent", {
    hint: "reinstall ra-agent, or set RA_AGENT_NATIVE_CONFIG to the native-config directory",
  });
}

function readJson<T>(name: string): T {
  const file = join(nativeConfigDir(), name);
  try {
    return JSON.parse(readFileSync(file, "utf8")) as T;
  } catch (e) {
    throw new RaError("internal", "NATIVE_CONFIG_INVALID", `cannot read ${file}: ${(e as Error).message}`, { hint: "reinstall ra-agent or fix the JSON file", cause: e });
  }
}

let catalog: ModuleCatalog | undefined;
let quirkFile: QuirkFile | undefined;

/** The module catalogue (`modules.json`). */
export function moduleCatalog(): ModuleCatalog {
  return (catalog ??= readJson<ModuleCatalog>("modules.json"));
}

/** The key used in `modules.json` for this machine, e.g. `linux-x64`. */
export function platformKey(): string {
  return `${process.platform}-${process.arch}`;
}

/** Candidate paths of a catalogue module on this platform, in order. */
export function candidatePaths(entry: ModuleCatalogEntry): string[] {
  return entry.paths[platformKey()] ?? [];
}

/** Catalogue entry whose id or alias is `name` (case-insensitive). */
export function findCatalogEntry(name: string): ModuleCatalogEntry | undefined {
  const n = name.toLowerCase();
  return moduleCatalog().modules.find((m) => m.id.toLowerCase() === n || (m.aliases ?? []).some((a) => a.toLowerCase() === n));
}

/** Catalogue entry that lists `path` (by full path or file name). */
export function catalogEntryForPath(path: string): ModuleCatalogEntry | undefined {
  const base = path.split(/[\\/]/).pop() ?? path;
  return moduleCatalog().modules.find((m) => Object.values(m.paths).some((ps) => ps.some((p) => p === path || p.split(/[\\/]/).pop() === base)));
}

/**
 * First existing path of a catalogue module on this platform, or its first bare
 * file name (left to the system's library search), or undefined.
 */
export function locateCatalogModule(entry: ModuleCatalogEntry): string | undefined {
  const paths = candidatePaths(entry);
  return paths.find((p) => existsSync(p)) ?? paths.find((p) => !/[\\/]/.test(p));
}

/**
 * The `modules.json` hints for a module, found by catalogue id, alias, or file path
 * (full path or file name); `{}` when the module is not in the catalogue.
 */
export function moduleHints(nameOrPath: string): ModuleHints {
  const entry = /[\\/]/.test(nameOrPath) ? catalogEntryForPath(nameOrPath) : findCatalogEntry(nameOrPath) ?? catalogEntryForPath(nameOrPath);
  return entry?.hints ?? {};
}

function quirks(): QuirkFile {
  return (quirkFile ??= readJson<QuirkFile>("quirks.json"));
}

function fieldMatches(pattern: string, value: string | undefined): boolean {
  if (value === undefined) return false;
  return new RegExp(pattern, "i").test(value);
}

/**
 * The quirks that apply to a token: defaults, then every matching entry in file
 * order (later entries override earlier ones; lists are merged).
 */
export function quirksFor(subject: QuirkSubject): Quirks {
  const file = quirks();
  const result: Quirks = { ids: [], ...file.defaults, avoidMechanisms: [...file.defaults.avoidMechanisms], recoverableErrors: [...file.defaults.recoverableErrors] };
  for (const entry of file.quirks) {
    const hit = entry.match.some((m) =>
      Object.entries(m).every(([field, pattern]) => fieldMatches(pattern as string, subject[field as keyof QuirkSubject])),
    );
    if (!hit) continue;
    result.ids.push(entry.id);
    const { id: _id, match: _match, avoidMechanisms, recoverableErrors, ...rest } = entry;
    Object.assign(result, Object.fromEntries(Object.entries(rest).filter(([k]) => k !== "notes")));
    if (avoidMechanisms) result.avoidMechanisms.push(...avoidMechanisms);
    if (recoverableErrors) result.recoverableErrors.push(...recoverableErrors);
  }
  if (result.serializeSigning) result.sessionPoolSize = 1;
  result.sessionPoolSize = Math.max(1, Math.floor(result.sessionPoolSize));
  return result;
}

/** Forgets cached files (tests that point RA_AGENT_NATIVE_CONFIG elsewhere). */
export function resetNativeConfigCache(): void {
  configDir = undefined;
  catalog = undefined;
  quirkFile = undefined;
}
