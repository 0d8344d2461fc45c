// VirtualServer (IVMVirtualServer), the root of the object model, declared member by member
// with its handler: the host, the profile's limits, the catalog of VMs, disk creation, tasks,
// the event log, users and tokens.

import { execFile } from 'node:child_process';
import os from 'node:os';
import { promisify } from 'node:util';
import { DEFAULT_DISK_SIZE } from '../../../storage/vhd/format.js';
import { probeEngine } from '../../../vmm/engine.js';
import { PROFILE, VIRTUAL_SERVER_LIMITS } from '../../../vmm/profile.js';
import { isActive } from '../../../vmm/state.js';
import { within } from '../../../host/time.js';
import { LOOKUP_MS } from '../../cluster/forward.js';
import { narrower } from '../../auth/users.js';
import type { DiskJobArgs } from '../../disk-jobs.js';
import { ApiError } from '../../errors.js';
import { boolean, type Call, field, integer, type InterfaceRecord, listOf, membersOf, nothing, object, oneOf, orNull, param, refOf, refsOf, string, TASK_EXAMPLE } from '../member-types.js';
import { inspectedDisk } from '../objects.js';
import { ref, type Reference, SERVER_REF } from '../../references.js';
import { EVENT_CATEGORIES, MAX_DISK_SIZE_MB, ROLES, SEVERITIES } from '../vocabulary.js';
import { NETWORK_KINDS } from '../../network-record.js';
import { backupMembers } from './backup.js';
import { serverClusterMembers } from './cluster.js';
import { DISK_EXAMPLE, diskTask, NETWORK_EXAMPLE, newDiskFile, path, refuseInUse, selfOrAdministrator, VM_EXAMPLE, VM_ID_EXAMPLE, vmsWithDisk } from './shared.js';

const MB = 1024 * 1024;
const { get, method, task } = membersOf<'VirtualServer'>(null);
type ServerCall = Call<'VirtualServer', unknown>;

let qemuVersion: Promise<string> | null = null;
/** QEMU's version, asked once and without blocking the event loop. */
function readQemuVersion(): Promise<string> {
  qemuVersion ??= promisify(execFile)('qemu-system-x86_64', ['--version'], { encoding: 'utf8', timeout: 10_000 })
    .then(({ stdout }) => /version (\S+)/.exec(stdout)?.[1] ?? 'not installed', () => 'not installed');
  return qemuVersion;
}

/** The VMs the cluster knows on any host (none when alone, or while etcd does not answer in LOOKUP_MS). */
async function knownVms(call: ServerCall): Promise<{ id: string; name: string }[]> {
  return call.services.cluster ? await within(call.services.cluster.knownVms(), LOOKUP_MS, 'etcd').catch(() => []) : [];
}

function canRead(call: ServerCall, object: string): boolean {
  return call.services.access.canRead(call.principal, object);
}

/** Creates a disk in a task (the disk job makes its folder first); the new disk's reference is the task's result. */
function creation<Op extends 'createDynamic' | 'createFixed' | 'createDifferencing'>(call: ServerCall, description: string, op: Op, args: DiskJobArgs<Op>): Reference {
  return diskTask(call, `HardDisk/${args.target}`, description, op, args, () => ref('HardDisk', args.target));
}

/** A property that reads one of the profile's limits. */
function limit(doc: string, name: keyof typeof VIRTUAL_SERVER_LIMITS) {
  return get(doc, integer, VIRTUAL_SERVER_LIMITS[name], () => VIRTUAL_SERVER_LIMITS[name]);
}

const diskSizeMB: { type: 'integer'; min: number; max: number } = { type: 'integer', min: 1, max: MAX_DISK_SIZE_MB };
const isoTime = (doc: string) => field(string, `${doc}, ISO 8601`);
const userField = { name: field(string, 'The user\'s name'), role: field(oneOf(ROLES), 'Administrator, Operator or Viewer') };

