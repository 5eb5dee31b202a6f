// The control API's bounds hold against callers in the socket's group who
// misbehave: more connections than the limit (the caller holding the most
// gives way, a fresh connection from someone else is served, the daemon's
// descriptors are not exhausted, the watchdog keeps being pinged), more
// event streams than the cap (503), a connection that sends nothing, a body
// that never finishes, a client that stops reading its response. The
// daemon runs with 256 descriptors (prlimit) and a stand-in for systemd's
// notification socket (WATCHDOG_USEC=2 s: a ping every second; the unit's
// WatchdogSec is 10 s, so a gap under 2 s leaves systemd 5 times the margin).

import { lstatSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, sleep, type LabProcess } from '../lab/netns.js';
import { HEADERS_TIMEOUT_MS, MAX_CONNECTIONS, MAX_EVENT_STREAMS, REQUEST_TIMEOUT_MS, SEND_TIMEOUT_MS } from '../src/api/server.js';
import type { ApiClient } from './helpers/api.js';
import { RD1, TestDaemon, baseConfig, createHostEnv, type HostEnv } from './helpers/daemon.js';
import { NotifyReceiver } from './helpers/notify.js';

/** The watchdog interval the daemon is given, in seconds: it pings at half of it. */
const WATCHDOG_S = 2;
const lab = new Lab(`nvlim${process.pid % 10000}-`);
let env: HostEnv;
let d: TestDaemon;
let api: ApiClient;
let notify: NotifyReceiver;
const startedAt = Date.now() / 1000;

const NOBODY = 65534;

/**
 * A misbehaving caller, run as another user: opens `count` connections one
 * after another (`silent`: sends nothing; `events`: asks each for the event
 * stream) and holds them, printing every 200 ms one JSON line: how many it
 * opened, how many the daemon closed, the HTTP status of each answer, and
 * the first answer that was not 200.
 */
const FLOOD = `
const net = require('node:net');
const [sock, count, mode] = process.argv.slice(1);
let opened = 0, closed = 0, refusal = null;
const statuses = {};
function one() {
  return new Promise((resolve) => {
    const c = net.createConnection(sock);
    let data = '', counted = false;
    c.on('connect', () => {
      opened++;
      if (mode === 'events') c.write('GET /v1/events HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n');
      else resolve();
    });
    c.on('data', (b) => {
      data += b;
      const m = /^HTTP\\/1\\.1 (\\d+)/.exec(data);
      if (!m || counted || !data.includes('\\r\\n\\r\\n')) return;
      counted = true;
      statuses[m[1]] = (statuses[m[1]] || 0) + 1;
      if (m[1] !== '200') setTimeout(() => { refusal = refusal || data; }, 100);
      resolve();
    });
    c.on('error', () => {});
    c.on('close', () => { closed++; resolve(); });
  });
}
(async () => { for (let i = 0; i < Number(count); i++) await one(); })();
setInterval(() => console.log(JSON.stringify({ opened, closed, statuses, refusal })), 200);
`;

interface FloodReport {
  opened: number;
  closed: number;
  statuses: Record<string, number>;
  refusal: string | null;
}

