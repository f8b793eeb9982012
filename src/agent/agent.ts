/**
 * The agent daemon: loads the config, keeps one {@link ProfileRuntime} per
 * profile (one signer, one credentials cache), serves the v1 protocol on a
 * private Unix socket and, when configured, the loopback IMDSv2/ECS endpoint.
 * The CLI wires signals to {@link Agent.reload} (SIGHUP) and {@link Agent.close}
 * (SIGTERM/SIGINT); this module never exits the process.
 */
import { createServer, type Server } from "node:http";
import { dirname, resolve } from "node:path";
import type { Logger } from "winston";
import { RaError } from "../errors";
import { logger as defaultLogger } from "../log/logger";
import type { ProfileBackend } from "./backend";
import type { CachePolicy } from "./cache";
import { describeError } from "./cache";
import type { Clock } from "./clock";
import { systemClock } from "./clock";
import { hasInlinePin, loadAgentConfig, type AgentConfig, type ProfileConfig, type ServeConfig } from "./config";
import { DEFAULT_LIMITS, hardenServer, serverOptions, type HttpLimits } from "./http-util";
import { startMetadataServer, type MetadataServer } from "./metadata-server";
import { ProfileRuntime, type ProfileStatus } from "./profile-runtime";
import { createProtocolHandler } from "./protocol";
import { defaultSocketPath } from "./socket-path";
import { claimSocketPath, listenOnSocket, prepareSocketDirectory, removeOwnSocket, type SocketIdentity } from "./socket-listener";

/** Options of {@link Agent.start}. */
export interface AgentOptions {
  /** Config file path. */
  configPath: string;
  /** Socket path; wins over the config file's `socket` and the default. */
  socketPath?: string;
  /** The per-profile operations; default: the real signer and Roles Anywhere client. */
  backend?: ProfileBackend;
  log?: Logger;
  clock?: Clock;
  random?: () => number;
  cachePolicy?: Partial<CachePolicy>;
  limits?: Partial<HttpLimits>;
  /** Environment for config expansion and the default socket path. */
  env?: NodeJS.ProcessEnv;
}

/** `GET /v1/status`. */
export interface AgentStatus {
  protocol: "v1";
  pid: number;
  startedAt: string;
  uptimeSeconds: number;
  config: string;
  socket: string;
  lastReload?: { at: string; ok: boolean; error?: { kind: string; code: string; message: string } };
  serve?: { profile: string; imdsEndpoint?: string; ecsFullUri?: string; ecsTokenFile?: string };
  /** Memory of the agent process, in MiB. */
  memory: { rss: number; heapUsed: number; heapTotal: number; external: number };
  profiles: ProfileStatus[];
}

/** What {@link Agent.reload} did. */
export interface ReloadResult {
  ok: boolean;
  error?: unknown;
  added: string[];
  changed: string[];
  removed: string[];
  kept: string[];
}

function memoryMiB(): AgentStatus["memory"] {
  const m = process.memoryUsage();
  const mib = (n: number) => Math.round((n / 1048576) * 10) / 10;
  return { rss: mib(m.rss), heapUsed: mib(m.heapUsed), heapTotal: mib(m.heapTotal), external: mib(m.external) };
}

function sameProfile(a: ProfileConfig, b: ProfileConfig): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function sameServe(a: ServeConfig | undefined, b: ServeConfig | undefined): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/** A running agent. */
export class Agent {
  private readonly profiles = new Map<string, ProfileRuntime>();
  private server?: Server;
  private socket?: SocketIdentity;
  private metadata?: MetadataServer;
  private readonly startedAt: number;
  private lastReload?: { at: number; ok: boolean; error?: unknown };
  private closing?: Promise<void>;
  readonly log: Logger;
  private readonly clock: Clock;
  readonly limits: HttpLimits;

  private constructor(
    private config: AgentConfig,
    readonly socketPath: string,
    private readonly options: AgentOptions,
    private readonly backend: ProfileBackend,
  ) {
    this.log = options.log ?? defaultLogger;
    this.clock = options.clock ?? systemClock;
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.startedAt = this.clock.now();
  }

