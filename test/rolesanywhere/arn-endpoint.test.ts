import { test } from "node:test";
import assert from "node:assert/strict";
import {
  isLoopbackHost,
  parseEndpointUrl,
  parseProfileArn,
  parseRoleArn,
  parseSessionArns,
  parseTrustAnchorArn,
  partitionForRegion,
  resolveEndpoint,
  resolveRegion,
} from "../../src/rolesanywhere";

const TA = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8f9a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b";
const PROFILE = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const ROLE = "arn:aws:iam::123456789012:role/RaAgentTest";

test("trust anchor, profile and role ARNs parse into their parts", () => {
  const ta = parseTrustAnchorArn(TA);
  assert.deepEqual(
    { partition: ta.partition, service: ta.service, region: ta.region, accountId: ta.accountId, resourceType: ta.resourceType, resourceId: ta.resourceId },
    { partition: "aws", service: "rolesanywhere", region: "us-east-1", accountId: "123456789012", resourceType: "trust-anchor", resourceId: "8f9a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b" },
  );
  assert.equal(parseProfileArn(PROFILE).resourceType, "profile");
  const role = parseRoleArn("arn:aws-us-gov:iam::123456789012:role/path/to/My+Role=,.@-_");
  assert.equal(role.partition, "aws-us-gov");
  assert.equal(role.resourceId, "path/to/My+Role=,.@-_");
  assert.equal(parseTrustAnchorArn("arn:aws-cn:rolesanywhere:cn-north-1:123456789012:trust-anchor/abc").region, "cn-north-1");
});

test("malformed ARNs fail with INVALID_ARN naming the flag and the problem", () => {
  const cases: Array<[() => unknown, RegExp]> = [
    [() => parseTrustAnchorArn(""), /--trust-anchor-arn is missing/],
    [() => parseTrustAnchorArn("not-an-arn"), /six/],
    [() => parseTrustAnchorArn(" " + TA), /spaces/],
    [() => parseTrustAnchorArn(PROFILE), /names a profile, not a trust anchor/],
    [() => parseProfileArn(TA), /names a trust anchor, not a profile/],
    [() => parseTrustAnchorArn("arn:aws:iam:us-east-1:123456789012:trust-anchor/x"), /service is "iam"/],
    [() => parseTrustAnchorArn("arn:aws:rolesanywhere::123456789012:trust-anchor/x"), /region is missing/],
    [() => parseTrustAnchorArn("arn:aws:rolesanywhere:useast1:123456789012:trust-anchor/x"), /not a region/],
    [() => parseTrustAnchorArn("arn:aws:rolesanywhere:us-east-1:1234:trust-anchor/x"), /not 12 digits/],
    [() => parseTrustAnchorArn("arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/"), /id is missing/],
    [() => parseTrustAnchorArn("arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/a b"), /not a valid id/],
    [() => parseTrustAnchorArn("arn:gcp:rolesanywhere:us-east-1:123456789012:trust-anchor/x"), /unknown partition/],
    [() => parseRoleArn("arn:aws:iam:us-east-1:123456789012:role/x"), /IAM ARNs have no region/],
    [() => parseRoleArn("arn:aws:iam::123456789012:user/x"), /not a role/],
    [() => parseRoleArn("arn:aws:iam::123456789012:role/"), /role name is missing/],
    [() => parseRoleArn("arn:aws:sts::123456789012:role/x"), /service is "sts"/],
  ];
  for (const [fn, message] of cases) {
    assert.throws(fn, (e: unknown) => {
      const err = e as { code: string; kind: string; message: string; hint?: string };
      assert.equal(err.code, "INVALID_ARN");
      assert.equal(err.kind, "usage");
      assert.match(err.message, message);
      assert.match(err.hint ?? "", /arn:aws:/);
      return true;
    });
  }
});

test("the trust anchor and profile must share a region (as the reference helper); partitions must match", () => {
  assert.equal(parseSessionArns(TA, PROFILE, ROLE).trustAnchor.region, "us-east-1");
  assert.throws(() => parseSessionArns(TA, PROFILE.replace("us-east-1", "eu-west-1"), ROLE), { code: "ARN_REGION_MISMATCH" });
  assert.throws(() => parseSessionArns(TA, PROFILE, ROLE.replace("arn:aws:", "arn:aws-cn:")), { code: "ARN_PARTITION_MISMATCH" });
});

