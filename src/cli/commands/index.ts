import type { Command } from "commander";
import { registerVersion } from "./version";
import { registerCredentialProcess } from "./credential-process";
import { registerSignString } from "./sign-string";
import { registerReadCertificateData } from "./read-certificate-data";
import { registerEmulator } from "./emulator";
import { registerAgent } from "./agent";
import { registerServe } from "./serve";
import { registerUpdate } from "./update";
import { registerList } from "./list";

/** Registers every ra-agent command on `program`. */
export function registerCommands(program: Command): void {
  registerCredentialProcess(program);
  registerSignString(program);
  registerReadCertificateData(program);
  registerVersion(program);
  registerEmulator(program);
  registerAgent(program);
  registerServe(program);
  registerUpdate(program);
  registerList(program);
}
