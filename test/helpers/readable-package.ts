// The compiled package, copied where any user may read it: tests that run the
// compiled nvgrectl as nobody must not depend on where the repository was
// cloned (under /root, nobody cannot even reach dist/).

import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll } from 'vitest';
import { packageRoot } from '../../src/native.js';

/**
 * A copy of what `make install` puts in its library directory (dist/,
 * package.json, the addon, the production node_modules), in a fresh temporary
 * directory every user may enter and read, removed after the file's tests.
 * Returns the copy's root: run `<root>/dist/src/cli/main.js`. Needs `make build`.
 */
export function readablePackage(): string {
  const root = packageRoot();
  if (!existsSync(join(root, 'dist', 'src', 'cli', 'main.js'))) throw new Error('dist/ is missing: run make build first');
  const dir = mkdtempSync(join(tmpdir(), 'nvgred-pkg-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  // npm lists the production dependencies, nested ones included, parents first.
  const modules = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: root, encoding: 'utf8' })
    .split('\n')
    .filter((p) => p.startsWith(join(root, 'node_modules') + '/'))
    .map((p) => relative(root, p));
  const copied: string[] = [];
  for (const p of ['dist', 'package.json', 'package-lock.json', join('native', 'build', 'nvgred.node'), ...modules]) {
    if (copied.some((c) => p.startsWith(c + '/'))) continue; // inside a copied package already
    cpSync(join(root, p), join(dir, p), { recursive: true });
    copied.push(p);
  }
  // Readable whatever the umask of the clone was (mkdtemp's 0700 included).
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  return dir;
}
