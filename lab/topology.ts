// The reference topology of shared/spec/hnv-dataplane.md ("simple setup"),
// plus a second tenant (Fabrikam) that reuses Contoso's addresses, built in
// network namespaces. See lab/README.md for the plan.
//
//   underlay ns: bridge br0 ── to-host1 ═ host1:eth1   (PA 192.168.0.22/24, set by nvgred)
//                          ── to-host2 ═ host2:eth1   (PA 192.168.0.33/24)
//                          ── to-gwhost ═ gwhost:eth1 (PA 192.168.0.11/24)
//   host1 nvgred → TAPs contoso1, contoso2, fabrikam1, fabrikam2 (each in its VM ns)
//   host2 nvgred → TAPs contoso3, fabrikam3
//   gwhost nvgred → TAP mtgw (in ns mtgw); mtgw:ext0 10.1.3.2/24 ═ server:eth0 10.1.3.100/24
//
// Variants (LabVariant, for the integration tests; `make lab` runs the
// reference): dual stack (every VM also has an IPv6 CA, the configs carry the
// IPv6 customer routes and lookup records), an IPv6 underlay (the PAs are
// fd00:192:168::x/64: IPv4 and IPv6 CAs both ride outer IPv6), and VM
// adapters with a given MTU. writeVariantConfigs() derives each host's config
// from the reference one; the reference files are never changed.
// fleetConfigs() splits those configs for a policy store (fleet.md): `make
// lab` runs the hosts from host-local files and etcd.

import { existsSync, mkdirSync, rmSync, rmdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseDocument, parse as parseYaml, stringify as stringifyYaml, isMap, isSeq, type Document } from 'yaml';

import {
  DEFAULT_PREFIX,
  Lab,
  type LabProcess,
  type StopResult,
  ipv4Addrs,
  ipv6Addrs,
  linkExists,
  listLinks,
  nsExec,
  repoRoot,
  waitFor,
} from './netns.js';
import { native } from '../src/native.js';
import { keyRoot, recordKey } from '../src/fleet/view.js';
import { resourceBySection, type AnyRecord, type Section } from '../src/model/resources.js';

// ---------------------------------------------------------------------------
// The plan

export type HostName = 'host1' | 'host2' | 'gwhost';
export const HOSTS: readonly HostName[] = ['host1', 'host2', 'gwhost'];

export const UNDERLAY_NS = 'underlay';
export const UNDERLAY_BRIDGE = 'br0';
/** The underlay interface in each host namespace (no address until nvgred assigns the PA). */
export const UNDERLAY_IF = 'eth1';
/** Bridge port (in the underlay namespace) of each host's eth1. */
export const underlayPort = (host: HostName): string => `to-${host}`;

export const PROVIDER_ADDRESSES: Readonly<Record<HostName, { address: string; prefixLength: number }>> = {
  host1: { address: '192.168.0.22', prefixLength: 24 },
  host2: { address: '192.168.0.33', prefixLength: 24 },
  gwhost: { address: '192.168.0.11', prefixLength: 24 },
};

export const ROUTING_DOMAINS = {
  contoso: '{12345678-1000-2000-3000-123456780001}',
  fabrikam: '{12345678-1000-2000-3000-123456780002}',
} as const;
export type Tenant = keyof typeof ROUTING_DOMAINS;

export interface CustomerRouteSpec {
  tenant: Tenant;
  vsid: number;
  prefix: string;
  nextHop: string;
}

/** The customer routes every host carries. */
export const CUSTOMER_ROUTES: readonly CustomerRouteSpec[] = [
  { tenant: 'contoso', vsid: 6000, prefix: '10.0.1.0/24', nextHop: '0.0.0.0' },
  { tenant: 'contoso', vsid: 6001, prefix: '10.0.2.0/24', nextHop: '0.0.0.0' },
  { tenant: 'contoso', vsid: 6001, prefix: '0.0.0.0/0', nextHop: '10.0.2.2' },
  { tenant: 'fabrikam', vsid: 7000, prefix: '10.0.1.0/24', nextHop: '0.0.0.0' },
];

export interface VmSpec {
  /** Namespace role (full name: prefix + role) and TAP name. */
  role: string;
  tap: string;
  vmName: string;
  host: HostName;
  tenant: Tenant;
  vsid: number;
  ip: string;
  prefixLength: number;
  mac: string;
  /** The subnet's `.1`, answered by the host. */
  gateway: string;
}

export const VMS: readonly VmSpec[] = [
  vmSpec('contoso1', 'Contoso1', 'host1', 'contoso', 6000, '10.0.1.101', '60:00:60:00:01:01', '10.0.1.1'),
  vmSpec('contoso2', 'Contoso2', 'host1', 'contoso', 6000, '10.0.1.102', '60:00:60:00:01:02', '10.0.1.1'),
  vmSpec('contoso3', 'Contoso3', 'host2', 'contoso', 6000, '10.0.1.103', '60:00:60:00:02:03', '10.0.1.1'),
  vmSpec('mtgw', 'MT-GW', 'gwhost', 'contoso', 6001, '10.0.2.2', '60:01:60:01:03:01', '10.0.2.1'),
  vmSpec('fabrikam1', 'Fabrikam1', 'host1', 'fabrikam', 7000, '10.0.1.101', '70:00:70:00:01:01', '10.0.1.1'),
  vmSpec('fabrikam2', 'Fabrikam2', 'host1', 'fabrikam', 7000, '10.0.1.102', '70:00:70:00:01:02', '10.0.1.1'),
  vmSpec('fabrikam3', 'Fabrikam3', 'host2', 'fabrikam', 7000, '10.0.1.103', '70:00:70:00:02:03', '10.0.1.1'),
];

function vmSpec(role: string, vmName: string, host: HostName, tenant: Tenant, vsid: number, ip: string, mac: string, gateway: string): VmSpec {
  return { role, tap: role, vmName, host, tenant, vsid, ip, prefixLength: 24, mac, gateway };
}

export function vm(role: string): VmSpec {
  const v = VMS.find((x) => x.role === role);
  if (!v) throw new Error(`no VM ${role}`);
  return v;
}