async function flood(uid: number, gid: number, count: number, mode: 'silent' | 'events') {
  const proc = await lab.spawn('host', ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', process.execPath, '-e', FLOOD, env.socket, String(count), mode]);
  const report = (): FloodReport | undefined => {
    const line = proc
      .tail(4000)
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .pop();
    return line ? (JSON.parse(line) as FloodReport) : undefined;
  };
  /** Wait for a report that satisfies `pred`; fail with the last one. */
  const until = async (pred: (r: FloodReport) => boolean, what: string, ms = 20_000): Promise<FloodReport> => {
    const end = Date.now() + ms;
    for (;;) {
      const r = report();
      if (r && pred(r)) return r;
      if (Date.now() > end) throw new Error(`${what}: last report ${JSON.stringify(r)}`);
      await sleep(100);
    }
  };
  return { proc, until };
}

async function stopFlood(proc: LabProcess): Promise<void> {
  await lab.stop(proc, { timeoutMs: 5000 });
}

/** A raw connection: what it received, and when (ms after opening) it was closed. */
function rawConnection(first?: string) {
  const t0 = Date.now();
  const sock = createConnection(env.socket);
  const state = { text: '', bytes: 0, closedAfterMs: undefined as number | undefined, sock };
  sock.on('connect', () => first !== undefined && sock.write(first));
  sock.on('data', (b: Buffer) => {
    state.bytes += b.length;
    if (state.text.length < 4096) state.text += b.toString('latin1');
  });
  sock.on('error', () => undefined);
  sock.on('close', () => (state.closedAfterMs = Date.now() - t0));
  return state;
}

/** A stream's head, once it is in. */
function openStream(): Promise<ReturnType<typeof rawConnection>> {
  const c = rawConnection('GET /v1/events HTTP/1.1\r\nhost: x\r\n\r\n');
  return new Promise((resolve, reject) => {
    const t = setInterval(() => {
      if (c.text.includes('\r\n\r\n')) {
        clearInterval(t);
        resolve(c);
      } else if (c.closedAfterMs !== undefined) {
        clearInterval(t);
        reject(new Error(`stream closed: ${c.text}`));
      }
    }, 20);
  });
}

/** Seconds between consecutive WATCHDOG=1 pings since `since` (seconds since the epoch). */
function pingGaps(since: number): number[] {
  const pings = notify.watchdogs().filter((w) => w.t >= since);
  return pings.slice(1).map((w, i) => w.t - pings[i]!.t);
}

beforeAll(async () => {
  env = await createHostEnv(lab, 'nvgred-limits-');
  notify = await NotifyReceiver.start(join(env.dir, 'notify.sock'));
  d = new TestDaemon(env, env.writeConfig(baseConfig(env)), [], ['env', `NOTIFY_SOCKET=${notify.path}`, `WATCHDOG_USEC=${WATCHDOG_S * 1_000_000}`, 'prlimit', '--nofile=256:256', '--']);
  await d.start();
  api = d.api;
});

afterAll(async () => {
  notify?.stop();
  const report = await lab.teardown();
  env?.cleanup();
  expect(report.errors).toEqual([]);
});

describe('more connections than the limit', () => {
  it(`a caller flooding ${MAX_CONNECTIONS * 4} idle connections loses its own oldest; root's stream and a fresh status request are served`, async () => {
    const rootStream = await openStream();
    const floodStart = Date.now() / 1000;
    const f = await flood(NOBODY, lstatSync(env.socket).gid, MAX_CONNECTIONS * 4, 'silent');
    try {
      // At most MAX_CONNECTIONS open, root's stream among them: the flooder holds at most MAX_CONNECTIONS - 1.
      const r = await f.until((x) => x.opened === MAX_CONNECTIONS * 4 && x.opened - x.closed <= MAX_CONNECTIONS - 1, 'the flood is shed');
      expect(r.opened - r.closed).toBeGreaterThan(MAX_CONNECTIONS / 2);
      const status = await api.request('GET', '/v1/status', undefined, {}, { timeoutMs: 5000 });
      expect(status.status).toBe(200);
      expect(rootStream.closedAfterMs).toBeUndefined();
      expect(rootStream.text).toMatch(/^HTTP\/1\.1 200 /);
      // one warning for the lot, naming the caller
      const lines = d.logLines().filter((l) => String(l.msg).startsWith('closed an API connection'));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ level: 'warn', uid: NOBODY, busy: false });
      // The flood held for a while: the watchdog keeps being pinged, on time.
      await sleep(5000);
      expect(pingGaps(floodStart).length).toBeGreaterThanOrEqual(4);
      expect(Math.max(...pingGaps(floodStart))).toBeLessThan(WATCHDOG_S);
    } finally {
      await stopFlood(f.proc);
      rootStream.sock.destroy();
    }
  });
});

describe('event streams', () => {
  it(`a caller that may only read gets ${MAX_EVENT_STREAMS}, then 503; root still gets one; the places come back when they close`, async () => {
    const f = await flood(NOBODY, lstatSync(env.socket).gid, MAX_EVENT_STREAMS + 2, 'events');
    try {
      const r = await f.until((x) => x.statuses['200'] === MAX_EVENT_STREAMS && x.statuses['503'] === 2 && x.refusal !== null, 'the streams beyond the cap are refused');
      expect(r.closed).toBe(0);
      expect(r.refusal).toContain('NVGRE_ERR_UNAVAILABLE');
      expect(r.refusal).toContain(`too many event streams: ${MAX_EVENT_STREAMS} are open for callers that may only read`);
      const root = await openStream();
      expect(root.text).toMatch(/^HTTP\/1\.1 200 /);
      root.sock.destroy();
    } finally {
      await stopFlood(f.proc);
    }
    const again = await flood(NOBODY, lstatSync(env.socket).gid, 1, 'events');
    try {
      await again.until((x) => x.statuses['200'] === 1, 'a stream once the others closed');
    } finally {
      await stopFlood(again.proc);
    }
  });
});

