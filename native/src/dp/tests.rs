//! The decision core against the spec's packet flows, on Host 1 of the
//! reference topology (plus the Fabrikam tenant on the same addresses).

use super::testkit::*;
use super::*;
use crate::wire::*;

fn snap() -> Snapshot {
    Snapshot::build(&host1())
}

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

fn arp_reply_of(frame: &[u8]) -> (MacAddr, MacAddr, ArpRepr) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), EtherType::Arp);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
    (eth.src_addr(), eth.dst_addr(), arp)
}

/// The outer header and inner frame of an encapsulated packet.
fn decode_encap(b: &PacketBuf) -> (Ipv4Repr, u8, u8, u8, NvgreRepr, Vec<u8>) {
    let ip = Ipv4Packet::new_checked(b.frame()).unwrap();
    let repr = Ipv4Repr::parse(&ip).unwrap();
    let gre = GrePacket::new_checked(ip.payload()).unwrap();
    let nvgre = NvgreRepr::parse(&gre).unwrap();
    (repr, ip.hop_limit(), ip.dscp(), ip.dont_frag() as u8, nvgre, gre.payload().to_vec())
}

// Flow 1: same VSID, same host: switched locally, never encapsulated.
#[test]
fn flow1_same_vsid_same_host_is_switched() {
    let s = snap();
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &ping(CONTOSO1, mac(CONTOSO2.1), CONTOSO2.0, 64));
    assert_eq!(a, Action::Deliver { port: PORT_CONTOSO2, vsid: 6000, via: Via::Switched });

    // ARP for a local VM reaches the other local VMs of the VSID only.
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &arp_request(mac(CONTOSO1.1), CONTOSO1.0, CONTOSO2.0, MacAddr::BROADCAST));
    assert_eq!(a, Action::Flood { vsid: 6000, except: Some(PORT_CONTOSO1) });
    assert_eq!(s.subnet(6000).unwrap().ports, vec![PORT_CONTOSO1, PORT_CONTOSO2]);
}

// Flow 7 and the `.1` ARP: the host answers for the gateway.
#[test]
fn gateway_arp_and_echo_are_answered() {
    let s = snap();
    let (a, b) = from_vm(&s, PORT_CONTOSO1, &arp_request(mac(CONTOSO1.1), CONTOSO1.0, "10.0.1.1", MacAddr::BROADCAST));
    assert_eq!(a, Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::ArpReply });
    let (src, dst, arp) = arp_reply_of(b.frame());
    assert_eq!((src, dst), (mac(HOST1_GW_MAC), mac(CONTOSO1.1)));
    assert_eq!(
        arp,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: mac(HOST1_GW_MAC),
            source_protocol_addr: v4("10.0.1.1"),
            target_hardware_addr: mac(CONTOSO1.1),
            target_protocol_addr: v4(CONTOSO1.0),
        }
    );

    let (a, b) = from_vm(&s, PORT_CONTOSO1, &ping(CONTOSO1, mac(HOST1_GW_MAC), "10.0.1.1", 64));
    assert_eq!(a, Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::EchoReply });
    let eth = EthernetFrame::new_checked(b.frame()).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (mac(HOST1_GW_MAC), mac(CONTOSO1.1)));
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (v4("10.0.1.1"), v4(CONTOSO1.0)));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), Icmpv4Message::EchoReply);
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (7, 1));

    // A unicast ARP refresh to the gateway MAC is answered the same way.
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &arp_request(mac(CONTOSO1.1), CONTOSO1.0, "10.0.1.1", mac(HOST1_GW_MAC)));
    assert_eq!(a, Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::ArpReply });

    // Only echo: anything else to the gateway is dropped under its reason.
    let udp_to_gw = udp(CONTOSO1, mac(HOST1_GW_MAC), "10.0.1.1", 1000, 53, 0);
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &udp_to_gw).0), DropReason::GatewayUnsupported);
}

#[test]
fn vsid_without_gateway_record_uses_the_default_gateway_mac() {
    let s = snap();
    let (a, b) =
        from_vm(&s, PORT_FABRIKAM1, &arp_request(mac(FABRIKAM1.1), FABRIKAM1.0, "10.0.1.1", MacAddr::BROADCAST));
    assert_eq!(a, Action::Deliver { port: PORT_FABRIKAM1, vsid: 7000, via: Via::ArpReply });
    assert_eq!(arp_reply_of(b.frame()).0, mac(DEFAULT_GW_MAC));
}