/**
 * The lab's QEMU guests (lab/vm/): real VMs on the adapter modes other than
 * a created TAP. Each is a Contoso VM with a lookup record on every host,
 * like the namespace VMs; its QEMU runs in its host's namespace. `attach`:
 * QEMU makes the TAP `adapter` there and nvgred adopts it; `vhost_user`:
 * QEMU serves the vhost-user socket (`server=on`) and nvgred connects.
 * Only the variant `qemuVms` puts them in the configs (`make lab` does).
 */
export interface QemuVmSpec {
  /** The QEMU guest's name (its files, its hostname). */
  name: string;
  vmName: string;
  /** vm_adapters[].name: the TAP's name too, for attach. */
  adapter: string;
  mode: 'attach' | 'vhost_user';
  host: HostName;
  tenant: Tenant;
  vsid: number;
  ip: string;
  prefixLength: number;
  mac: string;
  gateway: string;
}

export const QEMU_VMS: readonly QemuVmSpec[] = [
  { name: 'qemu1', vmName: 'ContosoQ1', adapter: 'qemu1', mode: 'attach', host: 'host1', tenant: 'contoso', vsid: 6000, ip: '10.0.1.111', prefixLength: 24, mac: '60:00:60:00:01:11', gateway: '10.0.1.1' },
  { name: 'qemu2', vmName: 'ContosoQ2', adapter: 'qemu2', mode: 'vhost_user', host: 'host2', tenant: 'contoso', vsid: 6000, ip: '10.0.1.112', prefixLength: 24, mac: '60:00:60:00:02:12', gateway: '10.0.1.1' },
];

export function qemuVm(name: string): QemuVmSpec {
  const v = QEMU_VMS.find((x) => x.name === name);
  if (!v) throw new Error(`no QEMU VM ${name}`);
  return v;
}

/** A vhost-user guest's socket, in `dir` (the lab's VM directory, lab/vm/qemu.ts vmRunDir()). */
export function vhostSocket(dir: string, v: QemuVmSpec): string {
  return join(dir, `${v.adapter}.vhost.sock`);
}

/** Each host's own `.1` lookup record (local PA, MAC_DFGW). The gateway host has none. */
export const GATEWAY_RECORDS: Readonly<Partial<Record<HostName, { ip: string; vsid: number; mac: string }>>> = {
  host1: { ip: '10.0.1.1', vsid: 6000, mac: '60:00:60:00:01:00' },
  host2: { ip: '10.0.1.1', vsid: 6000, mac: '60:00:60:00:02:00' },
};

/**
 * The VM `make lab` places on a host through the store and migrates to
 * another (fleet.md: one transaction): a namespace VM whose NIC (`ifname`)
 * is one end of a veth; the other end, `adapter`, is in its host's
 * namespace and adopted by nvgred (mode `attach`), as a hypervisor's tap
 * would be. The lab, as the hypervisor, moves the VM by moving that end
 * into the new host's namespace: the VM keeps its NIC and addresses.
 */
export const MIGRANT = {
  role: 'contoso4',
  vmName: 'Contoso4',
  adapter: 'contoso4',
  ifname: 'eth0',
  from: 'host2' as HostName,
  to: 'host1' as HostName,
  tenant: 'contoso' as Tenant,
  vsid: 6000,
  ip: '10.0.1.104',
  prefixLength: 24,
  mac: '60:00:60:00:02:04',
  gateway: '10.0.1.1',
} as const;

/** MT-GW's external NIC and the physical server behind it. */
export const MTGW_EXTERNAL = { role: 'mtgw', ifname: 'ext0', ip: '10.1.3.2', prefixLength: 24 } as const;
export const SERVER = {
  role: 'server',
  ifname: 'eth0',
  ip: '10.1.3.100',
  prefixLength: 24,
  route: { dst: '10.0.0.0/8', via: '10.1.3.2' },
} as const;

/** Namespace roles in creation order (teardown deletes them in reverse). */
export const NAMESPACE_ROLES: readonly string[] = [UNDERLAY_NS, ...HOSTS, ...VMS.map((v) => v.role), SERVER.role];

/** The VSIDs the lab's policy uses. */
export const LAB_VSIDS: readonly number[] = [...new Set(CUSTOMER_ROUTES.map((r) => r.vsid))];

// ---------------------------------------------------------------------------
// The IPv6 side of the plan (variants only)

/** The PAs of the IPv6-underlay variant, on the same eth1s. */
export const PROVIDER_ADDRESSES_V6: Readonly<Record<HostName, { address: string; prefixLength: number }>> = {
  host1: { address: 'fd00:192:168::22', prefixLength: 64 },
  host2: { address: 'fd00:192:168::33', prefixLength: 64 },
  gwhost: { address: 'fd00:192:168::11', prefixLength: 64 },
};

/** The IPv6 customer routes the dual-stack variant adds (mirroring the IPv4 ones). */
export const CUSTOMER_ROUTES_V6: readonly CustomerRouteSpec[] = [
  { tenant: 'contoso', vsid: 6000, prefix: 'fd00:1::/64', nextHop: '::' },
  { tenant: 'contoso', vsid: 6001, prefix: 'fd00:2::/64', nextHop: '::' },
  { tenant: 'contoso', vsid: 6001, prefix: '::/0', nextHop: 'fd00:2::2' },
  { tenant: 'fabrikam', vsid: 7000, prefix: 'fd00:1::/64', nextHop: '::' },
];

export interface VmV6Spec {
  ip: string;
  prefixLength: number;
  /** The subnet's first address + 1, answered by the host. */
  gateway: string;
}

/** Each VM's IPv6 CA in the dual-stack variant (Fabrikam reuses Contoso's, as in IPv4). */
export const VM_IPV6: Readonly<Record<string, VmV6Spec>> = {
  contoso1: { ip: 'fd00:1::101', prefixLength: 64, gateway: 'fd00:1::1' },
  contoso2: { ip: 'fd00:1::102', prefixLength: 64, gateway: 'fd00:1::1' },
  contoso3: { ip: 'fd00:1::103', prefixLength: 64, gateway: 'fd00:1::1' },
  mtgw: { ip: 'fd00:2::2', prefixLength: 64, gateway: 'fd00:2::1' },
  fabrikam1: { ip: 'fd00:1::101', prefixLength: 64, gateway: 'fd00:1::1' },
  fabrikam2: { ip: 'fd00:1::102', prefixLength: 64, gateway: 'fd00:1::1' },
  fabrikam3: { ip: 'fd00:1::103', prefixLength: 64, gateway: 'fd00:1::1' },
};

