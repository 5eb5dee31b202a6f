//! Builders for tests and benchmarks: the spec's reference topology as a
//! policy, and frames and NVGRE packets as the VMs and peers would send them.

use super::policy::*;
use crate::wire::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const CONTOSO: RoutingDomain = 0;
pub const FABRIKAM: RoutingDomain = 1;

pub fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

pub fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub const HOST1_PA: &str = "192.168.0.22";
pub const HOST2_PA: &str = "192.168.0.33";
pub const GW_PA: &str = "192.168.0.11";

pub const CONTOSO1: (&str, &str) = ("10.0.1.101", "60:00:60:00:01:01");
pub const CONTOSO2: (&str, &str) = ("10.0.1.102", "60:00:60:00:01:02");
pub const CONTOSO3: (&str, &str) = ("10.0.1.103", "60:00:60:00:02:03");
pub const MTGW: (&str, &str) = ("10.0.2.2", "60:01:60:01:03:01");
pub const FABRIKAM1: (&str, &str) = ("10.0.1.101", "70:00:70:00:01:01");
pub const FABRIKAM3: (&str, &str) = ("10.0.1.103", "70:00:70:00:02:03");
pub const HOST1_GW_MAC: &str = "60:00:60:00:01:00";
pub const DEFAULT_GW_MAC: &str = "02:aa:bb:cc:dd:01";

pub const PORT_CONTOSO1: PortId = 1;
pub const PORT_CONTOSO2: PortId = 2;
pub const PORT_FABRIKAM1: PortId = 3;

pub fn record(vsid: Vsid, vm: (&str, &str), pa: &str) -> LookupRecord {
    LookupRecord {
        vsid,
        customer_address: ip(vm.0),
        mac: mac(vm.1),
        provider_address: ip(pa),
        rule: Rule::Encap,
        kind: RecordType::Static,
    }
}

fn route(rd: RoutingDomain, vsid: Vsid, prefix: &str, len: u8, next_hop: Option<&str>) -> CustomerRoute {
    CustomerRoute { routing_domain: rd, vsid, prefix: ip(prefix), prefix_len: len, next_hop: next_hop.map(ip), metric: 0 }
}

/// Host 1 of the reference topology, plus the Fabrikam tenant on the same
/// 10.0.1.0/24 (VSID 7000, another routing domain).
pub fn host1() -> Policy {
    Policy {
        flow_id: FlowIdMode::Hash,
        default_gateway_mac: mac(DEFAULT_GW_MAC),
        provider_addresses: vec![ProviderAddress { address: ip(HOST1_PA), prefix_len: 24, mtu: 1500, ifindex: 0, vlan_id: 0 }],
        customer_routes: vec![
            route(CONTOSO, 6000, "10.0.1.0", 24, None),
            route(CONTOSO, 6001, "10.0.2.0", 24, None),
            route(CONTOSO, 6001, "0.0.0.0", 0, Some("10.0.2.2")),
            route(FABRIKAM, 7000, "10.0.1.0", 24, None),
        ],
        lookup_records: vec![
            record(6000, CONTOSO1, HOST1_PA),
            record(6000, CONTOSO2, HOST1_PA),
            record(6000, CONTOSO3, HOST2_PA),
            record(6000, ("10.0.1.1", HOST1_GW_MAC), HOST1_PA),
            record(6001, MTGW, GW_PA),
            record(7000, FABRIKAM1, HOST1_PA),
            record(7000, FABRIKAM3, HOST2_PA),
        ],
        ports: vec![
            Port { id: PORT_CONTOSO1, vsid: 6000, mac: mac(CONTOSO1.1) },
            Port { id: PORT_CONTOSO2, vsid: 6000, mac: mac(CONTOSO2.1) },
            Port { id: PORT_FABRIKAM1, vsid: 7000, mac: mac(FABRIKAM1.1) },
        ],
        uplink: None,
        nats: vec![],
    }
}

pub fn ethernet(src: MacAddr, dst: MacAddr, ethertype: EtherType, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; EthernetFrame::<&[u8]>::HEADER_LEN + payload.len()];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    EthernetRepr { src_addr: src, dst_addr: dst, ethertype }.emit(&mut eth);
    eth.payload_mut().copy_from_slice(payload);
    f
}

