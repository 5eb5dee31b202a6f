//! The HNV gateway in the decision core: the policy's gateway section, the
//! NAT's outbound and inbound paths, the uplink's ARP.

use super::gateway::{gateway_arp_request, nat_outbound, on_uplink_frame};
use super::nat::{NatTable, Proto, StaticMapping};
use super::testkit::*;
use super::*;
use crate::wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, MacAddr, TcpFlags, TcpPacket};

const ROUTER_MAC: &str = "02:00:00:00:01:01";
const ROUTER: &str = "131.107.10.1";
const SERVER: &str = "203.0.113.80";

#[test]
fn the_gateway_section_round_trips() {
    let mut p = gateway_policy();
    // Decoded entries are named by position (the control plane keeps the names).
    for (i, g) in p.nats.iter_mut().enumerate() {
        g.nat.name = format!("nat[{i}]");
    }
    p.nats[1].nat.static_mappings.push(StaticMapping { proto: Proto::Udp, external_port: 53, vsid: 7000, internal_address: v4("10.0.1.5"), internal_port: 5353 });
    let buf = p.encode();
    assert_eq!(Policy::decode(&buf), Ok(p.clone()));
    // Counts that disagree with the buffer are refused, not trusted.
    let mut short = buf.clone();
    short.truncate(buf.len() - 1);
    assert!(Policy::decode(&short).is_err());
    let no_gateway = Policy { uplink: None, nats: vec![], ..p };
    assert_eq!(Policy::decode(&no_gateway.encode()), Ok(no_gateway));
}

/// What a tenant host sends the NAT: its VM's TCP segment, routed to the
/// NAT's MAC in the NAT's VSID, from host 2's PA.
fn from_tenant(vm: (&str, &str), nat_vsid: Vsid, nat_mac: &str, dst: &str, sport: u16, dport: u16) -> PacketBuf {
    let ip = ip_tcp(vm.0, dst, sport, dport, TcpFlags::SYN);
    PacketBuf::from_frame(&nvgre(HOST2_PA, HOST1_PA, nat_vsid, 0, &ethernet(mac(vm.1), mac(nat_mac), EtherType::Ipv4, &ip)))
}

/// What the uplink brings: a TCP segment from the server through the router.
fn from_uplink(src: &str, dst: &str, sport: u16, dport: u16) -> PacketBuf {
    PacketBuf::from_frame(&ethernet(mac(ROUTER_MAC), mac(UPLINK_MAC), EtherType::Ipv4, &ip_tcp(src, dst, sport, dport, TcpFlags::SYN | TcpFlags::ACK)))
}

/// (source address, source port, destination address, destination port) of the TCP segment after `at`.
fn tcp_ends(frame: &[u8], at: usize) -> (String, u16, String, u16) {
    let ip = Ipv4Packet::new_checked(&frame[at..]).unwrap();
    assert!(ip.verify_checksum(), "the IP checksum stays right");
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.verify_checksum_v4(&ip.src_addr(), &ip.dst_addr()), "the TCP checksum stays right");
    (ip.src_addr().to_string(), tcp.src_port(), ip.dst_addr().to_string(), tcp.dst_port())
}

struct Gw {
    snap: Snapshot,
    table: NatTable,
    counters: Counters,
    router: Option<MacAddr>,
}

impl Gw {
    fn new() -> Gw {
        Gw { snap: Snapshot::build(&gateway_policy()), table: NatTable::new(0, 1, 0), counters: Counters::new(0), router: Some(mac(ROUTER_MAC)) }
    }

    /// A tenant's packet through the underlay path and the NAT.
    fn outbound(&mut self, buf: &mut PacketBuf) -> Action {
        match on_underlay_packet(&self.snap, 0, buf) {
            Action::Nat { vsid } => nat_outbound(&self.snap, &mut self.table, Direction::FromUnderlay, vsid, buf, 10, self.router, &self.counters),
            other => other,
        }
    }

    fn inbound(&mut self, buf: &mut PacketBuf) -> Action {
        on_uplink_frame(&self.snap, &mut self.table, buf, 11, &mut self.router, &self.counters)
    }
}

