// Local files: the atomic write of `config save FILE` and reading -batch input.

import { randomBytes } from 'node:crypto';
import { open, readFile, realpath, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { CliError, EXIT } from './exit.js';

function ioMessage(what: string, path: string, e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const why =
    err.code === 'ENOENT'
      ? 'no such file or directory'
      : err.code === 'EACCES' || err.code === 'EPERM'
        ? 'permission denied'
        : err.code === 'EISDIR'
          ? 'is a directory'
          : err.message;
  return `${what} ${path}: ${why}${err.code ? ` (${err.code})` : ''}`;
}

/**
 * Write `data` to `file` atomically: a temporary file in the same directory,
 * fsync, rename over the target, fsync the directory. A reader sees the old
 * file or the new one, never a part. An existing file's mode is kept (and a
 * symlink is written through); a new file gets 0644.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  let target = resolve(file);
  let mode = 0o644;
  try {
    target = await realpath(target);
    mode = (await stat(target)).mode & 0o7777;
  } catch {
    // a new file
  }
  const dir = dirname(target);
  const tmp = join(dir, `.${basename(target)}.nvgrectl-${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.chmod(mode); // the umask does not apply to a copied mode
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw new CliError(EXIT.INTERNAL, ioMessage('cannot write', file, e));
  }
  try {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // some file systems cannot fsync a directory; the rename is done
  }
}

/** The whole text of a -batch file, or of `stdin` for `-`. */
export async function readBatchInput(file: string, stdin: AsyncIterable<unknown> | undefined): Promise<string> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const c of stdin ?? process.stdin) chunks.push(typeof c === 'string' ? Buffer.from(c, 'utf8') : Buffer.from(c as Uint8Array));
    return Buffer.concat(chunks).toString('utf8');
  }
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new CliError(EXIT.INTERNAL, ioMessage('cannot read batch file', file, e));
  }
}