pub fn arp_request(src_mac: MacAddr, src_ip: &str, target: &str, dst: MacAddr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: src_mac,
        source_protocol_addr: v4(src_ip),
        target_hardware_addr: MacAddr([0; 6]),
        target_protocol_addr: v4(target),
    };
    let mut p = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut p[..]));
    ethernet(src_mac, dst, EtherType::Arp, &p)
}

/// An IPv4 packet (header + payload) with the given protocol.
pub fn ipv4(src: &str, dst: &str, proto: IpProtocol, ttl: u8, dscp: u8, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: v4(src),
        dst_addr: v4(dst),
        next_header: proto,
        payload_len: payload.len(),
        hop_limit: ttl,
        dscp,
        ecn: 0,
        dont_frag: true,
    };
    let mut p = vec![0u8; repr.buffer_len() + payload.len()];
    let mut pkt = Ipv4Packet::new_unchecked(&mut p[..]);
    repr.emit(&mut pkt);
    pkt.payload_mut().copy_from_slice(payload);
    p
}

pub fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest { ident, seq_no: seq, data: b"nvgred-ping-0123456789" };
    let mut p = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Icmpv4Packet::new_unchecked(&mut p[..]));
    p
}

/// An ICMP echo request frame from one VM to a MAC/IP.
pub fn ping(src: (&str, &str), dst_mac: MacAddr, dst_ip: &str, ttl: u8) -> Vec<u8> {
    let ip = ipv4(src.0, dst_ip, IpProtocol::Icmp, ttl, 0, &echo_request(7, 1));
    ethernet(mac(src.1), dst_mac, EtherType::Ipv4, &ip)
}

/// A UDP datagram frame (ports set, checksum 0 = none, as allowed on IPv4).
pub fn udp(src: (&str, &str), dst_mac: MacAddr, dst_ip: &str, sport: u16, dport: u16, dscp: u8) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + 18];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    let len = l4.len() as u16;
    l4[4..6].copy_from_slice(&len.to_be_bytes());
    let ip = ipv4(src.0, dst_ip, IpProtocol::Udp, 64, dscp, &l4);
    ethernet(mac(src.1), dst_mac, EtherType::Ipv4, &ip)
}

/// An NVGRE packet as a raw socket reads it: outer IPv4, GRE, inner frame.
pub fn nvgre(outer_src: &str, outer_dst: &str, vsid: Vsid, flow_id: u8, inner: &[u8]) -> Vec<u8> {
    let repr = NvgreRepr { vsid, flow_id };
    let mut gre = vec![0u8; repr.buffer_len() + inner.len()];
    repr.emit(&mut GrePacket::new_unchecked(&mut gre[..]));
    gre[repr.buffer_len()..].copy_from_slice(inner);
    ipv4(outer_src, outer_dst, IpProtocol::Gre, 64, 0, &gre)
}

pub fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Host 1 with IPv6 customer addresses beside the IPv4 ones: VSID 6000 is
/// also fd00:1::/64, VSID 6001 fd00:2::/64 (MT-GW fd00:2::2).
pub fn host1_dual_stack() -> Policy {
    let mut p = host1();
    p.customer_routes.push(route(CONTOSO, 6000, "fd00:1::", 64, None));
    p.customer_routes.push(route(CONTOSO, 6001, "fd00:2::", 64, None));
    p.lookup_records.push(record(6000, ("fd00:1::101", CONTOSO1.1), HOST1_PA));
    p.lookup_records.push(record(6000, ("fd00:1::102", CONTOSO2.1), HOST1_PA));
    p.lookup_records.push(record(6000, ("fd00:1::103", CONTOSO3.1), HOST2_PA));
    p.lookup_records.push(record(6001, ("fd00:2::2", MTGW.1), GW_PA));
    p
}

/// An IPv6 packet (header + payload).
pub fn ipv6(src: &str, dst: &str, next: IpProtocol, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv6Repr { src_addr: v6(src), dst_addr: v6(dst), next_header: next, payload_len: payload.len(), hop_limit, traffic_class: 0 };
    let mut p = vec![0u8; repr.buffer_len() + payload.len()];
    let mut pkt = Ipv6Packet::new_unchecked(&mut p[..]);
    repr.emit(&mut pkt);
    pkt.payload_mut().copy_from_slice(payload);
    p
}

