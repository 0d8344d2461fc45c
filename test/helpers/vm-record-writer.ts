// A child process that changes a VM's record as vserverd does (server/machines.ts: create, or
// a rename through reconfigure) and kills itself (SIGKILL) just before its Nth write to a file
// or to the catalog, so that a test can see what a kill at each instant leaves behind.
// Usage: node vm-record-writer.js DATA_DIR create|rename FOLDER N (N = 0: no kill).

import fs from 'node:fs';
import { openCatalog } from '../../server/catalog/database.js';
import { Machines } from '../../server/machines.js';

const FS_WRITES = ['openSync', 'writeSync', 'writeFileSync', 'fsyncSync', 'closeSync', 'renameSync', 'mkdirSync', 'rmSync', 'unlinkSync'] as const;
const FS_PROMISE_WRITES = ['open', 'writeFile', 'rename', 'mkdir', 'rm', 'unlink'] as const;

const [dataDir, op, folder, killAtText] = process.argv.slice(2);
const killAt = Number(killAtText);
const db = openCatalog(dataDir);
const machines = new Machines(db);

let writes = 0;
function beforeWrite(): void {
  writes += 1;
  if (writes === killAt) process.kill(process.pid, 'SIGKILL');
}
/** Counts (and may be killed at) each call of `names` on `target`, then makes the call. */
function intercept(target: Record<string, unknown>, names: readonly string[]): void {
  for (const name of names) {
    const original = target[name] as (...args: unknown[]) => unknown;
    target[name] = function (this: unknown, ...args: unknown[]) {
      beforeWrite();
      return original.apply(this, args);
    };
  }
}
intercept(fs as unknown as Record<string, unknown>, FS_WRITES);
intercept(fs.promises as unknown as Record<string, unknown>, FS_PROMISE_WRITES);
intercept(Object.getPrototypeOf(db.prepare('SELECT 1')) as Record<string, unknown>, ['run']);

if (op === 'create') await machines.create('kept', folder);
else await machines.reconfigure(machines.list()[0].id, (doc) => { doc.name = 'renamed'; });
db.close();
console.log(`done after ${writes} writes`);
