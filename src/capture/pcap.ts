// The classic libpcap file format (what tcpdump -w writes, what tshark -r
// and Wireshark read): a 24-byte global header, then per packet a 16-byte
// record header (timestamp, captured length, original length) and the
// captured bytes. Little-endian, microsecond timestamps (magic 0xa1b2c3d4).
//
// PcapWriter writes to a file descriptor (synchronous writes) or to a stream
// (process.stdout: `nvgrectl capture … write - | tshark -r -`). Packets are
// copied into one reusable chunk and handed to the output when it fills, on
// flush() and on end(): one write per chunk, not per packet.

import { fsyncSync, writeSync } from 'node:fs';

/** Magic of a microsecond-resolution pcap file, as written in the host's byte order (we write LE). */
export const PCAP_MAGIC = 0xa1b2c3d4;
export const PCAP_VERSION_MAJOR = 2;
export const PCAP_VERSION_MINOR = 4;
export const PCAP_GLOBAL_HEADER_BYTES = 24;
export const PCAP_RECORD_HEADER_BYTES = 16;
/** tcpdump's default snapshot length, written in the global header. */
export const DEFAULT_SNAPLEN = 262144;

/** LINKTYPE_* values (https://www.tcpdump.org/linktypes.html) for the link types `cap` reports. */
export const LINKTYPE = {
  NULL: 0,
  ETHERNET: 1,
  RAW: 101,
  LINUX_SLL: 113,
  IEEE802_11_RADIOTAP: 127,
} as const;

/**
 * The LINKTYPE_ value for the link-type name `cap`'s open() returns
 * ('ETHERNET', 'LINKTYPE_LINUX_SLL', 'RAW', …, or 'Unknown linktype N', where
 * N is libpcap's DLT_ value, which equals the LINKTYPE_ value for every type
 * `cap` does not name). Undefined when the name is not understood.
 */
export function linkTypeOf(capName: string): number | undefined {
  switch (capName) {
    case 'NULL':
      return LINKTYPE.NULL;
    case 'ETHERNET':
      return LINKTYPE.ETHERNET;
    case 'RAW':
      return LINKTYPE.RAW;
    case 'LINKTYPE_LINUX_SLL':
      return LINKTYPE.LINUX_SLL;
    case 'IEEE802_11_RADIO':
      return LINKTYPE.IEEE802_11_RADIOTAP;
    default: {
      const m = /^Unknown linktype (\d+)$/.exec(capName);
      return m ? Number(m[1]) : undefined;
    }
  }
}

/** The 24-byte global header. */
export function pcapGlobalHeader(linkType: number, snaplen: number = DEFAULT_SNAPLEN): Buffer {
  const h = Buffer.alloc(PCAP_GLOBAL_HEADER_BYTES);
  h.writeUInt32LE(PCAP_MAGIC, 0);
  h.writeUInt16LE(PCAP_VERSION_MAJOR, 4);
  h.writeUInt16LE(PCAP_VERSION_MINOR, 6);
  h.writeInt32LE(0, 8); // thiszone: timestamps are UTC
  h.writeUInt32LE(0, 12); // sigfigs
  h.writeUInt32LE(snaplen, 16);
  h.writeUInt32LE(linkType, 20);
  return h;
}

/** Wall-clock time in microseconds since the epoch, with sub-millisecond resolution. */
export function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** A stream the writer can hand chunks to (it never reuses a chunk it gave away). */
export interface PcapStream {
  write(chunk: Uint8Array): unknown;
}

export interface PcapWriterOptions {
  /** LINKTYPE_ value of every packet (LINKTYPE.ETHERNET, or linkTypeOf(cap's name)). */
  linkType: number;
  /** Written in the global header; longer packets are cut to it. Default 262144. */
  snaplen?: number;
  /** Bytes buffered before a write to the output. Default 256 KiB. */
  bufferBytes?: number;
}

