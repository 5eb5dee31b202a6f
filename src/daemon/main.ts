#!/usr/bin/env node
// nvgred: the NVGRE dataplane daemon. Loads and validates the whole config,
// creates the host's provider addresses, routes and VM adapters, hands the
// packet core one table snapshot, and on SIGTERM/SIGINT removes all of it.

import { parseArgs } from 'node:util';
import { loadConfigFile } from '../config/index.js';
import { isNvgreError } from '../errors.js';
import { native } from '../native.js';
import { Metrics, serveMetrics } from '../metrics/index.js';
import { HostDataplane } from './host.js';
import { createLogger, LOG_LEVELS, type Logger } from './log.js';

const USAGE = `Usage: nvgred --config FILE [--workers N] [--log-level LEVEL]

  -c, --config FILE     the host's policy (YAML, see the config contract)
      --workers N       packet worker threads (default 1)
      --log-level LEVEL ${LOG_LEVELS.join(' | ')} (default info)
  -h, --help            this text
  -V, --version         print the version
`;

/** Exit statuses: 0 clean stop, 1 runtime failure, 2 usage or config error. */
const EXIT_RUNTIME = 1;
const EXIT_CONFIG = 2;

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        config: { type: 'string', short: 'c' },
        workers: { type: 'string', default: '1' },
        'log-level': { type: 'string', default: 'info' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`nvgred: ${(err as Error).message}\n${USAGE}`);
    return EXIT_CONFIG;
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (args.version) {
    process.stdout.write(`nvgred ${native().version()}\n`);
    return 0;
  }
  const level = args['log-level']!;
  const workers = Number(args.workers);
  if (!args.config || !(LOG_LEVELS as readonly string[]).includes(level) || !Number.isInteger(workers) || workers < 1) {
    process.stderr.write(`nvgred: ${!args.config ? '--config is required' : 'bad --log-level or --workers'}\n${USAGE}`);
    return EXIT_CONFIG;
  }

  let log: Logger = createLogger(level as never);
  let policy;
  try {
    policy = await loadConfigFile(args.config);
  } catch (err) {
    if (!isNvgreError(err)) throw err;
    log.fatal({ code: err.code, errors: err.details, config: args.config }, err.message);
    return EXIT_CONFIG;
  }
  log = createLogger(level as never, policy.host.name);

  const host = new HostDataplane(native(), log.child({ component: 'dataplane' }));
  const stopped = new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'stopping');
      try {
        host.stop();
        log.info('stopped');
        resolve(0);
      } catch (err) {
        log.error({ err }, 'stop failed');
        resolve(EXIT_RUNTIME);
      }
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

  const core = native();
  const metrics = new Metrics({
    core,
    version: core.version(),
    hostName: policy.host.name,
    policy: () => host.policy,
    adapters: () => {
      const up = new Set(host.portStates().map((p) => p.name));
      return host.policy.vm_adapters.map((a) => ({ name: a.name, up: up.has(a.name) }));
    },
  });
  let metricsServer;
  try {
    host.start(workers);
    host.apply(policy);
    metricsServer = await serveMetrics(metrics, policy.metrics.listen);
  } catch (err) {
    log.fatal({ err }, 'start failed');
    host.stop();
    return EXIT_RUNTIME;
  }
  const supervisor = superviseWorkers(log.child({ component: 'supervisor' }));
  stopped.finally(() => {
    clearInterval(supervisor);
    metricsServer.close();
  });
  log.info(
    {
      config: args.config,
      metrics: policy.metrics.listen,
      provider_addresses: policy.provider_addresses.map((p) => p.address),
      vm_adapters: host.portStates(),
      lookup_records: policy.lookup_records.length,
      customer_routes: policy.customer_routes.length,
    },
    'ready',
  );
  return stopped;
}

/** How often the worker threads' heartbeats are checked. */
const SUPERVISE_MS = 2000;

/**
 * Watch the packet workers: each advances a heartbeat at least twice a
 * second while it runs; one that stops is reported. (The timer also keeps
 * the event loop, and so the daemon, alive: the workers are native threads.)
 */
function superviseWorkers(log: Logger): NodeJS.Timeout {
  let last = native().heartbeats();
  let stalled = new Set<number>();
  return setInterval(() => {
    const now = native().heartbeats();
    const stuck = new Set([...now.keys()].filter((i) => now[i] === last[i]));
    for (const i of stuck) if (!stalled.has(i)) log.error({ worker: i }, 'packet worker stalled');
    for (const i of stalled) if (!stuck.has(i)) log.warn({ worker: i }, 'packet worker running again');
    stalled = stuck;
    last = now;
  }, SUPERVISE_MS);
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`nvgred: ${err?.stack ?? err}\n`);
    process.exit(EXIT_RUNTIME);
  },
);
