//! I/O: TAP devices, the underlay sockets, netlink, and the worker threads
//! that move packets between them through the decision core. With several
//! workers, every TAP has a queue per worker and every worker its own
//! underlay sockets; a flow stays on one worker both ways.
//!
//! The control plane never touches a packet. It publishes a new [`State`]
//! (table snapshot + port set) as a whole; workers pick it up between
//! batches, so every packet is decided against exactly one snapshot.

mod events;
pub mod netlink;
pub mod notify;
mod bpf;
mod gso;
mod steering;
mod sys;
pub mod tap;
mod underlay;
mod worker;

use crate::dp::{Counter, Counters, FxMap, Learned, Policy, PortId, Snapshot, VsidSlots, VSID_COUNTERS};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sys::*;
pub use events::{DropEvent, Source};
pub use sys::peer_credentials;
pub use tap::{Tap, TapSpec};
use steering::Steering;
use gso::GsoPort;
use underlay::Underlay;

/// What the workers read: the tables and the ports they name.
pub struct State {
    pub snapshot: Arc<Snapshot>,
    pub taps: FxMap<PortId, Arc<Tap>>,
}

struct Shared {
    state: Mutex<Arc<State>>,
    /// Bumped on every publish; workers compare it once per wake-up.
    generation: AtomicU64,
    stop: AtomicBool,
    /// Rate-limited drops, for the log.
    drops: events::EventQueue<DropEvent>,
    /// Addresses learned from ARP, for the control plane.
    learned: events::EventQueue<Learned>,
}

struct Worker {
    wake: OwnedFd,
    counters: Arc<Counters>,
    /// Advanced every loop iteration (at least once a second): proof of life.
    heartbeat: Arc<AtomicU64>,
    /// The state generation the worker decides packets against.
    seen: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// How the dataplane runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Worker threads (each with its queue of every TAP and its underlay sockets).
    pub workers: usize,
    /// Up to this many VSIDs get their own counters.
    pub vsid_capacity: u32,
    /// Large TCP segments from VMs leave whole for the kernel to cut (see
    /// `gso`) where it can; [`Dataplane::segmentation`] says whether it does.
    pub kernel_segmentation: bool,
    /// How long a worker keeps polling after its last packet before it
    /// sleeps: a sleeping thread's wake-up costs tens of microseconds (an
    /// IPI, and in a VM an exit), and the packet that follows traffic (the
    /// reply, the next of a burst) usually comes sooner. CPU for latency.
    pub poll: Duration,
}

/// How long a publisher waits for the workers to let go of the old state.
const GRACE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Dataplane {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    /// Serialises publishers so read-modify-write of the state is atomic.
    publish_lock: Mutex<()>,
    vsid_slots: Mutex<VsidSlots>,
    vsid_capacity: u32,
    /// With several workers: keeps each flow from the VMs on one TAP queue.
    steering: Option<Steering>,
    segmentation: String,
}

