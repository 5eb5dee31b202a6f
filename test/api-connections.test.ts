// Who may change, and which connection gives way (src/api/connections.ts),
// on stand-in sockets: the rules themselves, one case each. The daemon's
// side (real sockets, real credentials, the watchdog) is api-limits.test.ts
// and api-permissions.test.ts.

import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { Connections, isRead, mayChange, type Caller } from '../src/api/connections.js';

class FakeSocket extends EventEmitter {
  destroyed = false;
  constructor(readonly uid: number | undefined) {
    super();
  }
  destroy(): void {
    this.destroyed = true;
    this.emit('close');
  }
}

const caller = (uid: number): Caller => ({ pid: 1000 + uid, uid, gid: 100 });

function table(max: number, maxStreams = 2) {
  const shed: Array<{ uid: number | undefined; busy: boolean }> = [];
  const conns = new Connections(
    { maxConnections: max, maxStreams },
    (s) => {
      const uid = (s as unknown as FakeSocket).uid;
      return uid === undefined ? undefined : caller(uid);
    },
    (c, busy) => shed.push({ uid: c?.uid, busy }),
  );
  const open = (uid: number | undefined): FakeSocket => {
    const s = new FakeSocket(uid);
    conns.add(s as unknown as Socket);
    return s;
  };
  /** A request in progress on `s` until the returned response emits finish. */
  const busy = (s: FakeSocket): EventEmitter => {
    const res = new EventEmitter();
    conns.begin(s as unknown as Socket, res as unknown as ServerResponse);
    return res;
  };
  return { conns, shed, open, busy };
}

describe('who may change', () => {
  it('root and the daemon\'s own uid; nobody else, and not a caller whose credentials are unknown', () => {
    expect(mayChange(caller(0), 998)).toBe(true);
    expect(mayChange(caller(998), 998)).toBe(true);
    expect(mayChange(caller(1000), 998)).toBe(false);
    expect(mayChange(undefined, 998)).toBe(false);
    expect(mayChange(caller(0), 0)).toBe(true);
    expect(mayChange(caller(998), 0)).toBe(false);
  });

  it('GET and HEAD read; every other method changes', () => {
    expect(isRead('GET')).toBe(true);
    expect(isRead('HEAD')).toBe(true);
    for (const m of ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'BREW', undefined]) expect(isRead(m)).toBe(false);
  });
});

describe('beyond the connection limit', () => {
  it('a flood from one uid closes its own oldest idle connection, never another caller\'s', () => {
    const t = table(4);
    const root = t.open(0);
    const flood = [t.open(1000), t.open(1000), t.open(1000)];
    expect(t.conns.size).toBe(4);
    const more = [t.open(1000), t.open(1000), t.open(1000)];
    expect(t.conns.size).toBe(4);
    expect(root.destroyed).toBe(false);
    expect(flood.map((s) => s.destroyed)).toEqual([true, true, true]);
    expect(more.map((s) => s.destroyed)).toEqual([false, false, false]);
    expect(t.shed).toEqual([
      { uid: 1000, busy: false },
      { uid: 1000, busy: false },
      { uid: 1000, busy: false },
    ]);
  });

  it('a newcomer from another uid makes the heaviest uid give way: its oldest idle one, else its oldest busy one', () => {
    const t = table(5);
    const a = [t.open(1000), t.open(1000), t.open(1000), t.open(1000)];
    t.busy(a[0]!);
    const b = t.open(1001);
    const root = t.open(0); // 6 > 5: uid 1000 holds 4, its oldest idle is a[1]
    expect(a.map((s) => s.destroyed)).toEqual([false, true, false, false]);
    t.busy(a[2]!);
    t.busy(a[3]!);
    const root2 = t.open(0); // uid 1000 holds 3, all busy: the oldest goes
    expect(a.map((s) => s.destroyed)).toEqual([true, true, false, false]);
    expect([b.destroyed, root.destroyed, root2.destroyed]).toEqual([false, false, false]);
    expect(t.shed).toEqual([
      { uid: 1000, busy: false },
      { uid: 1000, busy: true },
    ]);
  });

  it('on a tie the newcomer\'s own uid gives way', () => {
    const t = table(3);
    const a = [t.open(1000), t.open(1000)];
    const root = t.open(0);
    const root2 = t.open(0); // 4 > 3: uid 1000 and uid 0 hold 2 each
    expect([...a, root, root2].map((s) => s.destroyed)).toEqual([false, false, true, false]);
  });

  it('a newcomer whose own uid holds the most, all busy, is the one refused; a finished request makes its connection idle again', () => {
    const t = table(3);
    const a = [t.open(1000), t.open(1000)];
    const ra = a.map((s) => t.busy(s));
    const root = t.open(0);
    const c = t.open(1000);
    expect(c.destroyed).toBe(true);
    expect(a.some((s) => s.destroyed) || root.destroyed).toBe(false);
    ra[1]!.emit('finish');
    const d = t.open(1000);
    expect([a[0]!.destroyed, a[1]!.destroyed, d.destroyed]).toEqual([false, true, false]);
  });

  it('callers whose credentials are unknown count as one caller', () => {
    const t = table(2);
    const u1 = t.open(undefined);
    const root = t.open(0);
    const u2 = t.open(undefined);
    expect([u1.destroyed, root.destroyed, u2.destroyed]).toEqual([true, false, false]);
    expect(t.shed).toEqual([{ uid: undefined, busy: false }]);
  });

  it('a connection that closes leaves the table', () => {
    const t = table(2);
    const s = t.open(1000);
    s.destroy();
    expect(t.conns.size).toBe(0);
  });
});

describe('event streams', () => {
  it('are capped per class: those who may only read cannot take root\'s; a closed stream frees its place', () => {
    const t = table(100, 2);
    const stream = (s: FakeSocket): EventEmitter | undefined => {
      const res = new EventEmitter();
      return t.conns.openStream(s as unknown as Socket, res as unknown as ServerResponse) ? res : undefined;
    };
    const reader = t.open(1000);
    const r1 = stream(reader);
    const r2 = stream(t.open(1001));
    expect(r1 && r2).toBeTruthy();
    expect(stream(t.open(1000))).toBeUndefined();
    expect(stream(t.open(undefined))).toBeUndefined();
    const root = t.open(0);
    expect(stream(root)).toBeDefined();
    expect(stream(root)).toBeDefined();
    expect(stream(root)).toBeUndefined();
    r1!.emit('close');
    expect(stream(t.open(1002))).toBeDefined();
  });
});
