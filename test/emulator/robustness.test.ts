/**
 * Malformed input never crashes the emulator: bad base64, non-certificates,
 * huge bodies and headers, broken HTTP, duplicate headers, unknown routes all
 * get a 4xx, and the endpoints keep serving. Concurrent requests all succeed.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { startEmulator, type RunningEmulator } from "../../src/emulator";
import { haveCommand, headerOf, independentlySign, sendRaw, sendSigned, tempDir, withHeader, type SignedRequest } from "./helpers";
import { arns, buildWorld, type World } from "./world";

const canRun = haveCommand("python3") && haveCommand("openssl", ["version"]);
if (!canRun && process.env.CI === "true") throw new Error("python3 and openssl are required on CI for the emulator tests");

function rawHttp(endpoint: string, text: string | Buffer): Promise<string> {
  const url = new URL(endpoint);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => socket.end(text));
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("end", () => resolve(Buffer.concat(chunks).toString("latin1")));
    socket.on("error", (e: NodeJS.ErrnoException) => (e.code === "ECONNRESET" || e.code === "EPIPE" ? resolve(Buffer.concat(chunks).toString("latin1")) : reject(e)));
  });
}

describe("emulator robustness", { skip: canRun ? false : "python3 or openssl missing" }, () => {
  const tmp = tempDir();
  let world: World;
  let emu: RunningEmulator;
  let good: SignedRequest;

  before(async () => {
    world = await buildWorld(tmp.dir, false);
    emu = await startEmulator(world.config);
    [good] = await independentlySign([{ endpoint: emu.endpoint, ...world.leaves.ec, query: arns() }]);
  });

  after(async () => {
    await emu?.close();
    tmp.cleanup();
  });

  async function stillServes(): Promise<void> {
    const r = await sendSigned(emu.endpoint, good);
    assert.equal(r.status, 201, r.body);
  }

  async function expectError(req: SignedRequest, status: number, type: string, message: RegExp): Promise<void> {
    const r = await sendSigned(emu.endpoint, req);
    assert.equal(r.status, status, r.body);
    assert.equal(r.headers["x-amzn-errortype"], type);
    assert.match((JSON.parse(r.body) as { message: string }).message, message);
  }

  it("bad base64 in X-Amz-X509 → 400 ValidationException", async () => {
    await expectError(withHeader(good, "X-Amz-X509", "not*base64!"), 400, "ValidationException", /X-Amz-X509 is not standard base64/);
    await stillServes();
  });

  it("base64 that is not a certificate → 400 ValidationException", async () => {
    await expectError(withHeader(good, "X-Amz-X509", Buffer.from("hello, world").toString("base64")), 400, "ValidationException", /not a usable X.509 certificate/);
    await expectError(withHeader(good, "X-Amz-X509-Chain", "MIIB,@@@"), 400, "ValidationException", /X-Amz-X509-Chain certificate 1/);
  });

  it("a header sent twice → 400 ValidationException", async () => {
    const twice = { ...good, headers: [...good.headers, ["X-Amz-Date", headerOf(good, "X-Amz-Date")!] as [string, string]] };
    await expectError(twice, 400, "ValidationException", /X-Amz-Date header was sent 2 times/);
  });

  it("malformed Authorization headers → 403 AccessDeniedException", async () => {
    for (const value of ["", "AWS4-X509-ECDSA-SHA256", "AWS4-X509-ECDSA-SHA256 Credential=1/2/3", "AWS4-X509-ECDSA-SHA256 Credential=1/20240101/us-east-1/rolesanywhere/aws4_request, SignedHeaders=Host;X-Amz-Date, Signature=00", "AWS4-X509-ECDSA-SHA256 Credential=1/20240101/us-east-1/rolesanywhere/aws4_request, SignedHeaders=host, Signature=xyz"]) {
      await expectError(withHeader(good, "Authorization", value), 403, "AccessDeniedException", /Authorization header|Missing Authorization/);
    }
    await stillServes();
  });

  it("invalid percent-encoding in the query → 4xx", async () => {
    const r = await sendSigned(emu.endpoint, { ...good, target: "/sessions?roleArn=%E0%A4%A" });
    assert.ok(r.status >= 400 && r.status < 500, `${r.status}`);
  });

  it("a 1 MiB body → 413, and the endpoint keeps serving", async () => {
    const r = await sendRaw(emu.endpoint, { target: "/sessions", headers: [["Content-Type", "application/json"]], body: Buffer.alloc(1024 * 1024, 0x20) });
    assert.equal(r.status, 413);
    assert.equal(r.headers["x-amzn-errortype"], "ValidationException");
    await stillServes();
  });

  it("a body over the limit without Content-Length (chunked) → 413", async () => {
    const text = "POST /sessions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + `20000\r\n${"a".repeat(0x20000)}\r\n0\r\n\r\n`;
    const answer = await rawHttp(emu.endpoint, text);
    assert.match(answer, /^HTTP\/1.1 413 /);
    await stillServes();
  });

  it("oversized headers → 431, garbage HTTP → 400, and the endpoints keep serving", async () => {
    const huge = `POST /sessions HTTP/1.1\r\nHost: x\r\nX-Amz-X509: ${"A".repeat(100 * 1024)}\r\nContent-Length: 0\r\n\r\n`;
    assert.match(await rawHttp(emu.endpoint, huge), /^HTTP\/1.1 431 /);
    assert.match(await rawHttp(emu.endpoint, "\x16\x03\x01 this is not HTTP\r\n\r\n"), /^HTTP\/1.1 400 /);
    assert.match(await rawHttp(emu.stsEndpoint, "GET / HTTP/1.1\r\nBad Header Line\r\n\r\n"), /^HTTP\/1.1 400 /);
    await stillServes();
  });

  it("a client that disconnects mid-body does not disturb the endpoint", async () => {
    const url = new URL(emu.endpoint);
    await new Promise<void>((resolve) => {
      const socket = connect(Number(url.port), url.hostname, () => {
        socket.write("POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"dur");
        setImmediate(() => {
          socket.destroy();
          resolve();
        });
      });
    });
    await stillServes();
  });

  it("unknown routes and methods → 404 UnknownOperationException", async () => {
    for (const [method, target] of [["GET", "/sessions"], ["POST", "/"], ["POST", "/sessions/x"], ["DELETE", "/sessions"]]) {
      const r = await sendRaw(emu.endpoint, { method, target, headers: [] });
      assert.equal(r.status, 404, `${method} ${target}`);
      assert.equal(r.headers["x-amzn-errortype"], "UnknownOperationException");
    }
    const sts = await sendRaw(emu.stsEndpoint, { method: "POST", target: "/sessions", headers: [] });
    assert.equal(sts.status, 404);
    assert.match(sts.body, /<Code>InvalidAction<\/Code>/);
  });

  it("malformed STS requests → 4xx XML errors", async () => {
    const cases: Array<[Array<[string, string]>, string, RegExp]> = [
      [[["Content-Type", "application/json"]], '{"Action":"GetCallerIdentity"}', /InvalidParameterValue/],
      [[["Content-Type", "application/x-www-form-urlencoded"]], "Version=2011-06-15", /MissingAction/],
      [[["Content-Type", "application/x-www-form-urlencoded"], ["Authorization", "garbage"]], "Action=GetCallerIdentity", /IncompleteSignature/],
      [[["Content-Type", "application/x-www-form-urlencoded"], ["Authorization", "AWS4-HMAC-SHA256 Credential=ASIA/20240101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"]], "Action=GetCallerIdentity", /IncompleteSignature/],
    ];
    for (const [headers, body, code] of cases) {
      const r = await sendRaw(emu.stsEndpoint, { target: "/", headers, body });
      assert.ok(r.status >= 400 && r.status < 500, `${r.status} ${r.body}`);
      assert.match(r.body, code);
    }
    const big = await sendRaw(emu.stsEndpoint, { target: "/", headers: [["Content-Type", "application/x-www-form-urlencoded"]], body: "Action=" + "x".repeat(200 * 1024) });
    assert.equal(big.status, 413);
  });

  it("serves 40 concurrent CreateSession requests, each with its own credentials", async () => {
    const results = await Promise.all(Array.from({ length: 40 }, () => sendSigned(emu.endpoint, good)));
    for (const r of results) assert.equal(r.status, 201, r.body);
    const ids = results.map((r) => (JSON.parse(r.body) as { credentialSet: Array<{ credentials: { accessKeyId: string } }> }).credentialSet[0].credentials.accessKeyId);
    assert.equal(new Set(ids).size, ids.length);
  });
});
