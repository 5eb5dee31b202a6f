// The control API client: HTTP/1.1 over the daemon's Unix socket (node:http
// with `socketPath`), JSON bodies. Every failure becomes a CliError with its
// exit status: connection problems name the cause and the socket path, API
// errors carry the daemon's message and field details.

import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { CliError, EXIT, exitCodeForHttpStatus } from './exit.js';

/** Default socket when neither -s nor $NVGRED_SOCKET is given. */
export const DEFAULT_SOCKET = '/run/nvgred/nvgred.sock';
/** Idle timeout of one request: reloads of large policies take time. */
export const DEFAULT_TIMEOUT_MS = 120_000;

export interface ApiResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body as text (UTF-8). */
  text: string;
  /** The body parsed, when it is JSON; undefined otherwise. */
  json: unknown;
}

export interface RequestOptions {
  /** A value to send as JSON. */
  body?: unknown;
  /** The Accept header (default application/json). */
  accept?: string;
}

/** One field error of an API error body, as far as the CLI uses it. */
interface ApiFieldError {
  message?: unknown;
  line?: unknown;
  column?: unknown;
}

/** `line L:C: message` (the form the config loader uses), or just the message. */
export function formatDetail(d: unknown): string {
  if (typeof d === 'string') return d;
  if (d === null || typeof d !== 'object') return String(d);
  const fe = d as ApiFieldError;
  const msg = typeof fe.message === 'string' ? fe.message : JSON.stringify(d);
  if (typeof fe.line === 'number') {
    return `line ${fe.line}${typeof fe.column === 'number' ? `:${fe.column}` : ''}: ${msg}`;
  }
  return msg;
}

/**
 * A validation error's message and details as separate lines. When the
 * details are given separately, only the message's first line (its summary)
 * is kept: the rest of the message repeats the first few details.
 */
export function errorLines(message: string, details: readonly unknown[] | undefined): { message: string; details: string[] } {
  if (!details || details.length === 0) return { message, details: [] };
  const first = message.split('\n', 1)[0]!;
  return { message: first, details: details.map(formatDetail) };
}

function connectError(err: NodeJS.ErrnoException, socketPath: string): CliError {
  const code = err.code ?? '';
  let why: string;
  switch (code) {
    case 'ENOENT':
      why = `socket ${socketPath} does not exist (is nvgred running? use -s or $NVGRED_SOCKET for another socket)`;
      break;
    case 'ECONNREFUSED':
      why = `connection refused on ${socketPath} (nothing is listening: is nvgred running?)`;
      break;
    case 'EACCES':
    case 'EPERM':
      why = `permission denied on ${socketPath} (run as root or as a member of the daemon's group)`;
      break;
    case 'ENOTDIR':
      why = `socket ${socketPath}: a component of the path is not a directory`;
      break;
    case 'ENOTSOCK':
      why = `${socketPath} is not a socket`;
      break;
    case 'ECONNRESET':
    case 'EPIPE':
      why = `connection to ${socketPath} closed by the daemon before it answered`;
      break;
    default:
      why = `${socketPath}: ${err.message}`;
  }
  return new CliError(EXIT.UNREACHABLE, `cannot reach nvgred: ${why}`);
}

export class ApiClient {
  constructor(
    readonly socketPath: string,
    readonly timeoutMs: number = DEFAULT_TIMEOUT_MS,
  ) {}

