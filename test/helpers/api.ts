// A small typed client of nvgred's control API (docs/api.md): HTTP/1.1 over
// the daemon's Unix socket, one fresh connection per request (no keep-alive
// pool: a daemon restarted or killed between requests must not leave a dead
// pooled socket behind).
//
//   const api = new ApiClient('/tmp/x/api.sock');
//   const r = await api.request('GET', '/v1/status');
//   r.status; r.body.generation; r.raw (the exact bytes received)

import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { createConnection } from 'node:net';

export interface ApiResponse<T = any> {
  status: number;
  /** The parsed JSON body; the text itself when it is not JSON (YAML); undefined when empty. */
  body: T;
  /** The response body exactly as received. */
  raw: Buffer;
  headers: IncomingHttpHeaders;
}

/** The error body every failure has. */
export interface ApiErrorBody {
  error: {
    code: string;
    message: string;
    details: Array<{ code: string; path: string; value: unknown; message: string }>;
  };
}

export type RequestBody =
  | undefined
  /** sent as is (set content-type yourself when it matters) */
  | string
  | Buffer
  /** a body streamed in chunks (chunked transfer encoding unless content-length is given) */
  | AsyncIterable<Buffer>
  /** anything else: JSON.stringify'd, content-type application/json */
  | unknown;

export interface RequestOptions {
  /** Give up (reject) after this long. Default 30 s. */
  timeoutMs?: number;
}

/** A request that got no HTTP response (connection refused, reset, timeout). */
export class ApiConnectionError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'ApiConnectionError';
  }
}

function isAsyncIterable(x: unknown): x is AsyncIterable<Buffer> {
  return typeof x === 'object' && x !== null && Symbol.asyncIterator in x;
}

/** Percent-encode each key value as one path segment (`10.0.1.0/24` -> `10.0.1.0%2F24`). */
export function keyPath(resource: string, ...key: Array<string | number>): string {
  return `/v1/${resource}/${key.map((k) => encodeURIComponent(String(k))).join('/')}`;
}