fn icmpv6(src: &str, dst: &str, repr: &Icmpv6Repr) -> Vec<u8> {
    let mut p = vec![0u8; repr.buffer_len()];
    repr.emit(&v6(src), &v6(dst), &mut Icmpv6Packet::new_unchecked(&mut p[..]));
    p
}

/// A Neighbor Solicitation for `target` from a VM, to the solicited-node group.
pub fn neighbor_solicit(src_mac: MacAddr, src: &str, target: &str) -> Vec<u8> {
    let group = ndisc::solicited_node_multicast(&v6(target)).to_string();
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: v6(target), lladdr: Some(src_mac) });
    let ip = ipv6(src, &group, IpProtocol::Icmpv6, 255, &icmpv6(src, &group, &ns));
    ethernet(src_mac, ndisc::multicast_mac(&v6(&group)), EtherType::Ipv6, &ip)
}

/// An ICMPv6 echo request frame.
pub fn ping6(src: (&str, &str), dst_mac: MacAddr, dst_ip: &str, hop_limit: u8) -> Vec<u8> {
    let echo = Icmpv6Repr::EchoRequest { ident: 7, seq_no: 1, data: b"nvgred-ping6" };
    let ip = ipv6(src.0, dst_ip, IpProtocol::Icmpv6, hop_limit, &icmpv6(src.0, dst_ip, &echo));
    ethernet(mac(src.1), dst_mac, EtherType::Ipv6, &ip)
}

/// An ARP reply frame.
pub fn arp_reply(src_mac: MacAddr, src_ip: &str, dst_mac: MacAddr, dst_ip: &str) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: src_mac,
        source_protocol_addr: v4(src_ip),
        target_hardware_addr: dst_mac,
        target_protocol_addr: v4(dst_ip),
    };
    let mut p = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut p[..]));
    ethernet(src_mac, dst_mac, EtherType::Arp, &p)
}

/// A UDP datagram of `size` bytes of IPv4 packet, DF as given.
pub fn big_udp(src: (&str, &str), dst_mac: MacAddr, dst_ip: &str, size: usize, dont_frag: bool) -> Vec<u8> {
    let mut f = udp(src, dst_mac, dst_ip, 1, 2, 0);
    let l4 = vec![0u8; size - 20];
    let ip = {
        let repr = Ipv4Repr {
            src_addr: v4(src.0),
            dst_addr: v4(dst_ip),
            next_header: IpProtocol::Udp,
            payload_len: l4.len(),
            hop_limit: 64,
            dscp: 0,
            ecn: 0,
            dont_frag,
        };
        let mut p = vec![0u8; size];
        let mut pkt = Ipv4Packet::new_unchecked(&mut p[..]);
        repr.emit(&mut pkt);
        p
    };
    f.truncate(14);
    f.extend_from_slice(&ip);
    f
}

/// A TCP segment frame (IPv4, DF, ACK) of `payload` bytes with a
/// complete checksum, from one VM to a MAC/IP.
pub fn tcp_segment(src: (&str, &str), dst_mac: MacAddr, dst_ip: &str, seq: u32, payload: usize) -> Vec<u8> {
    let mut tcp = vec![0u8; 20 + payload];
    for (i, b) in tcp[20..].iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    let mut t = TcpPacket::new_unchecked(&mut tcp[..]);
    t.set_src_port(40000);
    t.set_dst_port(5201);
    t.set_seq_number(seq);
    t.set_ack_number(1);
    t.set_header_len(20);
    t.set_flags(TcpFlags::ACK);
    t.set_window_len(512);
    t.fill_checksum_v4(&v4(src.0), &v4(dst_ip));
    let ip = ipv4(src.0, dst_ip, IpProtocol::Tcp, 64, 0, &tcp);
    ethernet(mac(src.1), dst_mac, EtherType::Ipv4, &ip)
}

/// What a VM's TCP segmentation offload says about `frame` (a `tcp_segment`):
/// cut at `mss`, checksum left to finish (the pseudo-header sum in the field).
pub fn tso(frame: &mut [u8], mss: u16) -> super::offload::Offload {
    const TCP: usize = 14 + 20;
    let tcp_len = (frame.len() - TCP) as u32;
    let ip = Ipv4Packet::new_unchecked(&frame[14..]);
    let pseudo = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), IpProtocol::Tcp.into(), tcp_len);
    frame[TCP + 16..TCP + 18].copy_from_slice(&pseudo.to_be_bytes());
    super::offload::Offload { gso: super::offload::Gso::Tcp4, gso_size: mss, hdr_len: (TCP + 20) as u16, csum: Some((TCP as u16, 16)) }
}