export function vmV6(role: string): VmV6Spec {
  const v = VM_IPV6[role];
  if (!v) throw new Error(`no IPv6 CA for VM ${role}`);
  return v;
}

/** Each host's own IPv6 gateway record (fd00:1::1, the same MAC_DFGW as its 10.0.1.1 record). */
export const GATEWAY_RECORDS_V6: Readonly<Partial<Record<HostName, { ip: string; vsid: number; mac: string }>>> = {
  host1: { ip: 'fd00:1::1', vsid: 6000, mac: '60:00:60:00:01:00' },
  host2: { ip: 'fd00:1::1', vsid: 6000, mac: '60:00:60:00:02:00' },
};

/** MT-GW's external NIC and the server, IPv6 side (dual stack). */
export const MTGW_EXTERNAL_V6 = { ip: 'fd00:3::2', prefixLength: 64 } as const;
export const SERVER_V6 = { ip: 'fd00:3::100', prefixLength: 64, route: { dst: 'fd00::/16', via: 'fd00:3::2' } } as const;

/** What differs from the reference lab. */
export interface LabVariant {
  /** VMs get their IPv6 CA (VM_IPV6) too; the configs get CUSTOMER_ROUTES_V6 and the IPv6 records. */
  dualStack?: boolean;
  /** Provider addresses of this family (default ipv4: PROVIDER_ADDRESSES; ipv6: PROVIDER_ADDRESSES_V6). */
  underlay?: 'ipv4' | 'ipv6';
  /** `mtu` of every VM adapter (default: the daemon's, the underlay's less NVGRE's overhead). */
  vmMtu?: number;
  /**
   * This host's PA on this VLAN (`vlan_id`): the underlay switch's port to
   * it becomes a trunk port of the VLAN, the others' stay access ports
   * (untagged), so the tag is on that host's frames only.
   */
  vlan?: { host: HostName; id: number };
  /**
   * The QEMU guests (QEMU_VMS): their lookup records on every host, their
   * adapters on theirs, vhost-user sockets in `socketDir`.
   */
  qemuVms?: { socketDir: string };
}

/** A host's PA in a variant. */
export function paOf(host: HostName, variant: LabVariant = {}): string {
  return (variant.underlay === 'ipv6' ? PROVIDER_ADDRESSES_V6 : PROVIDER_ADDRESSES)[host].address;
}

// ---------------------------------------------------------------------------
// Paths

/** (Defined in netns.ts, which needs it too; re-exported for this module's importers.) */
export { repoRoot };

/** The repo's config file of a host (written for the default prefix). */
export function configPath(host: HostName): string {
  return join(repoRoot(), 'lab', 'configs', `${host}.yaml`);
}

export function defaultOutDir(): string {
  return join(repoRoot(), 'lab', 'out');
}

export function defaultDaemonArgv(): string[] {
  return [process.execPath, join(repoRoot(), 'dist', 'src', 'daemon', 'main.js')];
}

// ---------------------------------------------------------------------------
// Building

/**
 * Create every namespace and link of the plan, except the VM TAPs (nvgred
 * creates those). Host eth1s come up without addresses and, like NICs
 * without offloads, send only wire-sized packets with complete checksums
 * (`setUnderlayOffloads`): what the underlay capture shows is what a cable
 * would carry. IPv4 forwarding is
 * on in mtgw only. A variant with an IPv6 underlay turns IPv6 on for the
 * hosts' eth1s (quietly: no DAD, no RS); a dual-stack one gives MT-GW's
 * external side and the server their IPv6 addresses too (VMs get theirs in
 * configureVms()).
 */
export async function buildTopology(lab: Lab, variant: LabVariant = {}): Promise<void> {
  await lab.addNamespace(UNDERLAY_NS);
  for (const h of HOSTS) {
    await lab.addNamespace(h);
    await lab.veth(h, UNDERLAY_IF, UNDERLAY_NS, underlayPort(h));
    await setUnderlayOffloads(lab, h, 'off');
    if (variant.underlay === 'ipv6') await lab.enableIpv6(h, [UNDERLAY_IF]);
    await lab.up(h, UNDERLAY_IF);
  }
  await lab.bridge(UNDERLAY_NS, UNDERLAY_BRIDGE, HOSTS.map(underlayPort));
  // A Linux bridge with VLAN filtering would do this; these kernels have none.
  if (variant.vlan) native().trunkPort(lab.ns(UNDERLAY_NS), underlayPort(variant.vlan.host), variant.vlan.id);
  for (const v of VMS) await lab.addNamespace(v.role);
  await lab.addNamespace(SERVER.role);

  // MT-GW's external side and the physical server.
  await lab.veth(MTGW_EXTERNAL.role, MTGW_EXTERNAL.ifname, SERVER.role, SERVER.ifname);
  await lab.addr(MTGW_EXTERNAL.role, MTGW_EXTERNAL.ifname, `${MTGW_EXTERNAL.ip}/${MTGW_EXTERNAL.prefixLength}`);
  await lab.up(MTGW_EXTERNAL.role, MTGW_EXTERNAL.ifname);
  await lab.addr(SERVER.role, SERVER.ifname, `${SERVER.ip}/${SERVER.prefixLength}`);
  await lab.up(SERVER.role, SERVER.ifname);
  await lab.route(SERVER.role, SERVER.route.dst, { via: SERVER.route.via });
  await lab.sysctl(MTGW_EXTERNAL.role, 'net.ipv4.ip_forward', 1);
  // Asymmetric paths are normal for a gateway: no reverse-path filtering.
  await lab.sysctl(MTGW_EXTERNAL.role, 'net.ipv4.conf.all.rp_filter', 0);
  await lab.sysctl(MTGW_EXTERNAL.role, 'net.ipv4.conf.default.rp_filter', 0);
  if (variant.dualStack) {
    await lab.enableIpv6(MTGW_EXTERNAL.role, [MTGW_EXTERNAL.ifname]);
    await lab.enableIpv6(SERVER.role, [SERVER.ifname]);
    await lab.exec(['ip', '-n', lab.ns(MTGW_EXTERNAL.role), '-6', 'addr', 'add', `${MTGW_EXTERNAL_V6.ip}/${MTGW_EXTERNAL_V6.prefixLength}`, 'dev', MTGW_EXTERNAL.ifname, 'nodad']);
    await lab.exec(['ip', '-n', lab.ns(SERVER.role), '-6', 'addr', 'add', `${SERVER_V6.ip}/${SERVER_V6.prefixLength}`, 'dev', SERVER.ifname, 'nodad']);
    await lab.route(SERVER.role, SERVER_V6.route.dst, { via: SERVER_V6.route.via });
    await lab.sysctl(MTGW_EXTERNAL.role, 'net.ipv6.conf.all.forwarding', 1);
  }
}

