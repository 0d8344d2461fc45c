// A turn off that interrupts a turn on, at the worker: QEMU is already up (its QMP socket
// exists) but the VM is not yet Running. The worker must announce each state once:
// TurningOn, TurningOff, TurnedOff, and never TurnedOff a second time when the turn on
// gives up. The turn on fails with VM_E_TURNED_OFF, which says so, not as a start that failed.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isAlive } from '../host/process.js';
import { createDifferencing } from '../storage/vhd/index.js';
import { parseVmConfig, type VmConfig } from '../vmm/config.js';
import { VmManager } from '../vmm/manager.js';
import { VmPaths } from '../vmm/paths.js';
import type { VmError } from '../vmm/state.js';
import type { WorkerClient } from '../vmm/worker-client.js';
import { testGuest } from './helpers/guest.js';
import { makeTempDir, removeDir } from './helpers/vhd-fixtures.js';
import { recordStates } from './helpers/vm.js';
import { delay, waitFor } from './helpers/wait.js';

/** Each try that misses the window (the VM was Running already) is turned off and tried again. */
const TRIES = 5;

let work: string;
let manager: VmManager;
let config: VmConfig;
const clients: WorkerClient[] = [];

describe('a turn off that interrupts a turn on', { timeout: 300_000 }, () => {
  before(async () => {
    work = makeTempDir('vm-interrupted-start');
    fs.chmodSync(work, 0o711); // QEMU's unprivileged user passes through to its folder in the run root
    fs.copyFileSync(testGuest().bootVhd, path.join(work, 'template.vhd'));
    await createDifferencing(path.join(work, 'boot.vhd'), path.join(work, 'template.vhd'));
    manager = new VmManager(path.join(work, 'run'));
    config = parseVmConfig({ name: 'interrupted', memoryMB: 64, scsi: [{ disks: [{ target: 0, path: 'boot.vhd' }] }], bootOrder: ['disk'] }, work);
  });

  after(() => {
    for (const client of clients) client.close();
    for (const status of manager?.list() ?? []) {
      for (const pid of [status.qemuPid, status.workerPid]) if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
    if (work) removeDir(work);
  });

  it('announces TurningOn, TurningOff and TurnedOff once each; the turn on fails, the turn off succeeds', async () => {
    const qmpSocket = VmPaths.of(config.id, manager.root).qmp;
    for (let attempt = 1; ; attempt++) {
      const client = await manager.launch(config);
      clients.push(client);
      const recorded = recordStates(client);
      const turnOn = client.request('turnOn').then(() => null, (e: Error) => e);
      await waitFor('QEMU\'s QMP socket', () => fs.existsSync(qmpSocket), 60_000);
      await client.request('turnOff');
      const startError = await turnOn;
      await waitFor('TurnedOff', () => recorded.states.includes('TurnedOff'), 30_000);
      await delay(1000); // time for any later announcement to arrive
      if (startError === null) {
        // Too late: the VM was Running before the turn off reached it. Not what this test is about.
        assert.ok(attempt < TRIES, `the turn off never reached the VM before it was Running in ${TRIES} tries: ${recorded.states.join(', ')}`);
        continue;
      }
      assert.deepEqual(recorded.states, ['TurningOn', 'TurningOff', 'TurnedOff']);
      // Turned off on purpose, not a QEMU that could not start.
      assert.equal((startError as VmError).code, 'VM_E_TURNED_OFF', startError.message);
      assert.equal(startError.message, 'interrupted was turned off while it was turning on');
      assert.equal(recorded.last()?.stopReason, 'turned off', 'stopped as asked, not crashed');
      assert.equal(recorded.last()?.crashed, undefined);
      return;
    }
  });
});
