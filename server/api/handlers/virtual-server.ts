// VirtualServer's members: the host, the profile's limits, the catalog of VMs, disk creation,
// tasks, the event log, users and tokens.

import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { probeEngine } from '../../../vmm/engine.js';
import { PROFILE, VIRTUAL_SERVER_LIMITS } from '../../../vmm/profile.js';
import { isActive } from '../../../vmm/state.js';
import { narrower, type Role } from '../../auth/users.js';
import type { Call } from '../dispatch.js';
import { ApiError } from '../errors.js';
import { inspectedDisk, ref, type Reference, SERVER_REF } from '../objects.js';
import type { DiskJobArgs } from '../../disk-jobs.js';
import type { VmRecord } from '../../machines.js';
import { diskTask, type Handlers, newDiskFile, refuseInUse, selfOrAdministrator, vmsWithDisk } from './types.js';

const MB = 1024 * 1024;

let qemuVersion: string | null = null;
function readQemuVersion(): string {
  qemuVersion ??= /version (\S+)/.exec(spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).stdout ?? '')?.[1] ?? 'not installed';
  return qemuVersion;
}

function canRead(call: Call, object: string): boolean {
  return call.services.access.canRead(call.principal, object);
}

/** Creates a disk in a task (the disk job makes its folder first); the new disk's reference is the task's result. */
function creation<Op extends 'createDynamic' | 'createFixed' | 'createDifferencing'>(call: Call, description: string, op: Op, args: DiskJobArgs<Op>): Reference {
  return diskTask(call, `HardDisk/${args.target}`, description, op, args, () => ref('HardDisk', args.target));
}

const limit = (name: keyof typeof VIRTUAL_SERVER_LIMITS) => (): number => VIRTUAL_SERVER_LIMITS[name];

