// Reading the config file: bytes -> strict UTF-8 -> YAML -> validated Policy.
// Validation errors get the line/column of the field in the file.

import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { configError, isNvgreError, nvgreError, type FieldError } from '../errors.js';
import type { Policy } from '../model/policy.js';
import { parsePath } from './path.js';
import { checkPolicy } from './validate.js';
import { locate, parseConfigDocument } from './yaml.js';

export const DEFAULT_CONFIG_PATH = '/etc/nvgred/nvgred.yaml';
/** Refuse config files larger than this (a million lookup records fit). */
export const DEFAULT_MAX_CONFIG_BYTES = 512 * 1024 * 1024;

export interface LoadOptions {
  /** Largest file accepted, in bytes (NVGRE_ERR_TOO_LARGE beyond). */
  maxBytes?: number;
}

/** Offset of the first byte that is not part of a well-formed UTF-8 sequence, or -1. */
export function firstInvalidUtf8(buf: Uint8Array): number {
  const n = buf.length;
  let i = 0;
  while (i < n) {
    const b = buf[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      else if (b === 0xed) hi = 0x9f; // no UTF-16 surrogates
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      else if (b === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k <= need; k++) {
      const c = buf[i + k];
      if (c === undefined) return i;
      if (k === 1 ? c < lo || c > hi : c < 0x80 || c > 0xbf) return i;
    }
    i += need + 1;
  }
  return -1;
}

/** Decode strict UTF-8 (a leading BOM is dropped). Throws NVGRE_ERR_ENCODING naming the first bad byte. */
export function decodeUtf8(buf: Uint8Array, source?: string): string {
  if (!isUtf8(buf)) {
    const at = Math.max(0, firstInvalidUtf8(buf));
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < at; i++) {
      if (buf[i] === 0x0a) {
        line++;
        lineStart = i + 1;
      }
    }
    const column = at - lineStart + 1;
    const byte = `0x${(buf[at] ?? 0).toString(16).padStart(2, '0')}`;
    throw nvgreError(
      'NVGRE_ERR_ENCODING',
      `${source ? `${source}: ` : ''}not valid UTF-8: byte ${byte} at offset ${at} (line ${line}, byte column ${column}); ${source ?? 'a config document'} must be UTF-8`,
      { line, column, value: at },
    );
  }
  const text = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Give each error the line/column of its field, and put them in file order. */
function addPositions(errors: FieldError[], doc: Parameters<typeof locate>[0], lc: Parameters<typeof locate>[1]): FieldError[] {
  const located = errors.map((e, i) => {
    const pos = locate(doc, lc, parsePath(e.path));
    return { e: pos ? { ...e, line: pos.line, column: pos.column } : e, i };
  });
  located.sort((a, b) => (a.e.line ?? 0) - (b.e.line ?? 0) || (a.e.column ?? 0) - (b.e.column ?? 0) || a.i - b.i);
  return located.map((x) => x.e);
}

/**
 * A document larger than this is read as JSON if it is JSON (JSON is YAML):
 * the YAML parser's tree of it (a million lookup records) would not fit the
 * heap. Such a document's errors carry no line/column, and of duplicate keys
 * the last wins.
 */
export const JSON_ONLY_ABOVE_CHARS = 32 * 1024 * 1024;

/**
 * Parse and validate config text. Throws NVGRE_ERR_YAML (syntax) or
 * NVGRE_ERR_CONFIG (every validation problem, each with its line/column).
 */
export function loadConfigText(text: string, source?: string): Policy {
  if (text.length > JSON_ONLY_ABOVE_CHARS && /^\s*\{/.test(text)) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw nvgreError('NVGRE_ERR_YAML', `${source ? `${source}: ` : ''}a config document this large must be JSON: ${(e as Error).message}`);
    }
    const { policy, errors } = checkPolicy(value);
    if (policy && errors.length === 0) return policy;
    throw configError(errors, source !== undefined ? { source } : {});
  }
  const parsed = parseConfigDocument(text, source);
  const { policy, errors } = checkPolicy(parsed.value);
  if (policy && errors.length === 0) return policy;
  throw configError(addPositions(errors, parsed.doc, parsed.lineCounter), source !== undefined ? { source } : {});
}

/** A config file as read: its policy, and the SHA-256 of its bytes (hex), which tells whether it changed. */
export interface LoadedConfig {
  policy: Policy;
  sha256: string;
}

/** Read, decode, parse and validate a config file. Every failure is an NvgreError. */
export async function loadConfigFile(path: string, opts: LoadOptions = {}): Promise<Policy> {
  return (await readConfigFile(path, opts)).policy;
}

/** loadConfigFile, with the digest of the very bytes the policy came from. */
export async function readConfigFile(path: string, opts: LoadOptions = {}): Promise<LoadedConfig> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_CONFIG_BYTES;
  let buf: Buffer;
  try {
    const fh = await open(path, 'r');
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isFIFO() && !st.isCharacterDevice()) {
        throw nvgreError('NVGRE_ERR_IO', `cannot read config file ${path}: not a regular file`);
      }
      if (st.size > maxBytes) {
        throw nvgreError('NVGRE_ERR_TOO_LARGE', `config file ${path} is ${st.size} bytes; the limit is ${maxBytes}`);
      }
      buf = await fh.readFile();
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (isNvgreError(e)) throw e;
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EACCES' ? 'permission denied' : err.message;
    throw nvgreError('NVGRE_ERR_IO', `cannot read config file ${path}: ${why}${err.code ? ` (${err.code})` : ''}`, { cause: e });
  }
  if (buf.length > maxBytes) {
    throw nvgreError('NVGRE_ERR_TOO_LARGE', `config file ${path} is more than ${maxBytes} bytes`);
  }
  return { policy: loadConfigText(decodeUtf8(buf, path), path), sha256: createHash('sha256').update(buf).digest('hex') };
}
