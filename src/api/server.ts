// The control API: JSON over HTTP on a Unix socket (docs/api.md). Routing,
// body limits and error mapping live here; every change goes through the
// PolicyStore, which validates, applies and persists it.

import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname, isAbsolute } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { decodeUtf8, parseConfigText } from '../config/index.js';
import { isNvgreError, nvgreError, statusOf, type NvgreError } from '../errors.js';
import { parseFilter, parseKey, resourceByPath, type Resource } from '../model/resources.js';
import type { NativeCore } from '../native.js';
import type { Logger, Logs } from '../daemon/log.js';
import type { PolicyStore } from '../daemon/store.js';
import { writeFileAtomic } from '../daemon/state.js';
import { streamEvents, type EventBus, type StreamOptions } from './events.js';
import { resolveNextHop } from './nexthop.js';
import { statusOf as daemonStatus, type StatusSource } from './status.js';

export const MAX_BODY_BYTES = 64 * 1024 * 1024;

export interface ApiContext extends StatusSource {
  store: PolicyStore;
  core: NativeCore;
  log: Logger;
  logs: Logs;
  /** Learning and its deletions, streamed on GET /v1/events. */
  events?: EventBus;
  /** Heartbeat and buffering of the event streams. */
  eventStream?: StreamOptions;
}

type Reply = { status: number; body: unknown; yaml?: boolean };

/** Read the whole body within the size limit, as UTF-8 text. */
async function readBody(req: IncomingMessage): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw tooLarge();
    chunks.push(chunk);
  }
  return decodeUtf8(Buffer.concat(chunks), 'the request body');
}

function tooLarge(): NvgreError {
  return nvgreError('NVGRE_ERR_TOO_LARGE', `the request body is larger than ${MAX_BODY_BYTES} bytes`);
}

function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? 'application/json').split(';')[0]!.trim().toLowerCase();
}

/** A JSON body (or YAML where `yamlAllowed`), parsed. */
async function body(req: IncomingMessage, yamlAllowed = false): Promise<unknown> {
  const type = mediaType(req);
  const isYaml = yamlAllowed && (type === 'application/yaml' || type === 'application/x-yaml' || type === 'text/yaml');
  if (type !== 'application/json' && !isYaml) {
    throw nvgreError('NVGRE_ERR_MEDIA_TYPE', `content type ${type} is not accepted here: send application/json${yamlAllowed ? ' or application/yaml' : ''}`);
  }
  const text = await readBody(req);
  if (isYaml) return parseConfigText(text, 'the request body');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw nvgreError('NVGRE_ERR_BAD_REQUEST', `the request body is not valid JSON: ${(err as Error).message}`);
  }
}

function methodNotAllowed(method: string, path: string, allowed: string): NvgreError {
  return nvgreError('NVGRE_ERR_METHOD', `${method} is not allowed on ${path} (allowed: ${allowed})`);
}

async function route(ctx: ApiContext, req: IncomingMessage): Promise<Reply> {
  const url = new URL(req.url ?? '/', 'http://nvgred');
  const method = req.method ?? 'GET';
  const segments = url.pathname.split('/').filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw nvgreError('NVGRE_ERR_BAD_REQUEST', `bad percent-encoding in path segment ${s}`);
    }
  });
  if (segments[0] !== 'v1') throw nvgreError('NVGRE_ERR_NOT_FOUND', `no such path ${url.pathname} (the API is under /v1)`);
  const [, name, ...rest] = segments;
  const { store } = ctx;

  switch (name) {
    case 'status':
      if (method !== 'GET') throw methodNotAllowed(method, url.pathname, 'GET');
      return { status: 200, body: daemonStatus(ctx) };
    case 'next-hop': {
      if (method !== 'GET') throw methodNotAllowed(method, url.pathname, 'GET');
      return { status: 200, body: resolveNextHop(ctx.core, store.policy, url.searchParams) };
    }
    case 'policy':
      if (method === 'GET') {
        const yaml = (req.headers.accept ?? '').includes('yaml');
        return { status: 200, body: store.policy, yaml };
      }
      if (method === 'PUT') return { status: 200, body: await store.applyDocument(await body(req, true)) };
      throw methodNotAllowed(method, url.pathname, 'GET, PUT');
    case 'reload':
      if (method !== 'POST') throw methodNotAllowed(method, url.pathname, 'POST');
      return { status: 200, body: await store.reload() };
    case 'log':
      if (method === 'GET') return { status: 200, body: ctx.logs.levels() };
      if (method === 'PUT') {
        const b = (await body(req)) as { level?: unknown; component?: unknown } | null;
        if (b?.component !== undefined && typeof b.component !== 'string') {
          throw nvgreError('NVGRE_ERR_BAD_REQUEST', `component: ${JSON.stringify(b.component)} must be a string`);
        }
        ctx.logs.setLevel(b?.level, b?.component);
        ctx.log.info({ level: b?.level, component: b?.component ?? 'all' }, 'log level changed');
        return { status: 200, body: ctx.logs.levels() };
      }
      throw methodNotAllowed(method, url.pathname, 'GET, PUT');
    case 'learned': {
      if (rest.length) break;
      if (method !== 'GET') throw methodNotAllowed(method, url.pathname, 'GET');
      if ([...url.searchParams.keys()].length) throw nvgreError('NVGRE_ERR_BAD_REQUEST', `${url.pathname} takes no query parameters`);
      const ttlMs = store.policy.learning.ttl_seconds * 1000;
      const learned = store.learnedRecords().map(({ record, last_seen }) => ({
        record,
        last_seen: last_seen.toISOString(),
        expires_at: new Date(last_seen.getTime() + ttlMs).toISOString(),
      }));
      return { status: 200, body: { learned } };
    }
    case 'events':
      if (rest.length) break;
      if (method !== 'GET') throw methodNotAllowed(method, url.pathname, 'GET');
      throw nvgreError('NVGRE_ERR_UNAVAILABLE', 'this daemon has no event stream');
    case 'config':
      if (rest[0] !== 'save' || rest.length !== 1) break;
      if (method !== 'POST') throw methodNotAllowed(method, url.pathname, 'POST');
      return { status: 200, body: saveConfig(store, await body(req)) };
  }

  const res = name ? resourceByPath(name) : undefined;
  if (!res) throw nvgreError('NVGRE_ERR_NOT_FOUND', `no such path ${url.pathname}`);
  return rest.length ? one(res, method, rest, ctx, req) : collection(res, method, url, ctx, req);
}

