// nvgrectl's exit statuses and the one place that maps an HTTP status (or a
// local NvgreError's code) to one of them.

import { statusOf } from '../errors.js';

/** Exit statuses of nvgrectl. Stable: scripts test them. */
export const EXIT = {
  /** Success. */
  OK: 0,
  /** Internal or unexpected error: HTTP 5xx, 405, an unreadable or unwritable file, a timeout. */
  INTERNAL: 1,
  /** Bad command line: unknown object, command or keyword, missing value, not a number. */
  USAGE: 2,
  /** Cannot reach the daemon: socket missing, connection refused, permission denied. */
  UNREACHABLE: 3,
  /** Invalid request or policy: HTTP 400/other 4xx, `config check` failure, reload of a bad file. */
  INVALID: 4,
  /** No such entry: HTTP 404. */
  NOT_FOUND: 5,
  /** Already exists or conflicts with the current state: HTTP 409. */
  CONFLICT: 6,
  /** Too large or unsupported media type: HTTP 413, 415. */
  TOO_LARGE: 7,
  /** Not permitted: HTTP 403, a change asked by a caller who may only read (changes need root or the daemon's user). */
  FORBIDDEN: 8,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The table printed by `nvgrectl help`: [status, meaning]. */
export const EXIT_CODE_TABLE: readonly (readonly [ExitCode, string])[] = [
  [EXIT.OK, 'success'],
  [EXIT.INTERNAL, 'internal or unexpected error (HTTP 5xx), I/O error, timeout'],
  [EXIT.USAGE, 'usage: bad command line'],
  [EXIT.UNREACHABLE, 'cannot reach the daemon (socket missing, connection refused, permission denied)'],
  [EXIT.INVALID, 'invalid request or policy (HTTP 400), config check failed, reload of a bad file'],
  [EXIT.NOT_FOUND, 'not found (HTTP 404)'],
  [EXIT.CONFLICT, 'already exists or conflict (HTTP 409)'],
  [EXIT.TOO_LARGE, 'too large or unsupported media type (HTTP 413, 415)'],
  [EXIT.FORBIDDEN, "not permitted (HTTP 403): changes need root or the daemon's user"],
];

/** The exit status for an HTTP response status. */
export function exitCodeForHttpStatus(status: number): ExitCode {
  if (status >= 200 && status < 300) return EXIT.OK;
  if (status === 404) return EXIT.NOT_FOUND;
  if (status === 409) return EXIT.CONFLICT;
  if (status === 413 || status === 415) return EXIT.TOO_LARGE;
  if (status === 403) return EXIT.FORBIDDEN;
  // 405: the client and the daemon disagree about the API (version skew): unexpected.
  if (status === 405) return EXIT.INTERNAL;
  if (status >= 400 && status < 500) return EXIT.INVALID;
  return EXIT.INTERNAL;
}

/** The exit status for an NvgreError code raised locally (e.g. by `config check`). */
export function exitCodeForErrorCode(code: string): ExitCode {
  return exitCodeForHttpStatus(statusOf(code));
}

/** A failure that ends one command: message to stderr as `Error: …`, then `details` indented. */
export class CliError extends Error {
  readonly exitCode: ExitCode;
  readonly details: string[];
  /** For usage errors: the help command to suggest. */
  readonly hint: string | undefined;

  /** Print nothing: the message was already printed (by a child nvgrectl whose status this carries). */
  readonly quiet: boolean;

  constructor(exitCode: ExitCode, message: string, opts: { details?: string[]; hint?: string; quiet?: boolean } = {}) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
    this.details = opts.details ?? [];
    this.hint = opts.hint;
    this.quiet = opts.quiet ?? false;
  }
}

export function usageError(message: string, hint?: string): CliError {
  return new CliError(EXIT.USAGE, message, hint === undefined ? {} : { hint });
}
