// nvgred's one error factory (in the manner of fastify's lib/errors.js).
//
// Every error the project raises on purpose is an `NvgreError` with a stable
// `code` taken from `ERROR_CODES`. The code never changes meaning once
// released; the control API maps it to `status`, the CLI to an exit status.
// Messages name the field (its path), the offending value and the reason.

/** One problem found in one field of a document (config file or API body). */
export interface FieldError {
  code: ErrorCode;
  /** Where the field is, e.g. `lookup_records[2].vsid`; `''` is the document root. */
  path: string;
  /** The offending value as found (undefined when the field is missing). */
  value: unknown;
  /** `<path>: <value> <reason>`, e.g. `lookup_records[2].vsid: 4000 is out of range (...)`. */
  message: string;
  /** 1-based position in the source text, when known (config files). */
  line?: number;
  column?: number;
}

interface CodeInfo {
  readonly status: number;
  readonly description: string;
}

/**
 * The stable error codes and the HTTP status each maps to. Exported so the
 * control API and the CLI can map codes to statuses and exit codes.
 */
export const ERROR_CODES = {
  // ---- validation of a policy document (config file or API body): 400 ----
  NVGRE_ERR_CONFIG: { status: 400, description: 'the document has errors; see details' },
  NVGRE_ERR_YAML: { status: 400, description: 'YAML syntax error' },
  NVGRE_ERR_ENCODING: { status: 400, description: 'text is not valid UTF-8' },
  NVGRE_ERR_TYPE: { status: 400, description: 'value has the wrong type' },
  NVGRE_ERR_REQUIRED: { status: 400, description: 'required field missing' },
  NVGRE_ERR_UNKNOWN_KEY: { status: 400, description: 'unknown key' },
  NVGRE_ERR_VALUE: { status: 400, description: 'value not allowed (enum, range, format)' },
  NVGRE_ERR_VSID_RANGE: { status: 400, description: 'VSID outside 4096..16777214' },
  NVGRE_ERR_ADDRESS: { status: 400, description: 'invalid IP address' },
  NVGRE_ERR_PREFIX: { status: 400, description: 'invalid IP prefix or prefix length' },
  NVGRE_ERR_PREFIX_HOST_BITS: { status: 400, description: 'prefix has host bits set' },
  NVGRE_ERR_FAMILY: { status: 400, description: 'address family mismatch' },
  NVGRE_ERR_MAC: { status: 400, description: 'invalid or non-unicast MAC address' },
  NVGRE_ERR_ROUTING_DOMAIN: { status: 400, description: 'invalid routing domain GUID' },
  NVGRE_ERR_VSID_DOMAIN: { status: 400, description: 'VSID bound to two routing domains' },
  NVGRE_ERR_VSID_UNBOUND: { status: 400, description: 'VSID has no customer route (no routing domain)' },
  NVGRE_ERR_DUPLICATE_CA: { status: 400, description: 'customer address already used in the VSID' },
  NVGRE_ERR_DUPLICATE_MAC: { status: 400, description: 'MAC already used in the routing domain' },
  NVGRE_ERR_DUPLICATE: { status: 400, description: 'entry not unique' },
  NVGRE_ERR_GATEWAY_PA: { status: 400, description: 'default-gateway (.1) record does not name a local PA' },

  // ---- control API / CLI requests ----
  NVGRE_ERR_BAD_REQUEST: { status: 400, description: 'malformed request (body syntax, parameters)' },
  NVGRE_ERR_PERMISSION: { status: 403, description: 'operation not permitted' },
  NVGRE_ERR_NOT_FOUND: { status: 404, description: 'no such entry' },
  NVGRE_ERR_METHOD: { status: 405, description: 'method not allowed' },
  NVGRE_ERR_EXISTS: { status: 409, description: 'entry already exists' },
  NVGRE_ERR_CONFLICT: { status: 409, description: 'conflicts with the current state' },
  NVGRE_ERR_RESTART_REQUIRED: { status: 409, description: 'change needs a daemon restart' },
  NVGRE_ERR_TOO_LARGE: { status: 413, description: 'document or body too large' },
  NVGRE_ERR_MEDIA_TYPE: { status: 415, description: 'unsupported media type' },

  // ---- the daemon itself ----
  NVGRE_ERR_INTERNAL: { status: 500, description: 'internal error' },
  NVGRE_ERR_IO: { status: 500, description: 'file or device I/O failed' },
  NVGRE_ERR_NATIVE: { status: 500, description: 'native dataplane error' },
  NVGRE_ERR_UNAVAILABLE: { status: 503, description: 'daemon not ready or shutting down' },
  NVGRE_ERR_TIMEOUT: { status: 504, description: 'operation timed out' },
} as const satisfies Record<string, CodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

