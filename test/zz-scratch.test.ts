import { afterAll, beforeAll, it } from 'vitest';
import { spawn } from 'node:child_process';
import { Lab, sleep } from '../lab/netns.js';
import { baseConfig, createHostEnv, TestDaemon, type HostEnv } from './helpers/daemon.js';
import { rawRequest } from './helpers/api.js';
const lab = new Lab(`nvscr${process.pid % 10000}-`);
let env: HostEnv; let d: TestDaemon;
beforeAll(async () => { env = await createHostEnv(lab, 'nvgred-scr-'); d = new TestDaemon(env, env.writeConfig(baseConfig(env))); await d.start(); });
afterAll(async () => { console.log(JSON.stringify(await lab.teardown())); });
it('explore', async () => {
  const MB = 1024 * 1024;
  const st = spawn('strace', ['-f', '-tt', '-p', String(d.pid), '-e', 'trace=writev,write,close,shutdown', '-o', '/tmp/scratch/strace.txt'], { stdio: 'ignore' });
  await sleep(1000);
  function* pieces(n: number) { for (let i = 0; i < n; i++) yield Buffer.alloc(MB, 0x20); }
  for (let k = 0; k < 25; k++) {
    try {
    const r2 = await rawRequest(env.socket, 'PUT', '/v1/policy', { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, pieces(100), { chunked: true, pauseAfterBytes: 65 * MB });
    console.log(new Date().toISOString(), 'chunked', r2.status, r2.bytesSent, r2.writeError);
    } catch (e) { console.log(new Date().toISOString(), 'FAIL', String(e)); }
  }
  st.kill('SIGINT'); await sleep(500);
});
