// HardDisk (IVMHardDisk), a VHD file, declared member by member with its handler. The
// operations run in disk jobs, each in a task, and refuse a disk that is in use.

import nodePath from 'node:path';
import { DEFAULT_DISK_SIZE } from '../../../storage/vhd/format.js';
import { sizeForRequest } from '../../../storage/vhd/geometry.js';
import type { DiskInfo } from '../../../storage/vhd/index.js';
import { ApiError } from '../../errors.js';
import { anyObject, type Call, integer, type InterfaceRecord, membersOf, oneOf, orNull, param, refOf, string } from '../member-types.js';
import { inspectedDisk } from '../objects.js';
import { ref } from '../../references.js';
import { DISK_TYPES, MAX_DISK_SIZE_MB } from '../vocabulary.js';
import { DISK_EXAMPLE, diskTask, newDiskFile, path, refuseInUse, vmsWithDisk } from './shared.js';

const MB = 1024 * 1024;
const TYPE_NAMES = { dynamic: 'Dynamic', fixed: 'Fixed', differencing: 'Differencing' } satisfies Record<DiskInfo['type'], (typeof DISK_TYPES)[number]>;
const { get, task } = membersOf<'HardDisk'>(DISK_EXAMPLE);
/** The disk inspected off the event loop, its chain checked against the storage roots. */
const inspect = ({ services, self }: Call<'HardDisk', unknown>): Promise<DiskInfo> => inspectedDisk(services, self);
/** The examples' disk is a default one: its size in the guest, the engine's rounding included. */
const DEFAULT_DISK_BYTES = sizeForRequest(DEFAULT_DISK_SIZE).size;

export const hardDisk: InterfaceRecord = {
  doc: 'A VHD file (IVMHardDisk). The operations return tasks and refuse a disk a running VM uses.',
  ref: 'HardDisk/<absolute path>',
  members: {
    get_File: get('The file.', string, '/var/lib/vserver/disks/web.vhd', ({ self }) => self),
    get_Type: get('Dynamic, Fixed or Differencing.', oneOf(DISK_TYPES), 'Dynamic', async (call) => TYPE_NAMES[(await inspect(call)).type]),
    get_SizeInGuest: get('The size the guest sees, in bytes.', integer, DEFAULT_DISK_BYTES, async (call) => (await inspect(call)).sizeInGuest),
    get_SizeOnHost: get('The file\'s size, in bytes.', integer, 42496, async (call) => (await inspect(call)).sizeOnHost),
    get_HostFreeDiskSpace: get('Free bytes on the host file system holding it.', integer, 53687091200,
      ({ services, self }) => services.files.run({ op: 'free-space', dir: nodePath.dirname(self) })),
    get_Parent: get('The parent of a differencing disk, or null.', orNull(refOf('HardDisk')), null, async (call) => {
      const parent = (await inspect(call)).parent;
      return parent ? ref('HardDisk', parent.file) : null;
    }),
    get_Info: get('Everything the VHD engine reports: geometry, unique id, blocks, the parent chain.', anyObject, { type: 'Dynamic', sizeInGuest: DEFAULT_DISK_BYTES }, (call) => inspect(call)),
    // The operations open the whole chain: it must be inside the roots and made of regular files.
    Compact: task('Compacts a dynamic disk: blocks of zeros are dropped.', 'change', {}, {}, async (call) => {
      await inspect(call);
      refuseInUse(call, call.self);
      return diskTask(call, call.thisRef, `Compact ${call.self}`, 'compactDisk', { file: call.self });
    }, ['VHD_E_WRONG_TYPE', 'VM_E_DRIVE_IN_USE']),
    Convert: task('Writes a copy of the disk of another type (Dynamic or Fixed) at path.', 'change',
      { path: path('The new file.'), type: param(oneOf(['Dynamic', 'Fixed']), 'The new type.') }, { path: 'disks/web-fixed.vhd', type: 'Fixed' },
      async (call) => {
        await inspect(call);
        const target = await newDiskFile(call, call.params.path);
        const type = call.params.type === 'Fixed' ? 'fixed' : 'dynamic';
        return diskTask(call, call.thisRef, `Convert ${call.self} to a ${type} disk ${target}`, 'convertDisk', { source: call.self, target, type },
          () => ref('HardDisk', target));
      }, ['VHD_E_EXISTS']),
    Merge: task('Merges a differencing disk into its parent and deletes it; neither may be in use, and no VM may have the child attached.', 'change', {}, {},
      async (call) => {
        const disk = call.self;
        const { parent, type } = await inspect(call);
        if (!parent) throw new ApiError('VHD_E_WRONG_TYPE', `${disk} is a ${type} disk; only a differencing disk can be merged`);
        // Merging deletes the child: a VM that has it attached, even turned off, would lose its disk.
        const holder = vmsWithDisk(call, disk)[0];
        if (holder) throw new ApiError('VM_E_DRIVE_IN_USE', `${disk} is attached to ${holder.name}; remove that connection before merging the disk away`);
        refuseInUse(call, disk);
        refuseInUse(call, parent.file);
        return diskTask(call, call.thisRef, `Merge ${disk} into ${parent.file}`, 'mergeIntoParent', { child: disk }, () => ref('HardDisk', parent.file));
      }, ['VHD_E_WRONG_TYPE', 'VM_E_DRIVE_IN_USE']),
    MergeTo: task('Merges a differencing disk and its parents into a new disk at path.', 'change', { path: path('The new file.') }, { path: 'disks/web-flat.vhd' },
      async (call) => {
        await inspect(call);
        const target = await newDiskFile(call, call.params.path);
        return diskTask(call, call.thisRef, `Merge ${call.self} into a new disk ${target}`, 'mergeToNewDisk', { child: call.self, target }, () => ref('HardDisk', target));
      }, ['VHD_E_WRONG_TYPE', 'VHD_E_EXISTS']),
    Expand: task('Grows the disk to sizeMB.', 'change', { sizeMB: param({ type: 'integer', min: 1, max: MAX_DISK_SIZE_MB }, 'The new size in MB.') }, { sizeMB: 32768 },
      async (call) => {
        await inspect(call);
        refuseInUse(call, call.self);
        return diskTask(call, call.thisRef, `Expand ${call.self} to ${call.params.sizeMB} MB`, 'expandDisk', { file: call.self, size: call.params.sizeMB * MB });
      }, ['VHD_E_SIZE_LIMIT', 'VM_E_DRIVE_IN_USE']),
  },
};
