//! The decision core without I/O: ns per frame for encapsulation,
//! decapsulation, local switching and routing, with 1,000 and with
//! 1,000,000 lookup records; memory per lookup record; the time to build and
//! swap in a snapshot of 1,000,000 records, against a one-record delta and
//! a merge of a full overlay. `cargo bench --bench core`.
//!
//! Frames cycle through many destinations (spread over all the records), so
//! the large table is measured with its cache misses, not one hot entry.

use nvgred_native::dp::testkit::*;
use nvgred_native::dp::*;
use nvgred_native::wire::MacAddr;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// Frames per measured pass, cycling over the destinations.
const FRAMES: usize = 4096;
/// Remote hosts the records are spread over.
const REMOTE_PAS: u32 = 256;

fn remote_pa(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 168, 1 + (i % REMOTE_PAS / 250) as u8, (i % 250) as u8 + 1))
}

fn ca(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 256 + i)) // 10.0.1.0 onwards, VSID 6000 is 10.0.0.0/8 here
}

fn vm_mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x60, 0x00, b[0], b[1], b[2], b[3]])
}

/// Host 1 with `n` remote VMs in VSID 6000 (10.0.0.0/8) and a local VM in
/// VSID 6001 to route to.
fn policy(n: u32) -> Policy {
    let mut p = host1();
    p.customer_routes.retain(|r| r.vsid != 6000);
    p.customer_routes.push(CustomerRoute {
        routing_domain: CONTOSO,
        vsid: 6000,
        prefix: ip("10.0.0.0"),
        prefix_len: 8,
        next_hop: None,
        metric: 0,
    });
    p.lookup_records.retain(|r| r.vsid != 6000 || r.mac == mac(CONTOSO1.1) || r.mac == mac(CONTOSO2.1));
    p.lookup_records.push(record(6000, ("10.0.0.1", HOST1_GW_MAC), HOST1_PA));
    for i in 0..n {
        p.lookup_records.push(LookupRecord {
            vsid: 6000,
            customer_address: ca(i),
            mac: vm_mac(i),
            provider_address: remote_pa(i),
            rule: Rule::Encap,
            kind: RecordType::Static,
        });
    }
    p.lookup_records.push(record(6001, ("10.0.2.10", "60:01:60:01:01:10"), HOST1_PA));
    p.ports.push(Port { id: 9, vsid: 6001, mac: mac("60:01:60:01:01:10") });
    p
}

/// Indices spread over all `n` records.
fn spread(n: u32) -> impl Iterator<Item = u32> {
    (0..FRAMES as u32).map(move |k| (k.wrapping_mul(2_654_435_761)) % n)
}

/// Frames per decision batch, as the worker reads them.
const BATCH: usize = 64;

/// ns per frame for one pass over the frames, decided in batches as the
/// worker does. Refilling the buffers is part of the time (about a 64-byte
/// copy per frame).
fn pass(frames: &[Vec<u8>], bufs: &mut [PacketBuf], decide: &dyn Fn(&mut [PacketBuf], &mut Vec<Action>)) -> f64 {
    let mut actions = Vec::with_capacity(BATCH);
    let t = Instant::now();
    for (chunk, fs) in bufs.chunks_mut(BATCH).zip(frames.chunks(BATCH)) {
        for (b, f) in chunk.iter_mut().zip(fs) {
            b.reset();
            b.spare_mut()[..f.len()].copy_from_slice(f);
            b.set_len(f.len());
        }
        actions.clear();
        decide(chunk, &mut actions);
        black_box(&actions);
    }
    t.elapsed().as_nanos() as f64 / frames.len() as f64
}

/// The four workloads over a table of `n` records: (frames, decision).
type Workload<'a> = (Vec<Vec<u8>>, Box<dyn Fn(&mut [PacketBuf], &mut Vec<Action>) + 'a>);

