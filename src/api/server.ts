// The control API: JSON over HTTP on a Unix socket (docs/api.md). Routing,
// authority, body limits, timeouts and error mapping live here; every
// change goes through the PolicyStore, which validates, applies and
// persists it. Who may do what, and which connection gives way when there
// are too many, is connections.ts.

import { natMappings } from './nat.js';
import { chmodSync, existsSync, lstatSync, mkdirSync, realpathSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { decodeUtf8, parseConfigText } from '../config/index.js';
import { isNvgreError, nvgreError, statusOf, type NvgreError } from '../errors.js';
import { parseFilter, parseKey, resourceByPath, type Resource } from '../model/resources.js';
import type { NativeCore } from '../native.js';
import { LogThrottle, type Logger, type Logs } from '../daemon/log.js';
import type { PolicyStore } from '../daemon/store.js';
import type { FleetWriter } from '../fleet/writer.js';
import { writeFileAtomic } from '../daemon/state.js';
import { Connections, isRead, mayChange, type Caller } from './connections.js';
import { streamEvents, type EventBus, type StreamOptions } from './events.js';
import { resolveNextHop } from './nexthop.js';
import { statusOf as daemonStatus, type StatusSource } from './status.js';

export const MAX_BODY_BYTES = 64 * 1024 * 1024;
/**
 * YAML bodies are parsed on the event loop, and the yaml package needs far
 * more time and memory per byte than JSON.parse: the worst 128 KiB measured
 * (a syntax error on every line) took 1.4 s of CPU and 105 MiB, 1 MiB of
 * them 10 s and 800 MiB (docs/api.md). Larger documents are sent as JSON.
 */
export const MAX_YAML_BODY_BYTES = 128 * 1024;
/** Open connections, event streams included (connections.ts: what gives way beyond). */
export const MAX_CONNECTIONS = 64;
/** Open event streams per class of caller (those that may change; those that may only read). */
export const MAX_EVENT_STREAMS = 16;
/** A request's headers must be in this long after the connection opened or its last response. */
export const HEADERS_TIMEOUT_MS = 10_000;
/** The whole request, body included (64 MiB over a Unix socket takes well under a second). */
export const REQUEST_TIMEOUT_MS = 30_000;
/** A kept-alive connection with no request is closed after this (Node's default). */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/**
 * A response the client takes nothing of for this long is abandoned: it
 * stopped reading. (Node lets the first timeout after a write pass when that
 * write made progress: such a client is dropped 15 to 30 s after it stopped.)
 */
export const SEND_TIMEOUT_MS = 15_000;
/** How long a refused body is still read (and thrown away) after the answer is out. */
const LINGER_MS = 1_000;

export interface ApiContext extends StatusSource {
  store: PolicyStore;
  core: NativeCore;
  log: Logger;
  logs: Logs;
  /** Learning and its deletions, streamed on GET /v1/events. */
  events?: EventBus;
  /** Heartbeat and buffering of the event streams. */
  eventStream?: StreamOptions;
  /** The policy is in the store (fleet.md): record changes are written there. */
  fleet?: FleetWriter;
}

type Reply = { status: number; body: unknown; yaml?: boolean };

/**
 * Read the whole body within `limit` bytes, as UTF-8 text. Past the limit it
 * stops collecting but leaves the connection to the answer (sendAndClose):
 * destroying the request here would close the socket before the 413 is out.
 */
function readBody(req: IncomingMessage, limit: number, what: string): Promise<string> {
  const tooLarge = () => nvgreError('NVGRE_ERR_TOO_LARGE', `the request body is larger than ${limit} bytes${what}`);
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      req.off('data', onData);
      req.pause();
      reject(tooLarge());
    };
    req.on('data', onData);
    req.once('end', () => {
      try {
        resolve(decodeUtf8(Buffer.concat(chunks), 'the request body'));
      } catch (err) {
        reject(err);
      }
    });
    // The client went away, or took longer than REQUEST_TIMEOUT_MS: its fault, not ours.
    const cut = (err?: Error) => reject(nvgreError('NVGRE_ERR_BAD_REQUEST', `the request body was cut short after ${size} bytes: ${err?.message ?? 'the connection closed'}`));
    req.once('error', cut);
    req.once('close', () => {
      if (!req.complete) cut();
    });
  });
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
  if (isYaml) {
    const text = await readBody(req, MAX_YAML_BODY_BYTES, `, the limit for YAML: send larger documents as JSON (up to ${MAX_BODY_BYTES} bytes)`);
    return parseConfigText(text, 'the request body');
  }
  const text = await readBody(req, MAX_BODY_BYTES, '');
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
    case 'nat':
      if (method !== 'GET') throw methodNotAllowed(method, url.pathname, 'GET');
      if (rest.length) throw nvgreError('NVGRE_ERR_NOT_FOUND', `no such path ${url.pathname} (the NAT mappings are GET /v1/nat)`);
      return { status: 200, body: natMappings(ctx.core, store.policy, url.searchParams) };
    case 'next-hop': {
      if (method !== 'GET') throw methodNotAllowed(method, url.pathname, 'GET');
      return { status: 200, body: resolveNextHop(ctx.core, store.policy, url.searchParams) };
    }
    case 'policy':
      if (method === 'GET') {
        const yaml = (req.headers.accept ?? '').includes('yaml');
        return { status: 200, body: store.policy, yaml };
      }
      if (method === 'PUT') {
        if (ctx.fleet) throw nvgreError('NVGRE_ERR_CONFLICT', "this host's policy is the policy store's (policy_store): change records, or write the store's keys");
        return { status: 200, body: await store.applyDocument(await body(req, true)) };
      }
      throw methodNotAllowed(method, url.pathname, 'GET, PUT');
    case 'reload':
      if (method !== 'POST') throw methodNotAllowed(method, url.pathname, 'POST');
      if (ctx.fleet) {
        await ctx.fleet.reloadFile(store.configFile);
        return { status: 200, body: { applied: true } };
      }
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
    case 'fleet': {
      if (!ctx.fleet) throw nvgreError('NVGRE_ERR_NOT_FOUND', `${url.pathname}: this host has no policy_store`);
      if (rest.length === 0) {
        if (method !== 'GET') throw methodNotAllowed(method, url.pathname, 'GET');
        return { status: 200, body: ctx.fleet.show() };
      }
      if (rest[0] !== 'migrate' || rest.length !== 1) break;
      if (method !== 'POST') throw methodNotAllowed(method, url.pathname, 'POST');
      return { status: 200, body: await ctx.fleet.migrate(await body(req)) };
    }
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
  const writer = ctx.fleet ?? store;
  switch (method) {
    case 'GET':
      return { status: 200, body: { [res.section]: store.list(res, parseFilter(res, url.searchParams)) } };
    case 'POST':
      return { status: 201, body: await writer.create(res, await body(req)) };
    case 'DELETE': {
      const filter = parseFilter(res, url.searchParams, ['all']);
      if (!filter.length && url.searchParams.get('all') !== 'true') {
        throw nvgreError('NVGRE_ERR_BAD_REQUEST', `flushing every ${res.noun} needs ?all=true (or filter by ${res.fields.join(', ')})`);
      }
      return { status: 200, body: { deleted: await writer.flush(res, filter) } };
    }
  }
  throw methodNotAllowed(method, url.pathname, 'GET, POST, DELETE');
}

