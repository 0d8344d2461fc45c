// "vsctl vm run" and "vsctl vm check" as a user runs them: a refused configuration is explained
// field by field; run boots the test guest with COM1 on its standard streams, types what it is
// given, turns the VM off on Ctrl-C, and takes the VM with it when it is killed. A worker
// started by a process that then exits keeps running, and a new manager takes it over. A run
// folder QEMU's unprivileged user cannot reach is refused before QEMU starts.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isAlive } from '../host/process.js';
import { createDifferencing } from '../storage/vhd/index.js';
import { parseVmConfig } from '../vmm/config.js';
import { probeEngine } from '../vmm/engine.js';
import { VmManager } from '../vmm/manager.js';
import type { VmError } from '../vmm/state.js';
import { GUEST_READY_MARKER, testGuest } from './helpers/guest.js';
import { makeTempDir, PROJECT_ROOT, removeDir, run, vsctl } from './helpers/vhd-fixtures.js';

const VSCTL = path.join(PROJECT_ROOT, 'bin', 'vsctl');
let work: string;
let runDir: string;

function writeConfig(name: string, document: object): string {
  const file = path.join(work, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(document));
  return file;
}

async function waitUntil(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('vsctl vm', { timeout: 300_000 }, () => {
  before(async () => {
    work = makeTempDir('vsctl-vm');
    fs.chmodSync(work, 0o711);
    runDir = path.join(work, 'run');
    fs.copyFileSync(testGuest().bootVhd, path.join(work, 'template.vhd'));
    await createDifferencing(path.join(work, 'boot.vhd'), path.join(work, 'template.vhd'));
  });

  after(() => {
    for (const status of new VmManager(runDir).list()) {
      for (const pid of [status.qemuPid, status.workerPid]) if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
    removeDir(work);
  });

  it('check refuses a configuration outside the profile, naming each field and limit', () => {
    const file = writeConfig('bad', { name: 'bad', processors: 2, memoryMB: 4000, networkAdapters: [{}, {}, {}, {}, {}], usb: ['Disk'] });
    const r = vsctl(['vm', 'check', file]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /processors: a VM has exactly 1 processor/);
    assert.match(r.stderr, /memoryMB: 4000 MB is outside the limits of 4 to 3686 MB/);
    assert.match(r.stderr, /networkAdapters: a VM has at most 4 network adapters; 5 were given/);
    assert.match(r.stderr, /usb\[0\]: "Disk" is not a USB device/);
    const json = JSON.parse(vsctl(['vm', 'check', file, '--json']).stdout) as { error: { code: string; problems: unknown[] } };
    assert.equal(json.error.code, 'VM_E_CONFIG_INVALID');
    assert.equal(json.error.problems.length, 4);
    // run refuses it the same way, before starting anything.
    const refused = vsctl(['vm', 'run', file, '--run-dir', runDir]);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /memoryMB/);
    assert.ok(!fs.existsSync(runDir) || fs.readdirSync(runDir).length === 0, 'nothing was started');
  });

  it('check shows the complete document, the engine and QEMU\'s command line', async () => {
    const file = writeConfig('good', { name: 'good', scsi: [{ disks: [{ path: 'boot.vhd' }] }] });
    const r = vsctl(['vm', 'check', file, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { config: { memoryMB: number }; engine: { engine: string; reason: string }; command: string[] };
    assert.equal(out.config.memoryMB, 128);
    assert.deepEqual(out.engine, await probeEngine());
    assert.ok(out.command.includes('-nodefaults'));
    assert.ok(out.command.includes('lsi53c895a,id=scsi0'));
  });

  it('run puts COM1 on its streams, types into the guest, and Ctrl-C turns the VM off', async () => {
    const file = writeConfig('run', { name: 'run', memoryMB: 192, scsi: [{ disks: [{ path: 'boot.vhd' }] }], engine: 'tcg' });
    const child = spawn(VSCTL, ['vm', 'run', file, '--run-dir', runDir], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitUntil(() => stdout.includes(GUEST_READY_MARKER), 'the guest marker on stdout', 120_000);
      child.stdin.write('echo typed-$((6*7))\n');
      await waitUntil(() => stdout.includes('typed-42'), 'the answer to a typed command');
      child.stdin.write('\x03');
      assert.equal(await exited, 0, stderr);
    } finally {
      child.kill('SIGKILL');
    }
    assert.match(stderr, /run is TurningOn/);
    assert.match(stderr, /run is Running on tcg/);
    assert.match(stderr, /run is TurnedOff \(turned off\)/);
  });

  it('a VM run by vsctl is turned off when vsctl is killed', async () => {
    const file = writeConfig('tied', { name: 'tied', memoryMB: 64, scsi: [{ disks: [{ path: 'boot.vhd' }] }], engine: 'tcg' });
    const child = spawn(VSCTL, ['vm', 'run', file, '--run-dir', runDir, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    await waitUntil(() => stdout.includes('"Running"'), 'Running', 60_000);
    const status = JSON.parse(stdout.trim().split('\n').pop()!) as { id: string; qemuPid: number; workerPid: number };
    child.kill('SIGKILL');
    await waitUntil(() => !isAlive(status.qemuPid) && !isAlive(status.workerPid), 'the worker and QEMU exiting');
    const after = new VmManager(runDir).status(status.id);
    assert.equal(after?.state, 'TurnedOff');
    assert.match(after?.stopReason ?? '', /process \d+ it was tied to is gone/);
  });

  it('a worker outlives the process that started it, and a new manager takes it over', async () => {
    const file = writeConfig('detached', { name: 'detached', memoryMB: 64, scsi: [{ disks: [{ path: 'boot.vhd' }] }], engine: 'tcg' });
    const script = `
      import fs from 'node:fs';
      import { parseVmConfig } from ${JSON.stringify(path.join(PROJECT_ROOT, 'dist', 'vmm', 'config.js'))};
      import { VmManager } from ${JSON.stringify(path.join(PROJECT_ROOT, 'dist', 'vmm', 'manager.js'))};
      const config = parseVmConfig(JSON.parse(fs.readFileSync(${JSON.stringify(file)}, 'utf8')), ${JSON.stringify(work)});
      const client = await new VmManager(${JSON.stringify(runDir)}).start(config);
      console.log(JSON.stringify(await client.request('status')));
      process.exit(0);`;
    const r = run(process.execPath, ['--input-type=module', '-e', script]);
    assert.equal(r.status, 0, r.stderr);
    const started = JSON.parse(r.stdout) as { id: string; workerPid: number; qemuPid: number };
    assert.ok(isAlive(started.workerPid) && isAlive(started.qemuPid), 'the worker and QEMU run on after their starter exited');
    const manager = new VmManager(runDir);
    assert.equal(manager.status(started.id)?.state, 'Running');
    const client = await manager.attach(started.id);
    const off = await client.request('turnOff');
    client.close();
    assert.equal(off.state, 'TurnedOff');
  });

  it('refuses to start where QEMU\'s unprivileged user could not reach its folder, naming the closed folder', { skip: process.geteuid?.() !== 0 && 'QEMU changes user only when vserver runs as root' }, async () => {
    const closed = path.join(work, 'closed');
    fs.mkdirSync(closed, { mode: 0o700 });
    const config = parseVmConfig({ name: 'closed', engine: 'tcg', scsi: [{ disks: [{ path: 'boot.vhd' }] }] }, work);
    const client = await new VmManager(path.join(closed, 'run')).launch(config);
    try {
      await assert.rejects(client.request('turnOn'), (e: VmError) => e.code === 'VM_E_START_FAILED' && e.message.includes(`but ${closed} is closed to other users`));
    } finally {
      client.close();
    }
  });
});
