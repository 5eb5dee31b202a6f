// An etcd v3 client over etcd's JSON gateway (HTTP/1.1 + JSON, keys and
// values base64, 64-bit integers as strings), on Node's http alone. etcd
// 3.4 (Debian 12's) serves the gateway at /v3/ on its client port; the
// `etcd3` npm package would need grpc-js and protobuf for the same calls.
// Endpoints are tried in turn: a member that does not answer costs one try.

import http from 'node:http';

export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  /** The lease's ID as etcd writes it ('0': none): lease IDs exceed a double's integers. */
  lease: string;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  kv: KeyValue;
}

/** What a watch delivers: the events of one or more whole revisions, in order. */
export interface WatchBatch {
  /** The store's revision when the batch was sent (≥ every event's mod revision). */
  headerRevision: number;
  events: WatchEvent[];
}

/** The store has compacted away the revision a watch was to start from. */
export class CompactedError extends Error {
  constructor(readonly compactRevision: number) {
    super(`the store compacted its history up to revision ${compactRevision}`);
  }
}

/** No endpoint answered (or the one asked failed at the transport level). */
export class UnreachableError extends Error {}

/** One operation of a transaction. */
export type TxnOp =
  | { put: { key: string; value: string; lease?: string } }
  | { delete: { key: string; prefix?: boolean } }
  | { range: { key: string } };

/** A compare of a transaction: the key's mod revision (0: the key does not exist). */
export interface ModRevisionCompare {
  key: string;
  modRevision: number;
}

/** Where a request to `endpoint` (http://host:port, or unix:///path of a member's socket) goes. */
function target(endpoint: string, path: string): http.RequestOptions {
  if (endpoint.startsWith('unix://')) return { socketPath: endpoint.slice('unix://'.length), path };
  const u = new URL(path, endpoint);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port, path: u.pathname };
}

/** Keys per range request when reading a prefix. */
const RANGE_PAGE = 10_000;
/** Range requests at a time when reading a prefix. */
const RANGE_PARALLEL = 4;

/** Bytes of a key (after the prefix read) taken as a number, to reckon where a page of keys ends. */
const KEY_NUM_BYTES = 64;

/** The bytes of `key` after `base` (its first KEY_NUM_BYTES, zero-padded) as a number: keys in order are numbers in order. */
function keyNum(base: Buffer, key: Buffer): bigint {
  let n = 0n;
  for (let i = 0; i < KEY_NUM_BYTES; i++) n = (n << 8n) | BigInt(key[base.length + i] ?? 0);
  return n;
}

/** The key `base` followed by the number `n` as KEY_NUM_BYTES bytes (past the last such key: the byte after base's range). */
function numKey(base: Buffer, n: bigint): Buffer {
  const tail = Buffer.alloc(KEY_NUM_BYTES);
  for (let i = KEY_NUM_BYTES - 1; i >= 0; i--, n >>= 8n) tail[i] = Number(n & 255n);
  return n > 0n ? rangeEnd(base) : Buffer.concat([base, tail]);
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) => (s === undefined ? '' : Buffer.from(s, 'base64').toString());
const num = (s: unknown) => (s === undefined ? 0 : Number(s));

/** `guess` as the end of a range starting at `from` if it lies between them, else `end`. */
const boundAfter = (from: Buffer, guess: Buffer, end: Buffer): Buffer => (guess.compare(from) > 0 && guess.compare(end) < 0 ? guess : end);

/** The end of a prefix's range: the prefix with its last byte below 0xff incremented. */
function rangeEnd(b: Buffer): Buffer {
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const out = Buffer.from(b.subarray(0, i + 1));
      out[i]!++;
      return out;
    }
  }
  return Buffer.from([0]);
}

/** The end of a prefix's range, base64. */
const rangeEndB64 = (prefix: string): string => rangeEnd(Buffer.from(prefix)).toString('base64');

interface RawKv {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  lease?: string;
}

const kvOf = (r: RawKv): KeyValue => ({
  key: unb64(r.key),
  value: unb64(r.value),
  createRevision: num(r.create_revision),
  modRevision: num(r.mod_revision),
  lease: r.lease ?? '0',
});

export interface EtcdOptions {
  /** Per-request timeout, ms (not for watches). */
  timeoutMs?: number;
  /** Keys per range request when reading a prefix (default RANGE_PAGE). */
  pageKeys?: number;
}

export class Etcd {
  /** The endpoint that answered last: tried first. */
  private current = 0;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  private readonly timeoutMs: number;
  private readonly pageKeys: number;

