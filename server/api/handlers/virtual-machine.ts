// VirtualMachine's members and those of its parts (disk connections, DVD drives, SCSI adapters,
// network adapters, guest OS, display). Configuration changes go through Machines.reconfigure,
// which refuses them unless the VM is off and validates the whole document against the profile.

import fs from 'node:fs';
import path from 'node:path';
import type { IdeDevice, VmConfig } from '../../../vmm/config.js';
import { hardDisks, normalizeMac, scsiAdapterOf } from '../../../vmm/config.js';
import { PROFILE, type NicModel, type ScsiModel } from '../../../vmm/profile.js';
import { readFrom, scrollbackBytes, type SerialOutput } from '../../../vmm/serial-output.js';
import { isLive, VmError } from '../../../vmm/state.js';
import { type ConsoleKind, consoleTickets, holderOf } from '../../http/console-tickets.js';
import type { VmRecord } from '../../machines.js';
import type { Call } from '../dispatch.js';
import { ApiError, invalidParams } from '../errors.js';
import { PORT_FILE_REFUSED } from '../schema.js';
import { type ConnectionObject, type DriveObject, type IndexedObject, inspectedDisk, ref } from '../objects.js';
import type { Handlers } from './types.js';

const vmOf = (call: Call): VmRecord => call.self as VmRecord;
const partVm = (call: Call): VmRecord => (call.self as { vm: VmRecord }).vm;
const vmId = (call: Call): string => vmOf(call).id;

function reconfigure(call: Call, change: (doc: VmConfig) => void): VmRecord {
  return call.services.machines.reconfigure(vmOf(call).id, change);
}