// Flow 3: same VSID, other host: ARP answered from the record, frames encapsulated.
#[test]
fn flow3_same_vsid_other_host_is_encapsulated() {
    let s = snap();
    let (a, b) = from_vm(&s, PORT_CONTOSO1, &arp_request(mac(CONTOSO1.1), CONTOSO1.0, CONTOSO3.0, MacAddr::BROADCAST));
    assert_eq!(a, Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::ArpReply });
    assert_eq!(arp_reply_of(b.frame()).0, mac(CONTOSO3.1));

    let frame = udp(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 4000, 5000, 46);
    let (a, b) = from_vm(&s, PORT_CONTOSO1, &frame);
    assert_eq!(a, Action::Encap { pa: ip(HOST2_PA), vsid: 6000, routed: false });
    let (outer, ttl, dscp, df, nvgre, inner) = decode_encap(&b);
    assert_eq!((outer.src_addr, outer.dst_addr), (v4(HOST1_PA), v4(HOST2_PA)));
    assert_eq!(outer.next_header, IpProtocol::Gre);
    assert_eq!((ttl, dscp, df), (64, 46, 1), "TTL 64, DSCP copied from the inner packet, DF set");
    assert_eq!(nvgre.vsid, 6000);
    assert_eq!(inner, frame, "the inner frame is the VM's, unchanged");

    // One flow, one FlowID; another flow may get another.
    let again = from_vm(&s, PORT_CONTOSO1, &frame).1;
    assert_eq!(decode_encap(&again).4.flow_id, nvgre.flow_id);
    let ids: std::collections::HashSet<u8> = (0..64u16)
        .map(|p| decode_encap(&from_vm(&s, PORT_CONTOSO1, &udp(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, p, 5000, 0)).1).4.flow_id)
        .collect();
    assert!(ids.len() > 16, "flows spread over FlowIDs: {ids:?}");
}

#[test]
fn flow_id_zero_mode_puts_zero_in_the_key() {
    let mut p = host1();
    p.flow_id = FlowIdMode::Zero;
    let s = Snapshot::build(&p);
    for port in 0..16 {
        let (_, b) = from_vm(&s, PORT_CONTOSO1, &udp(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, port, 5000, 0));
        let nvgre = decode_encap(&b).4;
        assert_eq!(nvgre.key(), 6000 << 8);
    }
}

// Flows 5 and 6: routed by the customer route's next hop to the gateway VM.
#[test]
fn flow6_routed_to_the_gateway_vm_by_next_hop() {
    let s = snap();
    let frame = ping(CONTOSO1, mac(HOST1_GW_MAC), "10.1.3.100", 64);
    let (a, b) = from_vm(&s, PORT_CONTOSO1, &frame);
    assert_eq!(a, Action::Encap { pa: ip(GW_PA), vsid: 6001, routed: true });
    let (outer, _, _, _, nvgre, inner) = decode_encap(&b);
    assert_eq!(outer.dst_addr, v4(GW_PA));
    assert_eq!(nvgre.vsid, 6001, "the gateway's VSID is in the key");
    let eth = EthernetFrame::new_checked(&inner[..]).unwrap();
    assert_eq!(eth.dst_addr(), mac(MTGW.1), "destination MAC rewritten to the gateway VM's");
    assert_eq!(eth.src_addr(), mac(CONTOSO1.1), "the source stays the VM's, for the receiver's check");
    let routed = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(routed.hop_limit(), 63);
    assert!(routed.verify_checksum());
    assert_eq!(routed.dst_addr(), v4("10.1.3.100"));

    // MT-GW's own CA goes by the on-link 10.0.2.0/24 route.
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &ping(CONTOSO1, mac(HOST1_GW_MAC), MTGW.0, 64));
    assert_eq!(a, Action::Encap { pa: ip(GW_PA), vsid: 6001, routed: true });
}

