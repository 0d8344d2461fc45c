// Backups of VMs, running or not (docs/snapshots.md), and their restore. A backup set is a
// folder `<path>/<vm name>/<time>-<id8>/` holding each disk as a standalone VHD (a full backup)
// or as a differencing VHD whose parent is the previous set's disk (an incremental one), the
// VM's .vmc, its memory when asked, and manifest.json (every file's size and SHA-256, the
// consistency, the time), written last: a set without a manifest is unfinished.
//
// Running VMs are brought to one instant together: each paused, its disks switched to
// temporary tops (the worker's snapshotDisks), each resumed; the previous tops are then copied
// while the guests run, and the temporary tops committed back into them (mergeLayer intoParent).
// The backups row (state, temporary tops) is written before the switch, so that a kill is
// settled at the next start (layer-recovery.ts): the temporary tops merged back, the unfinished
// set removed.

import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { type VmConfig, parseVmConfig, randomMac } from '../vmm/config.js';
import { isLive } from '../vmm/state.js';
import { crashPoint } from '../storage/crash-points.js';
import { draftOf } from '../storage/drafts.js';
import { runDiskJob } from './disk-jobs.js';
import { type DiskLayers, objectOf } from './disk-layers.js';
import { ApiError } from './errors.js';
import type { LayerStore, SlotFile } from './layer-store.js';
import type { Machines, VmRecord } from './machines.js';
import { recordedTops, type SnapshotDisksResult } from './snapshots.js';
import { writeVmc } from './vmc-file.js';

export const MANIFEST = 'manifest.json';
const FORMAT = 'vserver-backup';

export interface ManifestFile { name: string; role: 'disk' | 'config' | 'memory'; slot?: string; bytes: number; sha256: string }
export interface Manifest {
  format: typeof FORMAT;
  version: 1;
  id: string;
  created: string;
  kind: 'full' | 'incremental';
  /** Why a backup asked to be incremental is full (no earlier set, an unsure change map), or null. */
  fullReason: string | null;
  /** The set an incremental one builds on, as a folder relative to this one. */
  parent: { id: string; folder: string } | null;
  vm: { id: string; name: string };
  consistency: 'CrashConsistent' | 'FileSystemConsistent';
  /** Whether the VM ran (its disks copied from an instant while it went on), or was off. */
  running: boolean;
  files: ManifestFile[];
}

export interface BackupRequest { vms: VmRecord[]; folder: string; incremental: boolean; includeMemory: boolean }
export interface BackupOutcome { vm: string; folder: string; kind: 'full' | 'incremental'; fullReason: string | null; bytes: number }
export interface ListedBackup { folder: string; id: string; vm: { id: string; name: string }; created: string; kind: 'full' | 'incremental'; parent: string | null; consistency: string; running: boolean; includesMemory: boolean; bytes: number }

type OnProgress = (percent: number, phase?: string, bytes?: number) => void;

/** One VM's part of a backup while it is made. */
interface Plan { vm: VmRecord; id: string; folder: string; live: boolean; sources: SlotFile[]; temporary: SlotFile[]; parent: { manifest: Manifest; folder: string } | null; fullReason: string | null; memory: SnapshotDisksResult['memory'] | null; changeMaps: SnapshotDisksResult['changeMaps'] }

export class Backups {
  constructor(private readonly layers: DiskLayers) {}

  private get store(): LayerStore { return this.layers.store; }
  private get machines(): Machines { return this.layers.machines; }

  /** Backs up the VMs into `folder`, running ones from one instant across them all. */
  backup(request: BackupRequest, onProgress: OnProgress = () => {}): Promise<BackupOutcome[]> {
    const vms = [...new Map(request.vms.map((vm) => [vm.id, vm])).values()].sort((a, b) => a.id.localeCompare(b.id));
    // Each VM's layers are held for the whole backup, taken in one order so that two backups never wait on each other.
    const held = vms.reduceRight<() => Promise<BackupOutcome[]>>((inner, vm) => () => this.layers.exclusive(vm.id, inner), () => this.backupHeld(vms, request, onProgress));
    return held();
  }