  /**
   * Loads the config, opens the socket (and the IMDS/ECS endpoint when configured)
   * and returns the running agent. Profiles with `keepWarm` start fetching at once.
   * @throws RaError for an invalid config, an unsafe socket directory, or a socket in use.
   */
  static async start(options: AgentOptions): Promise<Agent> {
    const env = options.env ?? process.env;
    const config = loadAgentConfig(options.configPath, { env });
    const socketPath = resolve(options.socketPath ?? config.socket ?? defaultSocketPath(env));
    const backend = options.backend ?? (await import("./default-backend")).createDefaultBackend();
    const agent = new Agent(config, socketPath, options, backend);
    try {
      await agent.listen();
    } catch (e) {
      await agent.close();
      throw e;
    }
    return agent;
  }

  /** The IMDS/ECS endpoint, when the config has a `serve` section. */
  get metadataServer(): MetadataServer | undefined {
    return this.metadata;
  }

  /** The runtime of a profile. */
  profile(name: string): ProfileRuntime | undefined {
    return this.profiles.get(name);
  }

  /** Configured profile names. */
  profileNames(): string[] {
    return [...this.profiles.keys()];
  }

  /** Status without secrets. */
  async status(): Promise<AgentStatus> {
    const now = this.clock.now();
    const status: AgentStatus = {
      protocol: "v1",
      pid: process.pid,
      startedAt: new Date(this.startedAt).toISOString(),
      uptimeSeconds: Math.floor((now - this.startedAt) / 1000),
      config: this.config.source,
      socket: this.socketPath,
      memory: memoryMiB(),
      profiles: await Promise.all([...this.profiles.values()].map((p) => p.status())),
    };
    if (this.lastReload) {
      status.lastReload = { at: new Date(this.lastReload.at).toISOString(), ok: this.lastReload.ok };
      if (this.lastReload.error) status.lastReload.error = describeError(this.lastReload.error);
    }
    if (this.config.serve) {
      status.serve = {
        profile: this.config.serve.profile,
        imdsEndpoint: this.metadata?.imdsEndpoint,
        ecsFullUri: this.metadata?.ecsFullUri,
        ecsTokenFile: this.metadata?.ecsTokenFile,
      };
    }
    return status;
  }

  /** Keys and certificates per profile (`GET /v1/keys`). */
  async keys(): Promise<{ profiles: { name: string; keys: unknown[]; error?: unknown }[] }> {
    const out = [];
    for (const p of this.profiles.values()) {
      try {
        out.push({ name: p.name, keys: await p.listKeys() });
      } catch (e) {
        out.push({ name: p.name, keys: [], error: describeError(e) });
      }
    }
    return { profiles: out };
  }

  /**
   * Re-reads the config file. A config that fails to load or validate is
   * ignored (the old one stays, the reason is logged and returned). Unchanged
   * profiles keep their signer and cached credentials, and get another chance
   * after a PIN error; changed and removed profiles are closed.
   */
  async reload(): Promise<ReloadResult> {
    const result: ReloadResult = { ok: false, added: [], changed: [], removed: [], kept: [] };
    let fresh: AgentConfig;
    try {
      fresh = loadAgentConfig(this.config.source, { env: this.options.env ?? process.env });
    } catch (e) {
      this.lastReload = { at: this.clock.now(), ok: false, error: e };
      this.log.error(`configuration reload failed; keeping the previous configuration: ${e instanceof RaError ? e.describe() : String(e)}`);
      result.error = e;
      return result;
    }
    const closing: Promise<void>[] = [];
    const next = new Map<string, ProfileConfig>(fresh.profiles.map((p) => [p.name, p]));
    for (const [name, rt] of this.profiles) {
      const cfg = next.get(name);
      if (!cfg) {
        result.removed.push(name);
        this.profiles.delete(name);
        closing.push(rt.close());
      } else if (!sameProfile(rt.config, cfg)) {
        result.changed.push(name);
        this.profiles.delete(name);
        closing.push(rt.close());
      } else {
        result.kept.push(name);
        await rt.resetAfterReload();
      }
    }
    for (const cfg of fresh.profiles) {
      if (this.profiles.has(cfg.name)) continue;
      if (!result.changed.includes(cfg.name)) result.added.push(cfg.name);
      this.addProfile(cfg);
    }
    if (fresh.socket !== this.config.socket) this.log.warn("the socket path in the config changed; restart the agent to use it");
    const serveChanged = !sameServe(fresh.serve, this.config.serve) || (fresh.serve !== undefined && result.changed.includes(fresh.serve.profile));
    const oldServe = this.config.serve;
    this.config = fresh;
    if (serveChanged) await this.restartMetadata(oldServe);
    await Promise.all(closing);
    this.lastReload = { at: this.clock.now(), ok: true };
    result.ok = true;
    this.log.info("configuration reloaded", { added: result.added, changed: result.changed, removed: result.removed, kept: result.kept });
    return result;
  }

