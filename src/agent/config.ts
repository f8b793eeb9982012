/**
 * The agent's configuration file (JSON): profiles and the optional loopback
 * IMDSv2/ECS endpoint. Validated completely at load; every error names the file,
 * the field (`profiles[1].roleArn`) and the fix. The format is documented with an
 * example in docs/agent.md.
 */
import { readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { RaError, usageError } from "../errors";

/** One credentials profile served by the agent. */
export interface ProfileConfig {
  /** Name used in `/v1/credentials/{name}` and `credential-process --profile`. */
  name: string;
  /** Certificate file (PEM/DER/PKCS#12) or `pkcs11:` URI. */
  certificate?: string;
  /** Private key file or `pkcs11:` URI. */
  privateKey?: string;
  /** PEM bundle of intermediate CA certificates. */
  intermediates?: string;
  /** PKCS#11 module path (default p11-kit-proxy). */
  pkcs11Lib?: string;
  /** File holding the token user PIN (one line). Must not be readable or writable by group or others. */
  pinFile?: string;
  /** Environment variable holding the token user PIN. */
  pinEnv?: string;
  /** File holding the password of an encrypted PKCS#8/PKCS#12 key file. */
  pkcs8PasswordFile?: string;
  /** Environment variable holding that password. */
  pkcs8PasswordEnv?: string;
  /** Reuse the user PIN for always-authenticate keys. */
  reusePin: boolean;
  trustAnchorArn: string;
  profileArn: string;
  roleArn: string;
  region?: string;
  endpoint?: string;
  /** 900-43200; default 3600. */
  durationSeconds: number;
  roleSessionName?: string;
  /** Verify the endpoint's TLS certificate (default true). */
  verifySsl: boolean;
  /** Use HTTPS_PROXY / NO_PROXY for CreateSession. */
  withProxy: boolean;
  /** Allow `POST /v1/sign/{profile}` (SigV4-X509 strings to sign only). Default false. */
  allowSigning: boolean;
  /** Fetch credentials at start and keep them refreshed even when idle. Default false. */
  keepWarm: boolean;
  /** CreateSession timeout in milliseconds (default 10000). */
  timeoutMs: number;
  /**
   * The PKCS#8 password itself: only for profiles built from command-line flags
   * (`serve`, `update`); never read from a config file.
   */
  pkcs8Password?: string;
  /** Allow a PIN prompt on the terminal (`serve`/`update` in a terminal); never in the agent. */
  interactivePin?: boolean;
}

/** The loopback IMDSv2 / ECS endpoint run inside the agent. */
export interface ServeConfig {
  /** Profile whose credentials are served. */
  profile: string;
  /** TCP port on loopback; default 9911, 0 = any free port. */
  port: number;
  /** Loopback address to bind: 127.0.0.1 (default) or ::1. */
  host: string;
  /** Accepted for aws_signing_helper compatibility (see docs: no effect on loopback). */
  hopLimit: number;
  /** Serve the IMDSv2 paths (default true). */
  imds: boolean;
  /** When set, serve the ECS container-credentials path, with its token written to this file (0600). */
  ecsTokenFile?: string;
}

/** The whole configuration. */
export interface AgentConfig {
  /** Where the file was read from. */
  source: string;
  /** Socket path from the file (`--socket` wins). */
  socket?: string;
  profiles: ProfileConfig[];
  serve?: ServeConfig;
}

const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const TRUST_ANCHOR_ARN = /^arn:aws[a-z-]*:rolesanywhere:[a-z0-9-]+:\d{12}:trust-anchor\/[A-Za-z0-9-]+$/;
const PROFILE_ARN = /^arn:aws[a-z-]*:rolesanywhere:[a-z0-9-]+:\d{12}:profile\/[A-Za-z0-9-]+$/;
const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@\/-]{1,512}$/;
const REGION = /^[a-z]{2}(-[a-z0-9]+)+-\d$/;
const ROLE_SESSION_NAME = /^[\w+=,.@-]{2,64}$/;

