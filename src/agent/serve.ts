/**
 * `ra-agent serve` without an agent: one profile built from command-line
 * flags, its own credentials cache, and the loopback IMDSv2 (and optionally ECS)
 * endpoint in front of it. The agent runs the same endpoint from its config's
 * `serve` section, on its shared cache.
 */
import type { Logger } from "winston";
import { RaError } from "../errors";
import type { ProfileBackend } from "./backend";
import type { ProfileConfig } from "./config";
import { startMetadataServer, type MetadataServer } from "./metadata-server";
import { ProfileRuntime } from "./profile-runtime";

/** Options of {@link startStandaloneServe}. */
export interface StandaloneServeOptions {
  profile: ProfileConfig;
  port: number;
  host?: string;
  imds?: boolean;
  ecsTokenFile?: string;
  log: Logger;
  backend?: ProfileBackend;
}

/** A running standalone endpoint. */
export interface StandaloneServe {
  server: MetadataServer;
  runtime: ProfileRuntime;
  close(): Promise<void>;
}

/**
 * Fetches credentials once (so that a wrong flag, key or PIN fails at start, as
 * the reference helper does), then serves them from the cache.
 * @throws RaError from the first fetch when it is a usage, PIN or token error;
 *   `SERVE_LISTEN_FAILED` / `SERVE_NOT_LOOPBACK`.
 */
export async function startStandaloneServe(options: StandaloneServeOptions): Promise<StandaloneServe> {
  const backend = options.backend ?? (await import("./default-backend")).createDefaultBackend();
  const runtime = new ProfileRuntime(options.profile, { backend, log: options.log });
  const closeAll = async () => {
    await runtime.close();
    await backend.close?.();
  };
  try {
    await runtime.credentials();
  } catch (e) {
    if (!(e instanceof RaError) || e.kind === "usage" || e.kind === "pin" || e.kind === "token" || e.kind === "internal") {
      await closeAll();
      throw e;
    }
    options.log.warn(`serve: no credentials yet (${e.code}): ${e.message}; serving anyway, the cache retries`);
  }
  let server: MetadataServer;
  try {
    server = await startMetadataServer({
      getCredentials: () => runtime.credentials(),
      roleArn: options.profile.roleArn,
      host: options.host,
      port: options.port,
      imds: options.imds,
      ecsTokenFile: options.ecsTokenFile,
      log: options.log,
    });
  } catch (e) {
    await closeAll();
    throw e;
  }
  return {
    server,
    runtime,
    close: async () => {
      await server.close();
      await closeAll();
    },
  };
}
