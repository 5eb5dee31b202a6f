//! I/O: TAP devices, the underlay sockets, netlink, and the worker threads
//! that move packets between them through the decision core. With several
//! workers, every TAP has a queue per worker and every worker its own
//! underlay sockets; a flow stays on one worker both ways.
//!
//! The control plane never touches a packet. It publishes a new [`State`]
//! (table snapshot + port set) as a whole; workers pick it up between
//! batches, so every packet is decided against exactly one snapshot.

mod attach;
mod events;
pub mod netlink;
pub mod notify;
mod bpf;
mod gso;
mod packet;
mod panics;
mod port;
mod steering;
mod sys;
pub mod tap;
mod underlay;
mod vhost_user;
mod vlan;
pub mod trunk;
mod worker;

use crate::dp::{Counter, Counters, Direction, FxMap, Learned, Policy, PolicyDelta, PortId, Refused, Snapshot, VsidSlots, MERGE_AT, VSID_COUNTERS};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sys::{EventFd, Epoll};
pub use events::{DropEvent, PanicEvent, Source};
pub use attach::AttachSpec;
pub use port::Device;
pub use sys::peer_credentials;
pub use tap::TapSpec;
use attach::Attached;
use port::Registration;
use steering::Steering;
use tap::Tap;
pub use vhost_user::{SocketMode, VhostUserSpec};
use vhost_user::VhostUserDevice;
use gso::GsoPort;
use underlay::Underlay;

/// What the workers read: the tables and the ports they name.
pub struct State {
    pub snapshot: Arc<Snapshot>,
    pub ports: FxMap<PortId, Arc<dyn Device>>,
    /// The HNV gateway's uplink: its interface adopted like a VM adapter of
    /// mode attach (read and written through packet sockets, the kernel
    /// kept quiet on it), but what it carries is the external network's.
    pub uplink: Option<Arc<dyn Device>>,
}

/// A port's device as it is now.
pub struct PortState {
    pub id: PortId,
    /// 0 without an interface (vhost-user, an adopted one that is absent).
    pub ifindex: u32,
    /// The MTU the VM was told, when the device tells it one.
    pub mtu: Option<u32>,
    pub up: bool,
    pub why_down: Option<String>,
}

