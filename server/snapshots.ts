// Snapshots of a VM (docs/snapshots.md): create, revert and delete, each run as one change of
// the VM's layers at a time (DiskLayers.exclusive). A snapshot's record is written before its
// files and settled after them, so that a kill at any point leaves a row layer-recovery.ts can
// finish or undo:
//   create  row 'creating' (with the new tops' names) -> the worker switches the tops (or disk
//           jobs make them, the VM off) -> one transaction: row 'ready', the new tops, current.
//   revert  new tops made as children of the snapshot's layers -> one transaction: the tops and
//           current -> the old tops no snapshot holds removed (a kill leaves them as orphans,
//           which the start sweeps).
//   delete  row 'deleting' -> the layer merged away by the rule below -> one transaction: the
//           row gone, its children's parent and the current snapshot moved up -> its files removed.
// The delete rule, for snapshot S with layer L in a slot: L's children are the layers of S's
// child snapshots, and the top when S is current. One child K: when L is the configured disk
// and K the top, K is committed into L (L becomes the top); when L is the configured disk and K
// a layer, the record alone goes (L stays the shared base); otherwise L is merged into K (K
// takes L's sectors it lacks and L's parent) and L is deleted. Several children: L is merged
// into each (the configured disk stays). Online through the worker when the VM runs and L is
// in its chain, offline through disk jobs otherwise.

import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { hardDisks } from '../vmm/config.js';
import { isActive, isLive, type VmStatus } from '../vmm/state.js';
import type { Progress } from '../vmm/worker/machine.js';
import { crashPoint } from '../storage/crash-points.js';
import { draftOf } from '../storage/drafts.js';
import { runDiskJob } from './disk-jobs.js';
import { type DiskLayers, objectOf } from './disk-layers.js';
import { ApiError } from './errors.js';
import type { LayerStore, MemoryMethod, SlotFile, SnapshotRecord } from './layer-store.js';
import type { Machines, VmRecord } from './machines.js';

export const SNAPSHOTS_FOLDER = 'Snapshots';

/** What the worker's snapshotDisks answers (docs/vmm.md). */
export interface SnapshotDisksResult {
  pauseMs: number;
  previous: SlotFile[];
  memory?: { file: string; bytes: number; method: MemoryMethod };
  changeMaps?: { slot: string; file: string; unsure: boolean; reason?: string }[];
}

export interface SnapshotRequest { name: string; description: string; includeMemory: boolean }
type OnProgress = (percent: number, phase?: string, bytes?: number) => void;

/** The tops status.json records (the worker writes them before it resumes a switched guest), or null when it records none. */
export function recordedDisks(status: VmStatus | null): (SlotFile & { chain?: string[] })[] | null {
  const disks = (status as (VmStatus & { disks?: unknown }) | null)?.disks;
  return Array.isArray(disks) ? disks as (SlotFile & { chain?: string[] })[] : null;
}

export function recordedTops(status: VmStatus | null): SlotFile[] | null {
  const disks = (status as (VmStatus & { disks?: unknown }) | null)?.disks;
  return Array.isArray(disks) ? (disks as SlotFile[]).map(({ slot, file }) => ({ slot, file })) : null;
}

export class Snapshots {
  constructor(private readonly layers: DiskLayers) {}

  private get store(): LayerStore { return this.layers.store; }
  private get machines(): Machines { return this.layers.machines; }

  /** The VM's snapshots, tree order (each after its parent, siblings oldest first); one being made is not listed. */
  tree(vm: VmRecord): { snapshot: SnapshotRecord; depth: number }[] {
    const all = this.store.snapshots(vm.id).filter((s) => s.state !== 'creating');
    const out: { snapshot: SnapshotRecord; depth: number }[] = [];
    const known = new Set(all.map((s) => s.id));
    const visit = (parent: string | null, depth: number): void => {
      for (const s of all.filter((x) => (x.parent && known.has(x.parent) ? x.parent : null) === parent)) {
        out.push({ snapshot: s, depth });
        visit(s.id, depth + 1);
      }
    };
    visit(null, 0);
    return out;
  }

