// A validated, normalized host policy: exactly the config file's shapes
// (snake_case, see shared/spec/config.md), with every optional default filled
// in. The control API's JSON and `nvgrectl -j` use the same shapes.
//
// Normal forms (produced by src/config):
// - IP addresses: canonical text (IPv4 dotted decimal; IPv6 RFC 5952:
//   lowercase, zeros compressed).
// - Prefixes: `<canonical network address>/<length>`, no host bits.
// - MACs: lowercase, colon-separated (`60:00:60:00:01:01`).
// - Routing domains: lowercase GUID in braces
//   (`{12345678-1000-2000-3000-123456780001}`).
// Optional fields without a default (`vm_name`, `netns`, `mtu`, `mode`,
// `socket`, `socket_mode`, `host.name`, `state_dir`, `policy_store`, `uplink`,
// `nat`) are absent, not undefined-valued, when not given.

export const VSID_MIN = 4096;
export const VSID_MAX = 16777214;

export const DEFAULT_API_SOCKET = '/run/nvgred/nvgred.sock';
export const DEFAULT_METRICS_LISTEN = '127.0.0.1:9470';
export const DEFAULT_PER_VSID = true;
/** Enough for a host's tenants; a cap so 10,000 of them cannot explode the series count. */
export const DEFAULT_PER_VSID_MAX = 256;
export const PER_VSID_MAX_LIMIT = 65536;

export function defaultMetrics(): MetricsSection {
  return { listen: DEFAULT_METRICS_LISTEN, per_vsid: DEFAULT_PER_VSID, per_vsid_max: DEFAULT_PER_VSID_MAX };
}

/** Learned (Dynamic) lookup records a VSID may hold (packet flow 4): a VM claiming addresses cannot exhaust memory. */
export const DEFAULT_LEARNING_MAX_PER_VSID = 1024;
/** 0 turns learning off (every new address is refused); the upper bound keeps one VSID's share sane. */
export const LEARNING_MAX_PER_VSID_LIMIT = 1048576;
/** A learned record not refreshed for this long is removed. */
export const DEFAULT_LEARNING_TTL_SECONDS = 300;
export const LEARNING_TTL_SECONDS_MIN = 1;
/** One week. */
export const LEARNING_TTL_SECONDS_MAX = 604800;

export function defaultLearning(): LearningSection {
  return { max_per_vsid: DEFAULT_LEARNING_MAX_PER_VSID, ttl_seconds: DEFAULT_LEARNING_TTL_SECONDS };
}
export const DEFAULT_FLOW_ID: FlowIdMode = 'hash';

/** Linux IFNAMSIZ - 1. */
export const IFNAME_MAX_BYTES = 15;
export const HOST_NAME_MAX = 64;

export const LOOKUP_RULES = ['encap', 'none'] as const;
export const LOOKUP_TYPES = ['static', 'dynamic', 'l2only', 'gateway_wildcard'] as const;
export const FLOW_ID_MODES = ['hash', 'zero'] as const;
/** A VM adapter's device: a TAP nvgred creates, an interface it adopts, a vhost-user virtio-net device it serves. */
export const ADAPTER_MODES = ['tap', 'attach', 'vhost_user'] as const;
/** vhost-user: nvgred connects to QEMU's socket (and reconnects), or listens on it. */
export const SOCKET_MODES = ['client', 'server'] as const;

export type LookupRule = (typeof LOOKUP_RULES)[number];
export type LookupType = (typeof LOOKUP_TYPES)[number];
export type FlowIdMode = (typeof FLOW_ID_MODES)[number];
export type AdapterMode = (typeof ADAPTER_MODES)[number];
export type SocketMode = (typeof SOCKET_MODES)[number];

export interface HostSection {
  name?: string;
}

/** New-NetVirtualizationProviderAddress */
export interface ProviderAddress {
  address: string;
  prefix_length: number;
  interface: string;
  /** 0 (untagged) only, for now: the config refuses others. */
  vlan_id: number;
}

/** New-NetVirtualizationProviderRoute. `next_hop` 0.0.0.0 / :: = on-link. */
export interface ProviderRoute {
  destination_prefix: string;
  next_hop: string;
  interface: string;
  metric: number;
}

/** New-NetVirtualizationCustomerRoute. `next_hop` 0.0.0.0 / :: = on-link. */
export interface CustomerRoute {
  routing_domain: string;
  vsid: number;
  destination_prefix: string;
  next_hop: string;
  metric: number;
}

