// Hand-written declarations for cap 0.2.1 (libpcap binding, a NAN addon: it
// does not load in worker threads). Only what lib/Cap.js, lib/Decoders.js and
// src/binding.cc really provide.
//
// The package is CommonJS: import it as `import cap from 'cap'` (its
// module.exports, the only export these declarations give; types are `cap.X`).

declare module 'cap' {
  import { EventEmitter } from 'node:events';

  namespace cap {
    /** What open() returns: the device's link type. */
    type LinkType = 'NULL' | 'ETHERNET' | 'IEEE802_11_RADIO' | 'LINKTYPE_LINUX_SLL' | 'RAW' | `Unknown linktype ${number}`;

    /** An IPv4 or IPv6 address of a device (members absent when libpcap has none). */
    interface DeviceAddress {
      addr?: string;
      netmask?: string;
      broadaddr?: string;
      dstaddr?: string;
    }

    interface Device {
      name: string;
      description?: string;
      addresses: DeviceAddress[];
      flags?: 'PCAP_IF_LOOPBACK';
    }

    /** A libpcap capture handle (promiscuous, snaplen 65535, immediate mode where available). */
    class Cap extends EventEmitter {
      constructor();

      /**
       * Open `device` and start capturing what matches `filter` (pcap-filter
       * syntax; '' for everything) into `buffer`, which must hold one packet.
       * `bufSize` is libpcap's ring buffer size. An open handle is closed
       * first. Throws on failure.
       */
      open(device: string, filter: string, bufSize: number, buffer: Buffer): LinkType;

      /** Stop capturing. Returns false when nothing was open. */
      close(): boolean;

      /** Send the first `nBytes` (default all) of `buffer` on the open device (pcap_sendpacket). Throws on failure. */
      send(buffer: Buffer, nBytes?: number): void;

      /** Windows only (pcap_setmintocopy): absent on other platforms. */
      setMinBytes?(nBytes: number): void;

      /** A packet of `nbytes` was copied to the start of the buffer given to open(); `truncated` if it did not fit. */
      on(event: 'packet', listener: (nbytes: number, truncated: boolean) => void): this;
      once(event: 'packet', listener: (nbytes: number, truncated: boolean) => void): this;

      /** The first device with address `ip`; without `ip`, the first device with an IPv4/IPv6 address. */
      static findDevice(ip?: string): string | undefined;
      static deviceList(): Device[];
    }

    function findDevice(ip?: string): string | undefined;
    function deviceList(): Device[];

    namespace decoders {
      /** Name → number, plus number → name (the last name listed for a number). */
      type ProtocolTable<T> = T & { readonly [code: number]: string | undefined };

