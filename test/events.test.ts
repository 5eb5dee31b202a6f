// The event bus and its Server-Sent Events stream (src/api/events.ts) on a
// plain HTTP server over a Unix socket, and nvgrectl's side of it (the SSE
// parser, ApiClient.follow): frames, heartbeats, Last-Event-ID replays,
// listeners released however a connection ends, a follower that stops
// reading is dropped, close() ends every stream.

import { createServer, request, type ClientRequest, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EventBus, streamEvents, type NewEvent } from '../src/api/events.js';
import { ApiClient } from '../src/cli/client.js';
import { SseParser, formatEvent } from '../src/cli/monitor.js';
import type { LookupRecord } from '../src/model/policy.js';
import { scratchDir } from './helpers/scratch.js';

const dir = scratchDir('events');
const SOCK = join(dir, 'events.sock');
const bus = new EventBus({ history: 5, boot: 1000 });
let server: Server;

const REC: LookupRecord = { customer_address: '10.0.1.105', vsid: 6000, mac: '60:00:60:00:02:05', provider_address: '192.168.0.33', rule: 'encap', type: 'dynamic' };
const learned = (ca = '10.0.1.105'): NewEvent => ({ event: 'learned', record: { ...REC, customer_address: ca } });

beforeAll(async () => {
  server = createServer((req, res) => streamEvents(bus, req, res, { heartbeatMs: 100, maxBufferedBytes: 64 * 1024 }));
  await new Promise<void>((r) => server.listen(SOCK, r));
});

afterAll(async () => {
  bus.close();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

afterEach(async () => {
  // every test leaves no subscriber behind
  for (let i = 0; i < 50 && bus.subscribers > 0; i++) await new Promise((r) => setTimeout(r, 10));
  expect(bus.subscribers).toBe(0);
});

interface Conn {
  req: ClientRequest;
  res: IncomingMessage;
  text: () => string;
  waitFor: (pred: (t: string) => boolean, ms?: number) => Promise<string>;
}

function connect(headers: Record<string, string> = {}): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: SOCK, path: '/v1/events', headers, agent: false });
    req.on('error', reject);
    req.on('response', (res) => {
      let text = '';
      const waiters = new Set<() => void>();
      res.setEncoding('utf8');
      res.on('data', (t: string) => {
        text += t;
        for (const w of [...waiters]) w();
      });
      resolve({
        req,
        res,
        text: () => text,
        waitFor: (pred, ms = 3000) =>
          new Promise((ok, fail) => {
            const check = () => {
              if (!pred(text)) return;
              waiters.delete(check);
              clearTimeout(t);
              ok(text);
            };
            const t = setTimeout(() => {
              waiters.delete(check);
              fail(new Error(`timed out; got:\n${text}`));
            }, ms);
            waiters.add(check);
            check();
          }),
      });
    });
    req.end();
  });
}

async function subscribed(n: number): Promise<void> {
  for (let i = 0; i < 100 && bus.subscribers !== n; i++) await new Promise((r) => setTimeout(r, 10));
  expect(bus.subscribers).toBe(n);
}

