/**
 * The local IAM Roles Anywhere endpoint (emulator) with its STS endpoint:
 * start it in-process with {@link startEmulator}, or from the CLI with
 * `ra-agent emulator`. See docs/emulator.md.
 */
export {
  startEmulator,
  emulatorStartupLine,
  type EmulatorOptions,
  type RunningEmulator,
  type EmulatorTrustAnchorInfo,
  type EmulatorProfileInfo,
} from "./server";
export {
  buildEmulatorConfig,
  loadEmulatorConfigFile,
  parseEmulatorConfigJson,
  resolveEmulatorConfig,
  defaultRoleArn,
  trustAnchorNameFromFile,
  DEFAULT_ACCOUNT_ID,
  DEFAULT_REGION,
  DEFAULT_ROLE_NAME,
  type EmulatorConfig,
  type TrustAnchorSpec,
  type ProfileSpec,
  type SimpleEmulatorSetup,
  type ResolvedEmulatorConfig,
} from "./config";
export type { IssuedSession } from "./credential-store";
export type { CreateSessionResponse } from "./create-session";
