// Shared by the node tests: start `kvserve serve` on a free loopback port
// (resolves once it logs where it listens) and stop it (SIGTERM, then
// SIGKILL after 30 s).  Every server started is in `servers`, so a test can
// print their logs and stop them all on failure.
import { spawn } from 'node:child_process';
import path from 'node:path';

// What ctest passes: the binary, the test data, the build folder.
export const KVSERVE = process.env.KVSERVE;
export const SHARED = process.env.KVS_SHARED;
export const BUILD = process.env.KVS_BUILD_DIR || '/tmp';
if (!KVSERVE || !SHARED) {
  console.error('KVSERVE and KVS_SHARED must be set (ctest sets them)');
  process.exit(1);
}
export const STORIES = path.join(SHARED, 'models', 'stories260K.gguf');

// Run one named check, counting it and printing its time (width: the name's column).
export const tally = { passed: 0 };
export async function check(name, fn, width = 44) {
  const t0 = Date.now();
  await fn();
  tally.passed++;
  console.log(`ok   ${name.padEnd(width)} ${((Date.now() - t0) / 1000).toFixed(1)}s`);
}

export const servers = [];

export function startServer(model, args = []) {
  return new Promise((resolve, reject) => {
    const p = spawn(KVSERVE, ['serve', '-m', model, '--port', '0', '--device-memory', '256MiB', ...args],
                    { stdio: ['ignore', 'ignore', 'pipe'] });
    const srv = { proc: p, log: '', exit: null };
    servers.push(srv);
    const timer = setTimeout(() => reject(new Error('server did not start:\n' + srv.log)), 60000);
    p.on('exit', (code, sig) => { srv.exit = code ?? sig; });
    p.stderr.on('data', (d) => {
      srv.log += d.toString();
      const m = srv.log.match(/listening on http:\/\/[^ ]*:(\d+)/);
      if (m && !srv.port) {
        srv.port = Number(m[1]);
        clearTimeout(timer);
        resolve(srv);
      }
    });
    p.on('error', reject);
  });
}

export function stopServer(srv) {
  return new Promise((resolve) => {
    if (srv.exit !== null) return resolve(srv.exit);
    const t = setTimeout(() => { srv.proc.kill('SIGKILL'); }, 30000);
    srv.proc.on('exit', (code, sig) => { clearTimeout(t); resolve(code ?? sig); });
    srv.proc.kill('SIGTERM');
  });
}
