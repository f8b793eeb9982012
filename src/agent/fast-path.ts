/**
 * The fastest `ra-agent credential-process --profile NAME [--socket PATH]`:
 * called by the launcher before the CLI (commander and every command module)
 * is loaded, it asks the agent and prints the answer. Anything it does not
 * handle by itself (other flags, no agent running) it leaves to the full CLI,
 * which behaves the same, only slower to start.
 *
 * Import graph: node:net, node:os, node:path and the dependency-free errors module.
 */
import { fetchCredentialsFromAgent } from "./client";
import { RaError } from "../errors";

/** The only flags the fast path understands. */
interface FastArgs {
  profile: string;
  socket?: string;
}

/** Parses `credential-process --profile NAME [--socket PATH]` (also `--flag=value`); undefined for anything else. */
export function parseFastArgs(args: readonly string[]): FastArgs | undefined {
  if (args[0] !== "credential-process") return undefined;
  const out: Partial<FastArgs> = {};
  for (let i = 1; i < args.length; i++) {
    const a = args[i];
    const eq = a.indexOf("=");
    const name = eq === -1 ? a : a.slice(0, eq);
    if (name !== "--profile" && name !== "--socket") return undefined;
    const value = eq === -1 ? args[++i] : a.slice(eq + 1);
    if (value === undefined || value === "" || value.startsWith("--")) return undefined;
    if (name === "--profile") {
      if (out.profile !== undefined) return undefined;
      out.profile = value;
    } else {
      if (out.socket !== undefined) return undefined;
      out.socket = value;
    }
  }
  return out.profile ? (out as FastArgs) : undefined;
}

/**
 * Runs the fast path for `argv` (as `process.argv`).
 * @returns the exit status when it handled the command, or undefined when the
 *   full CLI must run (unknown flags, or no agent listening).
 */
export async function runFastCredentialProcess(argv: readonly string[]): Promise<number | undefined> {
  const args = parseFastArgs(argv.slice(2));
  if (!args) return undefined;
  try {
    const output = await fetchCredentialsFromAgent({ socketPath: args.socket, profile: args.profile });
    if (!output) return undefined;
    process.stdout.write(JSON.stringify(output) + "\n");
    return 0;
  } catch (e) {
    if (e instanceof RaError) {
      // Same format and status as the CLI's reportError.
      process.stderr.write(`ra-agent: error: ${e.describe()}\n`);
      return e.exitCode;
    }
    return undefined;
  }
}
