//! The NAT (`dp::nat`) over a sequence of packets and events: tenants'
//! packets outbound, the uplink's inbound, mirrored events, time passing.
//! Checked: a dropped packet is left as it was; a translated one has a
//! valid IPv4 header checksum, the NAT's external address as its source
//! (outbound) or a tenant's VSID (inbound), and a valid transport checksum
//! if it had one; an ICMP error written in its place parses with valid
//! checksums; every event encodes and decodes to itself, and a standby
//! applying them holds as many mappings as the active table; any 24 bytes
//! decode to an event or an error, and applying it never panics.
#![no_main]

use nvgred_fuzz::input::{nat_op, Reader, MAX_BATCH};
use nvgred_native::dp::nat::*;
use nvgred_native::dp::testkit::{gateway_nats, CONTOSO, FABRIKAM};
use nvgred_native::dp::Counters;
use nvgred_native::wire::*;
use std::net::Ipv4Addr;

/// Whether `ip`'s transport checksum verifies (`None`: nothing to verify).
fn l4_ok(ip: &[u8]) -> Option<bool> {
    let p = Ipv4Packet::new_checked(ip).ok()?;
    let (s, d) = (p.src_addr(), p.dst_addr());
    Some(match p.next_header() {
        IpProtocol::Tcp => TcpPacket::new_checked(p.payload()).ok()?.verify_checksum_v4(&s, &d),
        IpProtocol::Udp => UdpPacket::new_checked(p.payload()).ok()?.verify_checksum_v4(&s, &d),
        IpProtocol::Icmp => Icmpv4Packet::new_checked(p.payload()).ok()?.verify_checksum(),
        _ => return None,
    })
}

fn one(data: &[u8]) {
    let nats = Nats::new(gateway_nats(), 64).unwrap();
    let counters = Counters::default();
    let mut now = 1000;
    let mut active = NatTable::new(0, 1, now);
    active.set_mirroring(true);
    let mut standby = NatTable::new(0, 1, now);
    let mut chaos = NatTable::new(0, 1, now);
    let mut r = Reader::new(data);
    for _ in 0..4 * MAX_BATCH {
        if r.is_empty() {
            break;
        }
        let op = r.byte();
        let bytes = r.packet();
        let mut buf = bytes.to_vec();
        let mtu = if op & 0x80 != 0 { 576 } else { 1500 };
        let had = l4_ok(&buf);
        let rd = if op & 4 == 0 { CONTOSO } else { FABRIKAM };
        match op & nat_op::MASK {
            nat_op::OUTBOUND | nat_op::INBOUND => {
                let v = if op & nat_op::MASK == nat_op::OUTBOUND {
                    let vsid = if rd == CONTOSO { 6000 } else { 7000 };
                    active.prefetch_outbound(&buf, vsid);
                    active.outbound(&nats, rd, vsid, &mut buf, mtu, now, |a: Ipv4Addr| a.octets()[0] == 10, &counters)
                } else {
                    active.prefetch_inbound(&buf);
                    active.inbound(&nats, &mut buf, mtu, now, &counters)
                };
                match v {
                    NatVerdict::Drop(_) => assert_eq!(buf, bytes, "a dropped packet is left as it was"),
                    NatVerdict::Uplink { nat } | NatVerdict::Tenant { nat, .. } => {
                        let ip = Ipv4Packet::new_checked(&buf[..]).expect("translated packet parses");
                        assert!(ip.verify_checksum(), "IPv4 checksum after translation");
                        if let NatVerdict::Uplink { .. } = v {
                            assert_eq!(ip.src_addr(), nats.get(nat).unwrap().external_address);
                        }
                        if let NatVerdict::Tenant { vsid, .. } = v {
                            assert!(vsid == 6000 || vsid == 7000, "vsid {vsid}");
                        }
                        if had == Some(true) {
                            assert_eq!(l4_ok(&buf), Some(true), "transport checksum after translation");
                        }
                    }
                    NatVerdict::Reject { len, .. } => {
                        let ip = Ipv4Packet::new_checked(&buf[..len]).expect("ICMP error parses");
                        assert!(ip.verify_checksum());
                        assert_eq!(l4_ok(&buf[..len]), Some(true), "ICMP error checksum");
                    }
                }
            }
            nat_op::EVENT => {
                if let Ok(ev) = MappingEvent::decode(bytes) {
                    let _ = chaos.apply(&nats, rd, &ev, now, &counters);
                }
                chaos.tick(now, &counters);
            }
            _ => {
                now += u32::from(bytes.first().copied().unwrap_or(1)) * 16;
                active.tick(now, &counters);
            }
        }
        for ev in active.drain_events() {
            let mut b = [0u8; EVENT_LEN];
            ev.encode(&mut b);
            assert_eq!(MappingEvent::decode(&b), Ok(ev), "event round trip");
            let rd = if ev.inside.vsid == 6000 { CONTOSO } else { FABRIKAM };
            standby.apply(&nats, rd, &ev, now, &counters).expect("the standby takes the active one's events");
        }
        assert_eq!(standby.len(), active.len(), "the standby holds what the active one does");
    }
}

nvgred_fuzz::fuzz_target!(one);