/** `?a=1&b=2` from an object (undefined values left out). */
export function query(q: Record<string, string | number | boolean | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined) p.append(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

export class ApiClient {
  constructor(readonly socketPath: string) {}

  /**
   * One request. Resolves with the response whatever its status; rejects
   * with an ApiConnectionError only when no response came. A response that
   * arrives while the body is still being sent (413 on a large body) is
   * returned; the write error that follows is ignored.
   */
  request<T = any>(
    method: string,
    path: string,
    body?: RequestBody,
    headers: Record<string, string | number> = {},
    opts: RequestOptions = {},
  ): Promise<ApiResponse<T>> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    let payload: string | Buffer | AsyncIterable<Buffer> | undefined;
    const h: Record<string, string | number> = {};
    if (body === undefined) payload = undefined;
    else if (typeof body === 'string' || Buffer.isBuffer(body) || isAsyncIterable(body)) payload = body;
    else {
      payload = JSON.stringify(body);
      h['content-type'] = 'application/json';
    }
    if (typeof payload === 'string' || Buffer.isBuffer(payload)) h['content-length'] = Buffer.byteLength(payload);
    for (const [k, v] of Object.entries(headers)) h[k.toLowerCase()] = v;

    return new Promise<ApiResponse<T>>((resolve, reject) => {
      let settled = false;
      const fail = (e: Error & { code?: string }) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new ApiConnectionError(`${method} ${path} on ${this.socketPath}: ${e.message}`, e.code));
      };
      const req = httpRequest({ socketPath: this.socketPath, method, path, headers: h, agent: false });
      const timer = setTimeout(() => {
        fail(Object.assign(new Error(`no response within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
        req.destroy();
      }, timeoutMs);
      req.on('error', (e) => fail(e));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => fail(e));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const raw = Buffer.concat(chunks);
          const text = raw.toString('utf8');
          let parsed: unknown = undefined;
          if (raw.length) {
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = text;
            }
          }
          resolve({ status: res.statusCode ?? 0, body: parsed as T, raw, headers: res.headers });
        });
      });
      if (payload === undefined) req.end();
      else if (typeof payload === 'string' || Buffer.isBuffer(payload)) req.end(payload);
      else {
        const it = payload;
        void (async () => {
          try {
            for await (const chunk of it) {
              if (req.destroyed || settled) break;
              if (!req.write(chunk)) {
                await new Promise<void>((r) => {
                  const done = () => {
                    req.off('drain', done);
                    req.off('close', done);
                    r();
                  };
                  req.on('drain', done);
                  req.on('close', done);
                });
              }
            }
            if (!req.destroyed) req.end();
          } catch (e) {
            req.destroy(e as Error);
          }
        })();
      }
    });
  }

  get<T = any>(path: string, headers?: Record<string, string>): Promise<ApiResponse<T>> {
    return this.request<T>('GET', path, undefined, headers);
  }
  post<T = any>(path: string, body?: RequestBody, headers?: Record<string, string>): Promise<ApiResponse<T>> {
    return this.request<T>('POST', path, body, headers);
  }
  put<T = any>(path: string, body?: RequestBody, headers?: Record<string, string>): Promise<ApiResponse<T>> {
    return this.request<T>('PUT', path, body, headers);
  }
  patch<T = any>(path: string, body?: RequestBody, headers?: Record<string, string>): Promise<ApiResponse<T>> {
    return this.request<T>('PATCH', path, body, headers);
  }
  delete<T = any>(path: string, headers?: Record<string, string>): Promise<ApiResponse<T>> {
    return this.request<T>('DELETE', path, undefined, headers);
  }

  /** GET /v1/status, which must answer 200. */
  async status(): Promise<Status> {
    const r = await this.get<Status>('/v1/status');
    if (r.status !== 200) throw new Error(`GET /v1/status: ${r.status} ${r.raw.toString()}`);
    return r.body;
  }
}

/** GET /v1/status (docs/api.md). */
export interface Status {
  version: string;
  host: string | null;
  pid: number;
  uptime_seconds: number;
  config_file: string;
  state_dir: string | null;
  state_error: string | null;
  generation: number;
  counts: Record<'provider_addresses' | 'provider_routes' | 'customer_routes' | 'lookup_records' | 'vm_adapters', number>;
  ports: Array<{ name: string; vsid: number; mac: string; netns: string | null; ifindex: number | null; mtu: number | null; up: boolean }>;
  last_reload: { successful: boolean; timestamp: string; error: string | null };
}

/** Shorthand: `request(socket)(method, path, body?, headers?)`. */
export function apiRequest(socketPath: string) {
  const c = new ApiClient(socketPath);
  return <T = any>(method: string, path: string, body?: RequestBody, headers?: Record<string, string | number>) =>
    c.request<T>(method, path, body, headers);
}

export interface RawResponse extends ApiResponse {
  /** Body bytes written before the server stopped reading (or all of them). */
  bytesSent: number;
  /** The write error, if the server closed the connection while the body was being sent. */
  writeError: string | undefined;
}

/**
 * One request over a bare socket, for bodies the server refuses part way
 * (413): keeps reading the response after a write fails (EPIPE/ECONNRESET),
 * which node:http's client does not. `body` is sent with the given headers
 * as is (set content-length or transfer-encoding yourself; with
 * `chunked: true` each piece is framed as an HTTP/1.1 chunk).
 */
export function rawRequest(
  socketPath: string,
  method: string,
  path: string,
  headers: Record<string, string | number>,
  body: Iterable<Buffer> | AsyncIterable<Buffer>,
  opts: {
    chunked?: boolean;
    timeoutMs?: number;
    /**
     * Once this many body bytes are written (and drained), wait up to
     * `pauseMs` (default 5 s) for the response before writing more.
     */
    pauseAfterBytes?: number;
    pauseMs?: number;
  } = {},
): Promise<RawResponse> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise<RawResponse>((resolve, reject) => {
    const sock = createConnection(socketPath);
    const received: Buffer[] = [];
    let bytesSent = 0;
    let writeError: string | undefined;
    let done = false;
    const timer = setTimeout(() => finish(new Error(`${method} ${path}: no complete response within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) return reject(err);
      const all = Buffer.concat(received);
      const sep = all.indexOf('\r\n\r\n');
      if (sep < 0) return reject(new Error(`${method} ${path}: no HTTP response (got ${all.length} bytes; write error ${writeError})`));
      const head = all.subarray(0, sep).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '')?.[1] ?? 0);
      const hdrs: IncomingHttpHeaders = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) hdrs[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const len = Number(hdrs['content-length'] ?? NaN);
      const raw = Number.isFinite(len) ? all.subarray(sep + 4, sep + 4 + len) : all.subarray(sep + 4);
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw.toString('utf8'));
      } catch {
        parsed = raw.toString('utf8');
      }
      resolve({ status, body: parsed, raw: Buffer.from(raw), headers: hdrs, bytesSent, writeError });
    };
    /** Complete once the head and content-length bytes of body are in. */
    const complete = () => {
      const all = Buffer.concat(received);
      const sep = all.indexOf('\r\n\r\n');
      if (sep < 0) return false;
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(all.subarray(0, sep).toString('latin1'));
      return m !== null && all.length >= sep + 4 + Number(m[1]);
    };
    sock.on('data', (b: Buffer) => {
      received.push(b);
      if (complete()) finish();
    });
    sock.on('end', () => finish());
    sock.on('close', () => finish());
    sock.on('error', (e: NodeJS.ErrnoException) => {
      // A write refused because the server stopped reading: keep what was read.
      if (!writeError) writeError = e.code ?? e.message;
      if (received.length === 0 && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED' || e.code === 'EACCES')) finish(e);
    });
    sock.on('connect', () => {
      const h = Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('');
      sock.write(`${method} ${path} HTTP/1.1\r\nhost: nvgred\r\nconnection: close\r\n${h}\r\n`);
      void (async () => {
        try {
          // Give the server a moment to answer from the head alone (a
          // declared length over the limit), as `Expect: 100-continue` would.
          const t0 = Date.now();
          while (received.length === 0 && !done && Date.now() - t0 < 200) await new Promise((r) => setTimeout(r, 10));
          for await (const piece of body as AsyncIterable<Buffer>) {
            // Let a poll phase read what the server sent before writing again:
            // a write that fails (EPIPE) makes node drop the unread response.
            await new Promise((r) => setImmediate(r));
            if (done || sock.destroyed || writeError || received.length > 0) return;
            if (opts.pauseAfterBytes !== undefined && bytesSent >= opts.pauseAfterBytes) {
              // Past the point where the server should refuse: wait for its
              // answer instead of racing it with more writes.
              const t1 = Date.now();
              while (received.length === 0 && !done && !sock.destroyed && Date.now() - t1 < (opts.pauseMs ?? 5000)) {
                await new Promise((r) => setTimeout(r, 10));
              }
              if (done || sock.destroyed || received.length > 0) return;
            }
            const framed = opts.chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece;
            const ok = sock.write(framed);
            bytesSent += piece.length;
            if (!ok) {
              await new Promise<void>((r) => {
                const go = () => {
                  sock.off('drain', go);
                  sock.off('close', go);
                  r();
                };
                sock.on('drain', go);
                sock.on('close', go);
              });
            }
          }
          if (opts.chunked && !done && !sock.destroyed && !writeError) sock.write('0\r\n\r\n');
        } catch (e) {
          writeError = String(e);
        }
      })();
    });
  });
}
