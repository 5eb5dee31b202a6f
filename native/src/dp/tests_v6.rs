//! IPv6 customer and provider addresses, the MTU check, gateway wildcard
//! records and L2Only learning (flow 4), on Host 1 of the reference topology.

use super::testkit::*;
use super::*;
use crate::wire::*;

fn from_vm(s: &Snapshot, port: PortId, frame: &[u8]) -> (Action, PacketBuf) {
    let mut b = PacketBuf::from_frame(frame);
    let a = on_vm_frame(s, port, &mut b);
    (a, b)
}

fn from_underlay(s: &Snapshot, pkt: &[u8]) -> (Action, PacketBuf) {
    let mut b = PacketBuf::from_frame(pkt);
    let a = on_underlay_packet(s, 0, &mut b);
    (a, b)
}

fn drop_of(a: Action) -> DropReason {
    match a {
        Action::Drop(r) => r,
        other => panic!("expected a drop, got {other:?}"),
    }
}

/// The destination MAC of the inner frame of an IPv4 NVGRE packet.
fn inner_dst(pkt: &[u8]) -> MacAddr {
    let outer = Ipv4Packet::new_checked(pkt).unwrap();
    let gre = GrePacket::new_checked(outer.payload()).unwrap();
    EthernetFrame::new_checked(gre.payload()).unwrap().dst_addr()
}

fn dual() -> Snapshot {
    Snapshot::build(&host1_dual_stack())
}

/// The ICMPv6 message of a frame, checked against its pseudo-header.
fn icmpv6_of(frame: &[u8]) -> (Ipv6Repr, Vec<u8>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), EtherType::Ipv6);
    let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
    let repr = Ipv6Repr::parse(&ip).unwrap();
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(&repr.src_addr, &repr.dst_addr), "ICMPv6 checksum");
    (repr, ip.payload().to_vec())
}

#[test]
fn neighbor_solicitations_for_the_gateway_and_remote_cas_are_answered() {
    let s = dual();
    for (target, mac_answer, router) in [("fd00:1::1", HOST1_GW_MAC, true), ("fd00:1::103", CONTOSO3.1, false)] {
        let (a, b) = from_vm(&s, PORT_CONTOSO1, &neighbor_solicit(mac(CONTOSO1.1), "fd00:1::101", target));
        assert_eq!(a, Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::NeighborAdvert }, "{target}");
        let eth = EthernetFrame::new_checked(b.frame()).unwrap();
        assert_eq!((eth.src_addr(), eth.dst_addr()), (mac(mac_answer), mac(CONTOSO1.1)));
        let (ip, icmp) = icmpv6_of(b.frame());
        assert_eq!((ip.src_addr, ip.dst_addr, ip.hop_limit), (v6(target), v6("fd00:1::101"), 255));
        let packet = Icmpv6Packet::new_checked(&icmp[..]).unwrap();
        match NdiscRepr::parse(&packet).unwrap() {
            NdiscRepr::NeighborAdvert { flags, target_addr, lladdr } => {
                assert_eq!(target_addr, v6(target));
                assert_eq!(lladdr, Some(mac(mac_answer)));
                assert!(flags.contains(NeighborFlags::SOLICITED));
                assert_eq!(flags.contains(NeighborFlags::ROUTER), router);
            }
            other => panic!("{other:?}"),
        }
    }
    // A local VM answers for itself: the solicitation floods the VSID, never the underlay.
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &neighbor_solicit(mac(CONTOSO1.1), "fd00:1::101", "fd00:1::102"));
    assert_eq!(a, Action::Flood { vsid: 6000, except: Some(PORT_CONTOSO1) });
}

