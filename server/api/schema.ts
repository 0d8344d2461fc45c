// The object model of vserver's API, declared once: Virtual Server 2005 R2's COM interfaces
// (IVMVirtualServer, IVMVirtualMachine, IVMTask, ...) as JSON-RPC methods "Interface.Member".
// The dispatcher validates calls against it, GET /api/schema serves it, docs/api.md and
// vsctl's help are generated from it. Each member says what it does, the right it needs, and
// shows an example.

import { DEFAULT_DISK_SIZE } from '../../storage/vhd/format.js';
import { sizeForRequest } from '../../storage/vhd/geometry.js';
import { PROFILE, NIC_MODELS, SCSI_MODELS, USB_DEVICES } from '../../vmm/profile.js';
import { DEFAULT_SCROLLBACK_BYTES } from '../../vmm/serial-output.js';
import { CONSOLE_KINDS, TICKET_SECONDS } from '../http/console-tickets.js';
import { VM_STATES } from '../../vmm/state.js';
import type { InterfaceSpec, MemberSpec, ParamSpec, Right, Schema, TypeSpec } from './schema-types.js';

export const AUTO_START = ['Never', 'Always', 'IfRunningAtQuit'] as const;
export const SHUTDOWN_ACTIONS = ['Save', 'TurnOff', 'Shutdown'] as const;
export const ROLES = ['Administrator', 'Operator', 'Viewer'] as const;
export const DISK_TYPES = ['Dynamic', 'Fixed', 'Differencing'] as const;
export const SEVERITIES = ['Information', 'Warning', 'Error'] as const;
export const EVENT_CATEGORIES = ['Virtual Server', 'Virtual Machine', 'Virtual Disk', 'Security', 'Task'] as const;

const VM = 'VirtualMachine/7d8e5c1a-3b9f-4e2d-a6c0-1f2e3d4c5b6a';
const DISK = 'HardDisk//var/lib/vserver/disks/web.vhd';
const TASK = 'Task/4f1c2b3a-9e8d-4c7b-b6a5-0e1d2c3b4a59';
/** The examples' disk is a default one: its size in the guest as the engine makes it. */
const DEFAULT_DISK_BYTES = sizeForRequest(DEFAULT_DISK_SIZE).size;

const string: TypeSpec = { type: 'string' };
const integer: TypeSpec = { type: 'integer' };
const boolean: TypeSpec = { type: 'boolean' };
const nothing: TypeSpec = { type: 'null' };
const ref = (iface: string): TypeSpec => ({ type: 'ref', interface: iface });
const refs = (iface: string): TypeSpec => ({ type: 'array', items: ref(iface) });
const oneOf = (values: readonly string[]): TypeSpec => ({ type: 'enum', values });
const param = (type: TypeSpec, doc: string, optional = false): ParamSpec => ({ ...type, doc, ...(optional ? { optional } : {}) });
const path = (doc: string, optional = false): ParamSpec => param({ type: 'string', maxLength: 4096 }, `${doc} Relative paths are taken from the first storage root; paths outside the storage roots are refused.`, optional);

/** A property read: needs "read" on the object. */
function get(doc: string, returns: TypeSpec, result: unknown, self: string | null, right: Right = 'read'): MemberSpec {
  return { doc, returns, right, example: { params: self ? { this: self } : {}, result } };
}

/** A property write: "value" is checked against `type`; needs "change" on the object. */
function put(doc: string, type: TypeSpec, value: unknown, self: string, errors?: MemberSpec['errors']): MemberSpec {
  return { doc, params: { value: param(type, 'The new value.') }, returns: nothing, right: 'change', errors, example: { params: { this: self, value }, result: null } };
}

function method(doc: string, spec: Omit<MemberSpec, 'doc' | 'example'> & { example: MemberSpec['example'] }): MemberSpec {
  return { doc, ...spec };
}

/** A member that starts a long operation and returns its Task. */
function task(doc: string, right: Right, params: Record<string, ParamSpec>, exampleParams: Record<string, unknown>, errors?: MemberSpec['errors']): MemberSpec {
  return { doc, params, returns: ref('Task'), right, task: true, errors, example: { params: exampleParams, result: { $ref: TASK } } };
}

const CONFIG_ERRORS = ['VM_E_VM_RUNNING', 'VM_E_VM_SAVED', 'VM_E_CONFIG_INVALID'] as const;
/** QEMU rewrites a port's file at each start, so a VM's own kinds of file are refused as port files. */
export const PORT_FILE_REFUSED = ['.vhd', '.vmc', '.vsv', '.iso', '.vfd'] as const;
const PORT_FILE_DOC = `What the guest writes to the port goes to the file, which is rewritten from its start each time the VM is turned on; a path ending in ${PORT_FILE_REFUSED.join(', ')} is refused, so that a port cannot overwrite a VM's files. Only while the VM is turned off.`;