async function one(res: Resource, method: string, segments: string[], ctx: ApiContext, req: IncomingMessage): Promise<Reply> {
  const { store } = ctx;
  const writer = ctx.fleet ?? store;
  const key = parseKey(res, segments);
  switch (method) {
    case 'GET':
      return { status: 200, body: store.get(res, key) };
    case 'PUT': {
      const { record, created } = await writer.replace(res, key, await body(req));
      return { status: created ? 201 : 200, body: record };
    }
    case 'PATCH':
      return { status: 200, body: await writer.change(res, key, await body(req)) };
    case 'DELETE':
      return { status: 200, body: { deleted: await writer.remove(res, key) } };
  }
  throw methodNotAllowed(method, `/v1/${res.path}/…`, 'GET, PUT, PATCH, DELETE');
}

/**
 * POST /v1/config/save: the running policy as a config file, over the
 * daemon's config file or as another file in its directory, and nowhere
 * else: the daemon may run as root. The file is written by its directory's
 * real path, so a symbolic link on the way cannot lead out of it, and an
 * existing file is replaced only if it is a regular file (not a link, a
 * socket, a directory).
 */
function saveConfig(store: PolicyStore, request: unknown): { path: string } {
  const path = (request as { path?: unknown } | null)?.path ?? store.configFile;
  if (typeof path !== 'string' || !isAbsolute(path)) {
    throw nvgreError('NVGRE_ERR_BAD_REQUEST', `path: ${JSON.stringify(path)} must be an absolute file path`);
  }
  const configDir = dirname(resolve(store.configFile));
  const outside = () =>
    nvgreError('NVGRE_ERR_BAD_REQUEST', `path: ${JSON.stringify(path)} is not a file in the config file's directory ${configDir}: the daemon saves nowhere else (nvgrectl config save FILE writes elsewhere as you)`);
  const name = basename(path);
  if (path.endsWith('/') || name === '.' || name === '..') throw outside();
  let dir: string;
  try {
    dir = realpathSync(dirname(path));
    if (dir !== realpathSync(configDir)) throw outside();
  } catch (err) {
    if (isNvgreError(err)) throw err;
    throw outside();
  }
  const target = join(dir, name);
  let existing: ReturnType<typeof lstatSync> | undefined;
  try {
    existing = lstatSync(target);
  } catch {
    // a new file
  }
  if (existing && !existing.isFile()) {
    const kind = existing.isSymbolicLink() ? 'a symbolic link' : existing.isDirectory() ? 'a directory' : existing.isSocket() ? 'a socket' : 'not a regular file';
    throw nvgreError('NVGRE_ERR_BAD_REQUEST', `path: ${JSON.stringify(path)} is ${kind}: config save replaces only a regular file`);
  }
  try {
    writeFileAtomic(target, renderConfig(store.policy), 0o640);
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

/**
 * The caller on `socket`, from the kernel (SO_PEERCRED). Node has no API for
 * a Unix socket peer's credentials; the accepted socket's descriptor is its
 * libuv handle's `fd` (internal, but present on Linux since Node's early
 * versions and in Node 20; test/api-permissions.test.ts would catch its
 * loss). It is read once, at accept, while the socket is certainly open.
 * Without it the caller is unknown, and may only read.
 */
function peerOf(core: NativeCore, socket: Socket, log: Logger): Caller | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  try {
    if (typeof fd !== 'number' || fd < 0) throw new Error(`no file descriptor (${String(fd)})`);
    return core.peerCredentials(fd);
  } catch (err) {
    log.error({ err }, "cannot read an API caller's credentials: the connection may only read");
    return undefined;
  }
}

function forbidden(caller: Caller | undefined, method: string, path: string): NvgreError {
  const who = caller ? `uid ${caller.uid} (pid ${caller.pid})` : 'a caller whose credentials could not be read';
  const daemonUid = process.geteuid?.() ?? 0;
  const allowed = daemonUid === 0 ? 'root (uid 0)' : `root (uid 0) or the daemon's user (uid ${daemonUid})`;
  return nvgreError('NVGRE_ERR_PERMISSION', `${method} ${path}: ${who} may only read; changes need ${allowed}`);
}

/**
 * Answer, then close the connection once the answer is out. A body the client
 * is still sending is read and thrown away meanwhile and for up to LINGER_MS
 * (and MAX_BODY_BYTES) after, as a lingering close does: closing on unread
 * data would fail the client's writes before it reads the answer.
 */
function sendAndClose(req: IncomingMessage, res: ServerResponse, reply: Reply): void {
  res.setHeader('connection', 'close');
  let discarded = 0;
  req.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > MAX_BODY_BYTES) req.destroy();
  });
  req.resume();
  // The response is written on a later tick: closing at once could lose it.
  res.once('finish', () => {
    if (req.complete) return void req.destroy();
    const timer = setTimeout(() => req.destroy(), LINGER_MS);
    req.once('end', () => req.destroy());
    req.once('close', () => clearTimeout(timer));
  });
  send(res, reply);
}