/** HTTP status of a code (500 for anything unknown). */
export function statusOf(code: string): number {
  return isErrorCode(code) ? ERROR_CODES[code].status : 500;
}

export interface NvgreErrorOptions {
  path?: string;
  value?: unknown;
  details?: FieldError[];
  line?: number;
  column?: number;
  cause?: unknown;
}

export class NvgreError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  path?: string;
  value?: unknown;
  details?: FieldError[];
  line?: number;
  column?: number;

  constructor(code: ErrorCode, message: string, opts: NvgreErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'NvgreError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    if (opts.path !== undefined) this.path = opts.path;
    if ('value' in opts) this.value = opts.value;
    if (opts.details !== undefined) this.details = opts.details;
    if (opts.line !== undefined) this.line = opts.line;
    if (opts.column !== undefined) this.column = opts.column;
  }

  /** The API's error body. */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = { code: this.code, status: this.status, message: this.message };
    if (this.path !== undefined) out.path = this.path;
    if (this.value !== undefined) out.value = this.value;
    if (this.line !== undefined) out.line = this.line;
    if (this.column !== undefined) out.column = this.column;
    if (this.details !== undefined) out.details = this.details;
    return out;
  }
}

/** The factory: every deliberate error goes through here. */
export function nvgreError(code: ErrorCode, message: string, opts?: NvgreErrorOptions): NvgreError {
  return new NvgreError(code, message, opts);
}

export function isNvgreError(e: unknown): e is NvgreError {
  return e instanceof NvgreError;
}

/** Display form of a path: the root (`''`) is shown as `(root)`. */
export function displayPath(path: string): string {
  return path === '' ? '(root)' : path;
}

/**
 * A short, bounded rendering of a value for messages: strings JSON-quoted,
 * numbers bare, collections abbreviated. Never walks more than a few dozen
 * nodes, whatever the size of the value.
 */
export function formatValue(value: unknown, max = 80): string {
  const s = render(value, { budget: max });
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

function render(v: unknown, st: { budget: number }): string {
  if (st.budget <= 0) return '…';
  if (v === undefined) return '(missing)';
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string': {
      const s = JSON.stringify(v.length > 200 ? v.slice(0, 200) : v);
      st.budget -= s.length;
      return s;
    }
    case 'number':
    case 'boolean':
    case 'bigint': {
      const s = String(v);
      st.budget -= s.length;
      return s;
    }
    case 'object': {
      if (Array.isArray(v)) {
        const parts: string[] = [];
        st.budget -= 2;
        for (let i = 0; i < v.length; i++) {
          if (st.budget <= 0) {
            parts.push('…');
            break;
          }
          parts.push(render(v[i], st));
          st.budget -= 2;
        }
        return `[${parts.join(', ')}]`;
      }
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) {
        const name = (v as object).constructor?.name ?? 'object';
        st.budget -= name.length;
        return `(${name})`;
      }
      const parts: string[] = [];
      st.budget -= 2;
      for (const k in v as Record<string, unknown>) {
        if (st.budget <= 0) {
          parts.push('…');
          break;
        }
        const key = /^[A-Za-z_][A-Za-z0-9_-]*$/.test(k) ? k : JSON.stringify(k);
        st.budget -= key.length + 2;
        parts.push(`${key}: ${render((v as Record<string, unknown>)[k], st)}`);
      }
      return `{${parts.join(', ')}}`;
    }
    default:
      return `(${typeof v})`;
  }
}

/**
 * Build a FieldError. The message is `<path>: <value> <reason>`, or
 * `<path>: <reason>` when `value` is undefined (a missing field).
 */
export function fieldError(code: ErrorCode, path: string, value: unknown, reason: string): FieldError {
  const where = displayPath(path);
  const message = value === undefined ? `${where}: ${reason}` : `${where}: ${formatValue(value)} ${reason}`;
  return { code, path, value, message };
}

/** How many FieldErrors the aggregate message lists before "... and N more". */
export const SUMMARY_LINES = 20;

/**
 * The aggregate validation error: `config has N errors` plus the first few
 * messages, carrying every FieldError in `details`.
 */
export function configError(details: FieldError[], opts: { source?: string; what?: string } = {}): NvgreError {
  const n = details.length;
  const what = opts.what ?? 'config';
  const head = `${opts.source ? `${opts.source}: ` : ''}${what} has ${n} error${n === 1 ? '' : 's'}`;
  const lines = details.slice(0, SUMMARY_LINES).map((d) => {
    const pos = d.line !== undefined ? `line ${d.line}${d.column !== undefined ? `:${d.column}` : ''}: ` : '';
    return `  ${pos}${d.message}`;
  });
  if (n > SUMMARY_LINES) lines.push(`  ... and ${n - SUMMARY_LINES} more`);
  return new NvgreError('NVGRE_ERR_CONFIG', `${head}:\n${lines.join('\n')}`, { details });
}
