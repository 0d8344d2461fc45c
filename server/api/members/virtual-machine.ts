// VirtualMachine (IVMVirtualMachine), declared member by member with its handler. Configuration
// changes go through Machines.reconfigure, which refuses them unless the VM is off and validates
// the whole document against the profile.

import fs from 'node:fs/promises';
import type { VmConfig } from '../../../vmm/config.js';
import { hardDisks, isVirtualServerMac, normalizeMac, randomMac, scsiAdapterOf } from '../../../vmm/config.js';
import { portFileProblem } from '../../../vmm/port-file.js';
import { NIC_MODELS, PROFILE, SCSI_MODELS, USB_DEVICES, type UsbDevice } from '../../../vmm/profile.js';
import { DEFAULT_SCROLLBACK_BYTES, readFrom, scrollbackBytes, type SerialOutput } from '../../../vmm/serial-output.js';
import { isLive, VM_STATES, type VmState, VmError } from '../../../vmm/state.js';
import { CONSOLE_KINDS, consoleTickets, holderOf, TICKET_SECONDS } from '../../http/console-tickets.js';
import type { VmRecord } from '../../machines.js';
import { ApiError, invalidParams } from '../../errors.js';
import { anyObject, type Call, field, integer, type InterfaceRecord, listOf, membersOf, nothing, object, oneOf, orNull, param, refOf, refsOf, string } from '../member-types.js';
import { inspectedDisk } from '../objects.js';
import { ref, type Reference } from '../../references.js';
import { AUTO_START, PORT_FILE_REFUSED, SHUTDOWN_ACTIONS, UNDO_ACTIONS } from '../vocabulary.js';
import { vmLayerMembers } from './snapshot.js';
import { vmClusterMembers } from './cluster.js';
import { CONFIG_ERRORS, path, VM_EXAMPLE, VM_ID_EXAMPLE } from './shared.js';

const { get, put, method, task } = membersOf<'VirtualMachine'>(VM_EXAMPLE);
type VmCall = Call<'VirtualMachine', unknown>;

const { ide, scsi } = PROFILE;
const range = (count: number): string => `0-${count - 1}`;
const PORT_FILE_DOC = `What the guest writes to the port goes to the file, which is rewritten from its start each time the VM is turned on; a path ending in ${PORT_FILE_REFUSED.join(', ')} is refused, so that a port cannot overwrite a VM's files. Only while the VM is turned off.`;
const ENGINES = oneOf(['kvm', 'tcg']);
const engineFields = { engine: field(ENGINES, 'What the VM runs on'), reason: field(string, 'Why that engine') };

function reconfigure(call: VmCall, change: (doc: VmConfig) => void): Promise<VmRecord> {
  return call.services.machines.reconfigure(call.self.id, change);
}

/** A part given in a parameter must belong to this VM. */
function ownPart(call: VmCall, part: { vm: VmRecord }, param: string, what: string): void {
  if (part.vm.id !== call.self.id) throw invalidParams(`${call.refs[param]} is not ${what} of ${call.self.name}`);
}

