// The turn on's pre-flight, at a real worker: a VM whose ISO, port folder or disk chain is
// missing, or whose port would overwrite a VM's file, is refused by name before any disk is
// served over NBD and before QEMU is spawned. The run folder is watched (inotify) during the
// turn on, so a socket that was made and removed again is seen too; a VM whose files are all
// there shows what the watch sees when a turn on does serve and spawn.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isAlive } from '../host/process.js';
import { createDifferencing, createDynamic } from '../storage/vhd/index.js';
import { parseVmConfig } from '../vmm/config.js';
import { VmManager } from '../vmm/manager.js';
import { VmPaths } from '../vmm/paths.js';
import type { VmError } from '../vmm/state.js';
import type { WorkerClient } from '../vmm/worker-client.js';
import { makeTempDir, MiB, removeDir } from './helpers/vhd-fixtures.js';
import { recordStates } from './helpers/vm.js';
import { delay, waitFor } from './helpers/wait.js';

let work: string;
let manager: VmManager;
const clients: WorkerClient[] = [];

interface WatchedTurnOn {
  error: VmError | null;
  /** Every name that appeared in the VM's run folder while it was turning on. */
  seen: Set<string>;
  states: string[];
  paths: VmPaths;
}

/** Launches a worker for a VM with a SCSI disk of its own plus `extra`, and turns it on while its run folder is watched. */
async function turnOnWatched(name: string, extra: Record<string, unknown>): Promise<WatchedTurnOn & { client: WorkerClient }> {
  await createDynamic(path.join(work, `${name}.vhd`), { size: 16 * MiB });
  const config = parseVmConfig({ name, engine: 'tcg', memoryMB: 32, scsi: [{ disks: [{ target: 0, path: `${name}.vhd` }] }], ...extra }, work);
  const client = await manager.launch(config);
  clients.push(client);
  const paths = VmPaths.of(config.id, manager.root);
  const recorded = recordStates(client);
  const seen = new Set<string>();
  const watcher = fs.watch(paths.dir, (_event, file) => { if (file) seen.add(file); });
  let error: VmError | null = null;
  try {
    await client.request('turnOn');
  } catch (e) {
    error = e as VmError;
  }
  await waitFor(`${name} settled`, () => recorded.states.includes(error ? 'TurnedOff' : 'Running'), 30_000);
  await delay(300); // the watcher's last events are delivered
  watcher.close();
  return { error, seen, states: recorded.states, paths, client };
}

/** Refused by `code`, with a message naming `mention`; no disk was served, QEMU never ran, and the VM is turned off again. */
function refusedBeforeServing(result: WatchedTurnOn, code: string, mention: string): void {
  assert.ok(result.error, 'the turn on was refused');
  assert.equal(result.error.code, code, result.error.message);
  assert.ok(result.error.message.includes(mention), `"${result.error.message}" names ${mention}`);
  const served = [...result.seen].filter((f) => f.startsWith('disk-') || f === 'qmp.sock' || f === 'qemu');
  assert.deepEqual(served, [], 'no NBD socket, QMP socket or QEMU folder appeared');
  assert.ok(!fs.existsSync(result.paths.qemuLog), 'QEMU was never started (no qemu.log)');
  assert.deepEqual(result.states, ['TurningOn', 'TurnedOff']);
}

describe('turn on: the pre-flight comes first', { timeout: 180_000 }, () => {
  before(async () => {
    work = makeTempDir('vm-preflight');
    fs.chmodSync(work, 0o711); // QEMU's unprivileged user passes through to its folder in the run root
    manager = new VmManager(path.join(work, 'run'));
  });

  after(async () => {
    for (const client of clients) {
      await client.request('turnOff').catch(() => {});
      client.close();
    }
    for (const status of manager?.list() ?? []) {
      for (const pid of [status.qemuPid, status.workerPid]) if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
    if (work) removeDir(work);
  });

  it('a VM whose files are all there serves its disk and spawns QEMU: the watch sees the NBD and QMP sockets', async () => {
    fs.writeFileSync(path.join(work, 'present.iso'), Buffer.alloc(2048));
    const result = await turnOnWatched('complete', { ide: [{ channel: 1, device: 0, type: 'DVD', image: 'present.iso' }] });
    assert.equal(result.error, null);
    assert.ok(result.seen.has('disk-scsi0-0.sock'), `the NBD socket was seen: ${[...result.seen].join(', ')}`);
    assert.ok(result.seen.has('qmp.sock'), 'the QMP socket was seen');
    assert.ok(fs.existsSync(result.paths.qemuLog));
    await result.client.request('turnOff');
  });

  it('a missing ISO is VM_E_MEDIA_NOT_FOUND naming it, before any disk is served', async () => {
    const iso = path.join(work, 'missing.iso');
    refusedBeforeServing(await turnOnWatched('no-iso', { ide: [{ channel: 1, device: 0, type: 'DVD', image: iso }] }), 'VM_E_MEDIA_NOT_FOUND', iso);
  });

  it('a missing floppy image is VM_E_MEDIA_NOT_FOUND too', async () => {
    const vfd = path.join(work, 'missing.vfd');
    refusedBeforeServing(await turnOnWatched('no-vfd', { floppy: { image: vfd } }), 'VM_E_MEDIA_NOT_FOUND', vfd);
  });

  it('a COM2 file whose folder is missing is VM_E_PORT_FILE naming it, before any disk is served', async () => {
    const file = path.join(work, 'no-such-folder', 'com2.txt');
    refusedBeforeServing(await turnOnWatched('no-folder', { com2: { file } }), 'VM_E_PORT_FILE', file);
  });

  it('an LPT1 file that is a VM\'s disk (a .vmc registered from elsewhere may say so) is VM_E_PORT_FILE, and the disk is untouched', async () => {
    const victim = path.join(work, 'victim.vhd');
    await createDynamic(victim, { size: 16 * MiB });
    const before = fs.readFileSync(victim);
    refusedBeforeServing(await turnOnWatched('port-on-disk', { lpt1: { file: victim } }), 'VM_E_PORT_FILE', victim);
    assert.ok(fs.readFileSync(victim).equals(before), 'the VHD named as the port file is unchanged');
  });

  it('a COM2 path that is a folder is VM_E_PORT_FILE', async () => {
    const folder = path.join(work, 'a-folder');
    fs.mkdirSync(folder);
    refusedBeforeServing(await turnOnWatched('port-on-folder', { com2: { file: folder } }), 'VM_E_PORT_FILE', folder);
  });

  it('a differencing disk whose parent is gone is VHD_E_PARENT_NOT_FOUND, before any disk is served', async () => {
    await createDynamic(path.join(work, 'parent.vhd'), { size: 16 * MiB });
    await createDifferencing(path.join(work, 'child.vhd'), path.join(work, 'parent.vhd'));
    fs.rmSync(path.join(work, 'parent.vhd'));
    const result = await turnOnWatched('orphan', { scsi: [{ disks: [{ target: 0, path: 'child.vhd' }] }] });
    refusedBeforeServing(result, 'VHD_E_PARENT_NOT_FOUND', 'child.vhd');
  });
});