function pngSize(png: Buffer): { width: number; height: number } {
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

export const virtualMachineHandlers: Handlers = {
  'VirtualMachine.get_Name': (call) => vmOf(call).name,
  'VirtualMachine.put_Name': (call) => { reconfigure(call, (doc) => { doc.name = call.params.value as string; }); },
  'VirtualMachine.get_Notes': (call) => vmOf(call).notes,
  'VirtualMachine.put_Notes': (call) => call.services.machines.setSettings(vmId(call), { notes: call.params.value as string }),
  'VirtualMachine.get_Memory': (call) => vmOf(call).config.memoryMB,
  'VirtualMachine.put_Memory': (call) => { reconfigure(call, (doc) => { doc.memoryMB = call.params.value as number; }); },
  'VirtualMachine.get_AutoStartAtLaunch': (call) => vmOf(call).autoStart,
  'VirtualMachine.put_AutoStartAtLaunch': (call) => call.services.machines.setSettings(vmId(call), { autoStart: call.params.value as VmRecord['autoStart'] }),
  'VirtualMachine.get_AutoStartAtLaunchDelay': (call) => vmOf(call).autoStartDelay,
  'VirtualMachine.put_AutoStartAtLaunchDelay': (call) => call.services.machines.setSettings(vmId(call), { autoStartDelay: call.params.value as number }),
  'VirtualMachine.get_ShutdownActionOnQuit': (call) => vmOf(call).shutdownAction,
  'VirtualMachine.put_ShutdownActionOnQuit': (call) => call.services.machines.setSettings(vmId(call), { shutdownAction: call.params.value as VmRecord['shutdownAction'] }),
  'VirtualMachine.get_State': (call) => call.services.machines.state(vmOf(call)),
  'VirtualMachine.get_Engine': (call) => {
    const status = call.services.machines.status(vmId(call));
    return status?.engine ? { engine: status.engine, reason: status.engineReason ?? '' } : null;
  },
  'VirtualMachine.get_Uptime': (call) => {
    const status = call.services.machines.status(vmId(call));
    // From when the worker saw the VM become Running (turned on or restored), not from QEMU's start.
    return status?.runningSince && isLive(status.state) ? Math.max(0, Math.floor((Date.now() - Date.parse(status.runningSince)) / 1000)) : null;
  },
  'VirtualMachine.get_File': (call) => vmOf(call).vmcPath,
  'VirtualMachine.get_SavedStateFilePath': (call) => vmOf(call).config.savedState,
  'VirtualMachine.get_Configuration': (call) => ({ version: 1, ...vmOf(call).config }),
  'VirtualMachine.get_LastCrash': (call) => call.services.machines.status(vmId(call))?.crashed ?? null,

  'VirtualMachine.get_HardDiskConnections': (call) => hardDisks(vmOf(call).config).map(({ slot }) => ref('HardDiskConnection', `${vmId(call)}/${slot}`)),
  'VirtualMachine.AddHardDiskConnection': async (call) => {
    const vm = vmOf(call);
    const { busType, busNumber, deviceNumber } = call.params as { busType: 'IDE' | 'SCSI'; busNumber: number; deviceNumber: number };
    // A file that is not a VHD, or whose chain leaves the roots, is refused now, not when the VM starts.
    const file = (await inspectedDisk(call.services, call.params.path as string)).file;
    call.services.machines.refuseUnlessOff(vm);
    reconfigure(call, (doc) => {
      if (busType === 'IDE') doc.ide.push({ channel: busNumber, device: deviceNumber, type: 'HardDisk', path: file });
      else scsiAdapterOf(doc, busNumber).disks.push({ target: deviceNumber, path: file });
    });
    return ref('HardDiskConnection', `${vm.id}/${busType.toLowerCase()}${busNumber}-${deviceNumber}`);
  },
  'VirtualMachine.RemoveHardDiskConnection': (call) => {
    const c = call.params.connection as ConnectionObject;
    if (c.vm.id !== vmId(call)) throw invalidParams(`${call.refs.connection} is not a disk of ${vmOf(call).name}`);
    reconfigure(call, (doc) => {
      if (c.bus === 'IDE') doc.ide = doc.ide.filter((d) => !(d.channel === c.busNumber && d.device === c.deviceNumber));
      else doc.scsi[c.busNumber].disks = doc.scsi[c.busNumber].disks.filter((d) => d.target !== c.deviceNumber);
    });
  },

  'VirtualMachine.get_DVDROMDrives': (call) => vmOf(call).config.ide.filter((d) => d.type === 'DVD').map((d) => ref('DVDROMDrive', `${vmId(call)}/ide${d.channel}-${d.device}`)),
  'VirtualMachine.AddDVDROMDrive': (call) => {
    const vm = vmOf(call);
    const { busNumber, deviceNumber } = call.params as { busNumber: number; deviceNumber: number };
    call.services.machines.refuseUnlessOff(vm);
    reconfigure(call, (doc) => { doc.ide.push({ channel: busNumber, device: deviceNumber, type: 'DVD', image: null }); });
    return ref('DVDROMDrive', `${vm.id}/ide${busNumber}-${deviceNumber}`);
  },
  'VirtualMachine.RemoveDVDROMDrive': (call) => {
    const d = call.params.drive as DriveObject;
    if (d.vm.id !== vmId(call)) throw invalidParams(`${call.refs.drive} is not a drive of ${vmOf(call).name}`);
    reconfigure(call, (doc) => { doc.ide = doc.ide.filter((x) => !(x.channel === d.channel && x.device === d.device)); });
  },

  'VirtualMachine.get_SCSIControllers': (call) => vmOf(call).config.scsi.map((_, i) => ref('SCSIController', `${vmId(call)}/${i}`)),
  'VirtualMachine.AddSCSIController': (call) => {
    const vm = reconfigure(call, (doc) => { doc.scsi.push({ model: (call.params.model as ScsiModel | undefined) ?? PROFILE.scsi.defaultModel, disks: [] }); });
    return ref('SCSIController', `${vm.id}/${vm.config.scsi.length - 1}`);
  },
  'VirtualMachine.RemoveSCSIController': (call) => {
    const c = call.params.controller as IndexedObject;
    if (c.vm.id !== vmId(call)) throw invalidParams(`${call.refs.controller} is not an adapter of ${vmOf(call).name}`);
    const disks = vmOf(call).config.scsi[c.index].disks.length;
    if (disks) throw new ApiError('VM_E_DRIVE_IN_USE', `SCSI adapter ${c.index} of ${vmOf(call).name} still holds ${disks} disk${disks === 1 ? '' : 's'}; remove them first`);
    reconfigure(call, (doc) => { doc.scsi.splice(c.index, 1); });
  },

  'VirtualMachine.get_NetworkAdapters': (call) => vmOf(call).config.networkAdapters.map((_, i) => ref('NetworkAdapter', `${vmId(call)}/${i}`)),
  'VirtualMachine.AddNetworkAdapter': (call) => {
    const vm = reconfigure(call, (doc) => {
      const mac = call.params.ethernetAddress as string | undefined;
      // Left out, the profile's parser draws a free address under 00:03:FF.
      doc.networkAdapters.push({ model: (call.params.model as NicModel | undefined) ?? PROFILE.networkAdapters.defaultModel, network: 'none', ...(mac ? { mac } : {}) } as VmConfig['networkAdapters'][number]);
    });
    return ref('NetworkAdapter', `${vm.id}/${vm.config.networkAdapters.length - 1}`);
  },
  'VirtualMachine.RemoveNetworkAdapter': (call) => {
    const a = call.params.adapter as IndexedObject;
    if (a.vm.id !== vmId(call)) throw invalidParams(`${call.refs.adapter} is not an adapter of ${vmOf(call).name}`);
    reconfigure(call, (doc) => { doc.networkAdapters.splice(a.index, 1); });
  },

  'VirtualMachine.get_USBDevices': (call) => vmOf(call).config.usb,
  'VirtualMachine.AddUSBDevice': (call) => { reconfigure(call, (doc) => { doc.usb.push(call.params.type as VmConfig['usb'][number]); }); },
  'VirtualMachine.RemoveUSBDevice': (call) => {
    if (!vmOf(call).config.usb.includes(call.params.type as VmConfig['usb'][number])) {
      throw new ApiError('VM_E_OBJECT_UNKNOWN', `${vmOf(call).name} has no USB ${String(call.params.type)}`);
    }
    reconfigure(call, (doc) => { doc.usb = doc.usb.filter((u) => u !== call.params.type); });
  },

  'VirtualMachine.get_SerialPort2': (call) => vmOf(call).config.com2?.file ?? null,
  'VirtualMachine.ConfigureSerialPort2': async (call) => {
    const file = await portFile(call, 'COM2');
    reconfigure(call, (doc) => { doc.com2 = file ? { file } : null; });
  },
  'VirtualMachine.get_ParallelPort1': (call) => vmOf(call).config.lpt1?.file ?? null,
  'VirtualMachine.ConfigureParallelPort1': async (call) => {
    const file = await portFile(call, 'LPT1');
    reconfigure(call, (doc) => { doc.lpt1 = file ? { file } : null; });
  },

  'VirtualMachine.get_FloppyDrive': (call) => vmOf(call).config.floppy,
  'VirtualMachine.AddFloppyDrive': (call) => {
    const vm = vmOf(call);
    call.services.machines.refuseUnlessOff(vm);
    if (vm.config.floppy) throw new ApiError('VM_E_DRIVE_IN_USE', `${vm.name} already has its floppy drive (a VM has at most ${PROFILE.floppyDrives})`);
    reconfigure(call, (doc) => { doc.floppy = { image: null }; });
  },
  'VirtualMachine.RemoveFloppyDrive': (call) => {
    requireFloppyDrive(call);
    reconfigure(call, (doc) => { doc.floppy = null; });
  },
  'VirtualMachine.AttachFloppyImage': async (call) => {
    const image = await call.services.files.run({ op: 'regular-file', input: call.params.path as string, kind: 'floppy disk image' });
    requireFloppyDrive(call);
    reconfigure(call, (doc) => { doc.floppy = { image }; });
  },
  'VirtualMachine.ReleaseFloppyImage': (call) => {
    requireFloppyDrive(call);
    reconfigure(call, (doc) => { doc.floppy = { image: null }; });
  },

  'VirtualMachine.Startup': async (call) => {
    const vm = vmOf(call);
    await checkVmFiles(call, vm);
    const { machines, tasks } = call.services;
    machines.claimStart(vm);
    const task = tasks.start(`${machines.state(vm) === 'Saved' ? 'Restore' : 'Startup'} of ${vm.name}`, `VirtualMachine/${vm.id}`, call.principal.user, { kind: 'turnOn' }, async (t) => {
      await machines.startup(vm, (p) => t.progress(p.percent, p.operation, p.bytes));
    });
    return ref('Task', task.id);
  },
  'VirtualMachine.TurnOff': (call) => powerTask(call, 'Turn off', 'turnOff', ['Running', 'Paused', 'TurningOn', 'Restoring', 'Saving', 'TurningOff']),
  'VirtualMachine.Save': (call) => powerTask(call, 'Save state', 'save'),
  'VirtualMachine.Reset': (call) => powerTask(call, 'Reset', 'reset'),
  'VirtualMachine.Pause': async (call) => {
    call.services.machines.refuseNotRunning(vmOf(call), ['Running']);
    await call.services.machines.operate(vmOf(call), 'pause');
  },
  'VirtualMachine.Resume': async (call) => {
    call.services.machines.refuseNotRunning(vmOf(call), ['Paused']);
    await call.services.machines.operate(vmOf(call), 'resume');
  },
  'VirtualMachine.DiscardSavedState': (call) => call.services.machines.discardSavedState(vmOf(call)),
  'VirtualMachine.get_GuestOS': (call) => ref('GuestOS', vmId(call)),
  'VirtualMachine.get_Display': (call) => ref('Display', vmId(call)),
  'VirtualMachine.get_Security': (call) => ref('Security', call.thisRef),
  'VirtualMachine.GetSerialOutput': async (call) => {
    const vm = vmOf(call);
    const com2 = call.params.port === 2 ? connectedCom2(vm) : null;
    call.services.machines.refuseNotRunning(vm);
    const since = call.params.since as number | undefined;
    try {
      return com2 ? readCom2(com2, since) : await call.services.machines.operate<SerialOutput>(vm, 'serialOutput', { since });
    } catch (e) {
      if (e instanceof VmError && e.code === 'VM_E_INVALID_PARAMS') throw invalidParams(e.message, { param: 'since' });
      throw e;
    }
  },
  'VirtualMachine.CreateConsoleTicket': (call) => {
    const vm = vmOf(call);
    // Only a token: an API call made with a session cookie carries no session to bind the ticket to.
    const holder = call.principal.tokenId ? holderOf({ principal: call.principal, session: null }) : null;
    if (!holder) throw new ApiError('VM_E_TOKEN_REQUIRED', 'CreateConsoleTicket gives tickets to bearer tokens; the website asks for its own with POST /vms/ID/console/ticket');
    call.services.machines.refuseNotRunning(vm);
    return consoleTickets.issue({ user: call.principal.user, holder, vmId: vm.id, kind: call.params.kind as ConsoleKind });
  },

  'HardDiskConnection.get_HardDisk': (call) => ref('HardDisk', (call.self as ConnectionObject).path),
  'HardDiskConnection.get_BusType': (call) => (call.self as ConnectionObject).bus,
  'HardDiskConnection.get_BusNumber': (call) => (call.self as ConnectionObject).busNumber,
  'HardDiskConnection.get_DeviceNumber': (call) => (call.self as ConnectionObject).deviceNumber,

  'DVDROMDrive.get_BusNumber': (call) => (call.self as DriveObject).channel,
  'DVDROMDrive.get_DeviceNumber': (call) => (call.self as DriveObject).device,
  'DVDROMDrive.get_ImageFile': (call) => (call.self as DriveObject).image,
  'DVDROMDrive.AttachImage': async (call) => {
    const image = await call.services.files.run({ op: 'regular-file', input: call.params.path as string, kind: 'ISO image' });
    setDriveImage(call, image);
  },
  'DVDROMDrive.ReleaseImage': (call) => setDriveImage(call, null),

  'SCSIController.get_ID': (call) => (call.self as IndexedObject).index,
  'SCSIController.get_Model': (call) => partVm(call).config.scsi[(call.self as IndexedObject).index].model,

  'NetworkAdapter.get_EthernetAddress': (call) => normalizeMac(partVm(call).config.networkAdapters[(call.self as IndexedObject).index].mac),
  'NetworkAdapter.get_Model': (call) => partVm(call).config.networkAdapters[(call.self as IndexedObject).index].model,
  'NetworkAdapter.get_VirtualNetwork': (call) => partVm(call).config.networkAdapters[(call.self as IndexedObject).index].network,

  'GuestOS.Shutdown': (call) => powerTask(call, 'Shut down guest OS', 'shutdown', ['Running'], partVm(call)),

  'Display.get_Thumbnail': async (call) => {
    const vm = partVm(call);
    if (!isLive(call.services.machines.state(vm))) return null;
    const { png } = await call.services.machines.operate<{ png: string }>(vm, 'screenshot');
    const bytes = Buffer.from(png, 'base64');
    return { mimeType: 'image/png', ...pngSize(bytes), data: png };
  },
};

/**
 * Every file a VM is about to open, checked before its worker starts (a .vmc registered from
 * elsewhere may name any file): each disk a VHD whose whole chain lies inside the storage roots,
 * the DVD and floppy images and the saved state inside them (a missing image still fails in
 * the Startup task, as QEMU finds it missing).
 */
async function checkVmFiles(call: Call, vm: VmRecord): Promise<void> {
  const { services } = call;
  const { ide, floppy, savedState } = vm.config;
  const inRoots = (input: string, kind: string): Promise<string> => services.files.run({ op: 'resolve', input, options: { kind } });
  await Promise.all([
    ...hardDisks(vm.config).map((d) => inspectedDisk(services, d.path)),
    ...ide.flatMap((d) => (d.type === 'DVD' && d.image ? [inRoots(d.image, 'ISO image')] : [])),
    ...(floppy?.image ? [inRoots(floppy.image, 'floppy disk image')] : []),
    inRoots(savedState, 'saved state file'),
  ]);
}

/** A power operation as a task; the VM's state is checked first so that the caller hears at once. */
function powerTask(call: Call, what: string, op: 'turnOff' | 'save' | 'reset' | 'shutdown', states: readonly string[] = ['Running', 'Paused'], vm = vmOf(call)): unknown {
  const { machines, tasks } = call.services;
  machines.refuseNotRunning(vm, states as never);
  const task = tasks.start(`${what} of ${vm.name}`, `VirtualMachine/${vm.id}`, call.principal.user, { kind: op }, async (t) => {
    await machines.operate(vm, op, undefined, (p) => t.progress(p.percent, p.operation, p.bytes));
  });
  return ref('Task', task.id);
}

/**
 * The file a COM2 or LPT1 port is to write to, or null to disconnect it. Its folder must exist
 * (QEMU creates the file, it does not make folders), and it must not be one of a VM's own kinds
 * of file, since QEMU rewrites it from the start at each turn-on.
 */
async function portFile(call: Call, port: string): Promise<string | null> {
  if (call.params.path === undefined) return null;
  const file = await call.services.files.run({ op: 'resolve', input: call.params.path as string, options: { kind: `${port} output file` } });
  if (PORT_FILE_REFUSED.some((ext) => file.toLowerCase().endsWith(ext))) {
    throw new ApiError('VM_E_INVALID_PATH', `${port} would overwrite ${file} each time the VM is turned on; choose a text file (not ${PORT_FILE_REFUSED.join(', ')})`);
  }
  if (fs.existsSync(file) && !fs.statSync(file).isFile()) throw new ApiError('VM_E_INVALID_PATH', `${file} is not a file; ${port} writes to a text file`);
  if (!fs.existsSync(path.dirname(file))) throw new ApiError('VM_E_FILE_NOT_FOUND', `the folder ${path.dirname(file)} for ${port}'s output file does not exist`);
  return file;
}

/** COM2's file; refused by name when COM2 is not connected to one (whatever the VM's state). */
function connectedCom2(vm: VmRecord): string {
  const file = vm.config.com2?.file;
  if (!file) throw new ApiError('VM_E_PORT_NOT_CONNECTED', `COM2 of ${vm.name} is not connected to a file (ConfigureSerialPort2 connects it while the VM is off); COM1 is the serial console`);
  return file;
}

/**
 * COM2's output from its file, which QEMU rewrites at each turn on, so its byte offsets are the
 * positions. The file keeps everything: nothing is skipped, and an answer holds at most a
 * scrollback's worth (the last, when since is omitted).
 */
function readCom2(file: string, since: number | undefined): SerialOutput {
  const most = scrollbackBytes();
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return readFrom(Buffer.alloc(0), 0, since);
    throw e;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const from = since !== undefined && since <= size ? since : Math.max(0, size - most);
    const held = Buffer.alloc(Math.min(most, size - from));
    const read = fs.readSync(fd, held, 0, held.length, from);
    return readFrom(held.subarray(0, read), from, since);
  } finally {
    fs.closeSync(fd);
  }
}

/** Floppy changes need a turned-off VM that has the drive. */
function requireFloppyDrive(call: Call): void {
  const vm = vmOf(call);
  call.services.machines.refuseUnlessOff(vm);
  if (!vm.config.floppy) throw new ApiError('VM_E_DRIVE_INVALID', `${vm.name} has no floppy drive; add it with AddFloppyDrive first`);
}

function setDriveImage(call: Call, image: string | null): void {
  const d = call.self as DriveObject;
  call.services.machines.reconfigure(d.vm.id, (doc) => {
    const drive = doc.ide.find((x): x is Extract<IdeDevice, { type: 'DVD' }> => x.type === 'DVD' && x.channel === d.channel && x.device === d.device);
    if (drive) drive.image = image;
  });
}
