// At vserverd's start, after the workers are reattached and before any VM is turned on: what a
// kill -9 left half done in the VMs' layers is finished or undone (docs/snapshots.md, "What a
// crash leaves behind"). Each repair is written to the event log.
//   - a snapshot row 'creating': finished when the worker's status.json shows the new tops (it
//     switched while vserverd was down), else its new files removed and the row dropped;
//   - a snapshot row 'deleting': the delete run again (each merge finds what is done);
//   - a backup row: its temporary tops committed back into the VM's tops, its unfinished set removed;
//   - files in a VM's Snapshots folder the catalog does not hold and no worker serves: removed.

import fs from 'node:fs';
import path from 'node:path';
import type { Backups } from './backups.js';
import { type DiskLayers, objectOf } from './disk-layers.js';
import { recordedTops, type Snapshots, snapshotsFolder } from './snapshots.js';

export async function recoverLayers(layers: DiskLayers, snapshots: Snapshots, backups: Backups): Promise<void> {
  const { store, machines, log } = layers;
  for (const s of store.unsettledSnapshots()) {
    const vm = machines.get(s.vmId);
    if (!vm) continue;
    try {
      if (s.state === 'creating') {
        const outcome = await snapshots.settleCreating(s);
        log('Information', `${vm.name}: the snapshot ${s.name}, cut short by a stop of vserverd, was ${outcome === 'finished' ? 'finished (its worker had switched the disks)' : 'undone (its disks had not been switched)'}`, objectOf(vm));
      } else if (s.state === 'deleting') {
        await layers.exclusive(vm.id, () => snapshots.finishDelete(vm, s));
        log('Information', `${vm.name}: the delete of the snapshot ${s.name}, cut short by a stop of vserverd, was finished`, objectOf(vm));
      }
    } catch (e) {
      log('Error', `${vm.name}: the snapshot ${s.name} left ${s.state} by a stop of vserverd could not be settled: ${(e as Error).message}`, objectOf(vm));
    }
  }
  for (const b of store.backups()) {
    const vm = machines.get(b.vmId);
    if (!vm) {
      store.deleteBackup(b.id);
      continue;
    }
    await layers.exclusive(vm.id, () => backups.abandon({ vm, id: b.id, folder: b.folder, sources: layers.tops(vm), temporary: b.temporaryTops ?? [] }));
    log('Information', `${vm.name}: the backup into ${b.folder}, cut short by a stop of vserverd, was abandoned (its temporary layers merged back)`, objectOf(vm));
  }
  for (const vm of machines.list()) {
    const folder = snapshotsFolder(vm);
    let names: string[];
    try {
      names = fs.readdirSync(folder);
    } catch {
      continue;
    }
    const held = snapshots.heldFiles(vm);
    const served = new Set((recordedTops(machines.status(vm.id)) ?? []).map((t) => t.file));
    for (const name of names) {
      const file = path.join(folder, name);
      if (held.has(file) || served.has(file) || !/\.(vhd|vsv)$/.test(name)) continue;
      fs.rmSync(file, { force: true });
      log('Information', `${vm.name}: removed ${file}, a layer no snapshot holds (left by a stop of vserverd)`, objectOf(vm));
    }
  }
}