      const PROTOCOL: {
        readonly ETHERNET: ProtocolTable<{
          readonly IPV4: 2048; readonly 'X.75': 2049; readonly CHAOSNET: 2052; readonly 'X.25': 2053;
          readonly ARP: 2054; readonly 'ARP-RELAY': 2056; readonly TRILL: 8947; readonly 'L2-IS-IS': 8948;
          readonly 'ARP-REVERSE': 32821; readonly APPLETALK: 32923; readonly 'APPLETALK-AARP': 33011;
          readonly VLAN: 33024; readonly SNMP: 33100; readonly XTP: 33149; readonly IPV6: 34525;
          readonly 'TCPIP-COMPRESS': 34667; readonly PPP: 34827; readonly GSMP: 34828;
          readonly 'PPPOE-DISCOVER': 34915; readonly 'PPPOE-SESSION': 34916; readonly LOOPBACK: 36864;
        }>;
        readonly IP: ProtocolTable<{
          readonly HOPOPT: 0; readonly ICMP: 1; readonly IGMP: 2; readonly GGP: 3; readonly IPV4: 4;
          readonly ST: 5; readonly TCP: 6; readonly CBT: 7; readonly EGP: 8; readonly IGP: 9;
          readonly 'BBN-RCC-MON': 10; readonly 'NVP-II': 11; readonly PUP: 12; readonly ARGUS: 13;
          readonly EMCON: 14; readonly XNET: 15; readonly CHAOS: 16; readonly UDP: 17; readonly MUX: 18;
          readonly 'DCN-MEAS': 19; readonly HMP: 20; readonly PRM: 21; readonly 'XNS-IDP': 22;
          readonly 'TRUNK-1': 23; readonly 'TRUNK-2': 24; readonly 'LEAF-1': 25; readonly 'LEAF-2': 26;
          readonly RDP: 27; readonly IRTP: 28; readonly 'ISO-TP4': 29; readonly NETBLT: 30;
          readonly 'MFE-NSP': 31; readonly 'MERIT-INP': 32; readonly DCCP: 33; readonly '3PC': 34;
          readonly IDPR: 35; readonly XTP: 36; readonly DDP: 37; readonly 'IDPR-CMTP': 38; readonly 'TP++': 39;
          readonly IL: 40; readonly IPV6: 41; readonly SDRP: 42; readonly 'IPV6-ROUTE': 43;
          readonly 'IPV6-FRAG': 44; readonly IDRP: 45; readonly RSVP: 46; readonly GRE: 47; readonly DSR: 48;
          readonly BNA: 49; readonly ESP: 50; readonly AH: 51; readonly 'I-NLSP': 52; readonly SWIPE: 53;
          readonly NARP: 54; readonly MOBILE: 55; readonly TLSP: 56; readonly SKIP: 57; readonly ICMPV6: 58;
          readonly 'IPV6-NONXT': 59; readonly 'IPV6-OPTS': 60; readonly CFTP: 62; readonly 'SAT-EXPAK': 64;
          readonly KRYPTOLAN: 65; readonly RVD: 66; readonly IPPC: 67; readonly 'SAT-MON': 69; readonly VISA: 70;
          readonly IPCV: 71; readonly CPNX: 72; readonly CPHB: 73; readonly WSN: 74; readonly PVP: 75;
          readonly 'BR-SAT-MON': 76; readonly 'SUN-ND': 77; readonly 'WB-MON': 78; readonly 'WB-EXPAK': 79;
          readonly 'ISO-IP': 80; readonly VMTP: 81; readonly 'SECURE-VMTP': 82; readonly VINES: 83;
          readonly TTP: 84; readonly IPTM: 84; readonly 'NSFNET-IGP': 85; readonly DGP: 86; readonly TCF: 87;
          readonly EIGRP: 88; readonly OSPFIGP: 89; readonly 'SPRITE-RPC': 90; readonly LARP: 91;
          readonly MTP: 92; readonly 'AX.25': 93; readonly IPIP: 94; readonly MICP: 95; readonly 'SCC-SP': 96;
          readonly ETHERIP: 97; readonly ENCAP: 98; readonly GMTP: 100; readonly IFMP: 101; readonly PNNI: 102;
          readonly PIM: 103; readonly ARIS: 104; readonly SCPS: 105; readonly QNX: 106; readonly 'A/N': 107;
          readonly IPCOMP: 108; readonly SNP: 109; readonly 'COMPAQ-PEER': 110; readonly 'IPX-IN-IP': 111;
          readonly VRRP: 112; readonly PGM: 113; readonly L2TP: 115; readonly DDX: 116; readonly IATP: 117;
          readonly STP: 118; readonly SRP: 119; readonly UTI: 120; readonly SMP: 121; readonly SM: 122;
          readonly PTP: 123; readonly ISIS: 124; readonly FIRE: 125; readonly CRTP: 126; readonly CRUDP: 127;
          readonly SSCOPMCE: 128; readonly IPLT: 129; readonly SPS: 130; readonly PIPE: 131; readonly SCTP: 132;
          readonly FC: 133; readonly 'RSVP-E2E-IGNORE': 134; readonly 'MOBILITY HEADER': 135;
          readonly UDPLITE: 136; readonly 'MPLS-IN-IP': 137; readonly MANET: 138; readonly HIP: 139;
          readonly SHIM6: 140; readonly WESP: 141; readonly ROHC: 142;
        }>;
      };

      // Every decoder reads the header at `offset` (default 0) of `buf` and
      // returns its fields (`info`) and the offset just past the header.

      interface EthernetInfo {
        /** Lower-case "aa:bb:cc:dd:ee:ff". */
        dstmac: string;
        srcmac: string;
        /** EtherType (≥ 1536), else undefined. */
        type: number | undefined;
        /** One 802.1Q tag (0x8100) if present. (`priority` is always 0 in 0.2.1.) */
        vlan: { priority: number; CFI: boolean; VID: number } | undefined;
        /** 802.3 length (≤ 1500), else undefined. */
        length: number | undefined;
      }
      function Ethernet(buf: Buffer, offset?: number): { info: EthernetInfo; offset: number };

