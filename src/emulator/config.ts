/**
 * The emulator's set-up: trust anchors (CA bundles and their CRLs), profiles
 * (role lists, session duration cap, whether a role session name is accepted),
 * region, account, ports. Three ways in: {@link buildEmulatorConfig} (CA PEMs +
 * role ARNs, what `--ca`/`--role-arn` do), {@link loadEmulatorConfigFile} (the
 * `--config` JSON), or an {@link EmulatorConfig} object built by hand.
 * {@link resolveEmulatorConfig} validates any of them and parses certificates.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { readFileSync } from "node:fs";
import { basename, dirname, extname, resolve } from "node:path";
import { usageError } from "../errors";
import { parseCertificate, type CertificateInfo } from "../x509/certificate";
import { parsePem } from "../x509/pem";
import { isRolesAnywhereArn, parseArn, PARTITIONS, parseRoleArn, rolesAnywhereArn, stableUuid } from "./arn";

/** Region used in ARNs and expected in the SigV4 scope unless configured. */
export const DEFAULT_REGION = "us-east-1";
/** Account id used in ARNs unless configured. */
export const DEFAULT_ACCOUNT_ID = "123456789012";
/** Name of the role the emulator offers when none is configured. */
export const DEFAULT_ROLE_NAME = "ra-agent-emulator";
/** Session duration cap of a profile that sets none (the service's default). */
export const DEFAULT_PROFILE_DURATION_SECONDS = 3600;
/** How far `X-Amz-Date` may be from the emulator's clock (the service allows 5 minutes). */
export const DEFAULT_MAX_CLOCK_SKEW_SECONDS = 300;
/** Largest request body accepted (a CreateSession body is a few hundred bytes). */
export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

/** A trust anchor: one CA bundle, optionally with imported CRLs. */
export interface TrustAnchorSpec {
  /** Display name; also seeds the ARN's id. Default `trust-anchor-N`. */
  name?: string;
  /** Fixed ARN (`arn:aws:rolesanywhere:REGION:ACCOUNT:trust-anchor/UUID`); derived from name and CAs when absent. */
  arn?: string;
  /** A disabled trust anchor refuses every request. Default true. */
  enabled?: boolean;
  /** CA certificates: PEM text (any number of blocks) or DER bytes. */
  certificates: Array<string | Uint8Array>;
  /** CRLs (PEM or DER) checked for every certificate on a path to this anchor. */
  crls?: Array<string | Uint8Array>;
}

/** A profile: which roles may be assumed and how. */
export interface ProfileSpec {
  name?: string;
  /** Fixed ARN (`arn:aws:rolesanywhere:REGION:ACCOUNT:profile/UUID`); derived from the name when absent. */
  arn?: string;
  /** A disabled profile refuses every request. Default true. */
  enabled?: boolean;
  /** IAM role ARNs this profile may hand out. */
  roleArns: string[];
  /** Upper bound for the session duration, 900-43200. Default 3600. */
  durationSeconds?: number;
  /** Whether callers may choose the role session name. Default false. */
  acceptRoleSessionName?: boolean;
}

/** Everything the emulator needs; only `trustAnchors` is required. */
export interface EmulatorConfig {
  region?: string;
  accountId?: string;
  /** ARN partition, `aws` by default. */
  partition?: string;
  /** Address both endpoints listen on. Default 127.0.0.1. */
  host?: string;
  /** Roles Anywhere endpoint port; 0 (default) picks a free one. */
  port?: number;
  /** STS endpoint port; 0 (default) picks a free one. */
  stsPort?: number;
  maxClockSkewSeconds?: number;
  maxBodyBytes?: number;
  trustAnchors: TrustAnchorSpec[];
  /** Default: one profile named `default` with the default role. */
  profiles?: ProfileSpec[];
}

/** A validated trust anchor with parsed certificates and CRLs. */
export interface ResolvedTrustAnchor {
  name: string;
  arn: string;
  enabled: boolean;
  certificates: CertificateInfo[];
  crls: x509.X509Crl[];
}

