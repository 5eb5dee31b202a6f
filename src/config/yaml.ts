// YAML text -> plain JS value, strictly: YAML 1.2 core schema only, duplicate
// keys are errors, one document per file, unknown tags are errors, and alias
// expansion is bounded (no "billion laughs"). Every step is linear in the
// text: the control API parses YAML bodies on the event loop.

import { Document, LineCounter, isAlias, isMap, isPair, isScalar, isSeq, parseDocument, visit, type Node } from 'yaml';
import { nvgreError, type FieldError } from '../errors.js';
import type { PathSegment } from './path.js';

/** Upper bound on alias expansion (see the `yaml` package's maxAliasCount). */
export const MAX_ALIAS_COUNT = 100;

export interface ParsedConfigText {
  /** The plain value (null for an empty document). */
  value: unknown;
  doc: Document;
  lineCounter: LineCounter;
}

function where(source: string | undefined, line: number, col: number): string {
  return source ? `${source}:${line}:${col}` : `line ${line}, column ${col}`;
}

/** Operator hints for YAML traps in this file format, from the offending line. */
function hintFor(text: string, lineCounter: LineCounter, line: number): string {
  // The line by its start offset: splitting the text for each of many errors would be quadratic.
  const start = lineCounter.lineStarts[line - 1] ?? text.length;
  const end = text.indexOf('\n', start);
  const src = text.slice(start, end < 0 ? text.length : end);
  // `next_hop: ::` or `fd00::` unquoted: a trailing ':' starts a mapping
  if (/:\s+[0-9A-Fa-f:]*::\s*(#.*)?$/.test(src)) return ' (quote IPv6 addresses that end in "::", e.g. next_hop: "::")';
  return '';
}

/**
 * Offsets of the keys that repeat an earlier scalar key of their mapping.
 * The yaml package's own check (`uniqueKeys`) compares each key with every
 * earlier one: a 128 KiB flow mapping took 7 s, a blocked event loop. This
 * is one pass with a set per mapping.
 */
function duplicateKeys(doc: Document): number[] {
  const offsets: number[] = [];
  visit(doc, {
    Map(_, map) {
      const seen = new Set<unknown>();
      for (const pair of map.items) {
        if (!isScalar(pair.key)) continue;
        if (seen.has(pair.key.value)) offsets.push(pair.key.range?.[0] ?? 0);
        else seen.add(pair.key.value);
      }
    },
  });
  return offsets;
}

/** Parse YAML text keeping the document, for error positions. Throws NVGRE_ERR_YAML. */
export function parseConfigDocument(text: string, source?: string): ParsedConfigText {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, {
    version: '1.2',
    schema: 'core',
    uniqueKeys: false, // checked below, in linear time
    merge: false,
    resolveKnownTags: false,
    intAsBigInt: false,
    strict: true,
    prettyErrors: true,
    logLevel: 'error', // never print; 'silent' would also hide the multiple-documents error
    lineCounter,
  });

  const problems: FieldError[] = [];
  type Found = { offset: number; message: string; pos?: { line: number; col: number } };
  const fromYaml = (e: (typeof doc.errors)[number]): Found => ({ offset: e.pos[0], message: e.message, ...(e.linePos ? { pos: e.linePos[0] } : {}) });
  const errors: Found[] = [...doc.errors.map(fromYaml), ...duplicateKeys(doc).map((offset) => ({ offset, message: 'Map keys must be unique' }))];
  const found = [...errors.sort((a, b) => a.offset - b.offset), ...doc.warnings.map(fromYaml)];
  const hints = new Map<number, string>(); // many errors may share one (long) line
  for (const e of found) {
    const pos = e.pos ?? lineCounter.linePos(e.offset);
    let hint = hints.get(pos.line);
    if (hint === undefined) hints.set(pos.line, (hint = hintFor(text, lineCounter, pos.line)));
    const msg = e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '') + hint;
    problems.push({
      code: 'NVGRE_ERR_YAML',
      path: '',
      value: undefined,
      message: `${where(source, pos.line, pos.col)}: YAML error: ${msg}`,
      line: pos.line,
      column: pos.col,
    });
  }
  if (doc.directives?.yaml.explicit && doc.directives.yaml.version !== '1.2') {
    problems.push({
      code: 'NVGRE_ERR_YAML',
      path: '',
      value: doc.directives.yaml.version,
      message: `${where(source, 1, 1)}: YAML error: %YAML ${doc.directives.yaml.version} is not accepted; the config file is YAML 1.2`,
      line: 1,
      column: 1,
    });
  }
  if (problems.length === 0) {
    try {
      return { value: doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as unknown, doc, lineCounter };
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      const pos = lineCounter.linePos(0);
      problems.push({
        code: 'NVGRE_ERR_YAML',
        path: '',
        value: undefined,
        message: `${source ? `${source}: ` : ''}YAML error: ${msg}`,
        line: pos.line,
        column: pos.col,
      });
    }
  }
  const first = problems[0]!;
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more YAML error${problems.length > 2 ? 's' : ''})` : '';
  throw nvgreError('NVGRE_ERR_YAML', first.message + more, {
    details: problems,
    ...(first.line !== undefined ? { line: first.line } : {}),
    ...(first.column !== undefined ? { column: first.column } : {}),
  });
}

/**
 * Parse config text (YAML 1.2; JSON is a subset) into a plain value:
 * `null` for an empty document. Throws NvgreError NVGRE_ERR_YAML with the
 * line and column of the first problem.
 */
export function parseConfigText(text: string, source?: string): unknown {
  return parseConfigDocument(text, source).value;
}

/**
 * The 1-based line/column of the node at `path` in `doc` (the key, for a
 * mapping entry); the nearest existing ancestor when the path does not exist
 * (e.g. a missing required field).
 */
export function locate(
  doc: Document,
  lineCounter: LineCounter,
  path: readonly PathSegment[],
): { line: number; column: number } | undefined {
  let node: unknown = doc.contents;
  let offset: number | undefined = (node as Node | null)?.range?.[0];
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((it) => isPair(it) && String(isScalar(it.key) ? it.key.value : it.key) === String(seg));
      if (!pair) break;
      const keyNode = pair.key as Node | null;
      offset = keyNode?.range?.[0] ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as Node | undefined;
      if (!item) break;
      offset = item.range?.[0] ?? offset;
      node = item;
    } else {
      break;
    }
  }
  if (offset === undefined) return undefined;
  const p = lineCounter.linePos(offset);
  return { line: p.line, column: p.col };
}