  require(vm: VmRecord, id: string): SnapshotRecord {
    const s = this.store.snapshot(vm.id, id);
    if (!s || s.state === 'creating') throw new ApiError('VM_E_SNAPSHOT_UNKNOWN', `${vm.name} has no snapshot ${id}`);
    return s;
  }

  children(s: SnapshotRecord): SnapshotRecord[] {
    return this.store.snapshots(s.vmId).filter((x) => x.parent === s.id && x.state !== 'creating');
  }

  /** The checks a CreateSnapshot call hears at once, before its task. */
  refuseCreate(vm: VmRecord, name: string): void {
    if (vm.undoable) throw new ApiError('VM_E_UNDO_AND_SNAPSHOTS', `${vm.name} uses undo disks; turn Undoable off (which discards them) before taking snapshots`);
    const taken = this.store.snapshotByName(vm.id, name);
    if (taken) throw new ApiError('VM_E_SNAPSHOT_NAME_TAKEN', `${vm.name} has a snapshot named ${taken.name} already (names are unique regardless of case)`);
    this.refuseBetweenStates(vm);
    if (this.machines.state(vm) === 'Saved') throw new ApiError('VM_E_VM_SAVED', `${vm.name} has a saved state; restore it (or discard the state) before taking a snapshot`);
  }

  refuseBetweenStates(vm: VmRecord): void {
    const state = this.machines.state(vm);
    if (this.machines.isBeingTurnedOn(vm) || (isActive(state) && !isLive(state))) throw new ApiError('VM_E_BUSY', `${vm.name} is ${state}; try again once it is running or off`);
  }

  /**
   * Takes a snapshot: every disk of the VM switched at one instant to a new differencing child
   * (the worker holds the guest for that instant), the previous tops becoming its layers.
   */
  create(vm: VmRecord, request: SnapshotRequest, onProgress: OnProgress = () => {}): Promise<SnapshotRecord> {
    return this.layers.exclusive(vm.id, async () => {
      const current = this.machines.require(vm.id);
      this.refuseCreate(current, request.name);
      const live = isLive(this.machines.state(current));
      const id = randomUUID();
      const folder = snapshotsFolder(current);
      const tops = this.layers.tops(current);
      const newTops = tops.map(({ slot }) => ({ slot, file: path.join(folder, `${slot}-${randomBytes(4).toString('hex')}.vhd`) }));
      const memoryFile = request.includeMemory && live ? path.join(folder, `${id}.vsv`) : null;
      const record: SnapshotRecord = {
        id, vmId: current.id, name: request.name, description: request.description, parent: this.store.currentSnapshot(current.id),
        created: new Date().toISOString(), state: 'creating', layers: tops, newTops, memoryFile, memoryMethod: null, consistency: 'CrashConsistent',
      };
      await fs.promises.mkdir(folder, { recursive: true });
      this.store.insertSnapshot(record);
      let memoryMethod: MemoryMethod | null = null;
      try {
        if (live) {
          onProgress(10, 'switching the disks');
          const result = await this.machines.operate<SnapshotDisksResult>(current, 'snapshotDisks', { layers: newTops, ...(memoryFile ? { memory: { file: memoryFile } } : {}) },
            (p: Progress) => onProgress(10 + p.percent * 0.8, p.operation, p.bytes));
          memoryMethod = result.memory?.method ?? null;
          record.layers = result.previous.length ? result.previous : tops;
        } else {
          onProgress(10, 'making the new layers');
          for (const t of newTops) await runDiskJob('createDifferencing', { target: t.file, parent: tops.find((x) => x.slot === t.slot)!.file });
        }
      } catch (e) {
        // Whether the switch happened is the worker's record to say: settled as at a start.
        await this.settleCreating(this.store.snapshot(current.id, id)!);
        const settled = this.store.snapshot(current.id, id);
        if (settled?.state === 'ready') return settled;
        throw e;
      }
      crashPoint('vserverd-snapshot-switched');
      this.store.atomically(() => {
        this.store.updateSnapshot(id, { state: 'ready', layers: record.layers, ...(memoryMethod ? { memoryMethod } : {}) });
        this.store.setTops(current.id, newTops);
        this.store.setCurrentSnapshot(current.id, id);
      });
      this.layers.log('Information', `${current.name}: snapshot ${request.name} taken${memoryFile ? ` with its memory (${memoryMethod ?? 'unknown method'})` : ''}`, objectOf(current));
      return this.store.snapshot(current.id, id)!;
    });
  }

