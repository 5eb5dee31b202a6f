// The JavaScript face of the nvgred packet core (native/src/binding).
// Written by hand, like the FFI behind it; test/native.test.ts checks that the
// addon exports exactly these names. Every function throws an Error whose
// `code` is one of NVGRE_ERR_NATIVE_* on failure.

/** The crate version. */
export function version(): string;

/** Names of the slots of `readCounters()`, in order: totals, then `drop:<direction>:<reason>`. */
export function counterNames(): string[];

/** The closed set of drop reasons (the `reason` label of nvgre_dropped_packets_total). */
export function dropReasons(): string[];

/**
 * Open the underlay socket and start `workers` worker threads. Up to
 * `vsidCounters` VSIDs (first come) get their own counters. With
 * `kernelSegmentation` 1, large TCP segments from VMs leave whole for the
 * kernel (or a NIC) to cut, if this kernel can (tcx, CAP_BPF); 0: nvgred cuts
 * them. A worker keeps polling `pollMicros` after its last packet before it
 * sleeps. Returns who segments, e.g. `kernel (through nvgso0)` or
 * `userspace (reason)`. One dataplane per process.
 */
export function start(workers: number, vsidCounters: number, kernelSegmentation: 0 | 1, pollMicros: number): string;

/** Stop the workers, close every TAP (the devices disappear) and socket. Idempotent. */
export function stop(): void;

/**
 * Swap in a whole policy snapshot, encoded by src/model/snapshot.ts. Packets
 * are decided against the old snapshot or the new one, never a mix.
 */
export function setPolicy(encoded: Buffer): void;
/** The policy snapshot as the core decodes it (names as in native/src/dp/policy.rs); for tests. */
export function inspectPolicy(encoded: Buffer): InspectedPolicy;
export interface InspectedPolicy {
  flow_id: 'hash' | 'zero';
  default_gateway_mac: string;
  provider_addresses: Array<{ address: string; prefix_len: number; mtu: number; ifindex: number; vlan_id: number }>;
  /** `next_hop` absent: on-link. */
  customer_routes: Array<{ routing_domain: number; vsid: number; prefix: string; prefix_len: number; next_hop?: string; metric: number }>;
  lookup_records: Array<{ vsid: number; customer_address: string; mac: string; provider_address: string; rule: string; kind: string }>;
  ports: Array<{ id: number; vsid: number; mac: string }>;
}

/**
 * Apply a delta (lookup record changes, the customer routes if they
 * changed), encoded by src/model/snapshot.ts `encodeDelta`, to the running
 * snapshot, at a cost in proportion to the change; packets see the old
 * records or the new ones, never a mix. Returns false, changing nothing,
 * when only a full `setPolicy` is exact (see native/src/dp/delta.rs).
 */
export function applyDelta(encoded: Buffer): boolean;

/**
 * Add a VM adapter's device. Mode `tap`: create its TAP (IFF_TAP |
 * IFF_NO_PI), inside `netns` when given, with the adapter's MAC and MTU, and
 * bring it up. Mode `attach`: adopt the interface `name` of the daemon's
 * namespace (set it up, its MTU if given) now if it exists, else when it
 * appears; down while it is absent. Mode `vhost_user`: serve the VM's
 * virtio-net device on `socket` (`client`: connect to QEMU and reconnect;
 * `server`: listen); up once the guest's driver started its rings. Returns
 * the ifindex (0 without an interface).
 */
export function addPort(
  id: number,
  mode: 'tap' | 'attach' | 'vhost_user',
  name: string,
  netns: string | null,
  mac: string,
  mtu: number | null,
  socket?: string,
  socketMode?: 'client' | 'server',
): number;

/** Remove a port: its TAP disappears. */
export function removePort(id: number): void;

/** Every counter, summed over the workers, in `counterNames()` order: one bulk read. */
export function readCounters(): BigUint64Array;

/**
 * Per-VSID counters, summed over the workers: five values per VSID that has
 * a slot: vsid, encap packets, encap bytes, decap packets, decap bytes.
 */
export function readVsidCounters(): BigUint64Array;

/** Packets each worker read (VM adapters and underlay), one value per worker. */
export function workerPackets(): BigUint64Array;

/** One value per worker that keeps changing while that worker runs. */
export function heartbeats(): BigUint64Array;

/** Assign an address; returns 1 if added, 0 if it was already there. */
export function addAddress(ifname: string, address: string, prefixLength: number): number;

export function delAddress(ifname: string, address: string, prefixLength: number): void;

/** Add a route (nextHop null = on-link); returns 1 if added, 0 if it was already there. */
export function addRoute(prefix: string, prefixLength: number, nextHop: string | null, ifname: string, metric: number): number;