/**
 * Writes a classic pcap file: the global header at once (so a reader of a
 * growing file sees a valid file), then records. `out` is a file descriptor
 * (written with writeSync; the caller opens and closes it) or a stream.
 */
export class PcapWriter {
  readonly linkType: number;
  readonly snaplen: number;
  #out: number | PcapStream;
  #chunk: Buffer;
  #used = 0;
  #packets = 0;
  #bytes = 0;

  constructor(out: number | PcapStream, opts: PcapWriterOptions) {
    this.linkType = opts.linkType;
    this.snaplen = opts.snaplen ?? DEFAULT_SNAPLEN;
    this.#out = out;
    this.#chunk = Buffer.allocUnsafe(Math.max(opts.bufferBytes ?? 256 * 1024, PCAP_GLOBAL_HEADER_BYTES));
    pcapGlobalHeader(this.linkType, this.snaplen).copy(this.#chunk, 0);
    this.#used = PCAP_GLOBAL_HEADER_BYTES;
  }

  /** Packets written so far. */
  get packets(): number {
    return this.#packets;
  }

  /** Bytes of the file so far (headers included), written or buffered. */
  get bytes(): number {
    return this.#bytes + this.#used;
  }

  /**
   * Append one packet: the first `length` bytes of `data` (copied now, so
   * `data` may be reused at once), stamped `timestampUs` (microseconds since
   * the epoch, default now). `origLength` is the packet's length on the wire
   * when more than was captured.
   */
  packet(data: Uint8Array, length: number = data.length, timestampUs: number = nowMicros(), origLength: number = length): void {
    const incl = Math.min(length, this.snaplen, data.length);
    const need = PCAP_RECORD_HEADER_BYTES + incl;
    if (need > this.#chunk.length - this.#used) this.flush();
    const sec = Math.floor(timestampUs / 1e6);
    const usec = timestampUs - sec * 1e6;
    if (need > this.#chunk.length) {
      // Larger than the whole chunk: header and bytes go straight out.
      const rec = Buffer.alloc(PCAP_RECORD_HEADER_BYTES);
      writeRecordHeader(rec, 0, sec, usec, incl, Math.max(origLength, incl));
      this.#emit(rec);
      this.#emit(Buffer.from(data.buffer, data.byteOffset, incl));
    } else {
      writeRecordHeader(this.#chunk, this.#used, sec, usec, incl, Math.max(origLength, incl));
      this.#chunk.set(data.subarray(0, incl), this.#used + PCAP_RECORD_HEADER_BYTES);
      this.#used += need;
    }
    this.#packets++;
  }

  /** Hand what is buffered to the output. Throws what the output throws (a file descriptor's write errors). */
  flush(): void {
    if (this.#used === 0) return;
    const n = this.#used;
    this.#used = 0;
    this.#emit(this.#chunk.subarray(0, n));
  }

  /** flush(), then fsync a file descriptor output (a pipe or FIFO, which cannot be synced, is fine). */
  end(): void {
    this.flush();
    if (typeof this.#out === 'number') {
      try {
        fsyncSync(this.#out);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EINVAL' && code !== 'EROFS' && code !== 'ENOTSUP') throw e;
      }
    }
  }

  #emit(bytes: Buffer): void {
    this.#bytes += bytes.length;
    if (typeof this.#out === 'number') {
      let off = 0;
      while (off < bytes.length) off += writeSync(this.#out, bytes, off, bytes.length - off);
    } else {
      // A stream may keep the chunk until it is written: give it a copy.
      this.#out.write(Buffer.from(bytes));
    }
  }
}

function writeRecordHeader(b: Buffer, at: number, sec: number, usec: number, incl: number, orig: number): void {
  b.writeUInt32LE(sec >>> 0, at);
  b.writeUInt32LE(usec, at + 4);
  b.writeUInt32LE(incl, at + 8);
  b.writeUInt32LE(orig, at + 12);
}