  constructor(
    readonly endpoints: readonly string[],
    opts: EtcdOptions = {},
  ) {
    if (!endpoints.length) throw new Error('no etcd endpoint');
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.pageKeys = opts.pageKeys ?? RANGE_PAGE;
  }

  close(): void {
    this.agent.destroy();
  }

  /**
   * POST `body` to `path` on one endpoint; the parsed JSON answer. A kept-alive
   * socket that the member (or a proxy) closed while idle fails the request
   * before it was sent: that one is sent again, once, on a new socket.
   */
  private post(endpoint: string, path: string, body: unknown, again = true): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const data = JSON.stringify(body);
      const req = http.request(
        { ...target(endpoint, path), method: 'POST', agent: this.agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) }, timeout: this.timeoutMs },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (e) => reject(new UnreachableError(`${endpoint}: ${e.message}`)));
          res.on('end', () => {
            let doc: Record<string, unknown>;
            try {
              doc = JSON.parse(Buffer.concat(chunks).toString() || '{}');
            } catch (e) {
              reject(new UnreachableError(`${endpoint}${path}: not JSON (${(e as Error).message})`));
              return;
            }
            if (res.statusCode !== 200) {
              const msg = String(doc.error ?? doc.message ?? `HTTP ${res.statusCode}`);
              // A member without a leader, or one shutting down, is as good as unreachable: try another.
              if (res.statusCode! >= 500 || /no leader|stopped|timed out/i.test(msg)) reject(new UnreachableError(`${endpoint}: ${msg}`));
              else reject(new Error(`etcd ${path}: ${msg}`));
              return;
            }
            resolve(doc);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (again && req.reusedSocket && (e.code === 'ECONNRESET' || e.code === 'EPIPE')) resolve(this.post(endpoint, path, body, false));
        else reject(e instanceof UnreachableError ? e : new UnreachableError(`${endpoint}: ${e.message}`));
      });
      req.end(data);
    });
  }

  /** POST to the endpoints in turn, from the one that answered last. */
  private async call(path: string, body: unknown): Promise<Record<string, unknown>> {
    let last: Error | undefined;
    for (let i = 0; i < this.endpoints.length; i++) {
      const at = (this.current + i) % this.endpoints.length;
      try {
        const out = await this.post(this.endpoints[at]!, path, body);
        this.current = at;
        return out;
      } catch (err) {
        if (!(err instanceof UnreachableError)) throw err;
        last = err;
      }
    }
    throw new UnreachableError(`no etcd endpoint answered (${last?.message})`);
  }

  /**
   * Every key under `prefix`, at `revision` (0: the latest), with the
   * revision read: in pages of at most `pageKeys` keys, all at the first
   * page's revision (a million keys in one answer would be one huge JSON
   * document). After the first page, the rest of the prefix is cut into
   * ranges of about a page each (from the span the last pages took), read
   * RANGE_PARALLEL at a time: etcd serves them side by side while this
   * process parses. Every request is bounded so: etcd 3.4 walks every key
   * from a range's start to its end for each request, limit or not, so
   * pages up to the prefix's end would make a read of n keys cost
   * n²/pageKeys.
   */
  async rangePrefix(prefix: string, revision = 0): Promise<{ revision: number; kvs: KeyValue[] }> {
    const base = Buffer.from(prefix);
    const end = rangeEnd(base);
    const first = await this.readRange(base, base, end, revision, undefined, true);
    const at = first.revision;
    const kvs = first.kvs;
    let from = first.next;
    let stride = first.stride;
    while (from && stride !== undefined) {
      const ranges: Array<[Buffer, Buffer]> = [];
      for (let i = 0; i < RANGE_PARALLEL && from.compare(end) < 0; i++) {
        const upTo = boundAfter(from, numKey(base, keyNum(base, from) + stride), end);
        ranges.push([from, upTo]);
        from = upTo;
      }
      if (!ranges.length) break;
      const parts = await Promise.all(ranges.map(([a, b]) => this.readRange(base, a, b, at, stride)));
      let n = 0;
      for (const p of parts) {
        for (const kv of p.kvs) kvs.push(kv);
        n += p.kvs.length;
      }
      // The next ranges hold about a page each if the keys go on as dense (within 1/4 to 16 times the last stride).
      const want = stride * BigInt(this.pageKeys * ranges.length);
      const next = want / BigInt(Math.max(1, n));
      stride = next < stride / 4n ? stride / 4n : next > stride * 16n ? stride * 16n : next;
      if (stride < 1n) stride = 1n;
    }
    return { revision: at, kvs };
  }

  /**
   * The keys in [from, end) at `revision` (0: the latest), page by page,
   * each page's range reaching `stride` (a key number) past its start once
   * a page told how far a page's worth reaches. `firstPageOnly`: stop after
   * one page, returning where the rest starts.
   */
  private async readRange(
    base: Buffer,
    from: Buffer,
    end: Buffer,
    revision: number,
    stride: bigint | undefined,
    firstPageOnly = false,
  ): Promise<{ revision: number; kvs: KeyValue[]; stride: bigint | undefined; next?: Buffer }> {
    const kvs: KeyValue[] = [];
    let at = revision;
    for (;;) {
      const upTo = stride === undefined ? end : boundAfter(from, numKey(base, keyNum(base, from) + stride), end);
      const out = await this.call('/v3/kv/range', { key: from.toString('base64'), range_end: upTo.toString('base64'), limit: String(this.pageKeys), ...(at ? { revision: String(at) } : {}) });
      if (!at) at = num((out.header as { revision?: string })?.revision);
      const page = (out.kvs as RawKv[]) ?? [];
      for (const r of page) kvs.push(kvOf(r));
      if (out.more && page.length) {
        // A page's worth of keys took this span: the next page's range is as long.
        const last = Buffer.from(page[page.length - 1]!.key!, 'base64');
        stride = keyNum(base, last) - keyNum(base, Buffer.from(page[0]!.key!, 'base64')) + 1n;
        // The next page starts just after the last key: the key with a NUL byte appended.
        from = Buffer.concat([last, Buffer.from([0])]);
        if (firstPageOnly) return { revision: at, kvs, stride, next: from };
        continue;
      }
      if (upTo === end) return { revision: at, kvs, stride };
      // The range held less than a page: the next one reaches further.
      stride = stride! * BigInt(Math.min(16, Math.ceil((2 * this.pageKeys) / Math.max(1, page.length))));
      from = upTo;
    }
  }

  /** One key, or undefined. */
  async get(key: string): Promise<KeyValue | undefined> {
    const out = await this.call('/v3/kv/range', { key: b64(key) });
    const kvs = (out.kvs as RawKv[]) ?? [];
    return kvs.length ? kvOf(kvs[0]!) : undefined;
  }

  async put(key: string, value: string, lease = '0'): Promise<number> {
    const out = await this.call('/v3/kv/put', { key: b64(key), value: b64(value), ...(lease !== '0' ? { lease } : {}) });
    return num((out.header as { revision?: string }).revision);
  }

  async delete(key: string): Promise<number> {
    const out = await this.call('/v3/kv/deleterange', { key: b64(key) });
    return num((out.header as { revision?: string }).revision);
  }

  /**
   * One transaction: if every key's mod revision is as given, do `ops`.
   * Returns whether it succeeded and the store's revision after it.
   */
  async txn(compare: readonly ModRevisionCompare[], ops: readonly TxnOp[], otherwise: readonly TxnOp[] = []): Promise<{ succeeded: boolean; revision: number }> {
    const req = (o: TxnOp) =>
      'put' in o
        ? { request_put: { key: b64(o.put.key), value: b64(o.put.value), ...(o.put.lease && o.put.lease !== '0' ? { lease: o.put.lease } : {}) } }
        : 'delete' in o
          ? { request_delete_range: { key: b64(o.delete.key), ...(o.delete.prefix ? { range_end: rangeEndB64(o.delete.key) } : {}) } }
          : { request_range: { key: b64(o.range.key) } };
    const out = await this.call('/v3/kv/txn', {
      compare: compare.map((c) => ({ key: b64(c.key), target: 'MOD', result: 'EQUAL', mod_revision: String(c.modRevision) })),
      success: ops.map(req),
      failure: otherwise.map(req),
    });
    return { succeeded: out.succeeded === true, revision: num((out.header as { revision?: string }).revision) };
  }

  async leaseGrant(ttlSeconds: number): Promise<string> {
    const out = await this.call('/v3/lease/grant', { TTL: String(ttlSeconds) });
    if (out.error) throw new Error(`lease grant: ${String(out.error)}`);
    return String(out.ID);
  }

  /** Renew a lease once; false if it is gone (expired or revoked). */
  async leaseKeepAlive(id: string): Promise<boolean> {
    // The gateway serves the bidirectional stream as one request, one answer.
    const out = await this.call('/v3/lease/keepalive', { ID: id });
    const result = (out.result ?? out) as { TTL?: string };
    return num(result.TTL) > 0;
  }

  async leaseRevoke(id: string): Promise<void> {
    try {
      await this.call('/v3/lease/revoke', { ID: id });
    } catch (err) {
      if (!/not found/i.test((err as Error).message)) throw err;
    }
  }

  async compact(revision: number): Promise<void> {
    await this.call('/v3/kv/compaction', { revision: String(revision), physical: true });
  }

  /**
   * Watch every key under `prefix` from `startRevision`. `onBatch` gets the
   * events whole revision by whole revision; the returned promise settles
   * when the watch ends: rejected with CompactedError if the start revision
   * is compacted away, UnreachableError when the stream breaks; resolved
   * only when `cancel()` was called.
   */
  watchPrefix(prefix: string, startRevision: number, onBatch: (b: WatchBatch) => void): { done: Promise<void>; cancel(): void } {
    let cancelled = false;
    let req: http.ClientRequest | undefined;
    const done = (async () => {
      let last: Error | undefined;
      for (let i = 0; i < this.endpoints.length && !cancelled; i++) {
        const at = (this.current + i) % this.endpoints.length;
        try {
          await this.watchOn(this.endpoints[at]!, prefix, startRevision, onBatch, (r) => (req = r), () => cancelled);
          return;
        } catch (err) {
          if (!(err instanceof UnreachableError) || cancelled) throw err;
          last = err;
          // A stream that delivered events and then broke must be restarted by the caller (it knows from where).
          if ((err as UnreachableError & { delivered?: boolean }).delivered) throw err;
        }
      }
      if (!cancelled) throw new UnreachableError(`no etcd endpoint answered the watch (${last?.message})`);
    })();
    return {
      done,
      cancel() {
        cancelled = true;
        req?.destroy();
      },
    };
  }

  private watchOn(
    endpoint: string,
    prefix: string,
    startRevision: number,
    onBatch: (b: WatchBatch) => void,
    setReq: (r: http.ClientRequest) => void,
    cancelled: () => boolean,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const body = JSON.stringify({
        create_request: { key: b64(prefix), range_end: rangeEndB64(prefix), start_revision: String(startRevision), progress_notify: true },
      });
      let delivered = false;
      let settled = false;
      const fail = (e: Error) => {
        if (settled) return;
        settled = true;
        if (cancelled()) return resolve();
        const u = e instanceof UnreachableError || e instanceof CompactedError ? e : new UnreachableError(`${endpoint}: watch: ${e.message}`);
        if (u instanceof UnreachableError) (u as UnreachableError & { delivered?: boolean }).delivered = delivered;
        reject(u);
      };
      // A watch has no request timeout: a quiet store sends progress notifications (every 10 min), and a dead
      // member is found by the TCP keepalive and by the caller's health checks.
      const req = http.request({ ...target(endpoint, '/v3/watch'), method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          fail(new UnreachableError(`${endpoint}: watch: HTTP ${res.statusCode}`));
          return;
        }
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            let msg: { result?: Record<string, unknown>; error?: { message?: string } };
            try {
              msg = JSON.parse(line);
            } catch {
              fail(new UnreachableError(`${endpoint}: watch: a line that is not JSON`));
              req.destroy();
              return;
            }
            if (msg.error) {
              fail(new UnreachableError(`${endpoint}: watch: ${msg.error.message}`));
              req.destroy();
              return;
            }
            const r = msg.result ?? {};
            if (r.compact_revision && num(r.compact_revision) > 0) {
              fail(new CompactedError(num(r.compact_revision)));
              req.destroy();
              return;
            }
            if (r.canceled) {
              fail(new UnreachableError(`${endpoint}: watch cancelled by the store: ${String(r.cancel_reason ?? '')}`));
              req.destroy();
              return;
            }
            const events = ((r.events as Array<{ type?: string; kv: RawKv }>) ?? []).map((e) => ({
              type: e.type === 'DELETE' ? ('delete' as const) : ('put' as const),
              kv: kvOf(e.kv),
            }));
            if (r.created && !events.length) {
              this.current = this.endpoints.indexOf(endpoint);
              continue;
            }
            delivered = true;
            onBatch({ headerRevision: num((r.header as { revision?: string })?.revision), events });
          }
        });
        res.on('end', () => fail(new UnreachableError(`${endpoint}: the watch stream ended`)));
        res.on('close', () => fail(new UnreachableError(`${endpoint}: the watch stream closed`)));
        res.on('error', (e) => fail(e));
      });
      setReq(req);
      req.on('socket', (s) => s.setKeepAlive(true, 2000));
      req.on('error', (e) => fail(e));
      req.end(body);
    });
  }
}
