/**
 * CreateSession over HTTP, signed by the independent Python signer
 * (test/support/independent-signer.py: its own canonicalization, openssl
 * signatures, http.client): correct requests get 201 with the service's JSON;
 * each rule, broken alone, gets the service's error.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startEmulator, type RunningEmulator } from "../../src/emulator";
import { amzDate, haveCommand, headerOf, independentlySign, sendSigned, tempDir, withHeader, type SignedRequest, type SignerSpec } from "./helpers";
import { arns, buildWorld, MAIN_PROFILE_CAP, PROFILE_DISABLED, PROFILE_MAIN, PROFILE_NAMED, PROFILE_UNKNOWN, ROLE_A, ROLE_B, ROLE_OUTSIDE, TA_DISABLED, TA_UNKNOWN, type World } from "./world";

const canRun = haveCommand("python3") && haveCommand("openssl", ["version"]);
if (!canRun && process.env.CI === "true") throw new Error("python3 and openssl are required on CI for the emulator tests");

interface Case {
  name: string;
  /** Leaf to sign with (a key of World.leaves); default `ec`. */
  leaf?: string;
  spec?: Partial<SignerSpec>;
  /** Change the request after signing. */
  tamper?: (s: SignedRequest, w: World) => SignedRequest;
  status: number;
  type: string;
  message: RegExp;
}

const minutes = (n: number) => n * 60_000;

