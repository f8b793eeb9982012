import { readFile } from "node:fs/promises";
import { usageError } from "../errors";

/**
 * Reads a file the user named (a flag or config value), turning I/O errors into
 * a usage error that names the file, what it was for, and the reason.
 * @throws RaError `UNREADABLE_FILE`
 */
export async function readUserFile(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const reason = code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : code === "EISDIR" ? "is a directory" : (e as Error).message;
    throw usageError("UNREADABLE_FILE", `cannot read ${what} ${path}: ${reason}`, "check the path and its permissions", e);
  }
}