export const virtualMachine: InterfaceRecord = {
  doc: 'A virtual machine (IVMVirtualMachine). Its configuration can change only while it is turned off, as in Virtual Server.',
  ref: 'VirtualMachine/<id>',
  members: {
    get_Name: get('The name.', string, 'web', ({ self }) => self.name),
    put_Name: put('Renames the VM (its .vmc keeps its file name, as Virtual Server kept it).', { type: 'string', maxLength: 64 }, 'web2',
      async (call) => { await reconfigure(call, (doc) => { doc.name = call.params.value; }); }, ['VM_E_NAME_IN_USE', ...CONFIG_ERRORS]),
    get_Notes: get('Free text about the VM.', string, 'IIS front end', ({ self }) => self.notes),
    put_Notes: put('Sets the notes; allowed while the VM runs.', { type: 'string', maxLength: 10_000 }, 'IIS front end',
      ({ services, self, params }) => services.machines.setSettings(self.id, { notes: params.value })),
    get_Memory: get('Memory in MB.', integer, 512, ({ self }) => self.config.memoryMB),
    put_Memory: put(`Sets the memory in MB (${PROFILE.memoryMB.min} to ${PROFILE.memoryMB.max}).`, { type: 'integer', min: PROFILE.memoryMB.min, max: PROFILE.memoryMB.max }, 512,
      async (call) => { await reconfigure(call, (doc) => { doc.memoryMB = call.params.value; }); }, CONFIG_ERRORS),
    get_AutoStartAtLaunch: get('Whether vserverd turns the VM on when it starts: Never, Always, or IfRunningAtQuit (the default).', oneOf(AUTO_START), 'IfRunningAtQuit', ({ self }) => self.autoStart),
    put_AutoStartAtLaunch: put('Sets the auto-start rule; allowed while the VM runs.', oneOf(AUTO_START), 'Always',
      ({ services, self, params }) => services.machines.setSettings(self.id, { autoStart: params.value })),
    get_AutoStartAtLaunchDelay: get('Seconds vserverd waits after its start before turning the VM on.', integer, 0, ({ self }) => self.autoStartDelay),
    put_AutoStartAtLaunchDelay: put('Sets the auto-start delay in seconds (0 to 3600).', { type: 'integer', min: 0, max: 3600 }, 30,
      ({ services, self, params }) => services.machines.setSettings(self.id, { autoStartDelay: params.value })),
    get_ShutdownActionOnQuit: get('What vserverd does to the running VM when it stops: Save (the default), TurnOff, or Shutdown (the guest\'s, by the ACPI power button).', oneOf(SHUTDOWN_ACTIONS), 'Save', ({ self }) => self.shutdownAction),
    put_ShutdownActionOnQuit: put('Sets the action on quit; allowed while the VM runs.', oneOf(SHUTDOWN_ACTIONS), 'TurnOff',
      ({ services, self, params }) => services.machines.setSettings(self.id, { shutdownAction: params.value })),
    get_State: get('The state (VMVMState).', oneOf(VM_STATES), 'Running', ({ services, self }) => services.machines.state(self)),
    get_Engine: get('The execution engine the VM runs (or last ran) on and why; null before its first start.', orNull(object(engineFields)), { engine: 'tcg', reason: 'the CPU has no hardware virtualization' },
      ({ services, self }) => {
        const status = services.machines.status(self.id);
        const engine = ENGINES.values.find((e) => e === status?.engine);
        return engine ? { engine, reason: status?.engineReason ?? '' } : null;
      }),
    get_Uptime: get('Seconds since the VM last became Running by a turn on or a restore (a restore starts the count again; a pause or a reset does not), or null when it is not running.', orNull(integer), 120,
      ({ services, self }) => {
        const status = services.machines.status(self.id);
        // From when the worker saw the VM become Running (turned on or restored), not from QEMU's start.
        return status?.runningSince && isLive(status.state) ? Math.max(0, Math.floor((Date.now() - Date.parse(status.runningSince)) / 1000)) : null;
      }),
    get_File: get('The VM\'s .vmc file.', string, '/var/lib/vserver/web/web.vmc', ({ self }) => self.vmcPath),
    get_SavedStateFilePath: get('Where the VM\'s saved state (.vsv) is written.', string, '/var/lib/vserver/web/web.vsv', ({ self }) => self.config.savedState),
    get_Configuration: get('The whole configuration document (docs/vm-config.md), as stored in the .vmc.', anyObject, { version: 1, name: 'web', memoryMB: 512 },
      ({ self }) => ({ version: 1, ...self.config })),
    get_LastCrash: get('Why the VM last stopped without being asked to (its worker or QEMU died), or null.',
      orNull(object({ reason: field(string, 'What died, and how'), at: field(string, 'When, ISO 8601') })), null,
      ({ services, self }) => services.machines.status(self.id)?.crashed ?? null),

    get_HardDiskConnections: get('The disks attached, IDE first.', refsOf('HardDiskConnection'), [{ $ref: `HardDiskConnection/${VM_ID_EXAMPLE}/scsi0-0` }],
      ({ self }) => hardDisks(self.config).map(({ slot }) => ref('HardDiskConnection', `${self.id}/${slot}`))),
    AddHardDiskConnection: method(`Attaches a VHD at an IDE (bus ${range(ide.channels)}, device ${range(ide.devicesPerChannel)}) or SCSI (adapter ${range(scsi.adapters)}, target ${range(scsi.disksPerAdapter)}) position. The SCSI adapter must exist.`, {
      params: {
        path: path('The .vhd.'), busType: param(oneOf(['IDE', 'SCSI']), 'IDE or SCSI.'),
        busNumber: param({ type: 'integer', min: 0 }, 'IDE channel or SCSI adapter.'), deviceNumber: param({ type: 'integer', min: 0 }, 'IDE device or SCSI target.'),
      },
      returns: refOf('HardDiskConnection'), right: 'change', errors: ['VM_E_HD_IMAGE_NOT_FOUND', 'VHD_E_BAD_FOOTER', 'VM_E_DRIVE_IN_USE', 'VM_E_DRIVE_INVALID', ...CONFIG_ERRORS],
      example: { params: { path: 'disks/web.vhd', busType: 'SCSI', busNumber: 0, deviceNumber: 0 }, result: { $ref: `HardDiskConnection/${VM_ID_EXAMPLE}/scsi0-0` } },
      handler: async (call) => {
        const vm = call.self;
        const { busType, busNumber, deviceNumber } = call.params;
        // A file that is not a VHD, or whose chain leaves the roots, is refused now, not when the VM starts.
        const file = (await inspectedDisk(call.services, call.params.path)).file;
        call.services.machines.refuseUnlessOff(vm);
        const after = await reconfigure(call, (doc) => {
          if (busType === 'IDE') doc.ide.push({ channel: busNumber, device: deviceNumber, type: 'HardDisk', path: file });
          else scsiAdapterOf(doc, busNumber).disks.push({ target: deviceNumber, path: file });
        });
        // An undo disk left from an earlier disk at this position is not this disk's.
        await call.services.layers.discardStaleUndoDisks(vm, after);
        return ref('HardDiskConnection', `${vm.id}/${busType.toLowerCase()}${busNumber}-${deviceNumber}`);
      },
    }),
    RemoveHardDiskConnection: method('Detaches a disk; the file is kept, and its undo disk discarded. Refused while snapshot layers sit above the disk (VM_E_DRIVE_IN_USE).', {
      params: { connection: param(refOf('HardDiskConnection'), 'The connection.') }, returns: nothing, right: 'change', errors: ['VM_E_DRIVE_IN_USE', ...CONFIG_ERRORS],
      example: { params: { connection: `HardDiskConnection/${VM_ID_EXAMPLE}/scsi0-0` }, result: null },
      handler: async (call) => {
        const c = call.params.connection;
        ownPart(call, c, 'connection', 'a disk');
        // The VM goes on from a snapshot layer above this disk: removing the disk would drop what was written there.
        if (call.services.layers.store.tops(call.self.id).has(c.slot)) {
          throw new ApiError('VM_E_DRIVE_IN_USE', `${c.path} of ${call.self.name} has snapshot layers above it; delete the VM's snapshots before removing the disk`);
        }
        const after = await reconfigure(call, (doc) => {
          if (c.bus === 'IDE') doc.ide = doc.ide.filter((d) => !(d.channel === c.busNumber && d.device === c.deviceNumber));
          else doc.scsi[c.busNumber].disks = doc.scsi[c.busNumber].disks.filter((d) => d.target !== c.deviceNumber);
        });
        // Its undo disk belongs to a disk the slot no longer has.
        await call.services.layers.discardStaleUndoDisks(call.self, after);
      },
    }),
    get_DVDROMDrives: get('The CD/DVD drives (on IDE).', refsOf('DVDROMDrive'), [{ $ref: `DVDROMDrive/${VM_ID_EXAMPLE}/ide1-0` }],
      ({ self }) => self.config.ide.filter((d) => d.type === 'DVD').map((d) => ref('DVDROMDrive', `${self.id}/ide${d.channel}-${d.device}`))),
    AddDVDROMDrive: method('Adds an empty CD/DVD drive at an IDE position.', {
      params: { busNumber: param({ type: 'integer', min: 0 }, `IDE channel (${range(ide.channels)}).`), deviceNumber: param({ type: 'integer', min: 0 }, `IDE device (${range(ide.devicesPerChannel)}).`) },
      returns: refOf('DVDROMDrive'), right: 'change', errors: ['VM_E_DRIVE_IN_USE', 'VM_E_DRIVE_INVALID', ...CONFIG_ERRORS],
      example: { params: { busNumber: 1, deviceNumber: 0 }, result: { $ref: `DVDROMDrive/${VM_ID_EXAMPLE}/ide1-0` } },
      handler: async (call) => {
        const vm = call.self;
        const { busNumber, deviceNumber } = call.params;
        call.services.machines.refuseUnlessOff(vm);
        await reconfigure(call, (doc) => { doc.ide.push({ channel: busNumber, device: deviceNumber, type: 'DVD', image: null }); });
        return ref('DVDROMDrive', `${vm.id}/ide${busNumber}-${deviceNumber}`);
      },
    }),
    RemoveDVDROMDrive: method('Removes a CD/DVD drive.', {
      params: { drive: param(refOf('DVDROMDrive'), 'The drive.') }, returns: nothing, right: 'change', errors: CONFIG_ERRORS,
      example: { params: { drive: `DVDROMDrive/${VM_ID_EXAMPLE}/ide1-0` }, result: null },
      handler: async (call) => {
        const d = call.params.drive;
        ownPart(call, d, 'drive', 'a drive');
        await reconfigure(call, (doc) => { doc.ide = doc.ide.filter((x) => !(x.channel === d.channel && x.device === d.device)); });
      },
    }),
    get_SCSIControllers: get('The SCSI adapters.', refsOf('SCSIController'), [{ $ref: `SCSIController/${VM_ID_EXAMPLE}/0` }],
      ({ self }) => self.config.scsi.map((_, i) => ref('SCSIController', `${self.id}/${i}`))),
    AddSCSIController: method(`Adds a SCSI adapter (at most ${PROFILE.scsi.adapters}): ${SCSI_MODELS.join(' (the default) or ')} (the "optimized" choice).`, {
      params: { model: param(oneOf(SCSI_MODELS), 'The adapter model.', true) }, returns: refOf('SCSIController'), right: 'change', errors: CONFIG_ERRORS,
      example: { params: {}, result: { $ref: `SCSIController/${VM_ID_EXAMPLE}/0` } },
      handler: async (call) => {
        const vm = await reconfigure(call, (doc) => { doc.scsi.push({ model: call.params.model ?? PROFILE.scsi.defaultModel, disks: [] }); });
        return ref('SCSIController', `${vm.id}/${vm.config.scsi.length - 1}`);
      },
    }),
    RemoveSCSIController: method('Removes a SCSI adapter that has no disks; later adapters move up.', {
      params: { controller: param(refOf('SCSIController'), 'The adapter.') }, returns: nothing, right: 'change', errors: ['VM_E_DRIVE_IN_USE', ...CONFIG_ERRORS],
      example: { params: { controller: `SCSIController/${VM_ID_EXAMPLE}/0` }, result: null },
      handler: async (call) => {
        const c = call.params.controller;
        ownPart(call, c, 'controller', 'an adapter');
        const disks = call.self.config.scsi[c.index].disks.length;
        if (disks) throw new ApiError('VM_E_DRIVE_IN_USE', `SCSI adapter ${c.index} of ${call.self.name} still holds ${disks} disk${disks === 1 ? '' : 's'}; remove them first`);
        await reconfigure(call, (doc) => { doc.scsi.splice(c.index, 1); });
      },
    }),
    get_NetworkAdapters: get('The network adapters.', refsOf('NetworkAdapter'), [{ $ref: `NetworkAdapter/${VM_ID_EXAMPLE}/0` }],
      ({ self }) => self.config.networkAdapters.map((_, i) => ref('NetworkAdapter', `${self.id}/${i}`))),
    AddNetworkAdapter: method(`Adds a network adapter (at most ${PROFILE.networkAdapters.max}) with a new MAC address under 00:03:FF: ${NIC_MODELS.join(', ')}.`, {
      params: {
        model: param(oneOf(NIC_MODELS), 'The model (tulip when omitted).', true),
        ethernetAddress: param(string, 'A static MAC address under 00:03:FF, unique among this host\'s VMs; a dynamic one is drawn when omitted.', true),
        network: param(refOf('VirtualNetwork'), 'The virtual network to attach it to; none when omitted.', true),
      },
      returns: refOf('NetworkAdapter'), right: 'change', errors: ['VM_E_MAC_INVALID', 'VM_E_MAC_IN_USE', ...CONFIG_ERRORS],
      example: { params: {}, result: { $ref: `NetworkAdapter/${VM_ID_EXAMPLE}/0` } },
      handler: async (call) => {
        const { networks } = call.services;
        const given = call.params.ethernetAddress;
        if (given !== undefined && !isVirtualServerMac(given)) throw new ApiError('VM_E_MAC_INVALID', `"${given}" is not a MAC address under 00:03:FF (00:03:FF:xx:xx:xx)`);
        const mac = given === undefined ? randomMac(networks.macsInUse()) : normalizeMac(given);
        const holder = networks.macHolder(mac, null);
        if (holder) throw new ApiError('VM_E_MAC_IN_USE', `${mac} is held by ${holder.id === call.self.id ? 'another adapter of this VM' : `the VM ${holder.name}`}`);
        const network = call.params.network ? networks.require(call.params.network.id) : null;
        const vm = await reconfigure(call, (doc) => {
          doc.networkAdapters.push({ model: call.params.model ?? PROFILE.networkAdapters.defaultModel, mac, network: network?.id ?? null, networkName: network?.name ?? null, dynamicMac: given === undefined });
        });
        return ref('NetworkAdapter', `${vm.id}/${vm.config.networkAdapters.length - 1}`);
      },
    }),
    RemoveNetworkAdapter: method('Removes a network adapter; later adapters move up.', {
      params: { adapter: param(refOf('NetworkAdapter'), 'The adapter.') }, returns: nothing, right: 'change', errors: CONFIG_ERRORS,
      example: { params: { adapter: `NetworkAdapter/${VM_ID_EXAMPLE}/0` }, result: null },
      handler: async (call) => {
        const a = call.params.adapter;
        ownPart(call, a, 'adapter', 'an adapter');
        const count = call.self.config.networkAdapters.length;
        await reconfigure(call, (doc) => { doc.networkAdapters.splice(a.index, 1); });
        // The adapters after it move up: the last TAP goes, and the others are joined anew at the next turn on.
        await call.services.networks.adaptersRemoved(call.self.id, count - 1, count);
      },
    }),
    get_USBDevices: get('The USB devices on the VM\'s UHCI controller.', listOf(oneOf(USB_DEVICES)), ['Tablet'], ({ self }) => self.config.usb),
    AddUSBDevice: method(`Adds a USB device; only ${USB_DEVICES.join(', ')} exist in the profile.`, {
      params: { type: param(string, `One of ${USB_DEVICES.join(', ')}.`) }, returns: nothing, right: 'change', errors: CONFIG_ERRORS,
      example: { params: { type: 'Tablet' }, result: null },
      // Any name reaches the profile's parser, which refuses one it does not allow with VM_E_CONFIG_INVALID and the list.
      handler: async (call) => { await reconfigure(call, (doc) => { doc.usb.push(call.params.type as UsbDevice); }); },
    }),
    RemoveUSBDevice: method('Removes a USB device.', {
      params: { type: param(oneOf(USB_DEVICES), 'The device.') }, returns: nothing, right: 'change', errors: CONFIG_ERRORS,
      example: { params: { type: 'Tablet' }, result: null },
      handler: async (call) => {
        const { type } = call.params;
        if (!call.self.config.usb.includes(type)) throw new ApiError('VM_E_OBJECT_UNKNOWN', `${call.self.name} has no USB ${type}`);
        await reconfigure(call, (doc) => { doc.usb = doc.usb.filter((u) => u !== type); });
      },
    }),
    get_SerialPort2: get('The text file COM2 writes to, or null when COM2 is not connected (COM1 is always the serial console).', orNull(string), '/var/lib/vserver/web/com2.txt',
      ({ self }) => self.config.com2?.file ?? null),
    ConfigureSerialPort2: method(`Connects COM2 to a text file (IVMSerialPort.Configure with a text file), or disconnects it when path is omitted. ${PORT_FILE_DOC}`, {
      params: { path: path('The text file; its folder must exist. COM2 is disconnected when omitted.', true) }, returns: nothing, right: 'change',
      errors: ['VM_E_FILE_NOT_FOUND', 'VM_E_INVALID_PATH', ...CONFIG_ERRORS],
      example: { params: { path: 'web/com2.txt' }, result: null },
      handler: async (call) => {
        const file = await portFile(call, 'COM2', call.params.path);
        await reconfigure(call, (doc) => { doc.com2 = file ? { file } : null; });
      },
    }),
    get_ParallelPort1: get('The text file LPT1 writes to, or null when LPT1 is not connected.', orNull(string), null, ({ self }) => self.config.lpt1?.file ?? null),
    ConfigureParallelPort1: method(`Connects LPT1 to a text file (IVMParallelPort), or disconnects it when path is omitted. ${PORT_FILE_DOC}`, {
      params: { path: path('The text file; its folder must exist. LPT1 is disconnected when omitted.', true) }, returns: nothing, right: 'change',
      errors: ['VM_E_FILE_NOT_FOUND', 'VM_E_INVALID_PATH', ...CONFIG_ERRORS],
      example: { params: { path: 'web/lpt1.txt' }, result: null },
      handler: async (call) => {
        const file = await portFile(call, 'LPT1', call.params.path);
        await reconfigure(call, (doc) => { doc.lpt1 = file ? { file } : null; });
      },
    }),
    get_FloppyDrive: get(`The floppy drive (a VM has at most ${PROFILE.floppyDrives}) with the image in it (image null when empty), or null when the VM has none.`,
      orNull(object({ image: field(orNull(string), 'The .vfd in it, or null when empty') })), { image: '/var/lib/vserver/floppies/tools.vfd' }, ({ self }) => self.config.floppy),
    AddFloppyDrive: method('Adds the floppy drive, empty (IVMFloppyDrive).', {
      returns: nothing, right: 'change', errors: ['VM_E_DRIVE_IN_USE', ...CONFIG_ERRORS], example: { params: {}, result: null },
      handler: async (call) => {
        const vm = call.self;
        call.services.machines.refuseUnlessOff(vm);
        if (vm.config.floppy) throw new ApiError('VM_E_DRIVE_IN_USE', `${vm.name} already has its floppy drive (a VM has at most ${PROFILE.floppyDrives})`);
        await reconfigure(call, (doc) => { doc.floppy = { image: null }; });
      },
    }),
    RemoveFloppyDrive: method('Removes the floppy drive, and the image in it; the image file is kept.', {
      returns: nothing, right: 'change', errors: ['VM_E_DRIVE_INVALID', ...CONFIG_ERRORS], example: { params: {}, result: null },
      handler: async (call) => {
        requireFloppyDrive(call);
        await reconfigure(call, (doc) => { doc.floppy = null; });
      },
    }),
    AttachFloppyImage: method('Puts a floppy disk image (.vfd) in the floppy drive (IVMFloppyDrive.AttachImage); the VM must have the drive.', {
      params: { path: path('The floppy disk image.') }, returns: nothing, right: 'change', errors: ['VM_E_FILE_NOT_FOUND', 'VM_E_INVALID_PATH', 'VM_E_DRIVE_INVALID', ...CONFIG_ERRORS],
      example: { params: { path: 'floppies/tools.vfd' }, result: null },
      handler: async (call) => {
        const image = await call.services.files.run({ op: 'regular-file', input: call.params.path, kind: 'floppy disk image' });
        requireFloppyDrive(call);
        await reconfigure(call, (doc) => { doc.floppy = { image }; });
      },
    }),
    ReleaseFloppyImage: method('Empties the floppy drive (IVMFloppyDrive.ReleaseImage).', {
      returns: nothing, right: 'change', errors: ['VM_E_DRIVE_INVALID', ...CONFIG_ERRORS], example: { params: {}, result: null },
      handler: async (call) => {
        requireFloppyDrive(call);
        await reconfigure(call, (doc) => { doc.floppy = { image: null }; });
      },
    }),
    Startup: task('Turns the VM on, or restores it from its saved state. The task completes when the VM runs. An adapter whose network is not registered here (the VM came from another host) is attached to this host\'s network of the same name; with none, it is turned on not connected, with a Warning in the event log.', 'control', {}, {},
      async (call) => {
        const vm = call.self;
        await checkVmFiles(call, vm);
        const { machines, networks, tasks } = call.services;
        await networks.prepareStartup(vm);
        machines.claimStart(vm);
        const started = tasks.start(`${machines.state(vm) === 'Saved' ? 'Restore' : 'Startup'} of ${vm.name}`, `VirtualMachine/${vm.id}`, call.principal.user, { kind: 'turnOn' }, async (t) => {
          // The worker serves each disk's top (an undo disk, a snapshot's layer): the effective configuration.
          await machines.startup(vm, (p) => t.progress(p.percent, p.operation, p.bytes), () => call.services.layers.prepareStartup(vm));
        });
        return ref('Task', started.id);
      }, ['VM_E_VM_RUNNING', 'VM_E_HD_IMAGE_NOT_FOUND', 'VM_E_START_FAILED', 'VM_E_TURNED_OFF', 'VM_E_MAC_IN_USE', 'VM_E_NETWORK_NOT_PERMITTED', 'VM_E_NETWORK_FAILED']),
    TurnOff: task('Cuts the power, as pulling the plug. An undoable VM\'s undo disks are then kept, committed or discarded as undoAction says (the VM\'s UndoAction when omitted); the task\'s result says which.', 'control',
      { undoAction: param(oneOf(UNDO_ACTIONS), 'For an undoable VM: Keep, Commit or Discard its undo disks once it is off; its UndoAction when omitted.', true) }, {},
      (call) => {
        const vm = call.self;
        const { machines, tasks, layers } = call.services;
        machines.refuseNotRunning(vm, ['Running', 'Paused', 'TurningOn', 'Restoring', 'Saving', 'TurningOff']);
        const started = tasks.start(`Turn off of ${vm.name}`, `VirtualMachine/${vm.id}`, call.principal.user, { kind: 'turnOff' }, async (t) => {
          await machines.operate(vm, 'turnOff', undefined, (p) => t.progress(p.percent, p.operation, p.bytes));
          const now = machines.require(vm.id);
          if (!now.undoable) return null;
          await machines.settledState(now, 30_000);
          return { undoDisks: await layers.applyUndoAction(now, call.params.undoAction ?? now.undoAction) };
        });
        return ref('Task', started.id);
      }, ['VM_E_VM_NOT_RUNNING']),
    Save: task('Saves the VM\'s state to its .vsv and stops it (Saving, TurningOff, TurnedOff; then Saved).', 'control', {}, {},
      (call) => powerTask(call, call.self, 'Save state', 'save'), ['VM_E_VM_NOT_RUNNING']),
    Reset: task('A hardware reset.', 'control', {}, {}, (call) => powerTask(call, call.self, 'Reset', 'reset'), ['VM_E_VM_NOT_RUNNING']),
    Pause: method('Freezes the VM in memory.', {
      returns: nothing, right: 'control', errors: ['VM_E_VM_NOT_RUNNING'], example: { params: {}, result: null },
      handler: async ({ services, self }) => {
        services.machines.refuseNotRunning(self, ['Running']);
        await services.machines.operate(self, 'pause');
      },
    }),
    Resume: method('Continues a paused VM.', {
      returns: nothing, right: 'control', errors: ['VM_E_VM_NOT_RUNNING'], example: { params: {}, result: null },
      handler: async ({ services, self }) => {
        services.machines.refuseNotRunning(self, ['Paused']);
        await services.machines.operate(self, 'resume');
      },
    }),
    DiscardSavedState: method('Throws the saved state away; the VM is then turned off.', {
      returns: nothing, right: 'control', errors: ['VM_E_VM_RUNNING', 'VM_E_NO_SAVED_STATE'], example: { params: {}, result: null },
      handler: ({ services, self }) => services.machines.discardSavedState(self),
    }),
    ...vmLayerMembers,
    ...vmClusterMembers,
    get_GuestOS: get('The guest operating system (IVMGuestOS).', refOf('GuestOS'), { $ref: `GuestOS/${VM_ID_EXAMPLE}` }, ({ self }) => ref('GuestOS', self.id)),
    get_Display: get('The VM\'s screen (IVMDisplay).', refOf('Display'), { $ref: `Display/${VM_ID_EXAMPLE}` }, ({ self }) => ref('Display', self.id)),
    get_Security: get('The VM\'s access entries.', refOf('Security'), { $ref: `Security/${VM_EXAMPLE}` }, ({ thisRef }) => ref('Security', thisRef)),
    GetSerialOutput: method(`What a serial port of the running VM has written since position "since": a position is a byte offset into everything the port wrote since the VM was turned on (0 again at the next turn on). COM1 keeps the last ${DEFAULT_SCROLLBACK_BYTES / 1024} KiB (its scrollback); asking from older than that returns what is kept and says how many bytes were skipped. COM2 is read from its file when it is connected to one, with the same positions and at most as much per answer. The text is UTF-8 and ends on a whole character; ask again from "next" for what follows. Needs the control right, as the consoles do: a guest's console may show secrets.`, {
      params: {
        port: param({ type: 'integer', min: 1, max: PROFILE.serialPorts }, '1 for COM1 (the serial console), 2 for COM2.'),
        since: param({ type: 'integer', min: 0 }, 'The position to read from: "next" of the previous answer. Everything kept when omitted; a position past the end is refused.', true),
      },
      returns: object({
        text: field(string, 'The output from "since" on'), next: field(integer, 'The position after it, to ask from next time'),
        skipped: field(integer, 'Bytes lost between "since" and the oldest kept (0 when none)'),
      }),
      right: 'control', errors: ['VM_E_VM_NOT_RUNNING', 'VM_E_PORT_NOT_CONNECTED'],
      example: { params: { port: 1, since: 1024 }, result: { text: 'guest# uptime\r\n 10:00:03 up 2 min\r\n', next: 1061, skipped: 0 } },
      handler: async (call) => {
        const vm = call.self;
        const com2 = call.params.port === 2 ? connectedCom2(vm) : null;
        call.services.machines.refuseNotRunning(vm);
        const { since } = call.params;
        try {
          return com2 ? await readCom2(com2, since) : await call.services.machines.operate<SerialOutput>(vm, 'serialOutput', { since });
        } catch (e) {
          if (e instanceof VmError && e.code === 'VM_E_INVALID_PARAMS') throw invalidParams(e.message, { param: 'since' });
          throw e;
        }
      },
    }),
    CreateConsoleTicket: method(`A one-time ticket for a console WebSocket of the running VM (${CONSOLE_KINDS.join(' or ')}), for a caller with a bearer token: open the url it gives, with the same "Authorization: Bearer" header, within ${TICKET_SECONDS} s. The ticket opens one console, once, for this token only. docs/consoles.md describes the protocol; the website asks for its tickets itself.`, {
      params: { kind: param(oneOf(CONSOLE_KINDS), `The console: ${CONSOLE_KINDS.join(' or ')}.`) },
      returns: object({
        ticket: field(string, 'The ticket'), url: field(string, 'The WebSocket path with the ticket, /console/KIND?ticket=...'),
        expiresInSeconds: field(integer, 'How long it may wait to be used'),
      }),
      right: 'control', errors: ['VM_E_VM_NOT_RUNNING', 'VM_E_TOKEN_REQUIRED'],
      example: { params: { kind: 'serial' }, result: { ticket: 'q3T…', url: '/console/serial?ticket=q3T…', expiresInSeconds: TICKET_SECONDS } },
      handler: (call) => {
        const vm = call.self;
        // Only a token: an API call made with a session cookie carries no session to bind the ticket to.
        const holder = call.principal.tokenId ? holderOf({ principal: call.principal, session: null }) : null;
        if (!holder) throw new ApiError('VM_E_TOKEN_REQUIRED', 'CreateConsoleTicket gives tickets to bearer tokens; the website asks for its own with POST /vms/ID/console/ticket');
        call.services.machines.refuseNotRunning(vm);
        return consoleTickets.issue({ user: call.principal.user, holder, vmId: vm.id, kind: call.params.kind });
      },
    }),
  },
};

