/**
 * The modules registered with p11-kit (its `*.module` files), for resolving a
 * URI's `module-name` and for `list`. Reading the files is enough: p11-kit's
 * proxy loads the same list.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, isAbsolute, join } from "node:path";

/** One p11-kit module file. */
export interface P11KitModule {
  /** Module name: the file name without `.module`. */
  name: string;
  /** The `module:` line, resolved to a path when relative. */
  path: string;
  /** The module file itself. */
  configFile: string;
  /** `disable-in:` / `enable-in:` mention the proxy: p11-kit-proxy skips it. */
  skippedByProxy: boolean;
  /** `critical: yes`. */
  critical: boolean;
}

/** Directories p11-kit reads module files from, system first. */
export function p11KitModuleDirs(): string[] {
  const dirs = ["/usr/share/p11-kit/modules", "/etc/pkcs11/modules", "/usr/local/share/p11-kit/modules", "/usr/local/etc/pkcs11/modules", "/opt/homebrew/share/p11-kit/modules", "/opt/homebrew/etc/pkcs11/modules"];
  // p11-kit ignores per-user files for root (platform notes): list them only for other users.
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    const xdg = process.env.XDG_CONFIG_HOME || join(homedir(), ".config");
    dirs.push(join(xdg, "pkcs11", "modules"), join(homedir(), ".pkcs11", "modules"));
  }
  return dirs;
}

/** Where relative `module:` names live: p11-kit's `$libdir/pkcs11`, guessed from the proxy's location. */
function relativeModuleDirs(proxyPath: string | undefined): string[] {
  const dirs = new Set<string>();
  if (proxyPath && isAbsolute(proxyPath)) dirs.add(join(dirname(proxyPath), "pkcs11"));
  for (const lib of ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib", "/opt/homebrew/lib"]) {
    dirs.add(join(lib, "pkcs11"));
    dirs.add(lib);
  }
  return [...dirs];
}

function parseModuleFile(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*([A-Za-z0-9_-]+)\s*:\s*(.*?)\s*$/.exec(line);
    if (m && !line.trimStart().startsWith("#")) fields[m[1].toLowerCase()] = m[2];
  }
  return fields;
}

/**
 * Every module registered with p11-kit on this machine; later directories
 * override earlier ones with the same module name, as p11-kit does.
 */
export function listP11KitModules(proxyPath?: string): P11KitModule[] {
  const byName = new Map<string, P11KitModule>();
  for (const dir of p11KitModuleDirs()) {
    let files: string[];
    try {
      files = readdirSync(dir).filter((f) => f.endsWith(".module"));
    } catch {
      continue;
    }
    for (const file of files.sort()) {
      const configFile = join(dir, file);
      let fields: Record<string, string>;
      try {
        fields = parseModuleFile(readFileSync(configFile, "utf8"));
      } catch {
        continue;
      }
      if (!fields.module) continue;
      let path = fields.module;
      if (!isAbsolute(path)) path = relativeModuleDirs(proxyPath).map((d) => join(d, fields.module)).find((p) => existsSync(p)) ?? fields.module;
      const proxyRule = `${fields["disable-in"] ?? ""} ${fields["enable-in"] ?? ""}`;
      byName.set(file.slice(0, -".module".length), {
        name: file.slice(0, -".module".length),
        path,
        configFile,
        skippedByProxy: /\bp11-kit-proxy\b/.test(fields["disable-in"] ?? "") || (fields["enable-in"] !== undefined && !/\bp11-kit-proxy\b/.test(proxyRule)),
        critical: /^(yes|true)$/i.test(fields.critical ?? ""),
      });
    }
  }
  return [...byName.values()];
}
