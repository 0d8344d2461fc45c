// The catalog's record of a VM's disk layers (docs/snapshots.md): the current top of each disk
// slot (the file the running VM writes), the snapshot records with the read-only layers each
// left, and the backups in progress. Only rows: the files are snapshots.ts's and backups.ts's.
//
// A snapshot row goes 'creating' -> 'ready' -> 'deleting' -> gone. A row seen 'creating' or
// 'deleting' at start is one a kill cut short; layer-recovery.ts finishes or undoes it.

import { type Catalog, prepared } from './catalog/database.js';
import type { MEMORY_METHODS, SNAPSHOT_CONSISTENCIES } from './api/vocabulary.js';

export interface SlotFile { slot: string; file: string }
export type SnapshotState = 'creating' | 'ready' | 'deleting';
export type Consistency = (typeof SNAPSHOT_CONSISTENCIES)[number];
export type MemoryMethod = (typeof MEMORY_METHODS)[number];

export interface SnapshotRecord {
  id: string;
  vmId: string;
  name: string;
  description: string;
  /** The snapshot that was current when this one was taken, or null for a root. */
  parent: string | null;
  created: string;
  state: SnapshotState;
  /** The files that became read-only at this snapshot (the tops before it), per slot: what Revert returns to. */
  layers: SlotFile[];
  /** The files that became the tops at this snapshot: known before the switch, so that a kill can be settled. */
  newTops: SlotFile[];
  memoryFile: string | null;
  memoryMethod: MemoryMethod | null;
  consistency: Consistency;
}

export type BackupState = 'copying' | 'merging';
export interface BackupRecord { id: string; vmId: string; folder: string; state: BackupState; created: string; temporaryTops: SlotFile[] | null }

interface SnapshotRow {
  id: string; vm_id: string; name: string; description: string; parent: string | null; created: string; state: SnapshotState;
  layers: string; new_tops: string; memory_file: string | null; memory_method: MemoryMethod | null; consistency: Consistency;
}
interface BackupRow { id: string; vm_id: string; folder: string; state: BackupState; created: string; temporary_tops: string | null }

export class LayerStore {
  constructor(readonly db: Catalog) {}

  /** The current top of each slot that has one other than the configured disk. */
  tops(vmId: string): Map<string, string> {
    const rows = prepared(this.db, 'SELECT slot, file FROM disk_tops WHERE vm_id = ?').all(vmId) as SlotFile[];
    return new Map(rows.map((r) => [r.slot, r.file]));
  }

  setTops(vmId: string, tops: readonly SlotFile[]): void {
    for (const { slot, file } of tops) {
      prepared(this.db, 'INSERT INTO disk_tops (vm_id, slot, file) VALUES (?, ?, ?) ON CONFLICT (vm_id, slot) DO UPDATE SET file = excluded.file').run(vmId, slot, file);
    }
  }

  clearTops(vmId: string): void {
    prepared(this.db, 'DELETE FROM disk_tops WHERE vm_id = ?').run(vmId);
  }

  currentSnapshot(vmId: string): string | null {
    const row = prepared(this.db, 'SELECT current_snapshot AS id FROM vms WHERE id = ?').get(vmId) as { id: string | null } | undefined;
    return row?.id ?? null;
  }

  setCurrentSnapshot(vmId: string, snapshotId: string | null): void {
    prepared(this.db, 'UPDATE vms SET current_snapshot = ? WHERE id = ?').run(snapshotId, vmId);
  }

  snapshots(vmId: string): SnapshotRecord[] {
    return (prepared(this.db, 'SELECT * FROM snapshots WHERE vm_id = ? ORDER BY created, id').all(vmId) as SnapshotRow[]).map(fromSnapshotRow);
  }

  /** Every snapshot row of every VM in a state a kill can leave behind. */
  unsettledSnapshots(): SnapshotRecord[] {
    return (prepared(this.db, 'SELECT * FROM snapshots WHERE state != \'ready\' ORDER BY created').all() as SnapshotRow[]).map(fromSnapshotRow);
  }

