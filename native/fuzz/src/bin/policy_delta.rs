//! A policy delta the control plane hands the core, applied to the running
//! snapshot: whatever the bytes, decoding and applying answer (a snapshot or
//! a refusal, never a panic); a decoded delta encodes back to itself; and a
//! delta that is a real change of the policy (what it deletes or replaces is
//! there, what it puts is not) and is applied makes the snapshot a full
//! build of the changed policy makes, before and after merging the overlay.
#![no_main]

use nvgred_fuzz::reference;
use nvgred_native::dp::{LookupRecord, Policy, PolicyDelta, RecordChange, RecordType, Snapshot};

/// What the control plane holds unique among lookup records.
fn same_identity(a: &LookupRecord, b: &LookupRecord) -> bool {
    a.vsid == b.vsid && a.customer_address == b.customer_address && (!a.customer_address.is_unspecified() || a.mac == b.mac)
}

/// The policy after `delta`, if every change is one the store could make
/// (a replace in place, a put at the end).
fn changed(base: &Policy, delta: &PolicyDelta) -> Option<Policy> {
    let mut p = base.clone();
    if let Some(routes) = &delta.customer_routes {
        p.customer_routes = routes.clone();
    }
    let records = &mut p.lookup_records;
    for c in &delta.changes {
        let at = |r: &LookupRecord, records: &[LookupRecord]| records.iter().position(|o| same_identity(o, r));
        match c {
            RecordChange::Put(r) if at(r, records).is_none() => records.push(r.clone()),
            RecordChange::Replace { previous, record } if same_identity(previous, record) => {
                let i = at(previous, records).filter(|&i| records[i] == *previous)?;
                records[i] = record.clone();
            }
            RecordChange::Delete(r) => {
                let i = at(r, records).filter(|&i| records[i] == *r)?;
                records.remove(i);
            }
            _ => return None,
        }
    }
    // one gateway wildcard per VSID and family
    let wildcards: Vec<_> = records.iter().filter(|r| r.kind == RecordType::GatewayWildcard).map(|r| (r.vsid, r.customer_address.is_ipv4())).collect();
    let unique: std::collections::BTreeSet<_> = wildcards.iter().collect();
    (unique.len() == wildcards.len()).then_some(p)
}

fn one(data: &[u8]) {
    let Ok(delta) = PolicyDelta::decode(data) else { return };
    assert_eq!(PolicyDelta::decode(&delta.encode()).as_ref(), Ok(&delta), "encode/decode round trip");
    let base = reference::snapshot();
    let Ok(next) = base.apply_delta(&delta) else { return };
    let Some(policy) = changed(&reference::policy(), &delta) else { return };
    let full = Snapshot::build(&policy).canonical();
    assert_eq!(next.canonical(), full, "delta against full build");
    assert_eq!(next.merged().canonical(), full, "merged delta against full build");
}

nvgred_fuzz::fuzz_target!(one);
