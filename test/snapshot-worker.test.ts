// Snapshots and online merges in a running VM worker, with the test guest writing numbered,
// checksummed records (/bin/records) to its second disk all along: a snapshot taken mid-stream
// holds a valid prefix of the records and the new top holds every acknowledged one; merging a
// layer into its child and committing a child into its layer, while the guest writes, lose
// nothing; a kill -9 of the worker at points inside snapshotDisks and mergeLayer (crash points,
// whose message in the worker's log proves where it died) leaves files that `vsctl vhd check`
// finds valid and a chain, the one status.json names, that holds every acknowledged record.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isAlive } from '../host/process.js';
import { readChangeMap } from '../storage/nbd/change-map.js';
import { DiskType, VhdDisk, checkDisk, createDifferencing, createDynamic } from '../storage/vhd/index.js';
import { parseVmConfig, type VmConfig } from '../vmm/config.js';
import { VmManager } from '../vmm/manager.js';
import { VmPaths } from '../vmm/paths.js';
import type { VmStatus } from '../vmm/state.js';
import type { SnapshotResult, WorkerClient } from '../vmm/worker-client.js';
import { GUEST_READY_MARKER, testGuest } from './helpers/guest.js';
import { countRecords, lastAcknowledged } from './helpers/records.js';
import { MiB, makeTempDir, removeDir, vsctl } from './helpers/vhd-fixtures.js';
import { SerialReader } from './helpers/vm.js';

const BOOT_MS = 120_000;
const RECORDS_MS = 60_000;
const DATA_SLOT = 'scsi0-1';
const BOOT_SLOT = 'scsi0-0';

const work = makeTempDir('snapshot-worker');
fs.chmodSync(work, 0o711); // QEMU's unprivileged user passes through to its folder in the run root
const manager = new VmManager(path.join(work, 'run'));
let template: string;

interface Vm {
  dir: string;
  config: VmConfig;
  client: WorkerClient;
  serial: SerialReader;
  paths: VmPaths;
}
const vms: Vm[] = [];

/** A VM with its own folder: boot disk a child of the guest's image, a 64 MB dynamic data disk; records running. */
async function startVm(name: string, crashAt?: string): Promise<Vm> {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { mode: 0o711 });
  await createDifferencing(path.join(dir, 'boot.vhd'), template);
  await createDynamic(path.join(dir, 'data.vhd'), { size: 64 * MiB });
  const config = parseVmConfig({
    name, memoryMB: 128, engine: 'auto',
    scsi: [{ model: 'lsi53c895a', disks: [{ target: 0, path: 'boot.vhd' }, { target: 1, path: 'data.vhd' }] }],
    networkAdapters: [], bootOrder: ['disk'],
  }, dir);
  if (crashAt) process.env.VSERVER_CRASH_AT = crashAt;
  let client: WorkerClient;
  try {
    client = await manager.launch(config);
  } finally {
    delete process.env.VSERVER_CRASH_AT;
  }
  const paths = VmPaths.of(config.id, manager.root);
  const serial = await SerialReader.attach(paths.console);
  const vm = { dir, config, client, serial, paths };
  vms.push(vm);
  await client.request('turnOn');
  await serial.waitFor(GUEST_READY_MARKER, BOOT_MS);
  serial.type('/bin/records /dev/sdb &\n');
  await waitForRecords(vm, 5);
  return vm;
}

async function waitForRecords(vm: Vm, atLeast: number): Promise<number> {
  await vm.serial.waitFor(new RegExp(`^VSREC ${atLeast}\\s*$`, 'm'), RECORDS_MS);
  return lastAcknowledged(vm.serial.text);
}

function top(status: VmStatus | null, slot: string): string {
  const disk = status?.disks?.find((d) => d.slot === slot);
  assert.ok(disk, `status.json names no disk for ${slot}: ${JSON.stringify(status?.disks)}`);
  return disk.file;
}

async function assertValid(file: string): Promise<void> {
  const report = await checkDisk(file);
  assert.deepEqual(report.errors, [], `${file}: ${JSON.stringify(report.errors)}`);
  const r = vsctl(['vhd', 'check', file]);
  assert.equal(r.status, 0, `vsctl vhd check ${file}: ${r.stdout}${r.stderr}`);
}

