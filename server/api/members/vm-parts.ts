// The parts of a VM, declared member by member with their handlers: disk connections, CD/DVD
// drives, SCSI adapters, network adapters, the guest OS and the display. Their rights are the VM's.

import type { IdeDevice } from '../../../vmm/config.js';
import { SCSI_MODELS } from '../../../vmm/profile.js';
import { isLive } from '../../../vmm/state.js';
import { type Call, field, integer, type InterfaceRecord, membersOf, nothing, object, oneOf, orNull, refOf, string } from '../member-types.js';
import { ref } from '../../references.js';
import { CONFIG_ERRORS, DISK_EXAMPLE, path, VM_ID_EXAMPLE } from './shared.js';
import { powerTask } from './virtual-machine.js';

const connectionRef = `HardDiskConnection/${VM_ID_EXAMPLE}/scsi0-0`;
const connection = membersOf<'HardDiskConnection'>(connectionRef);
export const hardDiskConnection: InterfaceRecord = {
  doc: 'A VHD attached to a VM at a bus position (IVMHardDiskConnection). Rights are the VM\'s.',
  ref: 'HardDiskConnection/<vm id>/<ide|scsi><bus>-<device>',
  members: {
    get_HardDisk: connection.get('The disk.', refOf('HardDisk'), { $ref: DISK_EXAMPLE }, ({ self }) => ref('HardDisk', self.path)),
    get_BusType: connection.get('IDE or SCSI.', oneOf(['IDE', 'SCSI']), 'SCSI', ({ self }) => self.bus),
    get_BusNumber: connection.get('IDE channel or SCSI adapter.', integer, 0, ({ self }) => self.busNumber),
    get_DeviceNumber: connection.get('IDE device or SCSI target.', integer, 0, ({ self }) => self.deviceNumber),
    get_UndoHardDisk: connection.get('The undo disk (.vud) the VM writes instead of this disk, when it has one; null otherwise.', orNull(string), '/var/lib/vserver/web/web_scsi0-0.vud',
      ({ services, self }) => services.layers.undoDisks(self.vm).find((d) => d.slot === self.slot)?.file ?? null),
  },
};

const dvdRef = `DVDROMDrive/${VM_ID_EXAMPLE}/ide1-0`;
const dvd = membersOf<'DVDROMDrive'>(dvdRef);
async function setDriveImage({ services, self }: Call<'DVDROMDrive', unknown>, image: string | null): Promise<void> {
  await services.machines.reconfigure(self.vm.id, (doc) => {
    const drive = doc.ide.find((x): x is Extract<IdeDevice, { type: 'DVD' }> => x.type === 'DVD' && x.channel === self.channel && x.device === self.device);
    if (drive) drive.image = image;
  });
}
export const dvdDrive: InterfaceRecord = {
  doc: 'A CD/DVD drive on IDE (IVMDVDDrive). Media can be changed while the VM is turned off.',
  ref: 'DVDROMDrive/<vm id>/ide<bus>-<device>',
  members: {
    get_BusNumber: dvd.get('IDE channel.', integer, 1, ({ self }) => self.channel),
    get_DeviceNumber: dvd.get('IDE device.', integer, 0, ({ self }) => self.device),
    get_ImageFile: dvd.get('The ISO in the drive, or null.', orNull(string), '/var/lib/vserver/isos/debian.iso', ({ self }) => self.image),
    AttachImage: dvd.method('Puts an ISO in the drive.', {
      params: { path: path('The ISO image.') }, returns: nothing, right: 'change', errors: ['VM_E_FILE_NOT_FOUND', ...CONFIG_ERRORS],
      example: { params: { path: 'isos/debian.iso' }, result: null },
      handler: async (call) => setDriveImage(call, await call.services.files.run({ op: 'regular-file', input: call.params.path, kind: 'ISO image' })),
    }),
    ReleaseImage: dvd.method('Empties the drive.', {
      returns: nothing, right: 'change', errors: CONFIG_ERRORS, example: { params: {}, result: null },
      handler: (call) => setDriveImage(call, null),
    }),
  },
};

const scsi = membersOf<'SCSIController'>(`SCSIController/${VM_ID_EXAMPLE}/0`);
export const scsiController: InterfaceRecord = {
  doc: 'A SCSI adapter of a VM (IVMSCSIController).',
  ref: 'SCSIController/<vm id>/<index>',
  members: {
    get_ID: scsi.get('Its index, the busNumber of its disks.', integer, 0, ({ self }) => self.index),
    get_Model: scsi.get(`${SCSI_MODELS.join(' or ')}.`, oneOf(SCSI_MODELS), 'lsi53c895a', ({ self }) => self.vm.config.scsi[self.index].model),
  },
};

const guest = membersOf<'GuestOS'>(`GuestOS/${VM_ID_EXAMPLE}`);
export const guestOS: InterfaceRecord = {
  doc: 'The guest operating system of a VM (IVMGuestOS).',
  ref: 'GuestOS/<vm id>',
  members: {
    Shutdown: guest.task('Asks the guest to shut down by the ACPI power button; the task completes when the VM is off (or fails after its timeout, and the VM is turned off).', 'control', {}, {},
      (call) => powerTask(call, call.self.vm, 'Shut down guest OS', 'shutdown', ['Running']), ['VM_E_VM_NOT_RUNNING']),
  },
};

const PNG = oneOf(['image/png']);
function pngSize(png: Buffer): { width: number; height: number } {
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}
const display = membersOf<'Display'>(`Display/${VM_ID_EXAMPLE}`);
export const displayInterface: InterfaceRecord = {
  doc: 'The screen of a VM (IVMDisplay).',
  ref: 'Display/<vm id>',
  members: {
    get_Thumbnail: display.get('A PNG of the screen now, base64, with its size; null when the VM is not running.',
      orNull(object({ mimeType: field(PNG, 'Always a PNG'), width: field(integer, 'Pixels'), height: field(integer, 'Pixels'), data: field(string, 'The PNG, base64') })),
      { mimeType: 'image/png', width: 720, height: 400, data: 'iVBORw0KGgo…' },
      async ({ services, self: { vm } }) => {
        if (!isLive(services.machines.state(vm))) return null;
        const { png } = await services.machines.operate<{ png: string }>(vm, 'screenshot');
        return { mimeType: PNG.values[0], ...pngSize(Buffer.from(png, 'base64')), data: png };
      }),
  },
};
