// A worker records each state in status.json before it announces it on the control socket, so
// that whoever hears of a state and then reads the file (vserverd's get_State, which Master
// Status's rows show) never finds the state before it. The worker's file write is held up with
// a FIFO in place of its temporary file, which blocks the write until the test reads it: an
// announcement that comes while the write is held up came first.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isAlive } from '../host/process.js';
import { parseVmConfig, type VmConfig } from '../vmm/config.js';
import { VmManager } from '../vmm/manager.js';
import { VmPaths } from '../vmm/paths.js';
import type { VmState } from '../vmm/state.js';
import type { WorkerClient } from '../vmm/worker-client.js';
import { makeTempDir, removeDir } from './helpers/vhd-fixtures.js';
import { delay, waitFor } from './helpers/wait.js';

/** How long the worker's status write is held up. */
const HOLD_MS = 1000;

let work: string;
let manager: VmManager;
let config: VmConfig;
let client: WorkerClient | null = null;

describe('the worker\'s state announcements', { timeout: 120_000 }, () => {
  before(() => {
    work = makeTempDir('vm-status-order');
    fs.chmodSync(work, 0o711); // QEMU's unprivileged user passes through to its folder in the run root
    manager = new VmManager(path.join(work, 'run'));
    config = parseVmConfig({ name: 'ordered', memoryMB: 32 }, work);
  });

  after(() => {
    client?.close();
    // A FIFO left as status.json (a test that failed half-way) would block every read of it.
    if (config) for (const file of [VmPaths.of(config.id, manager.root).status]) if (fs.lstatSync(file, { throwIfNoEntry: false })?.isFIFO()) fs.rmSync(file);
    for (const status of manager?.list() ?? []) {
      for (const pid of [status.qemuPid, status.workerPid]) if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
    if (work) removeDir(work);
  });

  it('come after status.json holds the state', async () => {
    client = await manager.launch(config);
    const paths = VmPaths.of(config.id, manager.root);
    const workerPid = paths.readStatus()?.workerPid;
    assert.ok(workerPid, 'the worker recorded its pid');
    const draft = `${paths.status}.${workerPid}`; // VmPaths.writeStatus's temporary file
    const made = spawnSync('mkfifo', [draft]);
    assert.equal(made.status, 0, String(made.stderr));

    const heard: Array<{ state: VmState; recorded: boolean }> = [];
    // status.json is replaced by the temporary file once it is written: while that file is still there, the state is not recorded.
    client.on('state', (s) => heard.push({ state: s.state, recorded: !fs.existsSync(draft) }));
    const turnOn = client.request('turnOn').then(() => null, (e: Error) => e);
    await delay(HOLD_MS);
    const heardWhileHeld = heard.map((h) => h.state);
    const written = await new Promise<string>((resolve, reject) => {
      let text = '';
      fs.createReadStream(draft, 'utf8').on('data', (chunk) => { text += String(chunk); }).on('end', () => resolve(text)).on('error', reject);
    });
    // The FIFO, once read, is renamed to status.json: a regular file with what it carried takes its place, so that reads do not block.
    await waitFor('the held-up write renamed into place', () => fs.lstatSync(paths.status).isFIFO(), 30_000);
    fs.writeFileSync(`${paths.status}.test`, written);
    fs.renameSync(`${paths.status}.test`, paths.status);
    await waitFor('TurningOn announced', () => heard.length > 0, 30_000);
    assert.equal((JSON.parse(written) as { state: string }).state, 'TurningOn', 'the held-up write was TurningOn');
    assert.deepEqual(heardWhileHeld, [], 'nothing was announced while status.json was not yet written');
    assert.deepEqual(heard[0], { state: 'TurningOn', recorded: true });

    assert.equal(await turnOn, null, 'the turn on goes on once the write is let through');
    await client.request('turnOff');
    await waitFor('TurnedOff announced', () => heard.some((h) => h.state === 'TurnedOff'), 30_000);
    assert.ok(heard.every((h) => h.recorded), `every state was recorded before it was announced: ${JSON.stringify(heard)}`);
    assert.equal(paths.readStatus()?.state, 'TurnedOff');
  });
});