function chainOf(file: string): string[] {
  const disk = VhdDisk.open(file);
  try {
    return disk.chain().map((d) => d.path);
  } finally {
    disk.close();
  }
}

after(async () => {
  for (const vm of vms) {
    await vm.client.request('turnOff').catch(() => {});
    vm.client.close();
    vm.serial.close();
  }
  for (const status of manager.list()) {
    for (const pid of [status.qemuPid, status.workerPid]) if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
  }
  removeDir(work);
});

before(async () => {
  const guest = testGuest();
  template = path.join(work, 'template.vhd');
  fs.copyFileSync(guest.bootVhd, template);
});

describe('snapshots and merges while the guest writes records', { timeout: 900_000 }, () => {
  let vm: Vm;
  let dataBase: string;
  let first: SnapshotResult;

  it('snapshotDisks mid-stream: the old top holds a valid prefix, the new top every acknowledged record, status.json the new tops', async (t) => {
    vm = await startVm('writer');
    dataBase = path.join(vm.dir, 'data.vhd');
    const ackedBefore = lastAcknowledged(vm.serial.text);
    const layers = [
      { slot: BOOT_SLOT, file: path.join(vm.dir, 'Snapshots', 'boot-1.vhd') },
      { slot: DATA_SLOT, file: path.join(vm.dir, 'Snapshots', 'data-1.vhd') },
    ];
    fs.mkdirSync(path.join(vm.dir, 'Snapshots'));
    first = await vm.client.snapshotDisks({ layers, changeMaps: { generation: 'backup-1' } });
    const ackedAfter = lastAcknowledged(vm.serial.text);
    t.diagnostic(`pause ${first.pauseMs} ms`);
    assert.deepEqual(first.previous, [{ slot: BOOT_SLOT, file: path.join(vm.dir, 'boot.vhd') }, { slot: DATA_SLOT, file: dataBase }]);
    assert.ok(first.pauseMs >= 0 && first.pauseMs < 1000, `pause ${first.pauseMs} ms`);
    const status = vm.paths.readStatus();
    assert.equal(top(status, DATA_SLOT), layers[1].file);
    assert.equal(top(status, BOOT_SLOT), layers[0].file);
    assert.deepEqual((await vm.client.disks()).find((d) => d.slot === DATA_SLOT)?.chain, [layers[1].file, dataBase]);
    // The change map up to the instant is closed into the previous top's file; it was unsure (the first one ever).
    const closed = first.changeMaps?.find((m) => m.slot === DATA_SLOT);
    assert.equal(closed?.file, `${dataBase}.cbt`);
    assert.equal(closed?.unsure, true);
    assert.equal(readChangeMap(dataBase).unsure, false, 'the closed map of the previous top is sure from now on');
    const more = await waitForRecords(vm, ackedAfter + 10);
    const inSnapshot = countRecords(dataBase);
    assert.ok(inSnapshot >= ackedBefore && inSnapshot <= ackedAfter + 1, `the snapshot holds ${inSnapshot} records; ${ackedBefore} were acknowledged before it, ${ackedAfter} after`);
    assert.ok(countRecords(layers[1].file) >= more, 'the new top holds every acknowledged record');
    await assertValid(dataBase);
    await assertValid(layers[1].file);
  });

  it('mergeLayer intoChild: the old top merged into the running top while records go on', async () => {
    const second = path.join(vm.dir, 'Snapshots', 'data-2.vhd');
    await vm.client.snapshotDisks({ layers: [{ slot: DATA_SLOT, file: second }] });
    const layer = path.join(vm.dir, 'Snapshots', 'data-1.vhd');
    const progress: number[] = [];
    vm.client.on('progress', (p) => { if (p.operation === 'merge') progress.push(p.percent); });
    const acked = lastAcknowledged(vm.serial.text);
    const result = await vm.client.mergeLayer({ slot: DATA_SLOT, layer, direction: 'intoChild' });
    assert.equal(result.top, second);
    assert.ok(result.bytesMerged > 0 && acked > 0, `merged ${result.bytesMerged} bytes`);
    assert.ok(progress.includes(100));
    assert.deepEqual((await vm.client.disks()).find((d) => d.slot === DATA_SLOT)?.chain, [second, dataBase]);
    const more = await waitForRecords(vm, lastAcknowledged(vm.serial.text) + 10);
    assert.ok(countRecords(second) >= more);
    assert.ok(fs.existsSync(layer), 'the worker deletes nothing');
  });

  it('mergeLayer intoChild of the base into a middle layer: that layer becomes a standalone dynamic disk', async () => {
    const third = path.join(vm.dir, 'Snapshots', 'data-3.vhd');
    const second = path.join(vm.dir, 'Snapshots', 'data-2.vhd');
    await vm.client.snapshotDisks({ layers: [{ slot: DATA_SLOT, file: third }] });
    await vm.client.mergeLayer({ slot: DATA_SLOT, layer: dataBase, direction: 'intoChild' });
    assert.deepEqual((await vm.client.disks()).find((d) => d.slot === DATA_SLOT)?.chain, [third, second]);
    const more = await waitForRecords(vm, lastAcknowledged(vm.serial.text) + 10);
    assert.ok(countRecords(third) >= more);
    const middle = VhdDisk.open(second);
    assert.equal(middle.type, DiskType.Dynamic);
    middle.close();
    await assertValid(second);
  });

  it('mergeLayer intoParent: the running top committed into its layer, which becomes the top', async () => {
    const third = path.join(vm.dir, 'Snapshots', 'data-3.vhd');
    const second = path.join(vm.dir, 'Snapshots', 'data-2.vhd');
    const result = await vm.client.mergeLayer({ slot: DATA_SLOT, layer: second, direction: 'intoParent' });
    assert.equal(result.top, second);
    assert.equal(top(vm.paths.readStatus(), DATA_SLOT), second);
    assert.deepEqual((await vm.client.disks()).find((d) => d.slot === DATA_SLOT)?.chain, [second]);
    const more = await waitForRecords(vm, lastAcknowledged(vm.serial.text) + 10);
    assert.ok(countRecords(second) >= more);
    assert.ok(fs.existsSync(third), 'the worker deletes nothing');
    await vm.client.request('turnOff');
    await assertValid(second);
    assert.ok(countRecords(second) >= lastAcknowledged(vm.serial.text));
    assert.equal(readChangeMap(second).unsure, false, 'a clean stop closes the map of the top');
  });

  it('snapshotDisks with memory: the state is saved while the guest runs, and the method named', async (t) => {
    const mem = await startVm('memory');
    fs.mkdirSync(path.join(mem.dir, 'Snapshots'));
    const result = await mem.client.snapshotDisks({
      layers: [{ slot: DATA_SLOT, file: path.join(mem.dir, 'Snapshots', 'data-1.vhd') }],
      memory: { file: path.join(mem.dir, 'Snapshots', 'state.vsv') },
    });
    assert.ok(result.memory, 'memory saved');
    t.diagnostic(`memory: ${result.memory.method}${result.memory.fallbackReason ? ` (${result.memory.fallbackReason})` : ''}, ${result.memory.bytes} bytes, pause ${result.pauseMs} ms`);
    // QEMU 7.2 always has pause-before-switchover: a running guest is never held for the whole save.
    assert.ok(['background-snapshot', 'live-save'].includes(result.memory.method), result.memory.method);
    assert.ok(result.memory.bytes > 1 * MiB, `${result.memory.bytes} bytes`);
    assert.equal(fs.statSync(result.memory.file).size, result.memory.bytes);
    const status = await mem.client.request('status');
    assert.equal(status.state, 'Running');
    const acked = lastAcknowledged(mem.serial.text);
    await waitForRecords(mem, acked + 5); // the guest goes on after the save
    await mem.client.request('turnOff');
  });
});