const PROFILE_FIELDS = new Set([
  "name", "certificate", "privateKey", "intermediates", "pkcs11Lib", "pinFile", "pinEnv", "pkcs8PasswordFile", "pkcs8PasswordEnv",
  "reusePin", "trustAnchorArn", "profileArn", "roleArn", "region", "endpoint", "durationSeconds", "roleSessionName", "verifySsl",
  "withProxy", "allowSigning", "keepWarm", "timeoutMs",
]);
const SERVE_FIELDS = new Set(["profile", "port", "host", "hopLimit", "imds", "ecsTokenFile"]);
const TOP_FIELDS = new Set(["$schema", "version", "socket", "profiles", "serve"]);

/** Fields that hold secrets directly; refused so that secrets live in files or the environment. */
const REFUSED_SECRET_FIELDS: Record<string, string> = {
  pin: "pinFile or pinEnv",
  pinValue: "pinFile or pinEnv",
  userPin: "pinFile or pinEnv",
  pkcs8Password: "pkcs8PasswordFile or pkcs8PasswordEnv",
  password: "pkcs8PasswordFile or pkcs8PasswordEnv",
};

/** Collects validation problems so that a user sees all of them at once. */
class Problems {
  readonly list: string[] = [];
  add(field: string, message: string): void {
    this.list.push(`${field}: ${message}`);
  }
}

/** Options of {@link parseAgentConfig}. */
export interface ParseOptions {
  /** Environment for `${VAR}` expansion and `pinEnv` checks (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Check that referenced files exist and PIN files are private (default true). */
  checkFiles?: boolean;
}

/**
 * Reads and validates a config file.
 * @throws RaError `AGENT_CONFIG_UNREADABLE`, `AGENT_CONFIG_SYNTAX`, `AGENT_CONFIG_INVALID` (listing every problem).
 */
export function loadAgentConfig(path: string, options: ParseOptions = {}): AgentConfig {
  const file = resolve(path);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw usageError("AGENT_CONFIG_UNREADABLE", `cannot read the agent config ${file}: ${code === "ENOENT" ? "no such file" : code ?? (e as Error).message}`, "pass --config with the path of a JSON config file (see docs/agent.md)", e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw usageError("AGENT_CONFIG_SYNTAX", `the agent config ${file} is not valid JSON: ${(e as Error).message}`, "fix the JSON syntax (comments and trailing commas are not allowed)", e);
  }
  return parseAgentConfig(json, file, options);
}

/**
 * Validates a parsed config object. Relative paths are taken relative to the
 * config file's directory; `${VAR}` in paths is replaced from the environment
 * (for example `${CREDENTIALS_DIRECTORY}/pin` with systemd's LoadCredential=).
 * @throws RaError `AGENT_CONFIG_INVALID` listing every problem.
 */
export function parseAgentConfig(json: unknown, source: string, options: ParseOptions = {}): AgentConfig {
  const env = options.env ?? process.env;
  const checkFiles = options.checkFiles ?? true;
  const baseDir = dirname(resolve(source));
  const p = new Problems();
  const config: AgentConfig = { source, profiles: [] };

  if (!isObject(json)) {
    throw invalid(source, ["(top level): must be a JSON object with a \"profiles\" array"]);
  }
  for (const key of Object.keys(json)) {
    if (!TOP_FIELDS.has(key)) p.add(key, `unknown field${suggest(key, TOP_FIELDS)}`);
  }
  if (json.version !== undefined && json.version !== 1) p.add("version", "must be 1");
  if (json.socket !== undefined) config.socket = path(p, "socket", json.socket, baseDir, env, false);

  const profiles = json.profiles;
  if (!Array.isArray(profiles) || profiles.length === 0) {
    p.add("profiles", "must be a non-empty array of profile objects");
  } else {
    const seen = new Set<string>();
    profiles.forEach((raw, i) => {
      const profile = parseProfile(p, `profiles[${i}]`, raw, baseDir, env, checkFiles);
      if (!profile) return;
      if (seen.has(profile.name)) p.add(`profiles[${i}].name`, `duplicate profile name "${profile.name}"`);
      seen.add(profile.name);
      config.profiles.push(profile);
    });
  }

  if (json.serve !== undefined) {
    config.serve = parseServe(p, json.serve, baseDir, env);
    if (config.serve && !config.profiles.some((x) => x.name === config.serve!.profile)) {
      p.add("serve.profile", `no profile is named "${config.serve.profile}"`);
    }
  }

  if (p.list.length > 0) throw invalid(source, p.list);
  return config;
}

