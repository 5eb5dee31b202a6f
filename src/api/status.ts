// GET /v1/status: what an operator checks first.

import type { HostDataplane } from '../daemon/host.js';
import type { PolicyStore } from '../daemon/store.js';

export interface StatusSource {
  store: PolicyStore;
  host: HostDataplane;
  version: string;
  startedAt: number;
  stateDir?: string;
}

export function statusOf(src: StatusSource) {
  const p = src.store.policy;
  const ports = new Map(src.host.portStates().map((s) => [s.name, s]));
  const r = src.store.lastReload;
  return {
    version: src.version,
    host: p.host.name ?? null,
    pid: process.pid,
    uptime_seconds: (Date.now() - src.startedAt) / 1000,
    config_file: src.store.configFile,
    state_dir: src.stateDir ?? null,
    // Why the running policy could not be saved in state_dir (changes are refused until it can); null: saved.
    state_error: src.store.stateError,
    generation: src.store.generation,
    counts: {
      provider_addresses: p.provider_addresses.length,
      provider_routes: p.provider_routes.length,
      customer_routes: p.customer_routes.length,
      lookup_records: p.lookup_records.length,
      vm_adapters: p.vm_adapters.length,
    },
    ports: p.vm_adapters.map((a) => {
      const s = ports.get(a.name);
      return {
        name: a.name,
        mode: a.mode ?? 'tap',
        vsid: a.vsid,
        mac: a.mac,
        netns: a.netns ?? null,
        ifindex: s?.ifindex ?? null,
        mtu: s?.mtu || null,
        up: s?.up ?? false,
        error: s?.error ?? null,
      };
    }),
    last_reload: { successful: r.successful, timestamp: r.timestamp.toISOString(), error: r.error },
    // The HNV gateway's uplink (only on a gateway host).
    ...(p.uplink ? { uplink: { interface: p.uplink.interface, nats: (p.nat ?? []).length, ...src.host.uplinkState() } } : {}),
  };
}
