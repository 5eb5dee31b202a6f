// Hand-written declarations for raw-socket 1.8.1 (a NAN addon: it does not
// load in worker threads). Only what index.js and src/raw.cc really provide:
// the README also documents a `generateChecksums` option and method, which
// this version does not implement.
//
// The package is CommonJS: import it as `import raw from 'raw-socket'` (its
// module.exports, the only export these declarations give; types are `raw.X`).

declare module 'raw-socket' {
  import { EventEmitter } from 'node:events';

  namespace raw {
    /** `addressFamily` of createSocket(). The object also maps each number back to its name. */
    enum AddressFamily {
      IPv4 = 1,
      IPv6 = 2,
    }

    /**
     * Well-known `protocol` numbers for createSocket() (which accepts any
     * protocol number). The object also maps each number back to its name.
     */
    enum Protocol {
      None = 0,
      ICMP = 1,
      TCP = 6,
      UDP = 17,
      ICMPv6 = 58,
    }

    /** The `level` argument of setOption()/getOption(): the platform's values, no reverse mapping. */
    const SocketLevel: {
      readonly SOL_SOCKET: number;
      readonly IPPROTO_IP: number;
      readonly IPPROTO_IPV6: number;
    };

    /**
     * The `option` argument of setOption()/getOption(): the platform's values,
     * no reverse mapping. (IPV6_HDRINCL exists on Windows only, SO_BINDTODEVICE
     * on Linux only; IPV6_TTL is IPV6_UNICAST_HOPS.)
     */
    const SocketOption: {
      readonly SO_BROADCAST: number;
      readonly SO_RCVBUF: number;
      readonly SO_RCVTIMEO: number;
      readonly SO_SNDBUF: number;
      readonly SO_SNDTIMEO: number;
      readonly SO_BINDTODEVICE: number;
      readonly IP_HDRINCL: number;
      readonly IP_OPTIONS: number;
      readonly IP_TOS: number;
      readonly IP_TTL: number;
      readonly IPV6_TTL: number;
      readonly IPV6_UNICAST_HOPS: number;
      readonly IPV6_V6ONLY: number;
    };

    interface SocketOptions {
      /** Default AddressFamily.IPv4. */
      addressFamily?: AddressFamily;
      /** IP protocol number of the SOCK_RAW socket (a Protocol member or any number). Default 0. */
      protocol?: Protocol | number;
      /** Size of the receive buffer: longer datagrams are truncated. Default 4096. */
      bufferSize?: number;
    }

    /**
     * Called once the datagram was handed to the kernel (`error` null, `bytes`
     * sent) or refused: a bad buffer range or address is reported before any
     * send, without `bytes`; a failing sendto() with `bytes` 0.
     */
    type AfterSendCallback = (error: Error | null, bytes?: number) => void;

    /** A chunk of a buffer for createChecksum(). */
    interface BufferRange {
      buffer: Buffer;
      offset: number;
      length: number;
    }

    /**
     * A raw socket. The OS socket is created by the constructor (which throws,
     * e.g. "Operation not permitted", when it cannot) and keeps the event loop
     * alive until close() or pauseRecv() + pauseSend().
     */
    class Socket extends EventEmitter {
      constructor(options?: SocketOptions);

      /** Whether readable events are not being watched (pauseRecv()). */
      readonly recvPaused: boolean;
      /** Whether writable events are not being watched (true while no send is queued). */
      readonly sendPaused: boolean;

      /**
       * Queue `length` bytes of `buffer` from `offset` for `address` (dotted
       * quad, or compressed IPv6). `beforeCallback` runs right before the
       * datagram is sent (e.g. to set IP_TTL).
       */
      send(buffer: Buffer, offset: number, length: number, address: string, afterCallback: AfterSendCallback): this;
      send(
        buffer: Buffer,
        offset: number,
        length: number,
        address: string,
        beforeCallback: (() => void) | null,
        afterCallback: AfterSendCallback,
      ): this;

      /** Close the OS socket; emits 'close'. */
      close(): this;

      /** setsockopt() with an unsigned integer value (4 bytes). Throws on failure. */
      setOption(level: number, option: number, value: number): void;
      /** setsockopt() with the first `length` bytes of `buffer`. Throws on failure. */
      setOption(level: number, option: number, buffer: Buffer, length: number): void;

      /** getsockopt() into `buffer`; returns the number of bytes written. Throws on failure. */
      getOption(level: number, option: number, buffer: Buffer, length: number): number;

      pauseRecv(): this;
      pauseSend(): this;
      resumeRecv(): this;
      resumeSend(): this;

      /** A datagram was received; for IPv4 raw sockets `buffer` starts with the IP header. `source` is its sender's address. */
      on(event: 'message', listener: (buffer: Buffer, source: string) => void): this;
      /** A send or receive error. After errors of the underlying poll watcher the socket closes itself. */
      on(event: 'error', listener: (error: Error) => void): this;
      on(event: 'close', listener: () => void): this;
      once(event: 'message', listener: (buffer: Buffer, source: string) => void): this;
      once(event: 'error', listener: (error: Error) => void): this;
      once(event: 'close', listener: () => void): this;
    }

    function createSocket(options?: SocketOptions): Socket;

    /**
     * The 16-bit one's complement of the one's complement sum of all the
     * given data, as if it were one buffer (e.g. a pseudo header, then a
     * range of a packet).
     */
    function createChecksum(...data: (Buffer | BufferRange)[]): number;

    /** Write `checksum` big-endian at `offset` and `offset + 1`; returns `buffer`. */
    function writeChecksum(buffer: Buffer, offset: number, checksum: number): Buffer;

    function htonl(uint32: number): number;
    function htons(uint16: number): number;
    function ntohl(uint32: number): number;
    function ntohs(uint16: number): number;
  }

  // Node's ESM view of this CommonJS module: module.exports is the default export.
  export default raw;
}
