// What the lab does inside a QEMU guest (lab/vm/qemu.ts), with the image's
// busybox and iperf3: ping, and one TCP stream of random bytes hashed at the
// guest's end (busybox nc + sha256sum), to pair with lab/netns.ts's
// tcpReceiver()/tcpSend() in a namespace, or with another guest.

import type { Vm } from './qemu.js';

export interface GuestPing {
  transmitted: number;
  received: number;
  /** Mean round-trip time, or null without replies. */
  rttAvgMs: number | null;
  output: string;
}

/** busybox `ping -c count -W waitS dst` in the guest; throws if ping printed no summary. */
export async function guestPing(vm: Vm, dst: string, opts: { count?: number; waitS?: number; size?: number } = {}): Promise<GuestPing> {
  const count = opts.count ?? 3;
  const waitS = opts.waitS ?? 2;
  const r = await vm.exec(`ping -c ${count} -W ${waitS} -s ${opts.size ?? 56} ${shq(dst)}`, { timeoutMs: (count + waitS + 5) * 1000 });
  return parsePing(vm, dst, r.output, r.code);
}

/**
 * guestPing() to every one of `dsts` at once (one command in the guest, the
 * pings in parallel: a console round trip under TCG costs more than a ping).
 */
export async function guestPingAll(vm: Vm, dsts: readonly string[], opts: { count?: number; waitS?: number } = {}): Promise<Map<string, GuestPing>> {
  const count = opts.count ?? 3;
  const waitS = opts.waitS ?? 2;
  const script = [
    `for t in ${dsts.map(shq).join(' ')}; do ping -c ${count} -W ${waitS} "$t" >"/tmp/ping.$t" 2>&1 & done; wait`,
    `for t in ${dsts.map(shq).join(' ')}; do echo "@@ping $t"; grep -E 'packets transmitted|round-trip|ping:' "/tmp/ping.$t"; rm -f "/tmp/ping.$t"; done`,
  ].join('\n');
  const r = await vm.exec(script, { timeoutMs: (count + waitS + 10) * 1000 });
  const out = new Map<string, GuestPing>();
  for (const part of r.output.split('@@ping ').slice(1)) {
    const nl = part.indexOf('\n');
    const dst = nl < 0 ? part : part.slice(0, nl);
    out.set(dst, parsePing(vm, dst, part.slice(nl + 1), r.code));
  }
  for (const d of dsts) if (!out.has(d)) throw new Error(`VM ${vm.spec.name}: ping ${d}: no result (status ${r.code}): ${r.output.trim().slice(-300)}`);
  return out;
}

function parsePing(vm: Vm, dst: string, output: string, code: number): GuestPing {
  const m = /(\d+) packets transmitted, (\d+) packets received/.exec(output);
  if (!m) throw new Error(`VM ${vm.spec.name}: ping ${dst}: no summary (status ${code}): ${output.trim().slice(-300)}`);
  const rtt = /round-trip min\/avg\/max = [\d.]+\/([\d.]+)\//.exec(output);
  return { transmitted: Number(m[1]), received: Number(m[2]), rttAvgMs: rtt ? Number(rtt[1]) : null, output };
}

export interface GuestStream {
  bytes: number;
  sha256: string;
}

/**
 * Send `bytes` random bytes from the guest to dst:port over one TCP
 * connection (busybox nc, which half-closes at the end of its input); what
 * was sent, hashed in the guest. The listener must be up. The bytes are
 * made first, in the guest's tmpfs (half its RAM: keep `bytes` well under
 * that), so that making them does not slow the transfer.
 */
export async function guestTcpSend(vm: Vm, dst: string, port: number, bytes: number, opts: { timeoutMs?: number } = {}): Promise<GuestStream> {
  const f = `/tmp/tx.${port}`;
  const out = await vm.execOk(
    [`head -c ${bytes} /dev/urandom >${f}`, `nc ${shq(dst)} ${port} <${f} >/dev/null`, `echo "size $(stat -c %s ${f})"`, `sha256sum ${f}`, `rm -f ${f}`].join(' && '),
    { timeoutMs: opts.timeoutMs ?? 120_000 },
  );
  return parseStream(vm, out);
}

export interface GuestTcpListener {
  /** What arrived once the sender closed, hashed in the guest; throws after timeoutMs (default 120 s). */
  result(opts?: { timeoutMs?: number }): Promise<GuestStream>;
}

/** A busybox `nc -l` in the guest's background on `port`, listening when this resolves; it takes one connection and stores what it reads. */
export async function guestTcpListen(vm: Vm, port: number): Promise<GuestTcpListener> {
  const f = `/tmp/rx.${port}`;
  await vm.execOk(
    [
      `rm -f ${f} ${f}.rc`,
      // nc -e: cat gets the connection as stdin. (A plain `nc -l >file` half-closes
      // at once, its stdin being /dev/null, and the sender stops at the FIN.)
      `echo 'exec cat >${f}' >${f}.sh`,
      `(nc -l -p ${port} -e sh ${f}.sh 2>${f}.err; echo $? >${f}.rc) &`,
      // Listening before the sender is told to go.
      `i=0; until netstat -ltn | grep -q ':${port} '; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done`,
    ].join('\n'),
  );
  return {
    async result(opts = {}) {
      const waitS = Math.ceil((opts.timeoutMs ?? 120_000) / 1000);
      const out = await vm.execOk(
        [
          `i=0; until [ -e ${f}.rc ]; do i=$((i+1)); [ $i -le ${waitS * 10} ] || { echo "nc still running after ${waitS} s"; exit 1; }; sleep 0.1; done`,
          `[ "$(cat ${f}.rc)" = 0 ] || { echo "nc exited $(cat ${f}.rc): $(cat ${f}.err)"; exit 1; }`,
          `echo "size $(stat -c %s ${f})"`,
          `sha256sum ${f}`,
          `rm -f ${f} ${f}.rc ${f}.err ${f}.sh`,
        ].join('\n'),
        { timeoutMs: (waitS + 30) * 1000 },
      );
      return parseStream(vm, out);
    },
  };
}

function parseStream(vm: Vm, out: string): GuestStream {
  const size = /^size (\d+)$/m.exec(out);
  const sum = /^([0-9a-f]{64}) /m.exec(out);
  if (!size || !sum) throw new Error(`VM ${vm.spec.name}: no size and sha256 in ${JSON.stringify(out.slice(-300))}`);
  return { bytes: Number(size[1]), sha256: sum[1]! };
}

/** Quote for the guest's sh. */
function shq(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
