// One change to the policy's records: the unit the store validates, persists
// and hands the packet core, whoever asked for it (the API, learning, a
// reload's difference, the fleet's watcher).
import type { AnyRecord, Section } from './resources.js';

export type PolicyChange =
  /** Add `record`, or replace the record with the same identity (`previous`, when there was one). */
  | { op: 'put'; section: Section; record: AnyRecord; previous?: AnyRecord }
  /** Remove `record` (the record as it was). */
  | { op: 'delete'; section: Section; record: AnyRecord };
