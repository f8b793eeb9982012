/**
 * Where CreateSession goes: the regional endpoint from the partition data the
 * AWS SDKs use (the reference helper's endpoint rules), or an `--endpoint` override.
 */
import { isIP } from "node:net";
import { usageError } from "../errors";

/** One AWS partition's endpoint facts (from the SDKs' partitions.json, as data). */
export interface Partition {
  id: string;
  /** Regions of this partition. */
  regionRegex: RegExp;
  dnsSuffix: string;
  dualStackDnsSuffix: string;
  supportsFips: boolean;
  supportsDualStack: boolean;
}

/** The partitions the reference helper's endpoint rules know, in match order. */
export const PARTITIONS: readonly Partition[] = [
  { id: "aws", regionRegex: /^(us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+$/, dnsSuffix: "amazonaws.com", dualStackDnsSuffix: "api.aws", supportsFips: true, supportsDualStack: true },
  { id: "aws-cn", regionRegex: /^cn-\w+-\d+$/, dnsSuffix: "amazonaws.com.cn", dualStackDnsSuffix: "api.amazonwebservices.com.cn", supportsFips: true, supportsDualStack: true },
  { id: "aws-us-gov", regionRegex: /^us-gov-\w+-\d+$/, dnsSuffix: "amazonaws.com", dualStackDnsSuffix: "api.aws", supportsFips: true, supportsDualStack: true },
  { id: "aws-iso", regionRegex: /^us-iso-\w+-\d+$/, dnsSuffix: "c2s.ic.gov", dualStackDnsSuffix: "c2s.ic.gov", supportsFips: true, supportsDualStack: false },
  { id: "aws-iso-b", regionRegex: /^us-isob-\w+-\d+$/, dnsSuffix: "sc2s.sgov.gov", dualStackDnsSuffix: "sc2s.sgov.gov", supportsFips: true, supportsDualStack: false },
  { id: "aws-iso-e", regionRegex: /^eu-isoe-\w+-\d+$/, dnsSuffix: "cloud.adc-e.uk", dualStackDnsSuffix: "cloud.adc-e.uk", supportsFips: true, supportsDualStack: false },
  { id: "aws-iso-f", regionRegex: /^us-isof-\w+-\d+$/, dnsSuffix: "csp.hci.ic.gov", dualStackDnsSuffix: "csp.hci.ic.gov", supportsFips: true, supportsDualStack: false },
];

/**
 * The partition of a region. `us-gov-*` and the ISO regions are tested before
 * `aws`, whose pattern would otherwise not exclude them all.
 */
export function partitionForRegion(region: string): Partition | undefined {
  const specific = PARTITIONS.filter((p) => p.id !== "aws").find((p) => p.regionRegex.test(region));
  return specific ?? PARTITIONS.find((p) => p.id === "aws" && p.regionRegex.test(region));
}

/** True for 127.0.0.0/8, ::1 and `localhost`: the only hosts plain http may reach. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || host === "0:0:0:0:0:0:0:1";
  return false;
}

/**
 * Checks an `--endpoint` URL: http(s) only, no credentials, query or fragment,
 * and plain http only to a loopback host (credentials would cross the network in clear).
 * @throws RaError `INVALID_ENDPOINT`, `INSECURE_ENDPOINT`
 */
export function parseEndpointUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw usageError("INVALID_ENDPOINT", `--endpoint "${text}" is not a URL`, "pass a URL such as https://rolesanywhere.us-east-1.amazonaws.com");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw usageError("INVALID_ENDPOINT", `--endpoint "${text}" uses ${url.protocol}; only https: (and http: for loopback) work`, "pass an https:// URL");
  }
  if (url.username || url.password) throw usageError("INVALID_ENDPOINT", "--endpoint must not carry a user name or password", "remove the user:password@ part");
  if (url.search || url.hash) throw usageError("INVALID_ENDPOINT", `--endpoint "${text}" has a query or fragment`, "pass only scheme, host, port and optional base path");
  if (url.protocol === "http:" && !isLoopbackHost(url.hostname)) {
    throw usageError(
      "INSECURE_ENDPOINT",
      `--endpoint ${url.origin} is plain http to a host that is not loopback; the credentials would cross the network unencrypted`,
      "use https://, or plain http only to 127.0.0.1, ::1 or localhost (e.g. the local emulator)",
    );
  }
  return url;
}

/** Options of {@link resolveEndpoint}. */
export interface EndpointOptions {
  /** Region of the call (the trust anchor's by default; see {@link resolveRegion}). */
  region: string;
  /** `--endpoint`: used as is (after {@link parseEndpointUrl}); FIPS/dual-stack must then be off. */
  endpoint?: string;
  /** The FIPS endpoint (`AWS_USE_FIPS_ENDPOINT=true` in the AWS SDKs). */
  useFips?: boolean;
  /** The dual-stack (IPv6) endpoint (`AWS_USE_DUALSTACK_ENDPOINT=true`). */
  useDualStack?: boolean;
}

/**
 * The CreateSession base URL: `--endpoint`, else `https://rolesanywhere[-fips].{region}.{suffix}`.
 * @throws RaError `INVALID_ENDPOINT`, `INSECURE_ENDPOINT`, `UNKNOWN_REGION`, `UNSUPPORTED_ENDPOINT_VARIANT`
 */
export function resolveEndpoint(options: EndpointOptions): URL {
  const { region, useFips = false, useDualStack = false } = options;
  if (options.endpoint !== undefined) {
    if (useFips || useDualStack) {
      throw usageError("UNSUPPORTED_ENDPOINT_VARIANT", "a custom --endpoint cannot be combined with the FIPS or dual-stack endpoint", "drop --endpoint, or turn FIPS/dual-stack off");
    }
    return parseEndpointUrl(options.endpoint);
  }
  const partition = partitionForRegion(region);
  if (!partition) {
    throw usageError("UNKNOWN_REGION", `no Roles Anywhere endpoint is known for region "${region}"`, "check --region (or the trust anchor ARN's region), or pass --endpoint");
  }
  if (useFips && !partition.supportsFips) throw usageError("UNSUPPORTED_ENDPOINT_VARIANT", `partition ${partition.id} has no FIPS endpoint`);
  if (useDualStack && !partition.supportsDualStack) throw usageError("UNSUPPORTED_ENDPOINT_VARIANT", `partition ${partition.id} has no dual-stack endpoint`);
  const name = useFips ? "rolesanywhere-fips" : "rolesanywhere";
  const suffix = useDualStack ? partition.dualStackDnsSuffix : partition.dnsSuffix;
  return new URL(`https://${name}.${region}.${suffix}`);
}

/**
 * The signing region: `--region` when given, else the trust anchor's region (as the reference).
 */
export function resolveRegion(explicitRegion: string | undefined, trustAnchorRegion: string): string {
  return explicitRegion && explicitRegion !== "" ? explicitRegion : trustAnchorRegion;
}