export interface ConfigureVmsOptions {
  /** Only these VMs (roles). Default: all. */
  vms?: readonly string[];
  /** Also give each VM its IPv6 CA (VM_IPV6, no DAD) and a default IPv6 route via its gateway. Default: IPv6 off on the TAPs. */
  dualStack?: boolean;
  /** How long to wait for each TAP to show up in its namespace. Default 10 s. */
  tapTimeoutMs?: number;
}

/**
 * Once the daemons are ready: wait for each VM's TAP in its namespace, give
 * it the VM's address/24, bring it up, and route everything via the
 * subnet's .1. Returns notes (e.g. a TAP whose MAC was not the VM's and was
 * corrected).
 */
export async function configureVms(lab: Lab, opts: ConfigureVmsOptions = {}): Promise<string[]> {
  const notes: string[] = [];
  const targets = VMS.filter((v) => !opts.vms || opts.vms.includes(v.role));
  await Promise.all(
    targets.map(async (v) => {
      const note = await configureVm(lab, { ...v, ns: v.role, v6: opts.dualStack ? vmV6(v.role) : undefined, tapTimeoutMs: opts.tapTimeoutMs });
      if (note) notes.push(note);
    }),
  );
  return notes;
}

export interface VmAddressing {
  /** The VM's namespace (role or full name). */
  ns: string;
  tap: string;
  /** The daemon that makes the TAP, for the timeout message. */
  host: HostName;
  mac: string;
  ip: string;
  prefixLength: number;
  gateway: string;
  /** An IPv6 CA too; without it IPv6 is off on the TAP. */
  v6?: VmV6Spec | undefined;
  /** Default 10 s. */
  tapTimeoutMs?: number | undefined;
}

/**
 * One VM on the TAP nvgred made for it (configureVms() does every VM of the
 * plan with it; the soak adds and removes adapters of its own): wait for the
 * TAP, give it the VM's MAC if it differs (the note returned), its
 * address(es), up, default route via the gateway.
 */
export async function configureVm(lab: Lab, v: VmAddressing): Promise<string | undefined> {
  const ns = lab.ns(v.ns);
  let note: string | undefined;
  await waitFor(() => linkExists(ns, v.tap), v.tapTimeoutMs ?? 10_000, {
    what: `TAP ${v.tap} in ${ns} (created by nvgred on ${v.host})`,
    intervalMs: 200,
  });
  const link = (await listLinks(ns)).find((l) => l.ifname === v.tap);
  if (link?.address && link.address.toLowerCase() !== v.mac) {
    note = `${ns}:${v.tap} had MAC ${link.address}, not the VM's ${v.mac}: set it`;
    await lab.nsExec(ns, ['ip', 'link', 'set', 'dev', v.tap, 'address', v.mac]);
  }
  const v6 = v.v6;
  if (v6) await lab.enableIpv6(ns, [v.tap]);
  else await lab.nsExec(ns, ['sysctl', '-qw', `net.ipv6.conf.${v.tap}.disable_ipv6=1`], { check: false });
  await lab.addr(ns, v.tap, `${v.ip}/${v.prefixLength}`);
  if (v6) await lab.exec(['ip', '-n', ns, '-6', 'addr', 'add', `${v6.ip}/${v6.prefixLength}`, 'dev', v.tap, 'nodad']);
  await lab.up(ns, v.tap);
  await lab.route(ns, 'default', { via: v.gateway, dev: v.tap });
  if (v6) await lab.exec(['ip', '-n', ns, '-6', 'route', 'add', 'default', 'via', v6.gateway, 'dev', v.tap]);
  return note;
}

// ---------------------------------------------------------------------------
// Configs

type Obj = Record<string, unknown>;

/** Parse a config file into plain data (the `yaml` package). */
export function loadConfig(file: string): Obj {
  const data = parseYaml(readFileSync(file, 'utf8')) as unknown;
  if (!data || typeof data !== 'object' || Array.isArray(data)) throw new Error(`${file}: not a YAML mapping`);
  return data as Obj;
}

function prefixedPath(p: string, prefix: string, runDir: string | undefined): string {
  const base = prefix === DEFAULT_PREFIX ? basename(p) : `${prefix}${basename(p)}`;
  return join(runDir ?? dirname(p), base);
}

export interface MaterializeOptions {
  /** Put the API socket and state dir in this directory instead of their own. */
  runDir?: string;
}

/**
 * Rewrite a lab config for another namespace prefix and write it to
 * `outDir/<same file name>` (comments kept). `vm_adapters[].netns` values
 * starting with the default prefix get `prefix` instead; `api.socket` and
 * `state_dir` get the prefix on their base name (unchanged for the default
 * prefix) and move to `opts.runDir` if given. Returns the written path.
 */
export function materializeConfig(file: string, prefix: string, outDir: string, opts: MaterializeOptions = {}): string {
  const doc: Document = parseDocument(readFileSync(file, 'utf8'));
  if (doc.errors.length) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
  const adapters = doc.get('vm_adapters');
  if (isSeq(adapters)) {
    for (const item of adapters.items) {
      if (!isMap(item)) continue;
      const ns = item.get('netns');
      if (typeof ns === 'string' && ns.startsWith(DEFAULT_PREFIX)) item.set('netns', prefix + ns.slice(DEFAULT_PREFIX.length));
    }
  }
  const sock = doc.getIn(['api', 'socket']);
  if (typeof sock === 'string') doc.setIn(['api', 'socket'], prefixedPath(sock, prefix, opts.runDir));
  const state = doc.get('state_dir');
  if (typeof state === 'string') doc.set('state_dir', prefixedPath(state, prefix, opts.runDir));
  mkdirSync(outDir, { recursive: true });
  const out = join(outDir, basename(file));
  if (resolve(out) === resolve(file)) throw new Error(`materializeConfig would overwrite ${file}`);
  writeFileSync(out, doc.toString());
  return out;
}