  /** Send one request; resolves with any HTTP status, rejects (CliError) only when there is no answer. */
  request(method: string, path: string, opts: RequestOptions = {}): Promise<ApiResponse> {
    const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body), 'utf8');
    const headers: Record<string, string | number> = { Accept: opts.accept ?? 'application/json' };
    if (payload) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = payload.length;
    }
    return new Promise<ApiResponse>((resolve, reject) => {
      let answered = false;
      const req = httpRequest({ socketPath: this.socketPath, method, path, headers, agent: false, timeout: this.timeoutMs }, (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => reject(new CliError(EXIT.INTERNAL, `reading the answer from nvgred failed: ${e.message}`)));
        res.on('close', () => {
          if (!res.complete) reject(new CliError(EXIT.INTERNAL, 'the daemon closed the connection in the middle of its answer'));
        });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const type = String(res.headers['content-type'] ?? '');
          let json: unknown;
          if (/\bjson\b/i.test(type) || (type === '' && /^\s*[[{]/.test(text))) {
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      });
      req.on('timeout', () => {
        req.destroy(Object.assign(new Error('timeout'), { code: 'NVGRECTL_TIMEOUT' }));
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'NVGRECTL_TIMEOUT') {
          reject(
            new CliError(
              EXIT.INTERNAL,
              `no answer from nvgred on ${this.socketPath} within ${this.timeoutMs < 1000 ? `${this.timeoutMs} ms` : `${Math.round(this.timeoutMs / 1000)} s`} (${method} ${path})`,
            ),
          );
        } else if (answered) {
          reject(new CliError(EXIT.INTERNAL, `reading the answer from nvgred failed: ${e.message}`));
        } else {
          reject(connectError(e, this.socketPath));
        }
      });
      req.end(payload);
    });
  }

  /**
   * Follow a long-lived GET (an event stream): `onText` gets the body's text
   * as it arrives. Resolves with `ended` when the daemon ends the stream and
   * `aborted` when `signal` fires; rejects (CliError) when it cannot connect,
   * answers other than 2xx (the API error), or sends nothing, not even a
   * heartbeat, for `idleTimeoutMs`.
   */
  follow(
    path: string,
    onText: (text: string) => void,
    opts: { signal?: AbortSignal; idleTimeoutMs?: number; accept?: string } = {},
  ): Promise<'ended' | 'aborted'> {
    return new Promise((resolve, reject) => {
      let settled = false;
      let idle: NodeJS.Timeout | undefined;
      const done = (fn: () => void) => {
        if (settled) return;
        settled = true;
        if (idle) clearTimeout(idle);
        opts.signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const req = httpRequest({ socketPath: this.socketPath, method: 'GET', path, headers: { Accept: opts.accept ?? 'text/event-stream' }, agent: false });
      const armIdle = () => {
        if (opts.idleTimeoutMs === undefined) return;
        if (idle) clearTimeout(idle);
        idle = setTimeout(() => {
          done(() => reject(new CliError(EXIT.INTERNAL, `nvgred sent nothing on ${path} for ${Math.round(opts.idleTimeoutMs! / 1000)} s (not even a heartbeat): giving up`)));
          req.destroy();
        }, opts.idleTimeoutMs);
      };
      const onAbort = () => {
        done(() => resolve('aborted'));
        req.destroy();
      };
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort);
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            done(() => reject(apiError({ status, headers: res.headers, text, json })));
          });
          return;
        }
        armIdle();
        res.setEncoding('utf8');
        res.on('data', (t: string) => {
          if (settled) return;
          armIdle();
          onText(t);
        });
        res.on('end', () => done(() => resolve('ended')));
        res.on('close', () => done(() => resolve('ended')));
        res.on('error', () => done(() => resolve('ended')));
      });
      req.on('error', (e: NodeJS.ErrnoException) => done(() => reject(connectError(e, this.socketPath))));
      req.end();
    });
  }

  /**
   * Send one request and require a 2xx answer; any other status becomes a
   * CliError with the API's message, its details, and the mapped exit status.
   */
  async call(method: string, path: string, opts: RequestOptions = {}): Promise<ApiResponse> {
    const res = await this.request(method, path, opts);
    if (res.status >= 200 && res.status < 300) return res;
    throw apiError(res);
  }
}

/** The CliError for a non-2xx answer. */
export function apiError(res: ApiResponse): CliError {
  const exitCode = exitCodeForHttpStatus(res.status);
  const body = res.json as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined;
  const err = body && typeof body === 'object' ? body.error : undefined;
  if (err && typeof err === 'object' && typeof err.message === 'string') {
    const { message, details } = errorLines(err.message, Array.isArray(err.details) ? err.details : undefined);
    return new CliError(exitCode, message, { details });
  }
  const text = res.text.trim();
  const snippet = text.length > 200 ? `${text.slice(0, 199)}…` : text;
  return new CliError(exitCode, `the daemon answered HTTP ${res.status}${snippet ? `: ${snippet}` : ''}`);
}
