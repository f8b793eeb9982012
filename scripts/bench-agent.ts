/**
 * Agent benchmarks (issue 4, item 9), measured side by side in one run on the
 * real pieces: a SoftHSM token provisioned by softhsm/provision.ts (keys
 * generated inside it), the emulator, and the built `ra-agent agent`.
 *
 *   (a) `ra-agent credential-process --profile` through the agent vs `node -e 0`
 *       (startup floor; target <= 1.3x) and vs `curl --unix-socket`;
 *   (b) 500 concurrent clients on a cold cache: CreateSession count at the
 *       emulator (must be 1), p50/p99 latency;
 *   (c) agent credential requests/s vs a bare node HTTP server on a Unix socket
 *       returning a fixed body of the same size (target >= 80 %); short rounds in
 *       alternating order, the ratio is the median of each round's pair; servers
 *       on CPU 0 and the load generator on CPU 1 (taskset) when there are 2+ CPUs;
 *   (d) agent RSS idle, after 100k and after 200k requests (target <= 80 MB, no growth);
 *   (e) signatures/s through the agent (POST /v1/sign, pipelined by a raw-socket
 *       client: BENCH_E_CONNECTIONS x BENCH_E_DEPTH in flight, 8 x 16 by default) vs
 *       raw pkcs11js on the same SoftHSM key (target >= 80 %); raw and agent rounds alternate.
 *
 * Usage: scripts/bench.sh [--quick] [--json] [--only a,b,c,d,e]   (or node dist/scripts/bench-agent.js)
 * The load generator, the bare server and the raw pkcs11js signer run as child
 * processes of this script (`--role ...`), so that each side has its own core.
 * Not a test: it prints figures, it does not assert on timing.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Agent as HttpAgent, createServer, request } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

const CLI = resolve(__dirname, "../src/cli/main.js");
const SELF = __filename;
const SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so";

// ---------------------------------------------------------------- helpers

function dbg(s: string): void {
  if (process.env.BENCH_DEBUG) process.stderr.write(`  [debug] ${s}\n`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

function fmt(n: number, digits = 1): string {
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** CPU time (user + system, all threads) a process has used, ms. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // clock ticks: USER_HZ is 100 on Linux
}

/** RSS and its anonymous (private heap) part, MiB. RSS includes ~40 MB of the node executable's shared pages. */
function memMb(pid: number): { rss: number; anon: number } {
  const s = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(s)?.[1] ?? NaN) / 1024;
  return { rss: get("Rss"), anon: get("Anonymous") };
}

/**
 * V8's memory reducer shrinks an idle heap about 8 s after allocation slows down
 * (measured: RSS held at 80.5 MB for 7.5 s after a burst of 500 connections, then
 * fell to 70.7 MB), so an "at rest" reading waits longer than that.
 */
const REST_MS = 10_000;

/** {@link memMb} once the agent has served nothing for {@link REST_MS}. */
async function memAtRestMb(pid: number): Promise<{ rss: number; anon: number }> {
  await new Promise((r) => setTimeout(r, REST_MS));
  return memMb(pid);
}

function stringToSign(algorithm: string): string {
  const amz = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  return `${algorithm}\n${amz}\n${amz.slice(0, 8)}/us-east-1/rolesanywhere/aws4_request\n${"ab".repeat(32)}`;
}

/** Runs a child `node bench-agent.js --role ROLE` with JSON args and returns its JSON answer. */
function runRole<T>(role: string, args: unknown, cpu?: number): Promise<T> {
  if (process.env.BENCH_DEBUG) process.stderr.write(`  role ${role} ${JSON.stringify(args).slice(0, 160)}\n`);
  return new Promise((resolvePromise, reject) => {
    const argv = [process.execPath, SELF, "--role", role, JSON.stringify(args)];
    if (cpu !== undefined) argv.unshift("taskset", "-c", String(cpu));
    const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    child.on("exit", (code) => (code === 0 ? resolvePromise(JSON.parse(out) as T) : reject(new Error(`${role} exited with ${code}`))));
  });
}

/** Starts a long-running child role that prints one line when ready. */
async function startRole(role: string, args: unknown): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn(process.execPath, [SELF, "--role", role, JSON.stringify(args)], { stdio: ["ignore", "pipe", "inherit"] });
  const line = await new Promise<string>((res, rej) => {
    createInterface({ input: child.stdout! }).once("line", res);
    child.once("exit", (code) => rej(new Error(`${role} exited with ${code}`)));
  });
  return { child, line };
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((r) => {
    dbg(`stop pid ${child.pid} exitCode ${child.exitCode} signal ${child.signalCode}`);
    if (child.exitCode !== null || child.signalCode !== null) return r();
    child.once("exit", () => r());
    child.kill("SIGTERM");
  });
}

