// Prometheus metrics on `metrics.listen`, /metrics. The dataplane's counters
// come from the packet core in one bulk read per scrape (summed over the
// worker threads in Rust); JavaScript never counts packets. No CA, MAC or PA
// is ever a label.

import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { NativeCore } from '../native.js';
import type { Policy } from '../model/policy.js';
import { REFUSAL_REASONS, type RefusalReason } from '../api/events.js';

/** Learning's state and counters (control plane: counted in JavaScript, never per packet). */
export interface LearningMetrics {
  /** Learned records held now. */
  records: number;
  learned_total: number;
  expired_total: number;
  refused: Record<RefusalReason, number>;
}

/** What the metrics need to know about the running daemon. */
export interface MetricsSource {
  core: NativeCore;
  version: string;
  hostName?: string;
  /** Per-VSID series on (as the daemon started). */
  perVsid: boolean;
  policy(): Policy;
  /** VM adapters and whether each one's TAP exists. */
  adapters(): Array<{ name: string; up: boolean }>;
  lastReload(): { successful: boolean; lastSuccess: Date };
  /** Learning (packet flow 4); without it the learning series are zeros. */
  learning?(): LearningMetrics;
}

/** Totals that also have per-VSID counters: native slot → index in a VSID's counters. */
const PER_VSID: Record<string, number> = { encap_packets: 0, encap_bytes: 1, decap_packets: 2, decap_bytes: 3 };
/** Values per VSID in readVsidCounters(): the VSID, then its counters. */
const VSID_STRIDE = 5;

/** Native counter slot → metric (totals). */
const TOTALS: Record<string, { name: string; help: string }> = {
  encap_packets: { name: 'nvgre_encap_packets_total', help: 'Frames from VMs sent encapsulated in NVGRE.' },
  encap_bytes: { name: 'nvgre_encap_bytes_total', help: 'Bytes of the tenant frames sent encapsulated (inner Ethernet frame).' },
  decap_packets: { name: 'nvgre_decap_packets_total', help: 'NVGRE packets decapsulated and delivered to a VM.' },
  decap_bytes: { name: 'nvgre_decap_bytes_total', help: 'Bytes of the tenant frames decapsulated and delivered (inner Ethernet frame).' },
  arp_replies: { name: 'nvgre_arp_replies_total', help: 'ARP requests answered by the host (for .1 and remote CAs).' },
  icmp_echo_replies: { name: 'nvgre_icmp_echo_replies_total', help: 'ICMP echo requests to a gateway address answered by the host.' },
  nd_replies: { name: 'nvgre_nd_replies_total', help: 'IPv6 Neighbor Solicitations answered by the host (for the gateway address and remote CAs).' },
  icmp_errors: { name: 'nvgre_icmp_errors_sent_total', help: 'ICMP errors sent to VMs (fragmentation needed / packet too big for the underlay).' },
  arp_probes: { name: 'nvgre_arp_probes_total', help: 'ARP requests sent as unicast NVGRE to the PAs of L2Only records (learning, flow 4).' },
  segmented_frames: { name: 'nvgre_tso_frames_total', help: 'Large TCP segments from VMs (TAP offload) split into MTU-sized NVGRE packets by nvgred.' },
  kernel_segmented_frames: {
    name: 'nvgre_underlay_gso_frames_total',
    help: 'Large TCP segments from VMs sent on the underlay as one NVGRE packet, for the kernel or NIC to split where the path needs it.',
  },
  coalesced_packets: { name: 'nvgre_coalesced_packets_total', help: 'Decapsulated TCP segments merged into the previous one for a single TAP write.' },
  aggregated_packets: {
    name: 'nvgre_underlay_gro_packets_total',
    help: 'NVGRE packets received larger than the underlay MTU (merged on receive by GRO, or sent whole by a peer whose path segments on the way), delivered to the VM as one large TCP segment.',
  },
  local_switched_packets: { name: 'nvgre_local_switched_packets_total', help: 'Frames switched between VMs of one VSID on this host.' },
  routed_packets: { name: 'nvgre_routed_packets_total', help: 'Packets routed between VSIDs of a routing domain by this host.' },
  flooded_packets: { name: 'nvgre_flooded_packets_total', help: 'Broadcast and multicast frames flooded to the local VMs of their VSID.' },
  vm_rx_packets: { name: 'nvgre_vm_rx_packets_total', help: 'Frames read from VM adapters.' },
  underlay_rx_packets: { name: 'nvgre_underlay_rx_packets_total', help: 'GRE packets received on the underlay.' },
  worker_panics: {
    name: 'nvgre_worker_panics_total',
    help: 'Batches of packets whose handling panicked (a bug in nvgred): each batch was dropped (reason internal_error) and the worker went on.',
  },
  vm_adapter_errors: { name: 'nvgre_vm_adapter_errors_total', help: "VM adapters whose device failed under the daemon (e.g. its TAP was deleted): each is then down until re-created by a reload." },
  nat_mappings_created: { name: 'nvgre_nat_mappings_created_total', help: 'NAT mappings made for a tenant endpoint starting a flow to the outside (the HNV gateway).' },
  nat_mappings_expired: { name: 'nvgre_nat_mappings_expired_total', help: 'NAT mappings removed after their idle timeout.' },
  nat_mappings_refused: { name: 'nvgre_nat_mappings_refused_total', help: 'NAT mappings refused: the NAT or the gateway holds its limit, or the port range is used up (see nvgre_dropped_packets_total reasons nat_*).' },
  nat_mappings_removed: { name: 'nvgre_nat_mappings_removed_total', help: 'NAT mappings removed because their NAT changed or went.' },
  uplink_rx_packets: { name: 'nvgre_uplink_rx_packets_total', help: "Frames read from the HNV gateway's uplink." },
  uplink_tx_packets: { name: 'nvgre_uplink_tx_packets_total', help: "Frames sent out of the HNV gateway's uplink (translated packets, ARP)." },
};