// Two routes of one prefix length cover the destination (another VSID's
// default route): the lower metric wins, whatever their order.
#[test]
fn the_lower_metric_wins_among_routes_of_one_length() {
    let to = |default_6001: u32, default_6000: u32| {
        let mut p = host1();
        p.customer_routes.iter_mut().find(|r| r.vsid == 6001 && r.prefix_len == 0).unwrap().metric = default_6001;
        p.customer_routes.push(CustomerRoute {
            routing_domain: CONTOSO,
            vsid: 6000,
            prefix: ip("0.0.0.0"),
            prefix_len: 0,
            next_hop: Some(ip(CONTOSO3.0)),
            metric: default_6000,
        });
        from_vm(&Snapshot::build(&p), PORT_CONTOSO1, &ping(CONTOSO1, mac(HOST1_GW_MAC), "10.1.3.100", 64)).0
    };
    assert_eq!(to(0, 10), Action::Encap { pa: ip(GW_PA), vsid: 6001, routed: true });
    assert_eq!(to(20, 10), Action::Encap { pa: ip(HOST2_PA), vsid: 6000, routed: true });
}

// Flow 2: different VSIDs, same host: routed and delivered locally.
#[test]
fn flow2_routed_between_vsids_on_one_host() {
    let mut p = host1();
    let db = ("10.0.2.10", "60:01:60:01:01:10");
    p.lookup_records.push(record(6001, db, HOST1_PA));
    p.ports.push(Port { id: 9, vsid: 6001, mac: mac(db.1) });
    let s = Snapshot::build(&p);
    let (a, b) = from_vm(&s, PORT_CONTOSO1, &ping(CONTOSO1, mac(HOST1_GW_MAC), db.0, 64));
    assert_eq!(a, Action::Deliver { port: 9, vsid: 6001, via: Via::Routed });
    let eth = EthernetFrame::new_checked(b.frame()).unwrap();
    assert_eq!(eth.dst_addr(), mac(db.1));
    assert_eq!(eth.src_addr(), mac(DEFAULT_GW_MAC), "from VSID 6001's gateway (no .1 record there)");
    assert_eq!(Ipv4Packet::new_checked(eth.payload()).unwrap().hop_limit(), 63);

    // A routed destination without a lookup record is dropped.
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &ping(CONTOSO1, mac(HOST1_GW_MAC), "10.0.2.99", 64));
    assert_eq!(drop_of(a), DropReason::NoLookupRecord);
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &ping(CONTOSO1, mac(HOST1_GW_MAC), "10.0.1.102", 1));
    assert_eq!(drop_of(a), DropReason::TtlExceeded);
}

// VSID ACL and routing-domain isolation with overlapping CAs.
#[test]
fn tenants_with_overlapping_cas_stay_apart() {
    let s = snap();
    // Fabrikam1's ARP for .103 is answered with Fabrikam3's MAC, not Contoso3's.
    let (_, b) =
        from_vm(&s, PORT_FABRIKAM1, &arp_request(mac(FABRIKAM1.1), FABRIKAM1.0, FABRIKAM3.0, MacAddr::BROADCAST));
    assert_eq!(arp_reply_of(b.frame()).0, mac(FABRIKAM3.1));
    let (a, b) = from_vm(&s, PORT_FABRIKAM1, &udp(FABRIKAM1, mac(FABRIKAM3.1), FABRIKAM3.0, 1, 2, 0));
    assert_eq!(a, Action::Encap { pa: ip(HOST2_PA), vsid: 7000, routed: false });
    assert_eq!(decode_encap(&b).4.vsid, 7000);

    // Another domain's MACs are unknown; its routes don't exist.
    for target in [CONTOSO2.1, CONTOSO3.1, MTGW.1] {
        let (a, _) = from_vm(&s, PORT_FABRIKAM1, &udp(FABRIKAM1, mac(target), CONTOSO2.0, 1, 2, 0));
        assert_eq!(drop_of(a), DropReason::UnknownDestination, "to {target}");
    }
    let (a, _) = from_vm(&s, PORT_FABRIKAM1, &ping(FABRIKAM1, mac(DEFAULT_GW_MAC), MTGW.0, 64));
    assert_eq!(drop_of(a), DropReason::NoRoute);
    let (a, _) = from_vm(&s, PORT_FABRIKAM1, &ping(FABRIKAM1, mac(DEFAULT_GW_MAC), "10.1.3.100", 64));
    assert_eq!(drop_of(a), DropReason::NoRoute);
    // Broadcasts flood only the own VSID.
    let (a, _) = from_vm(&s, PORT_FABRIKAM1, &udp(FABRIKAM1, MacAddr::BROADCAST, "10.0.1.255", 1, 2, 0));
    assert_eq!(a, Action::Flood { vsid: 7000, except: Some(PORT_FABRIKAM1) });

    // Within a domain, L2 never crosses VSIDs: only the router does.
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &udp(CONTOSO1, mac(MTGW.1), MTGW.0, 1, 2, 0));
    assert_eq!(drop_of(a), DropReason::VsidMismatch);
}

