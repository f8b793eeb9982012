import type { Command } from "commander";
import { addKeySourceOptions, logLevelFrom, rejectUnsupportedFlags, resolvePkcs8Password, type CredentialFlags } from "../credential-options";

interface SignStringFlags extends CredentialFlags {
  format: string;
  digest: string;
}

/**
 * `ra-agent sign-string`: signs aws_signing_helper's fixed test string with the
 * key (a self-test that the key works and matches, without calling AWS).
 */
export function registerSignString(program: Command): void {
  const cmd = program
    .command("sign-string")
    .description("sign the fixed Roles Anywhere test string with the key (self-test; prints the signature)")
    .option("--format <format>", "output: json (hex in a JSON string), text (hex) or bin (raw bytes)", "json")
    .option("--digest <digest>", "SHA256, SHA384 or SHA512", "SHA256");
  addKeySourceOptions(cmd).action(async (flags: SignStringFlags) => {
    rejectUnsupportedFlags(flags as unknown as Record<string, unknown>);
    const { parseDigest, parseSignStringFormat, signTestString, formatSignature } = await import("../../sigv4x509/sign-string");
    const digest = parseDigest(flags.digest);
    const format = parseSignStringFormat(flags.format);
    const level = logLevelFrom(flags);
    if (level) (await import("../../log/logger")).configureLogger({ level });
    const { openSigner } = await import("../../signer/open-signer");
    const signer = await openSigner({
      certificate: flags.certificate,
      privateKey: flags.privateKey,
      pkcs11Lib: flags.pkcs11Lib,
      pkcs8Password: await resolvePkcs8Password(flags.pkcs8Password),
      reusePin: flags.reusePin,
      allowFinalTryLogin: flags.allowFinalTry,
    });
    try {
      process.stdout.write(formatSignature(await signTestString(signer, digest), format));
    } finally {
      await signer.close();
    }
  });
}