  /** Stops serving, removes the socket, closes every signer. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const server = this.server;
      if (server) {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
          // Requests in progress get a moment to finish, then are cut.
          const t = setTimeout(() => server.closeAllConnections(), 2_000);
          t.unref();
        });
      }
      if (this.socket) removeOwnSocket(this.socket);
      await this.metadata?.close();
      await Promise.all([...this.profiles.values()].map((p) => p.close()));
      this.profiles.clear();
      await this.backend.close?.().catch(() => undefined);
    })();
    return this.closing;
  }

  private addProfile(cfg: ProfileConfig): ProfileRuntime {
    if (hasInlinePin(cfg.certificate) || hasInlinePin(cfg.privateKey)) {
      this.log.warn(`profile "${cfg.name}": the PIN is written in the pkcs11: URI (pin-value); prefer pinFile or pinEnv`);
    }
    const rt = new ProfileRuntime(cfg, {
      backend: this.backend,
      log: this.log,
      clock: this.options.clock,
      random: this.options.random,
      cachePolicy: this.options.cachePolicy,
    });
    this.profiles.set(cfg.name, rt);
    void rt.warm();
    return rt;
  }

  private async listen(): Promise<void> {
    for (const cfg of this.config.profiles) this.addProfile(cfg);
    const dir = dirname(this.socketPath);
    const check = prepareSocketDirectory(dir);
    for (const w of check.warnings) this.log.warn(w);
    if (await claimSocketPath(this.socketPath)) this.log.info(`removed a stale socket at ${this.socketPath}`);
    const server = createServer(serverOptions(this.limits), createProtocolHandler(this));
    hardenServer(server, this.limits, (code) => this.log.debug("agent socket: malformed request closed", { code }));
    this.server = server;
    this.socket = await listenOnSocket(server, this.socketPath);
    server.on("error", (e) => this.log.error(`agent socket error: ${(e as Error).message}`));
    this.log.info(`agent listening on ${this.socketPath}`, { profiles: this.profileNames() });
    await this.startMetadata();
  }

  private async startMetadata(): Promise<void> {
    const serve = this.config.serve;
    if (!serve) return;
    const roleArn = () => this.profiles.get(serve.profile)?.config.roleArn ?? "";
    this.metadata = await startMetadataServer({
      getCredentials: () => {
        const rt = this.profiles.get(this.config.serve?.profile ?? serve.profile);
        if (!rt) return Promise.reject(new RaError("agent", "AGENT_UNKNOWN_PROFILE", `the served profile "${serve.profile}" is not configured`));
        return rt.credentials();
      },
      roleArn: roleArn(),
      host: serve.host,
      port: serve.port,
      imds: serve.imds,
      ecsTokenFile: serve.ecsTokenFile,
      log: this.log,
      clock: this.options.clock,
      limits: this.limits,
    });
    if (serve.hopLimit !== 64) this.log.warn("serve.hopLimit has no effect: the endpoint only listens on loopback, where replies never cross a router");
    if (this.metadata.imdsEndpoint) this.log.info(`IMDSv2 endpoint: AWS_EC2_METADATA_SERVICE_ENDPOINT=${this.metadata.imdsEndpoint}`);
    if (this.metadata.ecsFullUri) {
      this.log.info(`ECS endpoint: AWS_CONTAINER_CREDENTIALS_FULL_URI=${this.metadata.ecsFullUri} AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=${this.metadata.ecsTokenFile}`);
    }
  }

  private async restartMetadata(old: ServeConfig | undefined): Promise<void> {
    this.log.info("the serve section changed; restarting the IMDS/ECS endpoint", { from: old?.port, to: this.config.serve?.port });
    await this.metadata?.close();
    this.metadata = undefined;
    try {
      await this.startMetadata();
    } catch (e) {
      this.log.error(`cannot restart the IMDS/ECS endpoint: ${e instanceof RaError ? e.describe() : String(e)}`);
    }
  }
}