  private async backupHeld(given: VmRecord[], request: BackupRequest, onProgress: OnProgress): Promise<BackupOutcome[]> {
    const vms = given.map((vm) => this.machines.require(vm.id));
    for (const vm of vms) {
      const state = this.machines.state(vm);
      if (this.machines.isBeingTurnedOn(vm) || !['Running', 'Paused', 'TurnedOff', 'Saved'].includes(state)) throw new ApiError('VM_E_BUSY', `${vm.name} is ${state}; back it up once it is running or off`);
      if (vm.undoable && isLive(state)) throw new ApiError('VM_E_UNDO_AND_SNAPSHOTS', `${vm.name} runs on undo disks; a backup of a running VM takes a snapshot, which undo disks do not mix with. Back it up turned off`);
    }
    const plans = vms.map((vm) => this.plan(vm, request));
    const done: BackupOutcome[] = [];
    try {
      for (const plan of plans) {
        await fs.promises.mkdir(plan.folder, { recursive: true });
        this.store.insertBackup({ id: plan.id, vmId: plan.vm.id, folder: plan.folder, state: 'copying', created: new Date().toISOString(), temporaryTops: plan.live ? plan.temporary : null });
      }
      await this.freeze(plans.filter((p) => p.live), request.includeMemory);
      for (const [i, plan] of plans.entries()) {
        const share = (p: number, phase?: string, bytes?: number): void => onProgress(((i + p / 100) / plans.length) * 100, phase, bytes);
        crashPoint('vserverd-backup-frozen');
        done.push(await this.copy(plan, share));
        crashPoint('vserverd-backup-copied');
        await this.mergeBack(plan);
        this.store.deleteBackup(plan.id);
        this.layers.log('Information', `${plan.vm.name}: ${done.at(-1)!.kind} backup written to ${plan.folder}${plan.fullReason ? ` (full: ${plan.fullReason})` : ''}`, objectOf(plan.vm));
      }
    } catch (e) {
      for (const plan of plans.filter((p) => this.store.backups().some((b) => b.id === p.id))) await this.abandon(plan);
      throw noSpace(e) ?? e;
    }
    return done;
  }

  private plan(vm: VmRecord, request: BackupRequest): Plan {
    const id = randomUUID();
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const vmFolder = path.join(request.folder, safeName(vm.name));
    const live = isLive(this.machines.state(vm));
    const tops = this.layers.tops(vm);
    let parent: Plan['parent'] = null;
    let fullReason: string | null = null;
    if (request.incremental) {
      parent = newestSet(vmFolder, vm.id);
      if (!parent) fullReason = 'there is no earlier backup of this VM in the folder';
    }
    return {
      vm, id, folder: path.join(vmFolder, `${stamp}-${id.slice(0, 8)}`), live, sources: tops, parent, fullReason, memory: null, changeMaps: undefined,
      temporary: live ? tops.map(({ slot, file }) => ({ slot, file: path.join(path.dirname(file), `.backup-${id.slice(0, 8)}-${slot}.vhd`) })) : [],
    };
  }

  /** The running VMs held at one instant: all paused, each switched to its temporary tops, all resumed. */
  private async freeze(plans: Plan[], includeMemory: boolean): Promise<void> {
    const paused: VmRecord[] = [];
    try {
      for (const plan of plans) {
        if (this.machines.state(plan.vm) !== 'Running') continue;
        await this.machines.operate(plan.vm, 'pause');
        paused.push(plan.vm);
      }
      for (const plan of plans) {
        const result = await this.machines.operate<SnapshotDisksResult>(plan.vm, 'snapshotDisks', {
          layers: plan.temporary, changeMaps: { generation: plan.id }, ...(includeMemory ? { memory: { file: path.join(plan.folder, 'memory.vsv') } } : {}),
        });
        plan.sources = result.previous.length ? result.previous : plan.sources;
        plan.memory = result.memory ?? null;
        plan.changeMaps = result.changeMaps;
      }
    } finally {
      for (const vm of paused) await this.machines.operate(vm, 'resume').catch(() => {});
    }
  }