export interface VariantConfigOptions extends MaterializeOptions {
  /** A last change to each host's (parsed) config before it is written, e.g. an extra record. */
  edit?: (host: HostName, cfg: Obj) => void;
}

/**
 * A host's config for a variant, derived from its reference config (already
 * parsed): with an IPv6 underlay, the PA becomes PROVIDER_ADDRESSES_V6's and
 * every lookup record names the IPv6 PA of its host; dual stack adds
 * CUSTOMER_ROUTES_V6, a record per VM's IPv6 CA (same MAC, same host) and the
 * host's IPv6 gateway record; a VLAN puts the host's PA on it; qemuVms
 * adds the QEMU guests' records and adapters; vmMtu sets every adapter's
 * `mtu`.
 */
export function variantConfig(host: HostName, cfg: Obj, variant: LabVariant): Obj {
  const out = structuredClone(cfg);
  const records = (out['lookup_records'] ??= []) as Obj[];
  if (variant.underlay === 'ipv6') {
    const pa = PROVIDER_ADDRESSES_V6[host];
    out['provider_addresses'] = [{ address: pa.address, prefix_length: pa.prefixLength, interface: UNDERLAY_IF }];
    out['provider_routes'] = [];
    const v6of = new Map(HOSTS.map((h) => [PROVIDER_ADDRESSES[h].address, PROVIDER_ADDRESSES_V6[h].address]));
    for (const r of records) {
      const mapped = v6of.get(String(r['provider_address']));
      if (!mapped) throw new Error(`${host}: lookup record ${String(r['customer_address'])} names PA ${String(r['provider_address'])}, not a lab host's`);
      r['provider_address'] = mapped;
    }
  }
  if (variant.dualStack) {
    const routes = (out['customer_routes'] ??= []) as Obj[];
    for (const r of CUSTOMER_ROUTES_V6) {
      routes.push({ routing_domain: ROUTING_DOMAINS[r.tenant], vsid: r.vsid, destination_prefix: r.prefix, next_hop: r.nextHop, metric: 0 });
    }
    for (const v of VMS) {
      records.push({
        customer_address: vmV6(v.role).ip,
        vsid: v.vsid,
        mac: v.mac,
        provider_address: paOf(v.host, variant),
        rule: 'encap',
        type: 'static',
        vm_name: v.vmName,
      });
    }
    const gw = GATEWAY_RECORDS_V6[host];
    if (gw) records.push({ customer_address: gw.ip, vsid: gw.vsid, mac: gw.mac, provider_address: paOf(host, variant), rule: 'encap', type: 'static' });
  }
  if (variant.qemuVms) {
    for (const v of QEMU_VMS) {
      records.push({ customer_address: v.ip, vsid: v.vsid, mac: v.mac, provider_address: paOf(v.host, variant), rule: 'encap', type: 'static', vm_name: v.vmName });
      if (v.host !== host) continue;
      const adapter: Obj = { name: v.adapter, vm_name: v.vmName, mode: v.mode, mac: v.mac, vsid: v.vsid };
      if (v.mode === 'vhost_user') adapter['socket'] = vhostSocket(variant.qemuVms.socketDir, v);
      ((out['vm_adapters'] ??= []) as Obj[]).push(adapter);
    }
  }
  if (variant.vlan?.host === host) {
    for (const pa of out['provider_addresses'] as Obj[]) pa['vlan_id'] = variant.vlan.id;
  }
  if (variant.vmMtu !== undefined) {
    // (A vhost-user guest's MTU is QEMU's host_mtu: nvgred refuses one.)
    for (const a of (out['vm_adapters'] ?? []) as Obj[]) if (a['mode'] !== 'vhost_user') a['mtu'] = variant.vmMtu;
  }
  return out;
}

/**
 * Write every host's config for a variant into `outDir` (materialized for
 * the lab's prefix, then variantConfig(), then `opts.edit`). Returns the
 * files, for startDaemons({ configs }).
 */
export function writeVariantConfigs(prefix: string, outDir: string, variant: LabVariant, opts: VariantConfigOptions = {}): Record<HostName, string> {
  const files = {} as Record<HostName, string>;
  const staging = join(outDir, '.reference');
  for (const host of HOSTS) {
    const ref = materializeConfig(configPath(host), prefix, staging, { runDir: opts.runDir });
    const cfg = variantConfig(host, loadConfig(ref), variant);
    opts.edit?.(host, cfg);
    const file = join(outDir, `${host}.yaml`);
    writeFileSync(file, `# ${host}: lab/configs/${host}.yaml for prefix ${prefix}, variant ${JSON.stringify(variant)}\n${stringifyYaml(cfg)}`);
    files[host] = file;
  }
  return files;
}

/** Where the fleet's policy lives (config.md `policy_store`). */
export interface FleetStore {
  endpoints: readonly string[];
  /** Default `/nvgred`. */
  prefix?: string;
}

export interface FleetConfigs {
  /** Each host's file: host-local settings only, and `policy_store`. */
  files: Record<HostName, string>;
  /** The store's keys (full) and values, from every host's policy. */
  keys: { key: string; value: string }[];
}

/** The policy sections whose records go to the store (fleet.md); every other setting stays in the host's file. */
const STORE_SECTIONS: readonly Section[] = ['customer_routes', 'lookup_records', 'vm_adapters'];

/**
 * Split each host's whole config (e.g. from writeVariantConfigs) into what
 * fleet.md keeps where: the file keeps host-local settings (host, PAs,
 * provider routes, api, metrics, state_dir, encapsulation...) and gets
 * `policy_store`; customer routes go to `customer_routes/`, lookup records
 * every host has alike to `lookup_records/`, the others (a host's own `.1`)
 * to `hosts/<host>/lookup_records/`, VM adapters to `hosts/<host>/vm_adapters/`.
 * Values are the records as nvgred's validator normalizes them. Customer
 * routes that differ between hosts are an error (the fleet has one set).
 */
