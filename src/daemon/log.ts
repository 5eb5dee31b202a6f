// JSON lines on stdout (journald keeps them), one child logger per component.
// The root level is shared by every child, so changing it at run time
// changes them all.

import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function createLogger(level: LevelWithSilent = 'info', host?: string): Logger {
  return pino({
    level,
    base: host ? { host } : {},
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
