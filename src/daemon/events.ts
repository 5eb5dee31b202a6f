// Logs the dataplane's rare packet events (native/src/io/events.rs): the
// first drop of a kind per source, then at most one line a minute with how
// many were suppressed. Counters are the complete record; these lines say
// who, for the operator reading the journal.

import type { NativeCore } from '../native.js';
import type { Logger } from './log.js';

const DRAIN_MS = 1000;

export function logPacketEvents(core: NativeCore, portName: (id: number) => string | undefined, log: Logger): () => void {
  const timer = setInterval(() => {
    for (const ev of core.drainEvents()) {
      const from = ev.port !== undefined ? { adapter: portName(ev.port) ?? `port ${ev.port}` } : { provider_address: ev.provider_address };
      log.warn({ direction: ev.direction, reason: ev.reason, ...from, suppressed: ev.suppressed }, `dropped a packet: ${ev.reason}`);
    }
  }, DRAIN_MS);
  return () => clearInterval(timer);
}