async function collection(res: Resource, method: string, url: URL, ctx: ApiContext, req: IncomingMessage): Promise<Reply> {
  const { store } = ctx;
  switch (method) {
    case 'GET':
      return { status: 200, body: { [res.section]: store.list(res, parseFilter(res, url.searchParams)) } };
    case 'POST':
      return { status: 201, body: await store.create(res, await body(req)) };
    case 'DELETE': {
      const filter = parseFilter(res, url.searchParams, ['all']);
      if (!filter.length && url.searchParams.get('all') !== 'true') {
        throw nvgreError('NVGRE_ERR_BAD_REQUEST', `flushing every ${res.noun} needs ?all=true (or filter by ${res.fields.join(', ')})`);
      }
      return { status: 200, body: { deleted: await store.flush(res, filter) } };
    }
  }
  throw methodNotAllowed(method, url.pathname, 'GET, POST, DELETE');
}

async function one(res: Resource, method: string, segments: string[], ctx: ApiContext, req: IncomingMessage): Promise<Reply> {
  const { store } = ctx;
  const key = parseKey(res, segments);
  switch (method) {
    case 'GET':
      return { status: 200, body: store.get(res, key) };
    case 'PUT': {
      const { record, created } = await store.replace(res, key, await body(req));
      return { status: created ? 201 : 200, body: record };
    }
    case 'PATCH':
      return { status: 200, body: await store.change(res, key, await body(req)) };
    case 'DELETE':
      return { status: 200, body: { deleted: await store.remove(res, key) } };
  }
  throw methodNotAllowed(method, `/v1/${res.path}/…`, 'GET, PUT, PATCH, DELETE');
}

function saveConfig(store: PolicyStore, request: unknown): { path: string } {
  const path = (request as { path?: unknown } | null)?.path ?? store.configFile;
  if (typeof path !== 'string' || !isAbsolute(path)) {
    throw nvgreError('NVGRE_ERR_BAD_REQUEST', `path: ${JSON.stringify(path)} must be an absolute file path`);
  }
  try {
    writeFileAtomic(path, renderConfig(store.policy), 0o640);
  } catch (err) {
    throw nvgreError('NVGRE_ERR_IO', `cannot write ${path}: ${(err as Error).message}`);
  }
  return { path };
}

/** The running policy as a config file (it loads back to the same policy). */
export function renderConfig(policy: unknown): string {
  return `# nvgred policy, saved ${new Date().toISOString()}\n${toYaml(policy, { lineWidth: 0 })}`;
}

function send(res: ServerResponse, reply: Reply): void {
  if (reply.yaml) {
    res.writeHead(reply.status, { 'content-type': 'application/yaml' }).end(renderConfig(reply.body));
    return;
  }
  const text = JSON.stringify(reply.body);
  res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

function errorReply(err: unknown, log: Logger): Reply {
  if (isNvgreError(err)) {
    return { status: statusOf(err.code), body: { error: { code: err.code, message: err.message, details: err.details ?? [] } } };
  }
  log.error({ err }, 'API request failed');
  return { status: 500, body: { error: { code: 'NVGRE_ERR_INTERNAL', message: (err as Error)?.message ?? String(err), details: [] } } };
}

/** GET /v1/events: a stream, not a reply (other methods get their 405 from route()). */
function isEventsPath(url: string | undefined): boolean {
  const path = (url ?? '').split('?')[0]!.replace(/\/+$/, '');
  return path === '/v1/events';
}

/** Refuse to start over a live daemon's socket; remove a dead one's. */
async function clearStaleSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const live = await new Promise<boolean>((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw nvgreError('NVGRE_ERR_CONFLICT', `another daemon is listening on ${path}`);
  rmSync(path, { force: true });
}

export async function serveApi(ctx: ApiContext, socketPath: string): Promise<Server> {
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o750 });
  await clearStaleSocket(socketPath);
  const server = createServer((req, res) => {
    if (isEventsPath(req.url) && req.method === 'GET' && ctx.events) {
      const url = new URL(req.url ?? '/', 'http://nvgred');
      if ([...url.searchParams.keys()].length) {
        send(res, errorReply(nvgreError('NVGRE_ERR_BAD_REQUEST', `${url.pathname} takes no query parameters (filter the stream's events yourself)`), ctx.log));
        return;
      }
      streamEvents(ctx.events, req, res, ctx.eventStream);
      return;
    }
    route(ctx, req).then(
      (reply) => send(res, reply),
      (err: unknown) => {
        const reply = errorReply(err, ctx.log);
        // A body that was refused part way: answer, then stop reading it,
        // once the answer is out (the response is written on a later tick:
        // closing the connection at once could lose it).
        if (reply.status === 413) {
          res.setHeader('connection', 'close');
          res.once('finish', () => req.destroy());
        }
        send(res, reply);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(socketPath, 0o660);
  return server;
}
