// Watches the packet workers and the VM adapters' devices.
// - Each worker advances a heartbeat at least twice a second while it runs
//   (native/src/io/worker.rs); one whose heartbeat stands still for STALL_MS
//   is reported, and while any is stalled the systemd watchdog is not
//   pinged, so systemd restarts a daemon whose dataplane hangs.
// - A worker whose thread ended (a panic outside the per-batch guard) makes
//   the daemon stop at once with a failure status: a dead dataplane is never
//   left running silently.
// - Panics a worker recovered from (it dropped one batch) are logged.
// - A VM adapter whose device fails (deleted under the daemon) is logged
//   once when it goes down.
// - When the kernel reports a change of links, addresses or routes, what
//   the daemon placed there and someone removed is put back (host.reconcile).
// (The timer also keeps the event loop alive: the workers are native threads.)

import type { NativeCore } from '../native.js';
import type { PortState } from './host.js';
import type { Logger } from './log.js';
import type { Systemd } from './systemd.js';

const STALL_MS = 2000;
const CHECK_MS = 250;

export interface SuperviseOptions {
  /** The adapters' states now (host.portStates). */
  ports(): PortState[];
  /** A worker died: stop the daemon with a failure status. */
  onDead(why: string): void;
  /** The kernel's links, addresses or routes changed (host.reconcile). */
  onKernelChange(): void;
}

export function supervise(core: NativeCore, systemd: Systemd, log: Logger, opts: SuperviseOptions): () => void {
  let last = core.heartbeats();
  const changedAt = Array.from(last, () => Date.now());
  const stalled = new Set<number>();
  const down = new Set<string>();
  let kernel = core.kernelChanges();
  const every = Math.min(CHECK_MS, systemd.watchdogIntervalMs ?? CHECK_MS);
  const timer = setInterval(() => {
    const dead = core.deadWorkers();
    if (dead.length) {
      for (const d of dead) log.fatal({ worker: d.worker, reason: d.message }, 'packet worker died: stopping (systemd restarts the daemon)');
      clearInterval(timer);
      opts.onDead(dead.map((d) => `worker ${d.worker}: ${d.message}`).join('; '));
      return;
    }
    for (const p of core.drainPanics()) {
      log.error({ worker: p.worker, panic: p.message, suppressed: p.suppressed }, 'packet worker recovered from a panic: the batch that met it was dropped (a bug: please report)');
    }
    const changes = core.kernelChanges();
    if (changes !== kernel) {
      kernel = changes;
      opts.onKernelChange();
    }
    for (const p of opts.ports()) {
      if (!p.up && p.error && !down.has(p.name)) {
        down.add(p.name);
        // A created TAP down is a fault; an adopted interface or a vhost-user guest down is its VM stopping.
        if (p.mode === 'tap') log.error({ adapter: p.name, error: p.error }, 'vm adapter down (nvgrectl reload re-creates it)');
        else log.info({ adapter: p.name, mode: p.mode, error: p.error }, 'vm adapter down');
      } else if (p.up && down.delete(p.name)) {
        log.info({ adapter: p.name, mode: p.mode }, 'vm adapter up');
      }
    }
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
