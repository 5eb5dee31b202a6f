// The running policy's records kept by identity, so one change costs what it
// touches, not the size of the policy. Each section keeps its records in
// insertion order (a replaced record keeps its place), with the indexes the
// cross-record rules need. Changes are applied in place and can be undone;
// the check then runs the whole-document rules (config/invariants.ts) on the
// part of the policy the changes can affect, naming each record by its place
// in the whole policy, so what it reports is exactly what checking the whole
// resulting document would.

import { collectInvariantErrors, sortFieldErrors } from '../config/index.js';
import { natProblems } from '../config/nat.js';
import { ZERO_MAC, defaultGatewayOf, familyOf } from '../config/net.js';
import type { FieldError } from '../errors.js';
import type { PolicyChange } from './change.js';
import { isOnLink, type CustomerRoute, type LookupRecord, type Policy } from './policy.js';
import { RESOURCES, type AnyRecord, type Resource, type Section } from './resources.js';

const SECTIONS = RESOURCES.map((r) => r.section);

/** A record's identity as one string (its resource's key fields). */
export const identityOf = (res: Resource, r: AnyRecord): string => res.identity(r).join('\u0000');

/** The last version given to a section's records. */
let versions = 0;

/** One section: records by identity, in order. Deleted records leave a hole until the section is compacted. */
class KeyedSection {
  private slots: (AnyRecord | undefined)[] = [];
  private readonly slotById = new Map<string, number>();
  private holes = 0;
  private list: AnyRecord[] | undefined;
  /** New with every change to the records, never used twice (an undo puts back the version it undoes). */
  version = 0;

  constructor(readonly res: Resource) {}

  get size(): number {
    return this.slotById.size;
  }

  id(r: AnyRecord): string {
    return identityOf(this.res, r);
  }

  get(id: string): AnyRecord | undefined {
    const s = this.slotById.get(id);
    return s === undefined ? undefined : this.slots[s];
  }

  /** Where a record held by the section sits (its order among the others). */
  slotOf(r: AnyRecord): number {
    return this.slotById.get(this.id(r))!;
  }

  recordAt(slot: number): AnyRecord {
    return this.slots[slot]!;
  }

  /** Put `r` in place of the record of its identity (returned), else at `at` (a hole left by delete) or last. */
  put(r: AnyRecord, at?: number, id = this.id(r)): AnyRecord | undefined {
    this.list = undefined;
    this.version = ++versions;
    const s = this.slotById.get(id);
    if (s !== undefined) {
      const old = this.slots[s];
      this.slots[s] = r;
      return old;
    }
    if (at === undefined || at === this.slots.length) {
      this.slotById.set(id, this.slots.length);
      this.slots.push(r);
    } else {
      this.slots[at] = r;
      this.slotById.set(id, at);
      this.holes--;
    }
    return undefined;
  }

  delete(id: string): { record: AnyRecord; slot: number } | undefined {
    const s = this.slotById.get(id);
    if (s === undefined) return undefined;
    this.list = undefined;
    this.version = ++versions;
    const record = this.slots[s]!;
    this.slotById.delete(id);
    if (s === this.slots.length - 1) this.slots.pop();
    else {
      this.slots[s] = undefined;
      this.holes++;
    }
    return { record, slot: s };
  }

  /** Close the holes when they outnumber the records (never while a change may still be undone). */
  compact(): void {
    if (this.holes < 1024 || this.holes < this.slotById.size) return;
    const live = this.records();
    this.slots = [...live];
    live.forEach((r, i) => this.slotById.set(this.id(r), i));
    this.holes = 0;
  }

  /** The records in order (cached until the next change). */
  records(): AnyRecord[] {
    if (!this.list) {
      const out: AnyRecord[] = [];
      for (const r of this.slots) if (r !== undefined) out.push(r);
      this.list = out;
    }
    return this.list;
  }

  /** The places in the section of the records at `slots` (ascending), in one pass. */
  positions(slots: readonly number[]): number[] {
    const out: number[] = [];
    let pos = 0;
    let k = 0;
    for (let s = 0; s < this.slots.length && k < slots.length; s++) {
      if (s === slots[k]) {
        out.push(pos);
        k++;
      }
      if (this.slots[s] !== undefined) pos++;
    }
    return out;
  }
}

