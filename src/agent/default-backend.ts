/**
 * The agent's real per-profile operations: signers from `pkcs11:` URIs (with the
 * profile's PIN source) or files, CreateSession through one pooled client per
 * transport setting, key listing through the PKCS#11 enumeration API.
 * Heavy modules are loaded on first use, and every PKCS#11 call runs on one
 * worker thread ({@link ../signer/pkcs11/thread/pkcs11-thread!Pkcs11Thread}): the
 * main thread never loads pkcs11js, so a slow token cannot stall the event loop.
 */
import { readFile } from "node:fs/promises";
import { RaError, usageError } from "../errors";
import type { AwsCredentials } from "../credentials/credentials";
import type { Signer } from "../signer/signer";
import type { KeyListing, ProfileBackend, TokenStatus } from "./backend";
import type { ProfileConfig } from "./config";

type Pkcs11Api = typeof import("../signer/pkcs11/pin");

/** How long `GET /v1/status` waits for a look at a token before it shows the last known state. */
const STATUS_PROBE_WAIT_MS = 1_000;
type Pkcs11Thread = import("../signer/pkcs11/thread/pkcs11-thread").Pkcs11Thread;
type RolesAnywhereApi = typeof import("../rolesanywhere/index");

function isPkcs11(v: string | undefined): v is string {
  return v !== undefined && /^pkcs11:/i.test(v);
}

/** The PKCS#8 password of a file key: from flags, a file, or an environment variable. */
async function pkcs8Password(p: ProfileConfig): Promise<string | undefined> {
  if (p.pkcs8Password !== undefined) return p.pkcs8Password;
  if (p.pkcs8PasswordFile) {
    try {
      return (await readFile(p.pkcs8PasswordFile, "utf8")).replace(/\r?\n$/, "");
    } catch (e) {
      throw usageError("UNREADABLE_PASSWORD_FILE", `profile "${p.name}": cannot read pkcs8PasswordFile ${p.pkcs8PasswordFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, "check the path and permissions", e);
    }
  }
  if (p.pkcs8PasswordEnv) return process.env[p.pkcs8PasswordEnv];
  return undefined;
}

/**
 * PIN sources of a profile, in order: `pinFile` (read at each login, so a fixed
 * file is picked up after a reload) or `pinEnv`; then the URIs' pin-source /
 * pin-value; then RA_AGENT_PIN_FILE / RA_AGENT_PIN; a terminal prompt only for
 * `serve`/`update` run interactively, never in the agent.
 */
function pinProviderFor(p11: Pkcs11Api, uriApi: typeof import("../uri/pkcs11-uri"), p: ProfileConfig): import("../signer/pkcs11/pin").PinProvider {
  const providers: import("../signer/pkcs11/pin").PinProvider[] = [];
  if (p.pinFile) {
    const file = p.pinFile;
    providers.push({ getPin: async (req) => (req.kind === "user" ? { pin: await p11.readPinFile(file, `profile "${p.name}" pinFile`), source: `pinFile ${file}`, interactive: false } : undefined) });
  }
  if (p.pinEnv) {
    const name = p.pinEnv;
    providers.push({
      getPin: async (req) => {
        if (req.kind !== "user") return undefined;
        const value = process.env[name];
        if (value === undefined || value === "") throw new RaError("pin", "PIN_ENV_UNSET", `profile "${p.name}": the environment variable ${name} (pinEnv) is not set`, { hint: `set ${name} in the agent's environment (systemd: Environment= or LoadCredential= with pinFile)` });
        return { pin: value, source: `pinEnv ${name}`, interactive: false };
      },
    });
  }
  for (const text of [p.privateKey, p.certificate]) {
    if (isPkcs11(text)) providers.push(p11.uriPinProvider(uriApi.parsePkcs11Uri(text)));
  }
  providers.push(p11.envPinProvider());
  if (p.interactivePin) providers.push(p11.ttyPinProvider());
  return p11.chainPinProviders(...providers);
}