#[test]
fn vm_source_checks() {
    let s = snap();
    let spoofed = ping(CONTOSO2, mac(CONTOSO3.1), CONTOSO3.0, 64);
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &spoofed).0), DropReason::SpoofedSource);

    let mut arp = arp_request(mac(CONTOSO1.1), CONTOSO1.0, CONTOSO3.0, MacAddr::BROADCAST);
    arp[14 + 8..14 + 14].copy_from_slice(mac(CONTOSO2.1).as_bytes()); // ARP sender MAC
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &arp).0), DropReason::SpoofedSource);

    let mut tagged = ping(CONTOSO1, mac(CONTOSO2.1), CONTOSO2.0, 64);
    tagged[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &tagged).0), DropReason::VlanTagged);

    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &[0u8; 10]).0), DropReason::Truncated);
    assert_eq!(drop_of(from_vm(&s, 42, &ping(CONTOSO1, mac(CONTOSO2.1), CONTOSO2.0, 64)).0), DropReason::PortGone);

    // ARP for remote CAs is answered here; other ARP to a remote MAC never
    // leaves: a request, or a reply claiming another VM's address.
    let request = arp_request(mac(CONTOSO1.1), CONTOSO1.0, "10.0.1.150", mac(CONTOSO3.1));
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &request).0), DropReason::ArpSuppressed);
    let claims_other = arp_reply(mac(CONTOSO1.1), CONTOSO2.0, mac(CONTOSO3.1), CONTOSO3.0);
    assert_eq!(drop_of(from_vm(&s, PORT_CONTOSO1, &claims_other).0), DropReason::ArpSuppressed);
}

#[test]
fn records_with_rule_none_are_not_encapsulated() {
    let mut p = host1();
    p.lookup_records.iter_mut().find(|r| r.mac == mac(CONTOSO3.1)).unwrap().rule = Rule::None;
    let s = Snapshot::build(&p);
    let (a, _) = from_vm(&s, PORT_CONTOSO1, &udp(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 1, 2, 0));
    assert_eq!(drop_of(a), DropReason::TranslationNone);
}

// Decapsulation: delivered by inner MAC within the key's VSID.
#[test]
fn decap_delivers_to_the_local_vm() {
    let s = snap();
    let inner = ping(CONTOSO3, mac(CONTOSO1.1), CONTOSO1.0, 64);
    for flow_id in [0, 1, 0xff] {
        let (a, b) = from_underlay(&s, &nvgre(HOST2_PA, HOST1_PA, 6000, flow_id, &inner));
        assert_eq!(a, Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::Decapsulated });
        assert_eq!(b.frame(), &inner[..], "FlowID {flow_id} ignored, inner frame untouched");
    }
}

#[test]
fn decap_of_a_routed_frame_comes_from_the_local_gateway() {
    let s = snap();
    let inner = ping(MTGW, mac(CONTOSO1.1), CONTOSO1.0, 63);
    let (a, b) = from_underlay(&s, &nvgre(GW_PA, HOST1_PA, 6000, 3, &inner));
    assert_eq!(a, Action::Deliver { port: PORT_CONTOSO1, vsid: 6000, via: Via::Decapsulated });
    let eth = EthernetFrame::new_checked(b.frame()).unwrap();
    assert_eq!(eth.src_addr(), mac(HOST1_GW_MAC));
    assert_eq!(eth.payload(), &inner[14..]);
}

