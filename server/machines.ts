// The registered virtual machines: their catalog rows, their .vmc files, and their workers.
// A VM's configuration is one document (docs/vm-config.md), stored in the catalog and written
// beside the VM's files as NAME.vmc; it changes only while the VM is turned off, and a change
// is validated whole before anything is written. Power operations go to the VM's worker
// (vmm/), whose state events become VirtualMachine.OnStateChange.

import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { type Catalog, prepared } from './catalog/database.js';
import { ApiError } from './api/errors.js';
import type { AUTO_START, SHUTDOWN_ACTIONS } from './api/vocabulary.js';
import { deadDraftsOf } from '../storage/drafts.js';
import { parseVmConfig, type VmConfig } from '../vmm/config.js';
import { VmManager, WORKER_EXIT_MS } from '../vmm/manager.js';
import { isActive, type VmState, type VmStatus } from '../vmm/state.js';
import type { WorkerClient } from '../vmm/worker-client.js';
import type { Progress } from '../vmm/worker/machine.js';

export type AutoStart = (typeof AUTO_START)[number];
export type ShutdownAction = (typeof SHUTDOWN_ACTIONS)[number];

export interface VmRecord {
  id: string;
  name: string;
  vmcPath: string;
  config: VmConfig;
  notes: string;
  autoStart: AutoStart;
  autoStartDelay: number;
  shutdownAction: ShutdownAction;
  runningAtQuit: boolean;
  created: string;
}

export interface StateChange { vm: VmRecord; state: VmState; previous: VmState | null; status: VmStatus | null }

interface VmRow { id: string; name: string; vmc_path: string; config: string; notes: string; auto_start: AutoStart; auto_start_delay: number; shutdown_action: ShutdownAction; running_at_quit: number; created: string }

/** How long a guest gets to shut down when vserverd stops with "Shutdown" as the action on quit (within systemd's 90 s stop timeout). */
const SHUTDOWN_ON_QUIT_MS = 60_000;
/** States a VM passes through on its way to another. */
const BETWEEN_STATES: readonly VmState[] = ['TurningOn', 'Restoring', 'Saving', 'TurningOff'];
const SETTLE_POLL_MS = 250;

export class Machines extends EventEmitter<{ state: [StateChange]; progress: [string, Progress]; cleaned: [message: string, object: string | null] }> {
  private readonly clients = new Map<string, WorkerClient>();
  private readonly lastState = new Map<string, VmState>();
  /** VMs whose auto-start delay has not yet run out. */
  readonly autoStartPending = new Set<string>();
  /** VMs being turned on by this process: a second Startup is refused before it reaches the worker. */
  private readonly starting = new Set<string>();

  /** The catalog's rows, parsed; every write goes through this class, which reloads what it wrote. */
  private readonly records = new Map<string, VmRecord>();

  constructor(private readonly db: Catalog, readonly manager = new VmManager()) {
    super();
    for (const row of prepared(db, 'SELECT * FROM vms').all() as VmRow[]) this.records.set(row.id, fromRow(row));
  }

  list(): VmRecord[] {
    return [...this.records.values()].sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
  }

  get(id: string): VmRecord | null {
    return this.records.get(id) ?? null;
  }

  require(id: string): VmRecord {
    const vm = this.get(id);
    if (!vm) throw new ApiError('VM_E_VM_UNKNOWN', `there is no virtual machine with id ${id}`);
    return vm;
  }

  /** Names are unique regardless of case, as the catalog's column says. */
  findByName(name: string): VmRecord | null {
    const wanted = name.toLowerCase();
    return [...this.records.values()].find((vm) => vm.name.toLowerCase() === wanted) ?? null;
  }

  /** Makes a new VM in `folder` (1 processor, the default memory, no devices) and writes its .vmc. */
  create(name: string, folder: string): VmRecord {
    this.refuseNameInUse(name);
    const vmcPath = path.join(folder, `${name}.vmc`);
    if (fs.existsSync(vmcPath)) throw new ApiError('VM_E_FILE_EXISTS', `${vmcPath} already exists; register it with RegisterVirtualMachine, or choose another folder`);
    const config = parseVmConfig({ name, savedState: `${name}.vsv` }, folder);
    fs.mkdirSync(folder, { recursive: true });
    writeVmc(vmcPath, config);
    return this.insert(config, vmcPath);
  }

