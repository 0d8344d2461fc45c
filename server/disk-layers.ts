// A VM's disks as layers (docs/snapshots.md): each slot's configured disk may have differencing
// children on top, the undo disk (.vud) of an undoable VM or the layers snapshots left, and the
// running VM writes only the top. This module decides the tops and gives the worker its
// *effective* configuration at turn on (each slot's path replaced by its top); it owns the undo
// disks' lifecycle, and runs every change of a VM's layers one at a time (exclusive()).
//
// Undo disks: made at turn on beside the .vmc as NAME_SLOT.vud unless they exist (a saved state
// keeps them); applied when the VM stops by the guest's own shutdown (the VM's UndoAction) or by
// TurnOff {undoAction}: Keep leaves them, Commit merges them into their disks, Discard removes them.

import fs from 'node:fs';
import path from 'node:path';
import { type VmConfig, hardDisks } from '../vmm/config.js';
import { runDiskJob } from './disk-jobs.js';
import { ApiError } from './errors.js';
import type { LayerStore, SlotFile } from './layer-store.js';
import type { Machines, StateChange, UndoAction, VmRecord } from './machines.js';

/** What the worker writes in status.json when the guest powered the VM off (vmm/worker/machine.ts). */
const GUEST_SHUTDOWN = 'the guest shut down';

export type LayerEvent = (severity: 'Information' | 'Warning' | 'Error', message: string, object: string) => void;

export class DiskLayers {
  /** The change of each VM's layers in progress, so that the next one waits for it. */
  private readonly changing = new Map<string, Promise<unknown>>();

  constructor(readonly store: LayerStore, readonly machines: Machines, readonly log: LayerEvent) {
    machines.on('state', (change) => this.onState(change));
  }

  /** Runs `work` after every earlier change of the VM's layers has finished; one at a time per VM. */
  exclusive<T>(vmId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.changing.get(vmId) ?? Promise.resolve();
    const next = previous.then(work, work);
    const settled = next.then(() => {}, () => {});
    this.changing.set(vmId, settled);
    void settled.then(() => { if (this.changing.get(vmId) === settled) this.changing.delete(vmId); });
    return next;
  }

  /** The undo disk of a slot: `<vm folder>/<vm name>_<slot>.vud`. */
  undoDiskOf(vm: VmRecord, slot: string): string {
    return path.join(path.dirname(vm.vmcPath), `${vm.name}_${slot}.vud`);
  }

  /** The VM's undo disks that exist, per slot. */
  undoDisks(vm: VmRecord): SlotFile[] {
    return hardDisks(vm.config).map(({ slot }) => ({ slot, file: this.undoDiskOf(vm, slot) })).filter(({ file }) => fs.existsSync(file));
  }

  /** Each slot's top: its undo disk for an undoable VM, else the snapshot layer the catalog names, else the configured disk. */
  tops(vm: VmRecord): SlotFile[] {
    const recorded = this.store.tops(vm.id);
    return hardDisks(vm.config).map(({ slot, path: configured }) => ({
      slot, file: vm.undoable ? this.undoDiskOf(vm, slot) : recorded.get(slot) ?? configured,
    }));
  }

  /** The configuration the worker is given: each slot's path replaced by its top. */
  effectiveConfig(vm: VmRecord): VmConfig {
    return withDiskPaths(vm.config, new Map(this.tops(vm).map((t) => [t.slot, t.file])));
  }

  /**
   * At turn on, before the worker starts: an undoable VM gets an undo disk per slot unless it
   * has one (a kept or saved-state one is used as it is). Returns the effective configuration.
   */
  prepareStartup(vm: VmRecord): Promise<VmConfig> {
    return this.exclusive(vm.id, async () => {
      const current = this.machines.require(vm.id);
      if (current.undoable) {
        for (const { slot, path: parent } of hardDisks(current.config)) {
          const undo = this.undoDiskOf(current, slot);
          if (fs.existsSync(undo)) continue;
          await runDiskJob('createDifferencing', { target: undo, parent });
          this.log('Information', `${current.name}: made the undo disk ${undo} for ${slot}`, objectOf(current));
        }
      }
      return this.effectiveConfig(current);
    });
  }

