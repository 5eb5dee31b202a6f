//! The policy buffer the control plane hands the core: whatever the bytes,
//! decoding answers (a policy or an error, never a panic); a decoded policy
//! encodes and decodes back to itself, and a snapshot is built from it and
//! answers lookups (it skips what is inconsistent rather than trusting it).
#![no_main]

use nvgred_native::dp::{Policy, Snapshot};

fn one(data: &[u8]) {
    let Ok(policy) = Policy::decode(data) else { return };
    assert_eq!(Policy::decode(&policy.encode()).as_ref(), Ok(&policy), "encode/decode round trip");
    let snap = Snapshot::build(&policy);
    for r in &policy.customer_routes {
        let _ = snap.next_hop(r.routing_domain, r.prefix);
        if let Some(hop) = r.next_hop {
            let _ = snap.next_hop(r.routing_domain, hop);
        }
    }
    for rec in &policy.lookup_records {
        if let Some(found) = snap.record_by_ca(rec.vsid, rec.customer_address) {
            let _ = snap.reach(found);
        }
        let _ = snap.local_pa_for(rec.provider_address);
    }
    for p in &policy.ports {
        assert!(snap.port(p.id).is_none() || snap.subnet(snap.port(p.id).unwrap().vsid).is_some(), "a port without its subnet");
    }
}

nvgred_fuzz::fuzz_target!(one);