/** A validated profile. */
export interface ResolvedProfile {
  name: string;
  arn: string;
  enabled: boolean;
  roleArns: string[];
  durationSeconds: number;
  acceptRoleSessionName: boolean;
}

/** A validated configuration, every default filled in. */
export interface ResolvedEmulatorConfig {
  region: string;
  accountId: string;
  partition: string;
  host: string;
  port: number;
  stsPort: number;
  maxClockSkewSeconds: number;
  maxBodyBytes: number;
  trustAnchors: ResolvedTrustAnchor[];
  profiles: ResolvedProfile[];
}

function configError(message: string, hint = "see docs/emulator.md for the configuration format"): Error {
  return usageError("EMULATOR_CONFIG_INVALID", message, hint);
}

function checkPort(value: unknown, what: string): number {
  if (value === undefined) return 0;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 65535) {
    throw configError(`${what} must be an integer from 0 to 65535, got ${JSON.stringify(value)}`);
  }
  return value;
}

function checkDuration(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 900 || value > 43200) {
    throw configError(`${what} must be an integer from 900 to 43200 seconds, got ${JSON.stringify(value)}`);
  }
  return value;
}

function toDerList(input: string | Uint8Array, label: "CERTIFICATE" | "X509 CRL", what: string): Buffer[] {
  // Bytes read from a file may be PEM text too.
  if (typeof input !== "string" && Buffer.from(input).includes("-----BEGIN")) input = Buffer.from(input).toString("latin1");
  if (typeof input === "string") {
    // OpenSSL writes "X509 CRL"; some tools (e.g. @peculiar/x509) write "CRL".
    const aliases = label === "CERTIFICATE" ? ["CERTIFICATE", "X509 CERTIFICATE"] : ["X509 CRL", "CRL"];
    const blocks = parsePem(input).filter((b) => aliases.includes(b.label));
    if (blocks.length === 0) throw configError(`${what} holds no PEM "${label}" block`, `give PEM text with -----BEGIN ${label}----- blocks, or DER bytes`);
    return blocks.map((b) => b.der);
  }
  return [Buffer.from(input)];
}

function resolveTrustAnchor(spec: TrustAnchorSpec, index: number, base: { partition: string; region: string; accountId: string }): ResolvedTrustAnchor {
  const name = spec.name ?? `trust-anchor-${index + 1}`;
  const what = `trust anchor "${name}"`;
  if (!Array.isArray(spec.certificates) || spec.certificates.length === 0) throw configError(`${what} has no CA certificate`);
  const certificates: CertificateInfo[] = [];
  for (const input of spec.certificates) {
    for (const der of toDerList(input, "CERTIFICATE", `${what} certificates`)) {
      let info: CertificateInfo;
      try {
        info = parseCertificate(der);
      } catch (e) {
        throw configError(`${what}: ${(e as Error).message}`);
      }
      if (!info.x509.ca) {
        throw configError(`${what}: certificate "${info.subject}" is not a CA (basicConstraints cA is not true)`, "a trust anchor holds the CA that issued your certificates, not the end-entity certificate");
      }
      certificates.push(info);
    }
  }
  const crls: x509.X509Crl[] = [];
  for (const input of spec.crls ?? []) {
    for (const der of toDerList(input, "X509 CRL", `${what} CRLs`)) {
      try {
        crls.push(new x509.X509Crl(new Uint8Array(der)));
      } catch (e) {
        throw configError(`${what}: a CRL does not parse: ${(e as Error).message}`, "give a PEM (-----BEGIN X509 CRL-----) or DER CRL");
      }
    }
  }
  const fingerprints = certificates.map((c) => c.sha256Fingerprint).sort().join(",");
  const arn = spec.arn ?? rolesAnywhereArn(base.partition, base.region, base.accountId, "trust-anchor", stableUuid(`trust-anchor|${base.accountId}|${base.region}|${name}|${fingerprints}`));
  checkOwnArn(arn, "trust-anchor", what, base);
  return { name, arn, enabled: spec.enabled ?? true, certificates, crls };
}