/// An [`Effects`](super::Effects) that does no I/O: it keeps what the
/// pipeline wrote (for tests to look at) and checks what every write must be.
#[derive(Default)]
pub struct Recorder {
    /// Frames written to VM ports: (port, frame, offload).
    pub to_ports: Vec<(PortId, Vec<u8>, super::offload::Offload)>,
    /// Packets sent on the underlay: (PA, packet, out of which interface whole).
    pub to_underlay: Vec<(IpAddr, Vec<u8>, Option<u32>)>,
    /// Frames sent out of the gateway's uplink.
    pub to_uplink: Vec<Vec<u8>>,
    pub drops: Vec<(usize, super::DropReason)>,
    pub learned: Vec<super::Learned>,
    /// Answer `kernel_segments()` with this.
    pub kernel_segments: bool,
    /// The most packets handed over in one `to_underlay` call.
    pub largest_send: usize,
    /// Ports whose VM takes no large segments.
    pub no_gso_ports: Vec<PortId>,
    /// Batches whose port writes were flushed.
    pub flushes: usize,
}

impl super::Effects for Recorder {
    fn to_port(&mut self, port: PortId, buf: &super::PacketBuf) -> std::result::Result<(), super::DropReason> {
        self.to_ports.push((port, buf.frame().to_vec(), buf.offload));
        Ok(())
    }

    fn to_uplink(&mut self, buf: &super::PacketBuf) -> std::result::Result<(), super::DropReason> {
        self.to_uplink.push(buf.frame().to_vec());
        Ok(())
    }

    fn to_underlay(&mut self, pkts: &[super::Outgoing], done: &mut dyn FnMut(usize, bool)) {
        self.largest_send = self.largest_send.max(pkts.len());
        for (k, p) in pkts.iter().enumerate() {
            self.to_underlay.push((p.pa, p.buf.frame().to_vec(), p.kernel_segments));
            done(k, true);
        }
    }

    fn kernel_segments(&self) -> bool {
        self.kernel_segments
    }

    fn port_takes(&self, port: PortId, _gso: super::offload::Gso) -> bool {
        !self.no_gso_ports.contains(&port)
    }

    fn flush_ports(&mut self) {
        self.flushes += 1;
    }

    fn dropped(&mut self, frame: usize, reason: super::DropReason) {
        self.drops.push((frame, reason));
    }

    fn learned(&mut self, learned: super::Learned) {
        self.learned.push(learned);
    }
}

/// The gateway of the spec's topology: Contoso's and Fabrikam's NATs
/// sharing one external address, Contoso's with the spec's static mapping
/// (TCP :443 → 10.0.0.100:443 in VSID 6000).
pub const NAT_EXTERNAL: &str = "131.107.10.12";
pub const NAT_INTERNAL: &str = "10.0.2.2";

pub fn nat_entry(name: &str, rd: RoutingDomain, ports: (u16, u16)) -> super::nat::Nat {
    super::nat::Nat {
        name: name.into(),
        routing_domain: rd,
        internal_address: v4(NAT_INTERNAL),
        external_address: v4(NAT_EXTERNAL),
        port_start: ports.0,
        port_end: ports.1,
        static_mappings: Vec::new(),
        max_mappings: super::nat::DEFAULT_MAX_MAPPINGS,
        timeouts: Default::default(),
    }
}

pub fn gateway_nats() -> Vec<super::nat::Nat> {
    let mut contoso = nat_entry("Contoso", CONTOSO, (1024, 65535));
    contoso.static_mappings.push(super::nat::StaticMapping {
        proto: super::nat::Proto::Tcp,
        external_port: 443,
        vsid: 6000,
        internal_address: v4("10.0.0.100"),
        internal_port: 443,
    });
    vec![contoso, nat_entry("Fabrikam", FABRIKAM, (1024, 65535))]
}