/** The NAT's live mappings per NAT and protocol (from natMappings(): 9 values each, the NAT index first, the protocol third). */
export const NAT_MAPPING_FIELDS = 9;
export const NAT_PROTOCOL_NAMES = ['tcp', 'udp', 'icmp'] as const;

export class Metrics {
  readonly registry = new Registry();
  private latest = new Map<string, number>();
  /** VSID → its counters (see PER_VSID), from the last read. */
  private latestVsid = new Map<number, number[]>();
  /** Packets read per worker, from the last read. */
  private workerPackets: number[] = [];

  constructor(private readonly src: MetricsSource) {
    const r = this.registry;
    collectDefaultMetrics({ register: r });
    const value = (slot: string) => this.latest.get(slot) ?? 0;

    const perVsid = (slot: string) => (src.perVsid ? PER_VSID[slot] : undefined);
    const latestVsid = () => this.latestVsid;
    for (const [slot, m] of Object.entries(TOTALS)) {
      const index = perVsid(slot);
      new Counter({
        name: m.name,
        help:
          index === undefined
            ? m.help
            : `${m.help} By VSID, for up to metrics.per_vsid_max VSIDs; vsid="other" holds the rest, so sum() is the total.`,
        labelNames: index === undefined ? [] : ['vsid'],
        registers: [r],
        collect() {
          this.reset();
          if (index === undefined) {
            this.inc(value(slot));
            return;
          }
          let counted = 0;
          for (const [vsid, values] of latestVsid()) {
            this.inc({ vsid: String(vsid) }, values[index]!);
            counted += values[index]!;
          }
          this.inc({ vsid: 'other' }, Math.max(0, value(slot) - counted));
        },
      });
    }
    const reasons = src.core.dropReasons();
    new Counter({
      name: 'nvgre_dropped_packets_total',
      help: 'Packets dropped by the dataplane, by where they came from and why (one series per reason).',
      labelNames: ['direction', 'reason'],
      registers: [r],
      collect() {
        this.reset();
        for (const direction of ['from_vm', 'from_underlay', 'from_uplink']) {
          for (const reason of reasons) this.inc({ direction, reason }, value(`drop:${direction}:${reason}`));
        }
      },
    });

    new Counter({
      name: 'nvgre_nat_translated_packets_total',
      help: 'Packets the HNV gateway translated: outbound (tenant to the uplink) and inbound (uplink to a tenant).',
      labelNames: ['direction'],
      registers: [r],
      collect() {
        this.reset();
        this.inc({ direction: 'outbound' }, value('nat_outbound_packets'));
        this.inc({ direction: 'inbound' }, value('nat_inbound_packets'));
      },
    });
    new Gauge({
      name: 'nvgre_nat_mappings',
      help: 'Live NAT mappings, by NAT (the name of its nat entry) and protocol.',
      labelNames: ['nat', 'protocol'],
      registers: [r],
      collect() {
        this.reset();
        const nats = src.policy().nat ?? [];
        if (!nats.length) return;
        const counts = nats.map(() => [0, 0, 0]);
        const m = src.core.natMappings();
        for (let i = 0; i + NAT_MAPPING_FIELDS <= m.length; i += NAT_MAPPING_FIELDS) {
          const c = counts[Number(m[i])];
          if (c) c[Number(m[i + 2])]! += 1;
        }
        nats.forEach((n, k) => NAT_PROTOCOL_NAMES.forEach((protocol, p) => this.set({ nat: n.name, protocol }, counts[k]![p]!)));
      },
    });

    const workers = () => this.workerPackets;
    new Counter({
      name: 'nvgre_worker_received_packets_total',
      help: 'Packets each worker thread read from VM adapters and the underlay: how flows spread over --workers.',
      labelNames: ['worker'],
      registers: [r],
      collect() {
        this.reset();
        workers().forEach((n, worker) => this.inc({ worker: String(worker) }, n));
      },
    });

    const gauge = (name: string, help: string, count: (p: Policy) => number) =>
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          this.set(count(src.policy()));
        },
      });
    gauge('nvgre_lookup_records', 'Lookup records in the running policy.', (p) => p.lookup_records.length);
    gauge('nvgre_customer_routes', 'Customer routes in the running policy.', (p) => p.customer_routes.length);
    gauge('nvgre_provider_addresses', 'Provider addresses of this host.', (p) => p.provider_addresses.length);
    gauge('nvgre_provider_routes', 'Provider routes of this host.', (p) => p.provider_routes.length);
    gauge('nvgre_vm_adapters', 'VM adapters (TAP ports) configured.', (p) => p.vm_adapters.length);
    gauge('nvgre_vsids_without_counters', 'VSIDs of the policy counted only in vsid="other" (over metrics.per_vsid_max, or per_vsid off).', (p) => {
      const vsids = new Set(p.customer_routes.map((c) => c.vsid));
      return [...vsids].filter((v) => !this.latestVsid.has(v)).length;
    });
    const learning = (): LearningMetrics =>
      src.learning?.() ?? { records: 0, learned_total: 0, expired_total: 0, refused: { limit: 0, static_conflict: 0, invalid: 0 } };
    new Gauge({
      name: 'nvgre_learned_records',
      help: 'Dynamic lookup records this host learned from ARP (packet flow 4) and holds now.',
      registers: [r],
      collect() {
        this.set(learning().records);
      },
    });
    new Counter({
      name: 'nvgre_learned_total',
      help: 'Lookup records added or changed by learning.',
      registers: [r],
      collect() {
        this.reset();
        this.inc(learning().learned_total);
      },
    });
    new Counter({
      name: 'nvgre_learning_refused_total',
      help: 'Learned addresses refused: limit (the VSID holds learning.max_per_vsid learned records), static_conflict (a static record holds the address), invalid (the policy would not validate).',
      labelNames: ['reason'],
      registers: [r],
      collect() {
        this.reset();
        const refused = learning().refused;
        for (const reason of REFUSAL_REASONS) this.inc({ reason }, refused[reason] ?? 0);
      },
    });
    new Counter({
      name: 'nvgre_learned_expired_total',
      help: 'Learned lookup records removed because the packet core did not report them again within learning.ttl_seconds.',
      registers: [r],
      collect() {
        this.reset();
        this.inc(learning().expired_total);
      },
    });
    new Gauge({
      name: 'nvgre_vm_adapter_up',
      help: "Whether a VM adapter's device works (1) or not (0): its TAP exists, its adopted interface is there with its VM running, its vhost-user guest has started its rings.",
      labelNames: ['adapter'],
      registers: [r],
      collect() {
        this.reset();
        for (const a of src.adapters()) this.set({ adapter: a.name }, a.up ? 1 : 0);
      },
    });
    new Gauge({
      name: 'nvgre_config_last_reload_successful',
      help: 'Whether the last config load (start, reload, SIGHUP) succeeded.',
      registers: [r],
      collect() {
        this.set(src.lastReload().successful ? 1 : 0);
      },
    });
    new Gauge({
      name: 'nvgre_config_last_reload_success_timestamp_seconds',
      help: 'When the config was last loaded successfully, in seconds since the epoch.',
      registers: [r],
      collect() {
        this.set(src.lastReload().lastSuccess.getTime() / 1000);
      },
    });
    new Gauge({
      name: 'nvgre_build_info',
      help: 'nvgred version and host; always 1.',
      labelNames: ['version', 'node_version', 'host'],
      registers: [r],
    }).set({ version: src.version, node_version: process.version, host: src.hostName ?? '' }, 1);
  }

  /** Read the core's counters once, then render every metric. */
  async render(): Promise<string> {
    const core = this.src.core;
    const names = core.counterNames();
    const values = core.readCounters();
    this.latest = new Map(names.map((n, i) => [n, Number(values[i])]));
    this.workerPackets = Array.from(core.workerPackets(), Number);
    const perVsid = core.readVsidCounters();
    this.latestVsid = new Map();
    for (let i = 0; i + VSID_STRIDE <= perVsid.length; i += VSID_STRIDE) {
      this.latestVsid.set(Number(perVsid[i]), Array.from(perVsid.subarray(i + 1, i + VSID_STRIDE), Number));
    }
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Parse `host:port` / `[v6]:port`. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(listen);
  if (!m) throw new Error(`bad listen address ${listen}`);
  return { host: m[1]!, port: Number(m[2]) };
}

/** Serve /metrics; resolves once listening. */
export async function serveMetrics(metrics: Metrics, listen: string): Promise<Server> {
  const { host, port } = parseListen(listen);
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    metrics.render().then(
      (body) => res.writeHead(200, { 'content-type': metrics.contentType }).end(body),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