#[test]
fn neighbor_discovery_checks() {
    let s = dual();
    // Hop limit 255 or it is not ND (RFC 4861 §7.1).
    let mut ns = neighbor_solicit(mac(CONTOSO1.1), "fd00:1::101", "fd00:1::1");
    ns[14 + 7] = 64;
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &ns).0), DropReason::Malformed);
    // A source link-layer address that is not the adapter's.
    let spoofed = neighbor_solicit(mac(CONTOSO1.1), "fd00:1::101", "fd00:1::1");
    let mut b = spoofed.clone();
    let opt = b.len() - 6;
    b[opt..].copy_from_slice(mac(CONTOSO2.1).as_bytes());
    let sum_at = 14 + 40 + 2;
    b[sum_at..sum_at + 2].copy_from_slice(&[0, 0]);
    let mut icmp = Icmpv6Packet::new_unchecked(&mut b[14 + 40..]);
    icmp.fill_checksum(&v6("fd00:1::101"), &ndisc::solicited_node_multicast(&v6("fd00:1::1")));
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &b).0), DropReason::SpoofedSource);
    // Unicast ND to a remote MAC the host does not answer never crosses.
    let mut unicast = neighbor_solicit(mac(CONTOSO1.1), "fd00:1::101", "fd00:1::77");
    unicast[0..6].copy_from_slice(mac(CONTOSO3.1).as_bytes());
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &unicast).0), DropReason::NdSuppressed);
}

#[test]
fn icmpv6_echo_to_the_gateway_is_answered() {
    let s = dual();
    let (a, b) = from_vm(&s, PORT_CONTOSO1, &ping6(("fd00:1::101", CONTOSO1.1), mac(HOST1_GW_MAC), "fd00:1::1", 64));
    assert_eq!(a, Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::EchoReply });
    let (ip, icmp) = icmpv6_of(b.frame());
    assert_eq!((ip.src_addr, ip.dst_addr), (v6("fd00:1::1"), v6("fd00:1::101")));
    let packet = Icmpv6Packet::new_checked(&icmp[..]).unwrap();
    assert_eq!(packet.msg_type(), Icmpv6Message::EchoReply);
    assert_eq!((packet.echo_ident(), packet.echo_seq_no()), (7, 1));
}

#[test]
fn ipv6_is_routed_between_vsids_and_across_hosts() {
    let s = dual();
    let frame = ping6(("fd00:1::101", CONTOSO1.1), mac(HOST1_GW_MAC), "fd00:2::2", 64);
    let (a, b) = from_vm(&s, PORT_CONTOSO1, &frame);
    assert_eq!(a, Action::Encap { pa: ip(GW_PA), vsid: 6001, routed: true });
    assert_eq!(inner_dst(b.frame()), mac(MTGW.1));
    let inner = &b.frame()[outer_header_len(ip(GW_PA)) + 14..];
    assert_eq!(Ipv6Packet::new_checked(inner).unwrap().hop_limit(), 63);
    // Out of hops.
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &ping6(("fd00:1::101", CONTOSO1.1), mac(HOST1_GW_MAC), "fd00:2::2", 1));
    assert_eq!(drop_of(a), DropReason::TtlExceeded);
}

/// Host 1 with its PA and every remote PA in IPv6.
fn ipv6_underlay(mut p: Policy) -> Policy {
    let map = |a: IpAddr| match a.to_string().as_str() {
        HOST1_PA => ip("fd00:192:168::22"),
        HOST2_PA => ip("fd00:192:168::33"),
        GW_PA => ip("fd00:192:168::11"),
        _ => a,
    };
    p.provider_addresses = vec![ProviderAddress { address: ip("fd00:192:168::22"), prefix_len: 64, mtu: 1500, ifindex: 0, vlan_id: 0 }];
    for r in &mut p.lookup_records {
        r.provider_address = map(r.provider_address);
    }
    p
}