const NEGATIVE: Case[] = [
  // SigV4-X509
  { name: "algorithm does not match the key type", leaf: "rsa", spec: { algorithm: "AWS4-X509-ECDSA-SHA256" }, status: 403, type: "AccessDeniedException", message: /does not match the certificate's RSA key/ },
  { name: "unknown algorithm", spec: { algorithm: "AWS4-X509-FOO-SHA256" }, status: 403, type: "AccessDeniedException", message: /Unsupported signing algorithm/ },
  { name: "serial in Credential= is not the certificate's", spec: { serial: "1234567" }, status: 403, type: "AccessDeniedException", message: /serial "1234567" is not the certificate's serial/ },
  { name: "serial in Credential= given in hex", tamper: (s) => withHeader(s, "Authorization", headerOf(s, "Authorization")!.replace(/Credential=\d+/, "Credential=0a1b")), status: 403, type: "AccessDeniedException", message: /is not the certificate's serial/ },
  { name: "scope date differs from X-Amz-Date", spec: { scopeDate: "20200101" }, status: 403, type: "AccessDeniedException", message: /scope date 20200101 does not match/ },
  { name: "scope region is not the endpoint's", spec: { region: "eu-west-1" }, status: 403, type: "AccessDeniedException", message: /region eu-west-1 is not this endpoint's region us-east-1/ },
  { name: "scope service is not rolesanywhere", spec: { service: "sts" }, status: 403, type: "AccessDeniedException", message: /service sts must be rolesanywhere/ },
  { name: "X-Amz-Date 10 minutes old", spec: { amzDate: amzDate(new Date(Date.now() - minutes(10))) }, status: 403, type: "AccessDeniedException", message: /more than 5 minutes from the server time/ },
  { name: "X-Amz-Date 10 minutes ahead", spec: { amzDate: amzDate(new Date(Date.now() + minutes(10))) }, status: 403, type: "AccessDeniedException", message: /more than 5 minutes/ },
  { name: "X-Amz-Date malformed", spec: { amzDate: "2024-01-15T08:30:00Z", scopeDate: "20240115" }, status: 403, type: "AccessDeniedException", message: /is not YYYYMMDDTHHMMSSZ/ },
  { name: "host not signed", spec: { omitSignedHeaders: ["host"] }, status: 403, type: "AccessDeniedException", message: /host must be among the SignedHeaders/ },
  { name: "x-amz-date not signed", spec: { omitSignedHeaders: ["x-amz-date"] }, status: 403, type: "AccessDeniedException", message: /x-amz-date must be among the SignedHeaders/ },
  { name: "x-amz-x509 not signed", spec: { omitSignedHeaders: ["x-amz-x509"] }, status: 403, type: "AccessDeniedException", message: /x-amz-x509 must be among the SignedHeaders/ },
  { name: "x-amz-x509-chain sent but not signed", leaf: "viaIntermediate", spec: { omitSignedHeaders: ["x-amz-x509-chain"] }, status: 403, type: "AccessDeniedException", message: /x-amz-x509-chain must be among the SignedHeaders/ },
  { name: "signature altered", tamper: (s) => withHeader(s, "Authorization", headerOf(s, "Authorization")!.replace(/Signature=([0-9a-f]{8})/, (_m, h: string) => `Signature=${h === "00000000" ? "11111111" : "00000000"}`)), status: 403, type: "AccessDeniedException", message: /signature does not verify.*canonical request the server computed/s },
  { name: "body changed after signing", tamper: (s) => ({ ...s, body: '{"durationSeconds":3601}' }), status: 403, type: "AccessDeniedException", message: /signature does not verify/ },
  { name: "query changed after signing", tamper: (s) => ({ ...s, target: s.target.replace("ra-test-a", "ra-test-b") }), status: 403, type: "AccessDeniedException", message: /signature does not verify/ },
  { name: "signed header changed after signing", tamper: (s) => withHeader(s, "Content-Type", "application/x-amz-json-1.1"), status: 403, type: "AccessDeniedException", message: /signature does not verify/ },
  // Same key type, other key: the P-384 leaf's key signs, the P-256 certificate is presented.
  { name: "signed by another key than the certificate's", spec: { privateKey: "EC384_KEY" }, status: 403, type: "AccessDeniedException", message: /signature does not verify with the certificate's public key/ },
  { name: "Authorization header missing", tamper: (s) => withHeader(s, "Authorization", undefined), status: 403, type: "AccessDeniedException", message: /Missing Authorization header/ },
  { name: "X-Amz-X509 header missing", tamper: (s) => withHeader(s, "X-Amz-X509", undefined), status: 403, type: "AccessDeniedException", message: /Missing X-Amz-X509/ },
  { name: "X-Amz-Date header missing", tamper: (s) => withHeader(s, "X-Amz-Date", undefined), status: 403, type: "AccessDeniedException", message: /Missing X-Amz-Date/ },
  // certificate path and leaf rules
  { name: "certificate from an untrusted CA", leaf: "untrusted", status: 403, type: "AccessDeniedException", message: /Untrusted signing certificate: no CA of the trust anchor issued/ },
  { name: "intermediate needed but no chain sent", leaf: "viaIntermediate", spec: { chain: [] }, status: 403, type: "AccessDeniedException", message: /Untrusted signing certificate/ },
  { name: "more than 5 chain certificates", leaf: "viaIntermediate", spec: { chain: "x".repeat(6).split("").map(() => "INTERMEDIATE") }, status: 400, type: "ValidationException", message: /holds 6 certificates; at most 5/ },
  { name: "leaf expired", leaf: "expired", status: 403, type: "AccessDeniedException", message: /signing certificate .* expired at/ },
  { name: "leaf not yet valid", leaf: "notYetValid", status: 403, type: "AccessDeniedException", message: /is not valid before/ },
  { name: "leaf is a CA", leaf: "isCa", status: 403, type: "AccessDeniedException", message: /is a CA \(basicConstraints cA=true\)/ },
  { name: "leaf is a CA without keyCertSign", leaf: "isCaNoCertSign", status: 403, type: "AccessDeniedException", message: /is a CA \(basicConstraints cA=true\)/ },
  { name: "leaf without keyUsage", leaf: "noKeyUsage", status: 403, type: "AccessDeniedException", message: /has no keyUsage extension/ },
  { name: "leaf keyUsage without digitalSignature", leaf: "noDigitalSignature", status: 403, type: "AccessDeniedException", message: /keyUsage lacks digitalSignature/ },
  { name: "leaf signed with SHA-1", leaf: "sha1", status: 403, type: "AccessDeniedException", message: /signed with SHA-1; SHA-256 or stronger/ },
  { name: "leaf is X.509 v1", leaf: "v1", status: 403, type: "AccessDeniedException", message: /is X.509 v1; v3 is required/ },
  { name: "leaf revoked by the trust anchor's CRL", leaf: "revoked", status: 403, type: "AccessDeniedException", message: /was revoked on/ },
  { name: "leaf on an unsupported curve (P-521)", leaf: "p521", status: 403, type: "AccessDeniedException", message: /curve P-521 is not supported/ },
  // trust anchor, profile, role, parameters
  { name: "unknown trust anchor", spec: { query: arns(ROLE_A, PROFILE_MAIN, TA_UNKNOWN) }, status: 404, type: "ResourceNotFoundException", message: /Trust anchor .* does not exist/ },
  { name: "disabled trust anchor", spec: { query: arns(ROLE_A, PROFILE_MAIN, TA_DISABLED) }, status: 403, type: "AccessDeniedException", message: /is disabled/ },
  { name: "unknown profile", spec: { query: arns(ROLE_A, PROFILE_UNKNOWN) }, status: 404, type: "ResourceNotFoundException", message: /Profile .* does not exist/ },
  { name: "disabled profile", spec: { query: arns(ROLE_A, PROFILE_DISABLED) }, status: 403, type: "AccessDeniedException", message: /Profile .* is disabled/ },
  { name: "role not in the profile", spec: { query: arns(ROLE_OUTSIDE) }, status: 403, type: "AccessDeniedException", message: /is not one of the roles of profile main/ },
  { name: "role ARN malformed", spec: { query: arns("arn:aws:iam::123456789012:user/bob") }, status: 400, type: "ValidationException", message: /roleArn .* is not an IAM role ARN/ },
  { name: "trust anchor ARN malformed", spec: { query: arns(ROLE_A, PROFILE_MAIN, "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/xyz") }, status: 400, type: "ValidationException", message: /is not a trust anchor ARN/ },
  { name: "profileArn missing", spec: { query: { trustAnchorArn: arns().trustAnchorArn, roleArn: ROLE_A } }, status: 400, type: "ValidationException", message: /profileArn is required/ },
  { name: "ARN differs between query and body", spec: { bodyParams: { roleArn: ROLE_B } }, status: 400, type: "ValidationException", message: /roleArn differs between the query string and the body/ },
  { name: "durationSeconds below 900", spec: { bodyParams: { durationSeconds: 899 } }, status: 400, type: "ValidationException", message: /durationSeconds must be an integer from 900 to 43200, got 899/ },
  { name: "durationSeconds above 43200", spec: { bodyParams: { durationSeconds: 43201 } }, status: 400, type: "ValidationException", message: /got 43201/ },
  { name: "durationSeconds not a number", spec: { bodyParams: { durationSeconds: "3600" } }, status: 400, type: "ValidationException", message: /got "3600"/ },
  { name: "roleSessionName on a profile that does not accept it", spec: { bodyParams: { durationSeconds: 900, roleSessionName: "chosen" } }, status: 403, type: "AccessDeniedException", message: /does not accept a roleSessionName/ },
  { name: "roleSessionName with invalid characters", spec: { query: arns(ROLE_A, PROFILE_NAMED), bodyParams: { roleSessionName: "has space" } }, status: 400, type: "ValidationException", message: /roleSessionName must be 2-64 characters/ },
  { name: "body is not JSON", spec: { rawBody: "durationSeconds=3600" }, status: 400, type: "ValidationException", message: /not valid JSON/ },
  { name: "body is a JSON array", spec: { rawBody: "[3600]" }, status: 400, type: "ValidationException", message: /must be a JSON object/ },
];

describe("CreateSession (independent signer)", { skip: canRun ? false : "python3 or openssl missing" }, () => {
  const tmp = tempDir();
  let world: World;
  let emu: RunningEmulator;
  const signed = new Map<string, SignedRequest>();
  const positive = new Map<string, SignedRequest>();

  before(async () => {
    world = await buildWorld(tmp.dir, true);
    emu = await startEmulator(world.config);
    const leafOf = (name = "ec") => (world.leaves as unknown as Record<string, { certificate: string; privateKey: string }>)[name];
    const specs: SignerSpec[] = NEGATIVE.map((c) => {
      const leaf = leafOf(c.leaf);
      const spec: SignerSpec = { endpoint: emu.endpoint, certificate: leaf.certificate, privateKey: leaf.privateKey, query: arns(), ...c.spec };
      if (spec.privateKey === "EC384_KEY") spec.privateKey = world.leaves.ec384!.privateKey;
      if (c.leaf === "viaIntermediate" && !c.spec?.chain) spec.chain = [world.intermediateFile];
      if (spec.chain) spec.chain = spec.chain.map((f) => (f === "INTERMEDIATE" ? world.intermediateFile : f));
      return spec;
    });
    const positiveSpecs: Array<[string, SignerSpec]> = [
      ["rsa-query", { endpoint: emu.endpoint, ...leafOf("rsa"), query: arns(), send: true }],
      ["ec-body", { endpoint: emu.endpoint, ...leafOf("ec"), query: {}, bodyParams: { ...arns(ROLE_B), durationSeconds: 900 }, send: true }],
      ["ec384", { endpoint: emu.endpoint, ...leafOf("ec384"), query: arns(), send: true }],
      ["chain", { endpoint: emu.endpoint, ...leafOf("viaIntermediate"), chain: [world.intermediateFile], query: arns(), send: true }],
      ["capped", { endpoint: emu.endpoint, ...leafOf("ec"), query: arns(), bodyParams: { durationSeconds: 43200 }, send: true }],
      ["named", { endpoint: emu.endpoint, ...leafOf("ec"), query: arns(ROLE_A, PROFILE_NAMED), bodyParams: { roleSessionName: "build-42@ci" }, send: true }],
      ["no-duration", { endpoint: emu.endpoint, ...leafOf("rsa"), query: arns(), bodyParams: {}, send: true }],
    ];
    const all = await independentlySign([...specs, ...positiveSpecs.map(([, s]) => s)]);
    NEGATIVE.forEach((c, i) => signed.set(c.name, all[i]));
    positiveSpecs.forEach(([name], i) => positive.set(name, all[NEGATIVE.length + i]));
  });

  after(async () => {
    await emu?.close();
    tmp.cleanup();
  });

  function created(name: string) {
    const r = positive.get(name)!.response!;
    assert.equal(r.status, 201, `${name}: ${r.body}`);
    assert.match(r.headers["Content-Type"] ?? r.headers["content-type"], /application\/json/);
    return JSON.parse(r.body) as {
      credentialSet: Array<{ assumedRoleUser: { arn: string; assumedRoleId: string }; credentials: { accessKeyId: string; secretAccessKey: string; sessionToken: string; expiration: string }; packedPolicySize: number; roleArn: string; sourceIdentity: string }>;
      subjectArn: string;
    };
  }

  it("accepts an RSA request with the ARNs in the query string and answers in the service's shape", () => {
    const body = created("rsa-query");
    assert.equal(body.credentialSet.length, 1);
    const set = body.credentialSet[0];
    assert.match(set.credentials.accessKeyId, /^ASIA[A-Z2-7]{16}$/);
    assert.equal(set.credentials.secretAccessKey.length, 40);
    assert.ok(set.credentials.sessionToken.length > 100);
    assert.match(set.credentials.expiration, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    assert.equal(set.roleArn, ROLE_A);
    // Default session name: the certificate serial in hex, as the service does.
    assert.equal(set.assumedRoleUser.arn, `arn:aws:sts::123456789012:assumed-role/ra-test-a/${world.leaves.rsa.serialHex}`);
    assert.match(set.assumedRoleUser.assumedRoleId, new RegExp(`^AROA[A-Z2-7]{17}:${world.leaves.rsa.serialHex}$`));
    assert.equal(set.packedPolicySize, 0);
    assert.equal(set.sourceIdentity, "CN=leaf-rsa");
    assert.match(body.subjectArn, /^arn:aws:rolesanywhere:us-east-1:123456789012:subject\/[0-9a-f-]{36}$/);
  });

  it("accepts an EC P-256 request with the ARNs in the JSON body", () => {
    const set = created("ec-body").credentialSet[0];
    assert.equal(set.roleArn, ROLE_B);
    // A role with a path: the assumed-role ARN carries only the role name.
    assert.match(set.assumedRoleUser.arn, /:assumed-role\/ra-test-b\//);
  });

  it("accepts an EC P-384 request", () => {
    created("ec384");
  });

  it("accepts a leaf issued by an intermediate sent in X-Amz-X509-Chain", () => {
    created("chain");
  });

  it("caps durationSeconds at the profile's limit and defaults to 3600", () => {
    for (const [name, expected] of [["capped", MAIN_PROFILE_CAP], ["no-duration", 3600], ["ec-body", 900]] as const) {
      const session = emu.issuedSessions().find((s) => s.accessKeyId === created(name).credentialSet[0].credentials.accessKeyId)!;
      assert.equal((session.expiration.getTime() - session.issuedAt.getTime()) / 1000, expected, name);
      assert.equal(created(name).credentialSet[0].credentials.expiration, session.expiration.toISOString().replace(".000Z", "Z"));
    }
  });

  it("uses roleSessionName where the profile accepts it", () => {
    assert.match(created("named").credentialSet[0].assumedRoleUser.arn, /assumed-role\/ra-test-a\/build-42@ci$/);
  });

  it("issues unique credentials", () => {
    const ids = [...positive.keys()].map((n) => created(n).credentialSet[0].credentials.accessKeyId);
    assert.equal(new Set(ids).size, ids.length);
    assert.equal(emu.createSessionCount, ids.length);
  });

  for (const c of NEGATIVE) {
    it(`refuses: ${c.name}`, async () => {
      let req = signed.get(c.name)!;
      if (c.tamper) req = c.tamper(req, world);
      const res = await sendSigned(emu.endpoint, req);
      assert.equal(res.status, c.status, res.body);
      assert.equal(res.headers["x-amzn-errortype"], c.type);
      const body = JSON.parse(res.body) as { message: string };
      assert.deepEqual(Object.keys(body), ["message"]);
      assert.match(body.message, c.message);
    });
  }
});
