// `nvgrectl monitor`, like `ip monitor`: follows the daemon's event stream
// (GET /v1/events, Server-Sent Events) and prints one line per event:
//
//   learned 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33
//   refused limit 10.0.1.150 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33
//
// or, with -j, each event's JSON on a line. It runs until Ctrl-C (SIGINT) or
// SIGTERM (exit 0), `count N` events, or the daemon ending the stream.

import { CliError, EXIT } from './exit.js';
import type { Ctx } from './commands.js';

export const MONITOR_EVENTS = ['learned', 'changed', 'expired', 'deleted', 'refused'] as const;

/** The stream's heartbeat comes every 15 s: three missed ones mean the daemon is gone. */
export const MONITOR_IDLE_TIMEOUT_MS = 45_000;

export interface SseEvent {
  event: string;
  data: string;
  id: string | undefined;
}

/** An incremental text/event-stream parser (the WHATWG rules nvgred's stream needs). */
export class SseParser {
  private buf = '';
  private event = '';
  private data: string[] = [];
  private id: string | undefined;
  /** The last id seen (to resume with Last-Event-ID). */
  lastId: string | undefined;

  /** Feed text; returns the events it completed. */
  push(text: string): SseEvent[] {
    this.buf += text;
    const out: SseEvent[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) break;
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (m[0] === '\r' && m.index === this.buf.length - 1) break;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      if (line === '') {
        if (this.data.length) {
          out.push({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
          if (this.id !== undefined) this.lastId = this.id;
        }
        this.event = '';
        this.data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') this.event = value;
      else if (field === 'data') this.data.push(value);
      else if (field === 'id' && !value.includes('\0')) this.id = value;
    }
    return out;
  }
}

type Rec = Record<string, unknown>;

const s = (v: unknown): string => (v === undefined || v === null ? '-' : String(v));

function where(r: Rec | undefined): string {
  const x = r ?? {};
  return `${s(x.customer_address)} vsid ${s(x.vsid)} mac ${s(x.mac)} pa ${s(x.provider_address)}`;
}

/**
 * One event as a line, in the words of the other commands:
 * `learned 10.0.1.105 vsid 6000 mac … pa …`,
 * `changed 10.0.1.105 vsid 6000 mac … pa … was mac … pa …`,
 * `refused limit 10.0.1.150 vsid 6000 mac … pa …`,
 * `deleted 10.0.1.105 vsid 6000 mac … pa … by api`.
 */
export function formatEvent(name: string, data: Rec): string {
  const rec = (data.record ?? undefined) as Rec | undefined;
  switch (name) {
    case 'changed': {
      const prev = (data.previous ?? {}) as Rec;
      return `changed ${where(rec)} was mac ${s(prev.mac)} pa ${s(prev.provider_address)}`;
    }
    case 'refused': {
      let line = `refused ${s(data.reason)} ${where(rec)}`;
      const ex = data.existing as Rec | undefined;
      if (ex && typeof ex === 'object') line += ` (${s(ex.type)} mac ${s(ex.mac)} pa ${s(ex.provider_address)})`;
      if (typeof data.detail === 'string') line += `: ${data.detail}`;
      return line;
    }
    case 'deleted':
      return `deleted ${where(rec)}${data.cause !== undefined ? ` by ${s(data.cause)}` : ''}`;
    case 'expired':
      return `expired ${where(rec)}${typeof data.last_seen === 'string' ? ` last_seen ${data.last_seen}` : ''}`;
    default:
      return `${name} ${where(rec)}`;
  }
}

export interface MonitorArgs {
  /** Only these events (empty: all). */
  events: ReadonlySet<string>;
  /** Stop after this many events. */
  count: number | undefined;
}

/** Follow the stream until SIGINT/SIGTERM, `count` events, or its end. */
export async function monitor(ctx: Ctx, args: MonitorArgs): Promise<void> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];
  for (const sig of signals) process.on(sig, onSignal);
  const parser = new SseParser();
  let printed = 0;
  let failure: unknown;
  const onText = (text: string) => {
    if (stop.signal.aborted) return;
    for (const ev of parser.push(text)) {
      if (!(MONITOR_EVENTS as readonly string[]).includes(ev.event)) continue; // newer daemons may say more
      if (args.events.size && !args.events.has(ev.event)) continue;
      let data: Rec;
      try {
        data = JSON.parse(ev.data) as Rec;
      } catch {
        failure = new CliError(EXIT.INTERNAL, `unexpected event from nvgred: ${ev.data.slice(0, 200)}`);
        stop.abort();
        return;
      }
      ctx.io.stdout.write(`${ctx.json ? (ctx.pretty ? JSON.stringify(data, null, 2) : JSON.stringify(data)) : formatEvent(ev.event, data)}\n`);
      printed++;
      if (args.count !== undefined && printed >= args.count) {
        stop.abort();
        return;
      }
    }
  };
  try {
    const how = await ctx.client.follow('/v1/events', onText, { signal: stop.signal, idleTimeoutMs: MONITOR_IDLE_TIMEOUT_MS });
    if (failure) throw failure;
    if (how === 'ended') throw new CliError(EXIT.INTERNAL, 'nvgred ended the event stream (the daemon is stopping or restarting)');
  } finally {
    for (const sig of signals) process.off(sig, onSignal);
  }
}