test("endpoints from the region, per partition, with FIPS and dual-stack variants", () => {
  const cases: Array<[string, { useFips?: boolean; useDualStack?: boolean }, string]> = [
    ["us-east-1", {}, "https://rolesanywhere.us-east-1.amazonaws.com/"],
    ["eu-central-2", {}, "https://rolesanywhere.eu-central-2.amazonaws.com/"],
    ["cn-north-1", {}, "https://rolesanywhere.cn-north-1.amazonaws.com.cn/"],
    ["us-gov-west-1", {}, "https://rolesanywhere.us-gov-west-1.amazonaws.com/"],
    ["us-east-1", { useFips: true }, "https://rolesanywhere-fips.us-east-1.amazonaws.com/"],
    ["us-gov-east-1", { useFips: true }, "https://rolesanywhere-fips.us-gov-east-1.amazonaws.com/"],
    ["us-east-1", { useDualStack: true }, "https://rolesanywhere.us-east-1.api.aws/"],
    ["us-east-1", { useFips: true, useDualStack: true }, "https://rolesanywhere-fips.us-east-1.api.aws/"],
    ["cn-northwest-1", { useDualStack: true }, "https://rolesanywhere.cn-northwest-1.api.amazonwebservices.com.cn/"],
  ];
  for (const [region, variant, expected] of cases) assert.equal(resolveEndpoint({ region, ...variant }).href, expected, `${region} ${JSON.stringify(variant)}`);
  assert.equal(partitionForRegion("us-gov-west-1")?.id, "aws-us-gov");
  assert.equal(partitionForRegion("us-iso-east-1")?.id, "aws-iso");
  assert.throws(() => resolveEndpoint({ region: "mars-north-1" }), { code: "UNKNOWN_REGION" });
  assert.throws(() => resolveEndpoint({ region: "us-iso-east-1", useDualStack: true }), { code: "UNSUPPORTED_ENDPOINT_VARIANT" });
});

test("the region defaults to the trust anchor's; --region wins", () => {
  assert.equal(resolveRegion(undefined, "eu-west-1"), "eu-west-1");
  assert.equal(resolveRegion("", "eu-west-1"), "eu-west-1");
  assert.equal(resolveRegion("us-east-2", "eu-west-1"), "us-east-2");
});

test("--endpoint: https anywhere, plain http only to loopback", () => {
  assert.equal(resolveEndpoint({ region: "us-east-1", endpoint: "https://ra.example.com:8443/base" }).href, "https://ra.example.com:8443/base");
  for (const ok of ["http://127.0.0.1:9000", "http://127.8.9.10", "http://localhost:1234", "http://LOCALHOST", "http://[::1]:8080"]) {
    assert.equal(parseEndpointUrl(ok).protocol, "http:", ok);
  }
  for (const bad of ["http://10.0.0.1:9000", "http://example.com", "http://128.0.0.1", "http://[::2]", "http://localhost.example.com", "http://127.0.0.1.nip.io"]) {
    assert.throws(() => parseEndpointUrl(bad), { code: "INSECURE_ENDPOINT" }, bad);
  }
  assert.throws(() => parseEndpointUrl("ftp://127.0.0.1"), { code: "INVALID_ENDPOINT" });
  assert.throws(() => parseEndpointUrl("rolesanywhere.us-east-1.amazonaws.com"), { code: "INVALID_ENDPOINT" });
  assert.throws(() => parseEndpointUrl("https://user:pw@example.com"), { code: "INVALID_ENDPOINT" });
  assert.throws(() => parseEndpointUrl("https://example.com/?x=1"), { code: "INVALID_ENDPOINT" });
  assert.throws(() => resolveEndpoint({ region: "us-east-1", endpoint: "https://example.com", useFips: true }), { code: "UNSUPPORTED_ENDPOINT_VARIANT" });
  assert.equal(isLoopbackHost("[::1]"), true);
  assert.equal(isLoopbackHost("::ffff:127.0.0.1"), false);
});