export function fleetConfigs(configs: Record<HostName, string>, outDir: string, store: FleetStore): FleetConfigs {
  const root = keyRoot(store.prefix ?? '/nvgred');
  const parsed = HOSTS.map((h) => [h, loadConfig(configs[h])] as const);
  const records = (cfg: Obj, section: Section): AnyRecord[] => {
    const res = resourceBySection(section);
    return ((cfg[section] ?? []) as unknown[]).map((r) => res.validate(r, res.singular));
  };
  /** Per key: its value on each host that has it. */
  const byKey = new Map<string, Map<HostName, string>>();
  for (const [host, cfg] of parsed) {
    for (const section of STORE_SECTIONS) {
      for (const r of records(cfg, section)) {
        const key = section === 'vm_adapters' ? recordKey(section, r, host) : recordKey(section, r);
        if (!byKey.has(key)) byKey.set(key, new Map());
        byKey.get(key)!.set(host, JSON.stringify(r));
      }
    }
  }
  const keys: FleetConfigs['keys'] = [];
  for (const [key, values] of byKey) {
    const alike = values.size === HOSTS.length && new Set(values.values()).size === 1;
    // One value: the fleet's (alike on every host), or one host's VM adapter.
    if (alike || key.startsWith('hosts/')) {
      for (const value of new Set(values.values())) keys.push({ key: root + key, value });
      continue;
    }
    if (key.startsWith('customer_routes/')) throw new Error(`customer route ${key} differs between hosts (${[...values.keys()].join(', ')}): the fleet has one set`);
    for (const [host, value] of values) keys.push({ key: root + recordKey('lookup_records', JSON.parse(value) as AnyRecord, host), value });
  }
  mkdirSync(outDir, { recursive: true });
  const files = {} as Record<HostName, string>;
  for (const [host, cfg] of parsed) {
    const local: Obj = { ...cfg, policy_store: { etcd: { endpoints: [...store.endpoints], prefix: store.prefix ?? '/nvgred' } } };
    for (const section of STORE_SECTIONS) delete local[section];
    const file = join(outDir, `${host}.yaml`);
    writeFileSync(file, `# ${host}: host-local settings of ${configs[host]}; the rest is in the policy store under ${root}\n${stringifyYaml(local)}`);
    files[host] = file;
  }
  return { files, keys };
}

const normMac = (m: unknown): string => String(m).toLowerCase().replace(/[-:]/g, '').replace(/(..)(?!$)/g, '$1:');
const normRd = (r: unknown): string => {
  const s = String(r).toLowerCase();
  return s.startsWith('{') ? s : `{${s}}`;
};

/**
 * Compare a host's (parsed) config with the plan: PA, customer routes, every
 * VM's lookup record plus the host's own `.1` record, its VM adapters with
 * `netns` = prefix + VM, and api.socket / state_dir present. Returns the
 * differences ([] = consistent).
 */
export function checkConfigAgainstTopology(host: HostName, cfg: Obj, prefix: string = DEFAULT_PREFIX): string[] {
  const problems: string[] = [];
  const list = (k: string): Obj[] => {
    const v = cfg[k];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      problems.push(`${k} is not a list`);
      return [];
    }
    return v as Obj[];
  };
  const pa = PROVIDER_ADDRESSES[host];
  const pas = list('provider_addresses');
  if (pas.length !== 1 || pas[0]!['address'] !== pa.address || pas[0]!['prefix_length'] !== pa.prefixLength || pas[0]!['interface'] !== UNDERLAY_IF) {
    problems.push(`provider_addresses should be exactly ${pa.address}/${pa.prefixLength} on ${UNDERLAY_IF}`);
  }
  if (pas.some((p) => p['mac'] !== undefined)) problems.push('provider_addresses should carry no mac');

  const key = (r: Obj): string => `${normRd(r['routing_domain'])} ${r['vsid']} ${r['destination_prefix']} via ${r['next_hop'] ?? '0.0.0.0'}`;
  const want = new Set(CUSTOMER_ROUTES.map((r) => key({ routing_domain: ROUTING_DOMAINS[r.tenant], vsid: r.vsid, destination_prefix: r.prefix, next_hop: r.nextHop })));
  const have = new Set(list('customer_routes').map(key));
  for (const w of want) if (!have.has(w)) problems.push(`customer route missing: ${w}`);
  for (const h of have) if (!want.has(h)) problems.push(`unexpected customer route: ${h}`);

  const recKey = (ca: unknown, vsid: unknown, mac: unknown, paddr: unknown): string => `${ca} vsid ${vsid} ${normMac(mac)} -> ${paddr}`;
  const wantRecs = new Set(VMS.map((v) => recKey(v.ip, v.vsid, v.mac, PROVIDER_ADDRESSES[v.host].address)));
  const gw = GATEWAY_RECORDS[host];
  if (gw) wantRecs.add(recKey(gw.ip, gw.vsid, gw.mac, pa.address));
  const haveRecs = list('lookup_records');
  const haveRecKeys = new Set(haveRecs.map((r) => recKey(r['customer_address'], r['vsid'], r['mac'], r['provider_address'])));
  for (const w of wantRecs) if (!haveRecKeys.has(w)) problems.push(`lookup record missing: ${w}`);
  for (const h of haveRecKeys) if (!wantRecs.has(h)) problems.push(`unexpected lookup record: ${h}`);
  for (const r of haveRecs) {
    if ((r['rule'] ?? 'encap') !== 'encap' || (r['type'] ?? 'static') !== 'static') problems.push(`lookup record ${r['customer_address']}/${r['vsid']} should be encap/static`);
  }

  const adKey = (name: unknown, mac: unknown, vsid: unknown, netns: unknown): string => `${name} ${normMac(mac)} vsid ${vsid} netns ${netns}`;
  const wantAd = new Set(VMS.filter((v) => v.host === host).map((v) => adKey(v.tap, v.mac, v.vsid, prefix + v.role)));
  const haveAd = new Set(list('vm_adapters').map((a) => adKey(a['name'], a['mac'], a['vsid'], a['netns'])));
  for (const w of wantAd) if (!haveAd.has(w)) problems.push(`vm adapter missing: ${w}`);
  for (const h of haveAd) if (!wantAd.has(h)) problems.push(`unexpected vm adapter: ${h}`);

  const api = cfg['api'] as Obj | undefined;
  if (typeof api?.['socket'] !== 'string' || !isAbsolute(api['socket'])) problems.push('api.socket should be an absolute path');
  if (typeof cfg['state_dir'] !== 'string' || !isAbsolute(cfg['state_dir'])) problems.push('state_dir should be an absolute path');
  return problems;
}

