"""Runs several tpm2_ptool commands in one Python process.

Part of ra-agent's TPM provisioning (scripts/tpm/provision.ts). Starting
tpm2_ptool (importing its modules) costs more than most of its commands, so the
provisioning steps run through tpm2_ptool's own entry point
(tpm2_pkcs11.tpm2_ptool:main, the console script) in one interpreter.

stdin: a JSON list of argument lists, e.g. [["init", "--path=/x"], ["addtoken", ...]]
(PINs travel here rather than on a command line). stdout: each command's output
followed by a marker line. Stops at the first failing command, exit status 1.
Exit status 3 when the tpm2_pkcs11 package cannot be imported (the caller then
runs tpm2_ptool once per command).
"""
import json
import sys
import traceback

MARK = "@@ra-agent-ptool-step@@"

try:
    from tpm2_pkcs11 import tpm2_ptool
except ImportError as e:
    sys.stderr.write("cannot import tpm2_pkcs11: %s\n" % e)
    sys.exit(3)

steps = json.load(sys.stdin)
for i, argv in enumerate(steps):
    sys.argv = ["tpm2_ptool"] + argv
    try:
        tpm2_ptool.main()
    except SystemExit as e:
        if e.code not in (None, 0):
            sys.stdout.flush()
            if not isinstance(e.code, int):
                sys.stderr.write("%s\n" % e.code)
            sys.stderr.write("tpm2_ptool %s failed\n" % argv[0])
            sys.exit(1)
    except Exception:  # tpm2_ptool reports most failures as exceptions
        sys.stdout.flush()
        sys.stderr.write(traceback.format_exc(limit=1))
        sys.stderr.write("tpm2_ptool %s failed\n" % argv[0])
        sys.exit(1)
    sys.stdout.write("\n%s %d\n" % (MARK, i))
    sys.stdout.flush()