export const virtualServer: InterfaceRecord = {
  doc: 'The service itself (IVMVirtualServer): the root of the object model. Its members take no "this".',
  ref: 'VirtualServer',
  members: {
    get_Name: get('The host\'s name.', string, 'vhost1', ({ services }) => services.hostName),
    get_Version: get('vserver\'s version.', string, '0.1.0', ({ services }) => services.version),
    get_UpTime: get('Seconds since vserverd started.', integer, 3600, ({ services }) => Math.floor((Date.now() - services.startedAt) / 1000)),
    get_HostInfo: get('The host: processors, memory, operating system, and the execution engine VMs run on here with the reason it was chosen (KVM only where hardware virtualization is proven to work).',
      object({
        hostName: field(string, 'The host\'s name'), logicalProcessors: field(integer, 'Processors the host offers'),
        memoryMB: field(integer, 'The host\'s memory'), memoryAvailableMB: field(integer, 'Memory free now'),
        operatingSystem: field(string, 'Kernel name and release'), engine: field(oneOf(['kvm', 'tcg']), 'What VMs run on here'),
        engineReason: field(string, 'Why that engine'), qemuVersion: field(string, 'QEMU\'s version, or "not installed"'),
        networkInterfaces: field(listOf(object({
          name: field(string, 'The interface'), mac: field(string, 'Its MAC address'), up: field(boolean, 'Whether it is up'),
          addresses: field(listOf(string), 'Its IPv4 and IPv6 addresses, with prefix length'),
        })), 'The host\'s interfaces a host-connected network may be bridged to (vserver\'s own bridges and TAPs left out)'),
      }),
      { hostName: 'vhost1', logicalProcessors: 2, memoryMB: 24000, memoryAvailableMB: 20000, operatingSystem: 'Linux 6.1.0', engine: 'tcg', engineReason: 'the CPU has no hardware virtualization (no vmx or svm flag)', qemuVersion: '7.2.0',
        networkInterfaces: [{ name: 'eth0', mac: '52:54:00:12:34:56', up: true, addresses: ['192.168.1.10/24'] }] },
      async ({ services }) => {
        const [engine, version, networkInterfaces] = await Promise.all([probeEngine(), readQemuVersion(), services.networks.hostInterfaces()]);
        return {
          hostName: os.hostname(), logicalProcessors: os.availableParallelism(), memoryMB: Math.round(os.totalmem() / MB),
          memoryAvailableMB: Math.round(os.freemem() / MB), operatingSystem: `${os.type()} ${os.release()}`,
          engine: engine.engine, engineReason: engine.reason, qemuVersion: version, networkInterfaces,
        };
      }),
    get_MaximumMemoryPerVM: limit('The most memory a VM may have, in MB (3.6 GB).', 'MaximumMemoryPerVM'),
    get_MinimumMemoryPerVM: limit('The least memory a VM may have, in MB.', 'MinimumMemoryPerVM'),
    get_MaximumNumberOfProcessorsPerVM: limit(`Processors per VM: exactly ${PROFILE.processors}, Virtual Server's limit. It is not a setting: no member sets a VM's processor count, and a .vmc may state "processors": ${PROFILE.processors} but no other count (VM_E_CONFIG_INVALID).`, 'MaximumNumberOfProcessorsPerVM'),
    get_MaximumNetworkAdaptersPerVM: limit('Network adapters per VM.', 'MaximumNetworkAdaptersPerVM'),
    get_MaximumNumberOfIDEBuses: limit('IDE channels per VM, each with two devices.', 'MaximumNumberOfIDEBuses'),
    get_MaximumNumberOfSCSIControllers: limit('SCSI adapters per VM, each with seven disks.', 'MaximumNumberOfSCSIControllers'),
    get_MaximumSerialPortsPerVM: get('Serial ports per VM (COM1 is the serial console).', integer, PROFILE.serialPorts, () => PROFILE.serialPorts),
    get_MaximumParallelPortsPerVM: get('Parallel ports per VM.', integer, PROFILE.parallelPorts, () => PROFILE.parallelPorts),
    get_MaximumFloppyDrivesPerVM: get('Floppy drives per VM.', integer, PROFILE.floppyDrives, () => PROFILE.floppyDrives),
    get_StorageRoots: get('The folders every file path given to the API must lie in; the first is where relative paths start.', listOf(string), ['/var/lib/vserver'],
      ({ services }) => services.roots.roots),
    get_VirtualMachines: get('Every VM registered here that the caller may read; in a cluster, then every VM the cluster knows on other hosts (VirtualMachine.get_Host says where each runs; calls about them are forwarded there), read access judged by this host\'s roles and access entries.', refsOf('VirtualMachine'), [{ $ref: VM_EXAMPLE }],
      async (call) => {
        const here = call.services.machines.list().map((vm) => vm.id);
        // While etcd does not answer, the VMs registered here.
        const known = (await knownVms(call)).map((vm) => vm.id);
        const elsewhere = known.filter((id) => !here.includes(id)).sort();
        return [...here, ...elsewhere].filter((id) => canRead(call, `VirtualMachine/${id}`)).map((id) => ref('VirtualMachine', id));
      }),
    CreateVirtualMachine: method(`Creates a VM (${PROFILE.processors} processor, fixed; ${PROFILE.memoryMB.default} MB, no disks) and writes its configuration as NAME.vmc in its folder (PATH, or NAME/ under the first storage root).`, {
      params: { name: param({ type: 'string', maxLength: 64 }, 'The VM\'s name, unique on this host: no control characters, "/" or "\\", and not only dots.'), path: path('The folder for its files (NAME under the first storage root when omitted).', true) },
      returns: refOf('VirtualMachine'), right: 'change', errors: ['VM_E_NAME_IN_USE', 'VM_E_CONFIG_INVALID'],
      example: { params: { name: 'web' }, result: { $ref: VM_EXAMPLE } },
      handler: async ({ services, params }) => {
        const folder = await services.files.run({ op: 'resolve', input: params.path ?? safeFolderName(params.name), options: { kind: 'VM folder' } });
        return ref('VirtualMachine', (await services.machines.create(params.name, folder)).id);
      },
    }),
    RegisterVirtualMachine: method('Adds a VM from an existing .vmc (written by this or another host). An adapter whose dynamic MAC address another VM here holds gets a new one (its .vmc is rewritten); a static one another VM holds refuses the registration. An adapter attached to a network not registered here is attached to this host\'s network of the same name, or else left not connected (a Warning in the event log).', {
      params: { path: path('The .vmc file.') }, returns: refOf('VirtualMachine'), right: 'change',
      errors: ['VM_E_FILE_NOT_FOUND', 'VM_E_CONFIG_INVALID', 'VM_E_NAME_IN_USE', 'VM_E_VM_REGISTERED', 'VM_E_MAC_IN_USE'],
      example: { params: { path: 'web/web.vmc' }, result: { $ref: VM_EXAMPLE } },
      handler: async ({ services, params }) => {
        // A regular file: the catalog reads it at once, and a FIFO would never answer.
        const file = await services.files.run({ op: 'regular-file', input: params.path, kind: '.vmc file' });
        const vm = await services.machines.register(file);
        await services.networks.adoptRegistered(vm);
        return ref('VirtualMachine', vm.id);
      },
    }),
    UnregisterVirtualMachine: method('Removes a turned-off VM from the catalog and keeps its files.', {
      params: { vm: param(refOf('VirtualMachine'), 'The VM.') }, right: 'delete', rightOn: 'vm', errors: ['VM_E_VM_RUNNING'], returns: nothing,
      example: { params: { vm: VM_EXAMPLE }, result: null },
      handler: async ({ services, params }) => {
        const vm = await services.machines.remove(params.vm.id, false);
        services.access.forget(`VirtualMachine/${vm.id}`);
        await services.networks.adaptersRemoved(vm.id, 0, vm.config.networkAdapters.length);
      },
    }),
    DeleteVirtualMachine: method('Removes a turned-off VM and deletes its .vmc and saved state; its disks are kept.', {
      params: { vm: param(refOf('VirtualMachine'), 'The VM.') }, right: 'delete', rightOn: 'vm', errors: ['VM_E_VM_RUNNING'], returns: nothing,
      example: { params: { vm: VM_EXAMPLE }, result: null },
      handler: async ({ services, params }) => {
        const vm = await services.machines.remove(params.vm.id, true);
        services.access.forget(`VirtualMachine/${vm.id}`);
        await services.networks.adaptersRemoved(vm.id, 0, vm.config.networkAdapters.length);
      },
    }),
    FindVirtualMachine: method('The VM with this name, or null: one registered here, else (in a cluster) one the cluster knows on another host.', {
      params: { name: param(string, 'The name.') }, returns: orNull(refOf('VirtualMachine')), right: 'read',
      example: { params: { name: 'web' }, result: { $ref: VM_EXAMPLE } },
      handler: async (call) => {
        const id = call.services.machines.findByName(call.params.name)?.id ?? (await knownVms(call)).find((vm) => vm.name === call.params.name)?.id;
        return id && canRead(call, `VirtualMachine/${id}`) ? ref('VirtualMachine', id) : null;
      },
    }),
    get_VirtualNetworks: get('Every registered virtual network.', refsOf('VirtualNetwork'), [{ $ref: NETWORK_EXAMPLE }],
      ({ services }) => services.networks.list().map((n) => ref('VirtualNetwork', n.id))),
    CreateVirtualNetwork: method(`Creates a virtual network (a bridge on the host) and writes its .vnc beside the catalog: ${NETWORK_KINDS.join(', ')}. A new network gets a free 10.237.N.0/24 for its DHCP server, which is on for nat and off otherwise.`, {
      params: {
        name: param({ type: 'string', maxLength: 64 }, 'The name, unique on this host: no control characters, "/" or "\\", and not only dots.'),
        kind: param(oneOf(NETWORK_KINDS), 'internal: guests only; host: bridged to hostAdapter; nat: the host routes and masquerades.'),
        hostAdapter: param(string, 'For kind host: the host interface to bridge (VirtualServer.get_HostInfo\'s networkInterfaces).', true),
      },
      returns: refOf('VirtualNetwork'), right: 'change', errors: ['VM_E_NETWORK_NAME_IN_USE', 'VM_E_HOST_ADAPTER_UNKNOWN', 'VM_E_NETWORK_FAILED'],
      example: { params: { name: 'Lab', kind: 'internal' }, result: { $ref: NETWORK_EXAMPLE } },
      handler: async ({ services, params }) => ref('VirtualNetwork', (await services.networks.create(params.name, params.kind, params.hostAdapter ?? null)).id),
    }),
    RegisterVirtualNetwork: method('Adds a virtual network from its .vnc (written by this or another host).', {
      params: { path: path('The .vnc file.') }, returns: refOf('VirtualNetwork'), right: 'change',
      errors: ['VM_E_FILE_NOT_FOUND', 'VM_E_NETWORK_FILE_INVALID', 'VM_E_DHCP_INVALID', 'VM_E_NETWORK_NAME_IN_USE', 'VM_E_NETWORK_REGISTERED', 'VM_E_DHCP_OVERLAP', 'VM_E_HOST_ADAPTER_UNKNOWN', 'VM_E_NETWORK_FAILED'],
      example: { params: { path: '/var/lib/vserver/networks/Lab.vnc' }, result: { $ref: NETWORK_EXAMPLE } },
      handler: async ({ services, params }) => {
        const file = await services.files.run({ op: 'regular-file', input: params.path, kind: '.vnc file' });
        return ref('VirtualNetwork', (await services.networks.register(file)).id);
      },
    }),
    UnregisterVirtualNetwork: method('Removes a virtual network and its host parts, and keeps its .vnc; refused while adapters are attached (data.adapters names them).', {
      params: { network: param(refOf('VirtualNetwork'), 'The network.') }, returns: nothing, right: 'delete', errors: ['VM_E_NETWORK_IN_USE'],
      example: { params: { network: NETWORK_EXAMPLE }, result: null },
      handler: async ({ services, params }) => { await services.networks.remove(params.network.id, false); },
    }),
    DeleteVirtualNetwork: method('Removes a virtual network, its host parts and its .vnc; refused while adapters are attached (data.adapters names them).', {
      params: { network: param(refOf('VirtualNetwork'), 'The network.') }, returns: nothing, right: 'delete', errors: ['VM_E_NETWORK_IN_USE'],
      example: { params: { network: NETWORK_EXAMPLE }, result: null },
      handler: async ({ services, params }) => { await services.networks.remove(params.network.id, true); },
    }),
    FindVirtualNetwork: method('The virtual network with this name, or null.', {
      params: { name: param(string, 'The name.') }, returns: orNull(refOf('VirtualNetwork')), right: 'read',
      example: { params: { name: 'Internal Network' }, result: { $ref: NETWORK_EXAMPLE } },
      handler: ({ services, params }) => {
        const network = services.networks.findByName(params.name);
        return network ? ref('VirtualNetwork', network.id) : null;
      },
    }),
    get_UnconnectedNetworkAdapters: get('The adapters attached to no network, of the VMs the caller may read.', refsOf('NetworkAdapter'), [{ $ref: `NetworkAdapter/${VM_ID_EXAMPLE}/0` }],
      (call) => call.services.networks.unconnectedAdapters().filter(({ vm }) => canRead(call, `VirtualMachine/${vm.id}`)).map(({ vm, index }) => ref('NetworkAdapter', `${vm.id}/${index}`))),
    CreateDynamicVirtualHardDisk: task(`Creates a dynamically expanding VHD of sizeMB (${DEFAULT_DISK_SIZE / MB / 1024} GB when omitted).`, 'change',
      { path: path('The new .vhd.'), sizeMB: param(diskSizeMB, `Size in the guest, in MB (at most ${MAX_DISK_SIZE_MB.toLocaleString('en-US')} MB = 2040 GB).`, true) },
      { path: 'disks/web.vhd', sizeMB: 16384 },
      async (call) => {
        const file = await newDiskFile(call, call.params.path);
        const size = call.params.sizeMB === undefined ? undefined : call.params.sizeMB * MB;
        return creation(call, `Create dynamic disk ${file}`, 'createDynamic', { target: file, size });
      }, ['VHD_E_EXISTS', 'VHD_E_SIZE_LIMIT']),
    CreateFixedVirtualHardDisk: task('Creates a fixed-size VHD of sizeMB; the whole file is written, with progress.', 'change',
      { path: path('The new .vhd.'), sizeMB: param(diskSizeMB, 'Size in MB.') },
      { path: 'disks/data.vhd', sizeMB: 1024 },
      async (call) => {
        const file = await newDiskFile(call, call.params.path);
        return creation(call, `Create fixed disk ${file}`, 'createFixed', { target: file, size: call.params.sizeMB * MB });
      }, ['VHD_E_EXISTS', 'VHD_E_SIZE_LIMIT']),
    CreateDifferencingVirtualHardDisk: task('Creates a differencing VHD whose parent is parentPath. A parent that is being written (a disk of a VM that is not turned off or saved, or any disk open for writing) is refused with VM_E_DRIVE_IN_USE naming the VM: the child would be stale from birth. A saved VM\'s disk is at rest, so a child of it holds the disk as the VM left it.', 'change',
      { path: path('The new .vhd.'), parentPath: path('The parent .vhd.') },
      { path: 'disks/web-child.vhd', parentPath: 'disks/web.vhd' },
      async (call) => {
        const file = await newDiskFile(call, call.params.path);
        // A parent that is not a VHD, or whose own chain leaves the roots, is refused now, not in the task.
        const parent = (await inspectedDisk(call.services, call.params.parentPath, 'parent disk')).file;
        // A child of a disk that is still being written is stale from birth. A saved VM's disk is at
        // rest and matches its saved memory, so a child of it is sound, like one of an off VM's disk.
        const { machines } = call.services;
        const writing = vmsWithDisk(call, parent).find((vm) => machines.isBeingTurnedOn(vm) || isActive(machines.state(vm)));
        if (writing) {
          const state = machines.isBeingTurnedOn(writing) ? 'being turned on' : machines.state(writing);
          throw new ApiError('VM_E_DRIVE_IN_USE',
            `${parent} is a disk of the VM ${writing.name}, which is ${state} and writes to it; turn ${writing.name} off or save it first`);
        }
        refuseInUse(call, parent);
        return creation(call, `Create differencing disk ${file} (parent ${parent})`, 'createDifferencing', { target: file, parent });
      }, ['VHD_E_EXISTS', 'VM_E_HD_IMAGE_NOT_FOUND', 'VM_E_DRIVE_IN_USE']),
    GetHardDisk: method('Opens an existing VHD.', {
      params: { path: path('The .vhd.') }, returns: refOf('HardDisk'), right: 'read', errors: ['VM_E_HD_IMAGE_NOT_FOUND', 'VHD_E_BAD_FOOTER'],
      example: { params: { path: 'disks/web.vhd' }, result: { $ref: DISK_EXAMPLE } },
      handler: async ({ services, params }) => ref('HardDisk', (await inspectedDisk(services, params.path)).file),
    }),
    GetFiles: method('Lists a folder inside the storage roots (the first root when omitted), for choosing disks, ISOs and .vmc files.', {
      params: { path: path('The folder.', true) },
      returns: object({
        root: field(string, 'The storage root the folder lies in'), folder: field(string, 'The folder listed, as a real absolute path'),
        entries: field(listOf(object({
          name: field(string, 'The entry\'s name'), path: field(string, 'Its path, to give back to the API'),
          type: field(oneOf(['file', 'folder']), 'A file or a folder'), size: field(integer, 'Bytes for a file, 0 for a folder'),
        })), 'Folders first, then files, each by name'),
      }),
      right: 'read',
      example: { params: { path: 'disks' }, result: { root: '/var/lib/vserver', folder: '/var/lib/vserver/disks', entries: [{ name: 'web.vhd', path: '/var/lib/vserver/disks/web.vhd', type: 'file', size: 42496 }] } },
      handler: async ({ services, params }) => {
        const listing = await services.files.run({ op: 'list', dir: params.path });
        return { root: listing.root, folder: listing.path, entries: listing.entries };
      },
    }),
    get_Tasks: get('Tasks in flight and recently finished, newest first.', refsOf('Task'), [{ $ref: TASK_EXAMPLE }],
      (call) => call.services.tasks.list().filter((t) => canRead(call, t.object ?? SERVER_REF)).map((t) => ref('Task', t.id))),
    GetEvents: method('The event log (Virtual Server\'s Event Viewer): the entries after "since", oldest first, or the newest first. Only entries about objects the caller may read are returned, and Security entries (sign-ins, refusals, users, tokens) only to administrators.', {
      params: {
        since: param({ type: 'integer', min: 0 }, 'Only events with an id above this.', true),
        limit: param({ type: 'integer', min: 1, max: 1000 }, 'At most this many (100 when omitted).', true),
        category: param(oneOf(EVENT_CATEGORIES), 'Only this category.', true),
        severity: param(oneOf(SEVERITIES), 'Only this severity.', true),
        object: param(string, 'Only events about this object reference.', true),
        newestFirst: param(boolean, 'The newest events first (as the Event Viewer shows them), instead of the oldest after "since".', true),
      },
      returns: listOf(object({
        id: field(integer, 'The entry\'s number, rising'), time: isoTime('When'), category: field(oneOf(EVENT_CATEGORIES), 'What it is about'),
        severity: field(oneOf(SEVERITIES), 'How bad'), message: field(string, 'What happened'), who: field(string, 'A user name or "vserverd"'),
        object: field(orNull(string), 'The object reference concerned, or null'),
      })),
      right: 'read',
      example: { params: { since: 10, limit: 2 }, result: [{ id: 11, time: '2026-11-27T10:00:00.000Z', category: 'Virtual Machine', severity: 'Information', message: 'web: Startup', who: 'admin', object: VM_EXAMPLE }] },
      handler: (call) => call.services.events.query(call.params, (e) => call.services.access.canSee(call.principal, e)),
    }),
    ...backupMembers,
    ...serverClusterMembers,
    get_Security: get('The access entries of the server itself (who may create VMs and disks).', refOf('Security'), { $ref: 'Security/VirtualServer' }, () => ref('Security', SERVER_REF)),
    get_Users: get('Local users and their roles.', listOf(object({ ...userField, created: isoTime('When it was added') })),
      [{ name: 'admin', role: 'Administrator', created: '2026-11-27T10:00:00.000Z' }], ({ services }) => services.users.list(), { administratorsOnly: true }),
    CreateUser: method('Adds a local user with a role.', {
      params: { name: param({ type: 'string', maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' }, 'Letters, digits, ".", "_" and "-".'), password: param(string, 'At least 8 characters.'), role: param(oneOf(ROLES), 'Administrator, Operator (control and consoles) or Viewer (read).') },
      returns: nothing, right: 'changePermissions', administratorsOnly: true, errors: ['VM_E_USER_EXISTS', 'VM_E_WEAK_PASSWORD'],
      example: { params: { name: 'ops', password: 'correct horse', role: 'Operator' }, result: null },
      handler: async ({ services, params }) => { await services.users.create(params.name, params.password, params.role); },
    }),
    DeleteUser: method('Removes a user and revokes their tokens and sessions.', {
      params: { name: param(string, 'The user.') }, returns: nothing, right: 'changePermissions', administratorsOnly: true, errors: ['VM_E_USER_UNKNOWN', 'VM_E_LAST_ADMINISTRATOR'],
      example: { params: { name: 'ops' }, result: null },
      handler: ({ services, params }) => {
        services.users.delete(params.name);
        services.access.forgetPrincipal(params.name);
        services.sessions.endUser(params.name);
      },
    }),
    SetUserRole: method('Changes a user\'s role.', {
      params: { name: param(string, 'The user.'), role: param(oneOf(ROLES), 'The new role.') }, returns: nothing, right: 'changePermissions', administratorsOnly: true,
      errors: ['VM_E_USER_UNKNOWN', 'VM_E_LAST_ADMINISTRATOR'], example: { params: { name: 'ops', role: 'Viewer' }, result: null },
      handler: ({ services, params }) => services.users.setRole(params.name, params.role),
    }),
    SetUserPassword: method('Sets a user\'s password: administrators for anyone, others for themselves only.', {
      params: { name: param(string, 'The user.'), password: param(string, 'At least 8 characters.') }, returns: nothing, right: 'read',
      errors: ['VM_E_USER_UNKNOWN', 'VM_E_WEAK_PASSWORD', 'VM_E_ACCESS_DENIED'], example: { params: { name: 'ops', password: 'battery staple' }, result: null },
      handler: async (call) => {
        selfOrAdministrator(call, call.params.name, 'set the password');
        await call.services.users.setPassword(call.params.name, call.params.password);
        call.services.sessions.endUser(call.params.name);
      },
    }),
    CreateToken: method('Creates an API token for the caller, shown once. A role narrows it; one above the caller\'s own is refused (VM_E_ACCESS_DENIED).', {
      params: {
        description: param({ type: 'string', maxLength: 200 }, 'What the token is for.', true),
        role: param(oneOf(ROLES), 'The most it may do; the caller\'s role when omitted. Not above the caller\'s.', true),
        expiresInDays: param({ type: 'integer', min: 1, max: 3650 }, 'Days until it stops working; never when omitted.', true),
      },
      returns: object({
        id: field(string, 'The token\'s id'), token: field(string, 'The secret, shown once'), user: field(string, 'Its owner'),
        role: field(oneOf(ROLES), 'The most it may do'), expires: field(orNull(string), 'When it stops working, ISO 8601, or null for never'),
      }),
      right: 'read', errors: ['VM_E_ACCESS_DENIED'],
      example: { params: { description: 'backup script', role: 'Viewer' }, result: { id: '3fa9c2d81b7e', token: 'vst_3fa9c2d81b7e_…', user: 'admin', role: 'Viewer', expires: null } },
      handler: ({ services, principal, params }) => {
        const role = params.role ?? principal.role;
        // Asking for more than one has is refused, not quietly lowered: the script would fail later, puzzlingly.
        if (narrower(principal.role, role) !== role) {
          throw new ApiError('VM_E_ACCESS_DENIED', `a ${principal.role} caller cannot create a token with the role ${role}; ask for ${principal.role} or less`);
        }
        const created = services.users.createToken(principal.user, { role, description: params.description, expiresInDays: params.expiresInDays });
        return { id: created.id, token: created.token, user: created.user, role: created.role, expires: created.expires };
      },
    }),
    get_Tokens: get('The caller\'s tokens (every user\'s for administrators), without their secrets.',
      listOf(object({
        id: field(string, 'The token\'s id'), user: field(string, 'Its owner'), role: field(oneOf(ROLES), 'The most it may do'),
        description: field(string, 'What it is for'), created: isoTime('When it was made'),
        expires: field(orNull(string), 'When it stops working, ISO 8601, or null for never'), lastUsed: field(orNull(string), 'When it was last used, ISO 8601, or null'),
      })),
      [{ id: '3fa9c2d81b7e', user: 'admin', role: 'Viewer', description: 'backup script', created: '2026-11-27T10:00:00.000Z', expires: null, lastUsed: null }],
      ({ services, principal }) => services.users.tokens(principal.role === 'Administrator' ? null : principal.user)),
    RevokeToken: method('Revokes a token: the caller\'s own, or anyone\'s for administrators.', {
      params: { id: param(string, 'The token\'s id.') }, returns: nothing, right: 'read', errors: ['VM_E_TOKEN_UNKNOWN'],
      example: { params: { id: '3fa9c2d81b7e' }, result: null },
      handler: (call) => {
        const token = call.services.users.token(call.params.id);
        if (!token) throw new ApiError('VM_E_TOKEN_UNKNOWN', `there is no token ${call.params.id}`);
        selfOrAdministrator(call, token.user, 'revoke the tokens');
        call.services.users.revokeToken(token.id);
      },
    }),
  },
};

/** A VM's default folder: its name, made safe for a file system. */
function safeFolderName(name: string): string {
  return name.replace(/[^A-Za-z0-9._ -]/g, '_').replace(/^\.+/, '_');
}