/** New-NetVirtualizationLookupRecord */
export interface LookupRecord {
  customer_address: string;
  vsid: number;
  mac: string;
  provider_address: string;
  rule: LookupRule;
  type: LookupType;
  vm_name?: string;
}

/** A VM network adapter: a TAP nvgred creates (mode tap), an interface it adopts (attach), or a vhost-user device it serves. */
export interface VmAdapter {
  name: string;
  /** Absent: tap. */
  mode?: AdapterMode;
  vm_name?: string;
  mac: string;
  vsid: number;
  /** tap only: the namespace the TAP is moved to. */
  netns?: string;
  /** tap: absent, the daemon derives it from the underlay MTU; attach: absent, the interface keeps its own. */
  mtu?: number;
  /** vhost_user only: the vhost-user socket's path. */
  socket?: string;
  /** vhost_user only; absent: client. */
  socket_mode?: SocketMode;
}

export interface EncapsulationSection {
  flow_id: FlowIdMode;
}

/** Dynamic lookup records learned from ARP (packet flow 4). */
export interface LearningSection {
  /** Learned records per VSID at most; a new address beyond it is refused (reason "limit"). */
  max_per_vsid: number;
  /** A learned record not refreshed by the packet core for this long expires. */
  ttl_seconds: number;
}

export interface ApiSection {
  socket: string;
}

export interface MetricsSection {
  listen: string;
  /** Per-VSID encap/decap series (the `vsid` label), for up to `per_vsid_max` VSIDs. */
  per_vsid: boolean;
  per_vsid_max: number;
}

/** The etcd store the fleet's policy lives in (fleet.md). */
export interface PolicyStoreSection {
  etcd: {
    /** http://host:port of each member (etcd's JSON gateway). */
    endpoints: string[];
    /** Keys live under `<prefix>/v1/`. */
    prefix: string;
  };
}

export const DEFAULT_POLICY_STORE_PREFIX = '/nvgred';

/** The HNV gateway's external network (hnv-gateway.md): plain IPv4, no encapsulation. */
export interface UplinkSection {
  interface: string;
  /** `address/prefix_length`: addresses nvgred owns there (answers ARP for, sends from); not assigned to the kernel. */
  addresses: string[];
  /** The next hop of every external destination. */
  gateway: string;
}

export const NAT_PROTOCOLS = ['tcp', 'udp'] as const;
export type NatProtocol = (typeof NAT_PROTOCOLS)[number];
export const DEFAULT_NAT_PORT_START = 1024;
export const DEFAULT_NAT_PORT_END = 65535;

/** Add-NetNatStaticMapping */
export interface NatStaticMapping {
  protocol: NatProtocol;
  external_port: number;
  internal_address: string;
  internal_port: number;
}

/** New-NetNat: the NAT of one routing domain. */
export interface Nat {
  name: string;
  routing_domain: string;
  /** The subnet the NAT's inside address lives in. */
  vsid: number;
  internal_address: string;
  mac: string;
  external_address: string;
  port_start: number;
  port_end: number;
  static_mappings: NatStaticMapping[];
}

export interface Policy {
  host: HostSection;
  provider_addresses: ProviderAddress[];
  provider_routes: ProviderRoute[];
  customer_routes: CustomerRoute[];
  lookup_records: LookupRecord[];
  vm_adapters: VmAdapter[];
  encapsulation: EncapsulationSection;
  learning: LearningSection;
  state_dir?: string;
  api: ApiSection;
  metrics: MetricsSection;
  /** Absent: this host's policy is its file's alone. */
  policy_store?: PolicyStoreSection;
  /** Absent: not a gateway host. */
  uplink?: UplinkSection;
  /** Absent when empty. */
  nat?: Nat[];
}

/** The policy of an empty config file. */
export function emptyPolicy(): Policy {
  return {
    host: {},
    provider_addresses: [],
    provider_routes: [],
    customer_routes: [],
    lookup_records: [],
    vm_adapters: [],
    encapsulation: { flow_id: DEFAULT_FLOW_ID },
    learning: defaultLearning(),
    api: { socket: DEFAULT_API_SOCKET },
    metrics: defaultMetrics(),
  };
}

/** A route's next hop 0.0.0.0 or :: means on-link (no gateway). */
export function isOnLink(nextHop: string): boolean {
  return nextHop === '0.0.0.0' || nextHop === '::';
}

/** A validated `addr/len` prefix as its two parts. */
export function splitPrefix(prefix: string): [address: string, length: number] {
  const slash = prefix.lastIndexOf('/');
  return [prefix.slice(0, slash), Number(prefix.slice(slash + 1))];
}
