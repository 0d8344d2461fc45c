// Object references resolved to the things they name: a VM, a part of one, a task, a disk, the
// access entries of an object. The grammar of references is server/references.ts.

import { hardDisks } from '../../vmm/config.js';
import type { TaskState } from '../tasks.js';
import type { VmRecord } from '../machines.js';
import type { Services } from './services.js';
import { ApiError, invalidParams, unknownObject } from '../errors.js';
import { StoragePathError } from '../storage-roots.js';
import type { DiskInfo } from '../../storage/vhd/index.js';
import type { SnapshotRecord } from '../layer-store.js';
import type { ClusterService } from '../cluster/model.js';
import { SERVER_REF, splitRef, vmIdOf } from '../references.js';

export { SERVER_REF, ref, guardOf, vmIdOf, splitRef, type Reference } from '../references.js';

export interface ConnectionObject { vm: VmRecord; bus: 'IDE' | 'SCSI'; busNumber: number; deviceNumber: number; path: string; slot: string }
export interface DriveObject { vm: VmRecord; channel: number; device: number; image: string | null }
export interface IndexedObject { vm: VmRecord; index: number }
/** A part of a VM that is the VM seen another way (its guest OS, its display). */
export interface VmPartObject { vm: VmRecord }
export interface SecurityObject { object: string }
/** A snapshot of a VM (server/snapshots.ts). */
export interface SnapshotObject { vm: VmRecord; snapshot: SnapshotRecord }
/** The cluster ("Cluster/<name>") and one of its hosts ("Host/<name>"), by name; their members ask services.cluster. */
export interface ClusterObject { name: string }
export interface HostObject { name: string }

/** Resolves a reference of interface `iface` to its object; VM_E_OBJECT_UNKNOWN (or a more precise error) when it names nothing. */
export async function resolveRef(services: Services, iface: string, reference: string): Promise<unknown> {
  const { iface: named, rest } = splitRef(reference);
  if (named !== iface) throw invalidParams(`"${reference}" is not a ${iface} reference (${iface}/...)`);
  switch (iface) {
    case 'VirtualMachine': return vmOf(services, rest, reference);
    case 'GuestOS':
    case 'Display': return { vm: vmOf(services, rest, reference) };
    case 'HardDiskConnection': return connectionOf(services, rest, reference);
    case 'DVDROMDrive': return driveOf(services, rest, reference);
    case 'SCSIController': return indexed(services, rest, reference, (vm) => vm.config.scsi.length);
    case 'NetworkAdapter': return indexed(services, rest, reference, (vm) => vm.config.networkAdapters.length);
    case 'Snapshot': return snapshotOf(services, rest, reference);
    case 'Task': return taskOf(services, rest, reference);
    case 'HardDisk': return existingDisk(services, rest);
    case 'Security': return securityOf(services, rest, reference);
    case 'VirtualNetwork':
    case 'DHCPVirtualNetworkServer': return services.networks.require(rest);
    case 'Cluster': return clusterObjectOf(services, rest, reference);
    case 'Host': return hostObjectOf(services, rest);
    default: throw unknownObject(reference);
  }
}

/** A missing disk is Virtual Server's VM_E_HD_IMAGE_NOT_FOUND. */
function diskError(e: unknown): unknown {
  return e instanceof StoragePathError && e.code === 'VM_E_FILE_NOT_FOUND' ? new ApiError('VM_E_HD_IMAGE_NOT_FOUND', e.message) : e;
}

/** An existing file inside the storage roots (its real path), looked up off the event loop. */
export async function existingDisk(services: Services, input: string, kind = 'hard disk image'): Promise<string> {
  try {
    return await services.files.run({ op: 'resolve', input, options: { mustExist: true, kind } });
  } catch (e) {
    throw diskError(e);
  }
}

/**
 * An existing VHD inside the storage roots, inspected off the event loop: every file of its
 * chain lies inside them too, or VM_E_PATH_OUTSIDE_ROOTS names the link at fault and nothing
 * of the file outside is told.
 */
export async function inspectedDisk(services: Services, input: string, kind = 'hard disk image'): Promise<DiskInfo> {
  try {
    return await services.files.run({ op: 'inspect', input, kind });
  } catch (e) {
    throw diskError(e);
  }
}

function vmOf(services: Services, id: string, reference: string): VmRecord {
  const vm = services.machines.get(id.split('/')[0]);
  if (!vm) throw new ApiError('VM_E_VM_UNKNOWN', `there is no virtual machine ${reference.includes('/') ? `for ${reference}` : id}`);
  return vm;
}

