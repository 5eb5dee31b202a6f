// Loads the packet core addon (native/build/nvgred.node, built by `make native`).
// The same module serves the compiled daemon (dist/src) and the tests (src).

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as Native from '../native/index.js';

export type NativeCore = typeof Native;

/** The repository (or installed package) root: the directory holding native/. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the nvgred package root');
    dir = up;
  }
}

let core: NativeCore | undefined;

export function native(): NativeCore {
  if (!core) {
    const path = process.env.NVGRED_ADDON ?? join(packageRoot(), 'native', 'build', 'nvgred.node');
    core = createRequire(import.meta.url)(path) as NativeCore;
  }
  return core;
}