/**
 * The VLAN interface `name` for provider addresses on VLAN `vlanId` of
 * `parent` (a TAP nvgred serves: tagged on the parent, untagged through it),
 * made if it is not there (again if it failed); returns its ifindex.
 */
export function addVlan(parent: string, name: string, vlanId: number): number;

/** Remove a VLAN interface (its TAP disappears). */
export function delVlan(name: string): void;

/**
 * For the lab's underlay switch (not the daemon): frames leaving `ifname` of
 * network namespace `netns` get VLAN `vlanId`'s tag, frames arriving with it
 * lose it, for as long as this process lives: a trunk port among access
 * ports of the VLAN.
 */
export function trunkPort(netns: string, ifname: string, vlanId: number): void;

export function delRoute(prefix: string, prefixLength: number, nextHop: string | null, ifname: string, metric: number): void;

/** What the router does with a packet from VSID `vsid` to CA `destination`, on the running snapshot. */
export interface NativeNextHop {
  action: 'deliver' | 'encap' | 'gateway' | 'drop';
  /** A drop-reason name when action is 'drop'. */
  drop_reason?: string;
  /** The customer route taken: its VSID and prefix. */
  route_vsid?: number;
  route_prefix?: string;
  /** The CA looked up: the destination, or the route's next hop. */
  target?: string;
  /** The lookup record found: its VSID and MAC. */
  record_vsid?: number;
  mac?: string;
  /** For 'encap': the destination PA and the local PA it is sent from. */
  pa?: string;
  local_pa?: string;
}

export function nextHop(vsid: number, destination: string): NativeNextHop;

/**
 * Send one sd_notify(3) datagram (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, …) to
 * the socket `$NOTIFY_SOCKET` names (a path, or `@name` for an abstract socket).
 */
export function sdNotify(socketPath: string, message: string): void;

/** Who is at the other end of a connected Unix socket, as the kernel recorded it at connect(). */
export interface PeerCredentials {
  /** 0 when the peer is in a PID namespace this process cannot see into. */
  pid: number;
  uid: number;
  gid: number;
}

/**
 * The credentials (getsockopt SO_PEERCRED) of the peer of the connected Unix
 * socket `fd`. Throws NVGRE_ERR_NATIVE_SOCKET when `fd` is not one.
 */
export function peerCredentials(fd: number): PeerCredentials;

/** A rate-limited report of dropped packets: the first of a kind per source, then at most once a minute. */
export interface DropEvent {
  direction: 'from_vm' | 'from_underlay';
  reason: string;
  /** The outer source address, for packets from the underlay. */
  provider_address?: string;
  /** The VM port, for frames from a VM. */
  port?: number;
  /** Like drops not reported since the previous report of this kind. */
  suppressed: number;
}

/** Rare packet events reported since the last call (at most 10 per second per worker). */
export function drainEvents(): DropEvent[];

/** An address learned from an ARP reply that crossed hosts (packet flow 4): a candidate Dynamic lookup record. */
export interface LearnedAddress {
  vsid: number;
  customer_address: string;
  mac: string;
  provider_address: string;
}

/** Addresses learned since the last call (each at most every 10 s per worker, at most 100 a second). */
export function drainLearned(): LearnedAddress[];

/** A panic a worker recovered from: it dropped the batch that met it (counted as internal_error) and went on. */
export interface WorkerPanic {
  worker: number;
  /** What panicked and where in the source (a bug to report). */
  message: string;
  /** Panics at the same place not reported since the last report of it. */
  suppressed: number;
}

/** Panics since the last call (each place at most once a minute; at most 10 a second per worker). */
export function drainPanics(): WorkerPanic[];

/** Workers whose thread ended without being asked to: the dataplane is broken and the daemon must exit. */
export function deadWorkers(): Array<{ worker: number; message: string }>;

/** Each port's device: up, or down and why (e.g. its TAP was deleted under the daemon). */
export function portStates(): Array<{ id: number; ifindex: number; mtu?: number; up: boolean; error?: string }>;

/** A number that changes whenever the kernel's links, addresses or routes (of the daemon's namespace) did. */
export function kernelChanges(): number;

/** Adopt interface `name` as the HNV gateway's uplink (null: none). Refused with several workers. */
export function setUplink(name: string | null): void;

/** The uplink's device, or undefined without one. */
export function uplinkState(): { ifindex: number; up: boolean; error?: string } | undefined;

/**
 * Every live NAT mapping of every worker, 9 values each: NAT index (in the
 * policy's `nat` list), VSID, protocol (0 tcp, 1 udp, 2 icmp), inside
 * address (IPv4 as a number), inside port (ICMP: echo identifier), external
 * address, external port, seconds left, TCP established (1) or not.
 */
export function natMappings(): BigUint64Array;
