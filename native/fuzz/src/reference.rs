//! The one policy the packet targets decide against: Host 1 of the reference
//! topology with IPv6 customer addresses (`testkit::host1_dual_stack`), plus
//! what reaches the rarer paths:
//! - three local PAs: IPv4 with a 1280-byte MTU (so ordinary frames are too
//!   big: the ICMP errors), a second IPv4 underlay with the largest MTU the
//!   config allows (65535: segments longer than any buffer of 9 KB), and IPv6
//!   with a 9000-byte MTU;
//! - remote VMs over each: Host 2 (1280), 172.16.0.44 (65535), Host 2's IPv6 PA;
//! - L2Only records (flow 4 probes over both families, one local), Dynamic
//!   records (learning reports), a record with rule `none`, gateway wildcard
//!   records, and a local VM in the routed-to VSID 6001.

use nvgred_native::dp::testkit::*;
use nvgred_native::dp::{CustomerRoute, LookupRecord, Policy, Port, PortId, ProviderAddress, RecordType, Rule, Snapshot, Vsid};
use std::net::IpAddr;
use std::sync::OnceLock;

pub const SMALL_MTU_PA: &str = HOST1_PA;
pub const LARGE_MTU_PA: &str = "172.16.0.22";
pub const V6_PA: &str = "fd00:192:168::22";
pub const REMOTE_LARGE_MTU: &str = "172.16.0.44";
pub const REMOTE_V6: &str = "fd00:192:168::33";

/// A remote L2Only VM (flow 4) over each underlay, and a local one with its port.
pub const L2ONLY_HOST2: &str = "60:00:60:00:02:05";
pub const L2ONLY_V6: &str = "60:00:60:00:03:07";
pub const LOCAL_LEARNED: (&str, &str) = ("10.0.1.105", "60:00:60:00:01:05");
pub const REMOTE_LEARNED: (&str, &str) = ("10.0.1.106", "60:00:60:00:02:06");
pub const REMOTE_JUMBO: (&str, &str) = ("10.0.1.144", "60:00:60:00:04:04");
pub const REMOTE_OVER_V6: (&str, &str) = ("10.0.1.133", "60:00:60:00:03:03");
pub const NO_TRANSLATION: (&str, &str) = ("10.0.1.150", "60:00:60:00:05:00");
pub const LOCAL_6001: (&str, &str) = ("10.0.2.5", "60:00:60:00:06:05");

pub const PORT_LEARNED: PortId = 9;
pub const PORT_6001: PortId = 10;
/// The ports a VM input may come from, by its first byte; one more is unknown.
pub const PORTS: [PortId; 5] = [PORT_CONTOSO1, PORT_CONTOSO2, PORT_FABRIKAM1, PORT_LEARNED, PORT_6001];
pub const UNKNOWN_PORT: PortId = 77;

/// The outer addresses an IPv6 underlay input may carry, by selector.
pub const V6_ADDRESSES: [&str; 5] = [REMOTE_V6, V6_PA, "fd00:192:168::11", "fe80::1", "::"];

/// A local PA; its interface has an index (large segments may leave whole through it) when its MTU is large.
fn pa(address: &str, prefix_len: u8, mtu: u16) -> ProviderAddress {
    ProviderAddress { address: ip(address), prefix_len, mtu, ifindex: if mtu > 1500 { 7 } else { 0 }, vlan_id: 0 }
}

fn with(vsid: Vsid, vm: (&str, &str), pa: &str, kind: RecordType, rule: Rule) -> LookupRecord {
    LookupRecord { kind, rule, ..record(vsid, vm, pa) }
}

fn l2only(mac: &str, pa: &str) -> LookupRecord {
    with(6000, ("0.0.0.0", mac), pa, RecordType::L2Only, Rule::Encap)
}

fn route(vsid: Vsid, prefix: &str, prefix_len: u8, next_hop: Option<&str>) -> CustomerRoute {
    CustomerRoute { routing_domain: CONTOSO, vsid, prefix: ip(prefix), prefix_len, next_hop: next_hop.map(ip), metric: 0 }
}

pub fn policy() -> Policy {
    let mut p = host1_dual_stack();
    p.provider_addresses = vec![pa(SMALL_MTU_PA, 24, 1280), pa(LARGE_MTU_PA, 16, 65535), pa(V6_PA, 64, 9000)];
    p.customer_routes.push(route(6001, "::", 0, Some("fd00:2::2")));
    let static_ = |vm, pa| with(6000, vm, pa, RecordType::Static, Rule::Encap);
    p.lookup_records.extend([
        l2only(L2ONLY_HOST2, HOST2_PA),
        l2only(L2ONLY_V6, REMOTE_V6),
        l2only(LOCAL_LEARNED.1, HOST1_PA),
        with(6000, LOCAL_LEARNED, HOST1_PA, RecordType::Dynamic, Rule::Encap),
        with(6000, REMOTE_LEARNED, HOST2_PA, RecordType::Dynamic, Rule::Encap),
        static_(REMOTE_JUMBO, REMOTE_LARGE_MTU),
        static_(REMOTE_OVER_V6, REMOTE_V6),
        static_(("fd00:1::133", REMOTE_OVER_V6.1), REMOTE_V6),
        with(6000, NO_TRANSLATION, HOST2_PA, RecordType::Static, Rule::None),
        with(6001, LOCAL_6001, HOST1_PA, RecordType::Static, Rule::Encap),
        with(6001, ("0.0.0.0", "60:01:60:01:03:09"), GW_PA, RecordType::GatewayWildcard, Rule::Encap),
        with(6001, ("::", "60:01:60:01:03:09"), GW_PA, RecordType::GatewayWildcard, Rule::Encap),
    ]);
    p.ports.push(Port { id: PORT_LEARNED, vsid: 6000, mac: mac(LOCAL_LEARNED.1) });
    p.ports.push(Port { id: PORT_6001, vsid: 6001, mac: mac(LOCAL_6001.1) });
    p
}

/// The snapshot of [`policy`], built once per process.
pub fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| Snapshot::build(&policy()))
}

/// The port a VM input's selector byte names.
pub fn port(selector: u8) -> PortId {
    PORTS.get(selector as usize % (PORTS.len() + 1)).copied().unwrap_or(UNKNOWN_PORT)
}

/// The outer (source, destination) an IPv6 underlay input's selector byte names.
pub fn v6_addresses(selector: u8) -> (IpAddr, IpAddr) {
    let at = |nibble: u8| ip(V6_ADDRESSES[nibble as usize % V6_ADDRESSES.len()]);
    (at(selector >> 4), at(selector & 0x0f))
}