/// A VM adapter's device, by kind (`vm_adapters[].mode`).
pub enum PortSpec<'a> {
    /// A TAP nvgred creates.
    Tap(TapSpec<'a>),
    /// An interface that exists (or will), adopted.
    Attach(AttachSpec<'a>),
    /// A vhost-user virtio-net device served on a socket.
    VhostUser(VhostUserSpec),
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
    /// Panics the workers recovered from, rate-limited, for the log.
    panics: events::EventQueue<PanicEvent>,
    /// Advanced on every change of the kernel's links, addresses and routes (see `netlink::Monitor`).
    kernel_changes: AtomicU64,
    /// The MAC of the uplink's gateway, as ARP found it (0: not known yet).
    uplink_router: AtomicU64,
    /// A listing of the NAT mappings asked for (its number) and each
    /// worker's answer, with the number it answered.
    nat_listing: AtomicU64,
    nat_answers: Mutex<Vec<(u64, Vec<u64>)>>,
}

struct Worker {
    /// What the worker waits on; ports are added and removed by the control thread.
    epoll: Arc<Epoll>,
    wake: Arc<EventFd>,
    counters: Arc<Counters>,
    /// Advanced every loop iteration (at least once a second): proof of life.
    heartbeat: Arc<AtomicU64>,
    /// The state generation the worker decides packets against.
    seen: Arc<AtomicU64>,
    /// Why the thread ended, if it ended without being asked to.
    died: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

/// The epoll token of a VM port (the underlay's and the wake-up's are above 2^32).
fn port_token(id: PortId) -> u64 {
    id as u64
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

/// Values per mapping in [`Dataplane::nat_mappings`].
pub const NAT_MAPPING_FIELDS: usize = 9;

/// The uplink's packet fanout group (ports' groups are their ids, far below).
const UPLINK_FANOUT_GROUP: u16 = 0xfffe;

/// How long a publisher waits for the workers to let go of the old state.
const GRACE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Dataplane {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    /// The thread following rtnetlink, and how to wake it to stop.
    monitor: (Arc<EventFd>, Option<JoinHandle<()>>),
    /// Serialises publishers so read-modify-write of the state is atomic.
    publish_lock: Mutex<()>,
    vsid_slots: Mutex<VsidSlots>,
    vsid_capacity: u32,
    /// With several workers: keeps each flow from the VMs on one TAP queue.
    steering: Option<Arc<Steering>>,
    segmentation: String,
    /// What removed ports' devices had dropped themselves (see `Device::drops`), in `Counters` layout: counters never go back.
    retired: Mutex<Vec<u64>>,
    /// The VLAN interfaces of provider addresses on a VLAN.
    vlans: vlan::VlanShims,
    /// The overlay being merged into new tables in the background, if it is.
    merging: Mutex<Option<Merging>>,
}

/// A snapshot's overlay being merged into new tables on a thread of its
/// own, and the deltas applied since, to apply again on the result.
struct Merging {
    thread: JoinHandle<Snapshot>,
    since: Vec<PolicyDelta>,
}

impl Dataplane {
    /// Start the worker threads.
    pub fn start(opts: &Options) -> io::Result<Dataplane> {
        let Options { workers, vsid_capacity, kernel_segmentation, poll } = *opts;
        let shared = Arc::new(Shared {
            state: Mutex::new(Arc::new(State { snapshot: Arc::new(Snapshot::default()), ports: FxMap::default(), uplink: None })),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            drops: events::EventQueue::default(),
            learned: events::EventQueue::default(),
            panics: events::EventQueue::default(),
            kernel_changes: AtomicU64::new(0),
            uplink_router: AtomicU64::new(0),
            nat_listing: AtomicU64::new(0),
            nat_answers: Mutex::new(vec![(0, Vec::new()); workers.max(1)]),
        });
        panics::install_hook();
        let monitor = Self::watch_kernel(&shared)?;
        let steering = if workers > 1 { Some(Arc::new(Steering::load()?)) } else { None };
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
            let epoll = Arc::new(Epoll::new()?);
            let wake = Arc::new(EventFd::new()?);
            let underlay = Underlay::open(i as u32, workers.max(1) as u32, gso.clone())?;
            epoll.add(underlay.fd_v4(), worker::TOKEN_UNDERLAY_V4)?;
            if let Some(fd) = underlay.fd_v6() {
                epoll.add(fd, worker::TOKEN_UNDERLAY_V6)?;
            }
            epoll.add(wake.fd(), worker::TOKEN_WAKE)?;
            let counters = Arc::new(Counters::new(vsid_capacity));
            let heartbeat = Arc::new(AtomicU64::new(0));
            let seen = Arc::new(AtomicU64::new(0));
            let died = Arc::new(Mutex::new(None));
            let ctx = worker::Context {
                index: i,
                epoll: epoll.clone(),
                underlay,
                shared: shared.clone(),
                wake: wake.clone(),
                counters: counters.clone(),
                heartbeat: heartbeat.clone(),
                seen: seen.clone(),
                died: died.clone(),
                poll,
            };
            let thread = std::thread::Builder::new().name(format!("{}{i}", panics::WORKER_THREAD)).spawn(move || ctx.run());
            let thread = match thread {
                Ok(t) => t,
                Err(e) => {
                    Self::stop_workers(&shared, &mut ws);
                    return Err(e);
                }
            };
            ws.push(Worker { epoll, wake, counters, heartbeat, seen, died, thread: Some(thread) });
        }
        Ok(Dataplane {
            shared,
            workers: ws,
            monitor,
            publish_lock: Mutex::new(()),
            vsid_slots: Mutex::new(VsidSlots::new(vsid_capacity)),
            vsid_capacity,
            steering,
            segmentation,
            retired: Mutex::new(vec![0; Counters::LEN]),
            vlans: vlan::VlanShims::start()?,
            merging: Mutex::new(None),
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
            w.wake.signal();
        }
    }

    pub fn set_policy(&self, policy: &Policy) {
        let mut snapshot = Snapshot::build(policy);
        snapshot.assign_counter_slots(&mut self.vsid_slots.lock().unwrap());
        let snapshot = Arc::new(snapshot);
        let _ = self.update(|cur| {
            // A merge of the old tables is of no use any more (its thread ends on its own).
            self.merging.lock().unwrap().take();
            Ok((State { snapshot, ports: cur.ports.clone(), uplink: cur.uplink.clone() }, ()))
        });
    }

    /// Apply a delta to the running policy, at a cost in proportion to it;
    /// refused (nothing changed) when only a full build is exact. Past
    /// [`MERGE_AT`] overlay entries the overlay is merged into new tables on
    /// another thread; the next delta after it is done swaps them in.
    pub fn apply_delta(&self, delta: &PolicyDelta) -> Result<(), Refused> {
        let refused = std::cell::RefCell::new(None);
        let _ = self.update(|cur| {
            let mut merging = self.merging.lock().unwrap();
            let mut base = cur.snapshot.clone();
            if merging.as_ref().is_some_and(|m| m.thread.is_finished()) {
                let m = merging.take().unwrap();
                // The merged tables, with what changed while they were made.
                if let Ok(caught_up) = m.thread.join().map_err(|_| ()).and_then(|s| m.since.iter().try_fold(s, |s, d| s.apply_delta(d).map_err(|_| ()))) {
                    base = Arc::new(caught_up);
                }
            }
            let next = base.apply_delta(delta).map_err(|e| {
                *refused.borrow_mut() = Some(e);
                io::Error::other("delta refused")
            })?;
            match merging.as_mut() {
                Some(m) => m.since.push(delta.clone()),
                None if next.overlay_len() > MERGE_AT => {
                    let frozen = next.clone();
                    // Without a thread the overlay grows until the next delta tries again.
                    if let Ok(thread) = std::thread::Builder::new().name("nvgre-merge".into()).spawn(move || frozen.merged()) {
                        *merging = Some(Merging { thread, since: Vec::new() });
                    }
                }
                None => {}
            }
            Ok((State { snapshot: Arc::new(next), ports: cur.ports.clone(), uplink: cur.uplink.clone() }, ()))
        });
        refused.into_inner().map_or(Ok(()), Err)
    }

    /// Add a VM adapter's device (a TAP is created; an interface is
    /// adopted, now or when it appears) and have the workers wait on it;
    /// returns its ifindex (0 while an adopted interface is absent).
    pub fn add_port(&self, id: PortId, spec: &PortSpec) -> io::Result<u32> {
        self.update(|cur| {
            if cur.ports.contains_key(&id) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("port {id} exists")));
            }
            let reg = Registration::new(port_token(id), self.workers.iter().map(|w| w.epoll.clone()).collect());
            let dev: Arc<dyn Device> = match spec {
                PortSpec::Tap(t) => Arc::new(Tap::create(t, reg, self.steering.as_deref())?),
                PortSpec::Attach(a) => Arc::new(Attached::new(a, reg, self.steering.clone())),
                // Ports spread over the workers; one reads the guest's frames.
                PortSpec::VhostUser(v) => Arc::new(VhostUserDevice::start(v, reg, id as usize % self.workers.len())?),
            };
            let ifindex = dev.ifindex();
            let mut ports = cur.ports.clone();
            ports.insert(id, dev);
            Ok((State { snapshot: cur.snapshot.clone(), ports, uplink: cur.uplink.clone() }, ifindex))
        })
    }

    /// Remove a port: no worker waits on it or decides against a state
    /// that has it once this returns; a created TAP disappears.
    pub fn remove_port(&self, id: PortId) -> io::Result<()> {
        self.update(|cur| {
            let mut ports = cur.ports.clone();
            let Some(dev) = ports.remove(&id) else {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("port {id} does not exist")));
            };
            add_device_drops(dev.as_ref(), &mut self.retired.lock().unwrap_or_else(|p| p.into_inner()));
            Ok((State { snapshot: cur.snapshot.clone(), ports, uplink: cur.uplink.clone() }, ()))
        })
    }

    /// The VLAN interface `name` (VLAN `vid` of `parent`) for provider
    /// addresses on that VLAN, made if it is not there; its ifindex.
    pub fn add_vlan(&self, parent: &str, name: &str, vid: u16) -> io::Result<u32> {
        self.vlans.add(parent, name, vid)
    }

    /// Remove a VLAN interface no provider address uses any more.
    pub fn remove_vlan(&self, name: &str) -> io::Result<()> {
        self.vlans.remove(name)
    }

    /// Adopt interface `name` as the HNV gateway's uplink (None: no uplink);
    /// the one there before, if another, is let go. Its gateway's MAC is
    /// found again.
    pub fn set_uplink(&self, name: Option<&str>) -> io::Result<()> {
        if self.workers.len() > 1 && name.is_some() {
            // Both directions of a NAT flow must meet in one worker: the
            // hand-off between workers is not built.
            return Err(io::Error::new(io::ErrorKind::Unsupported, "an uplink (the HNV gateway's NAT) needs a single worker (--workers 1)"));
        }
        self.update(|cur| {
            if cur.uplink.as_ref().map(|d| d.name()) == name {
                return Ok((State { snapshot: cur.snapshot.clone(), ports: cur.ports.clone(), uplink: cur.uplink.clone() }, ()));
            }
            let uplink = name.map(|name| {
                let reg = Registration::new(worker::TOKEN_UPLINK, self.workers.iter().map(|w| w.epoll.clone()).collect());
                Arc::new(Attached::new(&AttachSpec { name, mtu: None, group: UPLINK_FANOUT_GROUP }, reg, self.steering.clone())) as Arc<dyn Device>
            });
            self.shared.uplink_router.store(0, Ordering::Release);
            Ok((State { snapshot: cur.snapshot.clone(), ports: cur.ports.clone(), uplink }, ()))
        })
    }

    /// Every live NAT mapping of every worker, [`NAT_MAPPING_FIELDS`] values
    /// each: NAT index, VSID, protocol (0 tcp, 1 udp, 2 icmp), inside
    /// address, inside port (ICMP: identifier), external address, external
    /// port, seconds left, TCP established (1) or not. The workers answer
    /// between batches; one that does not within a second is left out.
    pub fn nat_mappings(&self) -> Vec<u64> {
        let asked = self.shared.nat_listing.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake_all();
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            {
                let answers = self.shared.nat_answers.lock().unwrap_or_else(|p| p.into_inner());
                if answers.iter().all(|(n, _)| *n >= asked) || Instant::now() >= deadline {
                    return answers.iter().filter(|(n, _)| *n >= asked).flat_map(|(_, v)| v.iter().copied()).collect();
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The uplink's device as it is now (None without one).
    pub fn uplink_state(&self) -> Option<PortState> {
        let state = self.shared.state.lock().unwrap().clone();
        state.uplink.as_ref().map(|d| PortState { id: 0, ifindex: d.ifindex(), mtu: d.mtu(), up: d.is_up(), why_down: d.why_down() })
    }

    /// Each port's device as it is now.
    pub fn port_states(&self) -> Vec<PortState> {
        let state = self.shared.state.lock().unwrap().clone();
        let mut out: Vec<_> = state
            .ports
            .iter()
            .map(|(id, d)| PortState { id: *id, ifindex: d.ifindex(), mtu: d.mtu(), up: d.is_up(), why_down: d.why_down() })
            .collect();
        out.sort_by_key(|p| p.id);
        out
    }

    /// The table snapshot packets are decided against right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.state.lock().unwrap().snapshot.clone()
    }

    /// All workers' counters summed, in [`Counters::names`] order.
    pub fn counters(&self) -> Vec<u64> {
        let mut out = self.retired.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for w in &self.workers {
            w.counters.sum_into(&mut out);
        }
        for dev in self.shared.state.lock().unwrap().ports.values() {
            add_device_drops(dev.as_ref(), &mut out);
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

    /// Panics the workers recovered from since the last call.
    pub fn drain_panics(&self) -> Vec<PanicEvent> {
        self.shared.panics.drain()
    }

    /// Workers whose thread ended without being asked to, with why: the
    /// dataplane is broken and the daemon must exit (systemd restarts it).
    pub fn dead_workers(&self) -> Vec<(usize, String)> {
        self.workers.iter().enumerate().filter_map(|(i, w)| w.died.lock().unwrap_or_else(|p| p.into_inner()).clone().map(|why| (i, why))).collect()
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
        Self::stop_workers(&self.shared, &mut self.workers);
        self.monitor.0.signal();
        if let Some(t) = self.monitor.1.take() {
            let _ = t.join();
        }
    }

    /// Follow rtnetlink on a thread of its own (blocking reads, woken to stop).
    fn watch_kernel(shared: &Arc<Shared>) -> io::Result<(Arc<EventFd>, Option<JoinHandle<()>>)> {
        const TOKEN_NETLINK: u64 = 1;
        let mut monitor = netlink::Monitor::open()?;
        let epoll = Epoll::new()?;
        let stop = Arc::new(EventFd::new()?);
        epoll.add(monitor.fd(), TOKEN_NETLINK)?;
        epoll.add(stop.fd(), 0)?;
        let shared = shared.clone();
        let thread = std::thread::Builder::new().name("nvgre-netlink".into()).spawn(move || {
            let mut events = [sys::epoll_event { events: 0, data: 0 }; 2];
            let mut links = Vec::new();
            while !shared.stop.load(Ordering::Acquire) {
                let Ok(ready) = epoll.wait(&mut events, 1000) else { return };
                if !ready.iter().any(|e| e.data == TOKEN_NETLINK) {
                    continue;
                }
                if monitor.read(&mut links) {
                    shared.kernel_changes.fetch_add(1, Ordering::Release);
                }
                if !links.is_empty() {
                    let state = shared.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    for l in links.drain(..) {
                        for dev in state.ports.values().chain(state.uplink.as_ref()) {
                            dev.link_changed(&l);
                        }
                    }
                }
            }
        })?;
        Ok((stop, Some(thread)))
    }

    /// A number that changes whenever the kernel's links, addresses or routes did.
    pub fn kernel_changes(&self) -> u64 {
        self.shared.kernel_changes.load(Ordering::Acquire)
    }


    fn stop_workers(shared: &Shared, workers: &mut [Worker]) {
        shared.stop.store(true, Ordering::Release);
        for w in workers.iter() {
            w.wake.signal();
        }
        for w in workers.iter_mut() {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Add what a device dropped itself (frames from its VM) into counters of the `Counters` layout.
fn add_device_drops(dev: &dyn Device, out: &mut [u64]) {
    dev.drops(&mut |reason, n| out[Counters::drop_slot(Direction::FromVm, reason)] += n);
}
