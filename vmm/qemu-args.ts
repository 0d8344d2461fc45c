// The QEMU command line for a VM: -nodefaults, the i440FX "pc" machine with SeaBIOS, and exactly
// the devices its configuration describes. Disks come from the worker's NBD sockets (or, for the
// benchmark's bare QEMU, from the VHD files themselves through QEMU's vpc driver).

import { type BootDevice, hardDisks, type VmConfig } from './config.js';
import type { Engine } from './engine.js';
import { PROFILE, QEMU_NIC_DEVICE, QEMU_SCSI_DEVICE, QEMU_USB_DEVICE } from './profile.js';

export type DiskSource = { kind: 'nbd'; socket: string; export: string } | { kind: 'vhd-file'; path: string };

export interface QemuLaunch {
  config: VmConfig;
  engine: Engine;
  /** Where the VM's private sockets live. */
  qmpSocket: string;
  vncSocket: string;
  /** Per adapter, the host's TAP device that is its backend, or null for none (its cable can never be plugged in while this QEMU runs). */
  taps: (string | null)[];
  disks: Map<string, DiskSource>;
  /** Wait for a saved state to be streamed in (migrate-incoming) instead of booting. */
  incoming: boolean;
  /** Drop to this user after setup (set when vserver runs as root). */
  runAs: string | null;
}

export function qemuArgs(launch: QemuLaunch): string[] {
  const { config } = launch;
  const boot = bootIndexes(config);
  return [
    ...machine(launch),
    ...sandbox(launch.runAs),
    ...ideDevices(launch, boot),
    ...scsiDevices(launch, boot),
    ...networkAdapters(launch, boot),
    ...ports(config),
    ...floppy(config, boot),
    ...usb(config),
    '-device', `VGA,vgamem_mb=${PROFILE.video.memoryMB}`,
    '-display', 'none',
    '-vnc', `unix:${opt(launch.vncSocket)}`,
    '-qmp', `unix:${opt(launch.qmpSocket)},server=on,wait=off`,
    // Start with the processor stopped: the worker finishes setup over QMP, then resumes.
    '-S',
    ...(launch.incoming ? ['-incoming', 'defer'] : []),
  ];
}

function machine({ config, engine }: QemuLaunch): string[] {
  return [
    '-nodefaults', '-no-user-config',
    '-name', `guest=${opt(config.name)},debug-threads=on`,
    '-uuid', config.id,
    '-machine', 'pc', '-accel', engine,
    '-smp', String(PROFILE.processors),
    '-m', `${config.memoryMB}M`,
    '-rtc', 'base=utc',
  ];
}

/**
 * seccomp: no obsolete calls, no spawning, no scheduler or resource changes. With -runas QEMU
 * changes user after the filter is installed, so set*uid must stay allowed there.
 */
function sandbox(runAs: string | null): string[] {
  const privileges = runAs ? 'allow' : 'deny';
  const args = ['-sandbox', `on,obsolete=deny,elevateprivileges=${privileges},spawn=deny,resourcecontrol=deny`];
  return runAs ? [...args, '-runas', runAs] : args;
}

/** SeaBIOS boots devices by bootindex; the configuration orders device kinds, disks in slot order. */
function bootIndexes(config: VmConfig): BootIndexes {
  const kinds: Record<BootDevice, string[]> = {
    floppy: config.floppy?.image ? ['fd0'] : [],
    dvd: config.ide.flatMap((d) => (d.type === 'DVD' && d.image ? [`ide${d.channel}-${d.device}`] : [])),
    disk: hardDisks(config).map((d) => d.slot),
    network: config.networkAdapters.map((_, i) => `nic${i}`),
  };
  const order = new Map<string, number>();
  for (const kind of config.bootOrder) for (const id of kinds[kind]) order.set(id, order.size + 1);
  return order;
}

type BootIndexes = Map<string, number>;

function bootindex(boot: BootIndexes, id: string): string {
  const index = boot.get(id);
  return index === undefined ? '' : `,bootindex=${index}`;
}