function parseProfile(p: Problems, at: string, raw: unknown, baseDir: string, env: NodeJS.ProcessEnv, checkFiles: boolean): ProfileConfig | undefined {
  if (!isObject(raw)) {
    p.add(at, "must be an object");
    return undefined;
  }
  for (const key of Object.keys(raw)) {
    if (key in REFUSED_SECRET_FIELDS) p.add(`${at}.${key}`, `secrets are not written in the config; use ${REFUSED_SECRET_FIELDS[key]}`);
    else if (!PROFILE_FIELDS.has(key)) p.add(`${at}.${key}`, `unknown field${suggest(key, PROFILE_FIELDS)}`);
  }
  const name = str(p, `${at}.name`, raw.name, true);
  if (name !== undefined && !PROFILE_NAME.test(name)) p.add(`${at}.name`, `"${name}" is not a valid profile name (letters, digits, ".", "_", "-"; at most 64)`);

  const certificate = keySource(p, `${at}.certificate`, raw.certificate, baseDir, env, checkFiles);
  const privateKey = keySource(p, `${at}.privateKey`, raw.privateKey, baseDir, env, checkFiles);
  if (raw.certificate === undefined && raw.privateKey === undefined) {
    p.add(`${at}.certificate`, "a certificate (file or pkcs11: URI) is required; privateKey is optional for pkcs11: URIs");
  }
  const isP11 = isPkcs11(certificate) || isPkcs11(privateKey);
  if (!isP11 && certificate !== undefined && privateKey === undefined) p.add(`${at}.privateKey`, "required when the certificate is a file");
  if (isPkcs11(certificate) && privateKey !== undefined && !isPkcs11(privateKey)) p.add(`${at}.privateKey`, "must be a pkcs11: URI when the certificate is one");

  const profile: ProfileConfig = {
    name: name ?? `#${at}`,
    certificate,
    privateKey,
    intermediates: optionalPath(p, `${at}.intermediates`, raw.intermediates, baseDir, env, checkFiles),
    pkcs11Lib: optionalPath(p, `${at}.pkcs11Lib`, raw.pkcs11Lib, baseDir, env, checkFiles),
    pinFile: optionalPath(p, `${at}.pinFile`, raw.pinFile, baseDir, env, false),
    pinEnv: envName(p, `${at}.pinEnv`, raw.pinEnv, env),
    pkcs8PasswordFile: optionalPath(p, `${at}.pkcs8PasswordFile`, raw.pkcs8PasswordFile, baseDir, env, false),
    pkcs8PasswordEnv: envName(p, `${at}.pkcs8PasswordEnv`, raw.pkcs8PasswordEnv, env),
    reusePin: bool(p, `${at}.reusePin`, raw.reusePin, false),
    trustAnchorArn: arn(p, `${at}.trustAnchorArn`, raw.trustAnchorArn, TRUST_ANCHOR_ARN, "arn:aws:rolesanywhere:REGION:ACCOUNT:trust-anchor/ID"),
    profileArn: arn(p, `${at}.profileArn`, raw.profileArn, PROFILE_ARN, "arn:aws:rolesanywhere:REGION:ACCOUNT:profile/ID"),
    roleArn: arn(p, `${at}.roleArn`, raw.roleArn, ROLE_ARN, "arn:aws:iam::ACCOUNT:role/NAME"),
    region: str(p, `${at}.region`, raw.region, false),
    endpoint: str(p, `${at}.endpoint`, raw.endpoint, false),
    durationSeconds: int(p, `${at}.durationSeconds`, raw.durationSeconds, 3600, 900, 43200),
    roleSessionName: str(p, `${at}.roleSessionName`, raw.roleSessionName, false),
    verifySsl: bool(p, `${at}.verifySsl`, raw.verifySsl, true),
    withProxy: bool(p, `${at}.withProxy`, raw.withProxy, false),
    allowSigning: bool(p, `${at}.allowSigning`, raw.allowSigning, false),
    keepWarm: bool(p, `${at}.keepWarm`, raw.keepWarm, false),
    timeoutMs: int(p, `${at}.timeoutMs`, raw.timeoutMs, 10_000, 100, 300_000),
  };
  if (profile.region !== undefined && !REGION.test(profile.region)) p.add(`${at}.region`, `"${profile.region}" is not a region name such as eu-west-1`);
  if (profile.endpoint !== undefined) {
    try {
      const u = new URL(profile.endpoint);
      if (u.protocol !== "https:" && u.protocol !== "http:") p.add(`${at}.endpoint`, "must be an http(s) URL");
    } catch {
      p.add(`${at}.endpoint`, `"${profile.endpoint}" is not a URL`);
    }
  }
  if (profile.roleSessionName !== undefined && !ROLE_SESSION_NAME.test(profile.roleSessionName)) {
    p.add(`${at}.roleSessionName`, "must be 2-64 characters from letters, digits and +=,.@_-");
  }
  if (profile.pinFile !== undefined && profile.pinEnv !== undefined) p.add(`${at}.pinEnv`, "give pinFile or pinEnv, not both");
  if ((profile.pinFile !== undefined || profile.pinEnv !== undefined) && !isP11) p.add(`${at}.pinFile`, "a PIN only applies to pkcs11: keys");
  if (profile.pkcs8PasswordFile !== undefined && profile.pkcs8PasswordEnv !== undefined) p.add(`${at}.pkcs8PasswordEnv`, "give pkcs8PasswordFile or pkcs8PasswordEnv, not both");
  if (checkFiles && profile.pinFile !== undefined) checkSecretFile(p, `${at}.pinFile`, profile.pinFile);
  if (checkFiles && profile.pkcs8PasswordFile !== undefined) checkSecretFile(p, `${at}.pkcs8PasswordFile`, profile.pkcs8PasswordFile);
  return profile;
}

