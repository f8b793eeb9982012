/**
 * One credential-process run: open the signer the user named, call
 * CreateSession once, close everything. The agent keeps signers and the client
 * open instead; this is the direct path.
 */
import type { AwsCredentials } from "../credentials/credentials";
import { openSigner, type SignerSourceOptions } from "../signer/open-signer";
import { parseSessionArns } from "./arn";
import { CreateSessionClient, validateDurationSeconds, type CreateSessionClientOptions, type CreateSessionParams } from "./create-session";

/** What a direct credential request needs besides the key source. */
export type SessionRequest = Omit<CreateSessionParams, "signer">;

/**
 * Opens the signer, calls CreateSession and closes both, whatever happens.
 * @throws RaError from the signer (usage, token, pin) or the service.
 */
export async function obtainCredentials(source: SignerSourceOptions, session: SessionRequest, transport: CreateSessionClientOptions = {}): Promise<AwsCredentials> {
  // Bad ARNs or duration fail before the token is touched: no PIN is spent on a request that cannot succeed.
  parseSessionArns(session.trustAnchorArn, session.profileArn, session.roleArn);
  if (session.durationSeconds !== undefined) validateDurationSeconds(session.durationSeconds);
  const signer = await openSigner({ validAt: session.now?.() ?? new Date(), ...source });
  const client = new CreateSessionClient(transport);
  try {
    return (await client.createSession({ ...session, signer })).credentials;
  } finally {
    await client.close();
    await signer.close();
  }
}