function checkOwnArn(arn: string, type: "trust-anchor" | "profile", what: string, base: { partition: string; region: string; accountId: string }): void {
  if (!isRolesAnywhereArn(arn, type)) {
    throw configError(`${what}: arn ${JSON.stringify(arn)} is not a Roles Anywhere ${type} ARN`, `use arn:${base.partition}:rolesanywhere:${base.region}:${base.accountId}:${type}/<uuid>, or leave it out`);
  }
  const p = parseArn(arn)!;
  if (p.partition !== base.partition || p.region !== base.region || p.accountId !== base.accountId) {
    throw configError(`${what}: arn ${arn} is not in partition ${base.partition}, region ${base.region}, account ${base.accountId}`, "make the ARN match the configured partition, region and accountId");
  }
}

function resolveProfile(spec: ProfileSpec, index: number, base: { partition: string; region: string; accountId: string }): ResolvedProfile {
  const name = spec.name ?? (index === 0 ? "default" : `profile-${index + 1}`);
  const what = `profile "${name}"`;
  if (!Array.isArray(spec.roleArns) || spec.roleArns.length === 0) throw configError(`${what} has no roleArns`);
  for (const roleArn of spec.roleArns) {
    if (typeof roleArn !== "string" || !parseRoleArn(roleArn)) {
      throw configError(`${what}: ${JSON.stringify(roleArn)} is not an IAM role ARN`, `use arn:${base.partition}:iam::${base.accountId}:role/NAME`);
    }
  }
  const arn = spec.arn ?? rolesAnywhereArn(base.partition, base.region, base.accountId, "profile", stableUuid(`profile|${base.accountId}|${base.region}|${name}`));
  checkOwnArn(arn, "profile", what, base);
  return {
    name,
    arn,
    enabled: spec.enabled ?? true,
    roleArns: [...spec.roleArns],
    durationSeconds: spec.durationSeconds === undefined ? DEFAULT_PROFILE_DURATION_SECONDS : checkDuration(spec.durationSeconds, `${what} durationSeconds`),
    acceptRoleSessionName: spec.acceptRoleSessionName ?? false,
  };
}

/** The role the emulator offers when none is configured. */
export function defaultRoleArn(accountId = DEFAULT_ACCOUNT_ID, partition = "aws"): string {
  return `arn:${partition}:iam::${accountId}:role/${DEFAULT_ROLE_NAME}`;
}

/**
 * Validates a configuration and fills in defaults.
 * @throws RaError `EMULATOR_CONFIG_INVALID` naming the bad field.
 */
export function resolveEmulatorConfig(config: EmulatorConfig): ResolvedEmulatorConfig {
  const partition = config.partition ?? "aws";
  const region = config.region ?? DEFAULT_REGION;
  const accountId = config.accountId ?? DEFAULT_ACCOUNT_ID;
  if (!PARTITIONS.includes(partition)) throw configError(`partition ${JSON.stringify(partition)} is not an AWS partition`, `use one of ${PARTITIONS.join(", ")}`);
  if (!/^[a-z]{2}(-[a-z]+)+-\d+$/.test(region)) throw configError(`region ${JSON.stringify(region)} is not an AWS region name`, "use a region such as us-east-1");
  if (!/^\d{12}$/.test(accountId)) throw configError(`accountId ${JSON.stringify(accountId)} is not 12 digits`);
  const base = { partition, region, accountId };
  if (!Array.isArray(config.trustAnchors) || config.trustAnchors.length === 0) {
    throw configError("no trust anchor is configured", "give at least one CA with --ca FILE, or trustAnchors in --config");
  }
  const trustAnchors = config.trustAnchors.map((t, i) => resolveTrustAnchor(t, i, base));
  const profileSpecs = config.profiles && config.profiles.length > 0 ? config.profiles : [{ roleArns: [defaultRoleArn(accountId, partition)] }];
  const profiles = profileSpecs.map((p, i) => resolveProfile(p, i, base));
  for (const list of [trustAnchors, profiles] as Array<Array<{ name: string; arn: string }>>) {
    const seen = new Set<string>();
    for (const item of list) {
      for (const key of [`name:${item.name}`, `arn:${item.arn}`]) {
        if (seen.has(key)) throw configError(`two entries have the same ${key.replace(":", " ")}`);
        seen.add(key);
      }
    }
  }
  const skew = config.maxClockSkewSeconds ?? DEFAULT_MAX_CLOCK_SKEW_SECONDS;
  if (!Number.isInteger(skew) || skew < 0) throw configError(`maxClockSkewSeconds must be a non-negative integer`);
  const maxBody = config.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  if (!Number.isInteger(maxBody) || maxBody < 1024) throw configError(`maxBodyBytes must be an integer of at least 1024`);
  return {
    ...base,
    host: config.host ?? "127.0.0.1",
    port: checkPort(config.port, "port"),
    stsPort: checkPort(config.stsPort, "stsPort"),
    maxClockSkewSeconds: skew,
    maxBodyBytes: maxBody,
    trustAnchors,
    profiles,
  };
}

