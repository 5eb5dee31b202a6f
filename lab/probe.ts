// Lab probe, run inside a namespace: `ip netns exec NS node dist/lab/probe.js <command> ...`.
// Prints exactly one JSON line on stdout: the result (exit 0), or
// {"fatal": "..."} (exit 2 for bad arguments, 3 when the socket cannot be opened).
//
//   ping DST [--count N] [--interval MS] [--wait MS] [--size BYTES]
//     ICMP echo requests `interval` ms apart, then wait `wait` ms after the last
//     one (like ping -c -i -W -s); ICMPv6 when DST is an IPv6 address. Result
//     {transmitted, received, rttAvgMs, errors, notes}: `errors` counts ICMP
//     unreachable/time-exceeded (ICMPv6: also packet too big) about our
//     requests, and send errors.
//   inject DST --hex HEX[,HEX...] [--hex HEX ...] [--count N] [--interval MS]
//     Send each packet (hex of a complete IPv4 packet: header and all) to DST
//     through a raw GRE socket with IP_HDRINCL, the whole list `count` times,
//     `interval` ms between sends. The kernel rewrites the IP checksum and total
//     length (and a 0.0.0.0 source). Result {sent, errors, notes}.
//   frames IFNAME --hex HEX[,HEX...] [--count N] [--seconds S]
//     Send each Ethernet frame (hex, any bytes at all) on interface IFNAME
//     with libpcap, the whole list `count` times or, with --seconds, over and
//     over for S seconds, as fast as it goes. Result {sent, errors, notes}.
//   get URL
//     HTTP GET from inside the namespace (a daemon's /metrics). Result {status, body}.
//   tcp-recv ADDR --port P [--wait MS]
//     Listen on ADDR:P, print {"listening": P}, accept one connection, read it
//     to the end and hash it. Result {bytes, sha256, ms, peer} (ms: first byte
//     to end); a fatal after `wait` ms (default 120 s) without the whole stream.
//   tcp-send DST --port P --bytes N [--wait MS]
//     Connect to DST:P, send N bytes of random data, half-close, wait for the
//     peer to close. Result {bytes, sha256, ms, local} (ms: connect to close).

import { createHash, randomFillSync } from 'node:crypto';
import { createServer, connect, isIPv4, isIPv6, type Socket } from 'node:net';
import { createRequire } from 'node:module';
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
  return new Fatal(
    `${message} (usage: probe.js ping DST [--count N] [--interval MS] [--wait MS] [--size BYTES] | inject DST --hex HEX[,HEX...] [--count N] [--interval MS] | frames IFNAME --hex HEX[,HEX...] [--count N] [--seconds S] | get URL | tcp-recv ADDR --port P [--wait MS] | tcp-send DST --port P --bytes N [--wait MS])`,
    2,
  );
}

