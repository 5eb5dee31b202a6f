// Lab probe, run inside a namespace: `ip netns exec NS node dist/lab/probe.js <command> ...`.
// Prints exactly one JSON line on stdout: the result (exit 0), or
// {"fatal": "..."} (exit 2 for bad arguments, 3 when the socket cannot be opened).
//
//   ping DST [--count N] [--interval MS] [--wait MS] [--size BYTES]
//     ICMP echo requests `interval` ms apart, then wait `wait` ms after the last
//     one (like ping -c -i -W -s). Result {transmitted, received, rttAvgMs, errors, notes}:
//     `errors` counts ICMP unreachable/time-exceeded about our requests, and send errors.
//   inject DST --hex HEX[,HEX...] [--hex HEX ...] [--count N] [--interval MS]
//     Send each packet (hex of a complete IPv4 packet: header and all) to DST
//     through a raw GRE socket with IP_HDRINCL, the whole list `count` times,
//     `interval` ms between sends. The kernel rewrites the IP checksum and total
//     length (and a 0.0.0.0 source). Result {sent, errors, notes}.
//   get URL
//     HTTP GET from inside the namespace (a daemon's /metrics). Result {status, body}.

import { isIPv4 } from 'node:net';
import { parseArgs } from 'node:util';
import raw from 'raw-socket';

class Fatal extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

function usage(message: string): Fatal {
  return new Fatal(`${message} (usage: probe.js ping DST [--count N] [--interval MS] [--wait MS] [--size BYTES] | inject DST --hex HEX[,HEX...] [--count N] [--interval MS])`, 2);
}

function openSocket(what: string, protocol: number): raw.Socket {
  try {
    return raw.createSocket({ protocol });
  } catch (e) {
    throw new Fatal(`cannot open a raw ${what} socket: ${(e as Error).message}`, 3);
  }
}

function output(result: object): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function intOption(values: Record<string, unknown>, name: string, dflt: number, min: number, max: number): number {
  const s = values[name];
  if (s === undefined) return dflt;
  const n = Number(s);
  if (typeof s !== 'string' || !/^\d+$/.test(s) || n < min || n > max) throw usage(`--${name} must be an integer in ${min}..${max}`);
  return n;
}

// ---------------------------------------------------------------------------

function ping(dst: string, count: number, interval: number, wait: number, size: number): void {
  const sock = openSocket('ICMP', raw.Protocol.ICMP);
  const id = process.pid & 0xffff;
  const sentAt = new Map<number, bigint>();
  const answered = new Set<number>();
  const rtts: number[] = [];
  const notes: string[] = [];
  let transmitted = 0;
  let errors = 0;
  let finished = false;

  const finish = (): void => {
    if (finished) return;
    finished = true;
    try {
      sock.close();
    } catch {
      /* closed already */
    }
    const rttAvgMs = rtts.length ? rtts.reduce((a, b) => a + b, 0) / rtts.length : null;
    output({ transmitted, received: answered.size, rttAvgMs, errors, notes: notes.slice(0, 5) });
    process.exit(0);
  };

  sock.on('error', (e) => {
    errors++;
    notes.push(`socket: ${e.message}`);
  });
  sock.on('message', (buf, src) => {
    if (buf.length < 20) return;
    const ihl = (buf[0] & 15) * 4;
    if (buf.length < ihl + 8) return;
    const type = buf[ihl];
    if (type === 0) {
      // Echo reply to one of our requests.
      if (src !== dst || buf.readUInt16BE(ihl + 4) !== id) return;
      const seq = buf.readUInt16BE(ihl + 6);
      const t = sentAt.get(seq);
      if (t === undefined || answered.has(seq)) return;
      answered.add(seq);
      rtts.push(Number(process.hrtime.bigint() - t) / 1e6);
      if (answered.size >= count) finish();
    } else if (type === 3 || type === 11) {
      // Unreachable / time exceeded quoting one of our echo requests.
      const inner = ihl + 8;
      if (buf.length < inner + 20) return;
      const o = inner + (buf[inner] & 15) * 4;
      if (buf.length < o + 8 || buf[o] !== 8 || buf.readUInt16BE(o + 4) !== id) return;
      errors++;
      notes.push(`icmp type ${type} code ${buf[ihl + 1]} from ${src}`);
    }
  });

  const sendOne = (seq: number): void => {
    const b = Buffer.alloc(8 + size);
    b[0] = 8;
    b.writeUInt16BE(id, 4);
    b.writeUInt16BE(seq, 6);
    for (let i = 8; i < b.length; i++) b[i] = i & 0xff;
    raw.writeChecksum(b, 2, raw.createChecksum(b));
    sentAt.set(seq, process.hrtime.bigint());
    sock.send(b, 0, b.length, dst, (err) => {
      if (err) {
        errors++;
        notes.push(`send: ${err.message}`);
      } else transmitted++;
    });
  };

  let seq = 0;
  const tick = (): void => {
    seq++;
    sendOne(seq);
    if (seq < count) setTimeout(tick, interval);
    else setTimeout(finish, wait);
  };
  tick();
}