/// A TCP segment as an IPv4 packet (DF, TTL 64), checksum complete.
pub fn ip_tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: TcpFlags) -> Vec<u8> {
    let mut tcp = vec![0u8; 20 + 12];
    let mut t = TcpPacket::new_unchecked(&mut tcp[..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(1000);
    t.set_header_len(20);
    t.set_flags(flags);
    t.set_window_len(512);
    t.payload_mut().copy_from_slice(b"nvgred-nat-0");
    t.fill_checksum_v4(&v4(src), &v4(dst));
    ipv4(src, dst, IpProtocol::Tcp, 64, 0, &tcp)
}

/// A UDP datagram of `payload` bytes as an IPv4 packet, checksum complete.
pub fn ip_udp(src: &str, dst: &str, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + payload];
    let mut u = UdpPacket::new_unchecked(&mut l4[..]);
    u.set_src_port(sport);
    u.set_dst_port(dport);
    u.set_len((8 + payload) as u16);
    u.fill_checksum_v4(&v4(src), &v4(dst));
    ipv4(src, dst, IpProtocol::Udp, 64, 0, &l4)
}

/// An ICMP echo request (or reply) as an IPv4 packet.
pub fn ip_echo(src: &str, dst: &str, ident: u16, reply: bool) -> Vec<u8> {
    let mut icmp = echo_request(ident, 1);
    if reply {
        Icmpv4Packet::new_unchecked(&mut icmp[..]).make_echo_reply();
    }
    ipv4(src, dst, IpProtocol::Icmp, 64, 0, &icmp)
}

/// Destination Unreachable (port) from `src` about `invoking` (an IPv4
/// packet), quoting its header and 8 bytes as RFC 792 asks.
pub fn ip_unreachable(src: &str, invoking: &[u8]) -> Vec<u8> {
    let inv = Ipv4Packet::new_unchecked(invoking);
    let quote = &invoking[..usize::from(inv.header_len()) + 8];
    let mut icmp = vec![0u8; 8 + quote.len()];
    let mut i = Icmpv4Packet::new_unchecked(&mut icmp[..]);
    i.set_msg_type(Icmpv4Message::DstUnreachable);
    i.set_msg_code(3);
    i.data_mut().copy_from_slice(quote);
    i.fill_checksum();
    ipv4(src, &inv.src_addr().to_string(), IpProtocol::Icmp, 64, 0, &icmp)
}

/// The uplink's MAC and the NATs' inside MACs of [`gateway_policy`].
pub const UPLINK_MAC: &str = "02:00:00:00:09:09";
pub const CONTOSO_NAT_MAC: &str = "60:01:60:01:03:01";
pub const FABRIKAM_NAT_MAC: &str = "70:01:70:01:03:01";

/// The spec's gateway host: host 1's policy (its tenants' VMs 10.0.1.103
/// live behind host 2, Contoso's and Fabrikam's: overlapping CAs), with an
/// uplink and a NAT per routing domain on one external address; Contoso's
/// opens TCP :443 to its 10.0.1.103.
pub fn gateway_policy() -> Policy {
    let mut p = host1();
    // The NAT's inside address is this host's own: no record names another PA for it.
    p.lookup_records.retain(|r| r.mac != mac(MTGW.1));
    p.customer_routes.push(CustomerRoute { routing_domain: FABRIKAM, vsid: 7001, prefix: ip("10.0.2.0"), prefix_len: 24, next_hop: None, metric: 0 });
    p.customer_routes.push(CustomerRoute { routing_domain: FABRIKAM, vsid: 7001, prefix: ip("0.0.0.0"), prefix_len: 0, next_hop: Some(ip(NAT_INTERNAL)), metric: 0 });
    let mut nats = gateway_nats();
    nats[0].static_mappings[0].internal_address = v4(CONTOSO3.0);
    p.uplink = Some(super::policy::Uplink {
        ifindex: 9,
        mtu: 1500,
        mac: mac(UPLINK_MAC),
        gateway: v4("131.107.10.1"),
        addresses: vec![(v4(NAT_EXTERNAL), 24)],
    });
    p.nats = nats
        .into_iter()
        .zip([(6001, CONTOSO_NAT_MAC), (7001, FABRIKAM_NAT_MAC)])
        .map(|(nat, (vsid, m))| super::policy::GatewayNat { nat, vsid, mac: mac(m) })
        .collect();
    p
}

