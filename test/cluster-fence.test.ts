// The worker's side of a cluster's fencing (issue 17), against a real etcd (test/helpers/etcd.ts)
// and real QEMU booting the test guest: the worker renews its VM's lease by itself (no vserverd
// anywhere in this file), and when the lease is revoked, when etcd is gone, or when the worker
// was frozen past its deadline, it stops every disk write and kills QEMU before etcd can expire
// the lease; a turn off revokes the lease at once.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createDifferencing, createDynamic } from '../storage/vhd/index.js';
import { type LockOwner, lockPath } from '../storage/vhd/lock.js';
import { isAlive, processStartTicks } from '../host/process.js';
import { parseVmConfig, type VmConfig } from '../vmm/config.js';
import { VmManager } from '../vmm/manager.js';
import { VmPaths } from '../vmm/paths.js';
import { FENCE_MARGIN_MS, LICENCE_RENEW_MS, type RunLicence, VM_LEASE_TTL_S } from '../vmm/run-licence.js';
import type { VmStatus } from '../vmm/state.js';
import type { WorkerClient } from '../vmm/worker-client.js';
import { EtcdCluster, grantLease, leaseTtl, putWithLease, revokeLease } from './helpers/etcd.js';
import { GUEST_READY_MARKER, testGuest } from './helpers/guest.js';
import { countRecords, lastAcknowledged } from './helpers/records.js';
import { MiB, makeTempDir, removeDir } from './helpers/vhd-fixtures.js';
import { SerialReader } from './helpers/vm.js';
import { delay, waitFor } from './helpers/wait.js';

const BOOT_MS = 120_000;
const RECORDS_MS = 60_000;
const TTL_MS = VM_LEASE_TTL_S * 1000;

const work = makeTempDir('cluster-fence');
fs.chmodSync(work, 0o711); // QEMU's unprivileged user passes through to its folder in the run root
const manager = new VmManager(path.join(work, 'run'));
let template: string;
let etcd: EtcdCluster;

interface Vm {
  dir: string;
  config: VmConfig;
  client: WorkerClient;
  serial: SerialReader;
  paths: VmPaths;
  leaseId: string;
}
const vms: Vm[] = [];

/** A VM given a fresh lease (its ownership key attached), its worker started with the licence and the VM turned on. */
async function startLicensedVm(name: string, options: { dataLock?: LockOwner; licensed?: boolean; leaseGone?: boolean; etcd?: EtcdCluster } = {}): Promise<Vm> {
  const store = options.etcd ?? etcd;
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { mode: 0o711 });
  await createDifferencing(path.join(dir, 'boot.vhd'), template);
  await createDynamic(path.join(dir, 'data.vhd'), { size: 64 * MiB });
  if (options.dataLock) fs.writeFileSync(lockPath(path.join(dir, 'data.vhd')), JSON.stringify(options.dataLock));
  const config = parseVmConfig({
    name, memoryMB: 128, engine: 'auto',
    scsi: [{ model: 'lsi53c895a', disks: [{ target: 0, path: 'boot.vhd' }, { target: 1, path: 'data.vhd' }] }],
    networkAdapters: [], bootOrder: ['disk'],
  }, dir);
  const endpoint = store.endpoints[0];
  const leaseId = await grantLease(endpoint, VM_LEASE_TTL_S);
  await putWithLease(endpoint, `/vserver-test/owners/${config.id}`, 'here', leaseId);
  if (options.leaseGone) await revokeLease(endpoint, leaseId);
  const licence: RunLicence = { endpoints: store.endpoints, leaseId, ttlSeconds: VM_LEASE_TTL_S, host: 'test-host' };
  const client = await manager.launch(config, options.licensed === false ? {} : { licence });
  const paths = VmPaths.of(config.id, manager.root);
  const serial = await SerialReader.attach(paths.console);
  const vm = { dir, config, client, serial, paths, leaseId };
  vms.push(vm);
  await client.request('turnOn');
  return vm;
}

function workerLog(vm: Vm): string {
  return fs.readFileSync(vm.paths.workerLog, 'utf8');
}