fn workloads(snap: &Snapshot, n: u32) -> Vec<Workload<'_>> {
    let pad = |mut f: Vec<u8>| {
        f.resize(64, 0); // 64-byte frames
        f
    };
    let encap: Vec<Vec<u8>> = spread(n).map(|i| pad(udp(CONTOSO1, vm_mac(i), &ca(i).to_string(), 1000, 2000, 0))).collect();
    let decap: Vec<Vec<u8>> = spread(n)
        .map(|i| {
            let inner = pad(udp(("10.0.9.9", &vm_mac(i).to_string()), mac(CONTOSO1.1), CONTOSO1.0, 1, 2, 0));
            nvgre(&remote_pa(i).to_string(), HOST1_PA, 6000, 0, &inner)
        })
        .collect();
    let switch: Vec<Vec<u8>> = (0..FRAMES).map(|_| pad(udp(CONTOSO1, mac(CONTOSO2.1), CONTOSO2.0, 1, 2, 0))).collect();
    let route: Vec<Vec<u8>> = (0..FRAMES).map(|_| pad(udp(CONTOSO1, mac(HOST1_GW_MAC), "10.0.2.10", 1, 2, 0))).collect();

    let check = |frames: &[Vec<u8>], ok: fn(&Action) -> bool, what: &str, port: Option<PortId>| {
        let mut b = PacketBuf::from_frame(&frames[0]);
        let a = match port {
            Some(p) => on_vm_frame(snap, p, &mut b),
            None => on_underlay_packet(snap, 0, &mut b),
        };
        assert!(ok(&a), "{what}: {a:?}");
    };
    check(&encap, |a| matches!(a, Action::Encap { .. }), "encap", Some(PORT_CONTOSO1));
    check(&decap, |a| matches!(a, Action::Deliver { via: Via::Decapsulated, .. }), "decap", None);
    check(&switch, |a| matches!(a, Action::Deliver { via: Via::Switched, .. }), "switch", Some(PORT_CONTOSO1));
    check(&route, |a| matches!(a, Action::Deliver { via: Via::Routed, .. }), "route", Some(PORT_CONTOSO1));

    let from_vm = move |b: &mut [PacketBuf], out: &mut Vec<Action>| on_vm_frames(snap, PORT_CONTOSO1, b, out);
    vec![
        (encap, Box::new(from_vm)),
        (decap, Box::new(move |b: &mut [PacketBuf], out: &mut Vec<Action>| on_underlay_packets(snap, b, &[], out))),
        (switch, Box::new(from_vm)),
        (route, Box::new(from_vm)),
    ]
}

/// Rounds over both tables, and passes of a workload in a row within one.
const ROUNDS: usize = 5;
const PASSES: usize = 5;

/// Best (least disturbed) ns per frame of each workload over each table.
/// The rounds alternate between the tables, so a disturbance of the machine
/// (these are noisy) falls on both alike rather than on one; the passes in
/// a row keep a small table's cache as warm as a worker's would be.
fn measure(tables: &[&Snapshot], sizes: &[u32]) -> Vec<[f64; 4]> {
    let loads: Vec<Vec<Workload>> = tables.iter().zip(sizes).map(|(s, &n)| workloads(s, n)).collect();
    let mut bufs: Vec<PacketBuf> = (0..FRAMES).map(|_| PacketBuf::new(2048)).collect();
    let mut best = vec![[f64::MAX; 4]; tables.len()];
    for _ in 0..ROUNDS {
        for (t, load) in loads.iter().enumerate() {
            for (w, (frames, decide)) in load.iter().enumerate() {
                for _ in 0..PASSES {
                    best[t][w] = best[t][w].min(pass(frames, &mut bufs[..frames.len()], decide.as_ref()));
                }
            }
        }
    }
    best
}

/// A delta that moves record `i` (of `policy(n)`) to another remote PA, or back.
fn move_record(i: u32, round: u32) -> PolicyDelta {
    let at = |k: u32| LookupRecord { vsid: 6000, customer_address: ca(i), mac: vm_mac(i), provider_address: remote_pa(i + k), rule: Rule::Encap, kind: RecordType::Static };
    PolicyDelta { customer_routes: None, changes: vec![RecordChange::Replace { previous: at(round), record: at(round + 1) }] }
}

