//! Rare packet events for the log: "dropped a spoofed packet from
//! 192.168.0.99". Never one log line per packet: every drop is counted
//! (dp::Counters); only the first of a kind per source is reported, again at
//! most once per `REPEAT` with how many were suppressed meanwhile, and no
//! more than `RATE` reports per second per worker. The daemon drains the
//! queue about once a second and logs what it finds.

use crate::dp::{Direction, DropReason, FxMap, PortId};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Reports per second per worker, sustained (and the burst allowed).
const RATE: f64 = 10.0;
/// How long one (direction, reason, source) stays quiet after a report.
const REPEAT: Duration = Duration::from_secs(60);
/// Sources remembered per worker; beyond this the memory starts over.
const MAX_KEYS: usize = 4096;
/// Reports waiting for the daemon; beyond this the oldest are dropped.
const MAX_QUEUED: usize = 256;

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

type Key = (Direction, DropReason, Source);

/// Owned by one worker: decides, without locks, whether a drop is reported.
pub struct Limiter {
    recent: FxMap<Key, (Instant, u64)>,
    tokens: f64,
    refilled: Instant,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter { recent: FxMap::default(), tokens: RATE, refilled: Instant::now() }
    }
}

impl Limiter {
    /// The event to report for this drop at time `now`, if any.
    pub fn check(&mut self, direction: Direction, reason: DropReason, source: Source, now: Instant) -> Option<DropEvent> {
        let key = (direction, reason, source);
        if let Some((last, suppressed)) = self.recent.get_mut(&key) {
            if now.duration_since(*last) < REPEAT {
                *suppressed += 1;
                return None;
            }
        }
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * RATE).min(RATE);
        self.refilled = now;
        if self.tokens < 1.0 {
            return None;
        }
        self.tokens -= 1.0;
        if self.recent.len() >= MAX_KEYS {
            self.recent.clear();
        }
        let suppressed = self.recent.insert(key, (now, 0)).map(|(_, n)| n).unwrap_or(0);
        Some(DropEvent { direction, reason, source, suppressed })
    }
}

/// Reports from every worker, waiting for the daemon to log them.
#[derive(Default)]
pub struct EventQueue {
    queue: Mutex<VecDeque<DropEvent>>,
}

impl EventQueue {
    pub fn push(&self, ev: DropEvent) {
        let mut q = self.queue.lock().unwrap();
        if q.len() >= MAX_QUEUED {
            q.pop_front();
        }
        q.push_back(ev);
    }

    pub fn drain(&self) -> Vec<DropEvent> {
        self.queue.lock().unwrap().drain(..).collect()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const FROM: Source = Source::Underlay(IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 0, 99)));

    #[test]
    fn reports_the_first_of_a_kind_then_counts_the_rest() {
        let mut l = Limiter::default();
        let t = Instant::now();
        let first = l.check(Direction::FromUnderlay, DropReason::SpoofedSource, FROM, t).unwrap();
        assert_eq!(first.suppressed, 0);
        for i in 1..=1000 {
            assert!(l.check(Direction::FromUnderlay, DropReason::SpoofedSource, FROM, t + Duration::from_millis(i)).is_none());
        }
        let again = l.check(Direction::FromUnderlay, DropReason::SpoofedSource, FROM, t + REPEAT).unwrap();
        assert_eq!(again.suppressed, 1000);
        // Another reason from the same source is its own event.
        assert!(l.check(Direction::FromUnderlay, DropReason::GreFlags, FROM, t + REPEAT).is_some());
    }

    #[test]
    fn a_flood_of_new_sources_is_rate_limited() {
        let mut l = Limiter::default();
        let t = Instant::now();
        let reported = (0..10_000u32)
            .filter(|&i| l.check(Direction::FromVm, DropReason::SpoofedSource, Source::Port(i), t).is_some())
            .count();
        assert_eq!(reported, RATE as usize);
        // A second later the bucket has refilled.
        assert!(l.check(Direction::FromVm, DropReason::SpoofedSource, Source::Port(99_999), t + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn the_queue_keeps_the_newest() {
        let q = EventQueue::default();
        for i in 0..(MAX_QUEUED as u32 + 10) {
            q.push(DropEvent { direction: Direction::FromVm, reason: DropReason::Truncated, source: Source::Port(i), suppressed: 0 });
        }
        let got = q.drain();
        assert_eq!(got.len(), MAX_QUEUED);
        assert_eq!(got[0].source, Source::Port(10));
        assert!(q.drain().is_empty());
    }
}
