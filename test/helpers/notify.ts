// A stand-in for systemd's notification socket: a datagram socket (from
// python3: Node has no Unix datagram sockets) recording each message the
// daemon sends, with its arrival time in seconds.
//
//   const n = await NotifyReceiver.start(join(dir, 'notify.sock'));
//   ... run the daemon with NOTIFY_SOCKET=<n.path> WATCHDOG_USEC=1000000 ...
//   n.received; n.watchdogs(); n.stop();

import { spawn, type ChildProcess } from 'node:child_process';

export interface Notification {
  /** Arrival time, seconds since the epoch. */
  t: number;
  msg: string;
}

export class NotifyReceiver {
  readonly received: Notification[] = [];

  private constructor(
    readonly path: string,
    private readonly proc: ChildProcess,
  ) {}

  static async start(path: string): Promise<NotifyReceiver> {
    const proc = spawn('python3', [
      '-u',
      '-c',
      'import socket,sys,json,time\n' +
        's=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\n' +
        `s.bind(${JSON.stringify(path)})\n` +
        'print("bound")\n' +
        'while True:\n' +
        '  d=s.recv(4096)\n' +
        '  print(json.dumps({"t":time.time(),"msg":d.decode()}))\n',
    ]);
    const receiver = new NotifyReceiver(path, proc);
    let buf = '';
    await new Promise<void>((resolve, reject) => {
      proc.once('error', reject);
      proc.once('exit', (code) => reject(new Error(`the notify receiver exited (${code})`)));
      proc.stdout!.on('data', (chunk: Buffer) => {
        buf += chunk.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line === 'bound') resolve();
          else receiver.received.push(JSON.parse(line) as Notification);
        }
      });
    });
    return receiver;
  }

  /** The WATCHDOG=1 pings received. */
  watchdogs(): Notification[] {
    return this.received.filter((r) => r.msg === 'WATCHDOG=1');
  }

  stop(): void {
    this.proc.kill('SIGKILL');
  }
}