#[test]
fn an_ipv6_underlay_carries_ipv4_and_ipv6_customer_addresses() {
    let s = Snapshot::build(&ipv6_underlay(host1_dual_stack()));
    for frame in [
        udp(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 1, 2, 10),
        ping6(("fd00:1::101", CONTOSO1.1), mac(CONTOSO3.1), "fd00:1::103", 64),
    ] {
        let (a, b) = from_vm(&s, PORT_CONTOSO1, &frame);
        assert_eq!(a, Action::Encap { pa: ip("fd00:192:168::33"), vsid: 6000, routed: false });
        let outer = Ipv6Packet::new_checked(b.frame()).unwrap();
        let repr = Ipv6Repr::parse(&outer).unwrap();
        assert_eq!((repr.src_addr, repr.dst_addr), (v6("fd00:192:168::22"), v6("fd00:192:168::33")));
        assert_eq!((repr.next_header, repr.hop_limit), (IpProtocol::Gre, 64));
        let gre = GrePacket::new_checked(outer.payload()).unwrap();
        assert_eq!(NvgreRepr::parse(&gre).unwrap().vsid, 6000);
        assert_eq!(gre.payload(), &frame[..]);
    }
    // And back: what an IPv6 socket reads (GRE onwards), with the outer addresses.
    let inner = ping(CONTOSO3, mac(CONTOSO1.1), CONTOSO1.0, 64);
    let gre_only = nvgre(HOST2_PA, HOST1_PA, 6000, 9, &inner)[20..].to_vec();
    let mut b = PacketBuf::from_frame(&gre_only);
    let a = on_underlay_gre(&s, ip("fd00:192:168::33"), ip("fd00:192:168::22"), 0, &mut b);
    assert_eq!(a, Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::Decapsulated });
    assert_eq!(b.frame(), &inner[..]);
    let mut b = PacketBuf::from_frame(&gre_only);
    let a = on_underlay_gre(&s, ip("fd00:192:168::11"), ip("fd00:192:168::22"), 0, &mut b);
    assert_eq!(drop_of(a), DropReason::SpoofedSource);
}

#[test]
fn an_ipv6_customer_over_an_ipv4_underlay() {
    let s = dual();
    let (a, b) = from_vm(&s, PORT_CONTOSO1, &ping6(("fd00:1::101", CONTOSO1.1), mac(CONTOSO3.1), "fd00:1::103", 64));
    assert_eq!(a, Action::Encap { pa: ip(HOST2_PA), vsid: 6000, routed: false });
    assert_eq!(Ipv4Packet::new_checked(b.frame()).unwrap().next_header(), IpProtocol::Gre);
}

#[test]
fn too_big_for_the_underlay_is_answered_with_an_icmp_error() {
    let s = Snapshot::build(&host1()); // underlay MTU 1500: inner IP packets up to 1458 fit
    let fits = big_udp(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 1458, true);
    assert!(matches!(from_vm(&s, PORT_CONTOSO1, &fits).0, Action::Encap { .. }));

    let (a, b) = from_vm(&s, PORT_CONTOSO1, &big_udp(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 1500, true));
    assert_eq!(a, Action::Reject { port: PORT_CONTOSO1, vsid: 6000, reason: DropReason::MtuExceeded });
    let eth = EthernetFrame::new_checked(b.frame()).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (mac(HOST1_GW_MAC), mac(CONTOSO1.1)));
    let ipk = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let outer = Ipv4Repr::parse(&ipk).unwrap();
    assert_eq!((outer.src_addr, outer.dst_addr), (v4("10.0.1.1"), v4(CONTOSO1.0)));
    let icmp = Icmpv4Packet::new_checked(ipk.payload()).unwrap();
    match Icmpv4Repr::parse(&icmp).unwrap() {
        Icmpv4Repr::DstUnreachable { reason, next_hop_mtu, header, data } => {
            assert_eq!(reason, Icmpv4DstUnreachable::FragRequired);
            assert_eq!(next_hop_mtu, 1458);
            assert_eq!((header.src_addr, header.dst_addr), (v4(CONTOSO1.0), v4(CONTOSO3.0)));
            assert_eq!(data.len(), 8);
        }
        other => panic!("{other:?}"),
    }
    // Without DF a router would fragment; nvgred drops (and counts) it.
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &big_udp(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 1500, false));
    assert_eq!(drop_of(a), DropReason::MtuExceeded);

    // IPv6 over an IPv6 underlay: 1500 - 40 - 8 - 14 = 1438.
    let s6 = Snapshot::build(&ipv6_underlay(host1_dual_stack()));
    let mut frame = ping6(("fd00:1::101", CONTOSO1.1), mac(CONTOSO3.1), "fd00:1::103", 64);
    frame.resize(14 + 1480, 0);
    let plen = (1480 - 40) as u16;
    frame[14 + 4..14 + 6].copy_from_slice(&plen.to_be_bytes());
    let (a, b) = from_vm(&s6, PORT_CONTOSO1, &frame);
    assert_eq!(a, Action::Reject { port: PORT_CONTOSO1, vsid: 6000, reason: DropReason::MtuExceeded });
    let (ip6, icmp) = icmpv6_of(b.frame());
    assert_eq!((ip6.src_addr, ip6.dst_addr), (v6("fd00:1::1"), v6("fd00:1::101")));
    assert!(b.len() <= 14 + 1280, "an ICMPv6 error fits the minimum MTU");
    let packet = Icmpv6Packet::new_checked(&icmp[..]).unwrap();
    assert_eq!((packet.msg_type(), packet.mtu()), (Icmpv6Message::PacketTooBig, 1438));
}

