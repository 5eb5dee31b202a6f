// grafana/nvgred-dashboard.json against the documented metrics: every PromQL
// expression of the dashboard (panel targets and template variables) may name
// only metrics of README.md's "Metrics" table, and the daemon's metrics
// module must export each of them. Renaming a metric without the dashboard
// (or the README) breaks this test.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const read = (rel: string): string => readFileSync(fileURLToPath(new URL(rel, import.meta.url)), 'utf8');

/** Metric names in the first column of README.md's table under "## Metrics". */
function documentedMetrics(readme: string): Set<string> {
  const lines = readme.split('\n');
  const start = lines.findIndex((l) => /^##\s+Metrics\s*$/.test(l));
  if (start < 0) throw new Error('README.md has no "## Metrics" section');
  const header = lines.findIndex((l, i) => i > start && /^\|\s*metric\s*\|/i.test(l));
  if (header < 0 || lines.slice(start + 1, header).some((l) => /^##?\s/.test(l))) {
    throw new Error('no "| metric |" table in README.md\'s "## Metrics" section');
  }
  const names = new Set<string>();
  for (let i = header + 2; i < lines.length && lines[i]!.startsWith('|'); i++) {
    const first = lines[i]!.split('|')[1] ?? '';
    for (const m of first.matchAll(/`([^`]+)`/g)) {
      if (/^[A-Za-z_:][A-Za-z0-9_:]*$/.test(m[1]!)) names.add(m[1]!);
    }
  }
  return names;
}

const NOT_METRICS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan']);

/**
 * Metric names a PromQL expression selects: identifiers left once strings,
 * Grafana variables, ranges, label lists (by/without/on/ignoring/group_*),
 * label matchers, function calls and keywords are set aside. A Grafana
 * `label_values(selector, label)` query is reduced to its selector first.
 */
function metricNames(expr: string): string[] {
  let s = expr.trim();
  const lv = /^label_values\s*\(([\s\S]*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)$/.exec(s);
  if (lv) s = lv[1]!;
  s = s
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/gi, ' ')
    .replace(/\{[^}]*\}/g, ' ');
  const names: string[] = [];
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const at = m.index!;
    if (at > 0 && /[0-9.]/.test(s[at - 1]!)) continue; // 5m, 1e3
    if (s.slice(at + m[0].length).trimStart().startsWith('(')) continue; // a function or an aggregation
    if (NOT_METRICS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return [...new Set(names)];
}

interface Dashboard {
  schemaVersion: number;
  uid: string;
  panels: Panel[];
  templating: { list: Variable[] };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Array<{ expr?: string; datasource?: { type: string; uid: string } }>;
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  query?: string | { query?: string };
  definition?: string;
  includeAll?: boolean;
  allValue?: string;
}

const dashboard = JSON.parse(read('../grafana/nvgred-dashboard.json')) as Dashboard;

function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

/** Every PromQL expression of the dashboard, with where it is. */
function expressions(): Array<{ where: string; expr: string }> {
  const out: Array<{ where: string; expr: string }> = [];
  for (const p of allPanels(dashboard.panels)) {
    for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel "${p.title}"`, expr: t.expr });
  }
  for (const v of dashboard.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    for (const expr of [q, v.definition]) if (expr) out.push({ where: `variable $${v.name}`, expr });
  }
  return out;
}