/** Waits until the VM's status says TurnedOff (its worker wrote it), and returns it. */
async function waitTurnedOff(vm: Vm, timeoutMs: number): Promise<VmStatus> {
  await waitFor(`${vm.config.name} TurnedOff in status.json`, () => vm.paths.readStatus()?.state === 'TurnedOff', timeoutMs, 20);
  return vm.paths.readStatus()!;
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** The send time (ms since the epoch) of the last acknowledged renewal, as the fence reason states it. */
function lastRenewalSent(reason: string): number {
  const m = /the last was sent at (\S+) \(TTL (\d+) s\)/.exec(reason);
  assert.ok(m, `the fence reason names the last renewal: ${reason}`);
  return Date.parse(m[1]);
}

before(async () => {
  template = path.join(work, 'template.vhd');
  fs.copyFileSync(testGuest().bootVhd, template);
  etcd = await EtcdCluster.start();
});

after(async () => {
  for (const vm of vms) {
    await vm.client.request('turnOff').catch(() => {});
    vm.client.close();
    vm.serial.close();
  }
  for (const status of manager.list()) {
    for (const pid of [status.qemuPid, status.workerPid]) {
      if (pid && isAlive(pid)) {
        process.kill(pid, 'SIGCONT');
        process.kill(pid, 'SIGKILL');
      }
    }
  }
  await etcd?.stop();
  removeDir(work);
});

describe('a worker keeps its VM\'s run licence and fences itself', { timeout: 900_000 }, () => {
  it('with no vserverd at all the worker keeps the lease alive for more than 3 TTLs; frozen (SIGSTOP) past its deadline, after SIGCONT it writes nothing more and QEMU is killed', async (t) => {
    const vm = await startLicensedVm('frozen');
    await vm.serial.waitFor(GUEST_READY_MARKER, BOOT_MS);
    vm.serial.type('/bin/records /dev/sdb &\n');
    await vm.serial.waitFor(/^VSREC 5\s*$/m, RECORDS_MS);

    // (d) Only the worker renews: the lease's remaining TTL at etcd never falls to where it would expire.
    const watchUntil = Date.now() + 3 * TTL_MS + 2_000;
    let lowest = Infinity;
    while (Date.now() < watchUntil) {
      const ttl = await leaseTtl(etcd.endpoints[0], vm.leaseId);
      lowest = Math.min(lowest, ttl);
      assert.ok(ttl > 0, `the lease is alive at etcd (TTL ${ttl})`);
      await delay(250);
    }
    t.diagnostic(`lease kept for ${3 * TTL_MS + 2_000} ms by the worker alone; lowest remaining TTL seen ${lowest} s`);
    // etcd rounds the remaining TTL down: a renewal a second late still leaves 3 s; 2 s allows one more on a loaded machine.
    assert.ok(lowest >= VM_LEASE_TTL_S - 3, `the worker renews every ${LICENCE_RENEW_MS} ms (lowest TTL seen ${lowest} s)`);
    assert.equal(vm.paths.readStatus()?.state, 'Running');

    // (c) QEMU and the worker frozen together for longer than the TTL.
    const status = vm.paths.readStatus()!;
    const qemuPid = status.qemuPid!;
    const workerPid = status.workerPid!;
    process.kill(qemuPid, 'SIGSTOP');
    process.kill(workerPid, 'SIGSTOP');
    const frozenAt = Date.now();
    await delay(200);
    const data = path.join(vm.dir, 'data.vhd');
    const before = sha256(data);
    const ackedBefore = lastAcknowledged(vm.serial.text);
    // Past the TTL (etcd expires leases on its own timer, give it a little more).
    await delay(Math.max(0, frozenAt + TTL_MS + 1_500 - Date.now()));
    assert.equal(await leaseTtl(etcd.endpoints[0], vm.leaseId), -1, 'the frozen worker\'s lease has expired at etcd');
    // QEMU first: the guest's next writes wait in the NBD socket when the worker wakes, so its
    // first act is to read them (I/O comes before its timers): only the gate can refuse them.
    process.kill(qemuPid, 'SIGCONT');
    await delay(1_000);
    process.kill(workerPid, 'SIGCONT');
    const ended = await waitTurnedOff(vm, 10_000);
    await waitFor('QEMU to be gone', () => !isAlive(qemuPid), 5_000, 20);
    assert.ok(ended.fenced, `status.json records the fence: ${JSON.stringify(ended)}`);
    assert.match(ended.fenced.reason, /deadline .* has passed/);
    assert.match(workerLog(vm), /worker \d+: fenced: /);
    await waitFor('the worker to exit', () => !isAlive(workerPid), 10_000, 20);
    assert.equal(sha256(data), before, 'not a byte reached the data disk after the deadline');
    const count = countRecords(data);
    t.diagnostic(`records acknowledged before the freeze ${ackedBefore}, on the disk ${count}; fence: ${ended.fenced.reason}`);
    assert.ok(count >= ackedBefore, `every acknowledged record is on the disk (${count} < ${ackedBefore})`);
  });

  it('a lease revoked at etcd: QEMU is gone within about 2 s and the status says fenced, with the reason', async (t) => {
    const vm = await startLicensedVm('revoked');
    const qemuPid = vm.paths.readStatus()!.qemuPid!;
    assert.ok(isAlive(qemuPid));
    await delay(1_500);
    const revokedAt = performance.now();
    await revokeLease(etcd.endpoints[0], vm.leaseId);
    await waitFor('QEMU to be killed after the revoke', () => !isAlive(qemuPid), 2_500, 10);
    const took = performance.now() - revokedAt;
    t.diagnostic(`QEMU gone ${Math.round(took)} ms after the revoke (renewals every ${LICENCE_RENEW_MS} ms)`);
    const ended = await waitTurnedOff(vm, 5_000);
    assert.ok(ended.fenced, `status.json records the fence: ${JSON.stringify(ended)}`);
    assert.match(ended.fenced.reason, /lease \d+ is gone at etcd/);
    assert.match(ended.stopReason ?? '', /^fenced: /);
    assert.match(workerLog(vm), /fenced: the lease \d+ is gone at etcd/);
    assert.ok(took < 2_500, `QEMU gone ${Math.round(took)} ms after the revoke`);
  });

  it('a turn off revokes the lease at once (not by its TTL)', async () => {
    const vm = await startLicensedVm('stopped');
    await delay(1_500);
    assert.ok(await leaseTtl(etcd.endpoints[0], vm.leaseId) > 0);
    await vm.client.request('turnOff');
    const offAt = performance.now();
    // The last renewal was at most a second ago: expiry by TTL would take ≥ TTL − 1 s.
    const bound = TTL_MS - LICENCE_RENEW_MS - 1_000;
    const deadline = offAt + bound;
    let ttl = await leaseTtl(etcd.endpoints[0], vm.leaseId);
    while (ttl !== -1 && performance.now() < deadline) {
      await delay(50);
      ttl = await leaseTtl(etcd.endpoints[0], vm.leaseId);
    }
    assert.equal(ttl, -1, `the lease is gone within ${bound} ms of the turn off`);
    const status = await waitTurnedOff(vm, 5_000);
    assert.equal(status.fenced, undefined);
    await waitFor('the revoke in the worker\'s log', () => /licence: lease \d+ revoked at /.test(workerLog(vm)), 5_000, 50);
  });

  it('a licence that cannot be renewed at turn on: VM_E_LICENCE_LOST, and QEMU never starts', async () => {
    await assert.rejects(startLicensedVm('lease-gone', { leaseGone: true }), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'VM_E_LICENCE_LOST', e.message);
      assert.match(e.message, /could not be renewed: the lease \d+ is gone at etcd/);
      return true;
    });
    const vm = vms.find((v) => v.config.name === 'lease-gone');
    assert.ok(vm);
    const status = vm.paths.readStatus()!;
    assert.equal(status.state, 'TurnedOff');
    assert.equal(status.qemuPid, undefined);
    assert.ok(!fs.existsSync(vm.paths.qemuLog), 'QEMU was never spawned (it has no log)');
  });

  it('disk locks: a licensed worker takes over a lock left by another machine, not one of a live process here; an unlicensed worker takes neither', async () => {
    const since = new Date().toISOString();
    const elsewhere: LockOwner = { holder: 'VM "moved" (worker pid 4242)', pid: 4242, host: 'another-machine', processStart: '1', since };
    const takenOver = await startLicensedVm('lock-elsewhere', { dataLock: elsewhere });
    assert.equal(takenOver.paths.readStatus()?.state, 'Running');
    const lock = JSON.parse(fs.readFileSync(lockPath(path.join(takenOver.dir, 'data.vhd')), 'utf8')) as LockOwner;
    assert.equal(lock.pid, takenOver.paths.readStatus()?.workerPid, 'the worker holds the lock now');
    await takenOver.client.request('turnOff');

    const here: LockOwner = { holder: 'this test', pid: process.pid, host: os.hostname(), processStart: processStartTicks(process.pid)!, since };
    await assert.rejects(startLicensedVm('lock-here', { dataLock: here }), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'VHD_E_LOCKED', e.message);
      return true;
    });
    await assert.rejects(startLicensedVm('lock-elsewhere-unlicensed', { dataLock: elsewhere, licensed: false }), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'VHD_E_LOCKED', e.message);
      return true;
    });
  });

  it('etcd silent (its one member frozen: connections taken, never answered): QEMU is gone before the last renewal\'s send time + TTL, with the margin measured', async (t) => {
    const vm = await startLicensedVm('no-etcd');
    const qemuPid = vm.paths.readStatus()!.qemuPid!;
    await delay(2_500);
    // Frozen, not killed: a dead member refuses connections, which proves it cannot expire a lease (the quorum tests below).
    etcd.signal(0, 'SIGSTOP');
    const frozenAt = Date.now();
    try {
      // The last acknowledged renewal was sent before the freeze: QEMU must go before freeze + TTL − margin (+ a timer's slack).
      await waitFor('QEMU to be killed once etcd is silent', () => !isAlive(qemuPid), TTL_MS, 10);
    } finally {
      etcd.signal(0, 'SIGCONT');
    }
    const qemuGoneAt = Date.now();
    const ended = await waitTurnedOff(vm, 5_000);
    assert.ok(ended.fenced, `status.json records the fence: ${JSON.stringify(ended)}`);
    const lastSent = lastRenewalSent(ended.fenced.reason);
    const fencedAt = Date.parse(ended.fenced.at);
    const expiresNoEarlierThan = lastSent + TTL_MS;
    const margin = expiresNoEarlierThan - fencedAt;
    t.diagnostic(`etcd frozen at +0 ms; last renewal sent at ${lastSent - frozenAt} ms; fenced at +${fencedAt - frozenAt} ms; QEMU seen gone at +${qemuGoneAt - frozenAt} ms; `
      + `margin before the lease could expire ${margin} ms (designed ${FENCE_MARGIN_MS} ms)`);
    assert.ok(lastSent <= frozenAt);
    assert.ok(fencedAt < expiresNoEarlierThan, `fenced ${fencedAt - lastSent} ms after the last renewal's send, TTL ${TTL_MS} ms`);
    assert.ok(qemuGoneAt < expiresNoEarlierThan, `QEMU gone ${qemuGoneAt - lastSent} ms after the last renewal's send, TTL ${TTL_MS} ms`);
    assert.ok(margin >= FENCE_MARGIN_MS - 500, `the margin ${margin} ms is about the designed ${FENCE_MARGIN_MS} ms`);
    assert.match(workerLog(vm), /fenced: no renewal acknowledged in time/);
  });
});