#[test]
fn a_gateway_wildcard_record_takes_routed_destinations_without_a_record() {
    let mut p = host1();
    let wildcard = LookupRecord {
        vsid: 6001,
        customer_address: ip("0.0.0.0"),
        mac: mac("60:01:60:01:03:09"),
        provider_address: ip(GW_PA),
        rule: Rule::Encap,
        kind: RecordType::GatewayWildcard,
    };
    p.lookup_records.push(wildcard);
    let s = Snapshot::build(&p);
    // 10.0.2.77 has no record in VSID 6001: the wildcard's gateway gets it.
    let (a, b) = from_vm(&s, PORT_CONTOSO1, &ping(CONTOSO1, mac(HOST1_GW_MAC), "10.0.2.77", 64));
    assert_eq!(a, Action::Encap { pa: ip(GW_PA), vsid: 6001, routed: true });
    assert_eq!(inner_dst(b.frame()), mac("60:01:60:01:03:09"));
    // An exact record still wins.
    let (_, b) = from_vm(&s, PORT_CONTOSO1, &ping(CONTOSO1, mac(HOST1_GW_MAC), MTGW.0, 64));
    assert_eq!(inner_dst(b.frame()), mac(MTGW.1));
    // Without a wildcard, no record is a drop.
    let (a, _) = from_vm(&Snapshot::build(&host1()), PORT_CONTOSO1, &ping(CONTOSO1, mac(HOST1_GW_MAC), "10.0.2.77", 64));
    assert_eq!(drop_of(a), DropReason::NoLookupRecord);
}

/// Host 1 where Contoso3's IP is not known: only an L2Only record says its
/// MAC lives behind Host 2. Host 1's own VMs have L2Only records too.
fn l2only_policy() -> Policy {
    let mut p = host1();
    p.lookup_records.retain(|r| r.mac != mac(CONTOSO3.1));
    let l2 = |m: &str, pa: &str| LookupRecord {
        vsid: 6000,
        customer_address: ip("0.0.0.0"),
        mac: mac(m),
        provider_address: ip(pa),
        rule: Rule::Encap,
        kind: RecordType::L2Only,
    };
    p.lookup_records.push(l2(CONTOSO3.1, HOST2_PA));
    p.lookup_records.push(l2("60:00:60:00:01:05", HOST1_PA));
    p
}

#[test]
fn flow4_an_arp_request_for_an_unknown_ca_probes_the_l2only_pas() {
    let s = Snapshot::build(&l2only_policy());
    let req = arp_request(mac(CONTOSO1.1), CONTOSO1.0, CONTOSO3.0, MacAddr::BROADCAST);
    assert_eq!(from_vm(&s, PORT_CONTOSO1, &req).0, Action::Probe { vsid: 6000, except: PORT_CONTOSO1 });
    let probe_to = &s.subnet(6000).unwrap().l2only_tunnels;
    assert_eq!(probe_to.len(), 1, "one probe per remote L2Only PA");
    assert_eq!(s.tunnel(probe_to[0]).remote, ip(HOST2_PA));
    // A known CA is answered as before; without L2Only records a request only floods.
    let known = arp_request(mac(CONTOSO1.1), CONTOSO1.0, "10.0.1.1", MacAddr::BROADCAST);
    assert_eq!(from_vm(&s, PORT_CONTOSO1, &known).0, Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::ArpReply });
    let (a, _) = from_vm(&Snapshot::build(&host1()), PORT_CONTOSO1, &arp_request(mac(CONTOSO1.1), CONTOSO1.0, "10.0.1.99", MacAddr::BROADCAST));
    assert_eq!(a, Action::Flood { vsid: 6000, except: Some(PORT_CONTOSO1) });

    // The reply to a remote L2Only MAC crosses (and teaches the sender's host).
    let reply = arp_reply(mac(CONTOSO1.1), CONTOSO1.0, mac(CONTOSO3.1), CONTOSO3.0);
    let (a, b) = from_vm(&s, PORT_CONTOSO1, &reply);
    assert_eq!(a, Action::Encap { pa: ip(HOST2_PA), vsid: 6000, routed: false });
    let inner = &b.frame()[outer_header_len(ip(HOST2_PA))..];
    // Contoso1 has no L2Only record here: its address is static, nothing to learn.
    assert_eq!(learn::from_vm(&s, 6000, ip(HOST1_PA), inner), None);
    // ARP to a MAC with a static record elsewhere still never crosses.
    let static_reply = arp_reply(mac(CONTOSO1.1), CONTOSO1.0, mac(MTGW.1), MTGW.0);
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &static_reply).0), DropReason::ArpSuppressed);
}

