/**
 * Loading PKCS#11 modules: which file (flag, URI `module-path`/`module-name`,
 * default p11-kit-proxy from `native-config/modules.json`), and one loaded,
 * initialised instance per file per process.
 */
import { existsSync, readdirSync, realpathSync, statSync } from "node:fs";
import { basename, isAbsolute, join } from "node:path";
import * as pkcs11js from "pkcs11js";
import { RaError, usageError } from "../../errors";
import { logger } from "../../log/logger";
import type { Pkcs11Uri } from "../../uri/pkcs11-uri";
import { hasCkr, toRaError } from "./errors";
import { revokeLaneGrants } from "./lane-grant";
import { catalogEntryForPath, findCatalogEntry, locateCatalogModule, moduleCatalog, candidatePaths, moduleHints, quirksFor, Quirks } from "./native-config";
import { listP11KitModules } from "./p11-kit";

/** Where the module path came from, for messages and `--debug`. */
export type ModuleSource = "flag" | "uri-module-path" | "uri-module-name" | "default";

/** The module chosen for a run. */
export interface ModuleChoice {
  path: string;
  source: ModuleSource;
}

/** `C_GetInfo`, with padding removed. */
export interface ModuleInfo {
  manufacturer: string;
  description: string;
  /** `major.minor`, e.g. `2.6`. */
  libraryVersion: string;
  cryptokiVersion: string;
  libraryVersionMajor: number;
  libraryVersionMinor: number;
}

/** Removes the blank (and NUL) padding of PKCS#11 fixed-length strings. */
export function unpad(s: string): string {
  return s.replace(/[\s\0]+$/, "");
}

function defaultModulePath(): string {
  const cat = moduleCatalog();
  const entry = findCatalogEntry(cat.defaultModule);
  const path = entry && locateCatalogModule(entry);
  if (!path) {
    throw new RaError("token", "PKCS11_MODULE_NOT_FOUND", `the default PKCS#11 module (p11-kit-proxy) is not installed here (looked in: ${entry ? candidatePaths(entry).join(", ") : "nowhere"})`, {
      hint: entry?.hints?.notInstalled ?? "install p11-kit, or name the token's module with --pkcs11-lib PATH",
    });
  }
  return path;
}

function searchModuleDirectory(dir: string, name: string): string | undefined {
  const n = name.toLowerCase();
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return undefined;
  }
  // As go-pkcs11uri does: the name must be followed by the end or a ".", so "softhsm" does not pick libsofthsm2.so.
  const hit = files.find((f) => {
    const lower = f.toLowerCase();
    const i = lower.indexOf(n);
    return i >= 0 && (i + n.length === lower.length || lower[i + n.length] === ".") && /\.(so|dylib|dll)(\.|$)/.test(lower);
  });
  return hit ? join(dir, hit) : undefined;
}

/**
 * Resolves a module name (`module-name`, or a `--pkcs11-lib` value without a
 * path separator): the catalogue's ids and aliases, then p11-kit module names,
 * then the usual module directories.
 */