  /**
   * A 'creating' row (a kill, or a failed switch): finished when the worker's record shows the
   * new tops, else undone (its new files removed, the row deleted).
   */
  async settleCreating(s: SnapshotRecord): Promise<'finished' | 'undone'> {
    const vm = this.machines.get(s.vmId);
    const recorded = vm ? recordedTops(this.machines.status(vm.id)) : null;
    const switched = recorded !== null && s.newTops.length > 0 && s.newTops.every((t) => recorded.some((r) => r.slot === t.slot && r.file === t.file));
    if (vm && switched) {
      this.store.atomically(() => {
        this.store.updateSnapshot(s.id, { state: 'ready' });
        this.store.setTops(vm.id, s.newTops);
        this.store.setCurrentSnapshot(vm.id, s.id);
      });
      return 'finished';
    }
    const served = new Set((recorded ?? []).map((r) => r.file));
    for (const file of [...s.newTops.map((t) => t.file), ...(s.memoryFile ? [s.memoryFile] : [])]) {
      if (served.has(file)) continue;
      await fs.promises.rm(file, { force: true });
      await fs.promises.rm(draftOf(file), { force: true });
    }
    this.store.deleteSnapshot(s.id);
    return 'undone';
  }

  /**
   * Returns the VM to the snapshot: turned off if it runs (its current state is lost), new tops
   * made as children of the snapshot's layers, and, when the snapshot holds memory, that state
   * restored (the VM runs again); off otherwise.
   */
  revert(vm: VmRecord, id: string, onProgress: OnProgress = () => {}): Promise<void> {
    return this.layers.exclusive(vm.id, async () => {
      let current = this.machines.require(vm.id);
      const s = this.require(current, id);
      if (s.state !== 'ready') throw new ApiError('VM_E_BUSY', `snapshot ${s.name} of ${current.name} is being deleted`);
      this.refuseBetweenStates(current);
      const state = this.machines.state(current);
      if (isLive(state)) {
        onProgress(5, 'turning the VM off');
        await this.machines.operate(current, 'turnOff');
        await this.machines.settledState(current, 30_000);
      }
      if (this.machines.state(current) === 'Saved') this.machines.discardSavedState(current);
      current = this.machines.require(vm.id);
      const folder = snapshotsFolder(current);
      await fs.promises.mkdir(folder, { recursive: true });
      const configured = new Set(hardDisks(current.config).map((d) => d.slot));
      const newTops: SlotFile[] = [];
      onProgress(20, 'making the new layers');
      for (const layer of s.layers.filter((l) => configured.has(l.slot))) {
        const file = path.join(folder, `${layer.slot}-${randomBytes(4).toString('hex')}.vhd`);
        await runDiskJob('createDifferencing', { target: file, parent: layer.file });
        newTops.push({ slot: layer.slot, file });
      }
      const oldTops = [...this.store.tops(current.id).values()];
      this.store.atomically(() => {
        this.store.clearTops(current.id);
        this.store.setTops(current.id, newTops);
        this.store.setCurrentSnapshot(current.id, s.id);
      });
      // The state left is lost, as the caller confirmed: its tops go unless a snapshot holds them.
      const held = this.heldFiles(current);
      for (const file of oldTops) if (!held.has(file)) await fs.promises.rm(file, { force: true });
      if (s.memoryFile && fs.existsSync(s.memoryFile)) {
        onProgress(50, 'restoring the memory');
        await copyFile(s.memoryFile, current.config.savedState);
        await this.machines.noticeSavedState(current);
        this.machines.claimStart(current);
        await this.machines.startup(current, (p) => onProgress(50 + p.percent / 2, p.operation, p.bytes), async () => this.layers.effectiveConfig(this.machines.require(vm.id)));
      }
    });
  }

