// The state file's journal: a big policy's changes are appended as lines
// and replayed at load; a last line cut short by a crash is ignored; a
// damaged line before it refuses the state (set aside with its journal);
// a whole write starts a fresh journal, and an older journal's lines are
// never replayed. Small policies are written whole as before.

import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StateFile, WHOLE_BELOW, type SavedState } from '../src/daemon/state.js';
import { emptyPolicy, type LookupRecord, type Policy } from '../src/model/policy.js';
import { scratchDir } from './helpers/scratch.js';

const root = scratchDir('journal');
let n = 0;
const fresh = () => {
  const d = join(root, String(n++));
  mkdirSync(d);
  return new StateFile(d);
};

const rec = (i: number): LookupRecord => ({
  customer_address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${(i & 255) + 0}`,
  vsid: 6000,
  mac: `62:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}:01`,
  provider_address: '192.168.1.1',
  rule: 'encap',
  type: 'static',
});

/** A policy whose state file is past WHOLE_BELOW. */
function big(): Policy {
  const p = emptyPolicy();
  for (let i = 0; ; i++) {
    p.lookup_records.push(rec(i + 2));
    if (i * 120 > WHOLE_BELOW * 1.5) return p;
  }
}
const state = (policy: Policy): SavedState => ({ policy, owned: { provider_addresses: [], provider_routes: [] }, learned: [] });
const put = (r: LookupRecord) => ({ op: 'put' as const, section: 'lookup_records' as const, record: r });

describe('state journal', () => {
  it('a big policy: each change is one line; load replays them in order', () => {
    const s = fresh();
    const p = big();
    s.save(state(p));
    const wholeSize = statSync(s.path).size;
    const extra = rec(1_000_000);
    s.record({ changes: [put(extra)] }, () => state(p));
    s.record({ changes: [{ op: 'delete', section: 'lookup_records', record: p.lookup_records[0]! }], config_sha256: 'a'.repeat(64) }, () => state(p));
    expect(statSync(s.path).size).toBe(wholeSize); // not rewritten
    expect(readFileSync(s.journalPath, 'utf8').split('\n').length).toBe(3);
    const loaded = new StateFile(s.dir).load()!;
    const records = (loaded.policy as Policy).lookup_records;
    expect(records.length).toBe(p.lookup_records.length);
    expect(records.at(-1)).toEqual(extra);
    expect(records[0]).toEqual(p.lookup_records[1]);
    expect(loaded.configSha256).toBe('a'.repeat(64));
  });

  it('a small policy is written whole on every change (no journal)', () => {
    const s = fresh();
    const p = emptyPolicy();
    s.save(state(p));
    const next = { ...p, lookup_records: [rec(5)] };
    s.record({ changes: [put(rec(5))] }, () => state(next));
    expect(existsSync(s.journalPath)).toBe(false);
    expect((new StateFile(s.dir).load()!.policy as Policy).lookup_records).toEqual([rec(5)]);
  });

  it('a last line cut short by a crash is ignored (and cut off: the next line starts clean)', () => {
    const s = fresh();
    const p = big();
    s.save(state(p));
    s.record({ changes: [put(rec(1_000_001))] }, () => state(p));
    appendFileSync(s.journalPath, '{"journal":"x","changes":[{"op":"put","sec');
    const again = new StateFile(s.dir);
    const loaded = again.load()!;
    expect((loaded.policy as Policy).lookup_records.at(-1)).toEqual(rec(1_000_001));
    again.record({ changes: [put(rec(1_000_002))] }, () => state(p));
    expect((new StateFile(s.dir).load()!.policy as Policy).lookup_records.slice(-2)).toEqual([rec(1_000_001), rec(1_000_002)]);
  });

  it('a damaged line in the middle refuses the state; set aside, both files go', () => {
    const s = fresh();
    const p = big();
    s.save(state(p));
    s.record({ changes: [put(rec(1_000_001))] }, () => state(p));
    appendFileSync(s.journalPath, 'garbage\n');
    s.record({ changes: [put(rec(1_000_002))] }, () => state(p));
    const again = new StateFile(s.dir);
    expect(() => again.load()).toThrow(/journal .* is damaged at line 2/);
    again.setAside(new Date('2026-01-01T00:00:00Z'));
    expect(readdirSync(s.dir).sort()).toEqual(['policy.journal.bad-2026-01-01T00-00-00.000Z', 'policy.json.bad-2026-01-01T00-00-00.000Z']);
  });

  it("a whole write starts a fresh journal: an older state's lines are never replayed", () => {
    const s = fresh();
    const p = big();
    s.save(state(p));
    s.record({ changes: [put(rec(1_000_001))] }, () => state(p));
    const stale = readFileSync(s.journalPath, 'utf8');
    s.save(state(p)); // the change above folded in (here: not, so a replay would show it)
    writeFileSync(s.journalPath, stale); // a crash between the whole write and the journal's truncation
    s.record({ changes: [put(rec(1_000_002))] }, () => state(p));
    const records = (new StateFile(s.dir).load()!.policy as Policy).lookup_records;
    expect(records.at(-1)).toEqual(rec(1_000_002));
    expect(records.some((r) => r.customer_address === rec(1_000_001).customer_address)).toBe(false);
  });

  it('the journal is folded into a whole write once it is as big as the whole state', () => {
    const s = fresh();
    const p = big();
    s.save(state(p));
    const wholeSize = statSync(s.path).size;
    const many = Array.from({ length: 400 }, (_, i) => put(rec(2_000_000 + i)));
    const size = () => (existsSync(s.journalPath) ? statSync(s.journalPath).size : 0);
    while (size() < wholeSize) s.record({ changes: many }, () => state(p));
    expect(size()).toBeGreaterThan(0);
    s.record({ changes: [put(rec(3_000_000))] }, () => state(p));
    expect(statSync(s.journalPath).size).toBe(0);
  });
});

describe('state journal: settings', () => {
  it('a line with settings (a reload) changes them and keeps the records', () => {
    const s = fresh();
    const p = big();
    s.save(state(p));
    const { lookup_records: _l, provider_addresses: _a, provider_routes: _r, customer_routes: _c, vm_adapters: _v, ...settings } = { ...p, learning: { max_per_vsid: 7, ttl_seconds: 60 } };
    s.record({ changes: [], settings }, () => state(p));
    const loaded = new StateFile(s.dir).load()!.policy as Policy;
    expect(loaded.learning.max_per_vsid).toBe(7);
    expect(loaded.lookup_records.length).toBe(p.lookup_records.length);
    expect(Object.keys(loaded)).toEqual(Object.keys(p));
  });
});