export const virtualServerHandlers: Handlers = {
  'VirtualServer.get_Name': ({ services }) => services.hostName,
  'VirtualServer.get_Version': ({ services }) => services.version,
  'VirtualServer.get_UpTime': ({ services }) => Math.floor((Date.now() - services.startedAt) / 1000),
  'VirtualServer.get_HostInfo': async () => {
    const engine = await probeEngine();
    return {
      hostName: os.hostname(), logicalProcessors: os.availableParallelism(), memoryMB: Math.round(os.totalmem() / MB),
      memoryAvailableMB: Math.round(os.freemem() / MB), operatingSystem: `${os.type()} ${os.release()}`,
      engine: engine.engine, engineReason: engine.reason, qemuVersion: readQemuVersion(),
    };
  },
  'VirtualServer.get_MaximumMemoryPerVM': limit('MaximumMemoryPerVM'),
  'VirtualServer.get_MinimumMemoryPerVM': limit('MinimumMemoryPerVM'),
  'VirtualServer.get_MaximumNumberOfProcessorsPerVM': limit('MaximumNumberOfProcessorsPerVM'),
  'VirtualServer.get_MaximumNetworkAdaptersPerVM': limit('MaximumNetworkAdaptersPerVM'),
  'VirtualServer.get_MaximumNumberOfIDEBuses': limit('MaximumNumberOfIDEBuses'),
  'VirtualServer.get_MaximumNumberOfSCSIControllers': limit('MaximumNumberOfSCSIControllers'),
  'VirtualServer.get_MaximumSerialPortsPerVM': () => PROFILE.serialPorts,
  'VirtualServer.get_MaximumParallelPortsPerVM': () => PROFILE.parallelPorts,
  'VirtualServer.get_MaximumFloppyDrivesPerVM': () => PROFILE.floppyDrives,
  'VirtualServer.get_StorageRoots': ({ services }) => services.roots.roots,
  'VirtualServer.get_VirtualMachines': (call) => call.services.machines.list().filter((vm) => canRead(call, `VirtualMachine/${vm.id}`)).map((vm) => ref('VirtualMachine', vm.id)),
  'VirtualServer.CreateVirtualMachine': async ({ services, params }) => {
    const name = params.name as string;
    const folder = await services.files.run({ op: 'resolve', input: params.path === undefined ? safeFolderName(name) : params.path as string, options: { kind: 'VM folder' } });
    return ref('VirtualMachine', (await services.machines.create(name, folder)).id);
  },
  'VirtualServer.RegisterVirtualMachine': async ({ services, params }) => {
    // A regular file: the catalog reads it at once, and a FIFO would never answer.
    const file = await services.files.run({ op: 'regular-file', input: params.path as string, kind: '.vmc file' });
    return ref('VirtualMachine', (await services.machines.register(file)).id);
  },
  'VirtualServer.UnregisterVirtualMachine': async ({ services, params }) => {
    const vm = await services.machines.remove((params.vm as VmRecord).id, false);
    services.access.forget(`VirtualMachine/${vm.id}`);
  },
  'VirtualServer.DeleteVirtualMachine': async ({ services, params }) => {
    const vm = await services.machines.remove((params.vm as VmRecord).id, true);
    services.access.forget(`VirtualMachine/${vm.id}`);
  },
  'VirtualServer.FindVirtualMachine': (call) => {
    const vm = call.services.machines.findByName(call.params.name as string);
    return vm && canRead(call, `VirtualMachine/${vm.id}`) ? ref('VirtualMachine', vm.id) : null;
  },
  'VirtualServer.CreateDynamicVirtualHardDisk': async (call) => {
    const file = await newDiskFile(call, call.params.path);
    const size = call.params.sizeMB === undefined ? undefined : (call.params.sizeMB as number) * MB;
    return creation(call, `Create dynamic disk ${file}`, 'createDynamic', { target: file, size });
  },
  'VirtualServer.CreateFixedVirtualHardDisk': async (call) => {
    const file = await newDiskFile(call, call.params.path);
    return creation(call, `Create fixed disk ${file}`, 'createFixed', { target: file, size: (call.params.sizeMB as number) * MB });
  },
  'VirtualServer.CreateDifferencingVirtualHardDisk': async (call) => {
    const file = await newDiskFile(call, call.params.path);
    // A parent that is not a VHD, or whose own chain leaves the roots, is refused now, not in the task.
    const parent = (await inspectedDisk(call.services, call.params.parentPath as string, 'parent disk')).file;
    // A child of a disk that is still being written is stale from birth. A saved VM's disk is at
    // rest and matches its saved memory, so a child of it is as sound as one of an off VM's disk.
    const { machines } = call.services;
    const writing = vmsWithDisk(call, parent).find((vm) => machines.isBeingTurnedOn(vm) || isActive(machines.state(vm)));
    if (writing) {
      const state = machines.isBeingTurnedOn(writing) ? 'being turned on' : machines.state(writing);
      throw new ApiError('VM_E_DRIVE_IN_USE',
        `${parent} is a disk of the VM ${writing.name}, which is ${state} and writes to it; turn ${writing.name} off or save it first`);
    }
    refuseInUse(call, parent);
    return creation(call, `Create differencing disk ${file} (parent ${parent})`, 'createDifferencing', { target: file, parent });
  },
  'VirtualServer.GetHardDisk': async ({ services, params }) => ref('HardDisk', (await inspectedDisk(services, params.path as string)).file),
  'VirtualServer.GetFiles': async ({ services, params }) => {
    const listing = await services.files.run({ op: 'list', dir: params.path as string | undefined });
    return { root: listing.root, folder: listing.path, entries: listing.entries };
  },
  'VirtualServer.get_Tasks': (call) => call.services.tasks.list().filter((t) => canRead(call, t.object ?? SERVER_REF)).map((t) => ref('Task', t.id)),
  'VirtualServer.GetEvents': (call) => call.services.events.query(call.params, (e) => call.services.access.canSee(call.principal, e)),
  'VirtualServer.get_Security': () => ref('Security', SERVER_REF),
  'VirtualServer.get_Users': ({ services }) => services.users.list(),
  'VirtualServer.CreateUser': async ({ services, params }) => {
    await services.users.create(params.name as string, params.password as string, params.role as Role);
  },
  'VirtualServer.DeleteUser': ({ services, params }) => {
    services.users.delete(params.name as string);
    services.access.forgetPrincipal(params.name as string);
    services.sessions.endUser(params.name as string);
  },
  'VirtualServer.SetUserRole': ({ services, params }) => services.users.setRole(params.name as string, params.role as Role),
  'VirtualServer.SetUserPassword': async (call) => {
    selfOrAdministrator(call, call.params.name as string, 'set the password');
    await call.services.users.setPassword(call.params.name as string, call.params.password as string);
    call.services.sessions.endUser(call.params.name as string);
  },
  'VirtualServer.CreateToken': ({ services, principal, params }) => {
    const role = (params.role as Role | undefined) ?? principal.role;
    // Asking for more than one has is refused, not quietly lowered: the script would fail later, puzzlingly.
    if (narrower(principal.role, role) !== role) {
      throw new ApiError('VM_E_ACCESS_DENIED', `a ${principal.role} caller cannot create a token with the role ${role}; ask for ${principal.role} or less`);
    }
    const created = services.users.createToken(principal.user, {
      role, description: params.description as string | undefined, expiresInDays: params.expiresInDays as number | undefined,
    });
    return { id: created.id, token: created.token, user: created.user, role: created.role, expires: created.expires };
  },
  'VirtualServer.get_Tokens': ({ services, principal }) => services.users.tokens(principal.role === 'Administrator' ? null : principal.user),
  'VirtualServer.RevokeToken': (call) => {
    const token = call.services.users.token(call.params.id as string);
    if (!token) throw new ApiError('VM_E_TOKEN_UNKNOWN', `there is no token ${String(call.params.id)}`);
    selfOrAdministrator(call, token.user, 'revoke the tokens');
    call.services.users.revokeToken(token.id);
  },
};

/** A VM's default folder: its name, made safe for a file system. */
function safeFolderName(name: string): string {
  return name.replace(/[^A-Za-z0-9._ -]/g, '_').replace(/^\.+/, '_');
}