describe('metricNames (the PromQL scanner this test relies on)', () => {
  it('finds metric names and nothing else', () => {
    expect(metricNames('sum by (vsid) (rate(nvgre_encap_packets_total{instance=~"$instance", vsid=~"$vsid"}[$__rate_interval]))')).toEqual([
      'nvgre_encap_packets_total',
    ]);
    expect(metricNames('time() - nvgre_config_last_reload_success_timestamp_seconds{instance=~"$instance"}')).toEqual([
      'nvgre_config_last_reload_success_timestamp_seconds',
    ]);
    expect(metricNames('sum by (direction, reason) (increase(x_total{a="b or c"}[$__range])) > 0')).toEqual(['x_total']);
    expect(metricNames('a / on (instance) group_left (version) b offset 5m unless c > 1e3')).toEqual(['a', 'b', 'c']);
    expect(metricNames('label_values(nvgre_build_info, instance)')).toEqual(['nvgre_build_info']);
    expect(metricNames('label_values(nvgre_encap_packets_total{instance=~"$instance"}, vsid)')).toEqual(['nvgre_encap_packets_total']);
  });

  it('reads the README metrics table', () => {
    const names = documentedMetrics(read('../README.md'));
    for (const n of ['nvgre_encap_packets_total', 'nvgre_dropped_packets_total', 'nvgre_lookup_records', 'nvgre_vm_adapters', 'nvgre_build_info']) {
      expect(names, n).toContain(n);
    }
    expect([...names].every((n) => n.startsWith('nvgre_'))).toBe(true);
  });
});

describe('grafana/nvgred-dashboard.json', () => {
  it('references only metrics documented in README.md\'s metrics table', () => {
    const documented = documentedMetrics(read('../README.md'));
    const exprs = expressions();
    expect(exprs.length).toBeGreaterThan(10);
    const undocumented: string[] = [];
    for (const { where, expr } of exprs) {
      const names = metricNames(expr);
      expect(names.length, `${where}: no metric found in ${expr}`).toBeGreaterThan(0);
      for (const n of names) if (!documented.has(n)) undocumented.push(`${n} (${where})`);
    }
    expect(undocumented, 'metrics the dashboard uses but README.md "## Metrics" does not document').toEqual([]);
  });

  it('references only metrics that src/metrics/index.ts exports', () => {
    const source = read('../src/metrics/index.ts');
    const exported = new Set([...source.matchAll(/['"](nvgre_[a-z0-9_]+)['"]/g)].map((m) => m[1]!));
    const missing = [...new Set(expressions().flatMap(({ expr }) => metricNames(expr)))].filter((n) => !exported.has(n));
    expect(missing, 'metrics the dashboard uses that src/metrics/index.ts does not define').toEqual([]);
  });

  it('covers traffic, drops, host answers, reloads, policy sizes, adapters and build info', () => {
    const used = new Set(expressions().flatMap(({ expr }) => metricNames(expr)));
    for (const n of [
      'nvgre_encap_packets_total', 'nvgre_encap_bytes_total', 'nvgre_decap_packets_total', 'nvgre_decap_bytes_total',
      'nvgre_dropped_packets_total', 'nvgre_arp_replies_total', 'nvgre_icmp_echo_replies_total',
      'nvgre_local_switched_packets_total', 'nvgre_routed_packets_total',
      'nvgre_config_last_reload_successful', 'nvgre_config_last_reload_success_timestamp_seconds',
      'nvgre_lookup_records', 'nvgre_customer_routes', 'nvgre_provider_addresses', 'nvgre_vm_adapters',
      'nvgre_vm_adapter_up', 'nvgre_build_info',
    ]) {
      expect(used, n).toContain(n);
    }
  });

  it('has the datasource, instance and vsid variables, and every query uses $datasource', () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const v = new Map(dashboard.templating.list.map((x) => [x.name, x]));
    expect(v.get('datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(v.get('instance')?.definition).toMatch(/^label_values\(nvgre_build_info\s*,\s*instance\)$/);
    expect(v.get('vsid')?.definition).toMatch(/^label_values\(nvgre_encap_packets_total(\{[^}]*\})?\s*,\s*vsid\)$/);
    // "All" must match every series, including those without a vsid label.
    expect(v.get('vsid')).toMatchObject({ includeAll: true, allValue: '.*' });

    const panels = allPanels(dashboard.panels);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels.filter((x) => x.type !== 'row')) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      for (const t of p.targets ?? []) expect(t.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
    }
  });
});
