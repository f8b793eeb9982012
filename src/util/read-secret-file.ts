import { readFileSync, statSync } from "node:fs";
import { usageError } from "../errors";

/**
 * Reads a file that holds one secret (a password), refusing files that group or
 * others can read or write, or that belong to another user: a secret in such a
 * file is no longer secret, and the user should know. One trailing newline is dropped.
 * @throws RaError `SECRET_FILE_UNREADABLE`, `SECRET_FILE_PERMISSIONS`, `SECRET_FILE_EMPTY`
 */
export function readSecretFile(path: string, what: string): string {
  let mode: number;
  let uid: number;
  try {
    ({ mode, uid } = statSync(path));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw usageError("SECRET_FILE_UNREADABLE", `cannot read ${what} ${path}: ${code === "ENOENT" ? "no such file" : code ?? (e as Error).message}`, "check the path and its permissions", e);
  }
  if ((mode & 0o077) !== 0) {
    throw usageError("SECRET_FILE_PERMISSIONS", `${what} ${path} is readable or writable by group or others (mode ${(mode & 0o777).toString(8).padStart(4, "0")})`, `run: chmod 600 ${path}`);
  }
  const me = process.getuid?.();
  if (me !== undefined && uid !== me && uid !== 0) {
    throw usageError("SECRET_FILE_PERMISSIONS", `${what} ${path} is owned by another user (uid ${uid})`, "make it owned by the user running ra-agent (or by root)");
  }
  let text: string;
  try {
    text = readFileSync(path, "utf8").replace(/\r?\n$/, "");
  } catch (e) {
    throw usageError("SECRET_FILE_UNREADABLE", `cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, "check its permissions", e);
  }
  if (text === "") throw usageError("SECRET_FILE_EMPTY", `${what} ${path} is empty`, "write the secret into it, and nothing else");
  return text;
}
