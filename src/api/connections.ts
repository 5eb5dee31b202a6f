// Who is on each control API connection, what they may do, and what gives
// way when there are too many connections.
//
// Authority. The socket's mode (0660, the daemon's user and group) decides
// who can connect at all. What a connection may do is decided by the
// credentials the kernel recorded when its peer called connect()
// (SO_PEERCRED): they cannot be forged by the peer and do not change
// afterwards, so there is no race between checking and acting. Anyone
// connected may read (GET); changing anything (every other method: policy,
// reload, log levels, config save) needs uid 0 or the daemon's own uid.
// A caller whose credentials cannot be read may only read.
//
// Bounds. At most `maxConnections` connections are open. When one more
// arrives, the caller (uid) holding the most connections gives way: its
// oldest idle connection (no request in progress: silent since connect, or
// kept alive between requests) is closed; if it has none and it is not the
// newcomer's uid, its oldest connection is. So a flood of connections from
// one uid closes only its own, and a fresh connection from anyone else is
// served. Event streams are capped separately, per class of caller: the
// callers that may only read cannot take the streams root needs.

import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** The peer of a connection, as the kernel recorded it at connect(). */
export interface Caller {
  pid: number;
  uid: number;
  gid: number;
}

/** GET and HEAD read; every other method changes something. */
export function isRead(method: string | undefined): boolean {
  return method === 'GET' || method === 'HEAD';
}

/** Root and the daemon's own user may change; an unknown caller may not. */
export function mayChange(caller: Caller | undefined, daemonUid: number = process.geteuid?.() ?? 0): boolean {
  return caller !== undefined && (caller.uid === 0 || caller.uid === daemonUid);
}

export interface ConnectionLimits {
  maxConnections: number;
  /** Open event streams per class of caller (those that may change, those that may only read). */
  maxStreams: number;
}

interface Conn {
  socket: Socket;
  caller: Caller | undefined;
  /** Order of arrival. */
  seq: number;
  /** Requests whose response is not finished yet. */
  inProgress: number;
}

/** uid, or -1 for a caller whose credentials are unknown. */
const who = (c: Conn): number => c.caller?.uid ?? -1;

export class Connections {
  private readonly open = new Map<Socket, Conn>();
  private seq = 0;
  private readonly streams = { change: 0, read: 0 };

  constructor(
    readonly limits: ConnectionLimits,
    /** The credentials of a new connection's peer (undefined if they cannot be read). */
    private readonly identify: (socket: Socket) => Caller | undefined,
    /** Told about each connection closed to make room. */
    private readonly onShed: (shed: Caller | undefined, busy: boolean) => void = () => undefined,
  ) {}

  get size(): number {
    return this.open.size;
  }

  /** A new connection: remember who it is; beyond the limit, one connection gives way. */
  add(socket: Socket): void {
    const conn: Conn = { socket, caller: this.identify(socket), seq: ++this.seq, inProgress: 0 };
    this.open.set(socket, conn);
    socket.once('close', () => this.open.delete(socket));
    if (this.open.size > this.limits.maxConnections) this.shed(conn);
  }

  caller(socket: Socket): Caller | undefined {
    return this.open.get(socket)?.caller;
  }

  /** A request on `socket` is in progress until its response finishes or closes. */
  begin(socket: Socket, res: ServerResponse): void {
    const conn = this.open.get(socket);
    if (!conn) return;
    conn.inProgress++;
    let done = false;
    const end = (): void => {
      if (done) return;
      done = true;
      conn.inProgress--;
    };
    res.once('finish', end);
    res.once('close', end);
  }

  /**
   * Count an event stream on `socket` until `res` closes; false (nothing
   * counted) when the caller's class already holds `maxStreams`.
   */
  openStream(socket: Socket, res: ServerResponse): boolean {
    const cls = mayChange(this.caller(socket)) ? 'change' : 'read';
    if (this.streams[cls] >= this.limits.maxStreams) return false;
    this.streams[cls]++;
    res.once('close', () => this.streams[cls]--);
    return true;
  }

  private shed(newcomer: Conn): void {
    const counts = new Map<number, number>();
    for (const c of this.open.values()) counts.set(who(c), (counts.get(who(c)) ?? 0) + 1);
    // The uid holding the most connections; on a tie, the newcomer's own.
    let heaviest = who(newcomer);
    for (const [uid, n] of counts) if (n > counts.get(heaviest)!) heaviest = uid;
    let oldest: Conn | undefined;
    let oldestIdle: Conn | undefined;
    for (const c of this.open.values()) {
      if (who(c) !== heaviest) continue;
      if (!oldest || c.seq < oldest.seq) oldest = c;
      if (c.inProgress === 0 && (!oldestIdle || c.seq < oldestIdle.seq)) oldestIdle = c;
    }
    // The newcomer is idle: if its own uid is the heaviest, something idle is always found.
    const victim = oldestIdle ?? oldest!;
    this.open.delete(victim.socket);
    victim.socket.destroy();
    this.onShed(victim.caller, victim.inProgress > 0);
  }
}
