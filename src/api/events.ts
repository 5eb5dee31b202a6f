// Policy events a central policy store can follow (packet flow 4: "report it
// to the central policy store"): the daemon emits into an EventBus; the API
// serves it as Server-Sent Events on GET /v1/events (docs/api.md).
//
//   id: 1732190400000-7
//   event: learned
//   data: {"event":"learned","time":"…","record":{…lookup record…}}
//
// Events are rare (learning is paced by the packet core, at most 100
// addresses a second per worker), so every subscriber gets every event. A
// subscriber that stops reading is disconnected once its unsent output
// passes a bound: a slow follower cannot make the daemon's memory grow. A
// follower that reconnects with Last-Event-ID gets what it missed, as far
// as the bus's short history reaches.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { LookupRecord } from '../model/policy.js';

export const EVENT_TYPES = ['learned', 'changed', 'expired', 'deleted', 'refused'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Why learning refused an address (the `reason` label of nvgre_learning_refused_total). */
export const REFUSAL_REASONS = ['limit', 'static_conflict', 'invalid'] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** How a learned record left the policy other than by expiring. */
export type DeleteCause = 'api' | 'policy' | 'reload' | 'fleet';

export interface PolicyEvent {
  event: EventType;
  /** When it happened, ISO 8601. */
  time: string;
  /** The lookup record (config-file shape): learned, changed (its new form), expired, deleted, or refused (what was offered). */
  record: LookupRecord;
  /** changed: the record before. */
  previous?: LookupRecord;
  /** refused: why. */
  reason?: RefusalReason;
  /** refused, static_conflict: the record that holds the address. */
  existing?: LookupRecord;
  /** refused, invalid: what the policy's validation said. */
  detail?: string;
  /** deleted: through the API (`api`), a bulk apply (`policy`), a config reload (`reload`) or the fleet's store (`fleet`). */
  cause?: DeleteCause;
  /** expired: when the packet core last reported it, ISO 8601. */
  last_seen?: string;
}

export type NewEvent = Omit<PolicyEvent, 'time'> & { time?: string };

export interface SequencedEvent {
  /** `<boot>-<seq>`: unique within one daemon run, increasing. */
  id: string;
  seq: number;
  data: PolicyEvent;
}

export interface EventBusOptions {
  /** Events kept for Last-Event-ID replays. Default 1000. */
  history?: number;
  /** Tells runs apart in event ids. Default: the time the bus was made. */
  boot?: number;
}

type Subscriber = (e: SequencedEvent) => void;
type Closer = () => void;

export class EventBus {
  readonly boot: number;
  private seq = 0;
  private readonly recent: SequencedEvent[] = [];
  private readonly historySize: number;
  private readonly subs = new Set<Subscriber>();
  private readonly closers = new Set<Closer>();

  constructor(opts: EventBusOptions = {}) {
    this.boot = opts.boot ?? Date.now();
    this.historySize = opts.history ?? 1000;
  }

  emit(ev: NewEvent): SequencedEvent {
    const data = { ...ev, time: ev.time ?? new Date().toISOString() } as PolicyEvent;
    const e: SequencedEvent = { id: `${this.boot}-${++this.seq}`, seq: this.seq, data };
    this.recent.push(e);
    if (this.recent.length > this.historySize) this.recent.splice(0, this.recent.length - this.historySize);
    for (const fn of [...this.subs]) {
      try {
        fn(e);
      } catch {
        // a subscriber's failure is its own (it is dropped by its stream)
      }
    }
    return e;
  }

  /** Call `fn` for every event from now on; returns the unsubscribe function. */
  subscribe(fn: Subscriber, onClose?: Closer): () => void {
    this.subs.add(fn);
    if (onClose) this.closers.add(onClose);
    return () => {
      this.subs.delete(fn);
      if (onClose) this.closers.delete(onClose);
    };
  }

  /** Current subscribers (open event streams): for tests and status. */
  get subscribers(): number {
    return this.subs.size;
  }

  /**
   * The events after `lastId` (a Last-Event-ID), or undefined when it is
   * not one of this run's or is older than the history kept.
   */
  since(lastId: string): SequencedEvent[] | undefined {
    const m = /^(\d+)-(\d+)$/.exec(lastId.trim());
    if (!m || Number(m[1]) !== this.boot) return undefined;
    const seq = Number(m[2]);
    if (seq > this.seq) return undefined;
    const first = this.recent[0];
    if (seq < this.seq && (!first || first.seq > seq + 1)) return undefined;
    return this.recent.filter((e) => e.seq > seq);
  }

  /** End every open stream (the daemon is stopping). */
  close(): void {
    for (const c of [...this.closers]) c();
  }
}

export interface StreamOptions {
  /** A `:` comment line this often keeps proxies and idle timeouts away. Default 15 s. */
  heartbeatMs?: number;
  /** Unsent output (bytes) after which a subscriber that does not read is dropped. Default 1 MiB. */
  maxBufferedBytes?: number;
}

export const DEFAULT_HEARTBEAT_MS = 15_000;
export const DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024;

function frame(e: SequencedEvent): string {
  return `id: ${e.id}\nevent: ${e.data.event}\ndata: ${JSON.stringify(e.data)}\n\n`;
}

/**
 * Serve the bus as text/event-stream on `res` until the client goes away or
 * the bus closes. Every listener and timer it sets is removed when the
 * connection closes, however it closes.
 */
export function streamEvents(bus: EventBus, req: IncomingMessage, res: ServerResponse, opts: StreamOptions = {}): void {
  const heartbeatMs = opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  const maxBuffered = opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  let open = true;
  let unsubscribe: () => void = () => undefined;
  let heartbeat: NodeJS.Timeout | undefined;

  const cleanup = (): void => {
    if (!open) return;
    open = false;
    unsubscribe();
    if (heartbeat) clearInterval(heartbeat);
    req.off('close', cleanup);
    res.off('close', cleanup);
    res.off('error', cleanup);
  };
  const write = (text: string): void => {
    if (!open) return;
    if (res.writableLength > maxBuffered) {
      // The follower stopped reading: drop it rather than buffer without bound.
      cleanup();
      res.destroy();
      return;
    }
    res.write(text);
  };

  req.on('close', cleanup);
  res.on('close', cleanup);
  res.on('error', cleanup);
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  // Headers and a first line now: the client knows the stream is open.
  res.write(': nvgred events\nretry: 2000\n\n');
  const lastId = req.headers['last-event-id'];
  if (typeof lastId === 'string' && lastId !== '') {
    for (const e of bus.since(lastId) ?? []) write(frame(e));
  }
  unsubscribe = bus.subscribe(
    (e) => write(frame(e)),
    () => {
      cleanup();
      res.end();
    },
  );
  heartbeat = setInterval(() => write(`: heartbeat ${new Date().toISOString()}\n\n`), heartbeatMs);
  heartbeat.unref();
}
