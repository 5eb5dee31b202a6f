// One libpcap capture (the `cap` addon) into a pcap file or stream, until a
// packet count, a duration or a signal. Per packet the only JS work is the
// copy into PcapWriter's chunk (and a timestamp: `cap` hands over no pcap
// header, so packets are stamped when the addon delivers them — immediate
// mode, one packet per callback — and the original length is the captured
// length; `cap` captures with a fixed snaplen of 65535).
//
// `cap` is a NAN addon: main thread only. It is loaded on first use, so the
// rest of nvgrectl works without it.

import { closeSync, openSync } from 'node:fs';
import { nowMicros, PcapWriter, linkTypeOf, DEFAULT_SNAPLEN, type PcapStream } from './pcap.js';

type CapModule = typeof import('cap').default;
type CapHandle = InstanceType<CapModule['Cap']>;

/** Why a capture could not start or went wrong. */
export type CaptureErrorKind = 'no-such-device' | 'permission' | 'filter' | 'output' | 'unavailable' | 'failed';

export class CaptureError extends Error {
  /** When the output failed mid-capture: what was captured until then. */
  result?: CaptureResult;

  constructor(
    readonly kind: CaptureErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'CaptureError';
  }
}

export type StopReason = 'count' | 'duration' | 'signal' | 'output-closed';

export interface CaptureOptions {
  /** The interface (in the current network namespace), or `any`. */
  device: string;
  /** pcap-filter(7) text; '' captures everything. */
  filter: string;
  /** Stop after this many packets. */
  count?: number;
  /** Stop after this long. */
  durationMs?: number;
  /** A path (created or truncated, mode 0600 when new, fsynced at the end) or a stream such as process.stdout. */
  output: { file: string } | { stream: PcapStream & Partial<NodeJS.EventEmitter> };
  /** Signals that stop the capture cleanly. Default SIGINT, SIGTERM, SIGHUP. */
  signals?: readonly NodeJS.Signals[];
  /** Called once the device is open and the file header is written. */
  onStart?: (info: { linkType: string; linkTypeNumber: number }) => void;
  /** libpcap's kernel buffer. Default 4 MiB. */
  bufferBytes?: number;
}

export interface CaptureResult {
  packets: number;
  /** `cap`'s name of the link type (ETHERNET, LINKTYPE_LINUX_SLL, …). */
  linkType: string;
  stoppedBy: StopReason;
}

let capModule: CapModule | undefined;

/** The `cap` addon, loaded once. */
async function loadCap(): Promise<CapModule> {
  if (capModule) return capModule;
  try {
    capModule = (await import('cap')).default;
  } catch (e) {
    throw new CaptureError('unavailable', `cannot load libpcap (the "cap" package): ${e instanceof Error ? e.message : String(e)}`);
  }
  return capModule;
}

/**
 * Every Cap handle ever made stays referenced: in cap 0.2.1 the handle's
 * destructor touches its libuv poll handle even when open() failed before
 * initializing it, and after close() the poll handle is stopped but never
 * uv_close()d, so letting the garbage collector free either one can crash
 * the process. A CLI makes one or two per run.
 */
const handles = new Set<CapHandle>();

/** Whether libpcap knows `device` in this network namespace. */
async function deviceExists(device: string): Promise<boolean> {
  const cap = await loadCap();
  try {
    return cap.deviceList().some((d) => d.name === device);
  } catch {
    return true; // cannot tell: let open() report it
  }
}

function classifyOpenError(device: string, filter: string, message: string): CaptureError {
  if (/permission|not permitted|EPERM|EACCES/i.test(message)) {
    return new CaptureError(
      'permission',
      `cannot capture on ${device}: permission denied (${message}): run as root, or give the program CAP_NET_RAW and CAP_NET_ADMIN`,
    );
  }
  if (/no such device|doesn't exist|does not exist/i.test(message)) {
    return new CaptureError('no-such-device', `cannot capture on ${device}: no such device in this network namespace (${message})`);
  }
  if (/filter|syntax|parse/i.test(message)) {
    return new CaptureError('filter', `libpcap rejected the filter "${filter}": ${message}`);
  }
  if (/is not up|network is down/i.test(message)) {
    return new CaptureError('failed', `cannot capture on ${device}: the interface is down (${message})`);
  }
  return new CaptureError('failed', `cannot capture on ${device}: ${message}`);
}

function ioWhy(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  switch (err.code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    case 'ENOSPC':
      return 'no space left on device';
    case 'EPIPE':
      return 'the reader closed the pipe';
    default:
      return err.message ?? String(e);
  }
}