#[test]
fn decap_drops_each_violation_under_its_reason() {
    let s = snap();
    let inner = ping(CONTOSO3, mac(CONTOSO1.1), CONTOSO1.0, 64);
    let good = nvgre(HOST2_PA, HOST1_PA, 6000, 0, &inner);
    assert!(matches!(from_underlay(&s, &good).0, Action::Deliver { .. }));
    let gre_at = 20;

    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        f(&mut p);
        // keep the outer header valid so only the intended field is wrong
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_checksum();
        drop_of(from_underlay(&s, &p).0)
    };
    assert_eq!(with(&|p| p[gre_at] |= 0x80), DropReason::GreFlags, "C bit");
    assert_eq!(with(&|p| p[gre_at] |= 0x10), DropReason::GreFlags, "S bit");
    assert_eq!(with(&|p| p[gre_at] &= !0x20), DropReason::GreFlags, "K bit clear");
    assert_eq!(with(&|p| p[gre_at + 1] |= 0x01), DropReason::GreVersion);
    assert_eq!(with(&|p| p[gre_at + 2..gre_at + 4].copy_from_slice(&[0x08, 0x00])), DropReason::GreProtocol);

    let tagged = {
        let mut f = inner.clone();
        f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        f
    };
    let cases: Vec<(Vec<u8>, DropReason, &str)> = vec![
        (nvgre(HOST2_PA, HOST1_PA, 6000, 0, &tagged), DropReason::VlanTagged, "inner 802.1Q"),
        (nvgre(HOST2_PA, HOST1_PA, 6000, 0, &inner[..10]), DropReason::Truncated, "inner Ethernet cut"),
        (good[..good.len() - inner.len() - 5].to_vec(), DropReason::Truncated, "GRE cut"),
        (good[..12].to_vec(), DropReason::Truncated, "outer IP cut"),
        (nvgre(HOST2_PA, HOST1_PA, 6001, 0, &inner), DropReason::UnknownVsid, "VSID with no local port"),
        (nvgre(HOST2_PA, HOST1_PA, 9999, 0, &inner), DropReason::UnknownVsid, "VSID unknown"),
        (nvgre(HOST2_PA, "192.168.0.99", 6000, 0, &inner), DropReason::NotProviderAddress, "not our PA"),
        (nvgre(GW_PA, HOST1_PA, 6000, 0, &inner), DropReason::SpoofedSource, "Contoso3's MAC from the wrong PA"),
        (
            nvgre(HOST2_PA, HOST1_PA, 6000, 0, &ping(CONTOSO2, mac(CONTOSO1.1), CONTOSO1.0, 64)),
            DropReason::SpoofedSource,
            "a local VM's MAC from the underlay",
        ),
        (
            nvgre(HOST2_PA, HOST1_PA, 6000, 0, &ping(("10.0.1.66", "60:00:60:00:09:09"), mac(CONTOSO1.1), CONTOSO1.0, 64)),
            DropReason::SpoofedSource,
            "a MAC no record names",
        ),
        (
            nvgre(HOST2_PA, HOST1_PA, 7000, 0, &inner),
            DropReason::SpoofedSource,
            "Contoso3's MAC into Fabrikam's VSID",
        ),
        (
            nvgre(HOST2_PA, HOST1_PA, 6000, 0, &ping(CONTOSO3, mac(FABRIKAM1.1), CONTOSO1.0, 64)),
            DropReason::UnknownDestination,
            "to a VM of another VSID",
        ),
        (
            nvgre(HOST2_PA, HOST1_PA, 6000, 0, &ping(CONTOSO3, MacAddr::BROADCAST, CONTOSO1.0, 64)),
            DropReason::UnknownDestination,
            "broadcast does not cross hosts",
        ),
    ];
    for (pkt, reason, what) in cases {
        assert_eq!(drop_of(from_underlay(&s, &pkt).0), reason, "{what}");
    }
}

#[test]
fn policy_encoding_round_trips() {
    let mut p = host1();
    p.lookup_records.push(LookupRecord {
        vsid: 6000,
        customer_address: ip("fd00::1:103"),
        mac: mac(CONTOSO3.1),
        provider_address: ip("2001:db8::33"),
        rule: Rule::None,
        kind: RecordType::Dynamic,
    });
    let bytes = p.encode();
    assert_eq!(Policy::decode(&bytes).unwrap(), p);
    assert!(Policy::decode(&bytes[..bytes.len() - 1]).is_err());
    assert!(Policy::decode(b"NOPE").is_err());
}