describe('etcd losing quorum: a worker runs on only while it can prove no quorum exists', { timeout: 600_000 }, () => {
  let three: EtcdCluster;
  before(async () => { three = await EtcdCluster.start({ members: 3 }); });
  after(async () => { await three?.stop(); });

  it('2 of 3 members killed: the guest writes on for 3 TTLs; restarted, renewals resume; then 1 killed and 1 frozen (no proof): fenced in time', async (t) => {
    const vm = await startLicensedVm('quorum', { etcd: three });
    await vm.serial.waitFor(GUEST_READY_MARKER, BOOT_MS);
    vm.serial.type('/bin/records /dev/sdb &\n');
    await vm.serial.waitFor(/^VSREC 3\s*$/m, RECORDS_MS);
    const qemuPid = vm.paths.readStatus()!.qemuPid!;

    three.kill(1);
    three.kill(2);
    const killedAt = Date.now();
    const ackedAtKill = lastAcknowledged(vm.serial.text);
    await delay(3 * TTL_MS);
    assert.ok(isAlive(qemuPid), `QEMU runs on through the quorum loss: ${workerLog(vm).split('\n').slice(-5).join(' | ')}`);
    const ackedDuring = lastAcknowledged(vm.serial.text);
    assert.ok(ackedDuring > ackedAtKill + 3, `the guest acknowledged records while etcd had no quorum (${ackedAtKill} then ${ackedDuring})`);
    assert.match(workerLog(vm), /licence: etcd has lost quorum \(2 of 3 members refuse connections/);

    await Promise.all([three.restart(1), three.restart(2)]);
    const restartedAt = Date.now();
    await waitFor('the worker to say etcd has a quorum again', () => /etcd has a quorum again/.test(workerLog(vm)), 3 * TTL_MS, 100);
    assert.ok(await leaseTtl(three.endpoints[0], vm.leaseId) > 0, 'the lease lived through the quorum loss');
    assert.ok(isAlive(qemuPid));
    t.diagnostic(`ran ${Math.round((restartedAt - killedAt) / 1000)} s without a quorum; records acknowledged ${ackedAtKill} at the kill, ${ackedDuring} ${3 * TTL_MS / 1000} s later`);

    // One member dead and one silent: the live ones could still be a majority elsewhere; nothing is proven.
    await delay(2 * LICENCE_RENEW_MS);
    three.kill(1);
    three.signal(2, 'SIGSTOP');
    const brokenAt = Date.now();
    try {
      await waitFor('QEMU to be fenced without a proof', () => !isAlive(qemuPid), TTL_MS, 10);
    } finally {
      three.signal(2, 'SIGCONT');
    }
    const ended = await waitTurnedOff(vm, 5_000);
    assert.ok(ended.fenced, `status.json records the fence: ${JSON.stringify(ended)}`);
    const lastSent = lastRenewalSent(ended.fenced.reason);
    t.diagnostic(`1 killed, 1 frozen at +0 ms; fenced at +${Date.parse(ended.fenced.at) - brokenAt} ms, last renewal sent at ${lastSent - brokenAt} ms`);
    assert.ok(Date.parse(ended.fenced.at) < lastSent + TTL_MS - FENCE_MARGIN_MS + 500, 'fenced at the usual deadline');
  });
});
