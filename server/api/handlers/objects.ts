// The members of Task, HardDisk and Security.

import path from 'node:path';
import type { DiskInfo } from '../../../storage/vhd/index.js';
import { ROLES } from '../schema.js';
import type { Right } from '../schema-types.js';
import type { TaskState } from '../../tasks.js';
import type { Call } from '../dispatch.js';
import { ApiError } from '../errors.js';
import { guardOf, inspectedDisk, ref, type SecurityObject } from '../objects.js';
import { diskTask, type Handlers, newDiskFile, refuseInUse, vmsWithDisk } from './types.js';

const MB = 1024 * 1024;
const TYPE_NAMES = { dynamic: 'Dynamic', fixed: 'Fixed', differencing: 'Differencing' } as const;

const task = (call: Call): TaskState => call.self as TaskState;
const disk = (call: Call): string => call.self as string;
/** The disk inspected off the event loop, its chain checked against the storage roots. */
const inspect = (call: Call): Promise<DiskInfo> => inspectedDisk(call.services, disk(call));

export const objectHandlers: Handlers = {
  'Task.get_Description': (call) => task(call).description,
  'Task.get_PercentCompleted': (call) => task(call).percent,
  'Task.get_IsComplete': (call) => task(call).finished !== null,
  'Task.get_IsCancelable': (call) => task(call).cancelable && task(call).finished === null,
  'Task.get_Result': (call) => task(call).result,
  'Task.get_Error': (call) => task(call).error,
  'Task.get_Log': (call) => task(call).log,
  'Task.get_Object': (call) => task(call).object,
  'Task.get_Started': (call) => task(call).started,
  'Task.WaitForCompletion': (call) => call.services.tasks.wait(task(call).id, call.params.timeoutMs as number),
  'Task.Cancel': (call) => call.services.tasks.cancel(task(call).id),

  'HardDisk.get_File': (call) => disk(call),
  'HardDisk.get_Type': async (call) => TYPE_NAMES[(await inspect(call)).type],
  'HardDisk.get_SizeInGuest': async (call) => (await inspect(call)).sizeInGuest,
  'HardDisk.get_SizeOnHost': async (call) => (await inspect(call)).sizeOnHost,
  'HardDisk.get_HostFreeDiskSpace': (call) => call.services.files.run({ op: 'free-space', dir: path.dirname(disk(call)) }),
  'HardDisk.get_Parent': async (call) => {
    const parent = (await inspect(call)).parent;
    return parent ? ref('HardDisk', parent.file) : null;
  },
  'HardDisk.get_Info': (call) => inspect(call),
  // The operations open the whole chain: it must be inside the roots and made of regular files.
  'HardDisk.Compact': async (call) => {
    await inspect(call);
    refuseInUse(call, disk(call));
    return diskTask(call, call.thisRef, `Compact ${disk(call)}`, 'compactDisk', { file: disk(call) });
  },
  'HardDisk.Convert': async (call) => {
    await inspect(call);
    const target = await newDiskFile(call, call.params.path);
    const type = call.params.type === 'Fixed' ? 'fixed' : 'dynamic';
    return diskTask(call, call.thisRef, `Convert ${disk(call)} to a ${type} disk ${target}`, 'convertDisk', { source: disk(call), target, type },
      () => ref('HardDisk', target));
  },
  'HardDisk.Merge': async (call) => {
    const info = await inspect(call);
    if (!info.parent) throw new ApiError('VHD_E_WRONG_TYPE', `${disk(call)} is a ${info.type} disk; only a differencing disk can be merged`);
    // Merging deletes the child: a VM that has it attached, even turned off, would lose its disk.
    const holder = vmsWithDisk(call, disk(call))[0];
    if (holder) throw new ApiError('VM_E_DRIVE_IN_USE', `${disk(call)} is attached to ${holder.name}; remove that connection before merging the disk away`);
    refuseInUse(call, disk(call));
    refuseInUse(call, info.parent.file);
    return diskTask(call, call.thisRef, `Merge ${disk(call)} into ${info.parent.file}`, 'mergeIntoParent', { child: disk(call) },
      () => ref('HardDisk', info.parent!.file));
  },
  'HardDisk.MergeTo': async (call) => {
    await inspect(call);
    const target = await newDiskFile(call, call.params.path);
    return diskTask(call, call.thisRef, `Merge ${disk(call)} into a new disk ${target}`, 'mergeToNewDisk', { child: disk(call), target },
      () => ref('HardDisk', target));
  },
  'HardDisk.Expand': async (call) => {
    await inspect(call);
    refuseInUse(call, disk(call));
    return diskTask(call, call.thisRef, `Expand ${disk(call)} to ${String(call.params.sizeMB)} MB`, 'expandDisk',
      { file: disk(call), size: (call.params.sizeMB as number) * MB });
  },

  'Security.get_AccessRights': (call) => call.services.access.entries((call.self as SecurityObject).object),
  'Security.get_CurrentUserAccessRights': (call) => [...call.services.access.rightsOn(call.principal, guardOf((call.self as SecurityObject).object))],
  'Security.AddEntry': (call) => {
    const name = call.params.name as string;
    const role = /^role:(.+)$/.exec(name)?.[1];
    if (role ? !(ROLES as readonly string[]).includes(role) : !call.services.users.get(name)) {
      throw new ApiError('VM_E_USER_UNKNOWN', role ? `there is no role ${role} (${ROLES.join(', ')})` : `there is no user named ${name}`);
    }
    call.services.access.setEntry((call.self as SecurityObject).object, { name, type: call.params.type as 'Allowed' | 'Denied', rights: call.params.rights as Right[] });
  },
  'Security.RemoveEntry': (call) => call.services.access.removeEntry((call.self as SecurityObject).object, call.params.name as string),
};