  /**
   * Applies an undo action to a turned-off VM's undo disks: Keep leaves them, Commit merges each
   * into its disk (the engine deletes it once its parent holds everything), Discard removes them.
   * Returns what was done, for the caller's result or the event log.
   */
  applyUndoAction(vm: VmRecord, action: UndoAction, onProgress?: (done: number, total: number) => void): Promise<string> {
    return this.exclusive(vm.id, async () => {
      const current = this.machines.require(vm.id);
      this.machines.refuseUnlessOff(current);
      const disks = this.undoDisks(current);
      if (!disks.length) return `${current.name} has no undo disks`;
      if (action === 'Keep') return `kept the undo disks of ${current.name}: ${disks.map((d) => d.file).join(', ')}`;
      for (const { file } of disks) {
        if (action === 'Commit') await runDiskJob('mergeIntoParent', { child: file }, { onProgress });
        else await fs.promises.rm(file, { force: true });
      }
      const said = `${action === 'Commit' ? 'committed' : 'discarded'} the undo disks of ${current.name}: ${disks.map((d) => d.file).join(', ')}`;
      this.log('Information', said, objectOf(current));
      return said;
    });
  }

  /** Discards the undo disks of slots whose configured disk changed or went (a connection removed, another disk attached). */
  async discardStaleUndoDisks(before: VmRecord, after: VmRecord): Promise<string[]> {
    const was = new Map(hardDisks(before.config).map((d) => [d.slot, d.path]));
    const now = new Map(hardDisks(after.config).map((d) => [d.slot, d.path]));
    const gone: string[] = [];
    for (const slot of new Set([...was.keys(), ...now.keys()])) {
      if (was.get(slot) === now.get(slot)) continue;
      const undo = this.undoDiskOf(before, slot);
      if (!fs.existsSync(undo)) continue;
      await fs.promises.rm(undo, { force: true });
      gone.push(undo);
    }
    if (gone.length) this.log('Information', `${after.name}: discarded the undo disks ${gone.join(', ')}: their disks changed`, objectOf(after));
    return gone;
  }

  /** Sets Undoable; refused unless the VM is off, and (when set) while it has snapshots. Turning it off discards the undo disks. */
  setUndoable(vm: VmRecord, undoable: boolean): Promise<string[]> {
    return this.exclusive(vm.id, async () => {
      const current = this.machines.require(vm.id);
      this.machines.refuseUnlessOff(current);
      if (undoable && (this.store.snapshots(vm.id).length || this.store.tops(vm.id).size)) {
        // Layers left by deleted snapshots count too: the undo disks would be made under them and skip what they hold.
        throw new ApiError('VM_E_UNDO_AND_SNAPSHOTS', `${current.name} has snapshots or snapshot layers above its disks; delete its snapshots (and merge the layers with its disks: see docs/snapshots.md) before it uses undo disks`);
      }
      const discarded = undoable ? [] : this.undoDisks(current).map((d) => d.file);
      for (const file of discarded) await fs.promises.rm(file, { force: true });
      this.machines.setSettings(vm.id, { undoable });
      if (discarded.length) this.log('Information', `${current.name} no longer uses undo disks; discarded ${discarded.join(', ')}`, objectOf(current));
      return discarded;
    });
  }

  /** The guest shut itself down: the VM's UndoAction is applied to its undo disks. */
  private onState({ vm, state, status }: StateChange): void {
    if (state !== 'TurnedOff' || status?.crashed || status?.stopReason !== GUEST_SHUTDOWN) return;
    const current = this.machines.get(vm.id);
    if (!current?.undoable) return;
    void this.applyUndoAction(current, current.undoAction).catch((e: Error) => {
      this.log('Error', `${current.name}: the undo action (${current.undoAction}) after the guest's shutdown failed: ${e.message}`, objectOf(current));
    });
  }
}

export function objectOf(vm: VmRecord): string {
  return `VirtualMachine/${vm.id}`;
}

/** A copy of `config` with the hard disks of the slots in `paths` pointing at the files given. */
export function withDiskPaths(config: VmConfig, paths: ReadonlyMap<string, string>): VmConfig {
  const copy = structuredClone(config);
  for (const d of copy.ide) {
    if (d.type === 'HardDisk') d.path = paths.get(`ide${d.channel}-${d.device}`) ?? d.path;
  }
  copy.scsi.forEach((adapter, i) => {
    for (const d of adapter.disks) d.path = paths.get(`scsi${i}-${d.target}`) ?? d.path;
  });
  return copy;
}
