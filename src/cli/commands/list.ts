import type { Command } from "commander";
import { logLevelFrom } from "../credential-options";

interface ListFlags {
  pkcs11Lib: string[];
  allModules: boolean;
  login: boolean;
  tokensOnly: boolean;
  json: boolean;
  debug: boolean;
  logLevel?: "error" | "warn" | "info" | "debug";
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * `ra-agent list [URI]` (alias `keys`): every PKCS#11 module (registered with
 * p11-kit, known to native-config and installed, or named with --pkcs11-lib),
 * its slots and tokens, and each token's keys and certificates, each with the
 * exact `pkcs11:` URI to paste into --certificate / --private-key. A human
 * listing by default, `--json` for scripts.
 */
export function registerList(program: Command): void {
  program
    .command("list")
    .alias("keys")
    .description("list PKCS#11 modules, slots, tokens, keys and certificates, each with its exact pkcs11: URI")
    .argument("[uri]", "only tokens (and keys/certificates) that this pkcs11: URI matches")
    .option("--pkcs11-lib <path>", "module to list; repeat for several (default: every module registered with p11-kit or known and installed)", collect, [])
    .option("--all-modules", "with --pkcs11-lib, also list every registered and known module", false)
    .option("--login", "log in to tokens that need it, to show private keys (PIN from the URI's pin-source, RA_AGENT_PIN_FILE, RA_AGENT_PIN, or a prompt)", false)
    .option("--tokens-only", "list modules, slots and tokens, not keys and certificates", false)
    .option("--json", "print JSON for scripts", false)
    .option("--debug", "print debug output to stderr", false)
    .action(async (uri: string | undefined, flags: ListFlags) => {
      const level = logLevelFrom(flags);
      if (level) (await import("../../log/logger")).configureLogger({ level });
      const { listInventory } = await import("../list-inventory");
      const { formatInventory, inventoryToJson } = await import("../format-inventory");
      const { closeAllPkcs11 } = await import("../../signer/pkcs11/index");
      try {
        const inventory = await listInventory({ uri, modulePaths: flags.pkcs11Lib, allModules: flags.allModules, login: flags.login, tokensOnly: flags.tokensOnly });
        process.stdout.write(flags.json ? JSON.stringify(inventoryToJson(inventory.modules), null, 2) + "\n" : formatInventory(inventory.modules) + inventory.notes.map((n) => n + "\n").join(""));
        if (inventory.failure) throw inventory.failure;
      } finally {
        await closeAllPkcs11();
      }
    });
}