const virtualServer: InterfaceSpec = {
  doc: 'The service itself (IVMVirtualServer): the root of the object model. Its members take no "this".',
  ref: 'VirtualServer',
  members: {
    get_Name: get('The host\'s name.', string, 'vhost1', null),
    get_Version: get('vserver\'s version.', string, '0.1.0', null),
    get_UpTime: get('Seconds since vserverd started.', integer, 3600, null),
    get_HostInfo: get('The host: processors, memory, operating system, and the execution engine VMs run on here with the reason it was chosen (KVM only where hardware virtualization is proven to work).',
      { type: 'object', fields: { hostName: 'string', logicalProcessors: 'integer', memoryMB: 'integer', memoryAvailableMB: 'integer', operatingSystem: 'string', engine: '"kvm" or "tcg"', engineReason: 'string', qemuVersion: 'string' } },
      { hostName: 'vhost1', logicalProcessors: 2, memoryMB: 24000, memoryAvailableMB: 20000, operatingSystem: 'Linux 6.1.0', engine: 'tcg', engineReason: 'the CPU has no hardware virtualization (no vmx or svm flag)', qemuVersion: '7.2.0' }, null),
    get_MaximumMemoryPerVM: get('The most memory a VM may have, in MB (3.6 GB).', integer, PROFILE.memoryMB.max, null),
    get_MinimumMemoryPerVM: get('The least memory a VM may have, in MB.', integer, PROFILE.memoryMB.min, null),
    get_MaximumNumberOfProcessorsPerVM: get(`Processors per VM: exactly ${PROFILE.processors}, Virtual Server's limit. It is not a setting: no member sets a VM's processor count, and a .vmc may state "processors": ${PROFILE.processors} but no other count (VM_E_CONFIG_INVALID).`, integer, PROFILE.processors, null),
    get_MaximumNetworkAdaptersPerVM: get('Network adapters per VM.', integer, PROFILE.networkAdapters.max, null),
    get_MaximumNumberOfIDEBuses: get('IDE channels per VM, each with two devices.', integer, PROFILE.ide.channels, null),
    get_MaximumNumberOfSCSIControllers: get('SCSI adapters per VM, each with seven disks.', integer, PROFILE.scsi.adapters, null),
    get_MaximumSerialPortsPerVM: get('Serial ports per VM (COM1 is the serial console).', integer, PROFILE.serialPorts, null),
    get_MaximumParallelPortsPerVM: get('Parallel ports per VM.', integer, PROFILE.parallelPorts, null),
    get_MaximumFloppyDrivesPerVM: get('Floppy drives per VM.', integer, PROFILE.floppyDrives, null),
    get_StorageRoots: get('The folders every file path given to the API must lie in; the first is where relative paths start.', { type: 'array', items: string }, ['/var/lib/vserver'], null),
    get_VirtualMachines: get('Every registered VM the caller may read.', refs('VirtualMachine'), [{ $ref: VM }], null),
    CreateVirtualMachine: method(`Creates a VM (${PROFILE.processors} processor, fixed; ${PROFILE.memoryMB.default} MB, no disks) and writes its configuration as NAME.vmc in its folder (PATH, or NAME/ under the first storage root).`, {
      params: { name: param({ type: 'string', maxLength: 64 }, 'The VM\'s name, unique on this host: no control characters, "/" or "\\", and not only dots.'), path: path('The folder for its files (NAME under the first storage root when omitted).', true) },
      returns: ref('VirtualMachine'), right: 'change', errors: ['VM_E_NAME_IN_USE', 'VM_E_CONFIG_INVALID'],
      example: { params: { name: 'web' }, result: { $ref: VM } },
    }),
    RegisterVirtualMachine: method('Adds a VM from an existing .vmc (written by this or another host).', {
      params: { path: path('The .vmc file.') }, returns: ref('VirtualMachine'), right: 'change',
      errors: ['VM_E_FILE_NOT_FOUND', 'VM_E_CONFIG_INVALID', 'VM_E_NAME_IN_USE', 'VM_E_VM_REGISTERED'],
      example: { params: { path: 'web/web.vmc' }, result: { $ref: VM } },
    }),
    UnregisterVirtualMachine: method('Removes a turned-off VM from the catalog and keeps its files.', {
      params: { vm: param(ref('VirtualMachine'), 'The VM.') }, returns: nothing, right: 'delete', rightOn: 'vm', errors: ['VM_E_VM_RUNNING'],
      example: { params: { vm: VM }, result: null },
    }),
    DeleteVirtualMachine: method('Removes a turned-off VM and deletes its .vmc and saved state; its disks are kept.', {
      params: { vm: param(ref('VirtualMachine'), 'The VM.') }, returns: nothing, right: 'delete', rightOn: 'vm', errors: ['VM_E_VM_RUNNING'],
      example: { params: { vm: VM }, result: null },
    }),
    FindVirtualMachine: method('The VM with this name, or null.', {
      params: { name: param(string, 'The name.') }, returns: ref('VirtualMachine'), right: 'read',
      example: { params: { name: 'web' }, result: { $ref: VM } },
    }),
    CreateDynamicVirtualHardDisk: task('Creates a dynamically expanding VHD of sizeMB (127 GB when omitted).', 'change',
      { path: path('The new .vhd.'), sizeMB: param({ type: 'integer', min: 1, max: 2_088_960 }, 'Size in the guest, in MB (at most 2,088,960 MB = 2040 GB).', true) },
      { path: 'disks/web.vhd', sizeMB: 16384 }, ['VHD_E_EXISTS', 'VHD_E_SIZE_LIMIT']),
    CreateFixedVirtualHardDisk: task('Creates a fixed-size VHD of sizeMB; the whole file is written, with progress.', 'change',
      { path: path('The new .vhd.'), sizeMB: param({ type: 'integer', min: 1, max: 2_088_960 }, 'Size in MB.') },
      { path: 'disks/data.vhd', sizeMB: 1024 }, ['VHD_E_EXISTS', 'VHD_E_SIZE_LIMIT']),
    CreateDifferencingVirtualHardDisk: task('Creates a differencing VHD whose parent is parentPath. A parent that is being written (a disk of a VM that is not turned off or saved, or any disk open for writing) is refused with VM_E_DRIVE_IN_USE naming the VM: the child would be stale from birth. A saved VM\'s disk is at rest, so a child of it holds the disk as the VM left it.', 'change',
      { path: path('The new .vhd.'), parentPath: path('The parent .vhd.') },
      { path: 'disks/web-child.vhd', parentPath: 'disks/web.vhd' }, ['VHD_E_EXISTS', 'VM_E_HD_IMAGE_NOT_FOUND', 'VM_E_DRIVE_IN_USE']),
    GetHardDisk: method('Opens an existing VHD.', {
      params: { path: path('The .vhd.') }, returns: ref('HardDisk'), right: 'read', errors: ['VM_E_HD_IMAGE_NOT_FOUND', 'VHD_E_BAD_FOOTER'],
      example: { params: { path: 'disks/web.vhd' }, result: { $ref: DISK } },
    }),
    GetFiles: method('Lists a folder inside the storage roots (the first root when omitted), for choosing disks, ISOs and .vmc files.', {
      params: { path: path('The folder.', true) },
      returns: { type: 'object', fields: { root: 'string', folder: 'string', entries: 'array of {name, path, type ("file"|"folder"), size}' } }, right: 'read',
      example: { params: { path: 'disks' }, result: { root: '/var/lib/vserver', folder: '/var/lib/vserver/disks', entries: [{ name: 'web.vhd', path: '/var/lib/vserver/disks/web.vhd', type: 'file', size: 42496 }] } },
    }),
    get_Tasks: get('Tasks in flight and recently finished, newest first.', refs('Task'), [{ $ref: TASK }], null),
    GetEvents: method('The event log (Virtual Server\'s Event Viewer): the entries after "since", oldest first, or the newest first. Only entries about objects the caller may read are returned, and Security entries (sign-ins, refusals, users, tokens) only to administrators.', {
      params: {
        since: param({ type: 'integer', min: 0 }, 'Only events with an id above this.', true),
        limit: param({ type: 'integer', min: 1, max: 1000 }, 'At most this many (100 when omitted).', true),
        category: param(oneOf(EVENT_CATEGORIES), 'Only this category.', true),
        severity: param(oneOf(SEVERITIES), 'Only this severity.', true),
        object: param(string, 'Only events about this object reference.', true),
        newestFirst: param(boolean, 'The newest events first (as the Event Viewer shows them), instead of the oldest after "since".', true),
      },
      returns: { type: 'array', items: { type: 'object', fields: { id: 'integer', time: 'ISO 8601', category: 'string', severity: 'string', message: 'string', who: 'user name or "vserverd"', object: 'object reference or null' } } },
      right: 'read',
      example: { params: { since: 10, limit: 2 }, result: [{ id: 11, time: '2026-11-27T10:00:00.000Z', category: 'Virtual Machine', severity: 'Information', message: 'web: Startup', who: 'admin', object: VM }] },
    }),
    get_Security: get('The access entries of the server itself (who may create VMs and disks).', ref('Security'), { $ref: 'Security/VirtualServer' }, null),
    get_Users: { ...get('Local users and their roles.', { type: 'array', items: { type: 'object', fields: { name: 'string', role: 'string', created: 'ISO 8601' } } }, [{ name: 'admin', role: 'Administrator', created: '2026-11-27T10:00:00.000Z' }], null), administratorsOnly: true },
    CreateUser: method('Adds a local user with a role.', {
      params: { name: param({ type: 'string', maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' }, 'Letters, digits, ".", "_" and "-".'), password: param(string, 'At least 8 characters.'), role: param(oneOf(ROLES), 'Administrator, Operator (control and consoles) or Viewer (read).') },
      returns: nothing, right: 'changePermissions', administratorsOnly: true, errors: ['VM_E_USER_EXISTS', 'VM_E_WEAK_PASSWORD'],
      example: { params: { name: 'ops', password: 'correct horse', role: 'Operator' }, result: null },
    }),
    DeleteUser: method('Removes a user and revokes their tokens and sessions.', {
      params: { name: param(string, 'The user.') }, returns: nothing, right: 'changePermissions', administratorsOnly: true, errors: ['VM_E_USER_UNKNOWN', 'VM_E_LAST_ADMINISTRATOR'],
      example: { params: { name: 'ops' }, result: null },
    }),
    SetUserRole: method('Changes a user\'s role.', {
      params: { name: param(string, 'The user.'), role: param(oneOf(ROLES), 'The new role.') }, returns: nothing, right: 'changePermissions', administratorsOnly: true,
      errors: ['VM_E_USER_UNKNOWN', 'VM_E_LAST_ADMINISTRATOR'], example: { params: { name: 'ops', role: 'Viewer' }, result: null },
    }),
    SetUserPassword: method('Sets a user\'s password: administrators for anyone, others for themselves only.', {
      params: { name: param(string, 'The user.'), password: param(string, 'At least 8 characters.') }, returns: nothing, right: 'read',
      errors: ['VM_E_USER_UNKNOWN', 'VM_E_WEAK_PASSWORD', 'VM_E_ACCESS_DENIED'], example: { params: { name: 'ops', password: 'battery staple' }, result: null },
    }),
    CreateToken: method('Creates an API token for the caller, shown once. A role narrows it; one above the caller\'s own is refused (VM_E_ACCESS_DENIED).', {
      params: {
        description: param({ type: 'string', maxLength: 200 }, 'What the token is for.', true),
        role: param(oneOf(ROLES), 'The most it may do; the caller\'s role when omitted. Not above the caller\'s.', true),
        expiresInDays: param({ type: 'integer', min: 1, max: 3650 }, 'Days until it stops working; never when omitted.', true),
      },
      returns: { type: 'object', fields: { id: 'string', token: 'string (shown once)', user: 'string', role: 'string', expires: 'ISO 8601 or null' } },
      right: 'read', errors: ['VM_E_ACCESS_DENIED'],
      example: { params: { description: 'backup script', role: 'Viewer' }, result: { id: '3fa9c2d81b7e', token: 'vst_3fa9c2d81b7e_…', user: 'admin', role: 'Viewer', expires: null } },
    }),
    get_Tokens: get('The caller\'s tokens (every user\'s for administrators), without their secrets.', { type: 'array', items: { type: 'object', fields: { id: 'string', user: 'string', role: 'string', description: 'string', created: 'ISO 8601', expires: 'ISO 8601 or null', lastUsed: 'ISO 8601 or null' } } },
      [{ id: '3fa9c2d81b7e', user: 'admin', role: 'Viewer', description: 'backup script', created: '2026-11-27T10:00:00.000Z', expires: null, lastUsed: null }], null),
    RevokeToken: method('Revokes a token: the caller\'s own, or anyone\'s for administrators.', {
      params: { id: param(string, 'The token\'s id.') }, returns: nothing, right: 'read', errors: ['VM_E_TOKEN_UNKNOWN'],
      example: { params: { id: '3fa9c2d81b7e' }, result: null },
    }),
  },
};

const virtualMachine: InterfaceSpec = {
  doc: 'A virtual machine (IVMVirtualMachine). Its configuration can change only while it is turned off, as in Virtual Server.',
  ref: 'VirtualMachine/<id>',
  members: {
    get_Name: get('The name.', string, 'web', VM),
    put_Name: put('Renames the VM (its .vmc keeps its file name, as Virtual Server kept it).', { type: 'string', maxLength: 64 }, 'web2', VM, ['VM_E_NAME_IN_USE', ...CONFIG_ERRORS]),
    get_Notes: get('Free text about the VM.', string, 'IIS front end', VM),
    put_Notes: put('Sets the notes; allowed while the VM runs.', { type: 'string', maxLength: 10_000 }, 'IIS front end', VM),
    get_Memory: get('Memory in MB.', integer, 512, VM),
    put_Memory: put(`Sets the memory in MB (${PROFILE.memoryMB.min} to ${PROFILE.memoryMB.max}).`, { type: 'integer' }, 512, VM, CONFIG_ERRORS),
    get_AutoStartAtLaunch: get('Whether vserverd turns the VM on when it starts: Never, Always, or IfRunningAtQuit (the default).', oneOf(AUTO_START), 'IfRunningAtQuit', VM),
    put_AutoStartAtLaunch: put('Sets the auto-start rule; allowed while the VM runs.', oneOf(AUTO_START), 'Always', VM),
    get_AutoStartAtLaunchDelay: get('Seconds vserverd waits after its start before turning the VM on.', integer, 0, VM),
    put_AutoStartAtLaunchDelay: put('Sets the auto-start delay in seconds (0 to 3600).', { type: 'integer', min: 0, max: 3600 }, 30, VM),
    get_ShutdownActionOnQuit: get('What vserverd does to the running VM when it stops: Save (the default), TurnOff, or Shutdown (the guest\'s, by the ACPI power button).', oneOf(SHUTDOWN_ACTIONS), 'Save', VM),
    put_ShutdownActionOnQuit: put('Sets the action on quit; allowed while the VM runs.', oneOf(SHUTDOWN_ACTIONS), 'TurnOff', VM),
    get_State: get('The state (VMVMState).', oneOf(VM_STATES), 'Running', VM),
    get_Engine: get('The execution engine the VM runs (or last ran) on and why; null before its first start.', { type: 'object', fields: { engine: '"kvm" or "tcg"', reason: 'string' } }, { engine: 'tcg', reason: 'the CPU has no hardware virtualization' }, VM),
    get_Uptime: get('Seconds since the VM last became Running by a turn on or a restore (a restore starts the count again; a pause or a reset does not), or null when it is not running.', integer, 120, VM),
    get_File: get('The VM\'s .vmc file.', string, '/var/lib/vserver/web/web.vmc', VM),
    get_SavedStateFilePath: get('Where the VM\'s saved state (.vsv) is written.', string, '/var/lib/vserver/web/web.vsv', VM),
    get_Configuration: get('The whole configuration document (docs/vm-config.md), as stored in the .vmc.', { type: 'object' }, { version: 1, name: 'web', memoryMB: 512 }, VM),
    get_LastCrash: get('Why the VM last stopped without being asked to (its worker or QEMU died), or null.', { type: 'object', fields: { reason: 'string', at: 'ISO 8601' } }, null, VM),
    get_HardDiskConnections: get('The disks attached, IDE first.', refs('HardDiskConnection'), [{ $ref: `HardDiskConnection/${VM.slice(15)}/scsi0-0` }], VM),
    AddHardDiskConnection: method('Attaches a VHD at an IDE (bus 0-1, device 0-1) or SCSI (adapter 0-3, target 0-6) position. The SCSI adapter must exist.', {
      params: {
        path: path('The .vhd.'), busType: param(oneOf(['IDE', 'SCSI']), 'IDE or SCSI.'),
        busNumber: param({ type: 'integer', min: 0 }, 'IDE channel or SCSI adapter.'), deviceNumber: param({ type: 'integer', min: 0 }, 'IDE device or SCSI target.'),
      },
      returns: ref('HardDiskConnection'), right: 'change', errors: ['VM_E_HD_IMAGE_NOT_FOUND', 'VHD_E_BAD_FOOTER', 'VM_E_DRIVE_IN_USE', 'VM_E_DRIVE_INVALID', ...CONFIG_ERRORS],
      example: { params: { this: VM, path: 'disks/web.vhd', busType: 'SCSI', busNumber: 0, deviceNumber: 0 }, result: { $ref: `HardDiskConnection/${VM.slice(15)}/scsi0-0` } },
    }),
    RemoveHardDiskConnection: method('Detaches a disk; the file is kept.', {
      params: { connection: param(ref('HardDiskConnection'), 'The connection.') }, returns: nothing, right: 'change', errors: CONFIG_ERRORS,
      example: { params: { this: VM, connection: `HardDiskConnection/${VM.slice(15)}/scsi0-0` }, result: null },
    }),
    get_DVDROMDrives: get('The CD/DVD drives (on IDE).', refs('DVDROMDrive'), [{ $ref: `DVDROMDrive/${VM.slice(15)}/ide1-0` }], VM),
    AddDVDROMDrive: method('Adds an empty CD/DVD drive at an IDE position.', {
      params: { busNumber: param({ type: 'integer', min: 0 }, 'IDE channel (0-1).'), deviceNumber: param({ type: 'integer', min: 0 }, 'IDE device (0-1).') },
      returns: ref('DVDROMDrive'), right: 'change', errors: ['VM_E_DRIVE_IN_USE', 'VM_E_DRIVE_INVALID', ...CONFIG_ERRORS],
      example: { params: { this: VM, busNumber: 1, deviceNumber: 0 }, result: { $ref: `DVDROMDrive/${VM.slice(15)}/ide1-0` } },
    }),
    RemoveDVDROMDrive: method('Removes a CD/DVD drive.', {
      params: { drive: param(ref('DVDROMDrive'), 'The drive.') }, returns: nothing, right: 'change', errors: CONFIG_ERRORS,
      example: { params: { this: VM, drive: `DVDROMDrive/${VM.slice(15)}/ide1-0` }, result: null },
    }),
    get_SCSIControllers: get('The SCSI adapters.', refs('SCSIController'), [{ $ref: `SCSIController/${VM.slice(15)}/0` }], VM),
    AddSCSIController: method(`Adds a SCSI adapter (at most ${PROFILE.scsi.adapters}): ${SCSI_MODELS.join(' (the default) or ')} (the "optimized" choice).`, {
      params: { model: param(oneOf(SCSI_MODELS), 'The adapter model.', true) }, returns: ref('SCSIController'), right: 'change', errors: CONFIG_ERRORS,
      example: { params: { this: VM }, result: { $ref: `SCSIController/${VM.slice(15)}/0` } },
    }),
    RemoveSCSIController: method('Removes a SCSI adapter that has no disks; later adapters move up.', {
      params: { controller: param(ref('SCSIController'), 'The adapter.') }, returns: nothing, right: 'change', errors: ['VM_E_DRIVE_IN_USE', ...CONFIG_ERRORS],
      example: { params: { this: VM, controller: `SCSIController/${VM.slice(15)}/0` }, result: null },
    }),
    get_NetworkAdapters: get('The network adapters.', refs('NetworkAdapter'), [{ $ref: `NetworkAdapter/${VM.slice(15)}/0` }], VM),
    AddNetworkAdapter: method(`Adds a network adapter (at most ${PROFILE.networkAdapters.max}) with a new MAC address under 00:03:FF: ${NIC_MODELS.join(', ')}.`, {
      params: { model: param(oneOf(NIC_MODELS), 'The model (tulip when omitted).', true), ethernetAddress: param(string, 'A MAC address under 00:03:FF; generated when omitted.', true) },
      returns: ref('NetworkAdapter'), right: 'change', errors: CONFIG_ERRORS,
      example: { params: { this: VM }, result: { $ref: `NetworkAdapter/${VM.slice(15)}/0` } },
    }),
    RemoveNetworkAdapter: method('Removes a network adapter; later adapters move up.', {
      params: { adapter: param(ref('NetworkAdapter'), 'The adapter.') }, returns: nothing, right: 'change', errors: CONFIG_ERRORS,
      example: { params: { this: VM, adapter: `NetworkAdapter/${VM.slice(15)}/0` }, result: null },
    }),
    get_USBDevices: get('The USB devices on the VM\'s UHCI controller.', { type: 'array', items: oneOf(USB_DEVICES) }, ['Tablet'], VM),
    AddUSBDevice: method(`Adds a USB device; only ${USB_DEVICES.join(', ')} exist in the profile.`, {
      params: { type: param(string, `One of ${USB_DEVICES.join(', ')}.`) }, returns: nothing, right: 'change', errors: CONFIG_ERRORS,
      example: { params: { this: VM, type: 'Tablet' }, result: null },
    }),
    RemoveUSBDevice: method('Removes a USB device.', {
      params: { type: param(oneOf(USB_DEVICES), 'The device.') }, returns: nothing, right: 'change', errors: CONFIG_ERRORS,
      example: { params: { this: VM, type: 'Tablet' }, result: null },
    }),
    get_SerialPort2: get('The text file COM2 writes to, or null when COM2 is not connected (COM1 is always the serial console).', string, '/var/lib/vserver/web/com2.txt', VM),
    ConfigureSerialPort2: method(`Connects COM2 to a text file (IVMSerialPort.Configure with a text file), or disconnects it when path is omitted. ${PORT_FILE_DOC}`, {
      params: { path: path('The text file; its folder must exist. COM2 is disconnected when omitted.', true) }, returns: nothing, right: 'change',
      errors: ['VM_E_FILE_NOT_FOUND', 'VM_E_INVALID_PATH', ...CONFIG_ERRORS],
      example: { params: { this: VM, path: 'web/com2.txt' }, result: null },
    }),
    get_ParallelPort1: get('The text file LPT1 writes to, or null when LPT1 is not connected.', string, null, VM),
    ConfigureParallelPort1: method(`Connects LPT1 to a text file (IVMParallelPort), or disconnects it when path is omitted. ${PORT_FILE_DOC}`, {
      params: { path: path('The text file; its folder must exist. LPT1 is disconnected when omitted.', true) }, returns: nothing, right: 'change',
      errors: ['VM_E_FILE_NOT_FOUND', 'VM_E_INVALID_PATH', ...CONFIG_ERRORS],
      example: { params: { this: VM, path: 'web/lpt1.txt' }, result: null },
    }),
    get_FloppyDrive: get(`The floppy drive (a VM has at most ${PROFILE.floppyDrives}) with the image in it (image null when empty), or null when the VM has none.`,
      { type: 'object', fields: { image: '.vfd path or null' } }, { image: '/var/lib/vserver/floppies/tools.vfd' }, VM),
    AddFloppyDrive: method('Adds the floppy drive, empty (IVMFloppyDrive).', {
      returns: nothing, right: 'change', errors: ['VM_E_DRIVE_IN_USE', ...CONFIG_ERRORS], example: { params: { this: VM }, result: null },
    }),
    RemoveFloppyDrive: method('Removes the floppy drive, and the image in it; the image file is kept.', {
      returns: nothing, right: 'change', errors: ['VM_E_DRIVE_INVALID', ...CONFIG_ERRORS], example: { params: { this: VM }, result: null },
    }),
    AttachFloppyImage: method('Puts a floppy disk image (.vfd) in the floppy drive (IVMFloppyDrive.AttachImage); the VM must have the drive.', {
      params: { path: path('The floppy disk image.') }, returns: nothing, right: 'change', errors: ['VM_E_FILE_NOT_FOUND', 'VM_E_INVALID_PATH', 'VM_E_DRIVE_INVALID', ...CONFIG_ERRORS],
      example: { params: { this: VM, path: 'floppies/tools.vfd' }, result: null },
    }),
    ReleaseFloppyImage: method('Empties the floppy drive (IVMFloppyDrive.ReleaseImage).', {
      returns: nothing, right: 'change', errors: ['VM_E_DRIVE_INVALID', ...CONFIG_ERRORS], example: { params: { this: VM }, result: null },
    }),
    Startup: task('Turns the VM on, or restores it from its saved state. The task completes when the VM runs.', 'control', {}, { this: VM }, ['VM_E_VM_RUNNING', 'VM_E_HD_IMAGE_NOT_FOUND', 'VM_E_START_FAILED', 'VM_E_TURNED_OFF', 'VM_E_MAC_IN_USE']),
    TurnOff: task('Cuts the power, as pulling the plug.', 'control', {}, { this: VM }, ['VM_E_VM_NOT_RUNNING']),
    Save: task('Saves the VM\'s state to its .vsv and stops it (Saving, TurningOff, TurnedOff; then Saved).', 'control', {}, { this: VM }, ['VM_E_VM_NOT_RUNNING']),
    Reset: task('A hardware reset.', 'control', {}, { this: VM }, ['VM_E_VM_NOT_RUNNING']),
    Pause: method('Freezes the VM in memory.', { returns: nothing, right: 'control', errors: ['VM_E_VM_NOT_RUNNING'], example: { params: { this: VM }, result: null } }),
    Resume: method('Continues a paused VM.', { returns: nothing, right: 'control', errors: ['VM_E_VM_NOT_RUNNING'], example: { params: { this: VM }, result: null } }),
    DiscardSavedState: method('Throws the saved state away; the VM is then turned off.', { returns: nothing, right: 'control', errors: ['VM_E_VM_RUNNING', 'VM_E_NO_SAVED_STATE'], example: { params: { this: VM }, result: null } }),
    get_GuestOS: get('The guest operating system (IVMGuestOS).', ref('GuestOS'), { $ref: `GuestOS/${VM.slice(15)}` }, VM),
    get_Display: get('The VM\'s screen (IVMDisplay).', ref('Display'), { $ref: `Display/${VM.slice(15)}` }, VM),
    get_Security: get('The VM\'s access entries.', ref('Security'), { $ref: `Security/${VM}` }, VM),
    GetSerialOutput: method(`What a serial port of the running VM has written since position "since": a position is a byte offset into everything the port wrote since the VM was turned on (0 again at the next turn on). COM1 keeps the last ${DEFAULT_SCROLLBACK_BYTES / 1024} KiB (its scrollback); asking from older than that returns what is kept and says how many bytes were skipped. COM2 is read from its file when it is connected to one, with the same positions and at most as much per answer. The text is UTF-8 and ends on a whole character; ask again from "next" for what follows. Needs the control right, as the consoles do: a guest's console may show secrets.`, {
      params: {
        port: param({ type: 'integer', min: 1, max: 2 }, '1 for COM1 (the serial console), 2 for COM2.'),
        since: param({ type: 'integer', min: 0 }, 'The position to read from: "next" of the previous answer. Everything kept when omitted; a position past the end is refused.', true),
      },
      returns: { type: 'object', fields: { text: 'string: the output from "since" on', next: 'integer: the position after it, to ask from next time', skipped: 'integer: bytes lost between "since" and the oldest kept (0 when none)' } },
      right: 'control', errors: ['VM_E_VM_NOT_RUNNING', 'VM_E_PORT_NOT_CONNECTED'],
      example: { params: { this: VM, port: 1, since: 1024 }, result: { text: 'guest# uptime\r\n 10:00:03 up 2 min\r\n', next: 1061, skipped: 0 } },
    }),
    CreateConsoleTicket: method(`A one-time ticket for a console WebSocket of the running VM (${CONSOLE_KINDS.join(' or ')}), for a caller with a bearer token: open the url it gives, with the same "Authorization: Bearer" header, within ${TICKET_SECONDS} s. The ticket opens one console, once, for this token only. docs/consoles.md describes the protocol; the website asks for its tickets itself.`, {
      params: { kind: param(oneOf(CONSOLE_KINDS), `The console: ${CONSOLE_KINDS.join(' or ')}.`) },
      returns: { type: 'object', fields: { ticket: 'string', url: 'string: the WebSocket path with the ticket, /console/KIND?ticket=...', expiresInSeconds: 'integer' } },
      right: 'control', errors: ['VM_E_VM_NOT_RUNNING', 'VM_E_TOKEN_REQUIRED'],
      example: { params: { this: VM, kind: 'serial' }, result: { ticket: 'q3T…', url: '/console/serial?ticket=q3T…', expiresInSeconds: TICKET_SECONDS } },
    }),
  },
};

const connectionRef = `HardDiskConnection/${VM.slice(15)}/scsi0-0`;
const hardDiskConnection: InterfaceSpec = {
  doc: 'A VHD attached to a VM at a bus position (IVMHardDiskConnection). Rights are the VM\'s.',
  ref: 'HardDiskConnection/<vm id>/<ide|scsi><bus>-<device>',
  members: {
    get_HardDisk: get('The disk.', ref('HardDisk'), { $ref: DISK }, connectionRef),
    get_BusType: get('IDE or SCSI.', oneOf(['IDE', 'SCSI']), 'SCSI', connectionRef),
    get_BusNumber: get('IDE channel or SCSI adapter.', integer, 0, connectionRef),
    get_DeviceNumber: get('IDE device or SCSI target.', integer, 0, connectionRef),
  },
};

const dvdRef = `DVDROMDrive/${VM.slice(15)}/ide1-0`;
const dvdDrive: InterfaceSpec = {
  doc: 'A CD/DVD drive on IDE (IVMDVDDrive). Media can be changed while the VM is turned off.',
  ref: 'DVDROMDrive/<vm id>/ide<bus>-<device>',
  members: {
    get_BusNumber: get('IDE channel.', integer, 1, dvdRef),
    get_DeviceNumber: get('IDE device.', integer, 0, dvdRef),
    get_ImageFile: get('The ISO in the drive, or null.', string, '/var/lib/vserver/isos/debian.iso', dvdRef),
    AttachImage: method('Puts an ISO in the drive.', {
      params: { path: path('The ISO image.') }, returns: nothing, right: 'change', errors: ['VM_E_FILE_NOT_FOUND', ...CONFIG_ERRORS],
      example: { params: { this: dvdRef, path: 'isos/debian.iso' }, result: null },
    }),
    ReleaseImage: method('Empties the drive.', { returns: nothing, right: 'change', errors: CONFIG_ERRORS, example: { params: { this: dvdRef }, result: null } }),
  },
};

const scsiRef = `SCSIController/${VM.slice(15)}/0`;
const scsiController: InterfaceSpec = {
  doc: 'A SCSI adapter of a VM (IVMSCSIController).',
  ref: 'SCSIController/<vm id>/<index>',
  members: {
    get_ID: get('Its index (0-3), the busNumber of its disks.', integer, 0, scsiRef),
    get_Model: get('lsi53c895a or virtio-scsi.', oneOf(SCSI_MODELS), 'lsi53c895a', scsiRef),
  },
};

const nicRef = `NetworkAdapter/${VM.slice(15)}/0`;
const networkAdapter: InterfaceSpec = {
  doc: 'A network adapter of a VM (IVMNetworkAdapter).',
  ref: 'NetworkAdapter/<vm id>/<index>',
  members: {
    get_EthernetAddress: get('Its MAC address, under 00:03:FF.', string, '00:03:FF:1A:2B:3C', nicRef),
    get_Model: get('tulip, e1000 or virtio.', oneOf(NIC_MODELS), 'tulip', nicRef),
    get_VirtualNetwork: get('The network it is connected to: "none" (unplugged) until virtual networks exist.', string, 'none', nicRef),
  },
};

const guestRef = `GuestOS/${VM.slice(15)}`;
const guestOS: InterfaceSpec = {
  doc: 'The guest operating system of a VM (IVMGuestOS).',
  ref: 'GuestOS/<vm id>',
  members: {
    Shutdown: task('Asks the guest to shut down by the ACPI power button; the task completes when the VM is off (or fails after its timeout, and the VM is turned off).', 'control', {}, { this: guestRef }, ['VM_E_VM_NOT_RUNNING']),
  },
};

const displayRef = `Display/${VM.slice(15)}`;
const display: InterfaceSpec = {
  doc: 'The screen of a VM (IVMDisplay).',
  ref: 'Display/<vm id>',
  members: {
    get_Thumbnail: get('A PNG of the screen now, base64, with its size; null when the VM is not running.', { type: 'object', fields: { mimeType: '"image/png"', width: 'integer', height: 'integer', data: 'base64' } },
      { mimeType: 'image/png', width: 720, height: 400, data: 'iVBORw0KGgo…' }, displayRef),
  },
};

const taskSpec: InterfaceSpec = {
  doc: 'A long operation (IVMTask). Tasks are kept with their log after they finish; the caller needs read on the object the task acts on.',
  ref: 'Task/<id>',
  members: {
    get_Description: get('What the task does.', string, 'Startup of web', TASK),
    get_PercentCompleted: get('0 to 100.', integer, 100, TASK),
    get_IsComplete: get('Whether it has finished (done, failed or cancelled).', boolean, true, TASK),
    get_IsCancelable: get('Whether Cancel can stop it.', boolean, false, TASK),
    get_Result: get('Its result once done: an object reference, a value, or null.', { type: 'object' }, null, TASK),
    get_Error: get('Why it failed, or null.', { type: 'object', fields: { name: 'error name', message: 'string' } }, null, TASK),
    get_Log: get('Its log lines, with times.', { type: 'array', items: string }, ['2026-11-27T10:00:00.000Z Startup of web', '2026-11-27T10:00:03.000Z Running'], TASK),
    get_Object: get('The object it acts on.', string, VM, TASK),
    get_Started: get('When it started.', string, '2026-11-27T10:00:00.000Z', TASK),
    WaitForCompletion: method('Waits up to timeoutMs (at most 10 minutes) for the task; returns IsComplete.', {
      params: { timeoutMs: param({ type: 'integer', min: 0, max: 600_000 }, 'How long to wait.') }, returns: boolean, right: 'read',
      example: { params: { this: TASK, timeoutMs: 60000 }, result: true },
    }),
    Cancel: method('Stops a cancelable task; what it did is undone where the operation allows.', {
      returns: nothing, right: 'control', errors: ['VM_E_TASK_NOT_CANCELABLE'], example: { params: { this: TASK }, result: null },
    }),
  },
};

const hardDisk: InterfaceSpec = {
  doc: 'A VHD file (IVMHardDisk). The operations return tasks and refuse a disk a running VM uses.',
  ref: 'HardDisk/<absolute path>',
  members: {
    get_File: get('The file.', string, '/var/lib/vserver/disks/web.vhd', DISK),
    get_Type: get('Dynamic, Fixed or Differencing.', oneOf(DISK_TYPES), 'Dynamic', DISK),
    get_SizeInGuest: get('The size the guest sees, in bytes.', integer, DEFAULT_DISK_BYTES, DISK),
    get_SizeOnHost: get('The file\'s size, in bytes.', integer, 42496, DISK),
    get_HostFreeDiskSpace: get('Free bytes on the host file system holding it.', integer, 53687091200, DISK),
    get_Parent: get('The parent of a differencing disk, or null.', ref('HardDisk'), null, DISK),
    get_Info: get('Everything the VHD engine reports: geometry, unique id, blocks, the parent chain.', { type: 'object' }, { type: 'Dynamic', sizeInGuest: DEFAULT_DISK_BYTES }, DISK),
    Compact: task('Compacts a dynamic disk: blocks of zeros are dropped.', 'change', {}, { this: DISK }, ['VHD_E_WRONG_TYPE', 'VM_E_DRIVE_IN_USE']),
    Convert: task('Writes a copy of the disk of another type (Dynamic or Fixed) at path.', 'change', { path: path('The new file.'), type: param(oneOf(['Dynamic', 'Fixed']), 'The new type.') }, { this: DISK, path: 'disks/web-fixed.vhd', type: 'Fixed' }, ['VHD_E_EXISTS']),
    Merge: task('Merges a differencing disk into its parent and deletes it; neither may be in use, and no VM may have the child attached.', 'change', {}, { this: DISK }, ['VHD_E_WRONG_TYPE', 'VM_E_DRIVE_IN_USE']),
    MergeTo: task('Merges a differencing disk and its parents into a new disk at path.', 'change', { path: path('The new file.') }, { this: DISK, path: 'disks/web-flat.vhd' }, ['VHD_E_WRONG_TYPE', 'VHD_E_EXISTS']),
    Expand: task('Grows the disk to sizeMB.', 'change', { sizeMB: param({ type: 'integer', min: 1, max: 2_088_960 }, 'The new size in MB.') }, { this: DISK, sizeMB: 32768 }, ['VHD_E_SIZE_LIMIT', 'VM_E_DRIVE_IN_USE']),
  },
};

const securityRef = `Security/${VM}`;
const security: InterfaceSpec = {
  doc: 'The access entries of an object (IVMSecurity): for a user or a role, Allowed or Denied, with rights read, change, control, delete, changePermissions. Entries add to the rights of the user\'s role; Denied wins over Allowed. Administrators keep every right.',
  ref: 'Security/<object reference>',
  members: {
    get_AccessRights: get('The entries.', { type: 'array', items: { type: 'object', fields: { name: 'user name or "role:<Role>"', type: '"Allowed" or "Denied"', rights: 'array of rights' } } },
      [{ name: 'ops', type: 'Allowed', rights: ['read', 'control'] }], securityRef),
    get_CurrentUserAccessRights: get('The rights the caller has on the object.', { type: 'array', items: oneOf(['read', 'change', 'control', 'delete', 'changePermissions']) }, ['read', 'control'], securityRef),
    AddEntry: method('Adds (or replaces) the entry for a user or a role.', {
      params: {
        name: param(string, 'A user name, or "role:Operator" for everyone with that role.'),
        type: param(oneOf(['Allowed', 'Denied']), 'Allowed or Denied.'),
        rights: param({ type: 'array', items: oneOf(['read', 'change', 'control', 'delete', 'changePermissions']) }, 'The rights.'),
      },
      returns: nothing, right: 'changePermissions', errors: ['VM_E_USER_UNKNOWN'],
      example: { params: { this: securityRef, name: 'ops', type: 'Allowed', rights: ['read', 'control'] }, result: null },
    }),
    RemoveEntry: method('Removes the entry for a user or role.', {
      params: { name: param(string, 'The user or "role:<Role>".') }, returns: nothing, right: 'changePermissions', errors: ['VM_E_ENTRY_UNKNOWN'],
      example: { params: { this: securityRef, name: 'ops' }, result: null },
    }),
  },
};

export const SCHEMA: Schema = {
  VirtualServer: virtualServer,
  VirtualMachine: virtualMachine,
  HardDiskConnection: hardDiskConnection,
  DVDROMDrive: dvdDrive,
  SCSIController: scsiController,
  NetworkAdapter: networkAdapter,
  GuestOS: guestOS,
  Display: display,
  Task: taskSpec,
  HardDisk: hardDisk,
  Security: security,
};

/** Events sent over the WebSocket as JSON-RPC notifications. */
export const EVENTS: Record<string, { doc: string; params: Record<string, string> }> = {
  'VirtualMachine.OnStateChange': { doc: 'A VM changed state.', params: { vm: 'object reference', name: 'the VM\'s name', state: 'VMVMState name', previous: 'VMVMState name or null', reason: 'why it stopped (or crashed), or null' } },
  'Task.OnProgress': { doc: 'A task progressed or finished.', params: { task: 'object reference', description: 'string', percentCompleted: 'integer', isComplete: 'boolean', error: '{name, message} or null' } },
  'VirtualServer.OnEventLogged': { doc: 'An entry was added to the event log.', params: { id: 'integer', time: 'ISO 8601', category: 'string', severity: 'string', message: 'string', who: 'string', object: 'object reference or null' } },
};

/** Errors every member may return. */
export const COMMON_ERRORS = ['VM_E_NOT_AUTHENTICATED', 'VM_E_ACCESS_DENIED', 'VM_E_INVALID_PARAMS', 'VM_E_OBJECT_UNKNOWN', 'VM_E_PATH_OUTSIDE_ROOTS', 'VM_E_FILE_TIMEOUT'] as const;
