// The VMs' workers as vserverd follows them: one control connection (WorkerClient) per running
// VM, whose state events become VirtualMachine.OnStateChange; turning on and operating; finding
// the workers again after a restart; and reaping. A worker that dies while its VM runs is
// reaped here (VmManager.reap: its QEMU killed, the crash written to its status) when its
// connection closes, and at start for workers that died while vserverd was down; reading a
// state or a status never changes anything.

import fs from 'node:fs';
import { ApiError } from './errors.js';
import { type VmManager, WORKER_EXIT_MS } from '../vmm/manager.js';
import { isActive, type VmState, type VmStatus } from '../vmm/state.js';
import type { VmConfig } from '../vmm/config.js';
import type { WorkerClient } from '../vmm/worker-client.js';
import type { Operation } from '../vmm/worker/control.js';
import type { RunLicence } from '../vmm/run-licence.js';
import type { Progress } from '../vmm/worker/machine.js';
import type { MachineEvents, VmRecord, VmRecords } from './vm-record.js';
import type { Supervision } from './vm-repository.js';

/** States a VM passes through on its way to another. */
const BETWEEN_STATES: readonly VmState[] = ['TurningOn', 'Restoring', 'Saving', 'TurningOff'];
const SETTLE_POLL_MS = 250;

export type WorkerOperation = 'turnOff' | 'shutdown' | 'save' | 'pause' | 'resume' | 'reset' | 'screenshot' | 'serialOutput' | 'setLink'
  // The disk layer operations (docs/vmm.md): switching tops, merging a layer while the guest runs, the chains served.
  | 'snapshotDisks' | 'mergeLayer' | 'disks';

/**
 * What a host cluster asks of every turn on (server/cluster): the VM's right to run before its
 * worker starts, handed to the worker; given back when the start fails.
 */
export interface StartGate {
  acquire(vm: VmRecord): Promise<RunLicence>;
  /** The VM runs: its worker keeps the right alive from now on. */
  started(vm: VmRecord): void;
  startFailed(vm: VmRecord, error: Error): Promise<void>;
}

export class VmSupervisor implements Supervision {
  /** Set by the cluster agent on a clustered host. */
  gate: StartGate | null = null;
  private readonly clients = new Map<string, WorkerClient>();
  private readonly lastState = new Map<string, VmState>();
  /** VMs being turned on by this process: a second Startup is refused before it reaches the worker. */
  private readonly starting = new Set<string>();
  /**
   * VMs whose saved state (.vsv) exists: looked for when vserverd starts and when a VM is added,
   * then kept from what the workers announce (Saved: written; Running: a restore consumed it),
   * so that reading a state reads no file.
   */
  private readonly saved = new Set<string>();

  constructor(private readonly records: VmRecords, private readonly events: MachineEvents, readonly manager: VmManager) {}

  status(id: string): VmStatus | null {
    return this.manager.status(id);
  }

  /** The VM's state: its worker's while it has one, else Saved when it has a saved state. */
  state(vm: VmRecord): VmState {
    // While this process follows the VM's worker, the worker's events are the state: no files to read.
    const followed = this.clients.get(vm.id);
    const known = this.lastState.get(vm.id);
    if (followed && !followed.closed && known && isActive(known)) return known;
    const status = this.manager.status(vm.id);
    if (status && isActive(status.state)) return status.state;
    return this.saved.has(vm.id) ? 'Saved' : 'TurnedOff';
  }

  /**
   * Whether a Startup has claimed the VM and not yet finished: until its worker announces
   * TurningOn the VM still reads TurnedOff (or Saved), yet it is about to use its files, so
   * checks that refuse work on an active VM count it as active.
   */
  isBeingTurnedOn(vm: VmRecord): boolean {
    return this.starting.has(vm.id);
  }

  refuseUnlessOff(vm: VmRecord): void {
    if (this.isBeingTurnedOn(vm)) throw new ApiError('VM_E_VM_RUNNING', `${vm.name} is being turned on; its configuration can change only while it is turned off`);
    const state = this.state(vm);
    if (state === 'Saved') throw new ApiError('VM_E_VM_SAVED', `${vm.name} has a saved state; restore and turn it off, or discard the saved state, before changing its configuration`);
    if (state !== 'TurnedOff') throw new ApiError('VM_E_VM_RUNNING', `${vm.name} is ${state}; its configuration can change only while it is turned off`);
  }