#[test]
fn tenants_with_one_address_leave_from_the_external_address_on_different_ports() {
    let mut gw = Gw::new();
    let mut ports = Vec::new();
    for (vm, vsid, nat_mac) in [(CONTOSO3, 6001, CONTOSO_NAT_MAC), (FABRIKAM3, 7001, FABRIKAM_NAT_MAC)] {
        let mut buf = from_tenant(vm, vsid, nat_mac, SERVER, 40000, 80);
        assert_eq!(gw.outbound(&mut buf), Action::Uplink);
        let f = buf.frame();
        let eth = EthernetFrame::new_checked(f).unwrap();
        assert_eq!((eth.dst_addr(), eth.src_addr(), eth.ethertype()), (mac(ROUTER_MAC), mac(UPLINK_MAC), EtherType::Ipv4));
        let (src, sport, dst, dport) = tcp_ends(f, 14);
        assert_eq!((src.as_str(), dst.as_str(), dport), (NAT_EXTERNAL, SERVER, 80));
        assert!(sport >= 1024);
        assert_eq!(Ipv4Packet::new_checked(&f[14..]).unwrap().hop_limit(), 63, "the TTL is decremented");
        ports.push(sport);
    }
    assert_ne!(ports[0], ports[1], "same CA and port, two tenants: two external ports");
    assert_eq!(gw.counters.get(Counter::NatMappingsCreated), 2);

    // Each reply goes back to its own tenant's VM, from the NAT's MAC, in the VM's VSID.
    for (port, vm, vsid, nat_mac) in [(ports[0], CONTOSO3, 6000, CONTOSO_NAT_MAC), (ports[1], FABRIKAM3, 7000, FABRIKAM_NAT_MAC)] {
        let mut buf = from_uplink(SERVER, NAT_EXTERNAL, 80, port);
        assert_eq!(gw.inbound(&mut buf), Action::Encap { pa: ip(HOST2_PA), vsid, routed: false });
        let f = buf.frame();
        let outer = Ipv4Packet::new_checked(f).unwrap();
        assert_eq!((outer.src_addr(), outer.dst_addr(), outer.next_header()), (v4(HOST1_PA), v4(HOST2_PA), IpProtocol::Gre));
        assert_eq!(u32::from_be_bytes(f[24..28].try_into().unwrap()) >> 8, vsid, "the key names the VM's VSID");
        let inner = &f[28..];
        let eth = EthernetFrame::new_checked(inner).unwrap();
        assert_eq!((eth.dst_addr(), eth.src_addr()), (mac(vm.1), mac(nat_mac)));
        assert_eq!(tcp_ends(inner, 14), (SERVER.to_string(), 80, vm.0.to_string(), 40000));
    }
}

#[test]
fn unsolicited_inbound_is_dropped_and_a_static_mapping_lets_the_server_in() {
    let mut gw = Gw::new();
    let mut buf = from_uplink(SERVER, NAT_EXTERNAL, 5555, 40000);
    assert_eq!(gw.inbound(&mut buf), Action::Drop(DropReason::NatNoMapping));
    let mut buf = from_uplink(SERVER, NAT_EXTERNAL, 5555, 443);
    assert_eq!(gw.inbound(&mut buf), Action::Encap { pa: ip(HOST2_PA), vsid: 6000, routed: false });
    assert_eq!(tcp_ends(&buf.frame()[28..], 14), (SERVER.to_string(), 5555, CONTOSO3.0.to_string(), 443));
    // Not to an external address, not to the uplink's MAC: not the NAT's.
    let mut buf = from_uplink(SERVER, "131.107.10.99", 5555, 443);
    assert_eq!(gw.inbound(&mut buf), Action::Drop(DropReason::UnknownDestination));
    let mut other = from_uplink(SERVER, NAT_EXTERNAL, 5555, 443);
    EthernetFrame::new_unchecked(other.frame_mut()).set_dst_addr(mac("02:00:00:00:77:77"));
    assert_eq!(gw.inbound(&mut other), Action::Consumed);
}

#[test]
fn a_destination_inside_the_routing_domain_is_not_translated() {
    let mut gw = Gw::new();
    let mut buf = from_tenant(CONTOSO3, 6001, CONTOSO_NAT_MAC, CONTOSO1.0, 40000, 80);
    assert_eq!(gw.outbound(&mut buf), Action::Drop(DropReason::NatInsideDestination));
}

#[test]
fn without_the_routers_mac_nothing_leaves_and_arp_finds_it() {
    let mut gw = Gw::new();
    gw.router = None;
    let mut buf = from_tenant(CONTOSO3, 6001, CONTOSO_NAT_MAC, SERVER, 40000, 80);
    assert_eq!(gw.outbound(&mut buf), Action::Drop(DropReason::UplinkUnresolved));
    let mut req = PacketBuf::new(128);
    assert!(gateway_arp_request(&gw.snap, &mut req));
    assert_eq!(req.frame(), &arp_request(mac(UPLINK_MAC), NAT_EXTERNAL, ROUTER, MacAddr::BROADCAST)[..]);
    // The router's reply is learned from, not answered.
    let mut reply = PacketBuf::from_frame(&arp_reply(mac(ROUTER_MAC), ROUTER, mac(UPLINK_MAC), NAT_EXTERNAL));
    assert_eq!(gw.inbound(&mut reply), Action::Consumed);
    assert_eq!(gw.router, Some(mac(ROUTER_MAC)));
}

#[test]
fn arp_for_an_uplink_address_is_answered_with_the_uplinks_mac() {
    let mut gw = Gw::new();
    let asker = mac("02:00:00:00:05:05");
    let mut buf = PacketBuf::from_frame(&arp_request(asker, "131.107.10.50", NAT_EXTERNAL, MacAddr::BROADCAST));
    assert_eq!(gw.inbound(&mut buf), Action::Uplink);
    assert_eq!(buf.frame(), &arp_reply(mac(UPLINK_MAC), NAT_EXTERNAL, asker, "131.107.10.50")[..]);
    let mut other = PacketBuf::from_frame(&arp_request(asker, "131.107.10.50", "131.107.10.51", MacAddr::BROADCAST));
    assert_eq!(gw.inbound(&mut other), Action::Consumed, "another host's address is not ours to answer");
}