/**
 * Every file a VM is about to open, checked before its worker starts (a .vmc registered from
 * elsewhere may name any file): each disk a VHD whose whole chain lies inside the storage roots,
 * the DVD and floppy images and the saved state inside them (a missing image still fails in
 * the Startup task, where QEMU finds it missing).
 */
async function checkVmFiles(call: VmCall, vm: VmRecord): Promise<void> {
  const { services } = call;
  const { ide: drives, floppy, savedState } = vm.config;
  const inRoots = (input: string, kind: string): Promise<string> => services.files.run({ op: 'resolve', input, options: { kind } });
  await Promise.all([
    ...hardDisks(vm.config).map((d) => inspectedDisk(services, d.path)),
    ...drives.flatMap((d) => (d.type === 'DVD' && d.image ? [inRoots(d.image, 'ISO image')] : [])),
    ...(floppy?.image ? [inRoots(floppy.image, 'floppy disk image')] : []),
    inRoots(savedState, 'saved state file'),
  ]);
}

/** A power operation of `vm` in a task; the VM's state is checked first so that the caller hears at once. */
export function powerTask(call: Call<'VirtualMachine' | 'GuestOS', unknown>, vm: VmRecord, what: string, op: 'turnOff' | 'save' | 'reset' | 'shutdown',
  states: readonly VmState[] = ['Running', 'Paused']): Reference {
  const { machines, tasks } = call.services;
  machines.refuseNotRunning(vm, states);
  const started = tasks.start(`${what} of ${vm.name}`, `VirtualMachine/${vm.id}`, call.principal.user, { kind: op }, async (t) => {
    await machines.operate(vm, op, undefined, (p) => t.progress(p.percent, p.operation, p.bytes));
  });
  return ref('Task', started.id);
}