      interface IPv4Info {
        /** In 32-bit words. */
        hdrlen: number;
        dscp: number;
        ecn: number;
        /** Total length (computed from the buffer when the header says 0, as with TSO). */
        totallen: number;
        id: number;
        /** The 3 flag bits (DF = 2, MF = 1). */
        flags: number;
        fragoffset: number;
        ttl: number;
        protocol: number;
        hdrchecksum: number;
        /** Dotted quads. */
        srcaddr: string;
        dstaddr: string;
      }
      /** `hdrlen` is in bytes. */
      function IPV4(buf: Buffer, offset?: number): { info: IPv4Info; hdrlen: number; offset: number };

      interface IPv6Info {
        class: number;
        flowLabel: number;
        payloadlen: number;
        /** Upper-layer protocol after the extension headers; undefined for No Next Header (59). */
        protocol: number | undefined;
        hopLimit: number;
        /** Sixteen colon-separated hex bytes, not compressed. */
        srcaddr: string;
        dstaddr: string;
      }
      /** `offset` is past the extension headers; undefined for No Next Header (59). */
      function IPV6(buf: Buffer, offset?: number): { info: IPv6Info; offset: number | undefined };

      /** ICMPv4 fields; which of the optional ones are set depends on `type` (and `code`). */
      interface ICMPv4Info {
        type: number;
        code: number;
        checksum: number;
        /** Types 0, 13-18, 30 and 37 (not echo request 8, which gets only type, code and checksum). */
        identifier?: number;
        seqno?: number;
        /** Unreachable (3) code 4. */
        nextHopMTU?: number;
        /** The quoted header of errors 3, 4, 5, 11, 12, 31, 40; `hdrlen` in bytes. */
        IPHeader?: { info: IPv4Info; hdrlen: number };
        /** Offset of the quoted datagram's data. */
        dataOffset?: number;
        /** Redirect (5). */
        gatewayAddr?: string;
        /** Parameter problem (12), conversion error (31), security failure (40). */
        pointer?: number;
        /** Router advertisement (9). */
        lifetime?: number;
        /** Router advertisement (9): in 0.2.1 the array starts with as many empty slots as entries. */
        addrs?: ({ addr: string; pref: number } | undefined)[];
        /** Timestamp (13, 14). */
        originate?: number;
        receive?: number;
        transmit?: number;
        /** Address mask (17, 18). */
        mask?: string;
        /** Traceroute (30). */
        outHopCount?: number;
        retHopCount?: number;
        outLnkSpeed?: number;
        outLnkMTU?: number;
      }
      function ICMPV4(buf: Buffer, nbytes: number, offset?: number): { info: ICMPv4Info; offset: number };

      interface TCPInfo {
        srcport: number;
        dstport: number;
        seqno: number;
        /** Undefined unless ACK is set. */
        ackno: number | undefined;
        /** The 9 flag bits (FIN = 1 ... NS = 0x100). */
        flags: number;
        window: number;
        checksum: number;
        /** Undefined unless URG is set. */
        urgentptr: number | undefined;
      }
      /** `hdrlen` is in bytes (options are not decoded). */
      function TCP(buf: Buffer, offset?: number): { info: TCPInfo; hdrlen: number; offset: number };

      interface UDPInfo {
        srcport: number;
        dstport: number;
        /** Payload length (the header's length minus 8). */
        length: number;
        checksum: number;
      }
      function UDP(buf: Buffer, offset?: number): { info: UDPInfo; offset: number };

      interface SCTPInfo {
        srcport: number;
        dstport: number;
        /** Read at offset 4 (the verification tag's position) in 0.2.1. */
        checksum: number;
        /** Chunks up to `nbytes`; undefined when there are none. */
        chunks: { type: number; flags: number; offset: number; length: number }[] | undefined;
      }
      function SCTP(buf: Buffer, nbytes: number, offset?: number): { info: SCTPInfo; offset: number };

      interface ARPInfo {
        hardwareaddr: number;
        protocol: number;
        /** Hardware address length. */
        hdrlen: number;
        protlen: number;
        opcode: number;
        /** Set (else '') only for hdrlen 6 and protlen 4. */
        sendermac: string;
        senderip: string;
        targetmac: string;
        targetip: string;
      }
      function ARP(buf: Buffer, offset?: number): { info: ARPInfo; offset: number };
    }
  }

  // Node's ESM view of this CommonJS module: module.exports is the default export.
  export default cap;
}
