//! Deltas against full builds: over random change sequences the snapshot a
//! chain of deltas makes (merged now and then) decides like the one
//! `Snapshot::build` makes of the same policy; and lookups read the overlay
//! before the tables.

use super::testkit::*;
use super::*;
use crate::wire::MacAddr;
use std::net::IpAddr;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

fn cr(rd: RoutingDomain, vsid: Vsid, prefix: &str, len: u8, next_hop: Option<&str>, metric: u32) -> CustomerRoute {
    CustomerRoute { routing_domain: rd, vsid, prefix: ip(prefix), prefix_len: len, next_hop: next_hop.map(ip), metric }
}

/// A host with two routing domains (VSIDs 100 and 101 share one), both
/// families, and a VM port.
fn base_policy() -> Policy {
    Policy {
        flow_id: FlowIdMode::Hash,
        default_gateway_mac: mac("02:00:00:00:00:01"),
        provider_addresses: vec![
            ProviderAddress { address: ip("192.168.0.10"), prefix_len: 24, mtu: 1500, ifindex: 0, vlan_id: 0 },
            ProviderAddress { address: ip("2001:db8::10"), prefix_len: 64, mtu: 1500, ifindex: 0, vlan_id: 0 },
        ],
        customer_routes: vec![
            cr(0, 100, "10.0.0.0", 24, None, 0),
            cr(0, 100, "fd00::", 64, None, 0),
            cr(0, 101, "10.0.1.0", 24, None, 0),
            cr(1, 200, "10.0.0.0", 24, None, 0),
        ],
        lookup_records: vec![],
        ports: vec![Port { id: 1, vsid: 100, mac: mac("00:11:00:00:00:01") }],
        uplink: None,
        nats: vec![],
    }
}

const VSIDS: [Vsid; 4] = [100, 101, 200, 300]; // 300 has no route: its records are skipped
const PAS: [&str; 7] = ["192.168.0.10", "192.168.1.1", "192.168.1.2", "192.168.1.3", "2001:db8::10", "2001:db8:1::1", "10.99.0.1"];

fn random_record(g: &mut Rng) -> LookupRecord {
    let vsid = *g.pick(&VSIDS);
    let kind = *g.pick(&[RecordType::Static, RecordType::Static, RecordType::Dynamic, RecordType::L2Only, RecordType::GatewayWildcard]);
    let v4 = g.below(4) != 0;
    let customer_address = match kind {
        RecordType::L2Only | RecordType::GatewayWildcard if v4 => ip("0.0.0.0"),
        RecordType::L2Only | RecordType::GatewayWildcard => ip("::"),
        // .1 is a gateway address (its records with a local PA are refused)
        _ if v4 => IpAddr::V4([10, 0, (vsid == 101) as u8, 1 + g.below(12) as u8].into()),
        _ => IpAddr::V6([0xfd00, 0, 0, 0, 0, 0, 0, 1 + g.below(8) as u16].into()),
    };
    LookupRecord {
        vsid,
        customer_address,
        // mostly the VM's own MAC; one in four from a few, so records share them
        mac: if g.below(4) == 0 { MacAddr([0x00, 0x22, 0, 0, 0, g.below(6) as u8]) } else { vm_mac(vsid, customer_address, g) },
        provider_address: ip(PAS[g.below(PAS.len() as u64) as usize]),
        rule: *g.pick(&[Rule::Encap, Rule::Encap, Rule::None]),
        kind,
    }
}

/// A MAC of the VM with this CA (an L2Only or wildcard record: one of a few).
fn vm_mac(vsid: Vsid, ca: IpAddr, g: &mut Rng) -> MacAddr {
    let low = match ca {
        _ if ca.is_unspecified() => 0x80 + g.below(16) as u8,
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => 0x40 + a.octets()[15],
    };
    MacAddr([0x00, 0x33, 0, (vsid >> 8) as u8, vsid as u8, low])
}

/// What the store holds unique: (VSID, CA), with the MAC for records without a CA.
fn identity(r: &LookupRecord) -> (Vsid, IpAddr, Option<MacAddr>) {
    (r.vsid, r.customer_address, r.customer_address.is_unspecified().then_some(r.mac))
}

/// The control plane would refuse a second wildcard of a (VSID, family).
fn allowed(records: &[LookupRecord], r: &LookupRecord) -> bool {
    r.kind != RecordType::GatewayWildcard
        || !records.iter().any(|o| {
            o.kind == RecordType::GatewayWildcard && o.vsid == r.vsid && o.customer_address.is_ipv4() == r.customer_address.is_ipv4() && identity(o) != identity(r)
        })
}