/// A snapshot of `policy(n)` with `entries` overlay entries (records moved by deltas).
fn with_overlay(base: &Snapshot, entries: usize) -> Snapshot {
    let mut s = base.apply_delta(&PolicyDelta::default()).unwrap();
    for i in 0..entries as u32 {
        // two overlay entries per moved record (its CA and MAC), in the upper half
        s = s.apply_delta(&move_record(500_000 + i * 61, 0)).unwrap();
        if s.overlay_len() >= entries {
            break;
        }
    }
    s
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let (small_table, large_table) = (Snapshot::build(&policy(1_000)), Snapshot::build(&policy(1_000_000)));
    let overlaid = with_overlay(&large_table, MERGE_AT);
    let best = measure(&[&small_table, &large_table, &overlaid], &[1_000, 1_000_000, 1_000_000]);
    let (small, large, over) = (best[0], best[1], best[2]);
    let overlay_entries = overlaid.overlay_len();
    drop((small_table, large_table, overlaid));
    println!("decision core, ns per 64-byte frame (best of {ROUNDS} x {PASSES} passes over {FRAMES} frames, spread over the records; rounds alternate between the tables)", ROUNDS = ROUNDS, PASSES = PASSES);
    println!("{:<14}{:>16}{:>20}{:>8}{:>22}{:>8}", "", "1,000 records", "1,000,000 records", "ratio", "1M + full overlay", "ratio");
    for (i, what) in ["encapsulate", "decapsulate", "local switch", "route"].iter().enumerate() {
        println!("{:<14}{:>16.1}{:>20.1}{:>8.2}{:>22.1}{:>8.2}", what, small[i], large[i], large[i] / small[i], over[i], over[i] / large[i]);
    }
    println!("(full overlay: {overlay_entries} entries of records moved by deltas, the merge threshold)");

    // Memory: live heap of a snapshot per record, measured both ways round.
    let n = 1_000_000u32;
    let p = policy(n);
    let before = common::live_bytes();
    let t = Instant::now();
    let snap = Snapshot::build(&p);
    let build = t.elapsed();
    let held = common::live_bytes() - before;
    println!(
        "\nsnapshot of {n} lookup records: {:.1} bytes per record in the core ({:.1} in the record indexes)",
        held as f64 / n as f64,
        snap.record_index_bytes() as f64 / n as f64
    );

    // Build and swap as the control plane does: decode the bulk buffer, index, publish.
    let encoded = p.encode();
    let current = Arc::new(Mutex::new(Arc::new(snap)));
    let t = Instant::now();
    let decoded = Policy::decode(&encoded).unwrap();
    let decode = t.elapsed();
    let next = Arc::new(Snapshot::build(&decoded));
    let t_swap = Instant::now();
    let old = std::mem::replace(&mut *current.lock().unwrap(), next);
    let swap = t_swap.elapsed();
    let t_drop = Instant::now();
    drop(old);
    let free = t_drop.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "snapshot of {n} records: decode {:.0} ms, build {:.0} ms, swap {:.3} ms, free the old one {:.0} ms",
        ms(decode),
        ms(build),
        ms(swap),
        ms(free)
    );

    // One-record deltas as the control plane sends them: decode, apply on
    // the running snapshot (its overlay growing), publish.
    const DELTAS: u32 = 4000;
    let mut times = Vec::with_capacity(DELTAS as usize);
    for k in 0..DELTAS {
        let buf = move_record(k * 97, 0).encode(); // the lower half, spread
        let t = Instant::now();
        let delta = PolicyDelta::decode(&buf).unwrap();
        let cur = current.lock().unwrap().clone();
        let next = Arc::new(cur.apply_delta(&delta).unwrap());
        let old = std::mem::replace(&mut *current.lock().unwrap(), next);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        drop((old, cur));
    }
    times.sort_by(f64::total_cmp);
    let full_us = (ms(decode) + ms(build)) * 1000.0;
    println!(
        "one-record delta at {n} records (decode, apply, swap; {DELTAS} in a row, overlay 0 to {}): p50 {:.1} us, p99 {:.1} us; full decode + build {:.0} ms: {:.0}x the p50",
        current.lock().unwrap().overlay_len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        full_us / 1000.0,
        full_us / percentile(&times, 0.5)
    );
    let full = with_overlay(&current.lock().unwrap(), MERGE_AT);
    let t = Instant::now();
    let merged = full.merged();
    println!("merge of a {}-entry overlay into new tables at {n} records (the background thread's work): {:.0} ms", full.overlay_len(), ms(t.elapsed()));
    drop(merged);
}