/**
 * Restricts every thread of a running process to the given CPUs (taskset -a).
 * @returns false when taskset is missing or refused.
 */
function pinProcess(pid: number, cpus: string): boolean {
  return spawnSync("taskset", ["-a", "-c", "-p", cpus, String(pid)], { stdio: "ignore" }).status === 0;
}

/** The CPU list a process may run on ("0,1" or "0-3"), or undefined without taskset. */
function cpuAffinity(pid: number): string | undefined {
  const r = spawnSync("taskset", ["-c", "-p", String(pid)], { encoding: "utf8" });
  return r.status === 0 ? /: *(\S+)\s*$/.exec(r.stdout)?.[1] : undefined;
}

/** The CPUs of a taskset CPU list ("0,1", "0-3", "0,2-5"). */
function cpuList(list: string): number[] {
  return list.split(",").flatMap((part) => {
    const [lo, hi = lo] = part.split("-").map(Number);
    return Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
  });
}

/** Share below which the slowest CPU's probe, against the fastest's, makes an (e) round uneven. */
const EVEN_CPUS = 0.85;

// ---------------------------------------------------------------- child roles

interface LoadArgs {
  socket: string;
  method: "GET" | "POST";
  path: string;
  /** For POST /v1/sign: the algorithm; a fresh string to sign is made every second. */
  signAlgorithm?: string;
  concurrency: number;
  durationMs?: number;
  /** Stop after this many requests instead of a duration. */
  requests?: number;
  warmupMs: number;
}

interface LoadResult {
  count: number;
  errors: number;
  seconds: number;
  rps: number;
  p50ms: number;
  p99ms: number;
  /** Requests answered including the warm-up (for CPU per request). */
  allCount?: number;
}

/** Closed-loop load generator over keep-alive connections. */
async function loadGenerator(a: LoadArgs): Promise<LoadResult> {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: a.concurrency });
  let body: Buffer | undefined;
  let bodyAt = 0;
  const freshBody = (): Buffer | undefined => {
    if (!a.signAlgorithm) return undefined;
    if (!body || Date.now() - bodyAt > 1000) {
      body = Buffer.from(JSON.stringify({ stringToSign: stringToSign(a.signAlgorithm) }));
      bodyAt = Date.now();
    }
    return body;
  };
  const one = () =>
    new Promise<boolean>((res) => {
      const b = freshBody();
      const req = request({ socketPath: a.socket, method: a.method, path: a.path, agent, headers: b ? { "Content-Type": "application/json", "Content-Length": b.length } : {} }, (r) => {
        r.on("data", () => undefined);
        r.on("end", () => res(r.statusCode === 200));
      });
      req.on("error", () => res(false));
      req.end(b);
    });
  const run = async (until: () => boolean, record: boolean) => {
    let count = 0;
    let errors = 0;
    const lat: number[] = [];
    const worker = async () => {
      while (!until()) {
        const t = process.hrtime.bigint();
        const ok = await one();
        if (record) lat.push(Number(process.hrtime.bigint() - t) / 1e6);
        if (ok) count++;
        else errors++;
      }
    };
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: a.concurrency }, worker));
    return { count, errors, seconds: Number(process.hrtime.bigint() - t0) / 1e9, lat };
  };
  const warmEnd = Date.now() + a.warmupMs;
  await run(() => Date.now() >= warmEnd, false);
  let done = 0;
  const end = Date.now() + (a.durationMs ?? 0);
  const r = await run(() => (a.requests !== undefined ? done++ >= a.requests : Date.now() >= end), true);
  agent.destroy();
  return { count: r.count, errors: r.errors, seconds: r.seconds, rps: r.count / r.seconds, p50ms: percentile(r.lat, 50), p99ms: percentile(r.lat, 99) };
}

interface PipelineArgs {
  socket: string;
  path: string;
  signAlgorithm: string;
  connections: number;
  /** Requests in flight per connection (HTTP/1.1 pipelining). */
  depth: number;
  durationMs: number;
  warmupMs: number;
}

/**
 * Load generator for (e): raw sockets, pre-built requests, HTTP/1.1 pipelining
 * and a minimal response parser, so that the client (which shares the 2 cores
 * with the agent) costs a few microseconds per request, not the ~30 of node's
 * http client; raw pkcs11js, the other side of the ratio, has no client at all.
 */
