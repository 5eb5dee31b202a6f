// Text output without -j: one line per record, iproute2 style (the same
// keywords the commands take), plus the summaries of status, reload, flush
// and next-hop resolution. Every function tolerates missing fields: the
// daemon may be newer or older than this client.

import { RECORD_SPECS, type Section } from '../model/records.js';

type Rec = Record<string, unknown>;

function has(r: Rec, k: string): boolean {
  return r[k] !== undefined && r[k] !== null;
}

function s(v: unknown): string {
  return v === undefined || v === null ? '-' : String(v);
}

/** ` kw value` when the field is present. */
function opt(r: Rec, field: string, kw: string): string {
  return has(r, field) ? ` ${kw} ${s(r[field])}` : '';
}

/** `10.0.1.101 vsid 6000 mac 60:00:60:00:01:01 pa 192.168.0.22 rule encap type static vm Contoso1` */
export function formatLookupRecord(r: Rec): string {
  return (
    `${s(r.customer_address)} vsid ${s(r.vsid)} mac ${s(r.mac)} pa ${s(r.provider_address)}` +
    opt(r, 'rule', 'rule') +
    opt(r, 'type', 'type') +
    opt(r, 'vm_name', 'vm')
  );
}

/** `10.0.1.0/24 vsid 6000 rdid {…} via 0.0.0.0 metric 0` */
export function formatCustomerRoute(r: Rec): string {
  return `${s(r.destination_prefix)} vsid ${s(r.vsid)} rdid ${s(r.routing_domain)} via ${s(r.next_hop)}` + opt(r, 'metric', 'metric');
}

/** `192.168.0.22/24 dev eth1 vlan 0` */
export function formatProviderAddress(r: Rec): string {
  const len = has(r, 'prefix_length') ? `/${s(r.prefix_length)}` : '';
  return `${s(r.address)}${len} dev ${s(r.interface)}` + opt(r, 'vlan_id', 'vlan');
}

/** `192.168.1.0/24 via 192.168.0.1 dev eth1 metric 0` */
export function formatProviderRoute(r: Rec): string {
  return `${s(r.destination_prefix)} via ${s(r.next_hop)} dev ${s(r.interface)}` + opt(r, 'metric', 'metric');
}

/** `contoso1 mac 60:00:60:00:01:01 vsid 6000 netns nvlab-contoso1 mtu 1458 vm Contoso1` */
export function formatVmAdapter(r: Rec): string {
  return `${s(r.name)} mac ${s(r.mac)} vsid ${s(r.vsid)}` + opt(r, 'netns', 'netns') + opt(r, 'mtu', 'mtu') + opt(r, 'vm_name', 'vm');
}

export const RECORD_FORMATTERS: Readonly<Record<Section, (r: Rec) => string>> = {
  lookup_records: formatLookupRecord,
  customer_routes: formatCustomerRoute,
  provider_addresses: formatProviderAddress,
  provider_routes: formatProviderRoute,
  vm_adapters: formatVmAdapter,
};

/** `3 lookup records`, `1 VM adapter`. */
export function countNoun(n: number, section: Section): string {
  const spec = RECORD_SPECS.find((s) => s.section === section)!;
  return `${n} ${n === 1 ? spec.noun : spec.plural}`;
}

/**
 * Next-hop resolution, `ip route get` style:
 * `10.1.3.100 vsid 6000 via 10.0.2.2 vsid 6001 mac 60:01:60:01:03:01 pa 192.168.0.11 encap`,
 * `10.9.9.9 vsid 6000 drop no_route`.
 */
export function formatNextHop(nh: Rec): string {
  const parts = [s(nh.destination), 'vsid', s(nh.vsid)];
  const route = (nh.customer_route ?? null) as Rec | null;
  const lr = (nh.lookup_record ?? null) as Rec | null;
  if (route && typeof route.next_hop === 'string' && route.next_hop !== '0.0.0.0' && route.next_hop !== '::') {
    parts.push('via', route.next_hop);
  }
  const targetVsid = has(nh, 'encap_vsid') ? nh.encap_vsid : lr ? lr.vsid : undefined;
  if (targetVsid !== undefined && targetVsid !== null && String(targetVsid) !== String(nh.vsid)) parts.push('vsid', s(targetVsid));
  if (lr && has(lr, 'mac')) parts.push('mac', s(lr.mac));
  const pa = has(nh, 'provider_address') ? nh.provider_address : lr ? lr.provider_address : undefined;
  if (pa !== undefined && pa !== null) parts.push('pa', s(pa));
  parts.push(s(nh.action));
  if (nh.action === 'drop' || has(nh, 'drop_reason')) {
    if (has(nh, 'drop_reason')) parts.push(s(nh.drop_reason));
  }
  return parts.join(' ');
}