/**
 * Open `device` with `filter`, write every packet to `output` as a classic
 * pcap, and resolve when the first of count / duration / signal / a closed
 * output pipe stops it. The file is flushed and fsynced before resolving.
 * Rejects with a CaptureError when the capture cannot start or the output
 * fails (packets captured until then are kept in the file).
 */
export async function runCapture(opts: CaptureOptions): Promise<CaptureResult> {
  const cap = await loadCap();
  if (opts.device !== 'any' && !(await deviceExists(opts.device))) {
    throw new CaptureError('no-such-device', `cannot capture on ${opts.device}: no such device in this network namespace`);
  }
  const c = new cap.Cap();
  handles.add(c);
  // cap copies each packet here (up to its own snaplen, 65535) before the 'packet' event.
  const buf = Buffer.alloc(DEFAULT_SNAPLEN);
  let linkType: string;
  try {
    linkType = c.open(opts.device, opts.filter, opts.bufferBytes ?? 4 * 1024 * 1024, buf);
  } catch (e) {
    throw classifyOpenError(opts.device, opts.filter, e instanceof Error ? e.message : String(e));
  }
  // No packet is delivered before the event loop turns: the output is opened in this same tick.
  const linkTypeNumber = linkTypeOf(linkType);
  if (linkTypeNumber === undefined) {
    c.close();
    throw new CaptureError('failed', `cannot capture on ${opts.device}: unsupported link type "${linkType}"`);
  }
  let fd: number | undefined;
  let writer: PcapWriter;
  try {
    if ('file' in opts.output) {
      fd = openSync(opts.output.file, 'w', 0o600);
      writer = new PcapWriter(fd, { linkType: linkTypeNumber });
    } else {
      writer = new PcapWriter(opts.output.stream, { linkType: linkTypeNumber });
    }
    writer.flush(); // the global header, at once
  } catch (e) {
    c.close();
    if (fd !== undefined) closeSync(fd);
    const name = 'file' in opts.output ? opts.output.file : 'standard output';
    throw new CaptureError('output', `cannot write ${name}: ${ioWhy(e)}`);
  }

  return new Promise<CaptureResult>((resolve, reject) => {
    let stopped = false;
    let durationTimer: NodeJS.Timeout | undefined;
    const signals = opts.signals ?? ['SIGINT', 'SIGTERM', 'SIGHUP'];
    const stream = 'stream' in opts.output ? opts.output.stream : undefined;

    const finish = (reason: StopReason, error?: unknown): void => {
      if (stopped) return;
      stopped = true;
      c.close();
      if (durationTimer) clearTimeout(durationTimer);
      clearInterval(flushTimer);
      stream?.off?.('error', onStreamError);
      let failure = error;
      try {
        if (failure === undefined) writer.end();
      } catch (e) {
        failure = e;
      }
      if (fd !== undefined) {
        try {
          closeSync(fd);
        } catch (e) {
          failure ??= e;
        }
      }
      // Signal handlers stay until now: a second Ctrl-C must not kill us mid-write.
      for (const s of signals) process.off(s, onSignal);
      const result = { packets: writer.packets, linkType, stoppedBy: reason };
      if (failure !== undefined) {
        const name = fd !== undefined && 'file' in opts.output ? opts.output.file : 'standard output';
        const err = new CaptureError('output', `cannot write ${name}: ${ioWhy(failure)}`);
        err.result = result;
        reject(err);
      } else {
        resolve(result);
      }
    };
    const onSignal = (): void => finish('signal');
    const onStreamError = (e: unknown): void => {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED') finish('output-closed');
      else finish('output-closed', e);
    };
    for (const s of signals) process.on(s, onSignal);
    stream?.on?.('error', onStreamError);

    // Packets reach the output at least every 200 ms (a reader of `write -` sees them live).
    const flushTimer = setInterval(() => {
      try {
        writer.flush();
      } catch (e) {
        finish('output-closed', e);
      }
    }, 200);

    const limit = opts.count ?? Infinity;
    c.on('packet', (nbytes: number) => {
      if (stopped) return;
      try {
        writer.packet(buf, nbytes, nowMicros());
      } catch (e) {
        finish('output-closed', e);
        return;
      }
      if (writer.packets >= limit) finish('count');
    });
    if (opts.durationMs !== undefined) durationTimer = setTimeout(() => finish('duration'), opts.durationMs);
    try {
      opts.onStart?.({ linkType, linkTypeNumber });
    } catch {
      // a reporting callback must not break the capture
    }
  });
}