describe('slow and silent clients', () => {
  it('a policy large enough that its response outlasts the socket buffers', async () => {
    const doc = (await api.get('/v1/policy')).body;
    doc.customer_routes.push({ routing_domain: RD1, vsid: 6000, destination_prefix: '10.64.0.0/10', next_hop: '0.0.0.0' });
    for (let i = 0; i < 10_000; i++) {
      const mac = `62:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
      // (10.64.0.1 is the new route's gateway address, which the host itself answers: skipped)
      doc.lookup_records.push({ customer_address: `10.64.${(i >> 8) + 1}.${i & 255}`, vsid: 6000, mac, provider_address: '192.168.0.33' });
    }
    const r = await api.put('/v1/policy', doc);
    expect(r.status, r.raw.toString().slice(0, 500)).toBe(200);
  });

  it(`are cut off: silent after ${HEADERS_TIMEOUT_MS / 1000} s (408), a body unfinished after ${REQUEST_TIMEOUT_MS / 1000} s (408), a response not read for ${(2 * SEND_TIMEOUT_MS) / 1000} s at most (closed)`, async () => {
    const silent = rawConnection();
    const trickle = rawConnection('PUT /v1/policy HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"lookup_records": [');
    const reader = rawConnection('GET /v1/policy HTTP/1.1\r\nhost: x\r\n\r\n');
    reader.sock.pause(); // a client that stops reading
    // (A paused client notices that it was dropped only when it reads again.)
    const t0 = Date.now();
    for (let i = 0; silent.closedAfterMs === undefined || trickle.closedAfterMs === undefined || Date.now() - t0 < 2 * SEND_TIMEOUT_MS + 3000; i++) {
      if (Date.now() - t0 > Math.max(HEADERS_TIMEOUT_MS, REQUEST_TIMEOUT_MS, 2 * SEND_TIMEOUT_MS) + 10_000) break;
      // status stays reachable meanwhile
      if (i % 20 === 0) expect((await api.get('/v1/status')).status).toBe(200);
      await sleep(250);
    }
    expect(silent.text, 'the silent connection').toMatch(/^HTTP\/1\.1 408 /);
    expect(silent.closedAfterMs).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 100);
    expect(silent.closedAfterMs).toBeLessThan(HEADERS_TIMEOUT_MS + 5000);
    expect(trickle.text, 'the unfinished body').toMatch(/^HTTP\/1\.1 408 /);
    expect(trickle.closedAfterMs).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS - 100);
    expect(trickle.closedAfterMs).toBeLessThan(REQUEST_TIMEOUT_MS + 5000);
    // The reader was dropped: once it reads again, the response stops short.
    reader.sock.resume();
    for (let i = 0; i < 40 && reader.closedAfterMs === undefined; i++) await sleep(250);
    expect(reader.closedAfterMs, 'the client that stopped reading').toBeDefined();
    const length = Number(/content-length: (\d+)/i.exec(reader.text)?.[1]);
    expect(length).toBeGreaterThan(1_000_000);
    expect(reader.bytes).toBeLessThan(length);
    // Not one of these is the daemon's error.
    expect(d.logLines().filter((l) => l.level === 'error' || l.level === 'fatal')).toEqual([]);
  });
});

describe('all along', () => {
  it('the daemon pinged the watchdog within its WatchdogSec of every previous ping, and still does', async () => {
    await sleep(1000);
    const gaps = pingGaps(startedAt);
    expect(gaps.length).toBeGreaterThan(20);
    expect(Math.max(...gaps)).toBeLessThan(WATCHDOG_S);
    expect(notify.watchdogs().at(-1)!.t).toBeGreaterThan(Date.now() / 1000 - WATCHDOG_S);
  });
});
