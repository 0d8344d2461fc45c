// A VM whose worker died while it ran is crashed. Reading its status says so and changes nothing;
// reaping (VmManager.reap, which vserverd's supervisor calls when it sees the worker go, and at
// start for workers that died while it was down) ends the QEMU left behind and writes the
// crash into the VM's status, where LastCrash reads it.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isAlive, processesMentioning } from '../host/process.js';
import { VmManager } from '../vmm/manager.js';
import { VmPaths } from '../vmm/paths.js';
import type { VmStatus } from '../vmm/state.js';
import { TestServer } from './helpers/server.js';
import { makeTempDir, removeDir } from './helpers/vhd-fixtures.js';
import { waitFor } from './helpers/wait.js';

interface Ref { $ref: string }
interface LoggedEvent { message: string; object: string | null }

const work = makeTempDir('vm-reaping');
const strays: ChildProcess[] = [];
after(() => {
  for (const child of strays) child.kill('SIGKILL');
  removeDir(work);
});

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await new Promise((r) => child.once('exit', r));
  return child.pid!;
}

/** A process standing for the QEMU of VM `id`: its command line names the VM, as QEMU's does. */
function strayQemu(id: string): number {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', id], { stdio: 'ignore' });
  strays.push(child);
  return child.pid!;
}

/** A run folder whose status says the VM runs, with a worker that is gone and a QEMU that is not. */
async function orphan(root: string, id: string): Promise<{ paths: VmPaths; qemu: number; worker: number }> {
  const paths = VmPaths.of(id, root);
  fs.mkdirSync(paths.qemuDir, { recursive: true });
  const [worker, qemu] = [await deadPid(), strayQemu(id)];
  paths.writeStatus({ id, name: 'orphan', state: 'Running', workerPid: worker, qemuPid: qemu, since: new Date().toISOString() });
  return { paths, qemu, worker };
}

describe('a VM whose worker died while it ran', { timeout: 120_000 }, () => {
  it('status() reads it as crashed and changes nothing; reap() ends its QEMU and records the crash', async () => {
    const manager = new VmManager(path.join(work, 'run'));
    const id = globalThis.crypto.randomUUID();
    const { paths, qemu, worker } = await orphan(manager.root, id);
    const written = fs.readFileSync(paths.status, 'utf8');

    const read = manager.status(id);
    assert.equal(read?.state, 'TurnedOff');
    assert.match(read?.crashed?.reason ?? '', new RegExp(`worker \\(pid ${worker}\\) died while the VM was Running`));
    assert.equal(fs.readFileSync(paths.status, 'utf8'), written, 'reading the status rewrote it');
    assert.ok(isAlive(qemu), 'reading the status killed the VM\'s QEMU');

    const reaped = await manager.reap(id);
    assert.equal(reaped?.state, 'TurnedOff');
    assert.deepEqual(paths.readStatus()?.crashed, reaped?.crashed);
    await waitFor('the orphaned QEMU to end', () => !isAlive(qemu), 5000);
    assert.deepEqual(manager.status(id)?.crashed, reaped?.crashed, 'once reaped, the status reads as recorded');
  });

  it('vserverd reaps at start the workers that died while it was down: QEMU ended, the crash in LastCrash', async () => {
    const first = await TestServer.start();
    let server: TestServer | null = null;
    try {
      const vm = await first.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'orphan' });
      await first.stop();
      const id = vm.$ref.split('/')[1];
      const { paths, qemu, worker } = await orphan(first.runDir, id);
      server = await TestServer.start({ dataDir: first.dataDir, runDir: first.runDir });
      await waitFor('the orphaned QEMU to end', () => !isAlive(qemu), 5000);
      assert.equal(paths.readStatus()?.state, 'TurnedOff');
      const crash = await server.call<VmStatus['crashed']>('VirtualMachine.get_LastCrash', { this: vm.$ref });
      assert.match(crash?.reason ?? '', new RegExp(`worker \\(pid ${worker}\\) died while the VM was Running`));
      assert.deepEqual(paths.readStatus()?.crashed, crash, 'the crash is recorded, not only read');
      assert.equal(await server.call('VirtualMachine.get_State', { this: vm.$ref }), 'TurnedOff');
    } finally {
      await server?.stop();
      await first.stop();
      server?.remove();
      first.remove();
    }
  });

  it('vserverd reaps a worker that dies while it follows it: QEMU ended, the crash recorded and logged, with no call reading the state', async () => {
    const server = await TestServer.start();
    try {
      const vm = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'victim' });
      await server.call('VirtualMachine.put_Memory', { this: vm.$ref, value: 16 });
      const task = await server.call<Ref>('VirtualMachine.Startup', { this: vm.$ref });
      assert.equal(await server.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 60_000 }), true);
      assert.equal(await server.call('Task.get_Error', { this: task.$ref }), null);
      const paths = VmPaths.of(vm.$ref.split('/')[1], server.runDir);
      const { workerPid, qemuPid } = paths.readStatus()!;
      assert.ok(workerPid && qemuPid && isAlive(qemuPid));
      process.kill(workerPid, 'SIGKILL');
      await waitFor('the crash to be written to status.json', () => paths.readStatus()?.crashed !== undefined, 10_000);
      assert.equal(paths.readStatus()?.state, 'TurnedOff');
      assert.match(paths.readStatus()?.crashed?.reason ?? '', new RegExp(`worker \\(pid ${workerPid}\\) died while the VM was Running`));
      await waitFor('the VM\'s QEMU to end', () => !isAlive(qemuPid), 5000);
      const logged = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { limit: 100 });
      assert.ok(logged.some((e) => e.object === vm.$ref && e.message.startsWith('victim stopped unexpectedly: its worker')), JSON.stringify(logged.map((e) => e.message)));
    } finally {
      await server.stop();
      for (const pid of processesMentioning(server.runDir).filter(isAlive)) process.kill(pid, 'SIGKILL');
      server.remove();
    }
  });
});