export async function serveApi(ctx: ApiContext, socketPath: string): Promise<Server> {
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o750 });
  await clearStaleSocket(socketPath);
  // A caller (uid) that keeps being refused or shed gets one log line a minute.
  const throttle = new LogThrottle(60_000);
  const connections = new Connections(
    { maxConnections: MAX_CONNECTIONS, maxStreams: MAX_EVENT_STREAMS },
    (socket) => peerOf(ctx.core, socket, ctx.log),
    (caller, busy) => {
      const suppressed = throttle.take(`shed ${caller?.uid}`);
      if (suppressed === undefined) return;
      ctx.log.warn({ uid: caller?.uid ?? null, pid: caller?.pid ?? null, busy, suppressed }, `closed an API connection: ${MAX_CONNECTIONS} are open and this caller holds the most`);
    },
  );
  const server = createServer(
    { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, connectionsCheckingInterval: 1000 },
    (req, res) => {
      connections.begin(req.socket, res);
      const caller = connections.caller(req.socket);
      if (!isRead(req.method) && !mayChange(caller)) {
        const err = forbidden(caller, req.method ?? '?', (req.url ?? '/').split('?')[0]!);
        if (throttle.take(`refused ${caller?.uid}`) !== undefined) ctx.log.warn({ uid: caller?.uid ?? null, pid: caller?.pid ?? null }, err.message);
        sendAndClose(req, res, errorReply(err, ctx.log));
        return;
      }
      if (isEventsPath(req.url) && req.method === 'GET' && ctx.events) {
        const url = new URL(req.url ?? '/', 'http://nvgred');
        if ([...url.searchParams.keys()].length) {
          send(res, errorReply(nvgreError('NVGRE_ERR_BAD_REQUEST', `${url.pathname} takes no query parameters (filter the stream's events yourself)`), ctx.log));
          return;
        }
        if (!connections.openStream(req.socket, res)) {
          const cls = mayChange(caller) ? 'root and the daemon\'s user' : 'callers that may only read';
          send(res, errorReply(nvgreError('NVGRE_ERR_UNAVAILABLE', `too many event streams: ${MAX_EVENT_STREAMS} are open for ${cls}; close one and retry`), ctx.log));
          return;
        }
        streamEvents(ctx.events, req, res, ctx.eventStream);
        return;
      }
      route(ctx, req).then(
        (reply) => send(res, reply),
        (err: unknown) => {
          const reply = errorReply(err, ctx.log);
          // A body that was refused part way: stop reading it.
          if (reply.status === 413) sendAndClose(req, res, reply);
          else send(res, reply);
        },
      );
    },
  );
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // Fires after SEND_TIMEOUT_MS without a byte moving either way. Only a
  // connection with output waiting is closed: a request still being worked
  // on is not the client's fault, and idle ones have their own timeouts.
  server.setTimeout(SEND_TIMEOUT_MS, (socket: Socket) => {
    if (socket.writableLength > 0) socket.destroy();
  });
  server.on('connection', (socket: Socket) => connections.add(socket));
  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(socketPath, () => {
      server.off('error', fail);
      done();
    });
  });
  chmodSync(socketPath, 0o660);
  return server;
}
