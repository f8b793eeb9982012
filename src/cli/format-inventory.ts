/**
 * Presentation of `ra-agent list`: the PKCS#11 inventory (modules, slots,
 * tokens, keys, certificates) as a human listing with small tables, or as JSON
 * for scripts. Pure functions over the listing that src/signer/pkcs11 builds;
 * no token I/O here, so they are tested with plain data.
 */
import type { CertificateListing, KeyListing, ModuleListing, TokenListing } from "../signer/pkcs11/enumerate";
import type { Pkcs11Uri } from "../uri/pkcs11-uri";
// Reads native-config/modules.json only (no pkcs11js): cheap to load from the CLI.
import { moduleHints } from "../signer/pkcs11/native-config";

/** Schema version of the JSON output; bumped on incompatible changes. */
export const INVENTORY_JSON_VERSION = 1;

/** A certificate in the JSON output: DER as base64 instead of a Buffer. */
export type CertificateJson = Omit<CertificateListing, "der"> & { derBase64: string };

/** A token in the JSON output. */
export type TokenJson = Omit<TokenListing, "certificates"> & { certificates: CertificateJson[] };

/** A module as listed, with a remark when it was listed partly or not at all on purpose. */
export type ListedModule = ModuleListing & {
  note?: string;
  /** False when keys and certificates were not asked for (`--tokens-only`, trust modules). */
  objectsListed?: boolean;
};

/** A module in the JSON output. */
export type ModuleJson = Omit<ListedModule, "slots"> & {
  slots: Array<Omit<ModuleListing["slots"][number], "token"> & { token?: TokenJson }>;
  /** Advice when the module could not be used. */
  hint?: string;
};

/** The whole `list --json` document. */
export interface InventoryJson {
  version: number;
  modules: ModuleJson[];
}

/**
 * Advice for a module that failed to load or initialise: the hint the listing
 * carries (from the error: module quirks, native-config/modules.json), else the
 * `cannotLoad` hint of native-config/modules.json for the module's catalogue id or file.
 */
function moduleFailureHint(m: Pick<ModuleListing, "name" | "path" | "hint">): string | undefined {
  return m.hint ?? moduleHints(m.name).cannotLoad ?? moduleHints(m.path).cannotLoad;
}

/**
 * The token with its objects in a stable order (tokens return them in any
 * order): keys by label then id; certificates after their key, then by label.
 */
export function sortTokenObjects(t: TokenListing): TokenListing {
  const byLabelId = (a: { label: string; idHex: string }, b: { label: string; idHex: string }) => a.label.localeCompare(b.label) || a.idHex.localeCompare(b.idHex);
  const keys = [...t.keys].sort(byLabelId);
  const keyRank = new Map(keys.map((k, i) => [k.uri, i]));
  const rank = (c: CertificateListing) => (c.keyUri !== undefined ? keyRank.get(c.keyUri) ?? keys.length : keys.length);
  const certificates = [...t.certificates].sort((a, b) => rank(a) - rank(b) || byLabelId(a, b));
  return { ...t, keys, certificates };
}

/** Converts a listing to its JSON document (DER as base64; absent fields left out). */
export function inventoryToJson(modules: ListedModule[]): InventoryJson {
  return {
    version: INVENTORY_JSON_VERSION,
    modules: modules.map((m) => {
      const out: ModuleJson = {
        ...m,
        slots: m.slots.map((s) => {
          const { token: listed, ...slot } = s;
          if (!listed) return slot;
          const { certificates, ...token } = sortTokenObjects(listed);
          return { ...slot, token: { ...token, certificates: certificates.map(({ der, ...c }) => ({ ...c, derBase64: der.toString("base64") })) } };
        }),
      };
      if (m.error) {
        const hint = moduleFailureHint(m);
        if (hint) out.hint = hint;
      }
      return out;
    }),
  };
}

function idMatches(idHex: string, id: Buffer | undefined): boolean {
  return id === undefined || idHex === id.toString("hex");
}

/**
 * Keeps only the keys and certificates that a URI's object attributes
 * (`object=`, `id=`, `type=`) name; token attributes are matched upstream.
 * Tokens, slots and modules are kept, so that "nothing matched" stays visible.
 */
export function filterInventoryObjects<M extends ModuleListing>(modules: M[], uri: Pick<Pkcs11Uri, "object" | "id" | "type">): M[] {
  if (uri.object === undefined && uri.id === undefined && uri.type === undefined) return modules;
  const keep = (o: { label: string; idHex: string }) => (uri.object === undefined || o.label === uri.object) && idMatches(o.idHex, uri.id);
  return modules.map((m) => ({
    ...m,
    slots: m.slots.map((s) =>
      s.token
        ? {
            ...s,
            token: {
              ...s.token,
              keys: uri.type === undefined || uri.type === "private" ? s.token.keys.filter(keep) : [],
              certificates: uri.type === undefined || uri.type === "cert" ? s.token.certificates.filter(keep) : [],
            },
          }
        : s,
    ),
  }));
}

/** Renders rows as columns separated by two spaces; the last column is not padded. */
export function table(header: string[], rows: string[][], indent = ""): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    indent + cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

function yesNo(v: boolean | undefined): string {
  return v === undefined ? "?" : v ? "yes" : "no";
}

function keySize(k: KeyListing): string {
  if (k.keyType === "EC") return k.curve ?? (k.bits ? String(k.bits) : "?");
  return k.bits ? String(k.bits) : "?";
}

