// The VM worker process: `node vmm/worker/main.js RUN_DIR`. It runs the VM whose configuration
// the manager wrote to RUN_DIR/config.json, answers RUN_DIR/control.sock and console.sock, keeps
// RUN_DIR/status.json current, and exits once the VM has stopped. It outlives whoever started it.

import fs from 'node:fs';
import path from 'node:path';
import { parseVmConfig } from '../config.js';
import { VmPaths } from '../paths.js';
import { isAlive } from '../../host/process.js';
import { isActive } from '../state.js';
import type { RunLicence } from '../run-licence.js';
import { takeOverOtherMachinesLocks } from '../../storage/vhd/lock.js';
import { ControlServer } from './control.js';
import { LicenceKeeper } from './licence.js';
import { VirtualMachine } from './machine.js';
import { qemuUser } from './user.js';

const IDLE_EXIT_MS = 60_000;

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString()} worker ${process.pid}: ${line}\n`);
}

async function main(): Promise<void> {
  const [dir, tiedFlag, tiedPid] = process.argv.slice(2);
  if (!dir) throw new Error('usage: worker RUN_DIR [--tied-to PID]');
  const paths = new VmPaths(path.resolve(dir));
  const config = parseVmConfig(JSON.parse(fs.readFileSync(paths.config, 'utf8')), paths.dir);
  const licence = readLicence(paths, log);
  const vm = new VirtualMachine({ config, paths, runAs: qemuUser(log), log, licence });
  licence?.on('fence', (reason) => {
    // The gate of every disk closed with the licence; now QEMU goes.
    log(`fenced: ${reason}`);
    void vm.fence(reason).catch((e: Error) => log(`fencing ${config.name} failed: ${e.message}`));
  });
  const control = new ControlServer(vm);

  let hasRun = false;
  vm.on('state', (status) => {
    // Recorded before announced: whoever hears of a state and then reads status.json (vserverd's
    // get_State does, once the VM is no longer active) must find that state there, not the one before.
    paths.writeStatus(status);
    control.announceState(status);
    log(`${config.name}: ${status.state}${status.crashed ? ` (crashed: ${status.crashed.reason})` : ''}`);
    if (isActive(status.state)) hasRun = true;
    else if (hasRun) scheduleExit();
  });
  // A disk switched (snapshot, merge): on record before the guest writes to it.
  vm.on('disks', (status) => paths.writeStatus(status));
  paths.writeStatus(vm.status);

  let exiting = false;
  const scheduleExit = (): void => {
    if (exiting) return;
    exiting = true;
    // Let the answer to the request that stopped the VM go out first.
    setTimeout(() => {
      vm.console.close();
      // QEMU is gone and the disks are closed: the VM's ownership may go at once (a clustered VM).
      const revoked = licence ? licence.revoke().then((outcome) => log(`licence: ${outcome}`)) : Promise.resolve();
      void revoked.finally(() => control.close()).finally(() => process.exit(0));
      setTimeout(() => process.exit(0), 2_000).unref();
    }, 200);
  };
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(signal, () => {
      log(`${signal}: turning ${config.name} off`);
      if (!isActive(vm.status.state)) scheduleExit();
      else void vm.turnOff(`turned off: the worker received ${signal}`).catch(() => process.exit(1));
    });
  }

  // A foreground "vsctl vm run" ties the VM to itself: if it is killed, the VM is turned off.
  if (tiedFlag === '--tied-to') {
    const owner = Number(tiedPid);
    setInterval(() => {
      if (isAlive(owner)) return;
      log(`process ${owner}, which this VM is tied to, is gone; turning ${config.name} off`);
      if (isActive(vm.status.state)) void vm.turnOff(`turned off: process ${owner} it was tied to is gone`).catch(() => process.exit(1));
      else scheduleExit();
    }, 1_000).unref();
  }

  // A worker whose starter vanished before asking for a turn on would otherwise wait forever.
  setTimeout(() => {
    if (hasRun) return;
    log(`${config.name} was not turned on within ${IDLE_EXIT_MS / 1000} s of the worker's start; exiting`);
    scheduleExit();
  }, IDLE_EXIT_MS).unref();

  await vm.console.listen(paths.console);
  await control.listen(paths.control);
  log(`ready for ${config.name} (${config.id})`);
}

/** The run licence vserverd left in the run folder for a clustered VM; null for a VM of a lone host. */
function readLicence(paths: VmPaths, log: (line: string) => void): LicenceKeeper | null {
  if (!fs.existsSync(paths.licence)) return null;
  const licence = JSON.parse(fs.readFileSync(paths.licence, 'utf8')) as RunLicence;
  const valid = Array.isArray(licence.endpoints) && licence.endpoints.length > 0 && licence.endpoints.every((e) => typeof e === 'string')
    && typeof licence.leaseId === 'string' && /^\d+$/.test(licence.leaseId) && Number.isFinite(licence.ttlSeconds) && licence.ttlSeconds > 0;
  if (!valid) throw new Error(`${paths.licence} is not a run licence (endpoints, leaseId, ttlSeconds)`);
  takeOverOtherMachinesLocks();
  log(`run licence: lease ${licence.leaseId} (TTL ${licence.ttlSeconds} s) on ${licence.endpoints.join(', ')}, host ${licence.host}`);
  return new LicenceKeeper(licence, log);
}

main().catch((e: Error) => {
  log(`failed: ${e.message}`);
  process.exit(1);
});