async function pipelineLoad(a: PipelineArgs): Promise<LoadResult> {
  const { connect } = await import("node:net");
  const makeRequest = () => {
    const body = Buffer.from(JSON.stringify({ stringToSign: stringToSign(a.signAlgorithm) }));
    return Buffer.concat([Buffer.from(`POST ${a.path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`), body]);
  };
  let req = makeRequest();
  const refresh = setInterval(() => (req = makeRequest()), 1000);
  const phase = (ms: number) =>
    new Promise<{ count: number; errors: number; seconds: number }>((done) => {
      const end = Date.now() + ms;
      let count = 0;
      let errors = 0;
      let open = a.connections;
      const t0 = process.hrtime.bigint();
      for (let c = 0; c < a.connections; c++) {
        const sock = connect(a.socket);
        let buf: Buffer = Buffer.alloc(0);
        let inflight = 0;
        const fill = () => {
          while (inflight < a.depth && Date.now() < end) {
            sock.write(req);
            inflight++;
          }
          if (inflight === 0) sock.end();
        };
        sock.on("connect", fill);
        sock.on("error", () => errors++);
        sock.on("close", () => {
          if (--open === 0) done({ count, errors, seconds: Number(process.hrtime.bigint() - t0) / 1e9 });
        });
        sock.on("data", (d: Buffer) => {
          buf = buf.length ? Buffer.concat([buf, d]) : d;
          for (;;) {
            const headEnd = buf.indexOf("\r\n\r\n");
            if (headEnd < 0) break;
            const head = buf.toString("latin1", 0, headEnd);
            const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
            if (buf.length < headEnd + 4 + length) break;
            if (head.startsWith("HTTP/1.1 200")) count++;
            else errors++;
            inflight--;
            buf = buf.subarray(headEnd + 4 + length);
          }
          fill();
        });
      }
    });
  const warm = await phase(a.warmupMs);
  const r = await phase(a.durationMs);
  clearInterval(refresh);
  return { count: r.count, errors: r.errors, seconds: r.seconds, rps: r.count / r.seconds, p50ms: NaN, p99ms: NaN, allCount: warm.count + r.count };
}

/**
 * A fixed CPU-bound job, P-256 signatures in node's own crypto for `ms`: run pinned
 * to one CPU, the speed of that CPU. On the 2-core VM each vCPU moved on its own
 * between two speeds, ~37k and ~25k of these per second, for seconds to minutes.
 */
async function cpuProbe(a: { ms: number }): Promise<{ rate: number }> {
  const { generateKeyPairSync, sign } = await import("node:crypto");
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const message = Buffer.alloc(100, 1);
  let count = 0;
  const t0 = process.hrtime.bigint();
  const end = Date.now() + a.ms;
  while (Date.now() < end) {
    sign("sha256", message, privateKey);
    count++;
  }
  return { rate: count / (Number(process.hrtime.bigint() - t0) / 1e9) };
}

/** A bare node HTTP server on a Unix socket answering a fixed body: the floor for (c). */
function bareServer(a: { socket: string; bodyLength: number }): void {
  const body = Buffer.from(JSON.stringify({ x: "y".repeat(Math.max(0, a.bodyLength - 8)) }));
  createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
    res.end(body);
  }).listen(a.socket, () => process.stdout.write("ready\n"));
}

interface RawSignArgs {
  conf: string;
  tokenLabel: string;
  pin: string;
  keyLabel: string;
  keyType: "RSA" | "EC";
  durationMs: number;
  mode: "sync" | "async";
  sessions: number;
}

/** Signs in a loop with pkcs11js directly: the floor for (e). */
async function rawSign(a: RawSignArgs): Promise<{ rps: number; count: number }> {
  process.env.SOFTHSM2_CONF = a.conf;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pkcs11js = require("pkcs11js") as typeof import("pkcs11js");
  const { createHash } = await import("node:crypto");
  const p = new pkcs11js.PKCS11();
  p.load(SOFTHSM_MODULE);
  p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  try {
    const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === a.tokenLabel);
    if (!slot) throw new Error("token not found");
    const sessions = Array.from({ length: a.sessions }, () => p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION));
    p.C_Login(sessions[0], pkcs11js.CKU_USER, a.pin);
    p.C_FindObjectsInit(sessions[0], [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_LABEL, value: a.keyLabel },
    ]);
    const [key] = p.C_FindObjects(sessions[0], 1);
    p.C_FindObjectsFinal(sessions[0]);
    // The same work the agent does per signature: SHA-256 of a string to sign, then the token signs.
    const mech = a.keyType === "RSA" ? { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS } : { mechanism: pkcs11js.CKM_ECDSA };
    const message = Buffer.from(stringToSign(a.keyType === "RSA" ? "AWS4-X509-RSA-SHA256" : "AWS4-X509-ECDSA-SHA256"));
    const input = () => (a.keyType === "RSA" ? message : createHash("sha256").update(message).digest());
    const out = Buffer.alloc(512);
    let count = 0;
    const end = Date.now() + a.durationMs;
    const t0 = process.hrtime.bigint();
    if (a.mode === "sync") {
      const s = sessions[0];
      while (Date.now() < end) {
        p.C_SignInit(s, mech, key);
        p.C_Sign(s, input(), out);
        count++;
      }
    } else {
      await Promise.all(
        sessions.map(async (s) => {
          while (Date.now() < end) {
            p.C_SignInit(s, mech, key);
            await p.C_SignAsync(s, input(), out);
            count++;
          }
        }),
      );
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    for (const s of sessions) p.C_CloseSession(s);
    return { rps: count / seconds, count };
  } finally {
    p.C_Finalize();
  }
}