/** Shortens a long hex id for the table (the URI carries it in full). */
function shortHex(h: string, max = 16): string {
  if (h === "") return "-";
  return h.length <= max ? h : `${h.slice(0, max - 1)}…`;
}

function shorten(s: string | undefined, max: number): string {
  if (!s) return "?";
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

function day(iso: string | undefined): string {
  return iso ? iso.slice(0, 10) : "?";
}

function pinLine(t: TokenListing): string {
  const parts: string[] = [t.pinState];
  parts.push(t.loginRequired ? "login required" : "no login required");
  if (t.loggedIn) parts.push("logged in for this listing");
  return parts.join(", ");
}

function formatToken(t: TokenListing, indent: string, now: Date, objectsListed: boolean): string {
  let out = "";
  const field = (name: string, value: string) => {
    out += `${indent}${name.padEnd(13)} ${value}\n`;
  };
  field("manufacturer", t.manufacturer || "-");
  field("model", t.model || "-");
  field("serial", t.serial || "-");
  field("flags", t.flags.join(", ") || "-");
  field("PIN", pinLine(t));
  if (t.quirks.length) field("quirks", t.quirks.join(", "));
  field("uri", t.uri);
  if (!objectsListed) return out;
  if (t.objectsError) {
    out += `${indent}objects: cannot be listed: ${t.objectsError}\n`;
    return out;
  }
  const hidden = t.loginRequired && !t.loggedIn ? " (private objects hidden: add --login)" : "";

  const keyNo = new Map<string, number>();
  t.keys.forEach((k, i) => keyNo.set(k.uri, i + 1));
  const certNo = new Map<string, number>();
  t.certificates.forEach((c, i) => certNo.set(c.uri, i + 1));

  out += `${indent}Keys: ${t.keys.length}${hidden}\n`;
  if (t.keys.length) {
    out += table(
      ["#", "TYPE", "SIZE", "LABEL", "ID", "SENSITIVE", "EXTRACTABLE", "ALWAYS-AUTH", "CERTIFICATE"],
      t.keys.map((k, i) => [
        `k${i + 1}`, k.keyType, keySize(k), k.label || "-", shortHex(k.idHex), yesNo(k.sensitive), yesNo(k.extractable), yesNo(k.alwaysAuthenticate),
        k.certificateUris.length ? k.certificateUris.map((u) => `c${certNo.get(u) ?? "?"}`).join(",") : "none on token",
      ]),
      indent + "  ",
    );
  }
  out += `${indent}Certificates: ${t.certificates.length}\n`;
  if (t.certificates.length) {
    out += table(
      ["#", "SUBJECT", "ISSUER", "SERIAL", "NOT BEFORE", "NOT AFTER", "KEY"],
      t.certificates.map((c, i) => {
        const expired = c.notAfter !== undefined && new Date(c.notAfter) < now ? " (expired)" : "";
        const notYet = c.notBefore !== undefined && new Date(c.notBefore) > now ? " (not yet valid)" : "";
        const key = c.keyUri ? `k${keyNo.get(c.keyUri) ?? "?"}` : c.isCa ? "CA" : t.loggedIn || !t.loginRequired ? "none" : "?";
        return [`c${i + 1}`, shorten(c.subject, 40), shorten(c.issuer, 32), shortHex(c.serialHex ?? "", 18), day(c.notBefore) + notYet, day(c.notAfter) + expired, key];
      }),
      indent + "  ",
    );
  }
  if (t.keys.length || t.certificates.length) {
    out += `${indent}URIs:\n`;
    t.keys.forEach((k, i) => (out += `${indent}  k${i + 1}  ${k.uri}\n`));
    t.certificates.forEach((c, i) => (out += `${indent}  c${i + 1}  ${c.uri}\n`));
  }
  return out;
}

/**
 * The human listing: one block per module, its slots and tokens, and per token
 * a key table, a certificate table and the exact URI of every object.
 */
export function formatInventory(modules: ListedModule[], opts: { now?: Date } = {}): string {
  const now = opts.now ?? new Date();
  if (modules.length === 0) return "No PKCS#11 modules found.\n";
  let out = "";
  for (const m of modules) {
    const source = m.isProxy ? "p11-kit proxy" : m.source;
    out += `Module ${m.name}  ${m.path}  [${source}]\n`;
    if (m.library) out += `  library: ${m.library.manufacturer} "${m.library.description}" ${m.library.version} (Cryptoki ${m.library.cryptokiVersion})\n`;
    if (m.note) out += `  note: ${m.note}\n`;
    if (m.error) {
      out += `  error: ${m.error}\n`;
      const hint = moduleFailureHint(m);
      if (hint) out += `  hint: ${hint}\n`;
      out += "\n";
      continue;
    }
    if (m.slots.length === 0 && !(m.isProxy && m.note)) out += "  no slots\n";
    for (const s of m.slots) {
      const desc = s.description ? ` "${s.description}"` : "";
      if (!s.token) {
        out += `  Slot ${s.slotId}${desc}: no token\n`;
        continue;
      }
      if (!s.token.initialized) {
        out += `  Slot ${s.slotId}${desc}: token not initialised\n`;
        continue;
      }
      out += `  Slot ${s.slotId}${desc}: token "${s.token.label}"\n`;
      out += formatToken(sortTokenObjects(s.token), "    ", now, m.objectsListed !== false);
    }
    out += "\n";
  }
  return out;
}
