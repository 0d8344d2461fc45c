// The VMM end to end: a worker runs the test guest from a differencing VHD on a virtual SCSI
// adapter, its disks served by our NBD server, QEMU under TCG confined to an unprivileged user;
// everything is checked from the guest's serial console and through the VHD engine.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { commandLine, isAlive } from '../host/process.js';
import { createDifferencing, createDynamic, VhdDisk } from '../storage/vhd/index.js';
import { parseVmConfig, type VmConfig } from '../vmm/config.js';
import { probeEngine } from '../vmm/engine.js';
import { VmManager } from '../vmm/manager.js';
import { VmPaths } from '../vmm/paths.js';
import type { VmError, VmStatus } from '../vmm/state.js';
import type { WorkerClient } from '../vmm/worker-client.js';
import { QEMU_USER } from '../vmm/worker/user.js';
import { GUEST_POWER_BUTTON_MARKER, GUEST_READY_MARKER, parseGuestReport, testGuest } from './helpers/guest.js';
import { makeTempDir, MiB, removeDir } from './helpers/vhd-fixtures.js';
import { lastTick, recordStates, SerialReader } from './helpers/vm.js';

const BOOT_MS = 120_000;

let work: string;
let manager: VmManager;
let config: VmConfig;
let client: WorkerClient;
let serial: SerialReader;
let written: { offset: number; length: number; md5: string };
/** The guest's interface name for each configured adapter, found by MAC (probe order varies). */
let interfaces: string[];

async function turnOn(): Promise<{ states: string[] }> {
  client?.close();
  serial?.close();
  client = await manager.launch(config);
  const recorded = recordStates(client);
  serial = await SerialReader.attach(VmPaths.of(config.id, manager.root).console);
  await client.request('turnOn');
  return recorded;
}

function pidsOf(status: VmStatus): { worker: number; qemu: number } {
  assert.ok(status.workerPid && status.qemuPid, `status has no pids: ${JSON.stringify(status)}`);
  return { worker: status.workerPid, qemu: status.qemuPid };
}