/** Creates the real backend. */
export function createDefaultBackend(): ProfileBackend {
  let p11: Pkcs11Api | undefined;
  const loadP11 = async (): Promise<Pkcs11Api> => (p11 ??= await import("../signer/pkcs11/pin"));
  let thread: Pkcs11Thread | undefined;
  const pkcs11Thread = async (): Promise<Pkcs11Thread> => (thread ??= new (await import("../signer/pkcs11/thread/pkcs11-thread")).Pkcs11Thread());
  let ra: RolesAnywhereApi | undefined;
  const clients = new Map<string, import("../rolesanywhere/index").CreateSessionClient>();

  const clientFor = async (p: ProfileConfig) => {
    ra ??= await import("../rolesanywhere/index");
    const key = JSON.stringify([p.verifySsl, p.withProxy, p.timeoutMs]);
    let client = clients.get(key);
    if (!client) {
      client = new ra.CreateSessionClient({ noVerifySsl: !p.verifySsl, withProxy: p.withProxy, timeoutMs: p.timeoutMs });
      clients.set(key, client);
    }
    return client;
  };

  return {
    async openSigner(p: ProfileConfig): Promise<Signer> {
      const { openSigner } = await import("../signer/open-signer");
      const onToken = isPkcs11(p.certificate) || isPkcs11(p.privateKey);
      return openSigner({
        certificate: p.certificate,
        privateKey: p.privateKey,
        intermediates: p.intermediates,
        pkcs11Lib: p.pkcs11Lib,
        pkcs8Password: onToken ? undefined : await pkcs8Password(p),
        reusePin: p.reusePin,
        pin: onToken ? pinProviderFor(await loadP11(), await import("../uri/pkcs11-uri"), p) : undefined,
        pkcs11Thread: onToken ? await pkcs11Thread() : undefined,
      });
    },

    async createSession(signer: Signer, p: ProfileConfig): Promise<AwsCredentials> {
      const client = await clientFor(p);
      const result = await client.createSession({
        signer,
        trustAnchorArn: p.trustAnchorArn,
        profileArn: p.profileArn,
        roleArn: p.roleArn,
        region: p.region,
        endpoint: p.endpoint,
        durationSeconds: p.durationSeconds,
        roleSessionName: p.roleSessionName,
      });
      return result.credentials;
    },

    async listKeys(p: ProfileConfig, signer: Signer | undefined): Promise<KeyListing[] | undefined> {
      const uri = isPkcs11(p.certificate) ? p.certificate : isPkcs11(p.privateKey) ? p.privateKey : undefined;
      if (!uri) return undefined;
      // No login here: listing must never spend a PIN try. Private keys show
      // once the profile's signer has logged in (login state is per token).
      const modules = await (await pkcs11Thread()).list({ modulePaths: p.pkcs11Lib ? [p.pkcs11Lib] : undefined, uri });
      const out: KeyListing[] = [];
      for (const m of modules) {
        for (const slot of m.slots ?? []) {
          const t = slot.token;
          if (!t) continue;
          for (const k of t.keys) out.push({ uri: k.uri, type: "private-key", label: k.label, id: k.idHex, keyType: k.keyType });
          for (const c of t.certificates) {
            out.push({ uri: c.uri, type: "certificate", label: c.label, id: c.idHex, keyType: c.keyType, subject: c.subject, issuer: c.issuer, serial: c.serialDecimal, notAfter: c.notAfter, sha256Fingerprint: c.sha256Fingerprint });
          }
        }
      }
      if (signer && !out.some((k) => k.type === "private-key")) {
        const keyUri = (signer as { keyUri?: string }).keyUri;
        if (keyUri) out.push({ uri: keyUri, type: "private-key", keyType: signer.keyType });
      }
      return out;
    },

    async tokenStatus(signer: Signer): Promise<TokenStatus | undefined> {
      // A look at the token (C_GetSlotInfo/C_GetTokenInfo on the PKCS#11 thread): a pulled card shows as
      // absent at once. The thread may be busy (a login, a PIN prompt, a hung reader): after
      // STATUS_PROBE_WAIT_MS the last known state is shown instead, marked stale.
      type Status = import("../signer/pkcs11/signer").Pkcs11SignerStatus;
      const p11 = signer as { probe?: () => Promise<Status>; lastStatus?: Status; laneSignatures?: number };
      if (!p11.probe) return undefined;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), STATUS_PROBE_WAIT_MS)));
      const fresh = await Promise.race([p11.probe().catch(() => undefined), late]).finally(() => clearTimeout(timer));
      const s = fresh ?? p11.lastStatus;
      if (!s) return undefined;
      return {
        present: s.present,
        loggedIn: s.loggedIn,
        label: s.token.label,
        serial: s.token.serial,
        manufacturer: s.token.manufacturer,
        model: s.token.model,
        uri: s.token.uri,
        module: s.token.module,
        flags: s.token.flags,
        pinState: s.token.pinState,
        keyUri: s.keyUri,
        loginAttempts: s.loginAttempts,
        recoveries: s.recoveries,
        sessions: s.sessions,
        // Made on the signing lane, under concurrent load (docs/pkcs11.md); `signatures` above counts the profile's all.
        ...(p11.laneSignatures !== undefined ? { laneSignatures: p11.laneSignatures } : {}),
        lastError: s.lastError,
        ...(fresh ? {} : { stale: true }),
      };
    },

    async close(): Promise<void> {
      await Promise.all([...clients.values()].map((c) => c.close().catch(() => undefined)));
      clients.clear();
      await thread?.close();
      thread = undefined;
    },
  };
}