function parseServe(p: Problems, raw: unknown, baseDir: string, env: NodeJS.ProcessEnv): ServeConfig | undefined {
  if (!isObject(raw)) {
    p.add("serve", "must be an object");
    return undefined;
  }
  for (const key of Object.keys(raw)) if (!SERVE_FIELDS.has(key)) p.add(`serve.${key}`, `unknown field${suggest(key, SERVE_FIELDS)}`);
  const host = str(p, "serve.host", raw.host, false) ?? "127.0.0.1";
  if (host !== "127.0.0.1" && host !== "::1" && host !== "localhost") p.add("serve.host", "must be a loopback address (127.0.0.1 or ::1): the endpoint hands out credentials without authentication");
  const serve: ServeConfig = {
    profile: str(p, "serve.profile", raw.profile, true) ?? "",
    port: int(p, "serve.port", raw.port, 9911, 0, 65535),
    host,
    hopLimit: int(p, "serve.hopLimit", raw.hopLimit, 64, 1, 255),
    imds: bool(p, "serve.imds", raw.imds, true),
    ecsTokenFile: optionalPath(p, "serve.ecsTokenFile", raw.ecsTokenFile, baseDir, env, false),
  };
  if (!serve.imds && serve.ecsTokenFile === undefined) p.add("serve", "serves nothing: set imds to true or give ecsTokenFile");
  return serve;
}