export interface DaemonValidation {
  /** False when the daemon's validator is not built (dist/src/config/index.js). */
  available: boolean;
  /** Per file: the validator's complaint, or null when accepted. */
  results: { file: string; error: string | null }[];
}

/**
 * Run nvgred's own validator (`validatePolicy` of dist/src/config/index.js,
 * loaded at run time so the lab builds without it) on parsed config files.
 * A validator that throws, or returns `{ ok: false, ... }` / `{ errors: [...] }`,
 * rejects the file.
 */
export async function validateWithDaemon(files: string[]): Promise<DaemonValidation> {
  const mod = join(repoRoot(), 'dist', 'src', 'config', 'index.js');
  if (!existsSync(mod)) return { available: false, results: [] };
  const m = (await import(pathToFileURL(mod).href)) as { validatePolicy?: (x: unknown, opts?: { source?: string }) => unknown };
  if (typeof m.validatePolicy !== 'function') return { available: false, results: [] };
  const results: DaemonValidation['results'] = [];
  for (const file of files) {
    try {
      const r = (await m.validatePolicy(loadConfig(file), { source: file })) as Obj | undefined;
      const errs = r && typeof r === 'object' ? (r['errors'] ?? r['error']) : undefined;
      const bad = r && typeof r === 'object' && (r['ok'] === false || (Array.isArray(errs) && errs.length > 0));
      results.push({ file, error: bad ? JSON.stringify(errs ?? r) : null });
    } catch (e) {
      results.push({ file, error: e instanceof Error ? e.message : String(e) });
    }
  }
  return { available: true, results };
}

// ---------------------------------------------------------------------------
// Daemons

export interface StartDaemonsOptions {
  /** argv prefix of the daemon; `--config <file>` is appended. Default: node dist/src/daemon/main.js. */
  daemonArgv?: string[];
  /** Where `<host>.log` go. Default lab/out. */
  logDir?: string;
  /** Where configs materialized for a non-default prefix go. Default `<logDir>/configs`. */
  configDir?: string;
  /** Socket and state directory for a non-default prefix (see materializeConfig). */
  runDir?: string;
  hosts?: readonly HostName[];
  /** Use these config files as they are (e.g. from writeVariantConfigs) instead of the reference ones. */
  configs?: Partial<Record<HostName, string>>;
  /** Wait this long for `"msg":"ready"`. Default 30 s. */
  readyTimeoutMs?: number;
  /** Appended to every daemon's command line (e.g. `--workers 2`). */
  daemonArgs?: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** Keep the state dirs (a restart that must run what the daemon saved); default: removed first. */
  keepState?: boolean;
}

export interface Daemon {
  host: HostName;
  ns: string;
  proc: LabProcess;
  configFile: string;
  logFile: string;
  socket?: string;
  stateDir?: string;
}

/** A stdout line that is JSON with `"msg":"ready"`. */
export function isReadyLine(line: string): boolean {
  const t = line.trim();
  if (!t.startsWith('{')) return false;
  try {
    return (JSON.parse(t) as { msg?: unknown }).msg === 'ready';
  } catch {
    return false;
  }
}

function safeRemove(p: string): void {
  // Only absolute paths at least two levels deep (never '/', never '/run').
  if (!isAbsolute(p) || resolve(p).split('/').filter(Boolean).length < 2) throw new Error(`refusing to remove ${p}`);
  rmSync(p, { recursive: true, force: true });
}

/**
 * Start one nvgred per host namespace (`<daemonArgv> --config <file>`,
 * stdout+stderr to `<logDir>/<host>.log`) and wait, bounded, for each to
 * print its ready line. A daemon that exits first, or stays silent, fails
 * the call with its log tail (the others stay tracked by the lab, which
 * stops them at teardown). Stale sockets and state dirs named in the
 * configs are removed first and again at teardown.
 */
export async function startDaemons(lab: Lab, opts: StartDaemonsOptions = {}): Promise<Daemon[]> {
  const hosts = opts.hosts ?? HOSTS;
  const logDir = opts.logDir ?? defaultOutDir();
  const argvPrefix = opts.daemonArgv ?? defaultDaemonArgv();
  if (!opts.daemonArgv && !existsSync(argvPrefix[1]!)) {
    throw new Error(`daemon not built: ${argvPrefix[1]} is missing (run \`npm run build\`)`);
  }
  const materialize = lab.prefix !== DEFAULT_PREFIX || opts.runDir !== undefined;
  const daemons = await Promise.all(
    hosts.map(async (host): Promise<Daemon> => {
      const configFile = opts.configs?.[host]
        ? opts.configs[host]!
        : materialize
        ? materializeConfig(configPath(host), lab.prefix, opts.configDir ?? join(logDir, 'configs'), { runDir: opts.runDir })
        : configPath(host);
      const cfg = loadConfig(configFile);
      const socket = (cfg['api'] as Obj | undefined)?.['socket'] as string | undefined;
      const stateDir = cfg['state_dir'] as string | undefined;
      for (const p of [socket, stateDir]) {
        if (!p) continue;
        const dir = dirname(p);
        const made = !existsSync(dir);
        mkdirSync(dir, { recursive: true });
        if (p === socket || !opts.keepState) safeRemove(p); // state from an earlier run would change the policy
        lab.defer(`remove ${p}`, () => {
          safeRemove(p);
          if (made && existsSync(dir) && readdirSync(dir).length === 0) rmdirSync(dir);
        });
      }
      const logFile = join(logDir, `${host}.log`);
      const proc = await lab.spawn(host, [...argvPrefix, '--config', configFile, ...(opts.daemonArgs ?? [])], {
        logFile,
        env: opts.env,
        cwd: repoRoot(),
      });
      return { host, ns: lab.ns(host), proc, configFile, logFile, socket, stateDir };
    }),
  );
  const timeout = opts.readyTimeoutMs ?? 30_000;
  const ready = await Promise.allSettled(
    daemons.map((d) => d.proc.waitForLine(isReadyLine, timeout, { stream: 'stdout', what: '{"msg":"ready"} line on stdout' })),
  );
  const failed = ready
    .map((r, i) => (r.status === 'rejected' ? `nvgred on ${daemons[i]!.host} (log ${daemons[i]!.logFile}): ${(r.reason as Error).message}` : null))
    .filter((x): x is string => x !== null);
  if (failed.length) throw new Error(failed.join('\n'));
  return daemons;
}