// ---------------------------------------------------------------------------

async function inject(dst: string, packets: Buffer[], count: number, interval: number): Promise<void> {
  const sock = openSocket('GRE', 47);
  try {
    sock.setOption(raw.SocketLevel.IPPROTO_IP, raw.SocketOption.IP_HDRINCL, 1);
  } catch (e) {
    sock.close();
    throw new Fatal(`cannot set IP_HDRINCL on the raw GRE socket: ${(e as Error).message}`, 3);
  }
  sock.pauseRecv(); // send only: the GRE this socket would also receive is not ours to read
  const notes: string[] = [];
  let sent = 0;
  let errors = 0;
  sock.on('error', (e) => {
    errors++;
    notes.push(`socket: ${e.message}`);
  });
  const send = (p: Buffer): Promise<void> =>
    new Promise((resolve) => {
      sock.send(p, 0, p.length, dst, (err) => {
        if (err) {
          errors++;
          notes.push(`send: ${err.message}`);
        } else sent++;
        resolve();
      });
    });
  for (let round = 0, n = 0; round < count; round++) {
    for (const p of packets) {
      if (n++ > 0 && interval > 0) await new Promise((r) => setTimeout(r, interval));
      await send(p);
    }
  }
  sock.close();
  output({ sent, errors, notes: notes.slice(0, 5) });
}

// ---------------------------------------------------------------------------

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      options: {
        count: { type: 'string' },
        interval: { type: 'string' },
        wait: { type: 'string' },
        size: { type: 'string' },
        hex: { type: 'string', multiple: true },
      },
    });
  } catch (e) {
    throw usage((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw usage('expected one destination (an address, or a URL for get)');
  const dst = positionals[0]!;
  if (command === 'ping') {
    if (values.hex) throw usage('--hex is for inject');
    ping(
      dst,
      intOption(values, 'count', 3, 1, 0xffff),
      intOption(values, 'interval', 200, 0, 3_600_000),
      intOption(values, 'wait', 1000, 0, 3_600_000),
      intOption(values, 'size', 56, 0, 65_000),
    );
  } else if (command === 'inject') {
    if (values.wait !== undefined || values.size !== undefined) throw usage('--wait and --size are for ping');
    if (!isIPv4(dst)) throw usage(`bad IPv4 destination ${JSON.stringify(dst)}`);
    const hex = (values.hex ?? []).flatMap((h) => h.split(','));
    if (!hex.length) throw usage('inject needs --hex');
    const packets = hex.map((h) => {
      if (!/^([0-9a-f]{2})+$/i.test(h) || h.length < 40) throw usage(`--hex ${h.slice(0, 16)}...: not the hex of an IPv4 packet`);
      return Buffer.from(h, 'hex');
    });
    await inject(dst, packets, intOption(values, 'count', 1, 1, 1_000_000), intOption(values, 'interval', 0, 0, 3_600_000));
  } else if (command === 'get') {
    const res = await fetch(dst, { signal: AbortSignal.timeout(10_000) });
    output({ status: res.status, body: await res.text() });
  } else {
    throw usage(`unknown command ${JSON.stringify(command ?? '')}`);
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  output({ fatal: e instanceof Error ? e.message : String(e) });
  process.exit(e instanceof Fatal ? e.code : 1);
});
