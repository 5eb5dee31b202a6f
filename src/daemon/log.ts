// JSON lines on stdout (journald keeps them), one child logger per
// component. Levels change at run time, for all components or one
// (PUT /v1/log, `nvgrectl log level`): pino children keep their own level,
// so the registry sets each.

import { pino, type Logger, type LevelWithSilent } from 'pino';
import { nvgreError } from '../errors.js';

export type { Logger };

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function isLogLevel(x: unknown): x is LevelWithSilent {
  return (LOG_LEVELS as readonly unknown[]).includes(x);
}

export class Logs {
  readonly root: Logger;
  private readonly components = new Map<string, Logger>();

  constructor(level: LevelWithSilent, host?: string) {
    this.root = pino({
      level,
      base: host ? { host } : {},
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    });
  }

  /** The logger of one component (created once). */
  component(name: string): Logger {
    let log = this.components.get(name);
    if (!log) {
      log = this.root.child({ component: name });
      this.components.set(name, log);
    }
    return log;
  }

  /** Set the level of every logger, or of one component's. */
  setLevel(level: unknown, component?: string): void {
    if (!isLogLevel(level)) throw nvgreError('NVGRE_ERR_VALUE', `level: ${JSON.stringify(level)} is not one of ${LOG_LEVELS.join(', ')}`);
    if (component !== undefined) {
      const log = this.components.get(component);
      if (!log) throw nvgreError('NVGRE_ERR_NOT_FOUND', `no log component ${JSON.stringify(component)} (components: ${[...this.components.keys()].join(', ')})`);
      log.level = level;
      return;
    }
    this.root.level = level;
    for (const log of this.components.values()) log.level = level;
  }

  levels(): { level: string; components: Record<string, string> } {
    return { level: this.root.level, components: Object.fromEntries([...this.components].map(([n, l]) => [n, l.level])) };
  }
}

/**
 * At most one log line per key and interval: `take(key)` says whether to log
 * now and, if so, how many were left out since the last line of that key.
 */
export class LogThrottle {
  private readonly seen = new Map<string, { at: number; suppressed: number }>();

  constructor(private readonly intervalMs: number) {}

  /** The number suppressed since the key's last line, or undefined: do not log now. */
  take(key: string, now = Date.now()): number | undefined {
    const s = this.seen.get(key);
    if (s && now - s.at < this.intervalMs) {
      s.suppressed++;
      return undefined;
    }
    if (this.seen.size > 4096) this.seen.clear(); // keys come from outside: keep the map bounded
    this.seen.set(key, { at: now, suppressed: 0 });
    return s?.suppressed ?? 0;
  }
}