// ---------------------------------------------------------------- main

interface Figures {
  a?: Record<string, number>;
  b?: Record<string, number>;
  c?: Record<string, number>;
  d?: Record<string, number>;
  e?: Record<string, number>;
}

async function main(): Promise<void> {
  const quick = process.argv.includes("--quick");
  const asJson = process.argv.includes("--json");
  const onlyIndex = process.argv.indexOf("--only");
  const only = new Set((onlyIndex === -1 ? "a,b,c,d,e" : (process.argv[onlyIndex + 1] ?? "")).split(","));
  if (![...only].every((x) => "abcde".includes(x) && x.length === 1)) throw new Error("--only takes a comma-separated list of a, b, c, d, e");
  const dur = quick ? 2000 : 5000;
  const log = (s: string) => process.stderr.write(s + "\n");
  const dir = mkdtempSync(join(tmpdir(), "ra-agent-bench-"));
  const figures: Figures = {};
  const children: ChildProcess[] = [];
  let emulator: { close(): Promise<void>; createSessionCount: number; endpoint: string; trustAnchorArn: string; profileArn: string; roleArns: string[] } | undefined;
  try {
    // --- set-up: token, emulator, agent
    log("set-up: provisioning SoftHSM (keys generated in the token)...");
    const { provisionSoftHsm } = await import("../softhsm/provision");
    const prov = await provisionSoftHsm({ dir: join(dir, "softhsm"), tokens: [{ label: "bench", keys: [{ label: "rsa-2048", keyType: "RSA-2048" }, { label: "ec-p256", keyType: "EC-P256" }] }] });
    const token = prov.tokens[0];
    const certificateUri = (label: string) => token.keys.find((k) => k.label === label)!.certificateUri!;
    const { startEmulator, buildEmulatorConfig } = await import("../src/emulator");
    const { createLogger } = await import("../src/log/logger");
    emulator = await startEmulator(buildEmulatorConfig({ caCertificates: [prov.caPem] }), { logger: createLogger({ level: "error" }) });
    const env = { ...process.env, SOFTHSM2_CONF: prov.softhsmConf };
    const profile = (name: string, key: string) => ({
      name,
      certificate: certificateUri(key),
      pkcs11Lib: SOFTHSM_MODULE,
      pinFile: token.pinFile,
      trustAnchorArn: emulator!.trustAnchorArn,
      profileArn: emulator!.profileArn,
      roleArn: emulator!.roleArns[0],
      endpoint: emulator!.endpoint,
      region: "us-east-1",
      allowSigning: true,
    });
    const config = join(dir, "agent.json");
    writeFileSync(config, JSON.stringify({ profiles: [profile("rsa", "rsa-2048"), profile("ec", "ec-p256"), profile("cold", "ec-p256")] }));
    const socket = join(dir, "agent.sock");
    const startAgent = async () => {
      const child = spawn(process.execPath, [CLI, "agent", "--config", config, "--socket", socket, "--log-level", "warn"], { env, stdio: ["ignore", "pipe", "inherit"] });
      children.push(child);
      await new Promise<string>((res, rej) => {
        createInterface({ input: child.stdout! }).once("line", res);
        child.once("exit", (code) => rej(new Error(`agent exited with ${code}`)));
      });
      return child;
    };
    const get = (path: string) =>
      new Promise<{ status: number; body: string; ms: number }>((res, rej) => {
        const t = process.hrtime.bigint();
        const req = request({ socketPath: socket, path, agent: false }, (r) => {
          let b = "";
          r.on("data", (c: Buffer) => (b += c.toString()));
          r.on("end", () => res({ status: r.statusCode ?? 0, body: b, ms: Number(process.hrtime.bigint() - t) / 1e6 }));
        });
        req.on("error", rej);
        req.end();
      });

    // --- (b) first, on a cold agent: 500 concurrent clients.
    const agent = await startAgent();
    if (only.has("b")) {
      log("(b) 500 concurrent clients on a cold cache...");
      const before = emulator.createSessionCount;
      const answers = await Promise.all(Array.from({ length: 500 }, () => get("/v1/credentials/cold")));
      const okCount = answers.filter((x) => x.status === 200).length;
      const lat = answers.map((x) => x.ms);
      figures.b = { clients: 500, ok: okCount, createSessions: emulator.createSessionCount - before, p50ms: percentile(lat, 50), p99ms: percentile(lat, 99) };
    }

    // Warm the other profiles.
    for (const p of ["rsa", "ec"]) if ((await get(`/v1/credentials/${p}`)).status !== 200) throw new Error(`profile ${p} failed`);
    const bodyLength = (await get("/v1/credentials/ec")).body.length;

    // --- (a) cold start of a client process.
    if (only.has("a")) {
      log("(a) client start-up: node -e 0 / ra-agent credential-process --profile / curl --unix-socket ...");
      const runs = quick ? 10 : 25;
      // What bin/ra-agent does when it has the fast path (src/agent/fast-path): ask the
      // agent before loading the CLI; written here so the figure exists whatever the launcher does.
      const fastLauncher = join(dir, "fast-launcher.js");
      writeFileSync(
        fastLauncher,
        `"use strict";\nconst src = ${JSON.stringify(resolve(__dirname, "../src"))};\n` +
          `require(src + "/agent/fast-path.js").runFastCredentialProcess(process.argv).then((code) => {\n` +
          `  if (code !== undefined) process.exitCode = code;\n` +
          `  else require(src + "/cli/main.js").runCli(process.argv).then((c) => { process.exitCode = c; });\n});\n`,
      );
      const launcher = resolve(__dirname, "../../bin/ra-agent");
      const launcherIsThisBuild = resolve(__dirname, "..") === resolve(__dirname, "../../dist");
      const cpArgs = ["credential-process", "--profile", "ec", "--socket", socket];
      const cmds: Record<string, string[]> = {
        "node -e 0": [process.execPath, "-e", "0"],
        "fast path (src/agent/fast-path)": [process.execPath, fastLauncher, ...cpArgs],
        "full CLI (dist/src/cli/main.js)": [process.execPath, CLI, ...cpArgs],
        ...(launcherIsThisBuild ? { "bin/ra-agent": [process.execPath, launcher, ...cpArgs] } : {}),
        "curl --unix-socket": ["curl", "-sS", "--fail", "--unix-socket", socket, "http://localhost/v1/credentials/ec"],
      };
      const times: Record<string, number[]> = Object.fromEntries(Object.keys(cmds).map((k) => [k, []]));
      // The order rotates each round, so that no command always follows the heavy
      // full CLI: two full runs out of about twenty read bin/ra-agent at the full
      // CLI's time while the fast-path launcher, the same code, read 1.1x.
      const entries = Object.entries(cmds);
      for (let i = 0; i < runs + 3; i++) {
        for (const [name, argv] of entries.map((_, j) => entries[(i + j) % entries.length])) {
          const t = process.hrtime.bigint();
          const r = spawnSync(argv[0], argv.slice(1), { env });
          const ms = Number(process.hrtime.bigint() - t) / 1e6;
          if (r.status !== 0) throw new Error(`${name} failed: ${r.stderr}`);
          if (i >= 3) times[name].push(ms);
        }
      }
      figures.a = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
    }

    // --- (d) idle RSS: at rest after (a) and (b), not in the middle of their garbage.
    const pid = agent.pid!;
    const memIdle = only.has("d") ? await memAtRestMb(pid) : memMb(pid);

    if (only.has("c") || only.has("d")) {
      // --- (c) throughput vs a bare server. Both servers on CPU 0 and the load
      // generator on CPU 1 when taskset allows: unpinned, a window where the scheduler
      // puts a server and the client on one core runs at a third of the rate. Short
      // rounds in alternating order; the ratio is the median of each round's pair.
      log("(c) credentials requests/s: agent vs bare node server ...");
      const bareSocket = join(dir, "bare.sock");
      const bare = await startRole("bare-server", { socket: bareSocket, bodyLength });
      children.push(bare.child);
      const agentCpus = cpuAffinity(agent.pid!);
      let pinned = agentCpus !== undefined && cpuList(agentCpus).includes(0) && cpuList(agentCpus).includes(1) && pinProcess(agent.pid!, "0");
      if (pinned && !pinProcess(bare.child.pid!, "0")) {
        pinProcess(agent.pid!, agentCpus!);
        pinned = false;
      }
      const clientCpu = pinned ? 1 : undefined;
      const conc = 32;
      const agentRps: number[] = [];
      const bareRps: number[] = [];
      const ratios: number[] = [];
      let agentRequests = 0;
      const roundMs = quick ? 1500 : 2500;
      for (let round = 0; round < (quick ? 2 : 6); round++) {
        const runAgent = () => runRole<LoadResult>("load", { socket, method: "GET", path: "/v1/credentials/ec", concurrency: conc, durationMs: roundMs, warmupMs: 300 } satisfies LoadArgs, clientCpu);
        const runBare = () => runRole<LoadResult>("load", { socket: bareSocket, method: "GET", path: "/", concurrency: conc, durationMs: roundMs, warmupMs: 300 } satisfies LoadArgs, clientCpu);
        const ra = round % 2 === 0 ? await runAgent() : undefined;
        const rb = await runBare();
        const rA = ra ?? (await runAgent());
        if (rA.errors) throw new Error(`agent answered ${rA.errors} errors`);
        agentRps.push(rA.rps);
        bareRps.push(rb.rps);
        ratios.push(rA.rps / rb.rps);
        agentRequests += rA.count;
      }
      await stop(bare.child);
      if (pinned && !pinProcess(agent.pid!, agentCpus!)) throw new Error("taskset could not give the agent its CPUs back");
      figures.c = { agentRps: median(agentRps), bareRps: median(bareRps), ratio: median(ratios), ratioMin: Math.min(...ratios), ratioMax: Math.max(...ratios), concurrency: conc, pinned: pinned ? 1 : 0 };

      // --- (d) RSS after 100k and 200k requests
      log("(d) RSS after 100k and 200k requests ...");
      const top = async (target: number) => {
        while (agentRequests < target) {
          const r = await runRole<LoadResult>("load", { socket, method: "GET", path: "/v1/credentials/ec", concurrency: conc, requests: Math.min(50_000, target - agentRequests), warmupMs: 0 } satisfies LoadArgs);
          agentRequests += r.count;
        }
        // Right after the load (what the heap holds while busy), then at rest (what it keeps).
        const busy = memMb(pid);
        return { busy, rest: await memAtRestMb(pid) };
      };
      const m100k = await top(100_000);
      const m200k = await top(200_000);
      figures.d = {
        idleRss: memIdle.rss,
        idleAnon: memIdle.anon,
        rss100k: m100k.busy.rss,
        anon100k: m100k.busy.anon,
        rss200k: m200k.busy.rss,
        anon200k: m200k.busy.anon,
        restRss100k: m100k.rest.rss,
        restAnon100k: m100k.rest.anon,
        restRss200k: m200k.rest.rss,
        restAnon200k: m200k.rest.anon,
        requests: agentRequests,
      };
    }

    // --- (e) signing through the agent vs raw pkcs11js on the same key. Raw and agent
    // windows alternate, and each round's ratio is taken from its own pair, so that the
    // machine's drift hits both sides. The raw loop runs on one CPU and the agent on all
    // of them, so a round compares software only when the CPUs ran at one speed: each
    // round probes every CPU before and after, and the ratio is the median of the even
    // rounds (on this VM one vCPU at a time ran ~35 % slower for seconds to minutes,
    // which put single rounds anywhere between 63 and 104 %).
    if (only.has("e")) {
      log("(e) signatures/s: agent POST /v1/sign vs raw pkcs11js ...");
      const e: Record<string, number> = {};
      const rounds = quick ? 3 : 6;
      const affinity = cpuAffinity(pid);
      const probeCpus = affinity && cpuList(affinity).length >= 2 && cpuList(affinity).length <= 4 ? cpuList(affinity) : [];
      const probe = async () => {
        const rates: number[] = [];
        for (const cpu of probeCpus) rates.push((await runRole<{ rate: number }>("cpu-probe", { ms: 300 }, cpu)).rate);
        return rates;
      };
      e.cpusProbed = probeCpus.length;
      const connections = Number(process.env.BENCH_E_CONNECTIONS ?? 8);
      const depth = Number(process.env.BENCH_E_DEPTH ?? 16);
      e.connections = connections;
      e.depth = depth;
      for (const [profileName, keyLabel, keyType, alg] of [
        ["rsa", "rsa-2048", "RSA", "AWS4-X509-RSA-SHA256"],
        ["ec", "ec-p256", "EC", "AWS4-X509-ECDSA-SHA256"],
      ] as const) {
        const rawArgs = { conf: prov.softhsmConf, tokenLabel: "bench", pin: token.pin, keyLabel, keyType, durationMs: dur };
        const rawAsync = await runRole<{ rps: number }>("raw-sign", { ...rawArgs, mode: "async", sessions: 4 } satisfies RawSignArgs);
        const sync: number[] = [];
        const viaAgent: number[] = [];
        const ratios: number[] = [];
        const even: boolean[] = [];
        let cpu = 0;
        let signed = 0;
        for (let round = 0; round < rounds; round++) {
          const before = await probe();
          const rawSync = await runRole<{ rps: number }>("raw-sign", { ...rawArgs, mode: "sync", sessions: 1 } satisfies RawSignArgs);
          const cpuBefore = cpuMs(pid);
          const r = await runRole<LoadResult>("pipeline-load", { socket, path: `/v1/sign/${profileName}`, signAlgorithm: alg, connections, depth, durationMs: dur, warmupMs: 500 } satisfies PipelineArgs);
          if (r.errors) throw new Error(`signing through the agent: ${r.errors} errors`);
          cpu += cpuMs(pid) - cpuBefore;
          signed += r.allCount ?? r.count;
          const speeds = [...before, ...(await probe())];
          even.push(speeds.length === 0 || Math.min(...speeds) >= EVEN_CPUS * Math.max(...speeds));
          sync.push(rawSync.rps);
          viaAgent.push(r.rps);
          ratios.push(r.rps / rawSync.rps);
          dbg(`(e) ${keyType} round ${round}: raw ${rawSync.rps.toFixed(0)}/s, agent ${r.rps.toFixed(0)}/s, CPU probes ${speeds.map((x) => x.toFixed(0)).join(" ")}`);
        }
        // The even rounds when there are any; otherwise every round, flagged.
        const counted = even.some(Boolean) ? even : even.map(() => true);
        const pick = (xs: number[]) => xs.filter((_, i) => counted[i]);
        e[`${keyType}.rounds`] = rounds;
        e[`${keyType}.evenRounds`] = even.filter(Boolean).length;
        e[`${keyType}.rawSync1`] = median(pick(sync));
        e[`${keyType}.rawAsync4`] = rawAsync.rps;
        e[`${keyType}.agent`] = median(pick(viaAgent));
        e[`${keyType}.agentCpuMicrosPerSignature`] = (cpu * 1000) / signed;
        e[`${keyType}.ratioVsRawSync`] = median(pick(ratios));
        e[`${keyType}.ratioMin`] = Math.min(...pick(ratios));
        e[`${keyType}.ratioMax`] = Math.max(...pick(ratios));
        e[`${keyType}.ratioAllMin`] = Math.min(...ratios);
        e[`${keyType}.ratioAllMax`] = Math.max(...ratios);
        e[`${keyType}.ratioVsBestRaw`] = median(pick(viaAgent)) / Math.max(median(pick(sync)), rawAsync.rps);
        // How many of the profile's signatures the signing lane made (docs/pkcs11.md): none for RSA.
        const profiles = (JSON.parse((await get("/v1/status")).body) as { profiles: Array<{ name: string; signatures: number; token?: { laneSignatures?: number } }> }).profiles;
        const p = profiles.find((x) => x.name === profileName);
        e[`${keyType}.laneShare`] = p && p.signatures ? (p.token?.laneSignatures ?? 0) / p.signatures : 0;
      }
      figures.e = e;
    }
    dbg("stopping the agent");
    await stop(agent);
  } finally {
    dbg("teardown: children");
    for (const c of children) await stop(c);
    dbg("teardown: emulator");
    await emulator?.close();
    dbg("teardown: files");
    rmSync(dir, { recursive: true, force: true });
  }

  if (asJson) {
    process.stdout.write(JSON.stringify(figures, null, 2) + "\n");
    return;
  }
  const { a, b, c, d, e } = figures;
  const ok = (cond: boolean) => (cond ? "ok" : "MISSED");
  const lines = ["", `ra-agent agent benchmarks (${new Date().toISOString()}, node ${process.version}, ${require("node:os").cpus().length} cores, load average ${require("node:os").loadavg()[0].toFixed(2)})`, ""];
  if (a) {
    const nodeMs = a["node -e 0"];
    lines.push(
      "(a) client start-up, median wall time (ms) and ratio to node -e 0 (target <= 1.30x)",
      ...Object.entries(a).map(([k, v]) => `    ${k.padEnd(34)} ${fmt(v).padStart(7)}   ${fmt(v / nodeMs, 2)}x${k.startsWith("node") || k.startsWith("curl") || k.startsWith("full CLI") ? "" : `  ${ok(v / nodeMs <= 1.3)}`}`),
      "    (the target is for bin/ra-agent, which takes the fast path; the full CLI line is for comparison)",
      "",
    );
  }
  if (b) lines.push(`(b) 500 concurrent clients, cold cache: ${b.ok}/500 answered, CreateSession calls at the emulator: ${b.createSessions} (${ok(b.createSessions === 1)}), p50 ${fmt(b.p50ms)} ms, p99 ${fmt(b.p99ms)} ms`, "");
  if (c) lines.push(`(c) credentials requests/s (${c.concurrency} keep-alive connections${c.pinned ? "; servers on CPU 0, load generator on CPU 1" : "; not pinned (needs taskset and CPUs 0 and 1)"}): agent ${fmt(c.agentRps, 0)}, bare node server ${fmt(c.bareRps, 0)}, ratio ${fmt(c.ratio * 100, 0)} % (median of each round's pair; rounds ${fmt(c.ratioMin * 100, 0)}-${fmt(c.ratioMax * 100, 0)} %; target >= 80 %: ${ok(c.ratio >= 0.8)})`, "");
  if (d) {
    lines.push(
      `(d) agent memory, RSS (anonymous part) in MiB: idle ${fmt(d.idleRss)} (${fmt(d.idleAnon)}); after 100k requests ${fmt(d.rss100k)} (${fmt(d.anon100k)}), at rest ${fmt(d.restRss100k)} (${fmt(d.restAnon100k)}); after 200k ${fmt(d.rss200k)} (${fmt(d.anon200k)}), at rest ${fmt(d.restRss200k)} (${fmt(d.restAnon200k)})`,
      `    target <= 80 MB (every reading): ${ok(Math.max(d.idleRss, d.rss100k, d.rss200k, d.restRss100k, d.restRss200k) <= 80)}; growth 100k->200k: ${fmt(d.rss200k - d.rss100k)} MiB right after the load (${ok(d.rss200k - d.rss100k < 5)}), ${fmt(d.restRss200k - d.restRss100k)} MiB at rest (${ok(d.restRss200k - d.restRss100k < 5)}).`,
      `    "At rest": ${REST_MS / 1000} s without requests (V8 shrinks an idle heap after about 8 s). RSS counts ~40 MiB of the node executable's shared pages.`,
      "",
    );
  }
  if (e) {
    const pct = (x: number) => fmt(x * 100, 0);
    const rounds = (k: "RSA" | "EC") => {
      const [n, evenN] = [e[`${k}.rounds`], e[`${k}.evenRounds`]];
      const range = `${pct(e[`${k}.ratioMin`])}-${pct(e[`${k}.ratioMax`])} %`;
      const all = `all rounds ${pct(e[`${k}.ratioAllMin`])}-${pct(e[`${k}.ratioAllMax`])} %`;
      if (!e.cpusProbed) return `rounds ${range}, CPU speeds not probed`;
      if (evenN === 0) return `no round ran on CPUs of one speed, so the figure is not a clean comparison: ${all}`;
      return `${evenN} of ${n} rounds on CPUs of one speed: ${range}${evenN < n ? `; ${all}` : ""}`;
    };
    const line = (k: "RSA" | "EC", name: string) =>
      `    ${name}: raw pkcs11js sync 1 session ${fmt(e[`${k}.rawSync1`], 0)}, async 4 sessions ${fmt(e[`${k}.rawAsync4`], 0)}, through the agent ${fmt(e[`${k}.agent`], 0)}: ` +
      `${pct(e[`${k}.ratioVsRawSync`])} % of sync (${rounds(k)}; ${ok(e[`${k}.ratioVsRawSync`] >= 0.8)}), ${pct(e[`${k}.ratioVsBestRaw`])} % of the best raw`;
    lines.push(
      `(e) signatures/s on the same SoftHSM key (${e.connections} connections x ${e.depth} pipelined requests; medians of alternating rounds, the ratio is the median of each round's pair)`,
      e.cpusProbed
        ? `    the raw loop runs on one CPU and the agent on all ${e.cpusProbed}: a round counts when every CPU's probe, before and after, ran at >= ${EVEN_CPUS * 100} % of the fastest`
        : "    CPU speeds not probed (needs taskset and 2-4 CPUs): every round counts",
      line("RSA", "RSA-2048"),
      line("EC", "EC P-256"),
      `    agent CPU per signature (all threads, HTTP included): RSA ${fmt(e["RSA.agentCpuMicrosPerSignature"], 0)} µs, EC ${fmt(e["EC.agentCpuMicrosPerSignature"], 0)} µs; raw sync spends ${fmt(1e6 / e["RSA.rawSync1"], 0)} / ${fmt(1e6 / e["EC.rawSync1"], 0)} µs`,
      `    made on the signing lane: RSA ${fmt(e["RSA.laneShare"] * 100, 0)} %, EC ${fmt(e["EC.laneShare"] * 100, 0)} % (docs/pkcs11.md: quick EC keys only)`,
      "",
    );
  }
  process.stdout.write(lines.join("\n"));
}

const roleIndex = process.argv.indexOf("--role");
if (roleIndex !== -1) {
  const role = process.argv[roleIndex + 1];
  const args = JSON.parse(process.argv[roleIndex + 2] ?? "{}");
  const print = (x: unknown) => process.stdout.write(JSON.stringify(x) + "\n");
  if (role === "load") loadGenerator(args).then(print);
  else if (role === "raw-sign") rawSign(args).then(print);
  else if (role === "pipeline-load") pipelineLoad(args).then(print);
  else if (role === "bare-server") bareServer(args);
  else if (role === "cpu-probe") cpuProbe(args).then(print);
  else throw new Error(`unknown role ${role}`);
} else if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`bench failed: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  });
}
