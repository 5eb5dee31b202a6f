//! The NAT's translation rules, limits, timeouts, steering and mirroring,
//! with IPv4 packets as the tenants and the outside would send them.

use super::*;
use crate::dp::testkit::*;
use crate::dp::{Counter, Counters, DropReason};
use crate::wire::*;

const MTU: u16 = 1500;
const T0: u32 = 1000;
const REMOTE: &str = "203.0.113.7";

struct Gw {
    nats: Nats,
    table: NatTable,
    counters: Counters,
}

fn gw() -> Gw {
    Gw { nats: Nats::new(gateway_nats(), 1 << 20).unwrap(), table: NatTable::new(0, 1, T0), counters: Counters::default() }
}

/// 10.0.0.0/8 is the tenants' (their customer routes).
fn inside(a: Ipv4Addr) -> bool {
    a.octets()[0] == 10
}

impl Gw {
    fn out(&mut self, rd: u32, vsid: u32, p: &mut [u8], now: u32) -> NatVerdict {
        self.table.outbound(&self.nats, rd, vsid, p, MTU, now, inside, &self.counters)
    }
    fn inb(&mut self, p: &mut [u8], now: u32) -> NatVerdict {
        self.table.inbound(&self.nats, p, MTU, now, &self.counters)
    }
}

fn ip(p: &[u8]) -> Ipv4Packet<&[u8]> {
    let ip = Ipv4Packet::new_checked(p).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    ip
}

/// (src, sport, dst, dport) of a TCP or UDP packet, its checksum checked.
fn ends(p: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = ip(p);
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    match ip.next_header() {
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(t.verify_checksum_v4(&s, &d), "TCP checksum");
            (s, t.src_port(), d, t.dst_port())
        }
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(u.verify_checksum_v4(&s, &d), "UDP checksum");
            (s, u.src_port(), d, u.dst_port())
        }
        IpProtocol::Icmp => {
            let i = Icmpv4Packet::new_checked(ip.payload()).unwrap();
            assert!(i.verify_checksum(), "ICMP checksum");
            (s, i.echo_ident(), d, i.echo_ident())
        }
        p => panic!("{p:?}"),
    }
}

fn ext() -> Ipv4Addr {
    v4(NAT_EXTERNAL)
}