#[test]
fn a_vm_of_the_gateway_host_goes_out_through_the_nat_and_its_replies_come_back_to_its_port() {
    let mut policy = gateway_policy();
    // Here the NAT's record names this host's PA, as on the gateway host.
    policy.lookup_records.push(record(6001, (NAT_INTERNAL, CONTOSO_NAT_MAC), HOST1_PA));
    let mut gw = Gw { snap: Snapshot::build(&policy), ..Gw::new() };
    let frame = ethernet(mac(CONTOSO1.1), mac(HOST1_GW_MAC), EtherType::Ipv4, &ip_tcp(CONTOSO1.0, SERVER, 40000, 80, TcpFlags::SYN));
    let mut buf = PacketBuf::from_frame(&frame);
    let Action::Nat { vsid } = on_vm_frame(&gw.snap, PORT_CONTOSO1, &mut buf) else { panic!("not for the NAT") };
    assert_eq!(vsid, 6000);
    assert_eq!(nat_outbound(&gw.snap, &mut gw.table, Direction::FromVm, vsid, &mut buf, 10, gw.router, &gw.counters), Action::Uplink);
    let (src, sport, ..) = tcp_ends(buf.frame(), 14);
    assert_eq!(src, NAT_EXTERNAL);
    let mut reply = from_uplink(SERVER, NAT_EXTERNAL, 80, sport);
    assert_eq!(gw.inbound(&mut reply), Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::Routed });
    let eth = EthernetFrame::new_checked(reply.frame()).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (mac(CONTOSO1.1), mac(CONTOSO_NAT_MAC)));
    assert_eq!(tcp_ends(reply.frame(), 14), (SERVER.to_string(), 80, CONTOSO1.0.to_string(), 40000));
}

#[test]
fn a_checksum_left_to_finish_is_finished_and_a_large_segment_leaves_translated_whole_to_be_cut() {
    let mut gw = Gw::new();
    // As a VM's offload (or GRO) leaves it: the checksum field holds the
    // pseudo-header sum only; a large one cut at 1000 bytes.
    let frame = |payload: usize| ethernet(mac(CONTOSO3.1), mac(CONTOSO_NAT_MAC), EtherType::Ipv4, &ip_tcp_payload(CONTOSO3.0, SERVER, 40000, 80, payload));
    let (mut small, mut big) = (frame(300), frame(3000));
    let small_off = tso(&mut small, 1000);
    let off = tso(&mut big, 1000);
    let nat = |gw: &mut Gw, frame: &[u8], off: offload::Offload| {
        let mut buf = PacketBuf::from_frame(frame);
        buf.offload = off;
        let a = nat_outbound(&gw.snap, &mut gw.table, Direction::FromUnderlay, 6000, &mut buf, 10, gw.router, &gw.counters);
        (a, buf)
    };
    // Checksum to finish, no segmentation: finished, then translated.
    let (a, whole) = nat(&mut gw, &small, offload::Offload { gso: offload::Gso::None, gso_size: 0, ..small_off });
    assert_eq!(a, Action::Uplink);
    assert_eq!(whole.offload, offload::Offload::default());
    tcp_ends(whole.frame(), 14); // checks both checksums
    // Large: translated whole, its offload kept, its segments right.
    let (a, large) = nat(&mut gw, &big, off);
    assert_eq!(a, Action::Uplink);
    assert_eq!(large.offload.gso, offload::Gso::Tcp4);
    let n = offload::segment_count(large.len(), &large.offload);
    assert_eq!(n, 3);
    let mut segs: Vec<PacketBuf> = (0..n).map(|_| PacketBuf::new(2048)).collect();
    assert!(offload::segment(large.frame(), 0, &large.offload, 0, &mut segs));
    for seg in &segs {
        let (src, sport, dst, _) = tcp_ends(seg.frame(), 14);
        assert_eq!((src.as_str(), dst.as_str()), (NAT_EXTERNAL, SERVER));
        assert_eq!(sport, tcp_ends(whole.frame(), 14).1, "one mapping for the flow");
    }
    // Segments larger than the uplink takes: the sender hears the MTU.
    let (a, _) = nat(&mut gw, &big, offload::Offload { gso_size: 1500, ..off });
    assert!(matches!(a, Action::Encap { .. }), "an ICMP error back to the VM: {a:?}");
}

/// A TCP segment with `payload` bytes as an IPv4 packet, checksum complete.
fn ip_tcp_payload(src: &str, dst: &str, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut tcp = vec![0u8; 20 + payload];
    let mut t = TcpPacket::new_unchecked(&mut tcp[..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(1000);
    t.set_header_len(20);
    t.set_flags(TcpFlags::ACK);
    t.set_window_len(512);
    t.fill_checksum_v4(&v4(src), &v4(dst));
    ipv4(src, dst, IpProtocol::Tcp, 64, 0, &tcp)
}
