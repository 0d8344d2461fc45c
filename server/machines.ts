// The registered virtual machines, as the API, the website and vserverd's start and stop reach
// them (services.machines). Three parts, one job each:
//   vm-repository.ts  the catalog rows and .vmc files (create, register, remove, reconfigure),
//   vm-supervisor.ts  the workers: states and their events, turning on, operating, reattaching, reaping,
//   quit-policy.ts    the actions on quit and auto-start.
// This class only puts them together and passes calls through.

import { EventEmitter } from 'node:events';
import type { Catalog } from './catalog/database.js';
import { VmManager } from '../vmm/manager.js';
import type { VmConfig } from '../vmm/config.js';
import type { VmState, VmStatus } from '../vmm/state.js';
import type { Progress } from '../vmm/worker/machine.js';
import { QuitPolicy } from './quit-policy.js';
import type { MachineEventMap, ShutdownAction, VmRecord, VmRecords } from './vm-record.js';
import { VmRepository, type VmSettings } from './vm-repository.js';
import { type StartGate, VmSupervisor, type WorkerOperation } from './vm-supervisor.js';

export type { AutoStart, ShutdownAction, StateChange, UndoAction, VmRecord } from './vm-record.js';

export class Machines extends EventEmitter<MachineEventMap> implements VmRecords {
  private readonly repository: VmRepository;
  private readonly supervisor: VmSupervisor;
  private readonly quit: QuitPolicy;

  constructor(db: Catalog, manager = new VmManager()) {
    super();
    this.supervisor = new VmSupervisor(this, this, manager);
    this.repository = new VmRepository(db, this.supervisor, this);
    this.quit = new QuitPolicy(this.repository, this.supervisor);
  }

  get manager(): VmManager { return this.supervisor.manager; }
  /** The cluster agent's hold on every turn on (null on a single host). */
  set startGate(gate: StartGate | null) { this.supervisor.gate = gate; }
  get autoStartPending(): Set<string> { return this.quit.autoStartPending; }

  // The repository
  list(): VmRecord[] { return this.repository.list(); }
  get(id: string): VmRecord | null { return this.repository.get(id); }
  require(id: string): VmRecord { return this.repository.require(id); }
  findByName(name: string): VmRecord | null { return this.repository.findByName(name); }
  create(name: string, folder: string): Promise<VmRecord> { return this.repository.create(name, folder); }
  register(vmcPath: string): Promise<VmRecord> { return this.repository.register(vmcPath); }
  remove(id: string, deleteFiles: boolean): Promise<VmRecord> { return this.repository.remove(id, deleteFiles); }
  reconfigure(id: string, change: (document: VmConfig) => void, options?: { whileRunning?: boolean }): Promise<VmRecord> { return this.repository.reconfigure(id, change, options); }
  setSettings(id: string, settings: VmSettings): void { this.repository.setSettings(id, settings); }
  repairVmcFiles(): Promise<void> { return this.repository.repairVmcFiles(); }

  // The supervisor
  status(id: string): VmStatus | null { return this.supervisor.status(id); }
  state(vm: VmRecord): VmState { return this.supervisor.state(vm); }
  isBeingTurnedOn(vm: VmRecord): boolean { return this.supervisor.isBeingTurnedOn(vm); }
  refuseUnlessOff(vm: VmRecord): void { this.supervisor.refuseUnlessOff(vm); }
  refuseActive(vm: VmRecord, what: string): void { this.supervisor.refuseActive(vm, what); }
  refuseNotRunning(vm: VmRecord, states?: readonly VmState[]): void { this.supervisor.refuseNotRunning(vm, states); }
  discardSavedState(vm: VmRecord): void { this.supervisor.discardSavedState(vm); }
  claimStart(vm: VmRecord): void { this.supervisor.claimStart(vm); }
  /** A saved state was written beside the VM by vserverd itself (a snapshot's memory, at revert): the VM reads Saved. */
  noticeSavedState(vm: VmRecord): Promise<void> { return this.supervisor.added(vm); }
  startup(vm: VmRecord, onProgress: (p: Progress) => void, prepare?: () => Promise<VmConfig>): Promise<void> { return this.supervisor.startup(vm, onProgress, prepare); }
  operate<T = VmStatus>(vm: VmRecord, op: WorkerOperation, args?: Record<string, unknown>, onProgress?: (p: Progress) => void): Promise<T> {
    return this.supervisor.operate<T>(vm, op, args, onProgress);
  }
  reattach(): Promise<VmRecord[]> { return this.supervisor.reattach(); }
  settledState(vm: VmRecord, timeoutMs: number): Promise<VmState> { return this.supervisor.settledState(vm, timeoutMs); }
  cleanRunFolders(): Promise<void> { return this.supervisor.cleanRunFolders(); }
  detach(): void { this.supervisor.detach(); }

  // The quit policy
  applyActionsOnQuit(onEach: (vm: VmRecord, action: ShutdownAction, error: Error | null) => void): Promise<void> { return this.quit.applyActionsOnQuit(onEach); }
  autoStartList(): VmRecord[] { return this.quit.autoStartList(); }
  clearRunningAtQuit(id: string): void { this.quit.clearRunningAtQuit(id); }
}
