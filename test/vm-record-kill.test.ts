// A VM's catalog row and its .vmc file change together: vserverd killed (-9) at any instant of
// CreateVirtualMachine or of a change of configuration leaves, once it has started again, a
// .vmc that holds exactly what the catalog says (or neither, for a create killed early), and no
// half-written file beside it. The writes are made by a child process doing what vserverd does
// (helpers/vm-record-writer.ts), killed before its 1st, 2nd, ... write until it finishes; the
// start after it is a real vserverd on the same data folder.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { openCatalog } from '../server/catalog/database.js';
import { TestServer } from './helpers/server.js';
import { makeTempDir, removeDir } from './helpers/vhd-fixtures.js';

const WRITER = path.join(import.meta.dirname, 'helpers', 'vm-record-writer.js');
/** More writes than either change makes: the loop ends when the writer finishes first. */
const MOST_WRITES = 40;
const WRITER_MS = 30_000;

const work = makeTempDir('vm-record-kill');
after(() => removeDir(work));

interface Row { id: string; name: string; vmc_path: string; config: string }

/** Runs the writer; true when it finished, false when it was killed at write `killAt`. */
function write(dataDir: string, runDir: string, op: 'create' | 'rename', folder: string, killAt: number): boolean {
  const result = spawnSync(process.execPath, [WRITER, dataDir, op, folder, String(killAt)], { env: { ...process.env, VSERVER_RUN_DIR: runDir }, encoding: 'utf8', timeout: WRITER_MS });
  if (result.signal === 'SIGKILL') return false;
  assert.equal(result.status, 0, `the writer failed: ${result.stderr}`);
  return true;
}

/** Starts vserverd on the folders and stops it: what a start after the kill makes of them. */
async function restart(dataDir: string, runDir: string): Promise<void> {
  const server = await TestServer.start({ dataDir, runDir });
  assert.equal(await server.stop(), 0, server.output);
}

function rows(dataDir: string): Row[] {
  const db = openCatalog(dataDir);
  try {
    return db.prepare('SELECT id, name, vmc_path, config FROM vms').all() as Row[];
  } finally {
    db.close();
  }
}

/** The catalog's VMs each have a .vmc holding their row's configuration, and the folder holds nothing else. */
function assertAgree(found: Row[], folder: string, context: string): void {
  const files = fs.existsSync(folder) ? fs.readdirSync(folder).sort() : [];
  assert.deepEqual(files, found.map((r) => path.basename(r.vmc_path)).sort(), `${context}: the VM folder holds ${JSON.stringify(files)} for the catalog's ${JSON.stringify(found.map((r) => r.name))}`);
  for (const row of found) {
    const vmc = JSON.parse(fs.readFileSync(row.vmc_path, 'utf8')) as Record<string, unknown>;
    assert.deepEqual(vmc, { version: 1, ...JSON.parse(row.config) as object }, `${context}: ${row.vmc_path} does not hold the catalog's configuration of ${row.name}`);
  }
}

describe('vserverd killed while it writes a VM\'s record and .vmc', { timeout: 600_000 }, () => {
  it('CreateVirtualMachine: a start after a kill at any write finds a catalog row and a .vmc that agree, or neither', async () => {
    let finished = false;
    for (let killAt = 1; killAt <= MOST_WRITES && !finished; killAt++) {
      const dir = path.join(work, `create-${killAt}`);
      const [dataDir, runDir, folder] = ['data', 'run', 'vm'].map((name) => path.join(dir, name));
      finished = write(dataDir, runDir, 'create', folder, killAt);
      await restart(dataDir, runDir);
      const found = rows(dataDir);
      assert.ok(found.length <= 1);
      if (finished) assert.equal(found.length, 1, 'the create that finished made its VM');
      assertAgree(found, folder, `killed before write ${killAt}`);
    }
    assert.ok(finished, `the create did not finish within ${MOST_WRITES} writes`);
  });

  it('a change of configuration (a rename): a start after a kill at any write finds the .vmc holding the catalog\'s configuration, old or new', async () => {
    let finished = false;
    for (let killAt = 1; killAt <= MOST_WRITES && !finished; killAt++) {
      const dir = path.join(work, `rename-${killAt}`);
      const [dataDir, runDir, folder] = ['data', 'run', 'vm'].map((name) => path.join(dir, name));
      assert.ok(write(dataDir, runDir, 'create', folder, 0));
      finished = write(dataDir, runDir, 'rename', folder, killAt);
      await restart(dataDir, runDir);
      const found = rows(dataDir);
      assert.equal(found.length, 1);
      if (finished) assert.equal(found[0].name, 'renamed');
      else assert.ok(['kept', 'renamed'].includes(found[0].name));
      assertAgree(found, folder, `killed before write ${killAt}`);
    }
    assert.ok(finished, `the rename did not finish within ${MOST_WRITES} writes`);
  });

  it('changes of one VM made at once (a batch of calls, which vserverd runs together) all land, in the catalog and in the .vmc, with no draft left', async () => {
    const server = await TestServer.start();
    try {
      const { $ref: vm } = await server.call<{ $ref: string }>('VirtualServer.CreateVirtualMachine', { name: 'busy' });
      const batch = ['tulip', 'e1000', 'virtio', 'tulip'].map((model, i) => ({ jsonrpc: '2.0', id: i, method: 'VirtualMachine.AddNetworkAdapter', params: { this: vm, model } }));
      const response = await fetch(`${server.url}/api/rpc`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminToken}` }, body: JSON.stringify(batch) });
      const answers = await response.json() as { error?: unknown }[];
      assert.deepEqual(answers.filter((a) => a.error), [], 'no change of the batch failed');
      const vmc = await server.call<string>('VirtualMachine.get_File', { this: vm });
      const written = JSON.parse(fs.readFileSync(vmc, 'utf8')) as { networkAdapters: { model: string }[] };
      assert.deepEqual(written.networkAdapters.map((a) => a.model).sort(), ['e1000', 'tulip', 'tulip', 'virtio']);
      assert.equal((await server.call<unknown[]>('VirtualMachine.get_NetworkAdapters', { this: vm })).length, 4);
      assert.deepEqual(fs.readdirSync(path.dirname(vmc)), ['busy.vmc']);
    } finally {
      await server.stop();
    }
  });
});