  /** Deletes the snapshot: its layer merged away by the rule at the top of this file, the guest going on meanwhile. */
  delete(vm: VmRecord, id: string, onProgress: OnProgress = () => {}): Promise<void> {
    return this.layers.exclusive(vm.id, async () => {
      const current = this.machines.require(vm.id);
      const s = this.require(current, id);
      this.refuseBetweenStates(current);
      this.store.updateSnapshot(s.id, { state: 'deleting' });
      await this.finishDelete(current, this.store.snapshot(current.id, s.id)!, onProgress);
    });
  }

  /** The work of a delete, from a row already 'deleting'; re-run after a kill, each step finds what is done. */
  async finishDelete(vm: VmRecord, s: SnapshotRecord, onProgress: OnProgress = () => {}): Promise<void> {
    const configured = new Map(hardDisks(vm.config).map((d) => [d.slot, d.path]));
    const childSnapshots = this.children(s);
    const isCurrent = this.store.currentSnapshot(vm.id) === s.id;
    const layersToRemove: string[] = [];
    const slots = s.layers.length || 1;
    let done = 0;
    for (const layer of s.layers) {
      const L = layer.file;
      const isConfigured = configured.get(layer.slot) === L;
      const top = this.store.tops(vm.id).get(layer.slot) ?? configured.get(layer.slot);
      const kids = [
        ...childSnapshots.flatMap((c) => c.layers.filter((l) => l.slot === layer.slot).map((l) => l.file)),
        ...(isCurrent && top && top !== L ? [top] : []),
      ].filter((f) => f !== L);
      const progress = (p: number): void => onProgress(((done + p / 100) / slots) * 100, `merging ${layer.slot}`);
      if (!fs.existsSync(L)) {
        // A re-run after the layer was merged and removed (or the top committed into it): nothing left to do.
      } else if (isConfigured) {
        if (kids.length === 1 && kids[0] === top && fs.existsSync(top)) {
          await this.commitTopInto(vm, layer.slot, top, L, progress);
        }
      } else {
        for (const kid of kids) {
          if (fs.existsSync(kid)) await this.mergeIntoChild(vm, layer.slot, L, kid, progress);
        }
        layersToRemove.push(L);
      }
      done++;
    }
    crashPoint('vserverd-snapshot-merged');
    this.store.atomically(() => {
      for (const c of childSnapshots) this.store.updateSnapshot(c.id, { parent: s.parent });
      if (isCurrent) this.store.setCurrentSnapshot(vm.id, s.parent);
      this.store.deleteSnapshot(s.id);
    });
    for (const file of layersToRemove) await fs.promises.rm(file, { force: true });
    if (s.memoryFile) await fs.promises.rm(s.memoryFile, { force: true });
    // The last snapshot gone: each top left above a configured disk (now its only parent) is committed into it,
    // so that the VM's disks are its own files again.
    if (!this.store.snapshots(vm.id).length) {
      for (const [slot, top] of this.store.tops(vm.id)) {
        const disk = configured.get(slot);
        if (disk && top !== disk && fs.existsSync(top)) await this.commitTopInto(vm, slot, top, disk, () => {});
        else this.setTop(vm, slot, disk ?? top);
      }
    }
  }

  /** Commits the top into the configured disk below it; the configured disk becomes the top again. */
  private async commitTopInto(vm: VmRecord, slot: string, top: string, layer: string, progress: (p: number) => void): Promise<void> {
    const recorded = recordedTops(this.machines.status(vm.id))?.find((t) => t.slot === slot)?.file;
    if (isLive(this.machines.state(vm)) && recorded === layer) {
      // The worker committed it already (vserverd was killed before it wrote down the new top).
      this.setTop(vm, slot, layer);
      await fs.promises.rm(top, { force: true });
    } else if (this.servedFiles(vm).has(top)) {
      await this.machines.operate(vm, 'mergeLayer', { slot, layer, direction: 'intoParent' }, (p: Progress) => progress(p.percent));
      this.setTop(vm, slot, layer);
      await fs.promises.rm(top, { force: true });
    } else {
      // The engine deletes the child once the parent holds everything; the catalog then names the parent.
      await runDiskJob('mergeIntoParent', { child: top }, { onProgress: (d, t) => progress(t ? (d / t) * 100 : 0) });
      this.setTop(vm, slot, layer);
    }
  }