describe('kill -9 of the worker inside snapshotDisks and mergeLayer', { timeout: 900_000 }, () => {
  /** Runs `op` in a VM whose worker dies at `point`; returns the VM, the records acknowledged, and status.json after. */
  async function killedAt(point: string, setup: (vm: Vm) => Promise<void>, op: (vm: Vm) => Promise<unknown>): Promise<{ vm: Vm; acked: number; status: VmStatus }> {
    const vm = await startVm(`kill-${point}`, point);
    await setup(vm);
    const status = await vm.client.request('status');
    await assert.rejects(op(vm), /worker/i, 'the operation dies with its worker');
    const log = fs.readFileSync(vm.paths.workerLog, 'utf8');
    assert.match(log, new RegExp(`crash point ${point} reached`), 'the worker died at the crash point, inside the operation');
    for (const pid of [status.workerPid, status.qemuPid]) {
      const deadline = Date.now() + 20_000;
      while (pid && isAlive(pid)) {
        assert.ok(Date.now() < deadline, `process ${pid} outlived the worker`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return { vm, acked: lastAcknowledged(vm.serial.text), status: vm.paths.readStatus()! };
  }

  async function assertRecordsKept(file: string, acked: number): Promise<void> {
    for (const level of chainOf(file)) await assertValid(level);
    const count = countRecords(file);
    assert.ok(count >= acked, `${file} holds ${count} records, ${acked} were acknowledged`);
  }

  const snapshotOp = (vm: Vm): Promise<unknown> => {
    fs.mkdirSync(path.join(vm.dir, 'Snapshots'), { recursive: true });
    return vm.client.snapshotDisks({ layers: [{ slot: DATA_SLOT, file: path.join(vm.dir, 'Snapshots', 'data-k.vhd') }], changeMaps: { generation: 'g' } });
  };

  it('before the pause (children made): status.json keeps the old top, which holds every acknowledged record', async () => {
    const { vm, acked, status } = await killedAt('snapshot-prepared', async () => {}, snapshotOp);
    assert.equal(top(status, DATA_SLOT), path.join(vm.dir, 'data.vhd'));
    await assertRecordsKept(path.join(vm.dir, 'data.vhd'), acked);
    await assertValid(path.join(vm.dir, 'Snapshots', 'data-k.vhd'));
    assert.equal(readChangeMap(path.join(vm.dir, 'data.vhd')).unsure, true, 'a killed worker leaves its map unsure');
  });

  it('after the switch, before the resume: status.json names the new top, and its chain holds every acknowledged record', async () => {
    const { vm, acked, status } = await killedAt('snapshot-switched', async () => {}, snapshotOp);
    const newTop = path.join(vm.dir, 'Snapshots', 'data-k.vhd');
    assert.equal(top(status, DATA_SLOT), newTop);
    await assertRecordsKept(newTop, acked);
  });

  const withSnapshot = async (vm: Vm): Promise<void> => {
    fs.mkdirSync(path.join(vm.dir, 'Snapshots'), { recursive: true });
    await vm.client.snapshotDisks({ layers: [{ slot: DATA_SLOT, file: path.join(vm.dir, 'Snapshots', 'data-s.vhd') }] });
    await waitForRecords(vm, lastAcknowledged(vm.serial.text) + 5);
  };

  it('mergeLayer intoChild, killed once the top is re-parented: the top stands on the base and holds every record', async () => {
    const { vm, acked, status } = await killedAt('merge-into-child-reparented', withSnapshot,
      (v) => v.client.mergeLayer({ slot: DATA_SLOT, layer: path.join(v.dir, 'data.vhd'), direction: 'intoChild' }));
    const newTop = path.join(vm.dir, 'Snapshots', 'data-s.vhd');
    assert.equal(top(status, DATA_SLOT), newTop);
    assert.deepEqual(chainOf(newTop), [newTop], 'the base had no parent: the top stands alone');
    await assertRecordsKept(newTop, acked);
  });

  it('mergeLayer intoParent, killed after the copy: the chain is unchanged and holds every record', async () => {
    const { vm, acked, status } = await killedAt('commit-copied', withSnapshot,
      (v) => v.client.mergeLayer({ slot: DATA_SLOT, layer: path.join(v.dir, 'data.vhd'), direction: 'intoParent' }));
    const newTop = path.join(vm.dir, 'Snapshots', 'data-s.vhd');
    assert.equal(top(status, DATA_SLOT), newTop);
    await assertRecordsKept(newTop, acked);
  });

  it('mergeLayer intoParent, killed after the switch: status.json names the layer as top, which holds every record', async () => {
    const { vm, acked, status } = await killedAt('commit-switched', withSnapshot,
      (v) => v.client.mergeLayer({ slot: DATA_SLOT, layer: path.join(v.dir, 'data.vhd'), direction: 'intoParent' }));
    const base = path.join(vm.dir, 'data.vhd');
    assert.equal(top(status, DATA_SLOT), base);
    await assertRecordsKept(base, acked);
  });
});