function duration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return s(sec);
  if (sec < 60) return `${Math.round(sec * 10) / 10}s`;
  let t = Math.floor(sec);
  const d = Math.floor(t / 86400);
  t -= d * 86400;
  const h = Math.floor(t / 3600);
  t -= h * 3600;
  const m = Math.floor(t / 60);
  t -= m * 60;
  return `${d ? `${d}d` : ''}${d || h ? `${h}h` : ''}${m}m${t}s`;
}

/** The status as a few readable lines. */
export function formatStatus(st: Rec): string {
  const lines: string[] = [];
  let head = `nvgred ${s(st.version)}`;
  if (has(st, 'host')) head += ` host ${s(st.host)}`;
  if (has(st, 'pid')) head += ` pid ${s(st.pid)}`;
  if (typeof st.uptime_seconds === 'number') head += ` up ${duration(st.uptime_seconds)}`;
  if (has(st, 'generation')) head += ` generation ${s(st.generation)}`;
  lines.push(head);
  const files: string[] = [];
  if (has(st, 'config_file')) files.push(`config ${s(st.config_file)}`);
  if (has(st, 'state_dir')) files.push(`state_dir ${s(st.state_dir)}`);
  if (files.length) lines.push(files.join(' '));
  if (typeof st.state_error === 'string') lines.push(`state NOT SAVED (changes are refused): ${st.state_error}`);
  const counts = st.counts as Rec | undefined;
  if (counts && typeof counts === 'object') {
    lines.push(`records: ${Object.entries(counts).map(([k, v]) => `${k} ${s(v)}`).join(', ')}`);
  }
  const lr = st.last_reload as Rec | null | undefined;
  if (lr && typeof lr === 'object') {
    const when = has(lr, 'timestamp') ? ` at ${s(lr.timestamp)}` : '';
    lines.push(lr.successful ? `last reload: ok${when}` : `last reload: FAILED${when}${has(lr, 'error') ? `: ${s(lr.error)}` : ''}`);
  } else if (lr === null) {
    lines.push('last reload: none');
  }
  const ports = st.ports;
  if (Array.isArray(ports)) {
    lines.push(`ports: ${ports.length}`);
    for (const p of ports as Rec[]) {
      let l = `  ${s(p.name)}` + opt(p, 'vsid', 'vsid') + opt(p, 'mac', 'mac') + opt(p, 'netns', 'netns');
      l += opt(p, 'ifindex', 'ifindex') + opt(p, 'mtu', 'mtu');
      if (typeof p.up === 'boolean') l += p.up ? ' up' : ' down';
      lines.push(l);
    }
  }
  return lines.join('\n');
}

/** The result of a reload / bulk apply: what changed per section, and what needs a restart. */
export function formatApplyResult(r: Rec): string {
  const lines: string[] = [];
  if (r.applied === false) lines.push('not applied');
  let changed = 0;
  const changes = r.changes as Record<string, Rec> | undefined;
  if (changes && typeof changes === 'object') {
    for (const [section, c] of Object.entries(changes)) {
      if (!c || typeof c !== 'object') continue;
      const parts = Object.entries(c)
        .filter(([, v]) => typeof v === 'number')
        .map(([k, v]) => `${v} ${k}`);
      if (Object.values(c).some((v) => typeof v === 'number' && v !== 0)) {
        lines.push(`${section}: ${parts.join(', ')}`);
        changed++;
      }
    }
  }
  if (changed === 0 && r.applied !== false) lines.push('no changes');
  const restart = r.restart_required;
  if (Array.isArray(restart) && restart.length > 0) {
    lines.push(`restart required for: ${restart.map(String).join(', ')} (takes effect at the next start)`);
  }
  return lines.join('\n');
}
