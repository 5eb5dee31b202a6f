// Watches the packet workers. Each advances a heartbeat at least twice a
// second while it runs (native/src/io/worker.rs); one whose heartbeat stands
// still for STALL_MS is reported, and while any is stalled the systemd
// watchdog is not pinged, so systemd restarts a daemon whose dataplane died.
// (The timer also keeps the event loop alive: the workers are native threads.)

import type { NativeCore } from '../native.js';
import type { Logger } from './log.js';
import type { Systemd } from './systemd.js';

const STALL_MS = 2000;
const CHECK_MS = 1000;

export function supervise(core: NativeCore, systemd: Systemd, log: Logger): () => void {
  let last = core.heartbeats();
  const changedAt = Array.from(last, () => Date.now());
  const stalled = new Set<number>();
  const every = Math.min(CHECK_MS, systemd.watchdogIntervalMs ?? CHECK_MS);
  const timer = setInterval(() => {
    const now = core.heartbeats();
    const t = Date.now();
    now.forEach((beat, i) => {
      if (beat !== last[i]) changedAt[i] = t;
      const stuck = t - changedAt[i]! > STALL_MS;
      if (stuck && !stalled.has(i)) log.error({ worker: i }, 'packet worker stalled');
      if (!stuck && stalled.has(i)) log.warn({ worker: i }, 'packet worker running again');
      if (stuck) stalled.add(i);
      else stalled.delete(i);
    });
    last = now;
    if (stalled.size === 0) systemd.watchdog();
  }, every);
  return () => clearInterval(timer);
}