function openSocket(what: string, protocol: number, addressFamily: raw.AddressFamily = raw.AddressFamily.IPv4): raw.Socket {
  try {
    return raw.createSocket({ protocol, addressFamily, bufferSize: 65_536 });
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

/** The canonical (compressed, lower-case) text of an IPv6 address. */
function canonical6(a: string): string {
  return new URL(`http://[${a.split('%')[0]}]/`).hostname.slice(1, -1);
}

function ping(dst: string, count: number, interval: number, wait: number, size: number): void {
  const v6 = isIPv6(dst);
  const sock = v6
    ? openSocket('ICMPv6', raw.Protocol.ICMPv6, raw.AddressFamily.IPv6)
    : openSocket('ICMP', raw.Protocol.ICMP);
  const dstText = v6 ? canonical6(dst) : dst;
  const ECHO_REQUEST = v6 ? 128 : 8;
  const ECHO_REPLY = v6 ? 129 : 0;
  // Errors about a packet we sent: v4 unreachable, time exceeded; v6 unreachable, too big, time exceeded.
  const ERRORS = v6 ? [1, 2, 3] : [3, 11];
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
    // IPv4 raw sockets read the IP header too; ICMPv6 raw sockets the ICMPv6 message only.
    let at = 0;
    if (!v6) {
      if (buf.length < 20) return;
      at = (buf[0]! & 15) * 4;
    }
    if (buf.length < at + 8) return;
    const type = buf[at];
    const from = v6 ? canonical6(src) : src;
    if (type === ECHO_REPLY) {
      // Echo reply to one of our requests.
      if (from !== dstText || buf.readUInt16BE(at + 4) !== id) return;
      const seq = buf.readUInt16BE(at + 6);
      const t = sentAt.get(seq);
      if (t === undefined || answered.has(seq)) return;
      answered.add(seq);
      rtts.push(Number(process.hrtime.bigint() - t) / 1e6);
      if (answered.size >= count) finish();
    } else if (type !== undefined && ERRORS.includes(type)) {
      // An error quoting one of our echo requests (after the 8-byte ICMP header: the invoking IP header).
      const inner = at + 8;
      const o = v6 ? inner + 40 : buf.length >= inner + 20 ? inner + (buf[inner]! & 15) * 4 : buf.length;
      if (buf.length < o + 8 || buf[o] !== ECHO_REQUEST || buf.readUInt16BE(o + 4) !== id) return;
      errors++;
      const extra = v6 && type === 2 ? ` mtu ${buf.readUInt32BE(at + 4)}` : !v6 && type === 3 && buf[at + 1] === 4 ? ` mtu ${buf.readUInt16BE(at + 6)}` : '';
      notes.push(`icmp${v6 ? 'v6' : ''} type ${type} code ${buf[at + 1]} from ${from}${extra}`);
    }
  });

  const sendOne = (seq: number): void => {
    const b = Buffer.alloc(8 + size);
    b[0] = ECHO_REQUEST;
    b.writeUInt16BE(id, 4);
    b.writeUInt16BE(seq, 6);
    for (let i = 8; i < b.length; i++) b[i] = i & 0xff;
    // The kernel computes ICMPv6 checksums itself (RFC 3542 §3.1).
    if (!v6) raw.writeChecksum(b, 2, raw.createChecksum(b));
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
// TCP: one stream of random bytes, hashed on both ends.

function tcpRecv(addr: string, port: number, wait: number): void {
  const hash = createHash('sha256');
  let bytes = 0;
  let first: bigint | undefined;
  let peer = '';
  const timer = setTimeout(() => {
    output({ fatal: `tcp-recv: no complete stream within ${wait} ms (${bytes} bytes from ${peer || 'nobody'})` });
    process.exit(1);
  }, wait);
  const server = createServer((conn: Socket) => {
    server.close(); // one connection
    peer = `${conn.remoteAddress}:${conn.remotePort}`;
    conn.on('data', (b: Buffer) => {
      first ??= process.hrtime.bigint();
      bytes += b.length;
      hash.update(b);
    });
    conn.on('end', () => {
      const ms = first === undefined ? 0 : Number(process.hrtime.bigint() - first) / 1e6;
      conn.end(() => {
        clearTimeout(timer);
        output({ bytes, sha256: hash.digest('hex'), ms, peer });
        process.exit(0);
      });
    });
    conn.on('error', (e) => {
      output({ fatal: `tcp-recv: ${e.message} after ${bytes} bytes from ${peer}` });
      process.exit(1);
    });
  });
  server.on('error', (e) => {
    output({ fatal: `tcp-recv: ${e.message}` });
    process.exit(3);
  });
  server.listen({ host: addr, port, ipv6Only: isIPv6(addr) }, () => {
    process.stdout.write(`${JSON.stringify({ listening: port })}\n`);
  });
}

function tcpSend(dst: string, port: number, total: number, wait: number): void {
  const hash = createHash('sha256');
  const chunk = Buffer.alloc(256 * 1024);
  let sent = 0;
  let started: bigint | undefined;
  let local = '';
  const timer = setTimeout(() => {
    output({ fatal: `tcp-send: not done within ${wait} ms (${sent} of ${total} bytes written)` });
    process.exit(1);
  }, wait);
  const sock = connect({ host: dst, port }, () => {
    started = process.hrtime.bigint();
    local = `${sock.localAddress}:${sock.localPort}`;
    const pump = (): void => {
      while (sent < total) {
        const n = Math.min(chunk.length, total - sent);
        randomFillSync(chunk, 0, n);
        const piece = Buffer.from(chunk.subarray(0, n)); // write() keeps a reference
        hash.update(piece);
        sent += n;
        if (!sock.write(piece)) {
          sock.once('drain', pump);
          return;
        }
      }
      sock.end();
    };
    pump();
  });
  sock.on('data', () => undefined);
  sock.on('close', (hadError) => {
    clearTimeout(timer);
    if (hadError || started === undefined) return; // reported by 'error'
    output({ bytes: sent, sha256: hash.digest('hex'), ms: Number(process.hrtime.bigint() - started) / 1e6, local });
    process.exit(0);
  });
  sock.on('error', (e) => {
    clearTimeout(timer);
    output({ fatal: `tcp-send: ${e.message} after ${sent} bytes` });
    process.exit(1);
  });
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
  // raw-socket's pending send does not always keep the event loop alive (with
  // node:crypto loaded, the process was seen exiting, status 0 and silent,
  // before the first send completed): hold a timer until the last one has.
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    for (let round = 0, n = 0; round < count; round++) {
      for (const p of packets) {
        if (n++ > 0 && interval > 0) await new Promise((r) => setTimeout(r, interval));
        await send(p);
      }
    }
  } finally {
    clearInterval(keepAlive);
  }
  sock.close();
  output({ sent, errors, notes: notes.slice(0, 5) });
}

// ---------------------------------------------------------------------------

/** Ethernet frames onto an interface: what a VM (or an attacker in one) can send. */
function frames(ifname: string, list: Buffer[], count: number, seconds: number): void {
  const cap = createRequire(import.meta.url)('cap') as typeof import('cap').default;
  const c = new cap.Cap();
  try {
    c.open(ifname, '', 1024 * 1024, Buffer.alloc(65_536));
  } catch (e) {
    throw new Fatal(`cannot open ${ifname} with libpcap: ${(e as Error).message}`, 3);
  }
  const notes: string[] = [];
  let sent = 0;
  let errors = 0;
  const until = seconds ? Date.now() + seconds * 1000 : Infinity;
  for (let round = 0; seconds ? Date.now() < until : round < count; round++) {
    for (const f of list) {
      try {
        c.send(f);
        sent++;
      } catch (e) {
        errors++;
        if (notes.length < 5) notes.push((e as Error).message);
      }
    }
  }
  c.close();
  output({ sent, errors, notes });
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
        port: { type: 'string' },
        bytes: { type: 'string' },
        seconds: { type: 'string' },
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
  } else if (command === 'tcp-recv' || command === 'tcp-send') {
    if (!isIPv4(dst) && !isIPv6(dst)) throw usage(`bad address ${JSON.stringify(dst)}`);
    const port = intOption(values, 'port', 0, 1, 65_535);
    if (!port) throw usage(`${command} needs --port`);
    const wait = intOption(values, 'wait', 120_000, 1, 3_600_000);
    if (command === 'tcp-recv') tcpRecv(dst, port, wait);
    else tcpSend(dst, port, intOption(values, 'bytes', 0, 0, Number.MAX_SAFE_INTEGER), wait);
  } else if (command === 'frames') {
    const hex = (values.hex ?? []).flatMap((h) => h.split(','));
    if (!hex.length) throw usage('frames needs --hex');
    const list = hex.map((h) => {
      if (!/^([0-9a-f]{2})+$/i.test(h)) throw usage(`--hex ${h.slice(0, 16)}...: not hex`);
      return Buffer.from(h, 'hex');
    });
    frames(dst, list, intOption(values, 'count', 1, 1, 100_000_000), intOption(values, 'seconds', 0, 0, 3600));
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
