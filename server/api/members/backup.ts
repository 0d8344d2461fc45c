// The members of VirtualServer about backups (the VSS writer's job, done as a service):
// BackupVirtualMachines, RestoreVirtualMachine and ListBackups. The work is server/backups.ts's;
// docs/snapshots.md describes a backup set and its manifest.

import { backupChain } from '../../backups.js';
import { ApiError, invalidParams } from '../../errors.js';
import { boolean, field, integer, type InterfaceRecord, listOf, membersOf, object, oneOf, orNull, param, refsOf, string } from '../member-types.js';
import { ref } from '../../references.js';
import { path, VM_EXAMPLE } from './shared.js';

const { method, task } = membersOf<'VirtualServer'>(null);
const BACKUP_FOLDER_EXAMPLE = '/var/lib/vserver/backups/web/2026-12-05T10-00-00-000Z-3fa9c2d8';

export const backupMembers: InterfaceRecord['members'] = {
  BackupVirtualMachines: task('Backs the VMs up into path, running ones included: every running VM listed is held for one instant together (its disks switched to temporary layers, as a snapshot), then its disks are copied from that instant to standalone VHDs while the guests run on, and the temporary layers merged away. Each VM gets a set PATH/NAME/TIME-ID/ with its disks, its .vmc, its memory when asked, and manifest.json (every file\'s size and SHA-256, the consistency, the time). With incremental, only the blocks written since the VM\'s newest set in path are copied, as differencing VHDs whose parent is that set\'s; where that cannot be (no earlier set, an unsure change map) the backup is full and its result says why. The task\'s result lists the sets.', 'change',
    {
      vms: param(refsOf('VirtualMachine'), 'The VMs; the caller needs the read right on each.'),
      path: path('The backup folder (made if missing).'),
      incremental: param(boolean, 'Copy only what changed since the newest set of each VM in path.', true),
      includeMemory: param(boolean, 'Save each running VM\'s memory too.', true),
    },
    { vms: [VM_EXAMPLE], path: 'backups' },
    async (call) => {
      const { services, params, principal } = call;
      const folder = await services.files.run({ op: 'resolve', input: params.path, options: { kind: 'backup folder' } });
      if (!params.vms.length) throw invalidParams('"vms" is empty: name at least one VM to back up', { param: 'vms' });
      for (const vm of params.vms) {
        if (!services.access.canRead(principal, `VirtualMachine/${vm.id}`)) throw new ApiError('VM_E_ACCESS_DENIED', `${principal.user} may not read the VM ${vm.name}, so may not back it up`);
      }
      const names = params.vms.map((vm) => vm.name).join(', ');
      const started = services.tasks.start(`Back up ${names} to ${folder}`, params.vms.length === 1 ? `VirtualMachine/${params.vms[0].id}` : null, principal.user, {},
        async (t) => ({ backups: await services.backups.backup({ vms: params.vms, folder, incremental: params.incremental ?? false, includeMemory: params.includeMemory ?? false }, (p, phase, bytes) => t.progress(p, phase, bytes)) }));
      return ref('Task', started.id);
    }, ['VM_E_BUSY', 'VM_E_UNDO_AND_SNAPSHOTS', 'VM_E_NO_SPACE']),
  RestoreVirtualMachine: task('Registers a new VM from a backup set (a full one, or an incremental one with the sets it builds on), after checking the SHA-256 of every file of the chain: each disk is written whole into the new VM\'s folder (NAME/ under the first storage root), and the VM gets a new id and new dynamic MAC addresses. It is turned off. The task\'s result is the VM.', 'change',
    {
      path: path('The backup set\'s folder (the one holding manifest.json).'),
      name: param({ type: 'string', maxLength: 64 }, 'The new VM\'s name; the backed-up VM\'s when omitted (refused while that name is in use).', true),
    },
    { path: 'backups/web/2026-12-05T10-00-00-000Z-3fa9c2d8', name: 'web-restored' },
    async (call) => {
      const { services, params } = call;
      const folder = await services.files.run({ op: 'resolve', input: params.path, options: { mustExist: true, kind: 'backup set' } });
      const [newest] = backupChain(folder);
      const name = params.name ?? newest.manifest.vm.name;
      const other = services.machines.findByName(name);
      if (other) throw new ApiError('VM_E_NAME_IN_USE', `a virtual machine named ${other.name} already exists; restore under another name`);
      const target = await services.files.run({ op: 'resolve', input: name.replace(/[^A-Za-z0-9._ -]/g, '_').replace(/^\.+/, '_'), options: { kind: 'VM folder' } });
      const started = services.tasks.start(`Restore ${name} from ${folder}`, null, call.principal.user, {}, async (t) => {
        const vm = await services.backups.restore(folder, { name, folder: target, macsInUse: services.networks.macsInUse(), networkKnown: (id) => services.networks.list().some((n) => n.id === id) },
          (p, phase, bytes) => t.progress(p, phase, bytes));
        await services.networks.settleMacClashes(vm);
        return ref('VirtualMachine', vm.id);
      });
      return ref('Task', started.id);
    }, ['VM_E_BACKUP_INVALID', 'VM_E_NAME_IN_USE', 'VM_E_FILE_EXISTS', 'VM_E_NO_SPACE']),
  ListBackups: method('The backup sets in a folder (the folder itself, its VMs\' folders and their sets), newest first.', {
    params: { path: path('The backup folder.') },
    returns: listOf(object({
      folder: field(string, 'The set\'s folder'), id: field(string, 'Its id'), vm: field(object({ id: field(string, 'The VM\'s id'), name: field(string, 'Its name then') }), 'The VM backed up'),
      created: field(string, 'When, ISO 8601'), kind: field(oneOf(['full', 'incremental']), 'Full, or the blocks changed since its parent'),
      parent: field(orNull(string), 'The folder of the set an incremental one builds on'), consistency: field(string, 'CrashConsistent or FileSystemConsistent'),
      running: field(boolean, 'Whether the VM ran during the backup'), includesMemory: field(boolean, 'Whether the set holds its memory'), bytes: field(integer, 'The size of its files'),
    })),
    right: 'read', errors: ['VM_E_FILE_NOT_FOUND'],
    example: { params: { path: 'backups' }, result: [{ folder: BACKUP_FOLDER_EXAMPLE, id: '3fa9c2d8-1b7e-4c5d-9e8f-0a1b2c3d4e5f', vm: { id: VM_EXAMPLE.slice('VirtualMachine/'.length), name: 'web' }, created: '2026-12-05T10:00:00.000Z', kind: 'full', parent: null, consistency: 'CrashConsistent', running: true, includesMemory: false, bytes: 1073741824 }] },
    handler: async ({ services, params }) => services.backups.list(await services.files.run({ op: 'resolve', input: params.path, options: { mustExist: true, kind: 'backup folder' } })),
  }),
};
