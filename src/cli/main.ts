/**
 * CLI entry point. Commands only parse flags and call the library; stdout
 * carries only results, logs and errors go to stderr. This is the one place
 * that turns errors into exit codes.
 *
 * Command modules must load heavy dependencies (pkcs11js, @peculiar/x509,
 * undici) lazily inside their actions, so that fast paths stay fast.
 */
import { Command, CommanderError } from "commander";
import { RaError } from "../errors";
import { registerCommands } from "./commands";

/** Builds the commander program with every command registered. */
export function buildProgram(): Command {
  const program = new Command("ra-agent")
    .description("Hardware-backed signing agent for AWS IAM Roles Anywhere (PKCS#11: HSMs, smart cards, TPMs)")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), writeOut: (s) => process.stdout.write(s) });
  registerCommands(program);
  return program;
}

/** Formats an error for the terminal and returns the exit status for it. */
export function reportError(e: unknown): number {
  if (e instanceof CommanderError) {
    // commander already printed its message (or help/version output).
    return e.exitCode === 0 ? 0 : 2;
  }
  if (e instanceof RaError) {
    process.stderr.write(`ra-agent: error: ${e.describe()}\n`);
    return e.exitCode;
  }
  const err = e as Error;
  process.stderr.write(`ra-agent: internal error: ${err?.stack ?? String(e)}\n`);
  return 1;
}

/** Runs the CLI with `argv` (as in `process.argv`) and resolves to the exit status. */
export async function runCli(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (e) {
    return reportError(e);
  }
}

if (require.main === module) {
  runCli(process.argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.exitCode = reportError(e);
    },
  );
}