function diskNode(launch: QemuLaunch, slot: string): string[] {
  const source = launch.disks.get(slot);
  if (!source) throw new Error(`no source for disk ${slot}`);
  if (source.kind === 'nbd') {
    return ['-blockdev', JSON.stringify({ driver: 'nbd', 'node-name': slot, server: { type: 'unix', path: source.socket }, export: source.export })];
  }
  return [
    '-blockdev', JSON.stringify({ driver: 'file', 'node-name': `${slot}-file`, filename: source.path }),
    '-blockdev', JSON.stringify({ driver: 'vpc', 'node-name': slot, file: `${slot}-file` }),
  ];
}

function imageNode(node: string, file: string, readOnly: boolean): string[] {
  return [
    '-blockdev', JSON.stringify({ driver: 'file', 'node-name': `${node}-file`, filename: file, 'read-only': readOnly }),
    '-blockdev', JSON.stringify({ driver: 'raw', 'node-name': node, file: `${node}-file`, 'read-only': readOnly }),
  ];
}

function ideDevices(launch: QemuLaunch, boot: BootIndexes): string[] {
  return launch.config.ide.flatMap((d) => {
    const slot = `ide${d.channel}-${d.device}`;
    const position = `bus=ide.${d.channel},unit=${d.device},id=${slot}${bootindex(boot, slot)}`;
    if (d.type === 'HardDisk') return [...diskNode(launch, slot), '-device', `ide-hd,drive=${slot},${position}`];
    if (!d.image) return ['-device', `ide-cd,${position}`];
    return [...imageNode(slot, d.image, true), '-device', `ide-cd,drive=${slot},${position}`];
  });
}

function scsiDevices(launch: QemuLaunch, boot: BootIndexes): string[] {
  return launch.config.scsi.flatMap((adapter, a) => [
    '-device', `${QEMU_SCSI_DEVICE[adapter.model]},id=scsi${a}`,
    ...adapter.disks.flatMap((d) => {
      const slot = `scsi${a}-${d.target}`;
      return [...diskNode(launch, slot),
        '-device', `scsi-hd,bus=scsi${a}.0,scsi-id=${d.target},lun=0,drive=${slot},id=${slot}${bootindex(boot, slot)}`];
    }),
  ]);
}

/** Each adapter's backend is its TAP, which vserverd joins to the network's bridge; QEMU opens it itself, as no script runs. */
function networkAdapters(launch: QemuLaunch, boot: BootIndexes): string[] {
  return launch.config.networkAdapters.flatMap((nic, i) => {
    const device = `${QEMU_NIC_DEVICE[nic.model]},id=nic${i},mac=${nic.mac.toLowerCase()}${bootindex(boot, `nic${i}`)}`;
    const tap = launch.taps[i];
    if (!tap) return ['-device', device];
    return ['-netdev', `tap,id=net${i},ifname=${opt(tap)},script=no,downscript=no`, '-device', `${device},netdev=net${i}`];
  });
}

/** COM1 is QEMU's stdio, which the worker runs in a pseudo-terminal: the serial console. */
function ports(config: VmConfig): string[] {
  const args = ['-chardev', 'stdio,id=com1,signal=off', '-device', 'isa-serial,chardev=com1,index=0'];
  if (config.com2) args.push('-chardev', `file,id=com2,path=${opt(config.com2.file)}`, '-device', 'isa-serial,chardev=com2,index=1');
  if (config.lpt1) args.push('-chardev', `file,id=lpt1,path=${opt(config.lpt1.file)}`, '-device', 'isa-parallel,chardev=lpt1,index=0');
  return args;
}

/** The drive sits on the pc's own floppy controller, which carries its boot index (the drive has none). */
function floppy(config: VmConfig, boot: BootIndexes): string[] {
  if (!config.floppy) return [];
  const index = boot.get('fd0');
  const controllerIndex = index === undefined ? [] : ['-global', `isa-fdc.bootindexA=${index}`];
  if (!config.floppy.image) return ['-device', 'floppy,unit=0,id=fd0'];
  return [...imageNode('fd0', config.floppy.image, false), '-device', 'floppy,unit=0,id=fd0,drive=fd0', ...controllerIndex];
}

function usb(config: VmConfig): string[] {
  return ['-device', 'piix3-usb-uhci,id=usb', ...config.usb.flatMap((d) => ['-device', `${QEMU_USB_DEVICE[d]},bus=usb.0`])];
}

/** QEMU's option syntax: a comma inside a value is written twice. */
function opt(value: string): string {
  return value.replaceAll(',', ',,');
}