#[test]
fn flow4_the_receiving_host_floods_the_request_and_learns_only_from_the_right_pa() {
    let s = Snapshot::build(&l2only_policy());
    // Host 2's VM asks (it is behind Host 2 by its L2Only record): the request reaches the VSID's VMs.
    let req = arp_request(mac(CONTOSO3.1), CONTOSO3.0, CONTOSO1.0, MacAddr::BROADCAST);
    let mut b = PacketBuf::from_frame(&nvgre(HOST2_PA, HOST1_PA, 6000, 0, &req));
    assert_eq!(on_underlay_packet(&s, 0, &mut b), Action::Flood { vsid: 6000, except: None });
    assert_eq!(b.frame(), &req[..]);
    // Other broadcasts never cross.
    let mut b = PacketBuf::from_frame(&nvgre(HOST2_PA, HOST1_PA, 6000, 0, &udp(CONTOSO3, MacAddr::BROADCAST, "10.0.1.255", 1, 2, 0)));
    assert_eq!(drop_of(on_underlay_packet(&s, 0, &mut b)), DropReason::UnknownDestination);

    // The reply from the L2Only MAC's PA is learned; from another PA it is not.
    let reply = arp_reply(mac(CONTOSO3.1), CONTOSO3.0, mac(CONTOSO1.1), CONTOSO1.0);
    assert_eq!(
        learn::from_underlay(&s, 6000, ip(HOST2_PA), &reply),
        Some(Learned { vsid: 6000, customer_address: ip(CONTOSO3.0), mac: mac(CONTOSO3.1), provider_address: ip(HOST2_PA) })
    );
    assert_eq!(learn::from_underlay(&s, 6000, ip(GW_PA), &reply), None);
    // A MAC with a static record teaches nothing: its address is not learned.
    let static_reply = arp_reply(mac(MTGW.1), "10.0.2.9", mac(CONTOSO1.1), CONTOSO1.0);
    assert_eq!(learn::from_underlay(&s, 6001, ip(GW_PA), &static_reply), None);
    // Requests teach nothing; only replies.
    assert_eq!(learn::from_underlay(&s, 6000, ip(HOST2_PA), &req), None);

    // The local side: a VM with an L2Only record here answering a probe is learned at the local PA.
    let mut p = l2only_policy();
    p.ports.push(Port { id: 9, vsid: 6000, mac: mac("60:00:60:00:01:05") });
    let s = Snapshot::build(&p);
    let local_reply = arp_reply(mac("60:00:60:00:01:05"), "10.0.1.105", mac(CONTOSO3.1), CONTOSO3.0);
    let (a, b) = from_vm(&s, 9, &local_reply);
    assert!(matches!(a, Action::Encap { .. }));
    assert_eq!(
        learn::from_vm(&s, 6000, ip(HOST1_PA), &b.frame()[outer_header_len(ip(HOST2_PA))..]),
        Some(Learned { vsid: 6000, customer_address: ip("10.0.1.105"), mac: mac("60:00:60:00:01:05"), provider_address: ip(HOST1_PA) })
    );
}