function checkSecretFile(p: Problems, field: string, file: string): void {
  try {
    const st = statSync(file);
    if (!st.isFile()) p.add(field, `${file} is not a regular file`);
    else if (st.mode & 0o066) p.add(field, `${file} is readable or writable by group or others (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 ${file} (systemd LoadCredential= files are fine)`);
  } catch (e) {
    p.add(field, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isPkcs11(v: string | undefined): boolean {
  return v !== undefined && /^pkcs11:/i.test(v);
}

function str(p: Problems, field: string, v: unknown, required: boolean): string | undefined {
  if (v === undefined || v === null) {
    if (required) p.add(field, "is required");
    return undefined;
  }
  if (typeof v !== "string" || v.trim() === "") {
    p.add(field, "must be a non-empty string");
    return undefined;
  }
  return v;
}

function bool(p: Problems, field: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== "boolean") {
    p.add(field, "must be true or false");
    return dflt;
  }
  return v;
}

function int(p: Problems, field: string, v: unknown, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    p.add(field, `must be a whole number from ${min} to ${max}`);
    return dflt;
  }
  return v;
}

function arn(p: Problems, field: string, v: unknown, re: RegExp, shape: string): string {
  const s = str(p, field, v, true);
  if (s !== undefined && !re.test(s)) p.add(field, `"${s}" is not of the form ${shape}`);
  return s ?? "";
}

function envName(p: Problems, field: string, v: unknown, env: NodeJS.ProcessEnv): string | undefined {
  const s = str(p, field, v, false);
  if (s === undefined) return undefined;
  if (!ENV_NAME.test(s)) p.add(field, `"${s}" is not an environment variable name`);
  else if (env[s] === undefined) p.add(field, `the environment variable ${s} is not set`);
  return s;
}

/** Expands `${VAR}` and resolves relative to the config directory. */
function path(p: Problems, field: string, v: unknown, baseDir: string, env: NodeJS.ProcessEnv, checkExists: boolean): string | undefined {
  const s = str(p, field, v, false);
  if (s === undefined) return undefined;
  let missing: string | undefined;
  const expanded = s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const value = env[name];
    if (value === undefined) missing = name;
    return value ?? "";
  });
  if (missing) {
    p.add(field, `uses \${${missing}}, which is not set in the environment`);
    return undefined;
  }
  const full = isAbsolute(expanded) ? expanded : resolve(baseDir, expanded);
  if (checkExists) {
    try {
      statSync(full);
    } catch (e) {
      p.add(field, `${full}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  return full;
}

function optionalPath(p: Problems, field: string, v: unknown, baseDir: string, env: NodeJS.ProcessEnv, checkExists: boolean): string | undefined {
  return v === undefined ? undefined : path(p, field, v, baseDir, env, checkExists);
}

function keySource(p: Problems, field: string, v: unknown, baseDir: string, env: NodeJS.ProcessEnv, checkFiles: boolean): string | undefined {
  if (typeof v === "string" && isPkcs11(v)) return v;
  return v === undefined ? undefined : path(p, field, v, baseDir, env, checkFiles);
}

function suggest(key: string, known: Set<string>): string {
  const lower = key.toLowerCase();
  for (const k of known) if (k.toLowerCase() === lower) return ` (did you mean "${k}"?)`;
  return ` (known fields: ${[...known].filter((k) => !k.startsWith("$")).join(", ")})`;
}

function invalid(source: string, problems: string[]): RaError {
  return usageError(
    "AGENT_CONFIG_INVALID",
    `the agent config ${source} is invalid:\n  - ${problems.join("\n  - ")}`,
    "fix the fields listed above (the format is described in docs/agent.md)",
  );
}

/** True when a pkcs11: URI carries the PIN inline (`pin-value=`), which the agent tolerates but warns about. */
export function hasInlinePin(uri: string | undefined): boolean {
  return uri !== undefined && /[?&]pin-value=/i.test(uri);
}