  private async copy(plan: Plan, onProgress: OnProgress): Promise<BackupOutcome> {
    const files: ManifestFile[] = [];
    let kind: 'full' | 'incremental' = plan.parent ? 'incremental' : 'full';
    const slots = plan.sources.length || 1;
    // An incremental copy needs every slot's change map sure and counting from the parent set.
    if (plan.parent) {
      let unsure: string | null = null;
      for (const source of plan.sources) unsure ??= await this.changeMapProblem(plan, source);
      if (unsure) {
        kind = 'full';
        plan.fullReason = unsure;
      }
    }
    for (const [i, source] of plan.sources.entries()) {
      const name = `${source.slot}.vhd`;
      const target = path.join(plan.folder, name);
      const progress = (d: number, t: number): void => onProgress(((i + (t ? d / t : 0)) / slots) * 90, `copying ${source.slot}`, d);
      const parentDisk = plan.parent ? path.join(plan.parent.folder, `${source.slot}.vhd`) : null;
      const copied = kind === 'incremental' && parentDisk
        ? await runDiskJob('copyChangedToVhd', { top: source.file, map: this.changeMapOf(plan, source), parentBackup: parentDisk, target }, { onProgress: progress })
        : await runDiskJob('copyChainToVhd', { top: source.file, target }, { onProgress: progress });
      files.push({ name, role: 'disk', slot: source.slot, bytes: copied.bytes, sha256: copied.sha256 });
    }
    const vmc = `${safeName(plan.vm.name)}.vmc`;
    await writeVmc(path.join(plan.folder, vmc), plan.vm.config);
    files.push({ name: vmc, role: 'config', ...(await runDiskJob('sha256', { file: path.join(plan.folder, vmc) })) });
    if (plan.memory) files.push({ name: path.basename(plan.memory.file), role: 'memory', ...(await runDiskJob('sha256', { file: plan.memory.file })) });
    const manifest: Manifest = {
      format: FORMAT, version: 1, id: plan.id, created: new Date().toISOString(), kind, fullReason: plan.fullReason,
      parent: kind === 'incremental' && plan.parent ? { id: plan.parent.manifest.id, folder: path.relative(plan.folder, plan.parent.folder) } : null,
      vm: { id: plan.vm.id, name: plan.vm.name }, consistency: 'CrashConsistent', running: plan.live, files,
    };
    await writeDurably(path.join(plan.folder, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    // The change maps count from this set from now on: a running VM's new tops started counting at the switch; a stopped VM's start here.
    if (!plan.live) for (const source of plan.sources) await runDiskJob('startChangeMap', { top: source.file, generation: plan.id });
    return { vm: plan.vm.id, folder: plan.folder, kind, fullReason: plan.fullReason, bytes: files.reduce((n, f) => n + f.bytes, 0) };
  }

  /** Why a slot's change map cannot give an incremental copy, or null when it can. */
  private async changeMapProblem(plan: Plan, source: SlotFile): Promise<string | null> {
    if (plan.live) {
      const map = plan.changeMaps?.find((m) => m.slot === source.slot);
      if (!map) return 'the worker kept no change map of the disks';
      if (map.unsure) return `the change map of ${source.slot} is unsure: ${map.reason ?? 'it was not closed cleanly'}`;
    }
    const info = await runDiskJob('changeMapInfo', { top: source.file, file: this.changeMapOf(plan, source) });
    if (info.unsure) return `the change map of ${source.slot} is unsure: ${info.reason ?? 'it was not closed cleanly'}`;
    if (info.generation !== plan.parent!.manifest.id) return `the change map of ${source.slot} does not count from the previous backup (${plan.parent!.manifest.id})`;
    return null;
  }

  private changeMapOf(plan: Plan, source: SlotFile): string {
    return plan.changeMaps?.find((m) => m.slot === source.slot)?.file ?? `${source.file}.cbt`;
  }

  /** Commits the temporary tops of a running VM back into the tops they replaced. */
  async mergeBack(plan: { vm: VmRecord; sources: SlotFile[]; temporary: SlotFile[]; id: string }): Promise<void> {
    if (!plan.temporary.length) return;
    this.store.updateBackup(plan.id, 'merging', plan.temporary);
    const vm = this.machines.require(plan.vm.id);
    const served = recordedTops(this.machines.status(vm.id)) ?? [];
    for (const temp of plan.temporary) {
      const layer = plan.sources.find((s) => s.slot === temp.slot)?.file;
      if (!layer || !fs.existsSync(temp.file)) continue;
      if (isLive(this.machines.state(vm)) && served.some((s) => s.file === temp.file)) {
        await this.machines.operate(vm, 'mergeLayer', { slot: temp.slot, layer, direction: 'intoParent' });
        await fs.promises.rm(temp.file, { force: true });
      } else {
        // Off (turned off during the copy, or after a kill): the engine commits and deletes the temporary top.
        await runDiskJob('mergeIntoParent', { child: temp.file });
      }
    }
  }

  /** A failed backup: its temporary tops merged back, its unfinished set removed, its row gone. */
  async abandon(plan: { vm: VmRecord; id: string; folder: string; sources: SlotFile[]; temporary: SlotFile[] }): Promise<void> {
    try {
      await this.mergeBack(plan);
    } catch (e) {
      this.layers.log('Error', `${plan.vm.name}: the temporary layers of a failed backup could not be merged back: ${(e as Error).message}; the next start tries again`, objectOf(plan.vm));
      return;
    }
    if (!fs.existsSync(path.join(plan.folder, MANIFEST))) await fs.promises.rm(plan.folder, { recursive: true, force: true });
    this.store.deleteBackup(plan.id);
  }

  /** The backup sets under `folder` (the folder itself, its VMs' folders and their sets), newest first. */
  list(folder: string): ListedBackup[] {
    const found: ListedBackup[] = [];
    for (const dir of [folder, ...subfolders(folder), ...subfolders(folder).flatMap(subfolders)]) {
      const manifest = readManifest(dir);
      if (!manifest) continue;
      found.push({
        folder: dir, id: manifest.id, vm: manifest.vm, created: manifest.created, kind: manifest.kind,
        parent: manifest.parent ? path.resolve(dir, manifest.parent.folder) : null, consistency: manifest.consistency, running: manifest.running,
        includesMemory: manifest.files.some((f) => f.role === 'memory'), bytes: manifest.files.reduce((n, f) => n + f.bytes, 0),
      });
    }
    return found.sort((a, b) => b.created.localeCompare(a.created));
  }

  /**
   * Registers a new VM from a backup set (full, or incremental with its chain of parents):
   * every file's SHA-256 checked first, then each disk flattened into the new VM's folder.
   * The new VM has a new id and new dynamic MAC addresses; it is turned off.
   */
  async restore(setFolder: string, target: { name: string; folder: string; macsInUse: Set<string>; networkKnown: (id: string) => boolean }, onProgress: OnProgress = () => {}): Promise<VmRecord> {
    const chain = backupChain(setFolder);
    const all = chain.flatMap(({ manifest, folder }) => manifest.files.map((f) => ({ folder, file: f })));
    const total = all.reduce((n, { file }) => n + file.bytes, 0) || 1;
    let checked = 0;
    for (const { folder, file } of all) {
      const full = path.join(folder, file.name);
      if (!fs.existsSync(full)) throw new ApiError('VM_E_BACKUP_INVALID', `${full}, which the manifest of ${folder} lists, is missing`);
      const { sha256 } = await runDiskJob('sha256', { file: full }, { onProgress: (d) => onProgress(((checked + d) / total) * 50, 'checking the SHA-256 of each file', checked + d) });
      if (sha256 !== file.sha256) throw new ApiError('VM_E_BACKUP_INVALID', `${full} has the SHA-256 ${sha256}, not the ${file.sha256} its manifest records`);
      checked += file.bytes;
    }
    const newest = chain[0];
    const vmcFile = newest.manifest.files.find((f) => f.role === 'config');
    if (!vmcFile) throw new ApiError('VM_E_BACKUP_INVALID', `the manifest of ${newest.folder} lists no .vmc`);
    const document = JSON.parse(await fs.promises.readFile(path.join(newest.folder, vmcFile.name), 'utf8')) as VmConfig;
    const vmcPath = path.join(target.folder, `${target.name}.vmc`);
    if (fs.existsSync(vmcPath)) throw new ApiError('VM_E_FILE_EXISTS', `${vmcPath} already exists; restore under another name`);
    await fs.promises.mkdir(target.folder, { recursive: true });
    const disks = newest.manifest.files.filter((f) => f.role === 'disk');
    const paths = new Map<string, string>();
    for (const [i, disk] of disks.entries()) {
      const file = path.join(target.folder, `${target.name}_${disk.slot}.vhd`);
      await runDiskJob('convertDisk', { source: path.join(newest.folder, disk.name), target: file, type: 'dynamic' },
        { onProgress: (d, t) => onProgress(50 + ((i + (t ? d / t : 0)) / disks.length) * 50, 'writing the disks', d) });
      paths.set(disk.slot!, file);
    }
    const macs = target.macsInUse;
    const config = parseVmConfig({
      ...document, id: randomUUID(), name: target.name, savedState: `${target.name}.vsv`,
      networkAdapters: document.networkAdapters.map((a) => {
        const mac = randomMac(macs);
        macs.add(mac);
        return { ...a, mac, dynamicMac: true, network: a.network && target.networkKnown(a.network) ? a.network : null };
      }),
      ide: document.ide.map((d) => (d.type === 'HardDisk' ? { ...d, path: paths.get(`ide${d.channel}-${d.device}`) ?? d.path } : d)),
      scsi: document.scsi.map((a, i) => ({ ...a, disks: a.disks.map((d) => ({ ...d, path: paths.get(`scsi${i}-${d.target}`) ?? d.path })) })),
    }, target.folder);
    await writeVmc(vmcPath, config);
    return this.machines.register(vmcPath);
  }
}

/** The set at `folder` and the sets it builds on, newest first; VM_E_BACKUP_INVALID when one is missing or unreadable. */
export function backupChain(folder: string): { manifest: Manifest; folder: string }[] {
  const chain: { manifest: Manifest; folder: string }[] = [];
  let at: string | null = folder;
  while (at) {
    const manifest = readManifest(at);
    if (!manifest) throw new ApiError('VM_E_BACKUP_INVALID', `${at} holds no ${MANIFEST} of a finished vserver backup`);
    if (chain.some((c) => c.manifest.id === manifest.id) || chain.length > 1000) throw new ApiError('VM_E_BACKUP_INVALID', `the backups under ${folder} name each other in a circle`);
    const previous = chain.at(-1);
    if (previous && previous.manifest.parent?.id !== manifest.id) throw new ApiError('VM_E_BACKUP_INVALID', `${at} is not the backup ${previous.manifest.parent?.id ?? ''} that ${previous.folder} builds on`);
    chain.push({ manifest, folder: at });
    at = manifest.parent ? path.resolve(at, manifest.parent.folder) : null;
  }
  return chain;
}

export function readManifest(folder: string): Manifest | null {
  try {
    const manifest = JSON.parse(fs.readFileSync(path.join(folder, MANIFEST), 'utf8')) as Manifest;
    return manifest.format === FORMAT && manifest.version === 1 && Array.isArray(manifest.files) ? manifest : null;
  } catch {
    return null;
  }
}

/** The newest finished set of the VM in its backup folder, or null. */
function newestSet(vmFolder: string, vmId: string): { manifest: Manifest; folder: string } | null {
  const sets = subfolders(vmFolder).map((folder) => ({ folder, manifest: readManifest(folder) }))
    .filter((s): s is { folder: string; manifest: Manifest } => s.manifest?.vm.id === vmId);
  return sets.sort((a, b) => b.manifest.created.localeCompare(a.manifest.created))[0] ?? null;
}

function subfolders(folder: string): string[] {
  try {
    return fs.readdirSync(folder, { withFileTypes: true }).filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => path.join(folder, e.name));
  } catch {
    return [];
  }
}

function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._ -]/g, '_').replace(/^\.+/, '_');
}

/** A full file system anywhere in the work is VM_E_NO_SPACE. */
function noSpace(e: unknown): ApiError | null {
  const text = `${(e as { code?: string }).code ?? ''} ${(e as Error).message ?? ''}`;
  return /ENOSPC|no space left/i.test(text) ? new ApiError('VM_E_NO_SPACE', `the backup did not fit: ${(e as Error).message}; the unfinished backup was removed`) : null;
}

async function writeDurably(file: string, text: string): Promise<void> {
  const draft = draftOf(file);
  const handle = await fs.promises.open(draft, 'w');
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.promises.rename(draft, file);
}