  /** Merges a layer into one child of it (the child takes its sectors and its parent); the layer is not removed here. */
  private async mergeIntoChild(vm: VmRecord, slot: string, layer: string, child: string, progress: (p: number) => void): Promise<void> {
    const chain = (recordedDisks(this.machines.status(vm.id)) ?? []).find((d) => d.slot === slot)?.chain;
    if (isLive(this.machines.state(vm)) && chain?.includes(child) && !chain.includes(layer)) return; // merged already, before a kill
    const served = this.servedFiles(vm);
    // Online only along the running chain; a layer's other children are merged offline (the worker reads the layer, it never writes it).
    if (served.has(layer) && served.has(child)) {
      await this.machines.operate(vm, 'mergeLayer', { slot, layer, direction: 'intoChild' }, (p: Progress) => progress(p.percent));
    } else {
      await runDiskJob('mergeIntoChild', { layer, child }, { onProgress: (d, t) => progress(t ? (d / t) * 100 : 0) });
    }
  }

  private setTop(vm: VmRecord, slot: string, file: string): void {
    const configured = hardDisks(vm.config).find((d) => d.slot === slot)?.path;
    const tops = [...this.store.tops(vm.id)].filter(([s]) => s !== slot).map(([s, f]) => ({ slot: s, file: f }));
    this.store.atomically(() => {
      this.store.clearTops(vm.id);
      this.store.setTops(vm.id, file === configured ? tops : [...tops, { slot, file }]);
    });
  }

  /**
   * The files the running VM's worker serves (its tops and their chains), from the catalog: the
   * chain of a slot is its top, then the layer of the current snapshot, of that one's parent,
   * and so on (each snapshot's layer is the top it replaced). Empty when the VM does not run.
   */
  servedFiles(vm: VmRecord): Set<string> {
    const files = new Set<string>();
    if (!isLive(this.machines.state(vm))) return files;
    for (const t of this.layers.tops(vm)) files.add(t.file);
    for (const d of hardDisks(vm.config)) files.add(d.path);
    let id = this.store.currentSnapshot(vm.id);
    const seen = new Set<string>();
    while (id && !seen.has(id)) {
      seen.add(id);
      const s = this.store.snapshot(vm.id, id);
      if (!s) break;
      for (const l of s.layers) files.add(l.file);
      id = s.parent;
    }
    return files;
  }

  /** Every file the catalog holds for the VM: its tops, its configured disks, every snapshot's layers and memory, and the new tops of one being made. */
  heldFiles(vm: VmRecord): Set<string> {
    const files = new Set<string>(hardDisks(vm.config).map((d) => d.path));
    for (const f of this.store.tops(vm.id).values()) files.add(f);
    for (const s of this.store.snapshots(vm.id)) {
      // A ready snapshot's new tops are the VM's tops (held above) or were left at a revert; a creating one's are its to settle.
      for (const l of [...s.layers, ...(s.state === 'creating' ? s.newTops : [])]) files.add(l.file);
      if (s.memoryFile) files.add(s.memoryFile);
    }
    return files;
  }
}

export function snapshotsFolder(vm: VmRecord): string {
  return path.join(path.dirname(vm.vmcPath), SNAPSHOTS_FOLDER);
}

/** Copies a file through a draft renamed at the end, so that a kill never leaves half of it under the name. */
async function copyFile(from: string, to: string): Promise<void> {
  const draft = draftOf(to);
  await fs.promises.copyFile(from, draft);
  const handle = await fs.promises.open(draft, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.promises.rename(draft, to);
}