  /** Adds a VM from its .vmc file, as written by this host or another. */
  register(vmcPath: string): VmRecord {
    let document: unknown;
    try {
      document = JSON.parse(fs.readFileSync(vmcPath, 'utf8'));
    } catch (e) {
      throw new ApiError('VM_E_CONFIG_INVALID', `${vmcPath} is not a VM configuration: ${(e as Error).message}`);
    }
    const config = parseVmConfig(document, path.dirname(vmcPath));
    const existing = this.get(config.id);
    if (existing) throw new ApiError('VM_E_VM_REGISTERED', `${vmcPath} is the VM ${existing.name}, which is already registered`);
    this.refuseNameInUse(config.name);
    return this.insert(config, vmcPath);
  }

  /** Removes the VM from the catalog; with deleteFiles, its .vmc and saved state go too (never its disks). */
  remove(id: string, deleteFiles: boolean): VmRecord {
    const vm = this.require(id);
    this.refuseActive(vm, 'removed');
    prepared(this.db, 'DELETE FROM vms WHERE id = ?').run(id);
    this.records.delete(id);
    this.lastState.delete(id);
    void this.manager.removeRunFolder(id, WORKER_EXIT_MS).then((dir) => {
      if (dir) this.emit('cleaned', `removed the run folder ${dir} of ${vm.name}, which is no longer registered`, `VirtualMachine/${id}`);
    }, (e: Error) => this.emit('cleaned', `could not remove the run folder of ${vm.name}: ${e.message}`, `VirtualMachine/${id}`));
    if (deleteFiles) {
      fs.rmSync(vm.vmcPath, { force: true });
      fs.rmSync(vm.config.savedState, { force: true });
      for (const draft of deadDraftsOf(vm.config.savedState)) {
        fs.rmSync(draft, { force: true });
        this.emit('cleaned', `removed ${draft}, an unfinished saved state of ${vm.name} whose writer is gone`, `VirtualMachine/${id}`);
      }
      try {
        fs.rmdirSync(path.dirname(vm.vmcPath));
      } catch {
        // the folder holds other files (disks, say): it stays
      }
    }
    return vm;
  }

  /**
   * Changes the configuration of a turned-off VM: `change` edits a copy of the document, which is
   * then validated whole; a refused change leaves the VM as it was.
   */
  reconfigure(id: string, change: (document: VmConfig) => void): VmRecord {
    const vm = this.require(id);
    this.refuseUnlessOff(vm);
    const document = structuredClone(vm.config);
    change(document);
    const config = parseVmConfig(document, path.dirname(vm.vmcPath));
    if (config.name.toLowerCase() !== vm.name.toLowerCase()) this.refuseNameInUse(config.name);
    writeVmc(vm.vmcPath, config);
    prepared(this.db, 'UPDATE vms SET name = ?, config = ? WHERE id = ?').run(config.name, JSON.stringify(config), id);
    return this.reload(id)!;
  }

  /** Deletes a Saved VM's saved state: the VM is then turned off, and that is announced. */
  discardSavedState(vm: VmRecord): void {
    if (this.isBeingTurnedOn(vm)) throw new ApiError('VM_E_VM_RUNNING', `${vm.name} is being restored from its saved state`);
    const state = this.state(vm);
    if (state !== 'Saved') throw new ApiError(state === 'TurnedOff' ? 'VM_E_NO_SAVED_STATE' : 'VM_E_VM_RUNNING', `${vm.name} is ${state}; only a Saved VM has a saved state to discard`);
    fs.rmSync(vm.config.savedState, { force: true });
    this.noteState(vm.id, 'TurnedOff', this.manager.status(vm.id));
  }

