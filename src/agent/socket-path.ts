/**
 * Where the agent's socket lives by default. Imported by the fast client, so it
 * must stay free of heavy modules (node:path and node:os only).
 */
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Environment variable that names the agent socket for clients and the agent. */
export const SOCKET_ENV = "RA_AGENT_SOCKET";

/**
 * The default socket path:
 * 1. `$RA_AGENT_SOCKET` when set;
 * 2. `$XDG_RUNTIME_DIR/ra-agent/agent.sock` (a per-user 0700 tmpfs that systemd creates at login);
 * 3. for root without XDG_RUNTIME_DIR: `/run/ra-agent/agent.sock` (systemd's `RuntimeDirectory=ra-agent`);
 * 4. otherwise `$TMPDIR/ra-agent-<uid>/agent.sock` (the agent refuses that directory
 *    unless it belongs to the user and is closed to others).
 */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env[SOCKET_ENV];
  if (explicit) return explicit;
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime) return join(runtime, "ra-agent", "agent.sock");
  const uid = typeof process.getuid === "function" ? process.getuid() : -1;
  if (uid === 0) return "/run/ra-agent/agent.sock";
  return join(tmpdir(), `ra-agent-${uid}`, "agent.sock");
}
