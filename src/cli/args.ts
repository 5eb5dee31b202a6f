// Command-line grammar helpers, iproute2 style: unique-prefix matching of
// objects and commands, `keyword value` argument lists with one positional
// value, and the tokenizer for -batch lines.

import { usageError } from './exit.js';

/**
 * Resolve `word` against `names`: an exact match, an alias, or a prefix,
 * which means the first name (in `names` order) it begins, as in iproute2
 * (`ip r` is route): the tables list the most used first. Throws a usage
 * error naming `what` when nothing matches.
 */
export function matchWord(
  word: string,
  names: readonly string[],
  what: string,
  hint: string,
  aliases: Readonly<Record<string, string>> = {},
): string {
  if (names.includes(word)) return word;
  const alias = Object.prototype.hasOwnProperty.call(aliases, word) ? aliases[word] : undefined;
  if (alias !== undefined && names.includes(alias)) return alias;
  const hit = word === '' ? undefined : names.find((n) => n.startsWith(word));
  if (hit !== undefined) return hit;
  throw usageError(`${what} "${word}" is unknown`, hint);
}

export function isHelpWord(w: string | undefined): boolean {
  return w === 'help' || w === '-h' || w === '-help' || w === '--help';
}

export type ValueKind = 'string' | 'int';

export interface KeywordSpec {
  /** The record field (or query field) the value goes to. */
  field: string;
  kind: ValueKind;
}

export interface GrammarSpec {
  /** Name of the positional value (e.g. `CA`), if the command takes one. */
  positional?: string;
  /** A keyword that may introduce the positional value explicitly (e.g. `ca`, `name`). */
  positionalKeyword?: string;
  keywords: Readonly<Record<string, KeywordSpec>>;
  /** Bare words allowed as flags (e.g. `all`). */
  flags?: readonly string[];
}

export interface ParsedArgs {
  positional: string | undefined;
  /** keyword -> value (numbers already converted). */
  values: Map<string, string | number>;
  flags: Set<string>;
  /** `help` appeared where a keyword was expected. */
  help: boolean;
}

const INT_RE = /^[0-9]+$/;

/** Parse `[POSITIONAL] keyword value ...` per `spec`. Throws usage errors. */
export function parseKeywords(words: readonly string[], spec: GrammarSpec, hint: string): ParsedArgs {
  const out: ParsedArgs = { positional: undefined, values: new Map(), flags: new Set(), help: false };
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (isHelpWord(w)) {
      out.help = true;
      return out;
    }
    const kw = Object.prototype.hasOwnProperty.call(spec.keywords, w) ? spec.keywords[w] : undefined;
    if (kw !== undefined) {
      if (out.values.has(w)) throw usageError(`duplicate keyword "${w}"`, hint);
      const v = words[i + 1];
      if (v === undefined) throw usageError(`missing value after "${w}"`, hint);
      i++;
      if (kw.kind === 'int') {
        if (!INT_RE.test(v)) throw usageError(`"${w}" needs a number, not "${v}"`, hint);
        out.values.set(w, Number(v));
      } else {
        out.values.set(w, v);
      }
      continue;
    }
    if (spec.flags?.includes(w)) {
      if (out.flags.has(w)) throw usageError(`duplicate keyword "${w}"`, hint);
      out.flags.add(w);
      continue;
    }
    if (spec.positional !== undefined && spec.positionalKeyword !== undefined && w === spec.positionalKeyword) {
      const v = words[i + 1];
      if (v === undefined) throw usageError(`missing value after "${w}"`, hint);
      if (out.positional !== undefined) throw usageError(`${spec.positional} given twice ("${out.positional}", "${v}")`, hint);
      out.positional = v;
      i++;
      continue;
    }
    if (spec.positional !== undefined && out.positional === undefined && (w === '-' || !w.startsWith('-'))) {
      out.positional = w;
      continue;
    }
    throw usageError(`unknown keyword "${w}"`, hint);
  }
  return out;
}

/**
 * Split one -batch line into words: blanks separate words; '…' and "…" quote
 * (backslash escapes inside "…" and outside quotes); an unquoted `#` at the
 * start of a word starts a comment. Throws a usage error on an open quote.
 */
export function splitLine(line: string): string[] {
  const words: string[] = [];
  let i = 0;
  const n = line.length;
  while (i < n) {
    while (i < n && /\s/.test(line[i]!)) i++;
    if (i >= n || line[i] === '#') break;
    let w = '';
    while (i < n && !/\s/.test(line[i]!)) {
      const c = line[i]!;
      if (c === "'") {
        const end = line.indexOf("'", i + 1);
        if (end < 0) throw usageError('unterminated quote');
        w += line.slice(i + 1, end);
        i = end + 1;
      } else if (c === '"') {
        i++;
        for (;;) {
          if (i >= n) throw usageError('unterminated quote');
          const d = line[i]!;
          if (d === '"') {
            i++;
            break;
          }
          if (d === '\\' && i + 1 < n) {
            w += line[i + 1];
            i += 2;
          } else {
            w += d;
            i++;
          }
        }
      } else if (c === '\\' && i + 1 < n) {
        w += line[i + 1];
        i += 2;
      } else {
        w += c;
        i++;
      }
    }
    words.push(w);
  }
  return words;
}