  /** Settings that are vserverd's, not the machine's: they may change while the VM runs. */
  setSettings(id: string, settings: Partial<Pick<VmRecord, 'notes' | 'autoStart' | 'autoStartDelay' | 'shutdownAction'>>): void {
    this.require(id);
    const columns: Record<string, unknown> = {
      notes: settings.notes, auto_start: settings.autoStart, auto_start_delay: settings.autoStartDelay, shutdown_action: settings.shutdownAction,
    };
    for (const [column, value] of Object.entries(columns)) {
      if (value !== undefined) prepared(this.db, `UPDATE vms SET ${column} = ? WHERE id = ?`).run(value, id);
    }
    this.reload(id);
  }

  status(id: string): VmStatus | null {
    return this.manager.status(id);
  }

  /** The VM's state: its worker's while it has one, else Saved when its saved state exists. */
  state(vm: VmRecord): VmState {
    // While this process follows the VM's worker, the worker's events are the state: no files to read.
    const followed = this.clients.get(vm.id);
    const known = this.lastState.get(vm.id);
    if (followed && !followed.closed && known && isActive(known)) return known;
    const status = this.manager.status(vm.id);
    if (status && isActive(status.state)) return status.state;
    return fs.existsSync(vm.config.savedState) ? 'Saved' : 'TurnedOff';
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

  /** Checks that Startup may begin; done before its task is made, so a second caller is told at once. */
  claimStart(vm: VmRecord): void {
    if (this.isBeingTurnedOn(vm)) throw new ApiError('VM_E_VM_RUNNING', `${vm.name} is already being turned on`);
    const state = this.state(vm);
    if (isActive(state)) throw new ApiError('VM_E_VM_RUNNING', `${vm.name} is already ${state}`);
    this.starting.add(vm.id);
  }

  /** Turns the VM on (or restores it); the caller has claimed the start. Resolves when it runs. */
  async startup(vm: VmRecord, onProgress: (p: Progress) => void): Promise<void> {
    try {
      const client = await this.manager.launch(vm.config);
      this.watch(vm.id, client);
      const forward = (p: Progress): void => onProgress(p);
      client.on('progress', forward);
      try {
        await client.request('turnOn');
      } finally {
        client.off('progress', forward);
      }
    } finally {
      this.starting.delete(vm.id);
    }
  }

  /** Sends an operation to the VM's worker; VM_E_VM_NOT_RUNNING when it has none. */
  async operate<T = VmStatus>(vm: VmRecord, op: 'turnOff' | 'shutdown' | 'save' | 'pause' | 'resume' | 'reset' | 'screenshot' | 'serialOutput', args?: Record<string, unknown>, onProgress?: (p: Progress) => void): Promise<T> {
    const client = await this.client(vm);
    if (onProgress) client.on('progress', onProgress);
    try {
      return await client.request<T>(op, args);
    } finally {
      if (onProgress) client.off('progress', onProgress);
    }
  }

  /** Checks the VM runs (for calls that answer at once or start a task). */
  refuseNotRunning(vm: VmRecord, states: readonly VmState[] = ['Running', 'Paused']): void {
    const state = this.state(vm);
    if (states.includes(state)) return;
    const wanted = states.length > 2 ? 'turned on' : states.join(' or ');
    throw new ApiError('VM_E_VM_NOT_RUNNING', `${vm.name} is ${state}; it must be ${wanted}`);
  }

  /** After a restart of vserverd: reattaches to every VM whose worker still runs. */
  async reattach(): Promise<VmRecord[]> {
    const found: VmRecord[] = [];
    for (const vm of this.list()) {
      const state = this.state(vm);
      this.lastState.set(vm.id, state);
      if (!isActive(state)) continue;
      try {
        await this.client(vm);
        found.push(vm);
      } catch {
        // its worker went away between the look and the connect: status() reports it crashed
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
      const vm = this.get(id);
      if (!vm) {
        const dir = await this.manager.removeRunFolder(id, 0);
        if (dir) this.emit('cleaned', `removed the run folder ${dir} of a VM that is not registered`, null);
        continue;
      }
      const sockets = this.manager.removeStaleSockets(id);
      if (sockets.length) this.emit('cleaned', `removed ${sockets.length} stale socket${sockets.length === 1 ? '' : 's'} of ${vm.name} (its worker is gone): ${sockets.join(', ')}`, `VirtualMachine/${id}`);
    }
  }

  /** vserverd is stopping: applies each running VM's action on quit and remembers which ran. */
  async applyActionsOnQuit(onEach: (vm: VmRecord, action: ShutdownAction, error: Error | null) => void): Promise<void> {
    await Promise.all(this.list().map(async (vm) => {
      const running = isActive(this.state(vm));
      // A VM still waiting for its auto-start delay keeps its claim to be started next time.
      if (!this.autoStartPending.has(vm.id)) {
        prepared(this.db, 'UPDATE vms SET running_at_quit = ? WHERE id = ?').run(running ? 1 : 0, vm.id);
        this.reload(vm.id);
      }
      if (!running) return;
      try {
        if (vm.shutdownAction === 'Save') await this.operate(vm, 'save');
        else if (vm.shutdownAction === 'TurnOff') await this.operate(vm, 'turnOff');
        else await this.operate(vm, 'shutdown', { timeoutMs: SHUTDOWN_ON_QUIT_MS });
        onEach(vm, vm.shutdownAction, null);
      } catch (e) {
        onEach(vm, vm.shutdownAction, e as Error);
      }
    }));
  }

  /** VMs to turn on now that vserverd has started, each with its delay in seconds. */
  autoStartList(): VmRecord[] {
    return this.list().filter((vm) => !isActive(this.state(vm))
      && (vm.autoStart === 'Always' || (vm.autoStart === 'IfRunningAtQuit' && vm.runningAtQuit)));
  }

  clearRunningAtQuit(id: string): void {
    prepared(this.db, 'UPDATE vms SET running_at_quit = 0 WHERE id = ?').run(id);
    this.reload(id);
  }

  /** Lets go of the workers' control connections; the VMs go on running. */
  detach(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
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
    client.on('state', (status) => this.noteState(id, status.state, status));
    client.on('progress', (p) => this.emit('progress', id, p));
    client.on('close', () => {
      if (this.clients.get(id) === client) this.clients.delete(id);
      const vm = this.get(id);
      // The worker is gone: the VM is off, saved, or crashed (status() records why).
      if (vm) this.noteState(id, this.state(vm), this.manager.status(id));
    });
  }

  private noteState(id: string, state: VmState, status: VmStatus | null): void {
    const previous = this.lastState.get(id) ?? null;
    if (previous === state) return;
    this.lastState.set(id, state);
    const vm = this.get(id);
    if (vm) this.emit('state', { vm, state, previous, status });
  }

  private insert(config: VmConfig, vmcPath: string): VmRecord {
    prepared(this.db, 'INSERT INTO vms (id, name, vmc_path, config, created) VALUES (?, ?, ?, ?, ?)')
      .run(config.id, config.name, vmcPath, JSON.stringify(config), new Date().toISOString());
    const vm = this.reload(config.id)!;
    this.lastState.set(vm.id, this.state(vm));
    return vm;
  }

  private reload(id: string): VmRecord | null {
    const row = prepared(this.db, 'SELECT * FROM vms WHERE id = ?').get(id) as VmRow | undefined;
    if (!row) {
      this.records.delete(id);
      return null;
    }
    const vm = fromRow(row);
    this.records.set(id, vm);
    return vm;
  }

  private refuseNameInUse(name: string): void {
    const other = this.findByName(name);
    if (other) throw new ApiError('VM_E_NAME_IN_USE', `a virtual machine named ${other.name} already exists`);
  }
}

/** The .vmc is the configuration document itself, so that another host can register it. */
function writeVmc(file: string, config: VmConfig): void {
  const partial = `${file}.partial`;
  fs.writeFileSync(partial, `${JSON.stringify({ version: 1, ...config }, null, 2)}\n`);
  fs.renameSync(partial, file);
}

function fromRow(row: VmRow): VmRecord {
  return {
    id: row.id, name: row.name, vmcPath: row.vmc_path, config: JSON.parse(row.config) as VmConfig, notes: row.notes,
    autoStart: row.auto_start, autoStartDelay: row.auto_start_delay, shutdownAction: row.shutdown_action,
    runningAtQuit: row.running_at_quit === 1, created: row.created,
  };
}