/** A multimap kept small: one value alone, an array once there are more. */
type Multi<V> = Map<string, V | V[]>;
function multiAdd<V>(m: Multi<V>, k: string, v: V): void {
  const cur = m.get(k);
  if (cur === undefined) m.set(k, v);
  else if (Array.isArray(cur)) cur.push(v);
  else m.set(k, [cur, v]);
}
function multiDelete<V>(m: Multi<V>, k: string, v: V): void {
  const cur = m.get(k);
  if (cur === v) m.delete(k);
  else if (Array.isArray(cur)) {
    const i = cur.indexOf(v);
    if (i >= 0) cur.splice(i, 1);
    if (cur.length === 1) m.set(k, cur[0]!);
  }
}
function multiGet<V>(m: Multi<V>, k: string): readonly V[] {
  const cur = m.get(k);
  return cur === undefined ? [] : Array.isArray(cur) ? cur : [cur];
}

const wildcardKey = (r: LookupRecord) => `${r.vsid}|${familyOf(r.customer_address)}`;

/** What undoes one step of a change. */
type UndoStep = { section: Section; put: AnyRecord; at?: number } | { section: Section; del: string };

export interface Applied {
  /** The changes as they were applied (`previous` as found), no-ops left out. */
  changes: PolicyChange[];
  /** Put everything back as it was (in reverse order of the steps). */
  undo(): void;
  /** The customer routes before, when the changes touch them. */
  routesBefore?: readonly CustomerRoute[];
}

/** Each VSID's routing domain: its first route's. */
function bindings(routes: readonly CustomerRoute[]): Map<number, string> {
  const m = new Map<number, string>();
  for (const r of routes) if (!m.has(r.vsid)) m.set(r.vsid, r.routing_domain);
  return m;
}

export class KeyedPolicy {
  private readonly sections: Record<Section, KeyedSection>;
  /** Lookup records by MAC (the zero MAC left out: no rule reads it). */
  private readonly byMac: Multi<LookupRecord> = new Map();
  /** gateway_wildcard records by VSID and family. */
  private readonly wildcards: Multi<LookupRecord> = new Map();
  /** The settings: the policy without its record lists. */
  private rest: Policy;
  /** The policy's keys, in its order. */
  private keys: string[];
  private whole: Policy | undefined;

  constructor(p: Policy) {
    this.sections = Object.fromEntries(RESOURCES.map((res) => [res.section, new KeyedSection(res)])) as Record<Section, KeyedSection>;
    this.rest = policySettings(p);
    this.keys = keyOrder(p);
    for (const s of SECTIONS) for (const r of p[s]) this.insert(s, r);
    this.whole = p;
  }

  /** The policy as a document (its lists made again after a change, only when asked for). */
  get policy(): Policy {
    const p = this.lazyPolicy;
    void p.lookup_records; // listed now: the document stays whole whatever changes next
    return p;
  }

  /**
   * The policy as a document whose lookup records, the one list that grows
   * to millions, are listed when first read: a change the packet core takes
   * as a delta never reads them, so it costs what it changes. They are the
   * records as they were when the document was made; read only after a
   * later change, they are gone (an error, not a silently newer list). For
   * the dataplane, which reads them only while they are the running ones.
   */
  get lazyPolicy(): Policy {
    if (!this.whole) {
      // In the document's key order (the API's JSON, a saved config).
      const p: Record<string, unknown> = {};
      for (const k of this.keys) {
        if (k === 'lookup_records') Object.defineProperty(p, k, { enumerable: true, configurable: true, get: listedWhenRead(this.sections.lookup_records) });
        else p[k] = SECTIONS.includes(k as Section) ? this.sections[k as Section].records() : (this.rest as unknown as Record<string, unknown>)[k];
      }
      this.whole = p as unknown as Policy;
    }
    return this.whole;
  }

  /** Replace the settings (every section other than the record lists). */
  setSettings(p: Policy): void {
    this.rest = policySettings(p);
    this.keys = keyOrder(p);
    this.whole = undefined;
  }

  size(section: Section): number {
    return this.sections[section].size;
  }

  /** The record of this identity (its resource's key fields, in order). */
  get(section: Section, identity: readonly string[]): AnyRecord | undefined {
    return this.sections[section].get(identity.join('\u0000'));
  }

  /** The record holding identity of `r` (another version of it, or `r` itself). */
  current(section: Section, r: AnyRecord): AnyRecord | undefined {
    const sec = this.sections[section];
    return sec.get(sec.id(r));
  }

