// What vhdmount has set up, one record per mount, kept under a state folder so that
// "--unmount" and "--list" (and a rerun after an interruption) know every resource to undo.
// Each record is rewritten whole (write, then rename) after every step.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export type MountMode = 'undo' | 'direct' | 'read-only';
export type MountMethod = 'fuse' | 'kernel';

export interface MountRecord {
  id: string;
  /** The VHD, absolute. */
  file: string;
  mountPoint: string;
  mode: MountMode;
  /** The partition mounted, or null for a disk without a partition table. */
  partition: number | null;
  method: MountMethod;
  /** mounting -> mounted -> unmounting; a record left in another stage than mounted was interrupted. */
  stage: 'mounting' | 'mounted' | 'unmounting';
  created: string;
  /** The differencing disk that takes the writes in undo mode. */
  undoFile?: string;
  socket: string;
  serverPid?: number;
  /** FUSE method: the folder nbdfuse mounts, its process, and the whole-disk file it shows. */
  fuseDir?: string;
  fusePid?: number;
  /** Kernel method: the /dev/nbdN in use. */
  nbdDevice?: string;
  /** The whole disk as the host sees it (the FUSE file or the nbd device). */
  diskPath?: string;
  loopDevice?: string;
}

export function stateDir(): string {
  return process.env.VHDMOUNT_STATE_DIR ?? '/run/vserver/vhdmount';
}

export function recordDir(record: Pick<MountRecord, 'id'>): string {
  return path.join(stateDir(), record.id);
}

export function newRecord(fields: Omit<MountRecord, 'id' | 'stage' | 'created' | 'socket'>): MountRecord {
  const id = crypto.randomBytes(6).toString('hex');
  const dir = path.join(stateDir(), id);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const record: MountRecord = { ...fields, id, stage: 'mounting', created: new Date().toISOString(), socket: path.join(dir, 'nbd.sock') };
  saveRecord(record);
  return record;
}

export function saveRecord(record: MountRecord): void {
  const file = path.join(recordDir(record), 'record.json');
  fs.writeFileSync(`${file}.tmp`, `${JSON.stringify(record, null, 2)}\n`);
  fs.renameSync(`${file}.tmp`, file);
}

export function removeRecord(record: MountRecord): void {
  fs.rmSync(recordDir(record), { recursive: true, force: true });
}

export function allRecords(): MountRecord[] {
  let ids: string[];
  try {
    ids = fs.readdirSync(stateDir());
  } catch {
    return [];
  }
  const records: MountRecord[] = [];
  for (const id of ids) {
    try {
      records.push(JSON.parse(fs.readFileSync(path.join(stateDir(), id, 'record.json'), 'utf8')) as MountRecord);
    } catch {
      // Not a record (yet): a folder being created this instant, or one interrupted before its first step.
    }
  }
  return records.sort((a, b) => a.created.localeCompare(b.created));
}