#[test]
fn counters_account_each_outcome_once() {
    let mut s = snap();
    let mut slots = VsidSlots::new(2);
    s.assign_counter_slots(&mut slots);
    let c = Counters::new(2);
    c.account(&s, Direction::FromVm, &Action::Encap { pa: ip(HOST2_PA), vsid: 6000, routed: true }, 28 + 100);
    c.account(&s, Direction::FromUnderlay, &Action::Deliver { port: 1, vsid: 6000, via: Via::Decapsulated }, 100);
    c.account(&s, Direction::FromVm, &Action::Encap { pa: ip(HOST2_PA), vsid: 7000, routed: false }, 28 + 60);
    c.account(&s, Direction::FromUnderlay, &Action::Drop(DropReason::GreFlags), 0);
    let mut out = vec![0; Counters::LEN];
    c.sum_into(&mut out);
    let names = Counters::names();
    let get = |n: &str| out[names.iter().position(|x| x == n).unwrap()];
    assert_eq!(get("encap_packets"), 2);
    assert_eq!(get("encap_bytes"), 160, "bytes of the tenant frames, without the outer header");
    assert_eq!(get("routed_packets"), 1);
    assert_eq!(get("decap_bytes"), 100);
    assert_eq!(get("drop:from_underlay:gre_flags"), 1);
    assert_eq!(get("drop:from_vm:gre_flags"), 0);
    assert_eq!(names.len(), Counters::LEN);

    // Two slots for three VSIDs (6000, 6001, 7000 in order): 7000 is in the totals only.
    let assigned: std::collections::HashMap<Vsid, u32> = slots.assigned().collect();
    assert_eq!(assigned.len(), 2);
    let mut per = vec![0; 2 * VSID_COUNTERS];
    c.sum_vsid_into(&mut per);
    let s6000 = assigned[&6000] as usize * VSID_COUNTERS;
    assert_eq!(&per[s6000..s6000 + 4], &[1, 100, 1, 100]);
    assert!(!assigned.contains_key(&7000));

    // A slot stays with its VSID whatever later snapshots hold.
    let mut later = Snapshot::build(&host1());
    later.assign_counter_slots(&mut slots);
    assert_eq!(later.subnet(6000).unwrap().counter_slot, Some(assigned[&6000]));
    assert_eq!(later.subnet(7000).unwrap().counter_slot, None);
}

#[test]
fn nvgre_for_a_pa_on_a_vlan_is_taken_only_from_that_vlan() {
    // PA 192.168.0.22 on VLAN 100 (its VLAN interface is ifindex 7, on eth1 = 2); 192.168.5.22 untagged on eth1.
    let mut p = host1();
    p.provider_addresses[0].ifindex = 7;
    p.provider_addresses[0].vlan_id = 100;
    p.provider_addresses.push(ProviderAddress { address: ip("192.168.5.22"), prefix_len: 24, mtu: 1500, ifindex: 2, vlan_id: 0 });
    let s = Snapshot::build(&p);
    let pkt = |dst: &str| nvgre(HOST2_PA, dst, 6000, 0, &ping(CONTOSO3, mac(CONTOSO1.1), CONTOSO1.0, 64));
    let from = |dst: &str, ifindex: u32| {
        let mut b = PacketBuf::from_frame(&pkt(dst));
        on_underlay_packet(&s, ifindex, &mut b)
    };
    assert!(matches!(from(HOST1_PA, 7), Action::Deliver { .. }), "on its VLAN");
    assert_eq!(from(HOST1_PA, 2), Action::Drop(DropReason::WrongVlan), "untagged on the parent");
    assert_eq!(from(HOST1_PA, 9), Action::Drop(DropReason::WrongVlan), "another VLAN");
    assert!(matches!(from("192.168.5.22", 2), Action::Drop(DropReason::SpoofedSource) | Action::Deliver { .. }), "the untagged PA takes untagged");
    assert_eq!(from("192.168.5.22", 7), Action::Drop(DropReason::WrongVlan), "the untagged PA takes nothing from a PA's VLAN");
    // The encoding carries the VLAN.
    assert_eq!(Policy::decode(&p.encode()).unwrap(), p);
}

#[test]
fn decode_refuses_what_would_break_an_index_or_an_arithmetic() {
    let good = host1();
    let refused = |p: Policy, what: &str| assert!(Policy::decode(&p.encode()).is_err(), "{what}");
    let mut p = good.clone();
    p.customer_routes[0].prefix_len = 33;
    refused(p, "an IPv4 prefix longer than 32");
    let mut p = good.clone();
    p.customer_routes[0].prefix = ip("10.0.1.7");
    refused(p, "a route with host bits");
    let mut p = good.clone();
    p.lookup_records[0].vsid = 0x100_0000;
    refused(p, "a VSID beyond 24 bits");
    let mut p = good.clone();
    p.provider_addresses[0].prefix_len = 40;
    refused(p, "a PA prefix longer than 32");
    assert_eq!(Policy::decode(&good.encode()).unwrap(), good);
}
