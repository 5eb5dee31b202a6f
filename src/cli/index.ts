// nvgrectl, the command-line client of nvgred's control API (docs/api.md),
// iproute2 style: `nvgrectl [-j] [-p] [-s SOCKET] [-batch FILE] OBJECT COMMAND [ARGS...]`.
// `run` is the whole program; src/cli/main.ts only binds it to the process.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { splitLine } from './args.js';
import { ApiClient, DEFAULT_SOCKET, DEFAULT_TIMEOUT_MS } from './client.js';
import { dispatch, mainHelp, type CliIo, type Ctx } from './commands.js';
import { CliError, EXIT, usageError } from './exit.js';
import { readBatchInput } from './files.js';

export { EXIT, EXIT_CODE_TABLE, exitCodeForHttpStatus, exitCodeForErrorCode, CliError, type ExitCode } from './exit.js';
export { ApiClient, DEFAULT_SOCKET, DEFAULT_TIMEOUT_MS, type ApiResponse } from './client.js';
export { OBJECTS, mainHelp, objectHelp, commandHelp, itemPath, listPath, type CliIo, type OutStream } from './commands.js';
export { splitLine } from './args.js';
export { writeFileAtomic } from './files.js';

export interface RunOptions {
  /** Idle timeout of one API request (default 120 s). */
  timeoutMs?: number;
}

interface Globals {
  json: boolean;
  pretty: boolean;
  socket: string | undefined;
  batch: string | undefined;
  help: boolean;
  version: boolean;
  words: string[];
}

function parseGlobals(argv: readonly string[]): Globals {
  const g: Globals = { json: false, pretty: false, socket: undefined, batch: undefined, help: false, version: false, words: [] };
  let i = 0;
  const value = (opt: string): string => {
    const v = argv[i + 1];
    if (v === undefined) throw usageError(`option "${opt}" needs a value`, 'nvgrectl help');
    i++;
    return v;
  };
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') break;
    const opt = a.startsWith('--') ? a.slice(1) : a; // iproute2 accepts --json as -json
    switch (opt) {
      case '-j':
      case '-json':
        g.json = true;
        break;
      case '-p':
      case '-pretty':
        g.pretty = true;
        break;
      case '-s':
      case '-socket':
        g.socket = value(a);
        break;
      case '-b':
      case '-batch':
        g.batch = value(a);
        break;
      case '-h':
      case '-help':
        g.help = true;
        break;
      case '-V':
      case '-version':
        g.version = true;
        break;
      default:
        throw usageError(`option "${a}" is unknown`, 'nvgrectl help');
    }
  }
  g.words = argv.slice(i);
  return g;
}

function version(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        const v = (JSON.parse(readFileSync(pj, 'utf8')) as { version?: unknown }).version;
        if (typeof v === 'string') return v;
      } catch {
        // keep looking
      }
    }
    const up = dirname(dir);
    if (up === dir) return 'unknown';
    dir = up;
  }
}

/** Print an error as `Error: …` (plus its details and a help hint) and return its exit status. */
function report(io: CliIo, e: unknown, prefix = ''): number {
  if (e instanceof CliError) {
    if (e.quiet) return e.exitCode;
    let text = `Error: ${prefix}${e.message}\n`;
    for (const d of e.details) text += `  ${d}\n`;
    if (e.hint) text += `Try "${e.hint}".\n`;
    io.stderr.write(text);
    return e.exitCode;
  }
  const msg = e instanceof Error ? e.message : String(e);
  io.stderr.write(`Error: ${prefix}internal error: ${msg}\n`);
  return EXIT.INTERNAL;
}

function defaultIo(): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env };
}

/**
 * Run nvgrectl with `argv` (the words after the program name) and return the
 * exit status. Never throws; all output goes to `io`.
 */
export async function run(argv: readonly string[], io: CliIo = defaultIo(), opts: RunOptions = {}): Promise<number> {
  let g: Globals;
  try {
    g = parseGlobals(argv);
  } catch (e) {
    return report(io, e);
  }
  if (g.help) {
    io.stdout.write(mainHelp());
    return EXIT.OK;
  }
  if (g.version) {
    io.stdout.write(`nvgrectl ${version()}\n`);
    return EXIT.OK;
  }
  const env = io.env ?? process.env;
  const socket = g.socket ?? (env.NVGRED_SOCKET || DEFAULT_SOCKET);
  const ctx: Ctx = {
    json: g.json || g.pretty,
    pretty: g.pretty,
    client: new ApiClient(socket, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS),
    io,
  };

  if (g.batch !== undefined) {
    if (g.words.length > 0) return report(io, usageError(`-batch takes no OBJECT ("${g.words[0]}")`, 'nvgrectl help'));
    let text: string;
    try {
      text = await readBatchInput(g.batch, io.stdin);
    } catch (e) {
      return report(io, e);
    }
    const lines = text.split(/\r?\n/);
    for (let n = 0; n < lines.length; n++) {
      try {
        const words = splitLine(lines[n]!);
        if (words.length === 0) continue;
        await dispatch(ctx, words);
      } catch (e) {
        return report(io, e, `line ${n + 1}: `);
      }
    }
    return EXIT.OK;
  }

  if (g.words.length === 0) {
    io.stderr.write(mainHelp());
    return EXIT.USAGE;
  }
  try {
    await dispatch(ctx, g.words);
    return EXIT.OK;
  } catch (e) {
    return report(io, e);
  }
}
