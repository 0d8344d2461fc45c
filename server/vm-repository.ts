// The registered VMs: their catalog rows and their .vmc files. A VM's configuration is one
// document (docs/vm-config.md), stored in the catalog and written beside the VM's files as
// NAME.vmc; it changes only while the VM is turned off (the guard says), and a change is
// validated whole before anything is written.
//
// The catalog row is the truth; the .vmc is its copy. Every change of both goes through
// store(): the row first, then the .vmc (vmc-file.ts: draft, flush, rename). A kill between the
// two leaves a .vmc that repairVmcFiles() rewrites from the row at the next start; an error
// writing the .vmc puts the row back, so the caller's refusal holds.

import fs from 'node:fs';
import path from 'node:path';
import { type Catalog, prepared } from './catalog/database.js';
import { ApiError } from './errors.js';
import { deadDraftsOf } from '../storage/drafts.js';
import { parseVmConfig, type VmConfig } from '../vmm/config.js';
import type { MachineEvents, VmRecord, VmRecords } from './vm-record.js';
import { vmcHolds, writeVmc } from './vmc-file.js';

interface VmRow { id: string; name: string; vmc_path: string; config: string; notes: string; auto_start: VmRecord['autoStart']; auto_start_delay: number; shutdown_action: VmRecord['shutdownAction']; running_at_quit: number; created: string; undoable: number; undo_action: VmRecord['undoAction'] }

/** The supervisor, as the repository sees it: it rules on power before files change, and learns of VMs added and removed. */
export interface Supervision {
  refuseActive(vm: VmRecord, what: string): void;
  refuseUnlessOff(vm: VmRecord): void;
  added(vm: VmRecord): Promise<void>;
  removed(vm: VmRecord): void;
}

export type VmSettings = Partial<Pick<VmRecord, 'notes' | 'autoStart' | 'autoStartDelay' | 'shutdownAction' | 'undoable' | 'undoAction'>>;

export class VmRepository implements VmRecords {
  /** The catalog's rows, parsed; every write goes through this class, which reloads what it wrote. */
  private readonly records = new Map<string, VmRecord>();
  /** The change of each VM in progress, so that the next one waits for it. */
  private readonly changing = new Map<string, Promise<void>>();