  refuseActive(vm: VmRecord, what: string): void {
    const state = this.state(vm);
    if (isActive(state) || this.isBeingTurnedOn(vm)) {
      throw new ApiError('VM_E_VM_RUNNING', `${vm.name} is ${this.isBeingTurnedOn(vm) ? 'being turned on' : state}; it must be turned off before it is ${what}`);
    }
  }

  /** Checks the VM runs (for calls that answer at once or start a task). */
  refuseNotRunning(vm: VmRecord, states: readonly VmState[] = ['Running', 'Paused']): void {
    const state = this.state(vm);
    if (states.includes(state)) return;
    const wanted = states.length > 2 ? 'turned on' : states.join(' or ');
    throw new ApiError('VM_E_VM_NOT_RUNNING', `${vm.name} is ${state}; it must be ${wanted}`);
  }

  /** A VM has been registered or created: learns whether it has a saved state. */
  async added(vm: VmRecord): Promise<void> {
    await this.lookForSavedState(vm);
    this.lastState.set(vm.id, this.state(vm));
  }

  /** A VM is no longer registered: forgets it, and removes its run folder once its worker (if any) has gone. */
  removed(vm: VmRecord): void {
    this.lastState.delete(vm.id);
    this.saved.delete(vm.id);
    void this.manager.removeRunFolder(vm.id, WORKER_EXIT_MS).then((dir) => {
      if (dir) this.events.emit('cleaned', `removed the run folder ${dir} of ${vm.name}, which is no longer registered`, `VirtualMachine/${vm.id}`);
    }, (e: Error) => this.events.emit('cleaned', `could not remove the run folder of ${vm.name}: ${e.message}`, `VirtualMachine/${vm.id}`));
  }

  /** Deletes a Saved VM's saved state: the VM is then turned off, and that is announced. */
  discardSavedState(vm: VmRecord): void {
    if (this.isBeingTurnedOn(vm)) throw new ApiError('VM_E_VM_RUNNING', `${vm.name} is being restored from its saved state`);
    const state = this.state(vm);
    if (state !== 'Saved') throw new ApiError(state === 'TurnedOff' ? 'VM_E_NO_SAVED_STATE' : 'VM_E_VM_RUNNING', `${vm.name} is ${state}; only a Saved VM has a saved state to discard`);
    // Synchronous on purpose: a Startup claimed during an await would restore from the file being removed.
    fs.rmSync(vm.config.savedState, { force: true });
    this.saved.delete(vm.id);
    this.noteState(vm.id, 'TurnedOff', this.manager.status(vm.id));
  }

  /** Checks that Startup may begin; done before its task is made, so a second caller is told at once. */
  claimStart(vm: VmRecord): void {
    if (this.isBeingTurnedOn(vm)) throw new ApiError('VM_E_VM_RUNNING', `${vm.name} is already being turned on`);
    const state = this.state(vm);
    if (isActive(state)) throw new ApiError('VM_E_VM_RUNNING', `${vm.name} is already ${state}`);
    this.starting.add(vm.id);
  }

  /**
   * Turns the VM on (or restores it); the caller has claimed the start. Resolves when it runs.
   * `prepare` gives the configuration the worker gets (the effective one, each disk its top).
   */
  async startup(vm: VmRecord, onProgress: (p: Progress) => void, prepare?: () => Promise<VmConfig>): Promise<void> {
    try {
      // Ownership first: a VM another host runs is refused before its disks are touched here.
      const licence = this.gate ? await this.gate.acquire(vm) : undefined;
      try {
        const config = prepare ? await prepare() : vm.config;
        const client = await this.manager.launch(config, { licence });
        this.watch(vm.id, client);
        const forward = (p: Progress): void => onProgress(p);
        client.on('progress', forward);
        try {
          await client.request('turnOn');
        } finally {
          client.off('progress', forward);
        }
        this.gate?.started(vm);
      } catch (e) {
        // A worker that did not come up gives the right back; one that stopped after turning on is reported by its state.
        if (this.gate && !isActive(this.state(vm))) await this.gate.startFailed(vm, e as Error);
        throw e;
      }
    } finally {
      this.starting.delete(vm.id);
    }
  }