function parts(rest: string): [string, string] {
  const slash = rest.indexOf('/');
  return slash < 0 ? [rest, ''] : [rest.slice(0, slash), rest.slice(slash + 1)];
}

function connectionOf(services: Services, rest: string, reference: string): ConnectionObject {
  const [vmId, slot] = parts(rest);
  const vm = vmOf(services, vmId, reference);
  // The slot names are the VMM's own (ide0-1, scsi2-5): its list of the VM's disks says which exist.
  const match = /^(ide|scsi)(\d)-(\d)$/.exec(slot);
  const disk = match && hardDisks(vm.config).find((d) => d.slot === slot);
  if (!match || !disk) throw unknownObject(reference);
  return { vm, bus: match[1] === 'ide' ? 'IDE' : 'SCSI', busNumber: Number(match[2]), deviceNumber: Number(match[3]), path: disk.path, slot };
}

function snapshotOf(services: Services, rest: string, reference: string): SnapshotObject {
  const [vmId, id] = parts(rest);
  const vm = vmOf(services, vmId, reference);
  const snapshot = services.layers.store.snapshot(vm.id, id);
  if (!snapshot || snapshot.state === 'creating') throw new ApiError('VM_E_SNAPSHOT_UNKNOWN', `${vm.name} has no snapshot ${id}`, { ref: reference });
  return { vm, snapshot };
}

function driveOf(services: Services, rest: string, reference: string): DriveObject {
  const [vmId, slot] = parts(rest);
  const vm = vmOf(services, vmId, reference);
  const match = /^ide(\d)-(\d)$/.exec(slot);
  const drive = match && vm.config.ide.find((d) => d.type === 'DVD' && d.channel === Number(match[1]) && d.device === Number(match[2]));
  if (!drive || drive.type !== 'DVD') throw unknownObject(reference);
  return { vm, channel: drive.channel, device: drive.device, image: drive.image };
}

function indexed(services: Services, rest: string, reference: string, count: (vm: VmRecord) => number): IndexedObject {
  const [vmId, index] = parts(rest);
  const vm = vmOf(services, vmId, reference);
  const n = Number(index);
  if (!/^\d+$/.test(index) || n >= count(vm)) throw unknownObject(reference);
  return { vm, index: n };
}

/**
 * The cluster this host belongs to, or VM_E_NOT_CLUSTERED. Members call it rather than the
 * resolution, so that on a host without cluster settings the caller's right is checked first.
 */
export function clusterOf(services: Services): ClusterService {
  if (!services.cluster) throw new ApiError('VM_E_NOT_CLUSTERED', `${services.hostName} is not in a cluster: vserverd was started without cluster settings (--cluster, --etcd, --host-name, --host-address)`);
  return services.cluster;
}

function clusterObjectOf(services: Services, name: string, reference: string): ClusterObject {
  const { cluster } = services;
  if (cluster && name !== cluster.name) throw new ApiError('VM_E_OBJECT_UNKNOWN', `${reference}: this host is in the cluster ${cluster.name}`, { ref: reference });
  return { name };
}

/** A host that ever joined the cluster; VM_E_HOST_UNKNOWN names those that did. */
export async function hostObjectOf(services: Services, name: string): Promise<HostObject> {
  const { cluster } = services;
  if (cluster && !(await cluster.host(name))) {
    const known = (await cluster.hosts()).map((h) => h.name);
    throw new ApiError('VM_E_HOST_UNKNOWN', `no host "${name}" is in the cluster ${cluster.name} (its hosts: ${known.join(', ') || 'none'})`, { host: name });
  }
  return { name };
}

function taskOf(services: Services, id: string, reference: string): TaskState {
  const task = services.tasks.get(id);
  if (!task) throw new ApiError('VM_E_TASK_UNKNOWN', `there is no task ${id} (finished tasks are kept for a while, not forever)`, { ref: reference });
  return task;
}

function securityOf(services: Services, object: string, reference: string): SecurityObject {
  if (object === SERVER_REF) return { object };
  const { iface, rest } = splitRef(object);
  if (iface !== 'VirtualMachine') throw new ApiError('VM_E_OBJECT_UNKNOWN', `${reference}: access entries exist for the server and for virtual machines`);
  vmOf(services, rest, object);
  return { object };
}

/** For messages: the name of what a reference points at. */
export function describeRef(services: Services, reference: string): string {
  const vmId = vmIdOf(reference);
  if (vmId) return services.machines.get(vmId)?.name ?? reference;
  const { iface, rest } = splitRef(reference);
  if (iface === 'HardDisk') return rest; // resolved before any message names it: the file exists
  return reference;
}