/// One random change to `p`: the change applied (replace in place, add at the end).
fn random_change(g: &mut Rng, p: &mut Policy) -> Option<RecordChange> {
    let r = random_record(g);
    let same = p.lookup_records.iter().position(|o| identity(o) == identity(&r));
    match (same, g.below(3)) {
        (Some(i), 0) => Some(RecordChange::Delete(p.lookup_records.remove(i))),
        (Some(i), _) if allowed(&p.lookup_records, &r) => {
            let previous = std::mem::replace(&mut p.lookup_records[i], r.clone());
            Some(RecordChange::Replace { previous, record: r })
        }
        (None, _) if allowed(&p.lookup_records, &r) => {
            p.lookup_records.push(r.clone());
            Some(RecordChange::Put(r))
        }
        _ => None,
    }
}

/// Route changes: a next-hop route toggled or re-metered (kept by a delta),
/// or an on-link subnet toggled (a new gateway address: refused).
fn random_routes(g: &mut Rng, p: &mut Policy) {
    let routes = &mut p.customer_routes;
    match g.below(3) {
        0 => match routes.iter().position(|r| r.next_hop.is_some()) {
            Some(i) => {
                routes.remove(i);
            }
            None => routes.push(cr(0, 101, "10.9.0.0", 16, Some("10.0.1.5"), 5)),
        },
        1 => routes[0].metric = g.below(3) as u32,
        _ => match routes.iter().position(|r| r.prefix == ip("10.0.2.0")) {
            Some(i) => {
                routes.remove(i);
            }
            None => routes.push(cr(0, 100, "10.0.2.0", 24, None, 0)),
        },
    }
}

/// Runs `sequences` random sequences; returns (deltas applied, refused).
fn run_sequences(sequences: u64, steps: usize) -> (usize, usize) {
    let (mut applied, mut refused) = (0, 0);
    for seq in 0..sequences {
        let mut g = Rng(0x9e37_79b9_7f4a_7c15 ^ (seq + 1).wrapping_mul(0x1234_5678_9abc_def1));
        let mut policy = base_policy();
        let mut snap = Snapshot::build(&policy);
        for step in 0..steps {
            let mut delta = PolicyDelta::default();
            if g.below(25) == 0 {
                random_routes(&mut g, &mut policy);
                delta.customer_routes = Some(policy.customer_routes.clone());
            }
            for _ in 0..1 + g.below(4) {
                delta.changes.extend(random_change(&mut g, &mut policy));
            }
            let bytes = delta.encode();
            let decoded = PolicyDelta::decode(&bytes).expect("a delta decodes");
            assert_eq!(decoded, delta);
            let full = Snapshot::build(&policy);
            snap = match snap.apply_delta(&decoded) {
                Ok(next) => {
                    applied += 1;
                    next
                }
                Err(_) => {
                    refused += 1;
                    full.clone()
                }
            };
            // a merge now and then, and every so often a full rebuild
            if snap.overlay_len() > 24 || g.below(50) == 0 {
                snap = snap.merged();
                assert_eq!(snap.overlay_len(), 0);
            }
            if g.below(200) == 0 {
                snap = Snapshot::build(&policy);
            }
            assert_eq!(snap.canonical(), full.canonical(), "sequence {seq} step {step}, after {delta:?}");
        }
    }
    (applied, refused)
}

#[test]
fn deltas_make_the_snapshot_a_full_build_makes() {
    let (applied, refused) = run_sequences(30, 200);
    // Most changes go through deltas: the test covers them, not the fallback.
    assert!(applied > 3 * refused, "{applied} deltas applied, {refused} refused");
    assert!(applied >= 4000, "{applied}");
}

fn host1_snapshot() -> Snapshot {
    Snapshot::build(&host1())
}

#[test]
fn a_put_is_seen_through_the_overlay_and_leaves_the_tables_shared() {
    let before = host1_snapshot();
    let r = record(6000, ("10.0.1.77", "00:00:5e:00:00:77"), HOST2_PA);
    let after = before.apply_delta(&PolicyDelta { customer_routes: None, changes: vec![RecordChange::Put(r)] }).unwrap();
    assert!(after.overlay_len() > 0);
    let held = after.record_by_ca(6000, ip("10.0.1.77")).expect("the new record");
    assert_eq!(held.mac, mac("00:00:5e:00:00:77"));
    assert!(matches!(after.reach(held), Ok(Reach::Tunnel(t)) if t.remote == ip(HOST2_PA)));
    let rd = after.subnet(6000).unwrap().routing_domain;
    assert!(after.record_by_mac(rd, mac("00:00:5e:00:00:77")).is_some());
    // the predecessor is untouched
    assert!(before.record_by_ca(6000, ip("10.0.1.77")).is_none());
    assert_eq!(before.overlay_len(), 0);
}