/** Input of {@link buildEmulatorConfig}: what the `--ca` / `--role-arn` flags give. */
export interface SimpleEmulatorSetup {
  /** One entry per trust anchor: PEM text (a bundle may hold several CAs) or DER. */
  caCertificates: Array<string | Uint8Array>;
  /** Names for the trust anchors, in the same order (e.g. file names). */
  trustAnchorNames?: string[];
  /** Roles of the single profile; the default role when empty. */
  roleArns?: string[];
  /** CRLs, attached to every trust anchor. */
  crls?: Array<string | Uint8Array>;
  region?: string;
  accountId?: string;
  durationSeconds?: number;
  acceptRoleSessionName?: boolean;
  host?: string;
  port?: number;
  stsPort?: number;
}

/** Builds a configuration with one trust anchor per CA bundle and a single profile. */
export function buildEmulatorConfig(setup: SimpleEmulatorSetup): EmulatorConfig {
  const accountId = setup.accountId ?? DEFAULT_ACCOUNT_ID;
  return {
    region: setup.region,
    accountId: setup.accountId,
    host: setup.host,
    port: setup.port,
    stsPort: setup.stsPort,
    trustAnchors: setup.caCertificates.map((ca, i) => ({ name: setup.trustAnchorNames?.[i], certificates: [ca], crls: setup.crls })),
    profiles: [
      {
        name: "default",
        roleArns: setup.roleArns && setup.roleArns.length > 0 ? setup.roleArns : [defaultRoleArn(accountId)],
        durationSeconds: setup.durationSeconds,
        acceptRoleSessionName: setup.acceptRoleSessionName,
      },
    ],
  };
}

/** A trust anchor name derived from a CA file name (`certs/my-ca.pem` → `my-ca`). */
export function trustAnchorNameFromFile(file: string): string {
  return basename(file, extname(file));
}

// ---- the --config JSON file ------------------------------------------------------------------

const TOP_KEYS = new Set(["region", "accountId", "partition", "host", "port", "stsPort", "maxClockSkewSeconds", "maxBodyBytes", "trustAnchors", "profiles"]);
const ANCHOR_KEYS = new Set(["name", "arn", "enabled", "certificateFiles", "certificatePem", "crlFiles", "crlPem"]);
const PROFILE_KEYS = new Set(["name", "arn", "enabled", "roleArns", "durationSeconds", "acceptRoleSessionName"]);

function checkKeys(obj: Record<string, unknown>, allowed: Set<string>, what: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.has(key)) throw configError(`${what}: unknown field ${JSON.stringify(key)}`, `allowed fields: ${[...allowed].join(", ")}`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function stringList(v: unknown, what: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string")) throw configError(`${what} must be a list of strings`);
  return v as string[];
}

function optionalType<T>(v: unknown, type: "string" | "number" | "boolean", what: string): T | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== type) throw configError(`${what} must be a ${type}`);
  return v as T;
}