async function waitGone(pid: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) throw new Error(`process ${pid} is still alive after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('a VM worker running the test guest', { timeout: 600_000 }, () => {
  before(async () => {
    const guest = testGuest();
    work = makeTempDir('vm-lifecycle');
    fs.chmodSync(work, 0o711); // QEMU's unprivileged user passes through to its folder in the run root
    // The guest's disk as the parent of a differencing disk the VM writes to, as a template would be.
    fs.copyFileSync(guest.bootVhd, path.join(work, 'template.vhd'));
    await createDifferencing(path.join(work, 'boot.vhd'), path.join(work, 'template.vhd'));
    await createDynamic(path.join(work, 'data.vhd'), { size: 64 * MiB });
    await createDynamic(path.join(work, 'third.vhd'), { size: 16 * MiB });
    manager = new VmManager(path.join(work, 'run'));
    config = parseVmConfig({
      name: 'lifecycle',
      memoryMB: 256,
      engine: 'auto',
      scsi: [
        { model: 'lsi53c895a', disks: [{ target: 0, path: 'boot.vhd' }, { target: 1, path: 'data.vhd' }] },
        { model: 'virtio-scsi', disks: [{ target: 3, path: 'third.vhd' }] },
      ],
      networkAdapters: [
        { model: 'tulip' }, { model: 'tulip' }, { model: 'e1000' }, { model: 'virtio' },
      ],
      usb: ['Keyboard', 'Tablet'],
      bootOrder: ['disk'],
    }, work);
  });

  after(async () => {
    await client?.request('turnOff').catch(() => {});
    client?.close();
    serial?.close();
    for (const status of manager?.list() ?? []) {
      for (const pid of [status.qemuPid, status.workerPid]) if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
    if (work) removeDir(work);
  });

  it('boots by BIOS from the SCSI VHD through the NBD server: marker, three SCSI disks, four NICs', async () => {
    const { states } = await turnOn();
    await serial.waitFor(GUEST_READY_MARKER, BOOT_MS);
    assert.deepEqual(states, ['TurningOn', 'Running']);
    const report = parseGuestReport(serial.text);
    assert.ok(report, 'the guest printed its report');
    assert.deepEqual(report.disks.filter((d) => d.startsWith('sd')).sort(), ['sda', 'sdb', 'sdc']);
    const drivers = new Map(report.nics.map((n) => [n.mac.toUpperCase(), n.driver]));
    assert.deepEqual(config.networkAdapters.map((n) => drivers.get(n.mac)), ['tulip', 'tulip', 'e1000', 'virtio_net']);
    interfaces = config.networkAdapters.map((n) => report.nics.find((g) => g.mac.toUpperCase() === n.mac)!.name);
  });

  it('runs on the engine this host\'s probe chooses, says why, and confines QEMU', async () => {
    const status = await client.request('status');
    assert.deepEqual({ engine: status.engine, reason: status.engineReason }, await probeEngine());
    const { qemu } = pidsOf(status);
    const procStatus = fs.readFileSync(`/proc/${qemu}/status`, 'utf8');
    assert.match(procStatus, /^Seccomp:\s+2$/m, 'QEMU runs under a seccomp filter');
    if (process.geteuid?.() === 0) {
      const uid = Number(spawnSync('id', ['-u', QEMU_USER], { encoding: 'utf8' }).stdout.trim());
      assert.match(procStatus, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'), `QEMU runs as ${QEMU_USER}`);
    }
    // The disks reach QEMU as NBD over unix sockets: it holds no VHD file open.
    const open = fs.readdirSync(`/proc/${qemu}/fd`).map((fd) => { try { return fs.readlinkSync(`/proc/${qemu}/fd/${fd}`); } catch { return ''; } });
    assert.deepEqual(open.filter((f) => f.endsWith('.vhd')), []);
    assert.ok(commandLine(qemu).includes('-nodefaults'));
  });

  // Traffic between adapters on a virtual network is test/networks-vm.test.ts's: it needs host
  // networks. QEMU's tulip does not report a link state to its guest (it drops the frames of an
  // unplugged cable all the same), so the carrier is read from the e1000 and virtio adapters.
  it('gives adapters on no network no link', async () => {
    const reporting = interfaces.slice(2);
    const out = await serial.run(`for i in ${interfaces.join(' ')}; do ip link set $i up; done; sleep 1; `
      + `echo "carrier ${reporting.map((i) => `$(cat /sys/class/net/${i}/carrier)`).join(' ')}"`);
    assert.match(out, new RegExp(`carrier ${reporting.map(() => '0').join(' ')}`), `e1000 and virtio are unplugged: ${out}`);
  });

  it('offers the graphical console as VNC on a unix socket', async () => {
    const socket = net.connect(VmPaths.of(config.id, manager.root).vnc);
    const [banner] = await once(socket, 'data') as [Buffer];
    socket.destroy();
    assert.equal(banner.toString(), 'RFB 003.008\n');
  });

  it('takes a screenshot as a PNG of the VGA screen', async () => {
    const { png } = await client.request<{ png: string }>('screenshot');
    const image = Buffer.from(png, 'base64');
    assert.deepEqual([...image.subarray(1, 4)].map((c) => String.fromCharCode(c)).join(''), 'PNG');
    assert.equal(image.readUInt32BE(16), 720, 'text mode is 720 pixels wide');
    assert.equal(image.readUInt32BE(20), 400);
  });

  it('writes a pattern to the second disk in the guest and syncs it', async () => {
    written = { offset: 3 * MiB, length: 4 * MiB, md5: '' };
    const out = await serial.run('dd if=/dev/urandom of=/dev/sdb bs=65536 count=64 seek=48 2>/dev/null; sync; '
      + 'echo 3 > /proc/sys/vm/drop_caches; echo "md5 $(dd if=/dev/sdb bs=65536 count=64 skip=48 2>/dev/null | md5sum)"');
    const md5 = /md5 ([0-9a-f]{32})/.exec(out)?.[1];
    assert.ok(md5, `no checksum in: ${out}`);
    written.md5 = md5;
  });

  it('pauses and resumes: the guest counter stops, then continues', async () => {
    serial.type('ticker &\n');
    await serial.waitFor(/tick 3\n/);
    const paused = recordStates(client);
    await client.request('pause');
    const atPause = lastTick(serial.text);
    await new Promise((r) => setTimeout(r, 3_000));
    assert.ok(lastTick(serial.text) <= atPause + 1, 'no ticks while paused (one may have been on its way)');
    const stopped = lastTick(serial.text);
    await client.request('resume');
    await serial.waitFor(`tick ${stopped + 2}\n`, 15_000);
    assert.deepEqual(paused.states, ['Paused', 'Running']);
  });

  it('saves state (Saving, TurningOff, TurnedOff, Saved) and the worker and QEMU go away', async () => {
    const recorded = recordStates(client);
    const { worker, qemu } = pidsOf(await client.request('status'));
    const result = await client.request('save');
    assert.equal(result.state, 'Saved');
    assert.deepEqual(recorded.states, ['Saving', 'TurningOff', 'TurnedOff', 'Saved']);
    assert.ok(fs.statSync(config.savedState).size > 1 * MiB, 'the .vsv holds the memory');
    await waitGone(qemu);
    await waitGone(worker);
    assert.equal(manager.status(config.id)?.state, 'Saved');
  });

  it('restores (TurningOn, Restoring, Running): the counter continues without a reboot', async () => {
    const before = lastTick(serial.text);
    const { states } = await turnOn();
    assert.deepEqual(states, ['TurningOn', 'Restoring', 'Running']);
    await serial.waitFor(`tick ${before + 2}\n`, 15_000);
    const ticks = [...serial.text.matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1]));
    assert.ok(ticks[0] >= before && ticks[0] <= before + 1, `the first tick after restore (${ticks[0]}) follows the last before it (${before})`);
    assert.ok(!serial.text.includes(GUEST_READY_MARKER), 'the guest did not boot again');
    assert.ok(!fs.existsSync(config.savedState), 'the saved state is used up');
  });

  it('a new manager finds the running worker and reattaches', async () => {
    const other = new VmManager(manager.root);
    assert.equal(other.status(config.id)?.state, 'Running');
    const again = await other.attach(config.id);
    assert.equal((await again.request('status')).state, 'Running');
    again.close();
  });

  it('refuses a second VM a running VM\'s MAC address, or its disk, and starts nothing', async () => {
    const sameMac = parseVmConfig({ name: 'twin', networkAdapters: [{ mac: config.networkAdapters[0].mac }] }, work);
    await assert.rejects(manager.launch(sameMac), (e: VmError) => e.code === 'VM_E_MAC_IN_USE' && e.message.includes('lifecycle'));
    const sameDisk = parseVmConfig({ name: 'thief', engine: 'tcg', scsi: [{ disks: [{ path: 'data.vhd' }] }] }, work);
    const thief = await manager.launch(sameDisk);
    try {
      await assert.rejects(thief.request('turnOn'), (e: VmError) => e.code === 'VHD_E_LOCKED' && /VM "lifecycle"/.test(e.message));
      assert.equal(manager.status(sameDisk.id)?.state, 'TurnedOff');
    } finally {
      thief.close();
    }
  });

  it('resets (TurningOff, TurningOn, Running): the guest boots again', async () => {
    const recorded = recordStates(client);
    const from = serial.text.length;
    await client.request('reset');
    assert.deepEqual(recorded.states, ['TurningOff', 'TurningOn', 'Running']);
    await serial.waitFor(GUEST_READY_MARKER, BOOT_MS, from);
  });

  it('shuts down by the ACPI power button: the guest powers itself off', async () => {
    const recorded = recordStates(client);
    const status = await client.request('shutdown', { timeoutMs: 60_000 });
    assert.equal(status.state, 'TurnedOff');
    assert.equal(status.stopReason, 'the guest shut down');
    assert.ok(serial.text.includes(GUEST_POWER_BUTTON_MARKER));
    assert.deepEqual(recorded.states, ['TurningOff', 'TurnedOff']);
  });

  it('the pattern written in the guest reads back identically through the VHD engine', () => {
    const disk = VhdDisk.open(path.join(work, 'data.vhd'));
    try {
      const data = Buffer.alloc(written.length);
      disk.readInto(data, written.offset);
      assert.equal(crypto.createHash('md5').update(data).digest('hex'), written.md5);
    } finally {
      disk.close();
    }
  });

  it('turns off (TurningOff, TurnedOff): the power is cut at once', async () => {
    await turnOn();
    const recorded = recordStates(client);
    const { qemu } = pidsOf(await client.request('status'));
    const status = await client.request('turnOff');
    assert.equal(status.state, 'TurnedOff');
    assert.equal(status.stopReason, 'turned off');
    assert.deepEqual(recorded.states, ['TurningOff', 'TurnedOff']);
    await waitGone(qemu);
  });

  it('QEMU dies with its worker, and the VM is reported crashed with the reason', async () => {
    await turnOn();
    const { worker, qemu } = pidsOf(await client.request('status'));
    process.kill(worker, 'SIGKILL');
    await waitGone(qemu);
    const status = manager.status(config.id);
    assert.equal(status?.state, 'TurnedOff');
    assert.match(status?.crashed?.reason ?? '', new RegExp(`worker \\(pid ${worker}\\) died while the VM was Running`));
  });

  it('a QEMU that dies under its worker makes the VM crashed, with QEMU\'s exit in the reason', async () => {
    await turnOn();
    const ended = new Promise<VmStatus>((resolve) => client.on('state', (s) => { if (s.state === 'TurnedOff') resolve(s); }));
    const { qemu } = pidsOf(await client.request('status'));
    process.kill(qemu, 'SIGKILL');
    const status = await ended;
    assert.match(status.crashed?.reason ?? '', /QEMU exited unexpectedly \(SIGKILL\)/);
  });
});