  snapshot(vmId: string, id: string): SnapshotRecord | null {
    const row = prepared(this.db, 'SELECT * FROM snapshots WHERE vm_id = ? AND id = ?').get(vmId, id) as SnapshotRow | undefined;
    return row ? fromSnapshotRow(row) : null;
  }

  snapshotByName(vmId: string, name: string): SnapshotRecord | null {
    const row = prepared(this.db, 'SELECT * FROM snapshots WHERE vm_id = ? AND name = ?').get(vmId, name) as SnapshotRow | undefined;
    return row ? fromSnapshotRow(row) : null;
  }

  insertSnapshot(s: SnapshotRecord): void {
    prepared(this.db, `INSERT INTO snapshots (id, vm_id, name, description, parent, created, state, layers, new_tops, memory_file, memory_method, consistency)
      VALUES (@id, @vmId, @name, @description, @parent, @created, @state, @layers, @newTops, @memoryFile, @memoryMethod, @consistency)`)
      .run({ ...s, layers: JSON.stringify(s.layers), newTops: JSON.stringify(s.newTops) });
  }

  updateSnapshot(id: string, change: Partial<Pick<SnapshotRecord, 'state' | 'layers' | 'description' | 'memoryFile' | 'memoryMethod' | 'parent'>>): void {
    const columns: Record<string, unknown> = {
      state: change.state, layers: change.layers && JSON.stringify(change.layers), description: change.description,
      memory_file: change.memoryFile, memory_method: change.memoryMethod, parent: change.parent,
    };
    for (const [column, value] of Object.entries(columns)) {
      if (value !== undefined) prepared(this.db, `UPDATE snapshots SET ${column} = ? WHERE id = ?`).run(value, id);
    }
    // null is a value for these two (a memory file gone, a root): undefined means "unchanged".
    if (change.parent === null) prepared(this.db, 'UPDATE snapshots SET parent = NULL WHERE id = ?').run(id);
    if (change.memoryFile === null) prepared(this.db, 'UPDATE snapshots SET memory_file = NULL, memory_method = NULL WHERE id = ?').run(id);
  }

  deleteSnapshot(id: string): void {
    prepared(this.db, 'DELETE FROM snapshots WHERE id = ?').run(id);
  }

  backups(): BackupRecord[] {
    return (prepared(this.db, 'SELECT * FROM backups ORDER BY created').all() as BackupRow[]).map(fromBackupRow);
  }

  insertBackup(b: BackupRecord): void {
    prepared(this.db, 'INSERT INTO backups (id, vm_id, folder, state, created, temporary_tops) VALUES (?, ?, ?, ?, ?, ?)')
      .run(b.id, b.vmId, b.folder, b.state, b.created, b.temporaryTops ? JSON.stringify(b.temporaryTops) : null);
  }

  updateBackup(id: string, state: BackupState, temporaryTops: SlotFile[] | null): void {
    prepared(this.db, 'UPDATE backups SET state = ?, temporary_tops = ? WHERE id = ?').run(state, temporaryTops ? JSON.stringify(temporaryTops) : null, id);
  }

  deleteBackup(id: string): void {
    prepared(this.db, 'DELETE FROM backups WHERE id = ?').run(id);
  }

  /** Runs `work` in one catalog transaction: a kill leaves all of it or none. */
  atomically(work: () => void): void {
    this.db.transaction(work)();
  }
}

function fromSnapshotRow(r: SnapshotRow): SnapshotRecord {
  return {
    id: r.id, vmId: r.vm_id, name: r.name, description: r.description, parent: r.parent, created: r.created, state: r.state,
    layers: JSON.parse(r.layers) as SlotFile[], newTops: JSON.parse(r.new_tops) as SlotFile[], memoryFile: r.memory_file,
    memoryMethod: r.memory_method, consistency: r.consistency,
  };
}

function fromBackupRow(r: BackupRow): BackupRecord {
  return { id: r.id, vmId: r.vm_id, folder: r.folder, state: r.state, created: r.created, temporaryTops: r.temporary_tops ? JSON.parse(r.temporary_tops) as SlotFile[] : null };
}