export interface DaemonStop extends StopResult {
  host: HostName;
  /** Exited 0 on SIGTERM within the timeout. */
  ok: boolean;
}

/** SIGTERM every daemon (in parallel), SIGKILL after `timeoutMs` (default 10 s); ok = exit code 0 without SIGKILL. */
export async function stopDaemons(lab: Lab, daemons: readonly Daemon[], opts: { timeoutMs?: number } = {}): Promise<DaemonStop[]> {
  return Promise.all(
    daemons.map(async (d) => {
      const r = await lab.stop(d.proc, { signal: 'SIGTERM', timeoutMs: opts.timeoutMs ?? 10_000 });
      return { ...r, host: d.host, ok: r.code === 0 && !r.escalated };
    }),
  );
}

export interface SetUpLabOptions {
  variant?: LabVariant;
  /** Logs, configs (`configs/`), sockets and state (`run/`) go here. */
  outDir: string;
  /** Passed to writeVariantConfigs(). */
  edit?: VariantConfigOptions['edit'];
  readyTimeoutMs?: number;
  /** argv prefix of the daemons (e.g. node with V8 flags); default defaultDaemonArgv(). */
  daemonArgv?: string[];
  daemonArgs?: readonly string[];
  /** The daemons' environment. */
  env?: NodeJS.ProcessEnv;
}

export interface LabSetUp {
  daemons: Daemon[];
  configs: Record<HostName, string>;
}

/**
 * The whole lab of a variant in one call, for tests: remove what a crashed
 * run with this prefix left, build the topology, write the variant's configs,
 * start the three daemons and configure the VMs. Tear down with lab.teardown().
 */
export async function setUpLab(lab: Lab, opts: SetUpLabOptions): Promise<LabSetUp> {
  const variant = opts.variant ?? {};
  await Lab.cleanStale(lab.prefix);
  await buildTopology(lab, variant);
  const runDir = join(opts.outDir, 'run');
  const configs = writeVariantConfigs(lab.prefix, join(opts.outDir, 'configs'), variant, { runDir, ...(opts.edit ? { edit: opts.edit } : {}) });
  const daemons = await startDaemons(lab, {
    logDir: opts.outDir,
    configs,
    runDir,
    ...(opts.readyTimeoutMs ? { readyTimeoutMs: opts.readyTimeoutMs } : {}),
    ...(opts.daemonArgv ? { daemonArgv: opts.daemonArgv } : {}),
    ...(opts.daemonArgs ? { daemonArgs: opts.daemonArgs } : {}),
    ...(opts.env ? { env: opts.env } : {}),
  });
  await configureVms(lab, { dualStack: variant.dualStack ?? false });
  return { daemons, configs };
}

/** The interface a host's PA lives on in a variant: eth1, or the VLAN interface nvgred makes on it (`eth1.<id>`). */
export function paInterface(host: HostName, variant: LabVariant = {}): string {
  return variant.vlan?.host === host ? `${UNDERLAY_IF}.${variant.vlan.id}` : UNDERLAY_IF;
}

/** The PA addresses currently on a host's PA interface (e.g. `192.168.0.22/24`; `fd00:192:168::22/64` with `family` 6). */
export async function hostPaAddrs(lab: Lab, host: HostName, family: 4 | 6 = 4, variant: LabVariant = {}): Promise<string[]> {
  const ifname = paInterface(host, variant);
  return family === 4 ? ipv4Addrs(lab.ns(host), ifname) : ipv6Addrs(lab.ns(host), ifname);
}

/**
 * A host's eth1 as a NIC with (`on`) or without (`off`) transmit offloads.
 * Off: the kernel cuts nvgred's large NVGRE packets (see native/src/io/gso.rs)
 * into MTU-sized ones and completes their checksums before they leave, as
 * for a NIC without GRE segmentation offload. On (veth's default): they
 * cross whole, as a NIC with GRE segmentation offload would take them, and
 * with checksums left partial, as veth may. `checksum`: cut by the kernel,
 * their inner checksums left partial (only a virtual link does that).
 */
export async function setUnderlayOffloads(lab: Lab, host: HostName, state: 'on' | 'off' | 'checksum'): Promise<void> {
  const checksum = state === 'off' ? 'off' : 'on';
  const segmentation = state === 'on' ? 'on' : 'off';
  const features = ['tx', checksum, 'tso', segmentation, 'tx-gre-segmentation', segmentation, 'tx-gre-csum-segmentation', segmentation];
  await nsExec(lab.ns(host), ['ethtool', '-K', UNDERLAY_IF, ...features], { check: true });
}

/**
 * Make a host's eth1 merge what it receives (GRO), as NIC drivers do: veth
 * merges only in NAPI mode (GRO turned on, here threaded so that packets
 * queue up between polls) and only packets its peer could not have sent as
 * one (TSO off on the bridge port). NVGRE packets of one TCP flow then reach
 * nvgred merged into up to 64 KB.
 */
export async function enableUnderlayGro(lab: Lab, host: HostName): Promise<void> {
  await nsExec(lab.ns(host), ['sh', '-ec', `ethtool -K ${UNDERLAY_IF} gro off; ethtool -K ${UNDERLAY_IF} gro on; echo 1 > /sys/class/net/${UNDERLAY_IF}/threaded`], { check: true });
  await nsExec(lab.ns(UNDERLAY_NS), ['ethtool', '-K', underlayPort(host), 'tso', 'off', 'gso', 'off'], { check: true });
}