#[test]
fn flow4_a_learned_vms_reply_reaches_an_asker_known_by_a_static_record() {
    // Every host carries every VM's record: the asker (on Host 2) is static here.
    let asker = ("10.0.1.110", "60:00:60:00:02:10");
    let mut p = l2only_policy();
    p.lookup_records.push(record(6000, asker, HOST2_PA));
    p.ports.push(Port { id: 9, vsid: 6000, mac: mac("60:00:60:00:01:05") });
    let s = Snapshot::build(&p);
    let reply = arp_reply(mac("60:00:60:00:01:05"), "10.0.1.105", mac(asker.1), asker.0);
    assert_eq!(from_vm(&s, 9, &reply).0, Action::Encap { pa: ip(HOST2_PA), vsid: 6000, routed: false });
    // A reply claiming an address this host knows as another VM's never crosses.
    let claims_other = arp_reply(mac(CONTOSO1.1), CONTOSO2.0, mac(asker.1), asker.0);
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &claims_other).0), DropReason::ArpSuppressed);
}

#[test]
fn flow4_a_reply_crosses_back_although_this_host_has_no_l2only_record_of_its_vm() {
    // Host 2 probed with its L2Only record of our VM; this host (Host 1) has
    // only a static record of the asker and none of its own VM (policies
    // differ while a change spreads): the probe was delivered, so must the reply be.
    let asker = ("10.0.1.110", "60:00:60:00:02:10");
    let ours = ("10.0.1.105", "60:00:60:00:01:05");
    let mut p = host1();
    p.lookup_records.push(record(6000, asker, HOST2_PA));
    p.ports.push(Port { id: 9, vsid: 6000, mac: mac(ours.1) });
    let s = Snapshot::build(&p);
    let probe = nvgre(HOST2_PA, HOST1_PA, 6000, 0, &arp_request(mac(asker.1), asker.0, ours.0, MacAddr::BROADCAST));
    assert!(matches!(from_underlay(&s, &probe).0, Action::Flood { vsid: 6000, .. }), "the probe reaches our VMs");
    let reply = arp_reply(mac(ours.1), ours.0, mac(asker.1), asker.0);
    assert_eq!(from_vm(&s, 9, &reply).0, Action::Encap { pa: ip(HOST2_PA), vsid: 6000, routed: false });
}

#[test]
fn flow4_traffic_from_a_learned_vm_keeps_its_record_alive() {
    let dynamic = |vm: (&str, &str), pa: &str| LookupRecord { kind: RecordType::Dynamic, ..record(6000, vm, pa) };
    let local = ("10.0.1.105", "60:00:60:00:01:05");
    let mut p = l2only_policy();
    p.lookup_records.push(dynamic(CONTOSO3, HOST2_PA));
    p.lookup_records.push(dynamic(local, HOST1_PA));
    p.ports.push(Port { id: 9, vsid: 6000, mac: mac(local.1) });
    let s = Snapshot::build(&p);

    // Arriving: a ping from the learned VM, from its record's PA, reports the record again.
    let ping_in = ping(CONTOSO3, mac(CONTOSO1.1), CONTOSO1.0, 64);
    assert_eq!(
        learn::from_underlay(&s, 6000, ip(HOST2_PA), &ping_in),
        Some(Learned { vsid: 6000, customer_address: ip(CONTOSO3.0), mac: mac(CONTOSO3.1), provider_address: ip(HOST2_PA) })
    );
    // Not from another PA, not from an address that is not the record's, not from a static VM.
    assert_eq!(learn::from_underlay(&s, 6000, ip(GW_PA), &ping_in), None);
    assert_eq!(learn::from_underlay(&s, 6000, ip(HOST2_PA), &ping(("10.0.1.99", CONTOSO3.1), mac(CONTOSO1.1), CONTOSO1.0, 64)), None);
    assert_eq!(learn::from_underlay(&s, 6000, ip(HOST2_PA), &ping(CONTOSO1, mac(CONTOSO2.1), CONTOSO2.0, 64)), None);

    // Leaving: the local learned VM's ping, sent encapsulated, reports it at the local PA.
    let (a, b) = from_vm(&s, 9, &ping(local, mac(CONTOSO3.1), CONTOSO3.0, 64));
    assert_eq!(a, Action::Encap { pa: ip(HOST2_PA), vsid: 6000, routed: false });
    assert_eq!(
        learn::from_vm(&s, 6000, ip(HOST1_PA), &b.frame()[outer_header_len(ip(HOST2_PA))..]),
        Some(Learned { vsid: 6000, customer_address: ip(local.0), mac: mac(local.1), provider_address: ip(HOST1_PA) })
    );
}
