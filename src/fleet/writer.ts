// Local API and nvgrectl writes when the policy is in the store (fleet.md):
// a change to a record is checked against this host's whole policy, written
// to etcd in one transaction that compares the key's mod revision with the
// one read (compare-and-swap: a key changed meanwhile is a conflict, never
// overwritten), and answered once this host has applied that revision.
// Records of the config file stay the file's. Also: a VM's migration, one
// transaction, and the fleet's view of which host runs which revision.

import { parseIp } from '../config/index.js';
import { nvgreError } from '../errors.js';
import type { PolicyChange } from '../model/change.js';
import type { LookupRecord, VmAdapter } from '../model/policy.js';
import { matchesFilter, matchesKey, type AnyRecord, type Filter, type Resource } from '../model/resources.js';
import type { PolicyStore } from '../daemon/store.js';
import type { ModRevisionCompare, TxnOp } from './etcd.js';
import type { FleetSource, HostStatus } from './source.js';
import { recordKey } from './view.js';

/** etcd's default --max-txn-ops: a flush of more keys is written in several transactions. */
export const MAX_TXN_OPS = 128;

export interface FleetHost extends Partial<HostStatus> {
  host: string;
}

export interface Migration {
  vm_adapter: string;
  from: string;
  to: string;
  provider_address: string;
  lookup_records: number;
  revision: number;
}

export class FleetWriter {
  constructor(
    private readonly source: FleetSource,
    private readonly store: PolicyStore,
  ) {}

  private get etcd() {
    return this.source.etcd;
  }

  /** The store key (full) of a record written through this host: where it lives now, else this host's (host sections) or the fleet's. */
  private keyOf(res: Resource, record: AnyRecord): string {
    const origin = this.source.origin(res.section, record);
    if (origin === 'file') {
      throw nvgreError('NVGRE_ERR_CONFLICT', `${res.noun} ${res.identity(record).join(' ')} is in this host's config file: change it there (the store's policy cannot override it)`);
    }
    if (!res.spec.etcd.host || (res.spec.etcd.fleet && origin !== 'host')) return this.source.root + recordKey(res.section, record);
    return this.source.root + recordKey(res.section, record, this.source.host);
  }

  /** Refuse, as the API does, changes that would make this host's policy invalid (nothing is written). */
  private check(changes: PolicyChange[]): void {
    const errors = this.store.problemsWith(changes);
    if (errors.length) {
      throw nvgreError('NVGRE_ERR_CONFIG', `the change would make this host's policy invalid: ${errors[0]!.message}`, { details: errors });
    }
  }

  /** One transaction: if every compared key is at the revision read, do `ops`; then wait until this host applied it. */
  private async commit(compare: ModRevisionCompare[], ops: TxnOp[], what: string, conflict = `${what}: the store changed it meanwhile (read again and retry)`): Promise<number> {
    if (!this.source.up) throw nvgreError('NVGRE_ERR_UNAVAILABLE', `the policy store is unreachable: ${what} cannot be written (forwarding goes on with the running policy)`);
    const { succeeded, revision } = await this.etcd.txn(compare, ops);
    if (!succeeded) throw nvgreError(compare.length === 1 && compare[0]!.modRevision === 0 ? 'NVGRE_ERR_EXISTS' : 'NVGRE_ERR_CONFLICT', conflict);
    try {
      await this.source.waitApplied(revision);
    } catch (err) {
      throw nvgreError('NVGRE_ERR_CONFIG', `${what} was written to the store (revision ${revision}) but this host refused that revision: ${(err as Error).message}`);
    }
    return revision;
  }

  /** The mod revision of `key` now (0: absent). */
  private async modRevision(key: string): Promise<number> {
    return (await this.etcd.get(key))?.modRevision ?? 0;
  }