function readConfigFile(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw usageError("EMULATOR_CONFIG_INVALID", `cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, "check the path (relative paths are relative to the config file)", e);
  }
}

/**
 * Parses the `--config` JSON document. File paths inside it are relative to `baseDir`.
 * @throws RaError `EMULATOR_CONFIG_INVALID` naming the bad field.
 */
export function parseEmulatorConfigJson(json: unknown, baseDir: string): EmulatorConfig {
  if (!isObject(json)) throw configError("the configuration must be a JSON object");
  checkKeys(json, TOP_KEYS, "configuration");
  if (!Array.isArray(json.trustAnchors)) throw configError("trustAnchors must be a list");
  const trustAnchors: TrustAnchorSpec[] = json.trustAnchors.map((t: unknown, i: number) => {
    const what = `trustAnchors[${i}]`;
    if (!isObject(t)) throw configError(`${what} must be an object`);
    checkKeys(t, ANCHOR_KEYS, what);
    const certificates: Array<string | Uint8Array> = stringList(t.certificateFiles, `${what}.certificateFiles`).map((f) => readConfigFile(resolve(baseDir, f), "CA certificate file"));
    const pem = optionalType<string>(t.certificatePem, "string", `${what}.certificatePem`);
    if (pem !== undefined) certificates.push(pem);
    const crls: Array<string | Uint8Array> = stringList(t.crlFiles, `${what}.crlFiles`).map((f) => readConfigFile(resolve(baseDir, f), "CRL file"));
    const crlPem = optionalType<string>(t.crlPem, "string", `${what}.crlPem`);
    if (crlPem !== undefined) crls.push(crlPem);
    return {
      name: optionalType<string>(t.name, "string", `${what}.name`),
      arn: optionalType<string>(t.arn, "string", `${what}.arn`),
      enabled: optionalType<boolean>(t.enabled, "boolean", `${what}.enabled`),
      certificates,
      crls,
    };
  });
  let profiles: ProfileSpec[] | undefined;
  if (json.profiles !== undefined) {
    if (!Array.isArray(json.profiles)) throw configError("profiles must be a list");
    profiles = json.profiles.map((p: unknown, i: number) => {
      const what = `profiles[${i}]`;
      if (!isObject(p)) throw configError(`${what} must be an object`);
      checkKeys(p, PROFILE_KEYS, what);
      return {
        name: optionalType<string>(p.name, "string", `${what}.name`),
        arn: optionalType<string>(p.arn, "string", `${what}.arn`),
        enabled: optionalType<boolean>(p.enabled, "boolean", `${what}.enabled`),
        roleArns: stringList(p.roleArns, `${what}.roleArns`),
        durationSeconds: optionalType<number>(p.durationSeconds, "number", `${what}.durationSeconds`),
        acceptRoleSessionName: optionalType<boolean>(p.acceptRoleSessionName, "boolean", `${what}.acceptRoleSessionName`),
      };
    });
  }
  return {
    region: optionalType<string>(json.region, "string", "region"),
    accountId: optionalType<string>(json.accountId, "string", "accountId"),
    partition: optionalType<string>(json.partition, "string", "partition"),
    host: optionalType<string>(json.host, "string", "host"),
    port: optionalType<number>(json.port, "number", "port"),
    stsPort: optionalType<number>(json.stsPort, "number", "stsPort"),
    maxClockSkewSeconds: optionalType<number>(json.maxClockSkewSeconds, "number", "maxClockSkewSeconds"),
    maxBodyBytes: optionalType<number>(json.maxBodyBytes, "number", "maxBodyBytes"),
    trustAnchors,
    profiles,
  };
}

/**
 * Reads and parses a `--config` JSON file.
 * @throws RaError `EMULATOR_CONFIG_INVALID` when it cannot be read, is not JSON, or has a bad field.
 */
export function loadEmulatorConfigFile(file: string): EmulatorConfig {
  const text = readConfigFile(file, "emulator configuration").toString("utf8");
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw configError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
  return parseEmulatorConfigJson(json, dirname(resolve(file)));
}
