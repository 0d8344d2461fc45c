// Starts VM workers and finds them again. A worker is a detached process with a folder under the
// run root; a new manager (after vserverd restarts) finds the running ones there and reattaches.
// A worker that died while its VM ran makes that VM crashed: status() reads it so, and reap()
// (called by whoever follows the worker, when it sees it go) records it and ends its QEMU.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { commandLine, isAlive } from '../host/process.js';
import type { VmConfig } from './config.js';
import type { RunLicence } from './run-licence.js';
import { runRoot, VmPaths } from './paths.js';
import { isActive, VmError, type VmStatus } from './state.js';
import { WorkerClient } from './worker-client.js';

const WORKER_MAIN = path.join(import.meta.dirname, 'worker', 'main.js');
const WORKER_READY_MS = 15_000;
/** How long a worker whose VM has stopped may take to exit (it closes its sockets and writes its last status). */
export const WORKER_EXIT_MS = 5_000;
/**
 * A worker lives as long as its VM, one per VM: a 1 MiB young generation (instead of growing to
 * 16) keeps its resident memory near 55 MiB instead of 65 (bench/vm-start.ts measures it).
 */
const WORKER_NODE_FLAGS = ['--max-semi-space-size=1'];

export class VmManager {
  constructor(readonly root = runRoot()) {}

  /** Starts a worker for the VM and turns the VM on (restoring its saved state if it has one). */
  async start(config: VmConfig): Promise<WorkerClient> {
    const client = await this.launch(config);
    await client.request('turnOn').catch((e: Error) => { client.close(); throw e; });
    return client;
  }

