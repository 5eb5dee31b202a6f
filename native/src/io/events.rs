//! Packet events for the control plane, never one per packet:
//! - drops for the log ("dropped a spoofed packet from 192.168.0.99"): every
//!   drop is counted (dp::Counters); only the first of a kind per source is
//!   reported, again at most once a minute with how many were suppressed,
//!   and no more than 10 reports a second per worker;
//! - addresses learned from ARP (dp::learn): each (VSID, CA, MAC, PA) at
//!   most every 10 s (a refresh), no more than 100 a second per worker.
//! The daemon drains both queues and acts on what it finds.

use crate::dp::{Direction, DropReason, FxMap, PortId};
use std::collections::VecDeque;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sources remembered per worker and limiter; beyond this the memory starts over.
const MAX_KEYS: usize = 4096;
/// Events waiting for the daemon; beyond this the oldest are dropped.
const MAX_QUEUED: usize = 1024;

/// How often a limiter lets events through.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Reports per second, sustained (and the burst allowed).
    pub rate: f64,
    /// How long one key stays quiet after a report.
    pub repeat: Duration,
}

pub const DROP_PACE: Pace = Pace { rate: 10.0, repeat: Duration::from_secs(60) };
pub const LEARN_PACE: Pace = Pace { rate: 100.0, repeat: Duration::from_secs(10) };

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The outer source address of an underlay packet.
    Underlay(IpAddr),
    /// The VM port a frame came from.
    Port(PortId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropEvent {
    pub direction: Direction,
    pub reason: DropReason,
    pub source: Source,
    /// Like events not reported since the last report of this one.
    pub suppressed: u64,
}

/// A panic a worker recovered from (it dropped the batch that met it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanicEvent {
    pub worker: usize,
    /// What panicked, and where in the source.
    pub message: String,
    /// Panics at the same place not reported since the last report of it.
    pub suppressed: u64,
}

/// Owned by one worker: decides, without locks, whether an event with this
/// key is reported now, and how many like it were held back since the last.
pub struct Limiter<K> {
    pace: Pace,
    recent: FxMap<K, (Instant, u64)>,
    tokens: f64,
    refilled: Instant,
}

impl<K: Hash + Eq> Limiter<K> {
    pub fn new(pace: Pace) -> Limiter<K> {
        Limiter { pace, recent: FxMap::default(), tokens: pace.rate, refilled: Instant::now() }
    }

    /// `Some(suppressed)` if the event is to be reported at time `now`.
    pub fn admit(&mut self, key: K, now: Instant) -> Option<u64> {
        if let Some((last, suppressed)) = self.recent.get_mut(&key) {
            if now.duration_since(*last) < self.pace.repeat {
                *suppressed += 1;
                return None;
            }
        }
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * self.pace.rate).min(self.pace.rate);
        self.refilled = now;
        if self.tokens < 1.0 {
            return None;
        }
        self.tokens -= 1.0;
        if self.recent.len() >= MAX_KEYS {
            self.recent.clear();
        }
        Some(self.recent.insert(key, (now, 0)).map(|(_, n)| n).unwrap_or(0))
    }
}

/// A drop, as the limiter lets it through.
pub fn drop_event(
    limiter: &mut Limiter<(Direction, DropReason, Source)>,
    direction: Direction,
    reason: DropReason,
    source: Source,
    now: Instant,
) -> Option<DropEvent> {
    let suppressed = limiter.admit((direction, reason, source), now)?;
    Some(DropEvent { direction, reason, source, suppressed })
}

/// Events from every worker, waiting for the daemon.
pub struct EventQueue<E> {
    queue: Mutex<VecDeque<E>>,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue { queue: Mutex::new(VecDeque::new()) }
    }
}

impl<E> EventQueue<E> {
    pub fn push(&self, ev: E) {
        let mut q = self.queue.lock().unwrap();
        if q.len() >= MAX_QUEUED {
            q.pop_front();
        }
        q.push_back(ev);
    }

    pub fn drain(&self) -> Vec<E> {
        self.queue.lock().unwrap().drain(..).collect()
    }
}


#[cfg(test)]
mod test {
    use super::*;

    const FROM: Source = Source::Underlay(IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 0, 99)));

    #[test]
    fn reports_the_first_of_a_kind_then_counts_the_rest() {
        let mut l = Limiter::new(DROP_PACE);
        let t = Instant::now();
        let check = |l: &mut Limiter<_>, reason, t| drop_event(l, Direction::FromUnderlay, reason, FROM, t);
        let first = check(&mut l, DropReason::SpoofedSource, t).unwrap();
        assert_eq!(first.suppressed, 0);
        for i in 1..=1000 {
            assert!(check(&mut l, DropReason::SpoofedSource, t + Duration::from_millis(i)).is_none());
        }
        let again = check(&mut l, DropReason::SpoofedSource, t + DROP_PACE.repeat).unwrap();
        assert_eq!(again.suppressed, 1000);
        // Another reason from the same source is its own event.
        assert!(check(&mut l, DropReason::GreFlags, t + DROP_PACE.repeat).is_some());
    }

    #[test]
    fn a_flood_of_new_sources_is_rate_limited() {
        let mut l = Limiter::new(DROP_PACE);
        let t = Instant::now();
        let reported = (0..10_000u32)
            .filter(|&i| drop_event(&mut l, Direction::FromVm, DropReason::SpoofedSource, Source::Port(i), t).is_some())
            .count();
        assert_eq!(reported, DROP_PACE.rate as usize);
        // A second later the bucket has refilled.
        let later = t + Duration::from_secs(1);
        assert!(drop_event(&mut l, Direction::FromVm, DropReason::SpoofedSource, Source::Port(99_999), later).is_some());
    }

    #[test]
    fn the_queue_keeps_the_newest() {
        let q = EventQueue::<DropEvent>::default();
        for i in 0..(MAX_QUEUED as u32 + 10) {
            q.push(DropEvent { direction: Direction::FromVm, reason: DropReason::Truncated, source: Source::Port(i), suppressed: 0 });
        }
        let got = q.drain();
        assert_eq!(got.len(), MAX_QUEUED);
        assert_eq!(got[0].source, Source::Port(10));
        assert!(q.drain().is_empty());
    }
}