describe('GET /v1/events', () => {
  it('is text/event-stream: id, event and data lines per event, a : heartbeat comment', async () => {
    const c = await connect();
    expect(c.res.statusCode).toBe(200);
    expect(c.res.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(c.res.headers['cache-control']).toBe('no-cache');
    await subscribed(1);
    const e = bus.emit(learned());
    bus.emit({ event: 'refused', record: { ...REC, customer_address: '10.0.1.150' }, reason: 'limit' });
    const text = await c.waitFor((t) => t.includes('event: refused') && t.includes(': heartbeat'));
    expect(text.startsWith(': nvgred events\n')).toBe(true);
    expect(text).toContain(`id: ${e.id}\nevent: learned\ndata: ${JSON.stringify(e.data)}\n\n`);
    const p = new SseParser();
    const evs = p.push(text);
    expect(evs.map((x) => x.event)).toEqual(['learned', 'refused']);
    expect(JSON.parse(evs[1]!.data)).toMatchObject({ event: 'refused', reason: 'limit', record: { customer_address: '10.0.1.150' } });
    expect(p.lastId).toBe(`1000-${e.seq + 1}`);
    c.req.destroy();
  });

  it('replays what a follower missed after Last-Event-ID (within the history), nothing for an unknown id', async () => {
    const first = bus.emit(learned('10.0.1.111'));
    bus.emit(learned('10.0.1.112'));
    bus.emit(learned('10.0.1.113'));
    const c = await connect({ 'last-event-id': first.id });
    const text = await c.waitFor((t) => t.includes('10.0.1.113'));
    expect(text).not.toContain('10.0.1.111');
    expect(text).toContain('10.0.1.112');
    c.req.destroy();
    expect(bus.since('999-1')).toBeUndefined(); // another run
    expect(bus.since(`1000-${first.seq - 10}`)).toBeUndefined(); // older than the history
    expect(bus.since(`1000-${first.seq + 2}`)).toEqual([]);
  });

  it('releases its listener and timer however the connection ends (100 followers come and go)', async () => {
    const conns = await Promise.all(Array.from({ length: 100 }, () => connect()));
    await subscribed(100);
    for (const [i, c] of conns.entries()) {
      if (i % 2) c.req.destroy();
      else c.res.destroy();
    }
    await subscribed(0);
    // the server still serves
    const c = await connect();
    await subscribed(1);
    c.req.destroy();
  });

  it('drops a follower that stops reading instead of buffering without bound', async () => {
    const c = await connect();
    await subscribed(1);
    c.res.pause();
    c.req.socket?.pause();
    const big = { event: 'refused', record: REC, reason: 'invalid', detail: 'x'.repeat(8000) } as NewEvent;
    for (let i = 0; i < 400 && bus.subscribers > 0; i++) {
      bus.emit(big);
      await new Promise((r) => setImmediate(r));
    }
    await subscribed(0);
    c.req.destroy();
  });

  it('close() ends every stream', async () => {
    const c = await connect();
    await subscribed(1);
    const ended = new Promise((r) => c.res.on('end', r));
    bus.close();
    await ended;
  });
});

describe("nvgrectl's side", () => {
  it('ApiClient.follow hands over the text as it comes and resolves aborted on abort', async () => {
    const client = new ApiClient(SOCK);
    const stop = new AbortController();
    const p = new SseParser();
    const got: string[] = [];
    const done = client.follow('/v1/events', (t) => {
      for (const e of p.push(t)) {
        got.push(JSON.parse(e.data).record.customer_address);
        if (got.length === 2) stop.abort();
      }
    }, { signal: stop.signal });
    await subscribed(1);
    bus.emit(learned('10.0.1.121'));
    bus.emit(learned('10.0.1.122'));
    expect(await done).toBe('aborted');
    expect(got).toEqual(['10.0.1.121', '10.0.1.122']);
  });

  it('the parser handles CRLF, split chunks, multi-line data and comments', () => {
    const p = new SseParser();
    expect(p.push(': hi\r\nid: 7\r\nevent: learned\r\ndata: {"a":')).toEqual([]);
    expect(p.push('1}\r')).toEqual([]);
    expect(p.push('\n\r\n')).toEqual([{ event: 'learned', data: '{"a":1}', id: '7' }]);
    expect(p.push('data: x\ndata: y\n\n')).toEqual([{ event: 'message', data: 'x\ny', id: '7' }]);
    expect(p.push('event: lonely\n\n')).toEqual([]); // no data: no event
  });

  it('formats each event as one line in the words of the other commands', () => {
    const prev = { ...REC, mac: '60:00:60:00:03:05', provider_address: '192.168.0.11' };
    expect(formatEvent('learned', { record: REC })).toBe('learned 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33');
    expect(formatEvent('changed', { record: prev, previous: REC })).toBe(
      'changed 10.0.1.105 vsid 6000 mac 60:00:60:00:03:05 pa 192.168.0.11 was mac 60:00:60:00:02:05 pa 192.168.0.33',
    );
    expect(formatEvent('refused', { record: REC, reason: 'limit' })).toBe('refused limit 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33');
    expect(formatEvent('refused', { record: REC, reason: 'static_conflict', existing: { ...prev, type: 'static' } })).toBe(
      'refused static_conflict 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33 (static mac 60:00:60:00:03:05 pa 192.168.0.11)',
    );
    expect(formatEvent('deleted', { record: REC, cause: 'api' })).toBe('deleted 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33 by api');
    expect(formatEvent('expired', { record: REC, last_seen: '2026-11-21T12:00:00.000Z' })).toBe(
      'expired 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33 last_seen 2026-11-21T12:00:00.000Z',
    );
  });
});