  /**
   * Starts a worker for the VM and connects to it; the VM is still off (or saved), so that the
   * caller can follow every state of the turn on it asks for next.
   */
  async launch(config: VmConfig, options: { tiedTo?: number; licence?: RunLicence } = {}): Promise<WorkerClient> {
    const paths = VmPaths.of(config.id, this.root);
    const current = await this.reap(config.id);
    if (current && current.workerPid && isActive(current.state)) {
      throw new VmError('VM_E_VM_RUNNING', `${config.name} is already running (worker pid ${current.workerPid})`);
    }
    this.refuseMacsInUse(config);
    // A worker whose VM has just stopped may still be closing; its sockets share these paths.
    if (current?.workerPid && !(await waitForExit(current.workerPid, paths.dir))) process.kill(current.workerPid, 'SIGKILL');
    // The root may be crossed (not listed) by QEMU's unprivileged user, to reach its own folder.
    fs.mkdirSync(this.root, { recursive: true, mode: 0o711 });
    fs.chmodSync(this.root, 0o711);
    fs.rmSync(paths.dir, { recursive: true, force: true });
    fs.mkdirSync(paths.dir, { mode: 0o700 });
    fs.writeFileSync(paths.config, `${JSON.stringify(config, null, 2)}\n`);
    // A clustered VM's right to run: its worker renews it from now on (vmm/worker/licence.ts).
    if (options.licence) fs.writeFileSync(paths.licence, `${JSON.stringify(options.licence, null, 2)}\n`, { mode: 0o600 });
    const log = fs.openSync(paths.workerLog, 'a');
    const worker = spawn(process.execPath, [...WORKER_NODE_FLAGS, WORKER_MAIN, paths.dir, ...(options.tiedTo ? ['--tied-to', String(options.tiedTo)] : [])], { detached: true, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    worker.unref();
    return this.waitForWorker(paths, worker.pid!);
  }

  /** Connects to the worker of a running VM. */
  async attach(vmId: string): Promise<WorkerClient> {
    const status = this.status(vmId);
    if (!status?.workerPid || !isActive(status.state)) {
      throw new VmError('VM_E_VM_NOT_RUNNING', `VM ${vmId} has no running worker${status ? ` (it is ${status.state})` : ''}`);
    }
    return WorkerClient.connect(VmPaths.of(vmId, this.root).control);
  }

  /** Every VM this host's run root knows, running or last seen. */
  list(): VmStatus[] {
    if (!fs.existsSync(this.root)) return [];
    return fs.readdirSync(this.root).flatMap((id) => {
      const status = this.status(id);
      return status ? [status] : [];
    });
  }

  /**
   * A VM's status, as read: it changes nothing. A VM whose worker died while it ran reads as
   * crashed (TurnedOff, with the reason) until reap() records that.
   */
  status(vmId: string): VmStatus | null {
    const paths = VmPaths.of(vmId, this.root);
    const status = paths.readStatus();
    return status && workerDied(status, paths) ? crashedFrom(status) : status;
  }

  /**
   * Records the crash of a VM whose worker died while it ran: kills its QEMU if that still runs
   * and writes the crash into its status. A worker that is still exiting gets `waitMs` to go
   * (its control socket closes before it has gone). Resolves with the VM's status after that.
   */
  async reap(vmId: string, waitMs = 0): Promise<VmStatus | null> {
    const paths = VmPaths.of(vmId, this.root);
    let status = paths.readStatus();
    if (status?.workerPid && isActive(status.state) && waitMs > 0) await waitForExit(status.workerPid, paths.dir, waitMs);
    // Read again: a worker that exited in order wrote its last state on the way out.
    status = paths.readStatus();
    if (!status || !workerDied(status, paths)) return status;
    if (status.qemuPid && isAlive(status.qemuPid) && commandLine(status.qemuPid).includes(status.id)) process.kill(status.qemuPid, 'SIGKILL');
    const crashed = crashedFrom(status);
    paths.writeStatus(crashed);
    return crashed;
  }

  /** The VM ids that have a run folder. */
  runFolders(): string[] {
    return fs.existsSync(this.root) ? fs.readdirSync(this.root) : [];
  }

  /**
   * Removes the run folder of a VM that is not registered any more, once its worker (if it is
   * still closing down) has exited within `waitMs`. A worker that runs on keeps its folder: its VM
   * is active, or it belongs to someone else sharing the run root (vsctl vm run). Resolves with
   * the folder removed, or null.
   */
  async removeRunFolder(vmId: string, waitMs: number): Promise<string | null> {
    const paths = VmPaths.of(vmId, this.root);
    if (!fs.existsSync(paths.dir)) return null;
    const status = await this.reap(vmId);
    if (status && isActive(status.state)) return null;
    if (status?.workerPid && !(await waitForExit(status.workerPid, paths.dir, waitMs))) return null;
    fs.rmSync(paths.dir, { recursive: true, force: true });
    return paths.dir;
  }

  /** Removes the sockets left in the run folder of a VM whose worker is gone; returns them. */
  removeStaleSockets(vmId: string): string[] {
    const paths = VmPaths.of(vmId, this.root);
    const status = this.status(vmId);
    if (status?.workerPid && isWorker(status.workerPid, paths.dir)) return [];
    const sockets = [paths.dir, paths.qemuDir].flatMap((dir) => {
      try {
        return fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isSocket()).map((e) => path.join(dir, e.name));
      } catch {
        return [];
      }
    });
    for (const socket of sockets) fs.rmSync(socket, { force: true });
    return sockets;
  }

  /** MAC addresses are unique per host: a running VM's addresses cannot be used by another. */
  private refuseMacsInUse(config: VmConfig): void {
    for (const other of this.list()) {
      if (other.id === config.id || !isActive(other.state)) continue;
      let otherConfig: VmConfig;
      try {
        otherConfig = JSON.parse(fs.readFileSync(VmPaths.of(other.id, this.root).config, 'utf8')) as VmConfig;
      } catch {
        continue;
      }
      const theirs = new Set(otherConfig.networkAdapters.map((n) => n.mac));
      const clash = config.networkAdapters.find((n) => theirs.has(n.mac));
      if (clash) throw new VmError('VM_E_MAC_IN_USE', `the MAC address ${clash.mac} is in use by the running VM ${other.name}`);
    }
  }

  private async waitForWorker(paths: VmPaths, pid: number): Promise<WorkerClient> {
    const deadline = Date.now() + WORKER_READY_MS;
    for (;;) {
      try {
        return await WorkerClient.connect(paths.control);
      } catch {
        if (!isAlive(pid)) throw new VmError('VM_E_START_FAILED', `the VM worker exited at start: ${tail(paths.workerLog)}`);
        if (Date.now() > deadline) throw new VmError('VM_E_START_FAILED', `the VM worker did not answer within ${WORKER_READY_MS / 1000} s: ${tail(paths.workerLog)}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  }
}

/** Resolves true once the worker has gone, false if it still runs after timeoutMs. */
async function waitForExit(pid: number, dir: string, timeoutMs = WORKER_EXIT_MS): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isWorker(pid, dir)) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
  return true;
}

/** Whether the status says the VM runs but its worker has gone. */
function workerDied(status: VmStatus, paths: VmPaths): boolean {
  return isActive(status.state) && !(status.workerPid && isWorker(status.workerPid, paths.dir));
}

function crashedFrom(status: VmStatus): VmStatus {
  const at = new Date().toISOString();
  return {
    ...status, state: 'TurnedOff', qemuPid: undefined, since: at,
    crashed: { reason: `its worker (pid ${status.workerPid}) died while the VM was ${status.state}`, at },
  };
}

function isWorker(pid: number, dir: string): boolean {
  return isAlive(pid) && commandLine(pid).includes(dir);
}

function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '(no log)';
  }
}
