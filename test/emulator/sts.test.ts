/**
 * The emulator's STS endpoint with real AWS clients: credentials issued by
 * CreateSession (requested by the independent signer) work with the AWS CLI and
 * boto3 for GetCallerIdentity; a wrong secret, an unknown key, a wrong session
 * token and expired credentials fail with STS's error codes.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { startEmulator, type RunningEmulator } from "../../src/emulator";
import { haveCommand, independentlySign, sendRaw, tempDir } from "./helpers";
import { arns, buildWorld, ROLE_A, type World } from "./world";

const haveSigner = haveCommand("python3") && haveCommand("openssl", ["version"]);
const haveAws = haveCommand("aws", ["--version"]);
const haveBoto3 = haveCommand("python3", ["-c", "import boto3"]);
if (process.env.CI === "true" && !(haveSigner && haveAws && haveBoto3)) {
  throw new Error("python3, openssl, the AWS CLI and boto3 are required on CI for the STS tests");
}

interface Creds {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
}

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

describe("STS GetCallerIdentity with real AWS clients", { skip: haveSigner ? false : "python3 or openssl missing" }, () => {
  const tmp = tempDir();
  let world: World;
  let emu: RunningEmulator;
  let creds: Creds;
  let clockOffsetMs = 0;

  function awsEnv(c: Creds): NodeJS.ProcessEnv {
    // Only what the client needs: no user config or credentials files, no metadata service.
    return {
      PATH: process.env.PATH,
      HOME: tmp.dir,
      AWS_ACCESS_KEY_ID: c.accessKeyId,
      AWS_SECRET_ACCESS_KEY: c.secretAccessKey,
      AWS_SESSION_TOKEN: c.sessionToken,
      AWS_DEFAULT_REGION: "us-east-1",
      AWS_CONFIG_FILE: join(tmp.dir, "no-config"),
      AWS_SHARED_CREDENTIALS_FILE: join(tmp.dir, "no-credentials"),
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_MAX_ATTEMPTS: "1",
    };
  }

  function aws(c: Creds): Promise<CliResult> {
    return new Promise((resolve) => {
      execFile("aws", ["sts", "get-caller-identity", "--endpoint-url", emu.stsEndpoint, "--output", "json"], { env: awsEnv(c) }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      });
    });
  }

  before(async () => {
    world = await buildWorld(tmp.dir, false);
    emu = await startEmulator(world.config, { clock: () => new Date(Date.now() + clockOffsetMs) });
    const [signed] = await independentlySign([{ endpoint: emu.endpoint, ...world.leaves.rsa, query: arns(ROLE_A), send: true }]);
    assert.equal(signed.response!.status, 201, signed.response!.body);
    creds = (JSON.parse(signed.response!.body) as { credentialSet: Array<{ credentials: Creds }> }).credentialSet[0].credentials;
  });

  after(async () => {
    await emu?.close();
    tmp.cleanup();
  });

  it("AWS CLI: get-caller-identity with the issued credentials returns the assumed role", { skip: haveAws ? false : "aws CLI missing" }, async () => {
    const r = await aws(creds);
    assert.equal(r.code, 0, r.stderr);
    const identity = JSON.parse(r.stdout) as { UserId: string; Account: string; Arn: string };
    assert.equal(identity.Account, "123456789012");
    assert.equal(identity.Arn, `arn:aws:sts::123456789012:assumed-role/ra-test-a/${world.leaves.rsa.serialHex}`);
    assert.match(identity.UserId, new RegExp(`^AROA[A-Z2-7]{17}:${world.leaves.rsa.serialHex}$`));
  });

  it("AWS CLI: a wrong secret fails with SignatureDoesNotMatch", { skip: haveAws ? false : "aws CLI missing" }, async () => {
    const wrong = creds.secretAccessKey.slice(0, -1) + (creds.secretAccessKey.endsWith("A") ? "B" : "A");
    const r = await aws({ ...creds, secretAccessKey: wrong });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /SignatureDoesNotMatch/);
  });

  /** A request whose Authorization names `c`'s key; token and expiry are checked before the signature. */
  function unverifiedRequest(c: Creds, date = new Date(Date.now() + clockOffsetMs)) {
    const d = date.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
    return sendRaw(emu.stsEndpoint, {
      target: "/",
      headers: [
        ["Content-Type", "application/x-www-form-urlencoded; charset=utf-8"],
        ["X-Amz-Date", d],
        ["X-Amz-Security-Token", c.sessionToken],
        ["Authorization", `AWS4-HMAC-SHA256 Credential=${c.accessKeyId}/${d.slice(0, 8)}/us-east-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=${"0".repeat(64)}`],
      ],
      body: "Action=GetCallerIdentity&Version=2011-06-15",
    });
  }

  it("an unknown access key fails with InvalidClientTokenId", async () => {
    const r = await unverifiedRequest({ ...creds, accessKeyId: "ASIAAAAAAAAAAAAAAAAA" });
    assert.equal(r.status, 403);
    assert.match(r.body, /<Code>InvalidClientTokenId<\/Code>/);
  });

  it("a wrong session token fails with InvalidClientTokenId", async () => {
    const r = await unverifiedRequest({ ...creds, sessionToken: creds.sessionToken.slice(0, -4) + "AAAA" });
    assert.equal(r.status, 403);
    assert.match(r.body, /<Code>InvalidClientTokenId<\/Code>/);
  });

  it("expired credentials fail with ExpiredToken", async () => {
    clockOffsetMs = 2 * 3600_000; // the emulator's clock moves past the 1 h expiration
    try {
      const r = await unverifiedRequest(creds);
      assert.equal(r.status, 403);
      assert.match(r.body, /<Code>ExpiredToken<\/Code>/);
    } finally {
      clockOffsetMs = 0;
    }
  });

  it("the same request shape with a zero signature fails with SignatureDoesNotMatch (so the checks above are not vacuous)", async () => {
    const r = await unverifiedRequest(creds);
    assert.equal(r.status, 403);
    assert.match(r.body, /<Code>SignatureDoesNotMatch<\/Code>/);
  });

  it("boto3: POST and GET (query string) GetCallerIdentity signed by botocore", { skip: haveBoto3 ? false : "boto3 missing" }, async () => {
    const script = join(tmp.dir, "boto3-sts.py");
    writeFileSync(
      script,
      [
        "import json, sys, urllib.request",
        "import boto3, botocore.auth, botocore.awsrequest, botocore.credentials",
        "endpoint, key, secret, token = sys.argv[1:5]",
        "sts = boto3.client('sts', endpoint_url=endpoint, region_name='eu-central-1', aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token)",
        "ident = sts.get_caller_identity()",
        "req = botocore.awsrequest.AWSRequest(method='GET', url=endpoint + '/?Action=GetCallerIdentity&Version=2011-06-15')",
        "botocore.auth.SigV4Auth(botocore.credentials.Credentials(key, secret, token), 'sts', 'us-west-2').add_auth(req)",
        "prepared = req.prepare()",
        "with urllib.request.urlopen(urllib.request.Request(prepared.url, headers=dict(prepared.headers), method='GET')) as r:",
        "    get_xml = r.read().decode()",
        "print(json.dumps({'arn': ident['Arn'], 'account': ident['Account'], 'get': get_xml}))",
      ].join("\n"),
    );
    const out = await new Promise<string>((resolve, reject) => {
      execFile("python3", [script, emu.stsEndpoint, creds.accessKeyId, creds.secretAccessKey, creds.sessionToken], { env: awsEnv(creds) }, (err, stdout, stderr) =>
        err ? reject(new Error(stderr)) : resolve(stdout),
      );
    });
    const result = JSON.parse(out) as { arn: string; account: string; get: string };
    assert.match(result.arn, /^arn:aws:sts::123456789012:assumed-role\/ra-test-a\//);
    assert.equal(result.account, "123456789012");
    assert.match(result.get, /<GetCallerIdentityResponse xmlns="https:\/\/sts.amazonaws.com\/doc\/2011-06-15\/">/);
    assert.match(result.get, /<Arn>arn:aws:sts::123456789012:assumed-role\/ra-test-a\/[0-9a-f]+<\/Arn>/);
    assert.match(result.get, /<RequestId>[0-9a-f-]{36}<\/RequestId>/);
  });

  it("answers an unsigned request with STS's XML error shape", async () => {
    const r = await sendRaw(emu.stsEndpoint, {
      target: "/",
      headers: [["Content-Type", "application/x-www-form-urlencoded"]],
      body: "Action=GetCallerIdentity&Version=2011-06-15",
    });
    assert.equal(r.status, 403);
    assert.match(r.headers["content-type"] as string, /text\/xml/);
    assert.match(r.body, /^<ErrorResponse xmlns="https:\/\/sts.amazonaws.com\/doc\/2011-06-15\/">\s*<Error>\s*<Type>Sender<\/Type>\s*<Code>MissingAuthenticationToken<\/Code>\s*<Message>[^<]+<\/Message>\s*<\/Error>\s*<RequestId>[0-9a-f-]{36}<\/RequestId>\s*<\/ErrorResponse>/);
  });

  it("refuses an action other than GetCallerIdentity", async () => {
    const r = await sendRaw(emu.stsEndpoint, { target: "/", headers: [["Content-Type", "application/x-www-form-urlencoded"]], body: "Action=AssumeRole&Version=2011-06-15" });
    assert.equal(r.status, 400);
    assert.match(r.body, /<Code>InvalidAction<\/Code>/);
  });
});
