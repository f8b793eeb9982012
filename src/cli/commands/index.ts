import type { Command } from "commander";
import { registerVersion } from "./version";

/** Registers every ra-agent command on `program`. */
export function registerCommands(program: Command): void {
  registerVersion(program);
}