#[test]
fn a_delete_hides_the_tables_entry_until_merged_away() {
    let policy = host1();
    let victim = policy.lookup_records.iter().find(|r| r.kind == RecordType::Static && !policy.provider_addresses.iter().any(|p| p.address == r.provider_address)).unwrap().clone();
    let before = Snapshot::build(&policy);
    assert!(before.record_by_ca(victim.vsid, victim.customer_address).is_some());
    let after = before.apply_delta(&PolicyDelta { customer_routes: None, changes: vec![RecordChange::Delete(victim.clone())] }).unwrap();
    assert!(after.record_by_ca(victim.vsid, victim.customer_address).is_none());
    let rd = after.subnet(victim.vsid).unwrap().routing_domain;
    assert!(after.record_by_mac(rd, victim.mac).is_none());
    let merged = after.merged();
    assert_eq!(merged.overlay_len(), 0);
    assert!(merged.record_by_ca(victim.vsid, victim.customer_address).is_none());
    assert_eq!(merged.canonical(), after.canonical());
    // put back: the overlay entry equals the tables' again and goes
    let back = after.apply_delta(&PolicyDelta { customer_routes: None, changes: vec![RecordChange::Put(victim)] }).unwrap();
    assert_eq!(back.overlay_len(), 0);
    assert_eq!(back.canonical(), before.canonical());
}

#[test]
fn a_delete_of_a_record_that_is_not_held_is_refused() {
    let snap = host1_snapshot();
    let ghost = record(6000, ("10.0.1.99", "00:00:5e:00:00:99"), HOST2_PA);
    assert!(snap.apply_delta(&PolicyDelta { customer_routes: None, changes: vec![RecordChange::Delete(ghost)] }).is_err());
}

#[test]
fn a_delta_decoder_refuses_bad_buffers() {
    let d = PolicyDelta { customer_routes: Some(vec![]), changes: vec![RecordChange::Put(record(1, ("10.0.0.2", "00:00:00:00:00:02"), "10.1.1.1"))] };
    let good = d.encode();
    assert_eq!(PolicyDelta::decode(&good).unwrap(), d);
    assert!(PolicyDelta::decode(&good[..good.len() - 1]).is_err());
    let mut bad_op = good.clone();
    bad_op[16] = 9;
    assert!(PolicyDelta::decode(&bad_op).unwrap_err().0.contains("op 9"));
    assert!(PolicyDelta::decode(&host1().encode()).is_err());
}

/// The records of a flow stay held through batches of changes past the
/// merge threshold, merged, and the merged tables caught up with later deltas.
#[test]
fn batches_past_the_merge_threshold_keep_the_other_records() {
    let policy = host1();
    let held = |s: &Snapshot| policy.lookup_records.iter().filter(|r| s.record_by_ca(r.vsid, r.customer_address).is_some()).count();
    let base = Snapshot::build(&policy);
    let expected = held(&base);
    let extra = |i: u32| LookupRecord {
        vsid: 6000,
        customer_address: IpAddr::V4([10, 0, 200 + (i >> 8) as u8, i as u8].into()),
        mac: MacAddr([0x62, 0, 0, 0, (i >> 8) as u8, i as u8]),
        provider_address: ip(HOST2_PA),
        rule: Rule::Encap,
        kind: RecordType::Static,
    };
    let batch: Vec<_> = (0..5000).map(extra).collect();
    let put = PolicyDelta { customer_routes: None, changes: batch.iter().cloned().map(RecordChange::Put).collect() };
    let delete = PolicyDelta { customer_routes: None, changes: batch.iter().cloned().map(RecordChange::Delete).collect() };
    let with = base.apply_delta(&put).unwrap();
    assert!(with.overlay_len() > MERGE_AT);
    assert_eq!(held(&with), expected);
    let merged = with.merged();
    assert_eq!(held(&merged), expected);
    assert!(batch.iter().all(|r| merged.record_by_ca(6000, r.customer_address).is_some()));
    let without = merged.apply_delta(&delete).unwrap();
    assert_eq!(held(&without), expected);
    let merged = without.merged();
    assert_eq!(held(&merged), expected);
    assert_eq!(merged.canonical(), base.canonical());
}
