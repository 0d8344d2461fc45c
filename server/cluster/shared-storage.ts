// Whether another host could start a VM: its .vmc and every disk file of its chains must lie in
// a shared storage folder (the same path on every host). VM_E_NOT_SHARED_STORAGE names the first that does not.

import path from 'node:path';
import { inspectDisk } from '../../storage/vhd/index.js';
import { ApiError } from '../errors.js';
import type { VmRecord } from '../vm-record.js';

function inside(file: string, folders: string[]): boolean {
  const resolved = path.resolve(file);
  return folders.some((folder) => resolved === folder || resolved.startsWith(folder.endsWith(path.sep) ? folder : folder + path.sep));
}

/** The VM's files another host would open: its .vmc, its saved state, then each disk and the parents of its chain. */
export function vmFiles(vm: VmRecord): string[] {
  const disks = [...vm.config.ide.flatMap((d) => (d.type === 'HardDisk' ? [d.path] : [])), ...vm.config.scsi.flatMap((a) => a.disks.map((d) => d.path))];
  const files = [vm.vmcPath, vm.config.savedState];
  for (const disk of disks) {
    files.push(disk);
    try {
      files.push(...inspectDisk(disk).chain.map((d) => d.file));
    } catch {
      // A disk that cannot be read now (missing, locked by its running worker) is judged by its own path.
    }
  }
  return [...new Set(files)];
}

export function refuseUnlessShared(vm: VmRecord, sharedStorage: string[]): void {
  const outside = vmFiles(vm).find((file) => !inside(file, sharedStorage));
  if (outside === undefined) return;
  throw new ApiError('VM_E_NOT_SHARED_STORAGE', sharedStorage.length
    ? `${vm.name} cannot be highly available: ${outside} is not under the shared storage (${sharedStorage.join(', ')})`
    : `${vm.name} cannot be highly available: this host has no shared storage (--shared-storage), and ${outside} is on its own storage`, { file: outside });
}