#[test]
fn tcp_out_and_back_with_checksums_and_ttl() {
    let mut g = gw();
    let mut p = ip_tcp("10.0.1.101", REMOTE, 40000, 443, TcpFlags::SYN);
    assert_eq!(g.out(CONTOSO, 6000, &mut p, T0), NatVerdict::Uplink { nat: 0 });
    let (s, port, d, dport) = ends(&p);
    assert_eq!((s, d, dport), (ext(), v4(REMOTE), 443));
    assert!((1024..=65535).contains(&port));
    assert_eq!(ip(&p).hop_limit(), 63);

    let mut reply = ip_tcp(REMOTE, NAT_EXTERNAL, 443, port, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(g.inb(&mut reply, T0), NatVerdict::Tenant { nat: 0, vsid: 6000 });
    assert_eq!(ends(&reply), (v4(REMOTE), 443, v4("10.0.1.101"), 40000));
    assert_eq!(ip(&reply).hop_limit(), 63);
    assert_eq!((g.counters.get(Counter::NatOutboundPackets), g.counters.get(Counter::NatInboundPackets)), (1, 1));
    assert_eq!(g.counters.get(Counter::NatMappingsCreated), 1);
    assert_eq!(g.table.count(0, Proto::Tcp), 1);
}

#[test]
fn udp_with_and_without_checksum() {
    let mut g = gw();
    let mut p = ip_udp("10.0.1.101", REMOTE, 5353, 53, 20);
    assert!(matches!(g.out(CONTOSO, 6000, &mut p, T0), NatVerdict::Uplink { .. }));
    let (_, port, _, _) = ends(&p);
    // A datagram without a checksum (0) keeps none.
    let mut bare = ip_udp("10.0.1.101", REMOTE, 5353, 53, 20);
    UdpPacket::new_unchecked(&mut bare[20..]).set_checksum(0);
    g.out(CONTOSO, 6000, &mut bare, T0);
    assert_eq!(UdpPacket::new_unchecked(&bare[20..]).checksum(), 0);
    assert_eq!(UdpPacket::new_unchecked(&bare[20..]).src_port(), port, "one mapping per inside endpoint");
    let mut reply = ip_udp(REMOTE, NAT_EXTERNAL, 53, port, 40);
    assert_eq!(g.inb(&mut reply, T0), NatVerdict::Tenant { nat: 0, vsid: 6000 });
    assert_eq!(ends(&reply), (v4(REMOTE), 53, v4("10.0.1.101"), 5353));
}

#[test]
fn icmp_echo_by_identifier() {
    let mut g = gw();
    let mut p = ip_echo("10.0.1.101", REMOTE, 7, false);
    assert!(matches!(g.out(CONTOSO, 6000, &mut p, T0), NatVerdict::Uplink { .. }));
    let (s, id, _, _) = ends(&p);
    assert_eq!(s, ext());
    let mut reply = ip_echo(REMOTE, NAT_EXTERNAL, id, true);
    assert_eq!(g.inb(&mut reply, T0), NatVerdict::Tenant { nat: 0, vsid: 6000 });
    assert_eq!(ends(&reply), (v4(REMOTE), 7, v4("10.0.1.101"), 7));
    // An echo request from outside is the gateway's, never a tenant's.
    let mut req = ip_echo(REMOTE, NAT_EXTERNAL, id, false);
    assert_eq!(g.inb(&mut req, T0), NatVerdict::Drop(DropReason::NatNoMapping));
}

#[test]
fn overlapping_tenants_share_an_address_apart() {
    let mut g = gw();
    let mut a = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    let mut b = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    g.out(CONTOSO, 6000, &mut a, T0);
    assert_eq!(g.out(FABRIKAM, 7000, &mut b, T0), NatVerdict::Uplink { nat: 1 });
    let (pa, pb) = (ends(&a).1, ends(&b).1);
    assert_ne!(pa, pb);
    for (port, vsid, nat) in [(pa, 6000, 0), (pb, 7000, 1)] {
        let mut reply = ip_udp(REMOTE, NAT_EXTERNAL, 53, port, 8);
        assert_eq!(g.inb(&mut reply, T0), NatVerdict::Tenant { nat, vsid });
        assert_eq!(ends(&reply).2, v4("10.0.1.101"));
    }
}

#[test]
fn mapping_and_filtering_are_endpoint_independent() {
    let mut g = gw();
    let mut a = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    let mut b = ip_udp("10.0.1.101", "198.51.100.1", 5000, 99, 8);
    g.out(CONTOSO, 6000, &mut a, T0);
    g.out(CONTOSO, 6000, &mut b, T0);
    assert_eq!(ends(&a).1, ends(&b).1, "one external port whatever the destination (RFC 4787 REQ-1)");
    let mut third = ip_udp("192.0.2.9", NAT_EXTERNAL, 1, ends(&a).1, 8);
    assert!(matches!(g.inb(&mut third, T0), NatVerdict::Tenant { vsid: 6000, .. }));
}

#[test]
fn unsolicited_inbound_is_dropped() {
    let mut g = gw();
    for mut p in [
        ip_udp(REMOTE, NAT_EXTERNAL, 53, 40000, 8),
        ip_tcp(REMOTE, NAT_EXTERNAL, 1, 22, TcpFlags::SYN),
        ip_echo(REMOTE, NAT_EXTERNAL, 9, true),
        ip_tcp(REMOTE, "131.107.10.99", 1, 443, TcpFlags::SYN),
    ] {
        let before = p.clone();
        assert_eq!(g.inb(&mut p, T0), NatVerdict::Drop(DropReason::NatNoMapping));
        assert_eq!(p, before, "left untouched");
    }
    // An outbound echo reply or ICMP error has no mapping to make either.
    let mut reply = ip_echo("10.0.1.101", REMOTE, 9, true);
    assert_eq!(g.out(CONTOSO, 6000, &mut reply, T0), NatVerdict::Drop(DropReason::NatNoMapping));
    assert!(g.table.is_empty());
}

#[test]
fn static_mapping_both_ways_without_state() {
    let mut g = gw();
    let mut syn = ip_tcp(REMOTE, NAT_EXTERNAL, 51000, 443, TcpFlags::SYN);
    assert_eq!(g.inb(&mut syn, T0), NatVerdict::Tenant { nat: 0, vsid: 6000 });
    assert_eq!(ends(&syn), (v4(REMOTE), 51000, v4("10.0.0.100"), 443));
    let mut synack = ip_tcp("10.0.0.100", REMOTE, 443, 51000, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(g.out(CONTOSO, 6000, &mut synack, T0), NatVerdict::Uplink { nat: 0 });
    assert_eq!(ends(&synack), (ext(), 443, v4(REMOTE), 51000));
    assert!(g.table.is_empty());
    // Fabrikam's address is the same, the static mapping is Contoso's alone.
    let mut other = ip_tcp("10.0.0.100", REMOTE, 443, 51000, TcpFlags::ACK);
    g.out(FABRIKAM, 7000, &mut other, T0);
    assert_ne!(ends(&other).1, 443);
}

#[test]
fn icmp_error_from_outside_is_translated_back_with_its_quote() {
    let mut g = gw();
    let mut p = ip_udp("10.0.1.101", REMOTE, 5000, 53, 0);
    g.out(CONTOSO, 6000, &mut p, T0);
    let port = ends(&p).1;
    let mut err = ip_unreachable("198.51.100.254", &p);
    assert_eq!(g.inb(&mut err, T0), NatVerdict::Tenant { nat: 0, vsid: 6000 });
    let outer = ip(&err);
    assert_eq!(outer.dst_addr(), v4("10.0.1.101"));
    let icmp = Icmpv4Packet::new_checked(outer.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let quote = Ipv4Packet::new_checked(icmp.data()).unwrap(); // a whole 8-byte datagram
    assert!(quote.verify_checksum());
    let udp = UdpPacket::new_checked(quote.payload()).unwrap();
    assert_eq!((quote.src_addr(), udp.src_port()), (v4("10.0.1.101"), 5000));
    assert!(udp.verify_checksum_v4(&quote.src_addr(), &quote.dst_addr()), "quoted UDP checksum");
    assert_ne!(port, 5000);
    // About a port nothing maps: dropped.
    let mut stray = ip_udp(NAT_EXTERNAL, REMOTE, 1, 53, 0);
    let mut err = ip_unreachable("198.51.100.254", &stray);
    assert_eq!(g.inb(&mut err, T0), NatVerdict::Drop(DropReason::NatNoMapping));
    assert!(matches!(g.inb(&mut stray, T0), NatVerdict::Drop(_)));
}

#[test]
fn icmp_error_from_a_tenant_is_translated_out_with_its_quote() {
    let mut g = gw();
    let mut syn = ip_tcp(REMOTE, NAT_EXTERNAL, 51000, 443, TcpFlags::SYN);
    g.inb(&mut syn, T0);
    let mut err = ip_unreachable("10.0.0.100", &syn);
    assert_eq!(g.out(CONTOSO, 6000, &mut err, T0), NatVerdict::Uplink { nat: 0 });
    let outer = ip(&err);
    assert_eq!((outer.src_addr(), outer.dst_addr()), (ext(), v4(REMOTE)));
    let icmp = Icmpv4Packet::new_checked(outer.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let quote = Ipv4Packet::new_unchecked(icmp.data());
    let tcp = TcpPacket::new_unchecked(&icmp.data()[20..]);
    assert!(quote.verify_checksum());
    assert_eq!((quote.src_addr(), quote.dst_addr(), tcp.dst_port()), (v4(REMOTE), ext(), 443));
}

#[test]
fn icmp_error_about_an_echo_request() {
    let mut g = gw();
    let mut p = ip_echo("10.0.1.101", REMOTE, 7, false);
    g.out(CONTOSO, 6000, &mut p, T0);
    let mut err = ip_unreachable("198.51.100.254", &p);
    assert!(matches!(g.inb(&mut err, T0), NatVerdict::Tenant { vsid: 6000, .. }));
    let outer = ip(&err);
    let icmp = Icmpv4Packet::new_checked(outer.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let quoted = Icmpv4Packet::new_unchecked(&icmp.data()[20..]);
    assert_eq!(quoted.echo_ident(), 7);
}

#[test]
fn limits_per_nat_and_in_total_refuse_and_count() {
    let mut entries = gateway_nats();
    entries[0].max_mappings = 3;
    let mut g = gw();
    g.nats = Nats::new(entries, 5).unwrap();
    let mut verdicts = Vec::new();
    for i in 0..4 {
        let mut p = ip_udp("10.0.1.101", REMOTE, 5000 + i, 53, 8);
        verdicts.push(g.out(CONTOSO, 6000, &mut p, T0));
    }
    assert_eq!(verdicts[3], NatVerdict::Drop(DropReason::NatTableFull));
    for i in 0..3 {
        let mut p = ip_udp("10.0.1.101", REMOTE, 6000 + i, 53, 8);
        verdicts.push(g.out(FABRIKAM, 7000, &mut p, T0));
    }
    assert_eq!(verdicts[6], NatVerdict::Drop(DropReason::NatTableFull), "5 in total");
    assert_eq!(g.table.len(), 5);
    assert_eq!(g.counters.get(Counter::NatMappingsRefused), 2);
    // A known endpoint still translates at the limit.
    let mut p = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    assert!(matches!(g.out(CONTOSO, 6000, &mut p, T0), NatVerdict::Uplink { .. }));
}

/// Inside endpoints of 10.0.1.101 (UDP, VSID 6000) whose shard is `shard`.
fn ports_of_shard(shard: usize) -> impl Iterator<Item = u16> {
    (1024..u16::MAX).filter(move |&p| InsideKey { vsid: 6000, proto: Proto::Udp, addr: v4("10.0.1.101"), port: p }.shard() == shard)
}

#[test]
fn ports_exhausted_per_shard() {
    // 64 ports: one per shard.
    let mut g = gw();
    g.nats = Nats::new(vec![nat_entry("Contoso", CONTOSO, (2048, 2111))], 1000).unwrap();
    let mut same = ports_of_shard(5);
    let mut a = ip_udp("10.0.1.101", REMOTE, same.next().unwrap(), 53, 8);
    let mut b = ip_udp("10.0.1.101", REMOTE, same.next().unwrap(), 53, 8);
    assert!(matches!(g.out(CONTOSO, 6000, &mut a, T0), NatVerdict::Uplink { .. }));
    assert_eq!(ends(&a).1, 2048 + 5);
    assert_eq!(g.out(CONTOSO, 6000, &mut b, T0), NatVerdict::Drop(DropReason::NatPortsExhausted));
    assert_eq!(g.counters.get(Counter::NatMappingsRefused), 1);
    // Once the first expires its port is free again.
    g.table.tick(T0 + 300, &g.counters);
    assert!(matches!(g.out(CONTOSO, 6000, &mut b, T0 + 300), NatVerdict::Uplink { .. }));
}

#[test]
fn static_ports_are_never_allocated() {
    let mut g = gw();
    let mut entries = gateway_nats();
    entries[0].port_start = 443 - 64;
    entries[0].port_end = 443 + 63;
    g.nats = Nats::new(entries, 1000).unwrap();
    let mut allocated = Vec::new();
    for port in ports_of_shard(443 % 64).take(3) {
        let mut p = ip_tcp("10.0.1.101", REMOTE, port, 80, TcpFlags::SYN);
        let key = InsideKey { vsid: 6000, proto: Proto::Tcp, addr: v4("10.0.1.101"), port };
        if key.shard() == 443 % 64 {
            if let NatVerdict::Uplink { .. } = g.out(CONTOSO, 6000, &mut p, T0) {
                allocated.push(ends(&p).1);
            }
        }
    }
    assert!(!allocated.contains(&443), "{allocated:?}");
}

#[test]
fn idle_timeouts_by_protocol_and_tcp_state() {
    let mut g = gw();
    let mut u = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    let mut e = ip_echo("10.0.1.101", REMOTE, 7, false);
    let mut t = ip_tcp("10.0.1.101", REMOTE, 40000, 443, TcpFlags::SYN);
    let mut half = ip_tcp("10.0.1.101", REMOTE, 40001, 443, TcpFlags::SYN);
    for p in [&mut u, &mut e, &mut t, &mut half] {
        g.out(CONTOSO, 6000, p, T0);
    }
    let tport = ends(&t).1;
    let mut synack = ip_tcp(REMOTE, NAT_EXTERNAL, 443, tport, TcpFlags::SYN | TcpFlags::ACK);
    g.inb(&mut synack, T0);
    let count = |g: &Gw, proto| g.table.count(0, proto);
    g.table.tick(T0 + 59, &g.counters);
    assert_eq!(count(&g, Proto::Icmp), 1);
    g.table.tick(T0 + 60, &g.counters);
    assert_eq!(count(&g, Proto::Icmp), 0, "ICMP: 60 s");
    // UDP refreshed by a packet at +200 lives to +500.
    let mut again = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    g.out(CONTOSO, 6000, &mut again, T0 + 200);
    g.table.tick(T0 + 499, &g.counters);
    assert_eq!(count(&g, Proto::Udp), 1);
    g.table.tick(T0 + 500, &g.counters);
    assert_eq!(count(&g, Proto::Udp), 0, "UDP: 5 min idle");
    assert_eq!(count(&g, Proto::Tcp), 1, "the half-open one went at 4 min, the established one stays");
    g.table.tick(T0 + 7439, &g.counters);
    assert_eq!(count(&g, Proto::Tcp), 1);
    g.table.tick(T0 + 7440, &g.counters);
    assert_eq!(count(&g, Proto::Tcp), 0, "TCP established: 2 h 4 min");
    assert_eq!(g.counters.get(Counter::NatMappingsExpired), 4);
}

#[test]
fn tcp_after_fins_is_transitory() {
    let mut g = gw();
    let mut syn = ip_tcp("10.0.1.101", REMOTE, 40000, 443, TcpFlags::SYN);
    g.out(CONTOSO, 6000, &mut syn, T0);
    let port = ends(&syn).1;
    g.inb(&mut ip_tcp(REMOTE, NAT_EXTERNAL, 443, port, TcpFlags::SYN | TcpFlags::ACK), T0);
    g.out(CONTOSO, 6000, &mut ip_tcp("10.0.1.101", REMOTE, 40000, 443, TcpFlags::FIN | TcpFlags::ACK), T0 + 10);
    assert!(g.table.mappings(T0 + 10).next().unwrap().tcp_established, "half closed");
    g.inb(&mut ip_tcp(REMOTE, NAT_EXTERNAL, 443, port, TcpFlags::FIN | TcpFlags::ACK), T0 + 10);
    let m = g.table.mappings(T0 + 10).next().unwrap();
    assert!(!m.tcp_established);
    assert_eq!(m.expires_in, 240);
}

#[test]
fn a_long_pause_expires_everything_due() {
    let mut g = gw();
    g.out(CONTOSO, 6000, &mut ip_udp("10.0.1.101", REMOTE, 5000, 53, 8), T0);
    let mut t = ip_tcp("10.0.1.101", REMOTE, 40000, 443, TcpFlags::SYN);
    g.out(CONTOSO, 6000, &mut t, T0);
    g.inb(&mut ip_tcp(REMOTE, NAT_EXTERNAL, 443, ends(&t).1, TcpFlags::ACK), T0);
    g.table.tick(T0 + 3000, &g.counters);
    assert_eq!(g.table.len(), 1);
    g.table.tick(T0 + 100_000, &g.counters);
    assert!(g.table.is_empty());
}

#[test]
fn fragments_ttl_and_inside_destinations_are_dropped() {
    let mut g = gw();
    let mut frag = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    let mut f = Ipv4Packet::new_unchecked(&mut frag[..]);
    f.set_more_frags(true);
    f.fill_checksum();
    let mut inbound_frag = frag.clone();
    assert_eq!(g.out(CONTOSO, 6000, &mut frag, T0), NatVerdict::Drop(DropReason::NatFragment));
    assert_eq!(g.inb(&mut inbound_frag, T0), NatVerdict::Drop(DropReason::NatFragment));
    let mut ttl1 = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    Ipv4Packet::new_unchecked(&mut ttl1[..]).set_hop_limit(1);
    Ipv4Packet::new_unchecked(&mut ttl1[..]).fill_checksum();
    assert_eq!(g.out(CONTOSO, 6000, &mut ttl1, T0), NatVerdict::Drop(DropReason::TtlExceeded));
    let mut local = ip_udp("10.0.1.101", "10.0.9.9", 5000, 53, 8);
    assert_eq!(g.out(CONTOSO, 6000, &mut local, T0), NatVerdict::Drop(DropReason::NatInsideDestination));
    let mut bad = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    bad[10] ^= 1;
    assert_eq!(g.out(CONTOSO, 6000, &mut bad, T0), NatVerdict::Drop(DropReason::Malformed));
    assert!(g.table.is_empty());
}

#[test]
fn too_big_gets_fragmentation_needed_from_the_nat() {
    let mut g = gw();
    let mut p = ip_udp("10.0.1.101", REMOTE, 5000, 53, 1600);
    let v = g.table.outbound(&g.nats, CONTOSO, 6000, &mut p, 1400, T0, inside, &g.counters);
    let NatVerdict::Reject { len, reason: DropReason::MtuExceeded } = v else { panic!("{v:?}") };
    let err = ip(&p[..len]);
    assert_eq!((err.src_addr(), err.dst_addr()), (v4(NAT_INTERNAL), v4("10.0.1.101")));
    let icmp = Icmpv4Packet::new_checked(err.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.next_hop_mtu()), (Icmpv4Message::DstUnreachable, 1400));
    assert!(g.table.is_empty(), "no mapping for a packet that did not go");
    let mut no_df = ip_udp("10.0.1.101", REMOTE, 5000, 53, 1600);
    Ipv4Packet::new_unchecked(&mut no_df[..]).set_dont_frag(false);
    Ipv4Packet::new_unchecked(&mut no_df[..]).fill_checksum();
    let v = g.table.outbound(&g.nats, CONTOSO, 6000, &mut no_df, 1400, T0, inside, &g.counters);
    assert_eq!(v, NatVerdict::Drop(DropReason::MtuExceeded));
}

#[test]
fn every_reply_lands_on_the_allocating_worker() {
    let counters = Counters::default();
    let nats = Nats::new(gateway_nats(), 1 << 20).unwrap();
    for workers in [1usize, 2, 3, 5, 64] {
        let mut tables: Vec<NatTable> = (0..workers).map(|w| NatTable::new(w, workers, T0)).collect();
        for i in 0..2000u32 {
            let (vsid, rd) = if i % 2 == 0 { (6000, CONTOSO) } else { (7000, FABRIKAM) };
            let src = Ipv4Addr::from(0x0a00_0100 + i % 50).to_string();
            let mut p = if i % 3 == 0 {
                ip_tcp(&src, REMOTE, 30000 + i as u16, 443, TcpFlags::SYN)
            } else {
                ip_udp(&src, REMOTE, 30000 + i as u16, 53, 8)
            };
            let w = worker_of_shard(outbound_shard(&p, vsid).unwrap(), workers);
            assert!(tables[w].owns(outbound_shard(&p, vsid).unwrap()));
            assert!(matches!(tables[w].outbound(&nats, rd, vsid, &mut p, MTU, T0, inside, &counters), NatVerdict::Uplink { .. }));
            let port = ends(&p).1;
            let mut reply = if i % 3 == 0 {
                ip_tcp(REMOTE, NAT_EXTERNAL, 443, port, TcpFlags::ACK)
            } else {
                ip_udp(REMOTE, NAT_EXTERNAL, 53, port, 8)
            };
            let r = worker_of_shard(inbound_shard(&reply).unwrap(), workers);
            assert_eq!(r, w, "reply to port {port} with {workers} workers");
            let error = ip_unreachable("198.51.100.254", &p);
            assert_eq!(worker_of_shard(inbound_shard(&error).unwrap(), workers), w);
            assert!(matches!(tables[r].inbound(&nats, &mut reply, MTU, T0, &counters), NatVerdict::Tenant { .. }));
        }
        assert_eq!(tables.iter().map(|t| t.len()).sum::<usize>(), 2000);
    }
}

#[test]
fn events_encode_and_decode() {
    let ev = MappingEvent {
        kind: EventKind::Changed,
        inside: InsideKey { vsid: 6000, proto: Proto::Tcp, addr: v4("10.0.1.101"), port: 40000 },
        external: ext(),
        external_port: 1099,
        tcp: 3,
        remaining: 7440,
    };
    let mut b = [0u8; EVENT_LEN];
    ev.encode(&mut b);
    assert_eq!(EVENT_LEN, 24);
    assert_eq!(MappingEvent::decode(&b), Ok(ev));
    assert_eq!(MappingEvent::decode(&b[..23]), Err(MirrorError::Truncated));
    let bad = |at: usize, v: u8| {
        let mut c = b;
        c[at] = v;
        MappingEvent::decode(&c)
    };
    assert_eq!(bad(0, 2), Err(MirrorError::Version(2)));
    assert_eq!(bad(1, 4), Err(MirrorError::Kind(4)));
    assert_eq!(bad(2, 47), Err(MirrorError::Protocol(47)));
    assert_eq!(bad(3, 32), Err(MirrorError::TcpState(32)));
    assert_eq!(bad(4, 1), Err(MirrorError::Vsid(0x0100_1770)));
    // Any bytes decode to an event or an error.
    let mut state = 1u64;
    for _ in 0..20_000 {
        let mut c = [0u8; EVENT_LEN];
        for x in c.iter_mut() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *x = (state >> 56) as u8;
        }
        c[0] = 1;
        if let Ok(ev) = MappingEvent::decode(&c) {
            let mut again = [0u8; EVENT_LEN];
            ev.encode(&mut again);
            assert_eq!(again, c);
        }
    }
}

/// Carry events from the active table to the standby's, as `nat_sync` would.
fn carry(active: &mut NatTable, standby: &mut [NatTable], nats: &Nats, now: u32, counters: &Counters) -> usize {
    let events: Vec<MappingEvent> = active.drain_events().collect();
    for ev in &events {
        let mut b = [0u8; EVENT_LEN];
        ev.encode(&mut b);
        let ev = MappingEvent::decode(&b).unwrap();
        let w = worker_of_shard(ev.shard(), standby.len());
        let rd = if ev.inside.vsid == 6000 { CONTOSO } else { FABRIKAM };
        standby[w].apply(nats, rd, &ev, now, counters).unwrap();
    }
    events.len()
}

#[test]
fn the_standby_translates_as_the_active_did() {
    let mut g = gw();
    g.table.set_mirroring(true);
    // The standby runs three workers, the active one.
    let mut standby: Vec<NatTable> = (0..3).map(|w| NatTable::new(w, 3, T0)).collect();
    let mut flows = Vec::new();
    for i in 0..30u16 {
        let mut p = ip_tcp("10.0.1.101", REMOTE, 40000 + i, 443, TcpFlags::SYN);
        g.out(CONTOSO, 6000, &mut p, T0);
        let port = ends(&p).1;
        g.inb(&mut ip_tcp(REMOTE, NAT_EXTERNAL, 443, port, TcpFlags::SYN | TcpFlags::ACK), T0);
        flows.push((40000 + i, port));
    }
    let mut u = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    g.out(FABRIKAM, 7000, &mut u, T0);
    let sent = carry(&mut g.table, &mut standby, &g.nats, T0, &g.counters);
    assert_eq!(sent, 61, "30 created, 30 established, 1 created");
    // Failover: the standby's workers translate both directions alike.
    for &(inside_port, port) in &flows {
        let mut p = ip_tcp("10.0.1.101", REMOTE, inside_port, 443, TcpFlags::ACK);
        let w = worker_of_shard(outbound_shard(&p, 6000).unwrap(), 3);
        assert!(matches!(standby[w].outbound(&g.nats, CONTOSO, 6000, &mut p, MTU, T0 + 5, inside, &g.counters), NatVerdict::Uplink { .. }));
        assert_eq!(ends(&p).1, port, "same external port after failover");
        let m = standby[w].mappings(T0 + 5).find(|m| m.external_port == port).unwrap();
        assert!(m.tcp_established);
        assert!(m.expires_in >= 7440, "an established connection keeps its long timeout");
    }
    let mut reply = ip_udp(REMOTE, NAT_EXTERNAL, 53, ends(&u).1, 8);
    let w = worker_of_shard(inbound_shard(&reply).unwrap(), 3);
    assert_eq!(standby[w].inbound(&g.nats, &mut reply, MTU, T0 + 5, &g.counters), NatVerdict::Tenant { nat: 1, vsid: 7000 });

    // Removal (expiry) is mirrored; a dump rebuilds a fresh standby.
    g.table.tick(T0 + 300, &g.counters);
    assert_eq!(carry(&mut g.table, &mut standby, &g.nats, T0 + 300, &g.counters), 1);
    assert_eq!(standby.iter().map(|t| t.count(1, Proto::Udp)).sum::<u32>(), 0);
    let mut dump = Vec::new();
    g.table.dump(T0 + 300, &mut dump);
    let mut fresh: Vec<NatTable> = (0..2).map(|w| NatTable::new(w, 2, T0 + 300)).collect();
    for ev in &dump {
        fresh[worker_of_shard(ev.shard(), 2)].apply(&g.nats, CONTOSO, ev, T0 + 300, &g.counters).unwrap();
    }
    assert_eq!(fresh.iter().map(|t| t.len()).sum::<usize>(), 30);
}

#[test]
fn refreshes_are_mirrored_once_per_half_timeout() {
    let mut g = gw();
    g.table.set_mirroring(true);
    let mut standby = [NatTable::new(0, 1, T0)];
    for t in 0..600 {
        g.out(CONTOSO, 6000, &mut ip_udp("10.0.1.101", REMOTE, 5000, 53, 8), T0 + t);
    }
    // Created at T0, then changed at +150, +300, +450.
    assert_eq!(carry(&mut g.table, &mut standby, &g.nats, T0 + 599, &g.counters), 4);
    // The standby keeps it at least as long as the active one does.
    standby[0].tick(T0 + 599 + 300, &g.counters);
    assert_eq!(standby[0].len(), 1);
}

#[test]
fn apply_refuses_events_for_another_nat() {
    let g = gw();
    let mut t = NatTable::new(0, 1, T0);
    let ev = MappingEvent {
        kind: EventKind::Created,
        inside: InsideKey { vsid: 6000, proto: Proto::Udp, addr: v4("10.0.1.101"), port: 5 },
        external: v4("131.107.10.99"),
        external_port: 2000,
        tcp: 0,
        remaining: 10,
    };
    assert_eq!(t.apply(&g.nats, CONTOSO, &ev, T0, &g.counters), Err(MirrorError::NotThisNat));
    assert_eq!(t.apply(&g.nats, 9, &ev, T0, &g.counters), Err(MirrorError::NoNat));
    assert!(t.is_empty());
}

#[test]
fn reconcile_keeps_mappings_of_unchanged_nats() {
    let mut g = gw();
    g.table.set_mirroring(true);
    let mut a = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    let mut b = ip_udp("10.0.1.101", REMOTE, 5000, 53, 8);
    g.out(CONTOSO, 6000, &mut a, T0);
    g.out(FABRIKAM, 7000, &mut b, T0);
    g.table.drain_events().for_each(drop);
    // Fabrikam's range changes, and the order of the entries too.
    let mut entries = gateway_nats();
    entries[1].port_start = 2000;
    entries.reverse();
    let new = Nats::new(entries, 1 << 20).unwrap();
    g.table.reconcile(&g.nats, &new, T0 + 1, &g.counters);
    g.nats = new;
    assert_eq!((g.table.count(1, Proto::Udp), g.table.count(0, Proto::Udp)), (1, 0));
    assert_eq!(g.table.drain_events().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Removed]);
    assert_eq!(g.counters.get(Counter::NatMappingsRemoved), 1);
    let mut reply = ip_udp(REMOTE, NAT_EXTERNAL, 53, ends(&a).1, 8);
    assert_eq!(g.inb(&mut reply, T0 + 1), NatVerdict::Tenant { nat: 1, vsid: 6000 });
    let mut gone = ip_udp(REMOTE, NAT_EXTERNAL, 53, ends(&b).1, 8);
    assert_eq!(g.inb(&mut gone, T0 + 1), NatVerdict::Drop(DropReason::NatNoMapping));

    // A static mapping over a dynamic mapping's port takes it.
    let port = ends(&a).1;
    let mut entries = gateway_nats();
    entries[0].static_mappings.push(StaticMapping {
        proto: Proto::Udp,
        external_port: port,
        vsid: 6000,
        internal_address: v4("10.0.0.100"),
        internal_port: 53,
    });
    let new = Nats::new(entries, 1 << 20).unwrap();
    g.table.reconcile(&g.nats, &new, T0 + 2, &g.counters);
    assert!(g.table.is_empty());
}

#[test]
fn nat_entries_are_checked() {
    let mut e = gateway_nats();
    e[1].routing_domain = CONTOSO;
    assert!(Nats::new(e, 10).unwrap_err().0.contains("nat[1] (Fabrikam).routing_domain"));
    let mut e = gateway_nats();
    e[1].port_start = 0;
    assert!(Nats::new(e, 10).unwrap_err().0.contains("port_start: 0..65535"));
    let mut e = gateway_nats();
    let dup = e[0].static_mappings[0];
    e[1].static_mappings.push(StaticMapping { vsid: 7000, ..dup });
    assert!(Nats::new(e, 10).unwrap_err().0.contains("external_port: tcp 131.107.10.12:443 is mapped twice"));
}