  async create(res: Resource, body: unknown): Promise<AnyRecord> {
    const rec = res.validate(body, res.singular);
    const key = this.keyOf(res, rec);
    const what = `${res.noun} ${res.identity(rec).join(' ')}`;
    if (this.store.has(res, res.identity(rec))) throw nvgreError('NVGRE_ERR_EXISTS', `${what} exists (replace it, or change it)`);
    this.check([{ op: 'put', section: res.section, record: rec }]);
    await this.commit([{ key, modRevision: 0 }], [{ put: { key, value: JSON.stringify(rec) } }], what, `${what} exists in the store (replace it, or change it)`);
    return rec;
  }

  async replace(res: Resource, key: string[], body: unknown): Promise<{ record: AnyRecord; created: boolean }> {
    const rec = res.validate(body, res.singular);
    if (!matchesKey(res, rec, key)) throw nvgreError('NVGRE_ERR_BAD_REQUEST', `the body's key ${res.identity(rec).join(' ')} is not the path's ${key.join(' ')}`);
    const created = !this.store.has(res, res.identity(rec));
    return { record: await this.put(res, rec), created };
  }

  async change(res: Resource, key: string[], patch: unknown): Promise<AnyRecord> {
    if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) {
      throw nvgreError('NVGRE_ERR_BAD_REQUEST', `a change is an object of the ${res.noun}'s fields to set`);
    }
    const keyFields = res.key.slice(0, res.key.length - res.optionalKeys);
    const touched = Object.keys(patch).filter((k) => keyFields.includes(k));
    if (touched.length) throw nvgreError('NVGRE_ERR_BAD_REQUEST', `${touched.join(', ')} identify the ${res.noun} and cannot be changed: delete it and add a new one`);
    const old = this.store.get(res, key);
    return this.put(res, res.validate({ ...old, ...patch }, res.singular));
  }

  private async put(res: Resource, rec: AnyRecord): Promise<AnyRecord> {
    const key = this.keyOf(res, rec);
    const mod = await this.modRevision(key);
    this.check([{ op: 'put', section: res.section, record: rec }]);
    await this.commit([{ key, modRevision: mod }], [{ put: { key, value: JSON.stringify(rec) } }], `${res.noun} ${res.identity(rec).join(' ')}`);
    return rec;
  }

  async remove(res: Resource, key: string[]): Promise<AnyRecord> {
    const old = this.store.get(res, key);
    await this.removeAll(res, [old]);
    return old;
  }

  async flush(res: Resource, filter: Filter): Promise<number> {
    const gone = this.store.list(res, filter).filter((r) => matchesFilter(r, filter));
    for (let i = 0; i < gone.length; i += MAX_TXN_OPS) await this.removeAll(res, gone.slice(i, i + MAX_TXN_OPS));
    return gone.length;
  }

  private async removeAll(res: Resource, records: AnyRecord[]): Promise<void> {
    if (!records.length) return;
    const keys = records.map((r) => this.keyOf(res, r));
    const compare = await Promise.all(keys.map(async (key) => ({ key, modRevision: await this.modRevision(key) })));
    this.check(records.map((record) => ({ op: 'delete', section: res.section, record })));
    await this.commit(compare, keys.map((key) => ({ delete: { key } })), `${records.length} ${res.noun}(s)`);
  }

  reloadFile(path: string): Promise<void> {
    return this.source.reloadFile(path);
  }

  /** Every host with a status key (a running daemon), and what it runs. */
  hosts(): FleetHost[] {
    const out: FleetHost[] = [];
    for (const [host, value] of this.source.statuses()) {
      try {
        out.push({ host, ...(JSON.parse(value) as HostStatus) });
      } catch {
        out.push({ host, error: `its status key holds no JSON: ${value.slice(0, 80)}` });
      }
    }
    return out.sort((a, b) => a.host.localeCompare(b.host));
  }

  /** This host's part: its status, the store's reachability. */
  show(): { host: string; up: boolean; status: HostStatus; hosts: FleetHost[] } {
    return { host: this.source.host, up: this.source.up, status: this.source.status(), hosts: this.hosts() };
  }

  /**
   * Move VM adapter `name` to host `to` in ONE transaction (fleet.md): its
   * adapter key moves from hosts/<old>/ to hosts/<to>/ and its fleet lookup
   * records (its VSID and MAC) get `to`'s provider address; every host sees
   * both at one revision. Every key read is compared.
   */
  async migrate(body: unknown): Promise<Migration> {
    const b = (body ?? {}) as { vm_adapter?: unknown; to?: unknown; provider_address?: unknown };
    if (typeof b.vm_adapter !== 'string' || !b.vm_adapter) throw nvgreError('NVGRE_ERR_BAD_REQUEST', `vm_adapter: ${JSON.stringify(b.vm_adapter)} must be the name of a VM adapter`);
    if (typeof b.to !== 'string' || !b.to) throw nvgreError('NVGRE_ERR_BAD_REQUEST', `to: ${JSON.stringify(b.to)} must be a host name`);
    const root = this.source.root;
    const { kvs: hostKvs } = await this.etcd.rangePrefix(`${root}hosts/`);
    const adapterKv = hostKvs.find((kv) => {
      const p = kv.key.slice(root.length).split('/');
      return p.length === 4 && p[2] === 'vm_adapters' && p[3] === b.vm_adapter;
    });
    if (!adapterKv) throw nvgreError('NVGRE_ERR_NOT_FOUND', `vm_adapter: no host has VM adapter ${b.vm_adapter} in the store (hosts/<host>/vm_adapters/${b.vm_adapter})`);
    const from = adapterKv.key.slice(root.length).split('/')[1]!;
    if (from === b.to) throw nvgreError('NVGRE_ERR_BAD_REQUEST', `to: ${b.to} already has VM adapter ${b.vm_adapter}`);
    const adapter = JSON.parse(adapterKv.value) as VmAdapter;
    const paKvs = hostKvs.filter((kv) => kv.key.startsWith(`${root}hosts/${b.to}/provider_addresses/`));
    const pas = paKvs.map((kv) => kv.key.slice(kv.key.lastIndexOf('/') + 1));
    // A host's PA may be in its config file, which the store does not see: given explicitly, it is taken as the operator's word.
    const given = b.provider_address === undefined ? undefined : parseIp(String(b.provider_address));
    if (given && !given.ok) throw nvgreError('NVGRE_ERR_BAD_REQUEST', `provider_address: ${JSON.stringify(b.provider_address)} ${given.reason}`);
    const pa = given?.value.text ?? pas[0];
    if (!pa) throw nvgreError('NVGRE_ERR_BAD_REQUEST', `to: host ${b.to} has no provider address in the store (give provider_address: one of its config file's)`);
    const { kvs: recordKvs } = await this.etcd.rangePrefix(`${root}lookup_records/${adapter.vsid}/`);
    const records = recordKvs
      .map((kv) => ({ kv, r: JSON.parse(kv.value) as LookupRecord }))
      .filter(({ r }) => r.mac === adapter.mac && r.vsid === adapter.vsid && r.type !== 'gateway_wildcard');
    const paKv = paKvs.find((kv) => kv.key.endsWith(`/${pa}`));
    const newKey = `${root}hosts/${b.to}/vm_adapters/${b.vm_adapter}`;
    const compare: ModRevisionCompare[] = [
      { key: adapterKv.key, modRevision: adapterKv.modRevision },
      { key: newKey, modRevision: 0 },
      ...(paKv ? [{ key: paKv.key, modRevision: paKv.modRevision }] : []),
      ...records.map(({ kv }) => ({ key: kv.key, modRevision: kv.modRevision })),
    ];
    const ops: TxnOp[] = [
      { delete: { key: adapterKv.key } },
      { put: { key: newKey, value: adapterKv.value } },
      ...records.map(({ kv, r }) => ({ put: { key: kv.key, value: JSON.stringify({ ...r, provider_address: pa }) } })),
    ];
    const { succeeded, revision } = await this.etcd.txn(compare, ops);
    if (!succeeded) throw nvgreError('NVGRE_ERR_CONFLICT', `migrating ${b.vm_adapter}: the store changed its keys meanwhile (retry)`);
    return { vm_adapter: b.vm_adapter, from, to: b.to, provider_address: pa, lookup_records: records.length, revision };
  }
}