export function resolveModuleName(name: string, searchDir?: string): string | undefined {
  if (searchDir) return searchModuleDirectory(searchDir, name);
  const entry = findCatalogEntry(name);
  const fromCatalog = entry && locateCatalogModule(entry);
  if (fromCatalog) return fromCatalog;
  const registered = listP11KitModules().find((m) => m.name.toLowerCase() === name.toLowerCase());
  if (registered) return registered.path;
  for (const dir of ["/usr/lib/x86_64-linux-gnu/pkcs11", "/usr/lib/aarch64-linux-gnu/pkcs11", "/usr/lib64/pkcs11", "/usr/lib/pkcs11", "/usr/local/lib/pkcs11", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"]) {
    const hit = searchModuleDirectory(dir, name) ?? searchModuleDirectory(dir, "lib" + name);
    if (hit) return hit;
  }
  return undefined;
}

/**
 * Chooses the module: `--pkcs11-lib` first, then the URIs' `module-path` /
 * `module-name`, then p11-kit-proxy.
 * @throws RaError `PKCS11_MODULE_NOT_FOUND` (token) when a named module cannot be found;
 *   `PKCS11_MODULE_CONFLICT` (usage) when two URIs name different modules.
 */
export function resolveModule(opts: { modulePath?: string; uris?: Array<Pkcs11Uri | undefined> }): ModuleChoice {
  const uris = (opts.uris ?? []).filter((u): u is Pkcs11Uri => u !== undefined);
  if (opts.modulePath) {
    const p = opts.modulePath;
    if (!/[\\/]/.test(p) && !existsSync(p)) {
      const byName = resolveModuleName(p);
      if (byName) return { path: byName, source: "flag" };
    }
    return { path: p, source: "flag" };
  }
  const fromUris = new Map<string, ModuleChoice>();
  for (const uri of uris) {
    let choice: ModuleChoice | undefined;
    if (uri.modulePath !== undefined) {
      let isDir = false;
      try {
        isDir = statSync(uri.modulePath).isDirectory();
      } catch {
        // not there: loading will say so
      }
      if (isDir) {
        const found = uri.moduleName ? resolveModuleName(uri.moduleName, uri.modulePath) : undefined;
        if (!found) {
          throw new RaError("token", "PKCS11_MODULE_NOT_FOUND", `no module${uri.moduleName ? ` named "${uri.moduleName}"` : ""} in directory ${uri.modulePath} (URI module-path)`, {
            hint: "give module-path the module file itself, or add module-name=NAME to pick a file in that directory",
          });
        }
        choice = { path: found, source: "uri-module-path" };
      } else {
        choice = { path: uri.modulePath, source: "uri-module-path" };
      }
    } else if (uri.moduleName !== undefined) {
      const found = resolveModuleName(uri.moduleName);
      if (!found) {
        throw new RaError("token", "PKCS11_MODULE_NOT_FOUND", `no PKCS#11 module named "${uri.moduleName}" (URI module-name) is known or installed`, {
          hint: "install the module, use a name from native-config/modules.json or `p11-kit list-modules`, or give module-path=/full/path/to/module.so",
        });
      }
      choice = { path: found, source: "uri-module-name" };
    }
    if (choice) fromUris.set(choice.path, choice);
  }
  if (fromUris.size > 1) {
    throw usageError("PKCS11_MODULE_CONFLICT", `the certificate and key URIs name different modules (${[...fromUris.keys()].join(", ")})`, "keep the certificate and its key in one module, or drop module-path/module-name from one URI");
  }
  const only = [...fromUris.values()][0];
  return only ?? { path: defaultModulePath(), source: "default" };
}

/** True when `path` is the catalogue's default proxy module. */
export function isDefaultProxy(path: string): boolean {
  const entry = findCatalogEntry(moduleCatalog().defaultModule);
  if (!entry) return false;
  const base = basename(path);
  return Object.values(entry.paths).some((ps) => ps.some((p) => p === path || basename(p) === base));
}

/** A loaded and initialised PKCS#11 module, shared by everything in the process. */
export class Pkcs11Module {
  /** The path it was loaded from. */
  readonly path: string;
  /** Cache key: the real path when the file exists. */
  readonly key: string;
  /** The pkcs11js handle: only code under src/signer/pkcs11 uses it. */
  readonly api: pkcs11js.PKCS11;
  /** Short name: the catalogue id (`softhsm2`, `p11-kit-proxy`) or the file name. */
  readonly name: string;
  /** True for p11-kit-proxy: library fields then describe p11-kit, not the token's module. */
  readonly isProxy: boolean;
  /** Bumped each time the module is finalised and initialised again; sessions of older generations are gone. */
  generation = 0;
  info: ModuleInfo;
  /**
   * Quirks that match the module itself (its path, then its C_GetInfo fields), for
   * failures before any token is known: C_Initialize, C_GetSlotList.
   */
  quirks: Quirks;
  private initializedHere = false;
  private closed = false;

  constructor(path: string, key: string) {
    this.path = path;
    this.key = key;
    this.name = catalogEntryForPath(path)?.id ?? basename(path);
    this.isProxy = isDefaultProxy(path);
    this.api = new pkcs11js.PKCS11();
    this.quirks = quirksFor({ modulePath: path });
    quietTpmLogging();
    try {
      this.api.load(path);
    } catch (e) {
      const hints = moduleHints(path);
      const hint = existsSync(path)
        ? `the file exists but does not load as a PKCS#11 module (wrong architecture, or a library it needs is missing: check with \`ldd ${path}\`)${hints.cannotLoad ? `; ${hints.cannotLoad}` : ""}`
        : hints.notInstalled
          ? `${hints.notInstalled}; or correct the path (--pkcs11-lib, or module-path in the URI)`
          : "install the module or correct the path (--pkcs11-lib, or module-path in the URI); `ra-agent list` shows known modules";
      throw new RaError("token", "PKCS11_MODULE_LOAD_FAILED", `cannot load PKCS#11 module ${path}: ${(e as Error).message}`, { hint, cause: e });
    }
    this.initialize();
    this.info = this.readInfo();
    this.quirks = quirksFor({ modulePath: path, libraryManufacturer: this.info.manufacturer, libraryDescription: this.info.description });
  }

  /** How a failure of C_Initialize / C_GetSlotList is worded: the module's quirks and modules.json hint. */
  failureContext(operation: string, quirks: Quirks = this.quirks): { operation: string; token: string; quirks: Quirks; moduleHint?: string } {
    return { operation, token: `module ${this.path}`, quirks, moduleHint: moduleHints(this.path).cannotLoad };
  }

  /**
   * @param quirks the token's quirks when a token context re-initialises the module
   *   (through p11-kit-proxy only the token reveals that it is a TPM)
   */
  private initialize(quirks?: Quirks): void {
    try {
      // CKF_OS_LOCKING_OK: without it SoftHSM drops its mutexes and concurrent C_SignAsync crashes (platform notes).
      this.api.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
      this.initializedHere = true;
    } catch (e) {
      // Another handle in this process initialised the same library: it is usable as is.
      if (!hasCkr(e, pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
        throw toRaError(e, this.failureContext("C_Initialize", quirks));
      }
      this.initializedHere = false;
    }
  }

  private readInfo(): ModuleInfo {
    try {
      const i = this.api.C_GetInfo();
      return {
        manufacturer: unpad(i.manufacturerID),
        description: unpad(i.libraryDescription),
        libraryVersion: `${i.libraryVersion.major}.${i.libraryVersion.minor}`,
        cryptokiVersion: `${i.cryptokiVersion.major}.${i.cryptokiVersion.minor}`,
        libraryVersionMajor: i.libraryVersion.major,
        libraryVersionMinor: i.libraryVersion.minor,
      };
    } catch (e) {
      throw toRaError(e, this.failureContext("C_GetInfo"));
    }
  }

  /**
   * Finalises and initialises the module again (tpm2-pkcs11 needs this to reconnect
   * to a restarted TPM). Every session of every token on this module is lost.
   * @param quirks the token's quirks, for the wording of a failure
   * @throws RaError from C_Initialize
   */
  reinitialize(quirks?: Quirks): void {
    logger.info("re-initialising PKCS#11 module", { module: this.path });
    revokeLaneGrants({ module: this }, false);
    try {
      this.api.C_Finalize();
    } catch (e) {
      logger.debug("C_Finalize failed before re-initialising", { module: this.path, error: (e as Error).message });
    }
    this.generation++;
    this.initialize(quirks);
  }

  /** Finalises the module (when this handle initialised it) and unloads it. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    modules.delete(this.key);
    revokeLaneGrants({ module: this }, !this.initializedHere);
    try {
      if (this.initializedHere) this.api.C_Finalize();
    } catch (e) {
      logger.debug("C_Finalize failed", { module: this.path, error: (e as Error).message });
    }
    try {
      this.api.close();
    } catch {
      // unloading is best effort
    }
  }
}

const modules = new Map<string, Pkcs11Module>();

function cacheKey(path: string): string {
  if (!isAbsolute(path)) return path;
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/**
 * Loads and initialises a module once per file per process (symlinks to one file
 * share an instance, since the dynamic loader would share the library anyway).
 * @throws RaError `PKCS11_MODULE_LOAD_FAILED` / C_Initialize errors
 */
export function loadModule(path: string): Pkcs11Module {
  const key = cacheKey(path);
  let m = modules.get(key);
  if (!m) {
    m = new Pkcs11Module(path, key);
    modules.set(key, m);
    logger.debug("loaded PKCS#11 module", { module: path, library: `${m.info.manufacturer} ${m.info.description} ${m.info.libraryVersion}` });
  }
  return m;
}

/** Modules loaded so far in this process. */
export function loadedModules(): Pkcs11Module[] {
  return [...modules.values()];
}

/**
 * tpm2-tss and tpm2-pkcs11 print `ERROR:` lines on stderr for every TPM they
 * cannot reach, which p11-kit-proxy loads on any machine with tpm2-pkcs11
 * installed. They read these variables when they initialise, so set them (unless
 * the user did, or `--debug` is on) before any module is loaded. ra-agent reports
 * TPM failures itself, with hints.
 */
function quietTpmLogging(): void {
  if (logger.isDebugEnabled()) return;
  process.env.TSS2_LOG ??= "all+NONE";
  process.env.TPM2_PKCS11_LOG_LEVEL ??= "0";
}
