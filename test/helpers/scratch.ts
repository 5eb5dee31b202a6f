// Scratch directories for test files: logs, configs, captures, state.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach } from 'vitest';

/**
 * A directory for this test file (`/tmp/nvgred-<name>-XXXXXX`), removed once
 * its tests are done, or kept, and named, if one of them failed. Call it at
 * the top of the file or of a describe block, before the hooks that use it:
 * it is removed after them.
 */
export function scratchDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `nvgred-${name}-`));
  let failed = false;
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') failed = true;
  });
  afterAll(() => {
    if (failed) console.log(`kept ${dir}: a test failed`);
    else rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}