  /** The static or dynamic record (or any other holding that identity) at (vsid, CA). */
  byCa(vsid: number, ca: string): LookupRecord | undefined {
    return this.get('lookup_records', [String(vsid), ca]) as LookupRecord | undefined;
  }

  private insert(section: Section, r: AnyRecord, at?: number, id?: string): AnyRecord | undefined {
    const old = this.sections[section].put(r, at, id);
    if (section === 'lookup_records') {
      if (old) this.unindex(old as LookupRecord);
      this.index(r as LookupRecord);
    }
    this.whole = undefined;
    return old;
  }

  private remove(section: Section, id: string): { record: AnyRecord; slot: number } | undefined {
    const gone = this.sections[section].delete(id);
    if (gone && section === 'lookup_records') this.unindex(gone.record as LookupRecord);
    this.whole = undefined;
    return gone;
  }

  private index(r: LookupRecord): void {
    if (r.mac !== ZERO_MAC) multiAdd(this.byMac, r.mac, r);
    if (r.type === 'gateway_wildcard') multiAdd(this.wildcards, wildcardKey(r), r);
  }

  private unindex(r: LookupRecord): void {
    if (r.mac !== ZERO_MAC) multiDelete(this.byMac, r.mac, r);
    if (r.type === 'gateway_wildcard') multiDelete(this.wildcards, wildcardKey(r), r);
  }

  /**
   * Apply `changes` in order, in place. A put of a record equal to the one
   * it replaces, and a delete of a record not held, are left out.
   */
  apply(changes: readonly PolicyChange[]): Applied {
    const steps: UndoStep[] = [];
    const done: PolicyChange[] = [];
    const routesBefore = changes.some((c) => c.section === 'customer_routes') ? (this.sections.customer_routes.records() as CustomerRoute[]) : undefined;
    const versionsBefore = SECTIONS.map((s) => this.sections[s].version);
    for (const c of changes) {
      const sec = this.sections[c.section];
      if (c.op === 'put') {
        const id = sec.id(c.record);
        const cur = sec.get(id);
        if (cur !== undefined && sameRecord(cur, c.record)) continue;
        this.insert(c.section, c.record, undefined, id);
        steps.push(cur !== undefined ? { section: c.section, put: cur } : { section: c.section, del: id });
        done.push(cur !== undefined ? { op: 'put', section: c.section, record: c.record, previous: cur } : { op: 'put', section: c.section, record: c.record });
      } else {
        const gone = this.remove(c.section, sec.id(c.record));
        if (!gone) continue;
        steps.push({ section: c.section, put: gone.record, at: gone.slot });
        done.push({ op: 'delete', section: c.section, record: gone.record });
      }
    }
    return {
      changes: done,
      ...(routesBefore ? { routesBefore } : {}),
      undo: () => {
        for (let i = steps.length - 1; i >= 0; i--) {
          const s = steps[i]!;
          if ('del' in s) this.remove(s.section, s.del);
          else this.insert(s.section, s.put, s.at);
        }
        // The records are as they were: so are the documents made of them.
        SECTIONS.forEach((s, i) => (this.sections[s].version = versionsBefore[i]!));
      },
    };
  }

  /** Close the holes deleted records left (call once a change is final). */
  settle(): void {
    for (const s of SECTIONS) this.sections[s].compact();
  }

