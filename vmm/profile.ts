// The virtual hardware of Virtual Server 2005 R2 SP1, as data: every limit a VM's configuration
// is checked against, and the QEMU device that plays each part. The API reads its
// Maximum*/Minimum* properties from here, so a limit is changed in one place only.

export const NIC_MODELS = ['tulip', 'e1000', 'virtio'] as const;
export type NicModel = (typeof NIC_MODELS)[number];

export const SCSI_MODELS = ['lsi53c895a', 'virtio-scsi'] as const;
export type ScsiModel = (typeof SCSI_MODELS)[number];

export const USB_DEVICES = ['Keyboard', 'Mouse', 'Tablet', 'SmartCardReader'] as const;
export type UsbDevice = (typeof USB_DEVICES)[number];

export const PROFILE = {
  chipset: 'Intel 440FX (QEMU "pc", i440FX + PIIX3)',
  bios: 'SeaBIOS',
  processors: 1,
  memoryMB: { min: 4, max: 3686, default: 128 },
  ide: { channels: 2, devicesPerChannel: 2 },
  scsi: { adapters: 4, disksPerAdapter: 7, defaultModel: 'lsi53c895a' as ScsiModel },
  networkAdapters: { max: 4, defaultModel: 'tulip' as NicModel, macPrefix: '00:03:FF' },
  serialPorts: 2,
  parallelPorts: 1,
  floppyDrives: 1,
  video: { model: 'VGA', memoryMB: 4 },
  usb: { controller: 'UHCI (PIIX3)', devices: USB_DEVICES },
} as const;

/** QEMU's name for each model; "virtio" is the optimized choice, the others have stock drivers everywhere. */
export const QEMU_NIC_DEVICE: Record<NicModel, string> = { tulip: 'tulip', e1000: 'e1000', virtio: 'virtio-net-pci' };
export const QEMU_SCSI_DEVICE: Record<ScsiModel, string> = { lsi53c895a: 'lsi53c895a', 'virtio-scsi': 'virtio-scsi-pci' };
export const QEMU_USB_DEVICE: Record<UsbDevice, string> = {
  Keyboard: 'usb-kbd', Mouse: 'usb-mouse', Tablet: 'usb-tablet', SmartCardReader: 'usb-ccid',
};

/** The limits under Virtual Server's property names (IVMVirtualServer.Maximum*, Minimum*). */
export const VIRTUAL_SERVER_LIMITS = {
  MaximumMemoryPerVM: PROFILE.memoryMB.max,
  MinimumMemoryPerVM: PROFILE.memoryMB.min,
  MaximumNumberOfProcessorsPerVM: PROFILE.processors,
  MaximumNetworkAdaptersPerVM: PROFILE.networkAdapters.max,
  MaximumNumberOfIDEBuses: PROFILE.ide.channels,
  MaximumNumberOfIDEDevicesPerBus: PROFILE.ide.devicesPerChannel,
  MaximumNumberOfSCSIControllers: PROFILE.scsi.adapters,
  MaximumNumberOfSCSIDevicesPerController: PROFILE.scsi.disksPerAdapter,
  MaximumNumberOfSerialPorts: PROFILE.serialPorts,
  MaximumNumberOfParallelPorts: PROFILE.parallelPorts,
  MaximumNumberOfFloppyDrives: PROFILE.floppyDrives,
  VideoMemoryMB: PROFILE.video.memoryMB,
} as const;