/**
 * The file a COM2 or LPT1 port is to write to, or null to disconnect it. Its folder must exist
 * (QEMU creates the file, it does not make folders), and it must not be one of a VM's own kinds
 * of file, since QEMU rewrites it from the start at each turn-on. Checked without blocking the event loop.
 */
async function portFile(call: VmCall, port: string, input: string | undefined): Promise<string | null> {
  if (input === undefined) return null;
  const file = await call.services.files.run({ op: 'resolve', input, options: { kind: `${port} output file` } });
  const found = await portFileProblem(port, file);
  if (found) throw new ApiError(found.problem === 'no-folder' ? 'VM_E_FILE_NOT_FOUND' : 'VM_E_INVALID_PATH', found.message);
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
async function readCom2(file: string, since: number | undefined): Promise<SerialOutput> {
  const most = scrollbackBytes();
  const handle = await fs.open(file, 'r').catch((e: unknown) => {
    if (e instanceof Error && 'code' in e && e.code === 'ENOENT') return null;
    throw e;
  });
  if (!handle) return readFrom(Buffer.alloc(0), 0, since);
  try {
    const { size } = await handle.stat();
    const from = since !== undefined && since <= size ? since : Math.max(0, size - most);
    const held = Buffer.alloc(Math.min(most, size - from));
    const { bytesRead } = await handle.read(held, 0, held.length, from);
    return readFrom(held.subarray(0, bytesRead), from, since);
  } finally {
    await handle.close();
  }
}

/** Floppy changes need a turned-off VM that has the drive. */
function requireFloppyDrive(call: VmCall): void {
  const vm = call.self;
  call.services.machines.refuseUnlessOff(vm);
  if (!vm.config.floppy) throw new ApiError('VM_E_DRIVE_INVALID', `${vm.name} has no floppy drive; add it with AddFloppyDrive first`);
}