  /** Sends an operation to the VM's worker; VM_E_VM_NOT_RUNNING when it has none. */
  async operate<T = VmStatus>(vm: VmRecord, op: WorkerOperation, args?: Record<string, unknown>, onProgress?: (p: Progress) => void): Promise<T> {
    const client = await this.client(vm);
    if (onProgress) client.on('progress', onProgress);
    try {
      // The layer operations are the worker's as the contract of docs/vmm.md states them.
      return await client.request<T>(op as Operation, args);
    } finally {
      if (onProgress) client.off('progress', onProgress);
    }
  }

  /**
   * After a restart of vserverd: reaps the workers that died while it was down, learns which VMs
   * have a saved state, and reattaches to every VM whose worker still runs.
   */
  async reattach(): Promise<VmRecord[]> {
    const found: VmRecord[] = [];
    for (const vm of this.records.list()) {
      await this.reap(vm.id, 0);
      await this.lookForSavedState(vm);
      const state = this.state(vm);
      this.lastState.set(vm.id, state);
      if (!isActive(state)) continue;
      try {
        await this.client(vm);
        found.push(vm);
      } catch {
        // Its worker went away between the look and the connect (one that runs on without answering is left be).
        await this.reap(vm.id, 0);
      }
    }
    return found;
  }

  /** The VM's state once it is no longer between two (TurningOn, Saving...), or as it is when timeoutMs has passed. */
  async settledState(vm: VmRecord, timeoutMs: number): Promise<VmState> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const state = this.state(vm);
      if (!BETWEEN_STATES.includes(state) || Date.now() > deadline) return state;
      await new Promise((r) => setTimeout(r, SETTLE_POLL_MS));
    }
  }

  /**
   * At start, after reattach: removes the run folders of VMs that are not registered (any more)
   * and the sockets left in those of registered VMs whose worker is gone (their status and logs
   * stay: LastCrash reads them). Each removal is announced ('cleaned').
   */
  async cleanRunFolders(): Promise<void> {
    for (const id of this.manager.runFolders()) {
      const vm = this.records.get(id);
      if (!vm) {
        const dir = await this.manager.removeRunFolder(id, 0);
        if (dir) this.events.emit('cleaned', `removed the run folder ${dir} of a VM that is not registered`, null);
        continue;
      }
      const sockets = this.manager.removeStaleSockets(id);
      if (sockets.length) this.events.emit('cleaned', `removed ${sockets.length} stale socket${sockets.length === 1 ? '' : 's'} of ${vm.name} (its worker is gone): ${sockets.join(', ')}`, `VirtualMachine/${id}`);
    }
  }

  /** Lets go of the workers' control connections; the VMs go on running. */
  detach(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }

  /** VmManager.reap; a run folder removed meanwhile (the VM unregistered) leaves nothing to record. */
  private reap(id: string, waitMs: number): Promise<VmStatus | null> {
    return this.manager.reap(id, waitMs).catch(() => this.manager.status(id));
  }

  private async lookForSavedState(vm: VmRecord): Promise<void> {
    const present = await fs.promises.access(vm.config.savedState).then(() => true, () => false);
    if (present) this.saved.add(vm.id);
    else this.saved.delete(vm.id);
  }

  private async client(vm: VmRecord): Promise<WorkerClient> {
    const known = this.clients.get(vm.id);
    if (known && !known.closed) return known;
    const client = await this.manager.attach(vm.id);
    this.watch(vm.id, client);
    return client;
  }

  private watch(id: string, client: WorkerClient): void {
    this.clients.get(id)?.close();
    this.clients.set(id, client);
    client.on('state', (status) => {
      // The worker writes the saved state before it announces Saved, and removes it before Running after a restore.
      if (status.state === 'Saved') this.saved.add(id);
      else if (status.state === 'Running') this.saved.delete(id);
      this.noteState(id, status.state, status);
    });
    client.on('progress', (p) => this.events.emit('progress', id, p));
    client.on('close', () => {
      if (this.clients.get(id) === client) this.clients.delete(id);
      // The worker is gone: the VM is off, saved, or crashed; a crash is recorded before it is announced.
      void this.reap(id, WORKER_EXIT_MS).then((status) => {
        const vm = this.records.get(id);
        if (vm) this.noteState(id, this.state(vm), status);
      });
    });
  }

  private noteState(id: string, state: VmState, status: VmStatus | null): void {
    const previous = this.lastState.get(id) ?? null;
    if (previous === state) return;
    this.lastState.set(id, state);
    const vm = this.records.get(id);
    if (vm) this.events.emit('state', { vm, state, previous, status });
  }
}