impl Dataplane {
    /// Start the worker threads.
    pub fn start(opts: &Options) -> io::Result<Dataplane> {
        let Options { workers, vsid_capacity, kernel_segmentation, poll } = *opts;
        let shared = Arc::new(Shared {
            state: Mutex::new(Arc::new(State { snapshot: Arc::new(Snapshot::default()), taps: FxMap::default() })),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            drops: events::EventQueue::default(),
            learned: events::EventQueue::default(),
        });
        let steering = if workers > 1 { Some(Steering::load()?) } else { None };
        let (gso, segmentation) = match kernel_segmentation.then(GsoPort::open) {
            Some(Ok(port)) => {
                let how = format!("kernel (through {})", port.name);
                (Some(Arc::new(port)), how)
            }
            Some(Err(e)) => (None, format!("userspace ({e})")),
            None => (None, "userspace".to_string()),
        };
        let mut ws = Vec::new();
        for i in 0..workers.max(1) {
            let wake = owned(unsafe { eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) })?;
            let counters = Arc::new(Counters::new(vsid_capacity));
            let heartbeat = Arc::new(AtomicU64::new(0));
            let seen = Arc::new(AtomicU64::new(0));
            let ctx = worker::Context {
                index: i,
                underlay: Underlay::open(i as u32, workers.max(1) as u32, gso.clone())?,
                shared: shared.clone(),
                wake: wake.as_raw_fd(),
                counters: counters.clone(),
                heartbeat: heartbeat.clone(),
                seen: seen.clone(),
                poll,
            };
            let thread = std::thread::Builder::new().name(format!("nvgre-worker-{i}")).spawn(move || ctx.run())?;
            ws.push(Worker { wake, counters, heartbeat, seen, thread: Some(thread) });
        }
        Ok(Dataplane {
            shared,
            workers: ws,
            publish_lock: Mutex::new(()),
            vsid_slots: Mutex::new(VsidSlots::new(vsid_capacity)),
            vsid_capacity,
            steering,
            segmentation,
        })
    }

    /// Who cuts large TCP segments from VMs into MTU-sized NVGRE packets, and why.
    pub fn segmentation(&self) -> &str {
        &self.segmentation
    }

    /// Replace the state with what `f` makes of the current one, tell the
    /// workers, and return once every worker decides packets against it: no
    /// packet sees the old state afterwards, and whatever only the old state
    /// held (a removed port's TAP) is gone. Publishers are serialised, so
    /// read-modify-write is atomic.
    fn update<T>(&self, f: impl FnOnce(&State) -> io::Result<(State, T)>) -> io::Result<T> {
        let _g = self.publish_lock.lock().unwrap();
        let cur = self.shared.state.lock().unwrap().clone();
        let (next, out) = f(&cur)?;
        drop(cur);
        *self.shared.state.lock().unwrap() = Arc::new(next);
        let generation = self.shared.generation.fetch_add(1, Ordering::Release) + 1;
        self.wake_all();
        self.wait_for_workers(generation);
        Ok(out)
    }

    /// Wait (bounded: a stalled worker is the supervisor's business) until
    /// every worker has picked up `generation`.
    fn wait_for_workers(&self, generation: u64) {
        let deadline = Instant::now() + GRACE_TIMEOUT;
        while self.workers.iter().any(|w| w.seen.load(Ordering::Acquire) < generation) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn wake_all(&self) {
        for w in &self.workers {
            let one: u64 = 1;
            unsafe { write(w.wake.as_raw_fd(), &one as *const u64 as *const _, 8) };
        }
    }

    pub fn set_policy(&self, policy: &Policy) {
        let mut snapshot = Snapshot::build(policy);
        snapshot.assign_counter_slots(&mut self.vsid_slots.lock().unwrap());
        let snapshot = Arc::new(snapshot);
        let _ = self.update(|cur| Ok((State { snapshot, taps: cur.taps.clone() }, ())));
    }

    /// Create the TAP of a VM adapter; returns its ifindex.
    pub fn add_port(&self, id: PortId, spec: &TapSpec) -> io::Result<u32> {
        self.update(|cur| {
            if cur.taps.contains_key(&id) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("port {id} exists")));
            }
            let tap = Arc::new(Tap::create(spec, self.workers.len(), self.steering.as_ref())?);
            let ifindex = tap.ifindex;
            let mut taps = cur.taps.clone();
            taps.insert(id, tap);
            Ok((State { snapshot: cur.snapshot.clone(), taps }, ifindex))
        })
    }

    /// Remove a port; its TAP disappears once no worker holds it.
    pub fn remove_port(&self, id: PortId) -> io::Result<()> {
        self.update(|cur| {
            let mut taps = cur.taps.clone();
            if taps.remove(&id).is_none() {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("port {id} does not exist")));
            }
            Ok((State { snapshot: cur.snapshot.clone(), taps }, ()))
        })
    }

    /// The table snapshot packets are decided against right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.state.lock().unwrap().snapshot.clone()
    }

    /// All workers' counters summed, in [`Counters::names`] order.
    pub fn counters(&self) -> Vec<u64> {
        let mut out = vec![0u64; Counters::LEN];
        for w in &self.workers {
            w.counters.sum_into(&mut out);
        }
        out
    }

    /// Per-VSID counters summed over the workers: for every VSID that has a
    /// slot, `[vsid, encap packets, encap bytes, decap packets, decap bytes]`.
    pub fn vsid_counters(&self) -> Vec<u64> {
        let mut sums = vec![0u64; self.vsid_capacity as usize * VSID_COUNTERS];
        for w in &self.workers {
            w.counters.sum_vsid_into(&mut sums);
        }
        let mut out = Vec::new();
        for (vsid, slot) in self.vsid_slots.lock().unwrap().assigned() {
            let base = slot as usize * VSID_COUNTERS;
            out.push(vsid as u64);
            out.extend_from_slice(&sums[base..base + VSID_COUNTERS]);
        }
        out
    }

    /// Rare packet events reported since the last call (see io::events).
    pub fn drain_events(&self) -> Vec<DropEvent> {
        self.shared.drops.drain()
    }

    /// Addresses learned from ARP since the last call (see dp::learn).
    pub fn drain_learned(&self) -> Vec<Learned> {
        self.shared.learned.drain()
    }

    /// Each worker's heartbeat: a value that keeps changing while it runs.
    /// Packets each worker read, from its TAP queues and its underlay
    /// socket: how the flows spread over the workers.
    pub fn worker_packets(&self) -> Vec<u64> {
        self.workers.iter().map(|w| w.counters.get(Counter::VmRxPackets) + w.counters.get(Counter::UnderlayRxPackets)).collect()
    }

    pub fn heartbeats(&self) -> Vec<u64> {
        self.workers.iter().map(|w| w.heartbeat.load(Ordering::Relaxed)).collect()
    }

    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.wake_all();
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}