  /**
   * The problems of the policy as it is after `applied` (changes to a
   * policy that had none): exactly those of checking the whole policy, in
   * the same order, with the same paths and messages.
   */
  check(applied: Applied): FieldError[] {
    if (!applied.changes.length) return [];
    const look = this.sections.lookup_records;
    if (applied.changes.length >= look.size / 2) {
      // Changes to much of the policy (a sync from empty): checking it whole costs less than finding what they touch.
      const whole = Object.fromEntries(SECTIONS.map((s) => [s, this.sections[s].records()])) as unknown as Pick<Policy, Section>;
      return sortFieldErrors(collectInvariantErrors(whole));
    }
    const part = new Set<LookupRecord>();
    const todo: LookupRecord[] = [];
    const take = (r: LookupRecord | undefined) => {
      if (r !== undefined && !part.has(r) && look.get(look.id(r)) === r) {
        part.add(r);
        todo.push(r);
      }
    };
    /** Every record that shares a rule with `r` (whether `r` is still held or not). */
    const neighbours = (r: LookupRecord) => {
      take(look.get(look.id(r)) as LookupRecord | undefined);
      if (r.type === 'gateway_wildcard') for (const w of multiGet(this.wildcards, wildcardKey(r))) take(w);
      if (r.mac !== ZERO_MAC) for (const m of multiGet(this.byMac, r.mac)) take(m);
    };

    const routes = this.sections.customer_routes.records() as CustomerRoute[];
    let routesChanged = false;
    let addressesChanged = false;
    for (const c of applied.changes) {
      if (c.section === 'lookup_records') {
        neighbours(c.record as LookupRecord);
        if (c.op === 'put' && c.previous) neighbours(c.previous as LookupRecord);
      } else if (c.section === 'customer_routes') routesChanged = true;
      else if (c.section === 'provider_addresses') addressesChanged = true;
    }
    if (routesChanged) {
      // A VSID's first route binds it to its routing domain: where that
      // moved, every record of the VSID is checked again (rare: it takes a
      // pass over the records).
      const vsids = new Set<number>();
      const before = bindings(applied.routesBefore ?? []);
      const after = bindings(routes);
      for (const c of applied.changes) {
        const v = c.section === 'customer_routes' ? (c.record as CustomerRoute).vsid : undefined;
        if (v !== undefined && before.get(v) !== after.get(v)) vsids.add(v);
      }
      if (vsids.size) for (const r of look.records() as LookupRecord[]) if (vsids.has(r.vsid)) take(r);
    }
    if (addressesChanged || routesChanged) {
      // Default-gateway records must name a local PA.
      for (const r of routes) {
        const gw = isOnLink(r.next_hop) ? defaultGatewayOf(r.destination_prefix) : undefined;
        if (gw !== undefined) take(this.byCa(r.vsid, gw));
      }
    }
    // Adapters are checked against their domain's records of their MAC.
    for (const a of this.sections.vm_adapters.records() as Policy['vm_adapters']) for (const m of multiGet(this.byMac, a.mac)) take(m);
    for (let r = todo.pop(); r !== undefined; r = todo.pop()) neighbours(r);

    const slots = [...part].map((r) => look.slotOf(r)).sort((a, b) => a - b);
    const sub = {
      provider_addresses: this.sections.provider_addresses.records() as Policy['provider_addresses'],
      provider_routes: this.sections.provider_routes.records() as Policy['provider_routes'],
      customer_routes: routes,
      lookup_records: slots.map((s) => look.recordAt(s) as LookupRecord),
      vm_adapters: this.sections.vm_adapters.records() as Policy['vm_adapters'],
    };
    const errs = collectInvariantErrors(sub);
    if (!errs.length) {
      // A gateway's NATs are checked against every record (they are few; gateway hosts only).
      const { uplink, nat } = this.rest;
      return uplink || nat ? natProblems({ ...sub, lookup_records: look.records() as LookupRecord[], uplink, nat: nat ?? [] }) : errs;
    }
    const places = look.positions(slots);
    return sortFieldErrors(collectInvariantErrors(sub, { lookupPosition: (i) => places[i]! }));
  }
}

/** A document's getter of `sec`'s records: listed when first read, if the section is still as it was. */
function listedWhenRead(sec: KeyedSection): () => AnyRecord[] {
  const version = sec.version;
  let list: AnyRecord[] | undefined;
  return () => {
    if (list) return list;
    if (sec.version !== version) throw new Error(`a policy document read after the policy changed: its ${sec.res.section} are no longer held`);
    return (list = sec.records());
  };
}

/** A validated policy's keys in order: host, the record lists, the settings (the sections are there even if `p` has none). */
function keyOrder(p: Policy): string[] {
  const settings = Object.keys(p).filter((k) => k !== 'host' && !SECTIONS.includes(k as Section));
  return ['host', ...SECTIONS, ...settings];
}

/** The policy without its record lists (they are the keyed sections'). */
export function policySettings(p: Policy): Policy {
  const out = { ...p };
  for (const s of SECTIONS) delete (out as Partial<Policy>)[s];
  return out;
}

/** Two versions of a record with the same fields (records are small, flat, in normal form). */
export function sameRecord(a: AnyRecord, b: AnyRecord): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if ((a as unknown as Record<string, unknown>)[k] !== (b as unknown as Record<string, unknown>)[k]) return false;
  return true;
}