  constructor(private readonly db: Catalog, private readonly supervision: Supervision, private readonly events: MachineEvents) {
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
  async create(name: string, folder: string): Promise<VmRecord> {
    this.refuseNameInUse(name);
    const vmcPath = path.join(folder, `${name}.vmc`);
    if (await exists(vmcPath)) throw new ApiError('VM_E_FILE_EXISTS', `${vmcPath} already exists; register it with RegisterVirtualMachine, or choose another folder`);
    const config = parseVmConfig({ name, savedState: `${name}.vsv` }, folder);
    await fs.promises.mkdir(folder, { recursive: true });
    // Again, after the awaits: another call may have taken the name meanwhile.
    this.refuseNameInUse(name);
    const vm = await this.store(config, vmcPath, () => this.insertRow(config, vmcPath), () => this.deleteRow(config.id));
    await this.supervision.added(vm);
    return vm;
  }

  /** Adds a VM from its .vmc file, as written by this host or another; the file is left as it is. */
  async register(vmcPath: string): Promise<VmRecord> {
    let document: unknown;
    try {
      document = JSON.parse(await fs.promises.readFile(vmcPath, 'utf8'));
    } catch (e) {
      throw new ApiError('VM_E_CONFIG_INVALID', `${vmcPath} is not a VM configuration: ${(e as Error).message}`);
    }
    const config = parseVmConfig(document, path.dirname(vmcPath));
    const existing = this.get(config.id);
    if (existing) throw new ApiError('VM_E_VM_REGISTERED', `${vmcPath} is the VM ${existing.name}, which is already registered`);
    this.refuseNameInUse(config.name);
    this.insertRow(config, vmcPath);
    const vm = this.reload(config.id)!;
    await this.supervision.added(vm);
    return vm;
  }

  /**
   * Removes the VM from the catalog; with deleteFiles, its .vmc and saved state go too (never its
   * disks). The row goes first: a kill before the files are gone leaves them unregistered.
   */
  async remove(id: string, deleteFiles: boolean): Promise<VmRecord> {
    const vm = this.require(id);
    this.supervision.refuseActive(vm, 'removed');
    this.deleteRow(id);
    this.supervision.removed(vm);
    if (!deleteFiles) return vm;
    await fs.promises.rm(vm.vmcPath, { force: true });
    await fs.promises.rm(vm.config.savedState, { force: true });
    for (const draft of deadDraftsOf(vm.config.savedState)) {
      await fs.promises.rm(draft, { force: true });
      this.events.emit('cleaned', `removed ${draft}, an unfinished saved state of ${vm.name} whose writer is gone`, `VirtualMachine/${id}`);
    }
    // A folder that holds other files (disks, say) stays.
    await fs.promises.rmdir(path.dirname(vm.vmcPath)).catch(() => {});
    return vm;
  }

  /**
   * Changes the configuration of a turned-off VM (or, with whileRunning, of any VM): `change` edits
   * a copy of the document, which is then validated whole; a refused change leaves the VM as it was.
   */
  reconfigure(id: string, change: (document: VmConfig) => void, options: { whileRunning?: boolean } = {}): Promise<VmRecord> {
    // One change of a VM at a time: the next reads the document the last one wrote.
    const previous = this.changing.get(id) ?? Promise.resolve();
    const next = previous.then(() => {
      const vm = this.require(id);
      // What a running VM may change (an adapter's network) its caller has applied to the running machine.
      if (!options.whileRunning) this.supervision.refuseUnlessOff(vm);
      const document = structuredClone(vm.config);
      change(document);
      const config = parseVmConfig(document, path.dirname(vm.vmcPath));
      if (config.name.toLowerCase() !== vm.name.toLowerCase()) this.refuseNameInUse(config.name);
      return this.store(config, vm.vmcPath, () => this.updateRow(config), () => this.updateRow(vm.config));
    });
    const settled = next.then(() => {}, () => {});
    this.changing.set(id, settled);
    void settled.then(() => { if (this.changing.get(id) === settled) this.changing.delete(id); });
    return next;
  }

  /** Settings that are vserverd's, not the machine's (not in the .vmc): they may change while the VM runs. */
  setSettings(id: string, settings: VmSettings): void {
    this.require(id);
    const columns: Record<string, unknown> = {
      notes: settings.notes, auto_start: settings.autoStart, auto_start_delay: settings.autoStartDelay, shutdown_action: settings.shutdownAction,
      undoable: settings.undoable === undefined ? undefined : Number(settings.undoable), undo_action: settings.undoAction,
    };
    this.db.transaction(() => {
      for (const [column, value] of Object.entries(columns)) {
        if (value !== undefined) prepared(this.db, `UPDATE vms SET ${column} = ? WHERE id = ?`).run(value, id);
      }
    })();
    this.reload(id);
  }

  setRunningAtQuit(id: string, running: boolean): void {
    prepared(this.db, 'UPDATE vms SET running_at_quit = ? WHERE id = ?').run(running ? 1 : 0, id);
    this.reload(id);
  }

  /**
   * At start: makes each registered VM's .vmc hold its catalog row again, where a kill between
   * the two writes of store() (or a hand edit) left them apart, and removes the .vmc drafts of
   * dead writers. Each repair is announced ('cleaned').
   */
  async repairVmcFiles(): Promise<void> {
    for (const vm of this.list()) {
      const object = `VirtualMachine/${vm.id}`;
      for (const draft of deadDraftsOf(vm.vmcPath)) {
        fs.rmSync(draft, { force: true });
        this.events.emit('cleaned', `removed ${draft}, an unfinished .vmc of ${vm.name} whose writer is gone`, object);
      }
      if (vmcHolds(vm.vmcPath, vm.config)) continue;
      try {
        await writeVmc(vm.vmcPath, vm.config);
        this.events.emit('cleaned', `rewrote ${vm.vmcPath} from the catalog: it did not hold ${vm.name}'s configuration`, object);
      } catch (e) {
        this.events.emit('cleaned', `could not rewrite ${vm.vmcPath} from the catalog: ${(e as Error).message}`, object);
      }
    }
  }

  /**
   * The one way a VM's row and .vmc change together: the row (the truth) first, then the .vmc.
   * If the .vmc cannot be written, `undoRow` puts the row back and the error goes to the caller.
   */
  private async store(config: VmConfig, vmcPath: string, writeRow: () => void, undoRow: () => void): Promise<VmRecord> {
    writeRow();
    // Readers see the row at once, as they will after a kill here (the row is the truth).
    this.reload(config.id);
    try {
      await writeVmc(vmcPath, config);
    } catch (e) {
      undoRow();
      this.reload(config.id);
      throw e;
    }
    return this.reload(config.id)!;
  }

  private insertRow(config: VmConfig, vmcPath: string): void {
    prepared(this.db, 'INSERT INTO vms (id, name, vmc_path, config, created) VALUES (?, ?, ?, ?, ?)')
      .run(config.id, config.name, vmcPath, JSON.stringify(config), new Date().toISOString());
  }

  private updateRow(config: VmConfig): void {
    prepared(this.db, 'UPDATE vms SET name = ?, config = ? WHERE id = ?').run(config.name, JSON.stringify(config), config.id);
  }

  private deleteRow(id: string): void {
    prepared(this.db, 'DELETE FROM vms WHERE id = ?').run(id);
    this.records.delete(id);
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

async function exists(file: string): Promise<boolean> {
  return fs.promises.access(file).then(() => true, () => false);
}

function fromRow(row: VmRow): VmRecord {
  return {
    id: row.id, name: row.name, vmcPath: row.vmc_path, config: JSON.parse(row.config) as VmConfig, notes: row.notes,
    autoStart: row.auto_start, autoStartDelay: row.auto_start_delay, shutdownAction: row.shutdown_action,
    runningAtQuit: row.running_at_quit === 1, created: row.created, undoable: row.undoable === 1, undoAction: row.undo_action,
  };
}
