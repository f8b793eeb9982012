/**
 * What `ra-agent list` enumerates: which modules (explicit, p11-kit-registered,
 * known and installed), each loaded directly so that every token appears once,
 * under the module that serves it, with URIs that name that module.
 *
 * Load lazily: this module loads the PKCS#11 backend (pkcs11js).
 */
import { RaError } from "../errors";
import { listP11KitModules, listPkcs11, moduleCandidates, type ModuleListing, type PinProvider } from "../signer/pkcs11/index";
import { isDefaultProxy } from "../signer/pkcs11/module";
import { parsePkcs11Uri } from "../uri/pkcs11-uri";
import { filterInventoryObjects } from "./format-inventory";

/** Options of {@link listInventory}. */
export interface InventoryOptions {
  /** Only tokens (and objects) this `pkcs11:` URI matches; its module-path/module-name choose the module. */
  uri?: string;
  /** Modules named on the command line (`--pkcs11-lib`, paths or known names). */
  modulePaths?: string[];
  /** With explicit modules, also list every registered and known module. */
  allModules?: boolean;
  /** Log in to tokens that need it, to list private keys. */
  login?: boolean;
  /** Modules, slots and tokens only. */
  tokensOnly?: boolean;
  /** PIN sources for `login`; default: URI pin-source/pin-value, RA_AGENT_PIN_FILE, RA_AGENT_PIN, prompt. */
  pin?: PinProvider;
}

/** A module in the inventory, with a remark when it was listed partly or not at all on purpose. */
export type InventoryModule = ModuleListing & { note?: string; objectsListed?: boolean };

/** The inventory and what to tell the user about it. */
export interface Inventory {
  modules: InventoryModule[];
  /** Lines for the end of the human listing (e.g. nothing matched the URI). */
  notes: string[];
  /** Set when every module the user named explicitly failed: the command then exits non-zero. */
  failure?: RaError;
}

/**
 * Enumerates modules, slots, tokens, keys and certificates.
 *
 * Without `--pkcs11-lib` (and without a module in the URI) it lists every
 * module registered with p11-kit and every catalogue module installed, each
 * loaded directly; p11-kit-proxy itself is shown but not opened (its tokens
 * are those of the modules listed), and modules p11-kit-proxy skips (trust
 * anchors) are listed without their objects.
 *
 * @throws RaError `INVALID_PKCS11_URI`; PIN errors when `login` is set and a PIN is refused
 *   (never retried); module resolution errors for a module named in the URI
 */
export async function listInventory(opts: InventoryOptions): Promise<Inventory> {
  const parsed = opts.uri ? parsePkcs11Uri(opts.uri) : undefined;
  const explicit = (opts.modulePaths ?? []).length > 0;
  const uriNamesModule = parsed !== undefined && (parsed.modulePath !== undefined || parsed.moduleName !== undefined);
  const common = { uri: opts.uri, login: opts.login, pin: opts.pin };
  let modules: InventoryModule[];

  if ((explicit || uriNamesModule) && !opts.allModules) {
    modules = (await listPkcs11({ ...common, modulePaths: explicit ? opts.modulePaths : undefined, tokensOnly: opts.tokensOnly })).map((m) => ({ ...m, objectsListed: !opts.tokensOnly }));
  } else {
    const registered = listP11KitModules();
    modules = [];
    for (const cand of moduleCandidates({ modulePaths: explicit ? opts.modulePaths : undefined, allModules: true, uri: opts.uri })) {
      if (isDefaultProxy(cand.path) && cand.source !== "explicit") {
        modules.push({
          path: cand.path, name: cand.name, source: cand.source, isProxy: true, slots: [],
          note: "the default module: it serves the tokens of the p11-kit modules listed here (URIs without module-path go through it)",
        });
        continue;
      }
      const skippedByProxy = registered.some((m) => m.path === cand.path && m.skippedByProxy);
      const [listing] = await listPkcs11({ ...common, modulePaths: [cand.path], tokensOnly: opts.tokensOnly || skippedByProxy });
      const entry: InventoryModule = { ...listing, name: cand.name, source: cand.source, objectsListed: !(opts.tokensOnly || skippedByProxy) };
      if (skippedByProxy) entry.note = "p11-kit-proxy does not load this module (disable-in/enable-in in its p11-kit config): objects not listed";
      modules.push(entry);
    }
  }

  if (parsed) modules = filterInventoryObjects(modules, parsed);

  const notes: string[] = [];
  const tokens = modules.flatMap((m) => m.slots.filter((s) => s.token?.initialized));
  if (opts.uri && tokens.length === 0) notes.push(`No initialised token matches ${opts.uri.replace(/pin-value=[^&;]*/gi, "pin-value=[redacted]")}.`);

  let failure: RaError | undefined;
  const named = modules.filter((m) => m.source === "explicit");
  if (named.length > 0 && named.every((m) => m.error)) {
    failure = new RaError("token", "PKCS11_MODULE_UNUSABLE", `no module given with --pkcs11-lib could be used: ${named.map((m) => `${m.path}: ${m.error}`).join("; ")}`, {
      hint: "check the module path (`ra-agent list` without --pkcs11-lib shows the modules found on this machine) and the module's own configuration",
    });
  }
  return { modules, notes, failure };
}
