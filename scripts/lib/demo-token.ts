/** What the demo runs on: a key source plus the environment its PKCS#11 module needs. */
export interface DemoToken {
  /** One line telling the user what the key is and where it lives. */
  kind: string;
  modulePath: string;
  certificateUri: string;
  /** PEM file of the CA the emulator must trust. */
  caPath: string;
  /** Environment for every process that loads the module (PIN file, module config). */
  env: Record<string, string>;
  /** Stops what was started for this token (daemons); absent when nothing runs. */
  stop?: () => Promise<void>;
}
