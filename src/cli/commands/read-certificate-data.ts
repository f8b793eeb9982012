import type { Command } from "commander";
import { usageError } from "../../errors";
import { logLevelFrom, rejectUnsupportedFlags } from "../credential-options";

interface ReadCertificateDataFlags {
  certificate?: string;
  pkcs11Lib?: string;
  json: boolean;
  debug: boolean;
  certSelector?: string;
  systemStoreName?: string;
}

/**
 * `ra-agent read-certificate-data`: for a file, the reference's JSON
 * (keyType, certificateData, serialNumber, supportedAlgorithms); for a pkcs11:
 * URI, every matching certificate with fingerprint, subject, issuer, serial and
 * its exact URI (text as the reference prints it, or `--json`).
 */
export function registerReadCertificateData(program: Command): void {
  program
    .command("read-certificate-data")
    .description("diagnostic: show a certificate file's data, or every certificate a pkcs11: URI matches")
    .option("--certificate <path|uri>", "certificate file, or pkcs11: URI (may match several certificates)")
    .option("--pkcs11-lib <path>", "PKCS#11 module (default: p11-kit-proxy)")
    .option("--json", "with a pkcs11: URI, print JSON instead of text", false)
    .option("--debug", "print debug output to stderr", false)
    .option("--cert-selector <selector>", "certificate store selector (not supported by ra-agent)")
    .option("--system-store-name <name>", "Windows system store (not supported by ra-agent)")
    .action(async (flags: ReadCertificateDataFlags) => {
      rejectUnsupportedFlags(flags as unknown as Record<string, unknown>);
      const level = logLevelFrom(flags);
      if (level) (await import("../../log/logger")).configureLogger({ level });
      if (!flags.certificate) {
        throw usageError("MISSING_FLAG", "missing --certificate", "pass a certificate file or a pkcs11: URI such as 'pkcs11:token=my-token' (see `ra-agent list`)");
      }
      const { isPkcs11Uri, readUserFile } = await import("../../signer/open-signer");
      const x509 = await import("../../x509/certificate-data");
      if (!isPkcs11Uri(flags.certificate)) {
        const { readCertificates } = await import("../../x509/pem");
        const der = readCertificates(await readUserFile(flags.certificate, "--certificate"), `certificate file ${flags.certificate}`)[0];
        process.stdout.write(JSON.stringify(x509.certificateData(der)));
        return;
      }
      const { findCertificates } = await import("../../signer/pkcs11/index");
      const found = await findCertificates(flags.certificate, { modulePath: flags.pkcs11Lib });
      const identities = found.map((c) => x509.certificateIdentity(c.der, c.uri));
      if (flags.json) {
        process.stdout.write(JSON.stringify(identities, null, 2) + "\n");
      } else if (identities.length === 0) {
        process.stdout.write("No matching identities\n");
      } else {
        process.stdout.write("Matching identities\n" + identities.map((id, i) => x509.formatIdentity(i + 1, id)).join(""));
      }
    });
}
